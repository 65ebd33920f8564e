package mqtt

import (
	"context"
	"testing"
	"time"

	"github.com/gatecast/gatecast/acl"
	packet "github.com/gatecast/gatecast/proto/mqtt"
)

// connectPersistent connects with Clean Session/Start 0 (and, in MQTT 5, a
// session expiry) and returns the CONNACK.
func (cl *client) connectPersistent(secret, clientID string, expiry uint32) packet.Connack {
	cl.t.Helper()
	p := packet.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: cl.version, KeepAlive: 30, ClientID: []byte(clientID),
		UsernameFlag: true, Username: []byte("d"), PasswordFlag: true, Password: []byte(secret)}
	if cl.version == packet.Version5 {
		p.Props.SessionExpiryInterval = expiry
		p.Props.Set(packet.PropSessionExpiryInterval)
	}
	cl.write(packet.AppendConnect(nil, &p))
	got := cl.tr.packets(cl.t)
	if len(got) == 0 || got[0].h.Type != packet.CONNACK {
		cl.t.Fatalf("want CONNACK first, got %+v", got)
	}
	var ca packet.Connack
	if err := packet.DecodeConnack(got[0].body, cl.version, &ca); err != nil {
		cl.t.Fatal(err)
	}
	// what followed CONNACK (a resumed session's deliveries) stays readable
	cl.tr.mu.Lock()
	for _, r := range got[1:] {
		cl.tr.out = appendRaw(cl.tr.out, r)
	}
	cl.tr.mu.Unlock()
	return ca
}

func appendRaw(b []byte, r rx) []byte {
	b = append(b, r.h.Type<<4|r.h.Flags)
	b = packet.AppendVarint(b, len(r.body))
	return append(b, r.body...)
}

// An offline persistent session keeps its subscriptions and queues QoS 1
// messages; the client resumes it (Session Present), gets what was in
// flight again with DUP, then what was queued.
func TestPersistentSessionResume(t *testing.T) {
	for _, v := range []byte{packet.Version311, packet.Version5} {
		e := newEnv(t, Config{MaxInflight: 1})
		_, secret := e.token(t, 1, map[string]acl.Permission{"cmd/#": acl.PermReadWrite})
		dev := e.dial(t, v)
		if ca := dev.connectPersistent(secret, "dev", 3600); ca.SessionPresent {
			t.Fatal("a new session is not present")
		}
		dev.subscribe(1, 1, "cmd/dev")
		backend := e.dial(t, v)
		_, bsecret := e.token(t, 0, map[string]acl.Permission{"cmd/#": acl.PermReadWrite})
		backend.connect(bsecret, "backend", nil, nil)
		backend.publish("cmd/dev", "c1", 1, 1) // in flight, never acknowledged
		closeWait(dev.c)                       // the link drops
		if n := e.b.SessionCount(); n != 1 {
			t.Fatalf("%d live sessions, want the backend only (the offline one frees its slot)", n)
		}
		backend.publish("cmd/dev", "c2", 1, 2)
		backend.publish("cmd/dev", "c3", 1, 3)
		backend.publish("cmd/dev", "q0", 0, 0) // QoS 0 is not kept for an offline client
		// The token's limit is 1: the offline session does not hold it.
		again := e.dial(t, v)
		ca := again.connectPersistent(secret, "dev", 3600)
		if !ca.SessionPresent || ca.Code != 0 {
			t.Fatalf("v%d resume: present %v code %#x", v, ca.SessionPresent, ca.Code)
		}
		got := publishes(t, v, again.tr.packets(t))
		if len(got) != 1 || string(got[0].Payload) != "c1" || !got[0].Dup {
			t.Fatalf("v%d after resume: %+v, want c1 again with DUP (window 1)", v, got)
		}
		for _, want := range []string{"c2", "c3"} {
			again.write(packet.AppendAck(nil, packet.PUBACK, v, got[0].PacketID, 0, nil))
			got = publishes(t, v, again.tr.packets(t))
			if len(got) != 1 || string(got[0].Payload) != want || got[0].Dup {
				t.Fatalf("v%d next: %+v, want %s", v, got, want)
			}
		}
		// Clean Start 1 discards the session.
		closeWait(again.c)
		fresh := e.dial(t, v)
		if ca := fresh.connect(secret, "dev", nil, nil); ca.SessionPresent {
			t.Fatalf("v%d clean start resumed the session", v)
		}
		backend.publish("cmd/dev", "after", 1, 4)
		if got := publishes(t, v, fresh.tr.packets(t)); len(got) != 0 {
			t.Fatalf("v%d the discarded session's subscription delivered %+v", v, got)
		}
	}
}

