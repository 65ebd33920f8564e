package mqtt

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/sqlite"
	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/proto"
	packet "github.com/gatecast/gatecast/proto/mqtt"
)

// fakeTransport records what the adapter writes, as raw TCP bytes.
type fakeTransport struct {
	mu          sync.Mutex
	out         []byte
	closed      bool
	established bool
	idle        time.Duration
	admit       bool
}

func newFakeTransport() *fakeTransport { return &fakeTransport{admit: true} }

func (t *fakeTransport) SendBacklog(f *proto.Frame) (bool, <-chan struct{}) {
	defer f.Release()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false, nil
	}
	t.out = append(t.out, f.B...)
	return true, nil
}

func (t *fakeTransport) SendBytes(b []byte) (bool, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false, nil
	}
	t.out = append(t.out, b...)
	return true, nil
}

func (t *fakeTransport) CloseAfter(final *proto.Frame, code uint16, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if final != nil {
		if !t.closed {
			t.out = append(t.out, final.B...)
		}
		final.Release()
	}
	t.closed = true
}

func (t *fakeTransport) Established()                   { t.mu.Lock(); t.established = true; t.mu.Unlock() }
func (t *fakeTransport) SetIdleTimeout(d time.Duration) { t.mu.Lock(); t.idle = d; t.mu.Unlock() }
func (t *fakeTransport) AdmitInbound() bool             { return t.admit }
func (t *fakeTransport) RemoteAddr() string             { return "127.0.0.1:1" }

