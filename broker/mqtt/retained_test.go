package mqtt

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/gatecast/gatecast/acl"
	packet "github.com/gatecast/gatecast/proto/mqtt"
)

func (cl *client) publishRetained(topic, payload string, qos byte, id uint16, props *packet.Properties) {
	p := packet.Publish{Topic: []byte(topic), Payload: []byte(payload), QoS: qos, PacketID: id, Retain: true}
	if props != nil {
		p.Props = *props
	}
	cl.write(packet.AppendPublish(nil, cl.version, &p))
}

func (cl *client) subscribeRH(id uint16, filter string, rh byte) {
	cl.t.Helper()
	cl.write(packet.AppendSubscribe(nil, cl.version, id, nil, []packet.SubscribeFilter{{Filter: []byte(filter), QoS: 1, RetainHandling: rh}}))
}

func TestRetainedMessages(t *testing.T) {
	e := newEnv(t, Config{RetainedMax: 3})
	// '#' does not cover '$' topics, as in matching: $SYS needs its own grant
	_, secret := e.token(t, 0, map[string]acl.Permission{"#": acl.PermReadWrite, "$SYS/#": acl.PermReadWrite})
	pub := e.dial(t, packet.Version5)
	pub.connect(secret, "pub", nil, nil)
	pub.publishRetained("s/1/status", "online", 1, 1, nil)
	pub.publishRetained("s/2/status", "offline", 0, 0, nil)
	pub.publishRetained("$SYS/x", "system", 0, 0, nil)
	pub.publishRetained("s/3/status", "over the count", 1, 2, nil) // RetainedMax 3
	pub.publishRetained("s/2/status", "", 0, 0, nil)               // clears
	acks := pub.tr.packets(t)
	var ack packet.Ack
	packet.DecodeAck(acks[1].h, acks[1].body, 5, &ack)
	if len(acks) != 2 || ack.Code != packet.QuotaExceeded {
		t.Fatalf("acks %+v code %#x, want the fourth retained topic refused with 0x97", acks, ack.Code)
	}

	sub := e.dial(t, packet.Version5)
	sub.connect(secret, "sub", nil, nil)
	sub.subscribeRH(1, "#", 0)
	got := sub.tr.packets(t)
	if got[0].h.Type != packet.SUBACK {
		t.Fatalf("first %v, want SUBACK before the retained messages", got[0].h.Type)
	}
	ps := publishes(t, 5, got)
	if len(ps) != 1 || string(ps[0].Topic) != "s/1/status" || !ps[0].Retain || ps[0].QoS != 1 {
		t.Fatalf("retained on #: %+v (want s/1/status only: cleared one gone, $SYS not matched by #)", ps)
	}
	// Retain Handling 1: only for a new subscription; 2: never.
	sub.subscribeRH(2, "#", 1)
	if ps := publishes(t, 5, sub.tr.packets(t)); len(ps) != 0 {
		t.Fatalf("RH 1 on an existing subscription sent %d", len(ps))
	}
	sub.subscribeRH(3, "s/+/status", 2)
	if ps := publishes(t, 5, sub.tr.packets(t)); len(ps) != 0 {
		t.Fatalf("RH 2 sent %d", len(ps))
	}
	sub.subscribeRH(4, "$SYS/#", 0)
	if ps := publishes(t, 5, sub.tr.packets(t)); len(ps) != 1 || string(ps[0].Payload) != "system" {
		t.Fatalf("$SYS/# got %+v", ps)
	}
	// A live publish with retain reaches current subscribers with RETAIN 0
	// (no Retain As Published).
	pub.publishRetained("s/1/status", "again", 0, 0, nil)
	ps = publishes(t, 5, sub.tr.packets(t))
	if len(ps) != 1 || ps[0].Retain {
		t.Fatalf("live retained publish: %+v", ps)
	}
}

func TestRetainedExpiry(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"#": acl.PermReadWrite})
	pub := e.dial(t, packet.Version5)
	pub.connect(secret, "pub", nil, nil)
	var props packet.Properties
	props.MessageExpiryInterval = 100
	props.Set(packet.PropMessageExpiryInterval)
	pub.publishRetained("long", "x", 0, 0, &props)
	props.MessageExpiryInterval = 1
	pub.publishRetained("short", "y", 0, 0, &props)
	time.Sleep(1100 * time.Millisecond)
	sub := e.dial(t, packet.Version5)
	sub.connect(secret, "sub", nil, nil)
	sub.subscribeRH(1, "#", 0)
	ps := publishes(t, 5, sub.tr.packets(t))
	if len(ps) != 1 || string(ps[0].Topic) != "long" {
		t.Fatalf("got %+v, want only the unexpired one", ps)
	}
	if left := ps[0].Props.MessageExpiryInterval; left == 0 || left > 100 {
		t.Fatalf("remaining expiry %d", left)
	}
}