// Offline sessions are judged by rights changes too: a removed grant
// removes the uncovered subscription and its queued messages are never
// delivered; a deleted token discards the session.
func TestOfflineSessionRevocation(t *testing.T) {
	e := newEnv(t, Config{})
	tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermRead, "b/#": acl.PermRead})
	_, bsecret := e.token(t, 0, map[string]acl.Permission{"#": acl.PermReadWrite})
	backend := e.dial(t, packet.Version5)
	backend.connect(bsecret, "backend", nil, nil)
	dev := e.dial(t, packet.Version5)
	dev.connectPersistent(secret, "dev", 3600)
	dev.subscribe(1, 1, "a/x", "b/x")
	closeWait(dev.c)
	backend.publish("a/x", "queued before the revocation", 1, 1)
	backend.publish("b/x", "still allowed", 1, 2)
	ctx := context.Background()
	tags, _ := e.store.ListTags(ctx)
	for _, tg := range tags {
		if tg.Pattern == "a/#" {
			e.store.DeletePermission(ctx, tok.ID, tg.ID)
		}
	}
	if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	backend.publish("a/x", "after the revocation", 1, 3)
	again := e.dial(t, packet.Version5)
	if ca := again.connectPersistent(secret, "dev", 3600); !ca.SessionPresent {
		t.Fatal("session lost")
	}
	var payloads []string
	for _, p := range publishes(t, 5, again.tr.packets(t)) {
		payloads = append(payloads, string(p.Payload))
		again.write(packet.AppendAck(nil, packet.PUBACK, 5, p.PacketID, 0, nil))
	}
	for _, p := range publishes(t, 5, again.tr.packets(t)) {
		payloads = append(payloads, string(p.Payload))
	}
	if len(payloads) != 1 || payloads[0] != "still allowed" {
		t.Fatalf("delivered %q, want only the b/x message", payloads)
	}
	closeWait(again.c)

	// delete the token: the offline session is discarded
	if err := e.store.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if s := e.srv.sessions.get(clientKey{tok.ID, "dev"}); s != nil {
		t.Fatal("the deleted token's offline session is still there")
	}
	if n := e.b.SessionCount(); n != 1 {
		t.Fatalf("%d sessions", n)
	}
}

func TestSessionExpiry(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermRead})
	dev := e.dial(t, packet.Version5)
	dev.connectPersistent(secret, "dev", 1) // one second
	dev.subscribe(1, 1, "a/#")
	closeWait(dev.c)
	deadline := time.Now().Add(10 * time.Second)
	for e.srv.sessions.get(clientKey{dev.c.s.token, "dev"}) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the session did not expire")
		}
		time.Sleep(20 * time.Millisecond)
	}
	again := e.dial(t, packet.Version5)
	if ca := again.connectPersistent(secret, "dev", 1); ca.SessionPresent {
		t.Fatal("an expired session was resumed")
	}
}

// MQTT 5 Will Delay Interval: a client back within the delay publishes no
// will; one that stays away does, once the delay passed.
func TestWillDelay(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"will/#": acl.PermReadWrite})
	watcher := e.dial(t, packet.Version5)
	watcher.connect(secret, "w", nil, nil)
	watcher.subscribe(1, 0, "will/#")
	connect := func(id string) *client {
		cl := e.dial(t, packet.Version5)
		p := packet.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 5, KeepAlive: 30, ClientID: []byte(id),
			PasswordFlag: true, Password: []byte(secret), WillFlag: true, WillTopic: []byte("will/" + id), WillPayload: []byte("gone")}
		p.Props.SessionExpiryInterval = 60
		p.Props.Set(packet.PropSessionExpiryInterval)
		p.WillProps.WillDelayInterval = 1
		p.WillProps.Set(packet.PropWillDelayInterval)
		cl.write(packet.AppendConnect(nil, &p))
		cl.tr.packets(t)
		return cl
	}
	back := connect("back")
	away := connect("away")
	closeWait(back.c)
	closeWait(away.c)
	connect("back") // back within the delay
	time.Sleep(1500 * time.Millisecond)
	got := publishes(t, 5, watcher.tr.packets(t))
	if len(got) != 1 || string(got[0].Topic) != "will/away" {
		t.Fatalf("wills %+v, want only will/away", got)
	}
}