func (t *fakeTransport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// packets decodes (and consumes) what was written so far.
func (t *fakeTransport) packets(tb testing.TB) []rx {
	tb.Helper()
	t.mu.Lock()
	b := t.out
	t.out = nil
	t.mu.Unlock()
	var out []rx
	for len(b) > 0 {
		h, body, n, err := packet.ReadPacket(b, 0)
		if err != nil {
			tb.Fatalf("server wrote a bad packet: %v (% x)", err, b)
		}
		out = append(out, rx{h, append([]byte(nil), body...)})
		b = b[n:]
	}
	return out
}

type rx struct {
	h    packet.Header
	body []byte
}

type env struct {
	store *sqlite.Store
	b     *broker.Broker
	srv   *Server
}

func newEnv(t *testing.T, cfg Config) *env { return newEnvTB(t, cfg) }

func newEnvFuzz(f *testing.F) *env { return newEnvTB(f, Config{}) }

func newEnvTB(t testing.TB, cfg Config) *env {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "acl.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b, err := broker.New(broker.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Broker = b
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{store: st, b: b, srv: srv}
}

func (e *env) token(t testing.TB, maxConns int, grants map[string]acl.Permission) (acl.Token, string) {
	ctx := context.Background()
	secret, _ := acl.NewSecret()
	tok, err := e.store.CreateToken(ctx, "t", maxConns, acl.HashSecret([]byte(secret)))
	if err != nil {
		t.Fatal(err)
	}
	for pattern, p := range grants {
		tag, err := e.store.CreateTag(ctx, pattern)
		if errors.Is(err, acl.ErrConflict) {
			tags, _ := e.store.ListTags(ctx)
			for _, tg := range tags {
				if tg.Pattern == pattern {
					tag = tg
				}
			}
		} else if err != nil {
			t.Fatal(err)
		}
		if err := e.store.SetPermission(ctx, tok.ID, tag.ID, p); err != nil {
			t.Fatal(err)
		}
	}
	return tok, secret
}

// client is one connection driven by a test.
type client struct {
	t       *testing.T
	c       *Conn
	tr      *fakeTransport
	version byte
}

func (e *env) dial(t *testing.T, version byte) *client {
	tr := newFakeTransport()
	return &client{t: t, c: e.srv.NewConn(tr, false, "127.0.0.1:1"), tr: tr, version: version}
}

func (cl *client) write(pkt []byte) { cl.c.OnMessage(false, pkt) }

func (cl *client) connect(secret, clientID string, props *packet.Properties, will *packet.Connect) packet.Connack {
	cl.t.Helper()
	p := packet.Connect{ProtocolLevel: cl.version, CleanStart: true, KeepAlive: 30, ClientID: []byte(clientID)}
	if cl.version == packet.Version5 {
		p.ProtocolName = []byte("MQTT")
	} else {
		p.ProtocolName = []byte("MQTT")
	}
	if secret != "" {
		p.UsernameFlag, p.Username = true, []byte("device-7")
		p.PasswordFlag, p.Password = true, []byte(secret)
	}
	if props != nil {
		p.Props = *props
	}
	if will != nil {
		p.WillFlag, p.WillTopic, p.WillPayload, p.WillQoS, p.WillProps = true, will.WillTopic, will.WillPayload, will.WillQoS, will.WillProps
	}
	cl.write(packet.AppendConnect(nil, &p))
	got := cl.tr.packets(cl.t)
	if len(got) != 1 || got[0].h.Type != packet.CONNACK {
		cl.t.Fatalf("want one CONNACK, got %d packets", len(got))
	}
	var ca packet.Connack
	if err := packet.DecodeConnack(got[0].body, cl.version, &ca); err != nil {
		cl.t.Fatal(err)
	}
	return ca
}

func (cl *client) subscribe(id uint16, qos byte, filters ...string) []byte {
	cl.t.Helper()
	fs := make([]packet.SubscribeFilter, len(filters))
	for i, f := range filters {
		fs[i] = packet.SubscribeFilter{Filter: []byte(f), QoS: qos}
	}
	cl.write(packet.AppendSubscribe(nil, cl.version, id, nil, fs))
	got := cl.tr.packets(cl.t)
	if len(got) != 1 || got[0].h.Type != packet.SUBACK {
		cl.t.Fatalf("want one SUBACK, got %+v", got)
	}
	var sa packet.Suback
	if err := packet.DecodeSuback(got[0].body, cl.version, &sa); err != nil {
		cl.t.Fatal(err)
	}
	return append([]byte(nil), sa.Codes...)
}

func (cl *client) publish(topic, payload string, qos byte, id uint16) {
	p := packet.Publish{Topic: []byte(topic), Payload: []byte(payload), QoS: qos, PacketID: id}
	cl.write(packet.AppendPublish(nil, cl.version, &p))
}

// publishes decodes the PUBLISH packets among got.
func publishes(t *testing.T, version byte, got []rx) []packet.Publish {
	var out []packet.Publish
	for _, r := range got {
		if r.h.Type != packet.PUBLISH {
			continue
		}
		var p packet.Publish
		if err := packet.DecodePublish(r.h, r.body, version, &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func TestConnectAndRefusals(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 1, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	for _, v := range []byte{packet.Version311, packet.Version5} {
		// no password, wrong password
		cl := e.dial(t, v)
		if ca := cl.connect("", "x", nil, nil); ca.Code != map[byte]byte{4: packet.ConnRefusedBadUsernamePassword, 5: packet.BadUserNameOrPassword}[v] || !cl.tr.isClosed() {
			t.Errorf("v%d no password: code %#x closed %v", v, ca.Code, cl.tr.isClosed())
		}
		cl = e.dial(t, v)
		if ca := cl.connect("wrong-secret-value", "x", nil, nil); ca.Code != map[byte]byte{4: packet.ConnRefusedBadUsernamePassword, 5: packet.BadUserNameOrPassword}[v] {
			t.Errorf("v%d wrong secret: code %#x", v, ca.Code)
		}
		// accepted, then the limit (1)
		ok := e.dial(t, v)
		if ca := ok.connect(secret, "dev1", nil, nil); ca.Code != 0 || !ok.tr.established || ok.tr.idle != 45*time.Second {
			t.Fatalf("v%d: code %#x established %v idle %v", v, ca.Code, ok.tr.established, ok.tr.idle)
		}
		over := e.dial(t, v)
		if ca := over.connect(secret, "dev2", nil, nil); ca.Code != map[byte]byte{4: packet.ConnRefusedServerUnavailable, 5: packet.QuotaExceeded}[v] {
			t.Errorf("v%d over the limit: code %#x", v, ca.Code)
		}
		closeWait(ok.c)
	}
	// a first packet that is not CONNECT closes
	cl := e.dial(t, packet.Version5)
	cl.write(packet.AppendPingreq(nil))
	if !cl.tr.isClosed() {
		t.Error("PINGREQ before CONNECT did not close")
	}
	// unsupported protocol level: CONNACK 0x01 in the 3.1.1 form
	cl = e.dial(t, 4)
	cl.write([]byte{0x10, 10, 0, 4, 'M', 'Q', 'T', 'T', 9, 2, 0, 30})
	got := cl.tr.packets(t)
	if len(got) != 1 || got[0].h.Type != packet.CONNACK || got[0].body[1] != packet.ConnRefusedProtocolVersion {
		t.Errorf("level 9: %+v", got)
	}
}

func TestAssignedClientIDAndServerKeepAlive(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	cl := e.dial(t, packet.Version5)
	tr := cl.tr
	p := packet.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 5, CleanStart: true, PasswordFlag: true, Password: []byte(secret)}
	cl.write(packet.AppendConnect(nil, &p))
	got := tr.packets(t)
	var ca packet.Connack
	if err := packet.DecodeConnack(got[0].body, 5, &ca); err != nil || ca.Code != 0 {
		t.Fatalf("connack %v %#x", err, ca.Code)
	}
	if len(ca.Props.AssignedClientIdentifier) == 0 || ca.Props.ServerKeepAlive != 60 || tr.idle != 90*time.Second {
		t.Errorf("assigned %q server keep alive %d idle %v", ca.Props.AssignedClientIdentifier, ca.Props.ServerKeepAlive, tr.idle)
	}
	if ca.Props.Has(packet.PropRetainAvailable) || ca.Props.ReceiveMaximum != 64 {
		t.Errorf("CONNACK properties %+v", ca.Props)
	}
}

func TestSubscribePublishQoS(t *testing.T) {
	for _, v := range []byte{packet.Version311, packet.Version5} {
		e := newEnv(t, Config{})
		_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite, "ro/#": acl.PermRead})
		sub := e.dial(t, v)
		sub.connect(secret, "sub", nil, nil)
		codes := sub.subscribe(1, 2, "a/+", "ro/x", "b/#", "a/#/bad")
		fail := byte(packet.SubackFailure)
		want := []byte{2, 2, fail, fail}
		if v == packet.Version5 {
			want = []byte{2, 2, packet.NotAuthorized, packet.TopicFilterInvalid}
		}
		if string(codes) != string(want) {
			t.Fatalf("v%d SUBACK codes % x, want % x", v, codes, want)
		}
		pub := e.dial(t, v)
		pub.connect(secret, "pub", nil, nil)
		pub.publish("a/1", "q0", 0, 0)
		pub.publish("a/1", "q1", 1, 10)
		pub.publish("a/1", "q2", 2, 11)
		pub.publish("a/1", "q2", 2, 11) // retransmission before PUBREL: not delivered twice
		pub.publish("ro/x", "denied", 1, 12)
		acks := pub.tr.packets(t)
		var types []byte
		var codesAck []byte
		for _, a := range acks {
			types = append(types, a.h.Type)
			var ack packet.Ack
			packet.DecodeAck(a.h, a.body, v, &ack)
			codesAck = append(codesAck, ack.Code)
		}
		if string(types) != string([]byte{packet.PUBACK, packet.PUBREC, packet.PUBREC, packet.PUBACK}) {
			t.Fatalf("v%d acks %v", v, types)
		}
		wantLast := byte(packet.Success)
		if v == packet.Version5 {
			wantLast = packet.NotAuthorized
		}
		if codesAck[3] != wantLast {
			t.Errorf("v%d refused publish acknowledged with %#x, want %#x", v, codesAck[3], wantLast)
		}
		pub.write(packet.AppendAck(nil, packet.PUBREL, v, 11, 0, nil))
		if got := pub.tr.packets(t); len(got) != 1 || got[0].h.Type != packet.PUBCOMP {
			t.Fatalf("v%d PUBREL answer %+v", v, got)
		}
		got := publishes(t, v, sub.tr.packets(t))
		if len(got) != 3 || string(got[0].Payload) != "q0" || got[0].QoS != 0 || got[1].QoS != 1 || got[2].QoS != 2 {
			t.Fatalf("v%d subscriber got %d publishes: %+v", v, len(got), got)
		}
		// complete the outbound QoS 1 and 2 flows
		sub.write(packet.AppendAck(nil, packet.PUBACK, v, got[1].PacketID, 0, nil))
		sub.write(packet.AppendAck(nil, packet.PUBREC, v, got[2].PacketID, 0, nil))
		if rel := sub.tr.packets(t); len(rel) != 1 || rel[0].h.Type != packet.PUBREL {
			t.Fatalf("v%d want PUBREL, got %+v", v, rel)
		}
		sub.write(packet.AppendAck(nil, packet.PUBCOMP, v, got[2].PacketID, 0, nil))
		sub.c.s.mu.Lock()
		n := sub.c.s.inflightLen()
		sub.c.s.mu.Unlock()
		if n != 0 {
			t.Errorf("v%d %d deliveries still in flight", v, n)
		}
	}
}

// Packets split at every byte, and several packets in one read, decode the same.
func TestPacketsSplitAndShared(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	p := packet.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, CleanStart: true, ClientID: []byte("c"), PasswordFlag: true, UsernameFlag: true, Username: []byte("u"), Password: []byte(secret)}
	stream := packet.AppendConnect(nil, &p)
	stream = packet.AppendSubscribe(stream, 4, 1, nil, []packet.SubscribeFilter{{Filter: []byte("a/#")}})
	stream = packet.AppendPublish(stream, 4, &packet.Publish{Topic: []byte("a/b"), Payload: []byte("hello")})
	stream = packet.AppendPingreq(stream)
	for cut := 1; cut < len(stream); cut++ {
		cl := e.dial(t, 4)
		cl.write(stream[:cut])
		cl.write(stream[cut:])
		got := cl.tr.packets(t)
		var types []byte
		for _, r := range got {
			types = append(types, r.h.Type)
		}
		if string(types) != string([]byte{packet.CONNACK, packet.SUBACK, packet.PUBLISH, packet.PINGRESP}) {
			t.Fatalf("cut at %d: packets %v", cut, types)
		}
		closeWait(cl.c)
	}
}