// memRetainStore is a RetainStore in memory (the SQL stores are tested
// against the same contract in acl).
type memRetainStore struct {
	mu sync.Mutex
	m  map[string]Retained
}

func (s *memRetainStore) LoadRetained(context.Context) ([]Retained, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Retained
	for _, r := range s.m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out, nil
}
func (s *memRetainStore) PutRetained(_ context.Context, r Retained) error {
	s.mu.Lock()
	s.m[r.Topic] = r
	s.mu.Unlock()
	return nil
}
func (s *memRetainStore) DeleteRetained(_ context.Context, topic string) error {
	s.mu.Lock()
	delete(s.m, topic)
	s.mu.Unlock()
	return nil
}

// Retained messages go to the store in the background and come back at
// start-up.
func TestRetainedSurviveRestart(t *testing.T) {
	store := &memRetainStore{m: map[string]Retained{}}
	e := newEnv(t, Config{RetainStore: store})
	_, secret := e.token(t, 0, map[string]acl.Permission{"#": acl.PermReadWrite})
	pub := e.dial(t, packet.Version311)
	pub.connect(secret, "pub", nil, nil)
	pub.publishRetained("a", "1", 0, 0, nil)
	pub.publishRetained("b", "2", 0, 0, nil)
	pub.publishRetained("b", "", 0, 0, nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		all, _ := store.LoadRetained(context.Background())
		if len(all) == 1 && all[0].Topic == "a" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store holds %+v", all)
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv2, err := NewServer(Config{Broker: e.b, RetainStore: store})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	srv2.retained.match("#", time.Now(), func(*Retained) { n++ })
	if n != 1 {
		t.Fatalf("after a restart %d retained messages, want 1", n)
	}
}

// Shared subscriptions: each message goes to one member of the group;
// members of different groups each get it; an invalid group is refused.
func TestSharedSubscriptions(t *testing.T) {
	e := newEnv(t, Config{})
	_, secret := e.token(t, 0, map[string]acl.Permission{"jobs/#": acl.PermReadWrite})
	var members []*client
	for i, g := range []string{"workers", "workers", "workers", "audit"} {
		c := e.dial(t, packet.Version5)
		c.connect(secret, "m"+string(rune('0'+i)), nil, nil)
		if codes := c.subscribe(1, 1, "$share/"+g+"/jobs/+"); codes[0] != 1 {
			t.Fatalf("SUBACK %#x", codes[0])
		}
		members = append(members, c)
	}
	bad := e.dial(t, packet.Version5)
	bad.connect(secret, "bad", nil, nil)
	if codes := bad.subscribe(1, 0, "$share/+/jobs/x", "$share/g/other/x"); codes[0] != packet.TopicFilterInvalid || codes[1] != packet.NotAuthorized {
		t.Fatalf("invalid group / ungranted filter: % x", codes)
	}
	pub := e.dial(t, packet.Version5)
	pub.connect(secret, "pub", nil, nil)
	for i := range 30 {
		pub.publish("jobs/"+string(rune('a'+i%3)), "job", 0, 0)
	}
	counts := make([]int, len(members))
	for i, m := range members {
		counts[i] = len(publishes(t, 5, m.tr.packets(t)))
	}
	if counts[0]+counts[1]+counts[2] != 30 || counts[3] != 30 {
		t.Fatalf("deliveries per member %v: want the three workers to share 30 and audit to get 30", counts)
	}
	for _, n := range counts[:3] {
		if n == 0 {
			t.Fatalf("round robin left a member out: %v", counts)
		}
	}
	// a member leaves: the others get everything
	closeWait(members[0].c)
	for range 10 {
		pub.publish("jobs/x", "job", 0, 0)
	}
	if a, b := len(publishes(t, 5, members[1].tr.packets(t))), len(publishes(t, 5, members[2].tr.packets(t))); a+b != 10 {
		t.Fatalf("after a member left: %d + %d, want 10", a, b)
	}
}