// Queued copies are bounded in bytes per session and per process: an away
// client cannot make the broker hold more, and everything held is given
// back when the session ends.
func TestQueuedBytesBounded(t *testing.T) {
	e := newEnv(t, Config{MaxQueuedBytes: 4096, MaxQueued: 1000})
	_, secret := e.token(t, 0, map[string]acl.Permission{"cmd/#": acl.PermReadWrite})
	dev := e.dial(t, packet.Version5)
	dev.connectPersistent(secret, "dev", 3600)
	dev.subscribe(1, 1, "cmd/dev")
	closeWait(dev.c)
	backend := e.dial(t, packet.Version5)
	backend.connect(secret, "backend", nil, nil)
	payload := string(make([]byte, 1000))
	for i := range 50 {
		backend.publish("cmd/dev", payload, 1, uint16(i+1))
	}
	s := e.srv.sessions.get(clientKey{dev.c.s.token, "dev"})
	s.mu.Lock()
	held, n := s.q.held, len(s.q.queued)
	s.mu.Unlock()
	if held > 4096 || n == 0 || n > 4 {
		t.Fatalf("held %d bytes in %d messages; want at most 4096 bytes", held, n)
	}
	if total := e.srv.held.Load(); total != int64(held) {
		t.Fatalf("process total %d, session %d", total, held)
	}
	// discarding the session gives everything back
	again := e.dial(t, packet.Version5)
	again.connect(secret, "dev", nil, nil) // clean start: the old session ends
	if total := e.srv.held.Load(); total != 0 {
		t.Fatalf("after the session ended the process still holds %d bytes", total)
	}
}

// A queued message whose Message Expiry Interval passed while its client
// was away is not delivered; one still alive goes with what is left of it.
func TestQueuedMessageExpiry(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"cmd/#": acl.PermReadWrite})
	dev := e.dial(t, packet.Version5)
	dev.connectPersistent(secret, "dev", 3600)
	dev.subscribe(1, 1, "cmd/dev")
	closeWait(dev.c)
	backend := e.dial(t, packet.Version5)
	backend.connect(secret, "backend", nil, nil)
	for i, ttl := range []uint32{1, 100} {
		var props packet.Properties
		props.MessageExpiryInterval = ttl
		props.Set(packet.PropMessageExpiryInterval)
		props.AddUserProperty([]byte("k"), []byte("v"))
		backend.write(packet.AppendPublish(nil, 5, &packet.Publish{Topic: []byte("cmd/dev"), Payload: []byte{byte('a' + i)}, QoS: 1, PacketID: uint16(i + 1), Props: props}))
	}
	time.Sleep(1200 * time.Millisecond)
	again := e.dial(t, packet.Version5)
	again.connectPersistent(secret, "dev", 3600)
	got := publishes(t, 5, again.tr.packets(t))
	if len(got) != 1 || string(got[0].Payload) != "b" {
		t.Fatalf("delivered %+v, want only the unexpired one", got)
	}
	if left := got[0].Props.MessageExpiryInterval; left == 0 || left >= 100 {
		t.Fatalf("remaining expiry %d, want under 100", left)
	}
	n := 0
	for range got[0].Props.UserProperties {
		n++
	}
	if n != 1 {
		t.Fatalf("user properties lost: %d", n)
	}
}

// Server → client topic aliases: for a client with Topic Alias Maximum 2,
// the first QoS 1 delivery on a topic teaches an alias and later ones use
// it alone; past the maximum, topics go in full.
func TestServerTopicAliases(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	sub := e.dial(t, packet.Version5)
	var props packet.Properties
	props.TopicAliasMaximum = 2
	props.Set(packet.PropTopicAliasMaximum)
	sub.connect(secret, "sub", &props, nil)
	sub.subscribe(1, 1, "a/#")
	pub := e.dial(t, packet.Version5)
	pub.connect(secret, "pub", nil, nil)
	for i, topic := range []string{"a/x", "a/x", "a/y", "a/z", "a/y", "a/x"} {
		pub.publish(topic, "m", 1, uint16(i+1))
	}
	got := publishes(t, 5, sub.tr.packets(t))
	type want struct {
		topic string
		alias uint16
	}
	exp := []want{{"a/x", 1}, {"", 1}, {"a/y", 2}, {"a/z", 0}, {"", 2}, {"", 1}}
	if len(got) != len(exp) {
		t.Fatalf("%d deliveries", len(got))
	}
	for i, w := range exp {
		if string(got[i].Topic) != w.topic || got[i].Props.TopicAlias != w.alias {
			t.Errorf("delivery %d: topic %q alias %d, want %q alias %d", i, got[i].Topic, got[i].Props.TopicAlias, w.topic, w.alias)
		}
	}
	// a client without a Topic Alias Maximum never gets one
	plain := e.dial(t, packet.Version5)
	plain.connect(secret, "plain", nil, nil)
	plain.subscribe(1, 1, "a/#")
	pub.publish("a/x", "m", 1, 9)
	if got := publishes(t, 5, plain.tr.packets(t)); len(got) != 1 || got[0].Props.Has(packet.PropTopicAlias) {
		t.Fatalf("alias sent to a client that allows none: %+v", got)
	}
}