func TestRevocationAndKick(t *testing.T) {
	e := newEnv(t, Config{})
	tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	v5 := e.dial(t, packet.Version5)
	v5.connect(secret, "v5", nil, nil)
	v5.subscribe(1, 0, "a/#")
	v3 := e.dial(t, packet.Version311)
	v3.connect(secret, "v3", nil, nil)
	v3.subscribe(1, 0, "a/#")
	ctx := context.Background()
	tags, _ := e.store.ListTags(ctx)
	if err := e.store.DeletePermission(ctx, tok.ID, tags[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	got := v5.tr.packets(t)
	if len(got) != 1 || got[0].h.Type != packet.DISCONNECT || !v5.tr.isClosed() {
		t.Fatalf("v5 after revocation: %+v closed %v", got, v5.tr.isClosed())
	}
	var d packet.Disconnect
	packet.DecodeDisconnect(got[0].body, 5, &d)
	if d.Code != packet.NotAuthorized || string(d.Props.ReasonString) != `tag no longer permitted: "a/#"` {
		t.Errorf("DISCONNECT %#x %q", d.Code, d.Props.ReasonString)
	}
	if !v3.tr.isClosed() || len(v3.tr.packets(t)) != 0 {
		t.Error("3.1.1: want a plain close")
	}

	// kick
	_, secret2 := e.token(t, 0, map[string]acl.Permission{"k/#": acl.PermRead})
	k := e.dial(t, packet.Version5)
	k.connect(secret2, "k", nil, nil)
	if !e.b.Kick(k.c.s.bs.ID()) {
		t.Fatal("kick: no session")
	}
	got = k.tr.packets(t)
	packet.DecodeDisconnect(got[0].body, 5, &d)
	if d.Code != packet.AdministrativeAction {
		t.Errorf("kick: DISCONNECT %#x", d.Code)
	}
}

func TestRevokeUnsubscribePolicy(t *testing.T) {
	e := newEnv(t, Config{OnRevoke: broker.RevokeUnsubscribe})
	tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite, "b/#": acl.PermReadWrite})
	cl := e.dial(t, packet.Version5)
	cl.connect(secret, "c", nil, nil)
	cl.subscribe(1, 0, "a/x", "b/x")
	ctx := context.Background()
	tags, _ := e.store.ListTags(ctx)
	for _, tg := range tags {
		if tg.Pattern == "a/#" {
			e.store.DeletePermission(ctx, tok.ID, tg.ID)
		}
	}
	e.b.RefreshTokens(ctx, tok.ID)
	if cl.tr.isClosed() {
		t.Fatal("closed; want only the subscription dropped")
	}
	other := e.dial(t, packet.Version5)
	_, s2 := e.token(t, 0, map[string]acl.Permission{"#": acl.PermReadWrite})
	other.connect(s2, "o", nil, nil)
	other.publish("a/x", "1", 0, 0)
	other.publish("b/x", "2", 0, 0)
	got := publishes(t, 5, cl.tr.packets(t))
	if len(got) != 1 || string(got[0].Payload) != "2" {
		t.Fatalf("after the revocation got %+v, want only b/x", got)
	}
}

