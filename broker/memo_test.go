package broker

import (
	"fmt"
	"slices"
	"testing"

	"github.com/gatecast/gatecast/acl"
)

// BenchmarkSeedFanIn is the broker's half of the IoT fan-in: 200 seed
// devices, each subscribed to its own command topic and publishing to its
// own telemetry topic, reads of 16 publishes each (OnReadEnd after them),
// the devices taking turns, one wildcard subscriber taking every message by
// copy. ns/op is per message.
func BenchmarkSeedFanIn(b *testing.B) {
	const devices, perRead = 200, 16
	e := newEnv(b)
	_, rw := e.token(b, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
	sub := &coalescingConn{count: true}
	if _, err := e.b.Connect(sub, ConnectRequest{Secret: []byte(rw), Tags: []string{"fleet/+/temp"}}); err != nil {
		b.Fatal(err)
	}
	pubs := make([]*SeedSession, devices)
	msgs := make([][]byte, devices)
	for i := range pubs {
		pubs[i], _ = e.connect(b, rw, fmt.Sprintf("fleet/dev%d/cmd", i))
		msgs[i] = fmt.Appendf(nil, `{"tag":"fleet/dev%d/temp","message":{"c":21.5,"seq":12345678}}`, i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; n < b.N; i++ {
		p, msg := pubs[i%devices], msgs[i%devices]
		for range perRead {
			p.OnMessage(true, msg)
		}
		p.OnReadEnd()
		n += perRead
	}
	b.StopTimer()
	if sub.n != n {
		b.Fatalf("delivered %d, want %d", sub.n, n)
	}
}

// memoEnv is a broker with one wildcard subscriber (fan), so that every
// Match consults the match cache and its hit and miss counters count Match
// calls (matches).
type memoEnv struct {
	*env
	rw    string
	fan   *recEndpoint
	fanSn *Session
}

func newMemoEnv(t testing.TB) *memoEnv {
	e := newEnv(t)
	_, rw := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
	s, fan := e.open(t, rw, ConnectRequest{})
	if r := s.Subscribe("fleet/+/temp", SubOptions{}); r != SubGranted {
		t.Fatal(r)
	}
	return &memoEnv{env: e, rw: rw, fan: fan, fanSn: s}
}

// matches is how many Match calls the index has answered so far.
func (e *memoEnv) matches() uint64 {
	h, m := e.b.index.CacheStats()
	return h + m
}

// subscriber opens a session subscribed to filter with opts.
func (e *memoEnv) subscriber(t testing.TB, filter string, opts SubOptions) (*Session, *recEndpoint) {
	t.Helper()
	s, ep := e.open(t, e.rw, ConnectRequest{})
	if r := s.Subscribe(filter, opts); r != SubGranted {
		t.Fatalf("Subscribe(%q) = %d", filter, r)
	}
	return s, ep
}

// mqttRead publishes on s as the MQTT adapter does within one read: every
// message carries the read's pooled Publisher (Borrow: the topics stay
// valid for the read), given back by end.
type mqttRead struct {
	b *Broker
	s *Session
	p *Publisher
}

func newMQTTRead(b *Broker, s *Session) *mqttRead {
	return &mqttRead{b: b, s: s, p: AcquirePublisher()}
}

func (r *mqttRead) publish(t testing.TB, topic, payload string) {
	t.Helper()
	m := AcquireMessage()
	m.Topic = topic
	m.Payload = []byte(payload)
	m.SetPublisher(r.p)
	res := r.s.Publish(m)
	ReleaseMessage(m)
	if res != Published {
		t.Fatalf("publish %q: %d", topic, res)
	}
}

func (r *mqttRead) end() { ReleasePublisher(r.b, r.p) }

func payloads(ep *recEndpoint) []string {
	var out []string
	for _, d := range ep.deliveries() {
		out = append(out, d.payload)
	}
	return out
}

func wantPayloads(t *testing.T, who string, ep *recEndpoint, want ...string) {
	t.Helper()
	if got := payloads(ep); !slices.Equal(got, want) {
		t.Fatalf("%s got %q, want %q", who, got, want)
	}
}

// TestMatchMemoFollowsIndexChanges: within one read (one Publisher), a
// repeated topic is matched once, and yet every subscribe and unsubscribe
// made between two publishes - a literal or a wildcard filter - counts for
// the very next publish; a session closed while its subscriptions are still
// in the index (the window a rights change leaves) gets nothing.
func TestMatchMemoFollowsIndexChanges(t *testing.T) {
	const A = "fleet/dev1/temp"
	for _, seed := range []bool{false, true} {
		name := "mqtt-read"
		if seed {
			name = "seed-connection"
		}
		t.Run(name, func(t *testing.T) {
			e := newMemoEnv(t)
			var publish func(payload string)
			var endRead func()
			if seed {
				ss, _ := e.connect(t, e.rw, "fleet/dev1/cmd")
				publish = func(payload string) {
					ss.OnMessage(true, []byte(`{"tag":"`+A+`","message":`+payload+`}`))
				}
				endRead = ss.OnReadEnd
			} else {
				s, _ := e.open(t, e.rw, ConnectRequest{})
				r := newMQTTRead(e.b, s)
				publish = func(payload string) { r.publish(t, A, payload) }
				endRead = r.end
			}
			defer endRead()

			publish("1")
			before := e.matches()
			publish("2")
			publish("3")
			if n := e.matches() - before; n != 0 {
				t.Fatalf("a topic repeated within the read was matched %d more times, want 0", n)
			}
			wantPayloads(t, "the wildcard subscriber", e.fan, "1", "2", "3")

			lit, litEp := e.subscriber(t, A, SubOptions{})
			publish("4")
			wantPayloads(t, "a literal subscriber that came after the memo", litEp, "4")
			wild, wildEp := e.subscriber(t, "fleet/dev1/#", SubOptions{})
			publish("5")
			wantPayloads(t, "a wildcard subscriber that came after the memo", wildEp, "5")
			wantPayloads(t, "the literal subscriber", litEp, "4", "5")

			if !lit.Unsubscribe(A) {
				t.Fatal("Unsubscribe")
			}
			publish("6")
			wantPayloads(t, "the literal subscriber, unsubscribed", litEp, "4", "5")
			if !wild.Unsubscribe("fleet/dev1/#") {
				t.Fatal("Unsubscribe")
			}
			publish("7")
			wantPayloads(t, "the wildcard subscriber, unsubscribed", wildEp, "5", "6")

			// Closed (as a rights change closes it) but still in the index:
			// the memo holds it, dispatch skips it.
			s, ep := e.subscriber(t, A, SubOptions{})
			publish("8")
			before = e.matches()
			ts := s.token
			ts.mu.Lock()
			s.closeLocked(CauseNone, "", revokeNone)
			ts.mu.Unlock()
			publish("9")
			if n := e.matches() - before; n != 0 {
				t.Fatalf("closing a session changed the index (%d matches): the test no longer covers the memo", n)
			}
			wantPayloads(t, "a session closed while in the index", ep, "8")
			s.release()
			publish("10")
			wantPayloads(t, "the wildcard subscriber", e.fan, "1", "2", "3", "4", "5", "6", "7", "8", "9", "10")
		})
	}
}

// TestMatchMemoPerMessageDecisions: what dispatch decides per message still
// is, on a memo hit: a shared group's member rotates, No Local keeps the
// publisher's own subscription quiet while another session hears every
// message, and a session matched by several filters gets one merged
// delivery per message.
func TestMatchMemoPerMessageDecisions(t *testing.T) {
	const A = "fleet/dev1/temp"
	e := newMemoEnv(t)
	_, m1 := e.subscriber(t, "$share/g/"+A, SubOptions{})
	_, m2 := e.subscriber(t, "$share/g/"+A, SubOptions{})
	multi, multiEp := e.subscriber(t, A, SubOptions{ID: 1})
	if r := multi.Subscribe("fleet/+/temp", SubOptions{QoS: 1, ID: 2}); r != SubGranted {
		t.Fatal(r)
	}
	pub, pubEp := e.subscriber(t, A, SubOptions{NoLocal: true})
	echo, echoEp := e.subscriber(t, A, SubOptions{}) // publishes too, without No Local

	r := newMQTTRead(e.b, pub)
	r.publish(t, A, "0")
	before := e.matches()
	for i := 1; i < 6; i++ {
		r.publish(t, A, fmt.Sprint(i))
	}
	r.end()
	if n := e.matches() - before; n != 0 {
		t.Fatalf("%d matches for five repeats in one read, want 0", n)
	}
	g1, g2 := payloads(m1), payloads(m2)
	if len(g1)+len(g2) != 6 || len(g1) != 3 || len(g2) != 3 {
		t.Fatalf("shared group members got %q and %q: want the six messages split 3/3 (one each, in turn)", g1, g2)
	}
	for i := 1; i < 6; i++ {
		if slices.Contains(g1, fmt.Sprint(i)) == slices.Contains(g1, fmt.Sprint(i-1)) {
			t.Fatalf("shared group members got %q and %q: not rotating per message", g1, g2)
		}
	}
	wantPayloads(t, "the publisher (No Local)", pubEp, []string(nil)...)
	wantPayloads(t, "another subscriber", echoEp, "0", "1", "2", "3", "4", "5")
	got := multiEp.deliveries()
	if len(got) != 6 {
		t.Fatalf("a session with two matching filters got %d deliveries for 6 messages", len(got))
	}
	for _, d := range got {
		ids := slices.Sorted(slices.Values(d.ids))
		if d.qos != 0 || !slices.Equal(ids, []uint32{1, 2}) {
			t.Fatalf("merged delivery %+v, want QoS 0 (the message's) and ids [1 2]", d)
		}
	}

	// The echoing session publishes: it hears itself on every repeat.
	r = newMQTTRead(e.b, echo)
	for i := range 3 {
		r.publish(t, A, fmt.Sprint("e", i))
	}
	r.end()
	wantPayloads(t, "a publisher without No Local", echoEp, "0", "1", "2", "3", "4", "5", "e0", "e1", "e2")
	wantPayloads(t, "the No Local session hearing another publisher", pubEp, "e0", "e1", "e2")
}

// TestMatchMemoLifetime: the memo holds only the read's last topic, is
// forgotten at the end of the read (a seed connection's OnReadEnd, a pooled
// Publisher's release) with no subscription left reachable, and never keeps
// more than maxMemoSubs subscriptions or that much capacity.
func TestMatchMemoLifetime(t *testing.T) {
	e := newMemoEnv(t)
	for range 3 {
		e.subscriber(t, "fleet/dev1/temp", SubOptions{})
	}
	for range maxMemoSubs {
		e.subscriber(t, "fleet/big/temp", SubOptions{}) // with fan: one over the bound
	}
	ss, _ := e.connect(t, e.rw, "fleet/dev1/cmd")
	p := func() *Publisher { return ss.pub }
	send := func(topic string) { ss.OnMessage(true, []byte(`{"tag":"`+topic+`","message":1}`)) }
	tailNil := func(what string) {
		t.Helper()
		for i, s := range p().memoSubs[:cap(p().memoSubs)] {
			if i >= len(p().memoSubs) && s != nil {
				t.Fatalf("%s: memo slot %d past its length still holds a subscription", what, i)
			}
		}
	}

	send("fleet/dev1/temp")
	if !p().memoOK || len(p().memoSubs) != 4 {
		t.Fatalf("after a publish to a topic with 4 subscriptions: memo ok=%v len %d", p().memoOK, len(p().memoSubs))
	}
	send("fleet/dev2/temp") // only the wildcard subscriber: the memo shrinks
	if !p().memoOK || len(p().memoSubs) != 1 {
		t.Fatalf("after another topic: memo ok=%v len %d, want the new topic's 1", p().memoOK, len(p().memoSubs))
	}
	tailNil("after shrinking")
	send("fleet/big/temp")
	if p().memoOK || len(p().memoSubs) != 0 || cap(p().memoSubs) > maxMemoSubs {
		t.Fatalf("a topic matching %d subscriptions: memo ok=%v len %d cap %d; want none kept, cap <= %d",
			maxMemoSubs+1, p().memoOK, len(p().memoSubs), cap(p().memoSubs), maxMemoSubs)
	}
	tailNil("after a fan-out topic")
	send("fleet/dev1/temp")
	ss.OnReadEnd()
	if p().memoOK || len(p().memoSubs) != 0 {
		t.Fatalf("after OnReadEnd: memo ok=%v len %d", p().memoOK, len(p().memoSubs))
	}
	tailNil("after OnReadEnd")

	// A pooled (MQTT) Publisher: forgotten by the end of the read.
	s, _ := e.open(t, e.rw, ConnectRequest{})
	r := newMQTTRead(e.b, s)
	r.publish(t, "fleet/dev1/temp", "1")
	if !r.p.memoOK || len(r.p.memoSubs) != 4 {
		t.Fatalf("pooled Publisher: memo ok=%v len %d", r.p.memoOK, len(r.p.memoSubs))
	}
	r.p.Flush(e.b) // what ReleasePublisher does first
	if r.p.memoOK || len(r.p.memoSubs) != 0 || slices.ContainsFunc(r.p.memoSubs[:cap(r.p.memoSubs)], func(s *Subscription) bool { return s != nil }) {
		t.Fatal("a flushed Publisher still holds its match memo")
	}
	r.end()
}

// TestMatchMemoConcurrentChanges: publishers repeating one topic in long
// reads race subscribes and unsubscribes of both kinds (for the race
// detector); once the churn has stopped, with nothing of it left, the next
// publish of a read that is still going reaches exactly the fan subscriber.
func TestMatchMemoConcurrentChanges(t *testing.T) {
	const A = "fleet/dev1/temp"
	e := newMemoEnv(t)
	s, _ := e.open(t, e.rw, ConnectRequest{})
	churn, churnEp := e.open(t, e.rw, ConnectRequest{})
	r := newMQTTRead(e.b, s)
	defer r.end()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 300 {
			f := A
			if i%2 == 1 {
				f = "fleet/+/temp"
			}
			churn.Subscribe(f, SubOptions{})
			churn.Unsubscribe(f)
		}
	}()
	for n := 0; ; n++ {
		select {
		case <-done:
		default:
			r.publish(t, A, "x")
			continue
		}
		break
	}
	before := len(churnEp.deliveries())
	fanBefore := len(e.fan.deliveries())
	r.publish(t, A, "after")
	if n := len(churnEp.deliveries()) - before; n != 0 {
		t.Fatalf("an unsubscribed session got %d messages", n)
	}
	if n := len(e.fan.deliveries()) - fanBefore; n != 1 {
		t.Fatalf("the fan subscriber got %d messages, want 1", n)
	}
}

// TestMatchMemoAllocs: the memo's hit path (a topic repeated within one
// read), its miss path (one publish per read, seed and pooled MQTT
// Publishers alike) allocate nothing in steady state, and the hit path
// does not match.
func TestMatchMemoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	e := newMemoEnv(t)
	e.fan.keep = false
	for range 3 {
		_, ep := e.subscriber(t, "fleet/dev1/temp", SubOptions{})
		ep.keep = false
	}
	ss, _ := e.connect(t, e.rw, "fleet/dev1/cmd")
	msg := []byte(`{"tag":"fleet/dev1/temp","message":{"c":21.5,"seq":12345678}}`)
	ss.OnMessage(true, msg)
	before := e.matches()
	if allocs := testing.AllocsPerRun(200, func() { ss.OnMessage(true, msg) }); allocs != 0 {
		t.Fatalf("a memo hit allocates %.1f times per message", allocs)
	}
	if n := e.matches() - before; n != 0 {
		t.Fatalf("%d matches on the memo's hit path", n)
	}
	if allocs := testing.AllocsPerRun(200, func() { ss.OnMessage(true, msg); ss.OnReadEnd() }); allocs != 0 {
		t.Fatalf("a read of one seed publish (a memo miss) allocates %.1f times", allocs)
	}
	s, _ := e.open(t, e.rw, ConnectRequest{})
	payload := []byte("{}")
	read := func() {
		p := AcquirePublisher()
		for range 4 {
			m := AcquireMessage()
			m.Topic = "fleet/dev1/temp"
			m.Payload = payload
			m.SetPublisher(p)
			s.Publish(m)
			ReleaseMessage(m)
		}
		ReleasePublisher(e.b, p)
	}
	read()
	if allocs := testing.AllocsPerRun(200, read); allocs != 0 {
		t.Fatalf("an MQTT-style read of 4 publishes allocates %.1f times", allocs)
	}
	if want := int64(1 + 201 + 201 + 4 + 4*201); e.fan.count.Load() != want {
		t.Fatalf("the fan subscriber got %d, want %d", e.fan.count.Load(), want)
	}
}

// TestPublisherScratchPerRead: a read keeps one match scratch for all its
// publishes, holding no subscriber between them, and gives it back to the
// pool when the read ends (seed OnReadEnd; a pooled Publisher's release).
func TestPublisherScratchPerRead(t *testing.T) {
	e := newMemoEnv(t)
	e.subscriber(t, "fleet/dev1/temp", SubOptions{})
	ss, _ := e.connect(t, e.rw, "fleet/dev1/cmd")
	held := func(p *Publisher, what string) *matchScratch {
		t.Helper()
		sc := p.scratch
		if sc == nil {
			t.Fatalf("%s: the read holds no scratch", what)
		}
		if slices.ContainsFunc(sc.subs[:cap(sc.subs)], func(s *Subscription) bool { return s != nil }) ||
			slices.ContainsFunc(sc.multi[:cap(sc.multi)], func(s *Subscription) bool { return s != nil }) {
			t.Fatalf("%s: the held scratch keeps subscriptions reachable", what)
		}
		return sc
	}
	ss.OnMessage(true, []byte(`{"tag":"fleet/dev1/temp","message":1}`))
	first := held(ss.pub, "after one publish")
	ss.OnMessage(true, []byte(`{"tag":"fleet/dev2/temp","message":2}`))
	if held(ss.pub, "after two") != first {
		t.Fatal("the second publish of the read took another scratch")
	}
	ss.OnReadEnd()
	if ss.pub.scratch != nil {
		t.Fatal("the scratch outlived the read")
	}

	s, _ := e.open(t, e.rw, ConnectRequest{})
	r := newMQTTRead(e.b, s)
	r.publish(t, "fleet/dev1/temp", "1")
	held(r.p, "pooled Publisher")
	p := r.p
	r.end()
	if p.scratch != nil {
		t.Fatal("a released Publisher still holds its scratch")
	}
}