func TestTakeover(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	first := e.dial(t, packet.Version5)
	first.connect(secret, "same", nil, nil)
	second := e.dial(t, packet.Version5)
	second.connect(secret, "same", nil, nil)
	got := first.tr.packets(t)
	var d packet.Disconnect
	if len(got) != 1 || packet.DecodeDisconnect(got[0].body, 5, &d) != nil || d.Code != packet.SessionTakenOver || !first.tr.isClosed() {
		t.Fatalf("first connection after takeover: %+v", got)
	}
	if second.tr.isClosed() {
		t.Fatal("the new connection was closed")
	}
	// Another token's client with the same identifier takes nothing over.
	_, other := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	third := e.dial(t, packet.Version5)
	third.connect(other, "same", nil, nil)
	if second.tr.isClosed() {
		t.Fatal("a client of another token took the session over")
	}
}

func TestWill(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"will/#": acl.PermReadWrite})
	_, roSecret := e.token(t, 0, map[string]acl.Permission{"will/#": acl.PermRead})
	watcher := e.dial(t, packet.Version311)
	watcher.connect(secret, "w", nil, nil)
	watcher.subscribe(1, 0, "will/#")
	w := &packet.Connect{WillTopic: []byte("will/dev"), WillPayload: []byte("gone")}

	abrupt := e.dial(t, packet.Version311)
	abrupt.connect(secret, "a", nil, w)
	closeWait(abrupt.c) // the socket died
	graceful := e.dial(t, packet.Version311)
	graceful.connect(secret, "g", nil, w)
	graceful.write(packet.AppendDisconnect(nil, 4, 0, nil))
	closeWait(graceful.c)
	readOnly := e.dial(t, packet.Version311)
	readOnly.connect(roSecret, "r", nil, w) // may not publish its will
	closeWait(readOnly.c)

	got := publishes(t, 4, watcher.tr.packets(t))
	if len(got) != 1 || string(got[0].Payload) != "gone" {
		t.Fatalf("wills heard: %+v, want exactly the abrupt one", got)
	}
}

func TestTopicAliasAndNoLocal(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	cl := e.dial(t, packet.Version5)
	cl.connect(secret, "c", nil, nil)
	cl.write(packet.AppendSubscribe(nil, 5, 1, nil, []packet.SubscribeFilter{{Filter: []byte("a/#"), NoLocal: true}}))
	cl.tr.packets(t)
	watcher := e.dial(t, packet.Version5)
	watcher.connect(secret, "w", nil, nil)
	watcher.subscribe(1, 0, "a/#")

	var props packet.Properties
	props.TopicAlias = 3
	props.Set(packet.PropTopicAlias)
	cl.write(packet.AppendPublish(nil, 5, &packet.Publish{Topic: []byte("a/long/topic"), Payload: []byte("1"), Props: props}))
	cl.write(packet.AppendPublish(nil, 5, &packet.Publish{Payload: []byte("2"), Props: props}))
	got := publishes(t, 5, watcher.tr.packets(t))
	if len(got) != 2 || string(got[1].Topic) != "a/long/topic" {
		t.Fatalf("aliased publishes: %+v", got)
	}
	if own := publishes(t, 5, cl.tr.packets(t)); len(own) != 0 {
		t.Fatalf("No Local: the publisher got its own %d messages", len(own))
	}
	props.TopicAlias = 99 // over the maximum (16)
	cl.write(packet.AppendPublish(nil, 5, &packet.Publish{Payload: []byte("3"), Props: props}))
	if !cl.tr.isClosed() {
		t.Fatal("an alias over the maximum did not close")
	}
}

func TestInflightWindowQueues(t *testing.T) {
	e := newEnv(t, Config{MaxInflight: 2, MaxQueued: 3})
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	sub := e.dial(t, packet.Version311)
	sub.connect(secret, "s", nil, nil)
	sub.subscribe(1, 1, "a/#")
	pub := e.dial(t, packet.Version311)
	pub.connect(secret, "p", nil, nil)
	for i := range 6 {
		pub.publish("a/x", string(rune('0'+i)), 1, uint16(i+1))
	}
	got := publishes(t, 4, sub.tr.packets(t))
	if len(got) != 2 {
		t.Fatalf("%d in flight, want the window (2)", len(got))
	}
	// 6 sent: 2 in flight, 3 queued, the oldest queued one dropped
	for _, p := range got {
		sub.write(packet.AppendAck(nil, packet.PUBACK, 4, p.PacketID, 0, nil))
	}
	next := publishes(t, 4, sub.tr.packets(t))
	if len(next) != 2 || string(next[0].Payload) != "3" {
		t.Fatalf("after two acks: %+v", next)
	}
}

// QoS 0 delivery to MQTT subscribers allocates nothing per subscriber: one
// shared encoding per protocol variant.
func TestDeliverQoS0Allocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	var subs []*client
	for i := range 20 {
		v := byte(packet.Version311)
		if i%2 == 0 {
			v = packet.Version5
		}
		s := e.dial(t, v)
		s.connect(secret, "s"+string(rune('a'+i)), nil, nil)
		s.subscribe(1, 0, "a/#")
		s.tr.out = make([]byte, 0, 1<<20)
		subs = append(subs, s)
	}
	pub := e.dial(t, packet.Version5)
	pub.connect(secret, "p", nil, nil)
	pkt := packet.AppendPublish(nil, 5, &packet.Publish{Topic: []byte("a/b"), Payload: []byte(`{"t":21.5}`)})
	pub.write(pkt)
	allocs := testing.AllocsPerRun(100, func() { pub.write(pkt) })
	if allocs != 0 {
		t.Fatalf("a QoS 0 publish to 20 MQTT subscribers allocates %.1f times", allocs)
	}
}

// closeWait reports the connection gone and waits for OnClose's work.
func closeWait(c *Conn) {
	c.OnClose()
	<-c.x.closed
}

// An idle MQTT connection's adapter state is one Conn and one session:
// keep them in their malloc size classes (a node holds a million).
func TestConnSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 64 {
		t.Errorf("Conn is %d bytes, over the 64-byte size class", n)
	}
	if n := unsafe.Sizeof(session{}); n > 80 {
		t.Errorf("session is %d bytes, over the 80-byte size class", n)
	}
}

// BenchmarkFanInQoS0 is the adapter's half of a fan-in: 16 QoS 0 PUBLISH
// packets (64-byte payloads, MQTT 3.1.1) decoded, authorized, matched and
// delivered to one wildcard subscriber, in one read (tcp: a chunk of the
// stream) or one WebSocket message each (ws, as MQTT.js sends them). ns/op
// is per 16; the deliveries/s metric counts messages.
func BenchmarkFanInQoS0(b *testing.B) {
	for _, wsFraming := range []bool{false, true} {
		name := "tcp"
		if wsFraming {
			name = "ws"
		}
		b.Run(name, func(b *testing.B) { benchFanIn(b, wsFraming) })
	}
}

func benchFanIn(b *testing.B, wsFraming bool) {
	e := newEnvTB(b, Config{})
	_, secret := e.token(b, 0, map[string]acl.Permission{"bench/#": acl.PermReadWrite})
	dial := func(id string) (*Conn, *fakeTransport) {
		tr := newFakeTransport()
		c := e.srv.NewConn(tr, wsFraming, "")
		p := packet.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, CleanStart: true, KeepAlive: 30, ClientID: []byte(id),
			UsernameFlag: true, Username: []byte("bench"), PasswordFlag: true, Password: []byte(secret)}
		c.OnMessage(false, packet.AppendConnect(nil, &p))
		return c, tr
	}
	sub, subTr := dial("sub")
	sub.OnMessage(false, packet.AppendSubscribe(nil, 4, 1, nil, []packet.SubscribeFilter{{Filter: []byte("bench/fanin/+")}}))
	pub, _ := dial("pub")
	payload := bytes.Repeat([]byte{'x'}, 64)
	pkt := packet.AppendPublish(nil, 4, &packet.Publish{Topic: []byte("bench/fanin/7"), Payload: payload})
	batch := bytes.Repeat(pkt, 16)
	subTr.out = make([]byte, 0, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		if wsFraming {
			for range 16 {
				pub.OnMessage(false, pkt)
			}
		} else {
			pub.OnMessage(false, batch)
		}
		subTr.mu.Lock()
		subTr.out = subTr.out[:0]
		subTr.mu.Unlock()
	}
	b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "deliveries/s")
}

// TestRepeatedTopicsInOneRead: within one read, a topic repeated after
// another one and a topic outside the grant each get their own
// verdict (the read's Publisher remembers only the last topic that passed,
// with the grants it passed against), and across reads a taken-away publish
// right refuses the same topic at once (MQTT 5: PUBACK 0x87).
func TestRepeatedTopicsInOneRead(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	sub := e.dial(t, packet.Version5)
	sub.connect(secret, "sub", nil, nil)
	sub.subscribe(1, 0, "a/#")
	pub := e.dial(t, packet.Version5)
	pub.connect(secret, "pub", nil, nil)
	var read []byte
	for i, topic := range []string{"a/1", "a/1", "a/2", "b", "a/1", "a/1"} {
		read = packet.AppendPublish(read, packet.Version5, &packet.Publish{Topic: []byte(topic), Payload: []byte{byte('0' + i)}, QoS: 1, PacketID: uint16(i + 1)})
	}
	pub.write(read)
	var codes []byte
	for _, r := range pub.tr.packets(t) {
		if r.h.Type == packet.PUBACK {
			var a packet.Ack
			if err := packet.DecodeAck(r.h, r.body, packet.Version5, &a); err != nil {
				t.Fatal(err)
			}
			codes = append(codes, a.Code)
		}
	}
	if want := []byte{0, 0, 0, packet.NotAuthorized, 0, 0}; !bytes.Equal(codes, want) {
		t.Fatalf("PUBACK codes %v, want %v", codes, want)
	}
	var got []string
	for _, p := range publishes(t, packet.Version5, sub.tr.packets(t)) {
		got = append(got, string(p.Topic)+"="+string(p.Payload))
	}
	if want := []string{"a/1=0", "a/1=1", "a/2=2", "a/1=4", "a/1=5"}; !slices.Equal(got, want) {
		t.Fatalf("subscriber got %v, want %v", got, want)
	}
	tags, _ := e.store.ListTags(ctx)
	if err := e.store.SetPermission(ctx, tok.ID, tags[0].ID, acl.PermRead); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	pub.write(packet.AppendPublish(nil, packet.Version5, &packet.Publish{Topic: []byte("a/1"), Payload: []byte("x"), QoS: 1, PacketID: 9}))
	for _, r := range pub.tr.packets(t) {
		if r.h.Type == packet.PUBACK {
			var a packet.Ack
			if err := packet.DecodeAck(r.h, r.body, packet.Version5, &a); err != nil {
				t.Fatal(err)
			}
			if a.Code != packet.NotAuthorized {
				t.Fatalf("after the publish right was taken away: PUBACK 0x%02x", a.Code)
			}
		}
	}
}
