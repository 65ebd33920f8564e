package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/proto"
)

// recEndpoint is a protocol adapter that records what the core hands it.
type recEndpoint struct {
	mu     sync.Mutex
	got    []recDelivery
	cause  Cause
	reason string
	ended  atomic.Int32
	count  atomic.Int64
	keep   bool
}

type recDelivery struct {
	topic, payload string
	qos            byte
	rap            bool
	ids            []uint32
	frame          string
}

var testEncoding = NewEncoding()

func (e *recEndpoint) Deliver(m *Message, d Delivery) (int, bool, <-chan struct{}) {
	e.count.Add(1)
	f := m.Frame(testEncoding, recEncode)
	if e.keep {
		e.mu.Lock()
		e.got = append(e.got, recDelivery{strings.Clone(m.Topic), string(m.Payload), d.QoS, d.RetainAsPublished, slices.Clone(d.SubIDs), string(f.B)})
		e.mu.Unlock()
	}
	return len(f.B), true, nil
}

// testEncodes counts recEncode calls (a package-level function, as an
// adapter's encoder is, so that Frame allocates nothing).
var testEncodes atomic.Int64

func recEncode(dst []byte, m *Message) []byte {
	testEncodes.Add(1)
	dst = append(dst, m.Topic...)
	dst = append(dst, ' ')
	return append(dst, m.Payload...)
}

func (e *recEndpoint) End(c Cause, reason string) {
	e.ended.Add(1)
	e.mu.Lock()
	e.cause, e.reason = c, reason
	e.mu.Unlock()
}

func (e *recEndpoint) deliveries() []recDelivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

func (e *recEndpoint) endCause() Cause {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cause
}

func (e *env) open(t testing.TB, secret string, req ConnectRequest) (*Session, *recEndpoint) {
	t.Helper()
	ep := &recEndpoint{keep: true}
	req.Secret = []byte(secret)
	if req.Protocol == "" {
		req.Protocol = "mqtt5"
	}
	s, err := e.b.Open(ep, req)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s, ep
}

func publishOn(s *Session, topic, payload string, qos byte) PublishResult {
	m := AcquireMessage()
	m.Topic = topic
	m.Payload = []byte(payload)
	m.QoS = qos
	r := s.Publish(m)
	ReleaseMessage(m)
	return r
}

func TestSubscribeResults(t *testing.T) {
	e := newEnvConfig(t, Config{MaxSubscriptions: 3})
	_, secret := e.token(t, 0, map[string]acl.Permission{"dev/+/cmd": acl.PermRead, "tele/#": acl.PermReadWrite})
	s, _ := e.open(t, secret, ConnectRequest{})
	for _, tc := range []struct {
		filter string
		want   SubResult
	}{
		{"dev/1/cmd", SubGranted},
		{"dev/+/cmd", SubGranted},
		{"dev/#", SubNotAuthorized}, // wider than the grant
		{"other", SubNotAuthorized},
		{"dev/1/cmd", SubReplaced}, // again: replaces, no quota used
		{"a/#/b", SubInvalid},
		{"", SubInvalid},
		{"tele/x", SubGranted},
		{"tele/y", SubQuota}, // the fourth distinct filter
	} {
		if got := s.Subscribe(tc.filter, SubOptions{QoS: 1}); got != tc.want {
			t.Errorf("Subscribe(%q) = %d, want %d", tc.filter, got, tc.want)
		}
	}
	if got := s.Subscriptions(); !slices.Equal(got, []string{"dev/1/cmd", "dev/+/cmd", "tele/x"}) {
		t.Errorf("subscriptions %q", got)
	}
	if !s.Unsubscribe("dev/+/cmd") || s.Unsubscribe("dev/+/cmd") {
		t.Error("Unsubscribe: want true once, then false")
	}
	if got := s.Subscribe("tele/y", SubOptions{}); got != SubGranted {
		t.Errorf("after an unsubscribe the quota has room: got %d", got)
	}
	s.Close()
	if got := s.Subscribe("tele/z", SubOptions{}); got != SubClosed {
		t.Errorf("Subscribe after Close = %d, want SubClosed", got)
	}
	if n := e.b.index.Count(); n != 0 {
		t.Errorf("index holds %d entries after Close", n)
	}
}

func TestPublishNeutral(t *testing.T) {
	e := newEnv(t)
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	pub, pubEp := e.open(t, secret, ConnectRequest{Protocol: "mqtt3"})
	echo := pub.Subscribe("a/#", SubOptions{QoS: 2}) // NoLocal false: MQTT 3.1.1 echoes
	if echo != SubGranted {
		t.Fatal(echo)
	}
	noLocal, noLocalEp := e.open(t, secret, ConnectRequest{})
	noLocal.Subscribe("a/#", SubOptions{QoS: 1, NoLocal: true, ID: 7})
	seed, seedConn := e.connect(t, secret, "a/b")

	if r := publishOn(pub, "a/b", "not json", 2); r != Published {
		t.Fatal(r)
	}
	if r := publishOn(noLocal, "a/b", `{"x":1}`, 0); r != Published {
		t.Fatal(r)
	}
	if r := publishOn(pub, "b", "x", 0); r != PublishNotAuthorized {
		t.Errorf("publish outside the grant: %d", r)
	}
	if r := publishOn(pub, "a/+", "x", 0); r != PublishInvalidTopic {
		t.Errorf("publish to a wildcard: %d", r)
	}
	seed.OnMessage(true, []byte(`{"tag":"a/b","message":[1,2]}`))

	// The MQTT 3 publisher hears itself and the others.
	if got := pubEp.deliveries(); len(got) != 3 || got[0].qos != 2 || got[1].qos != 0 || got[2].payload != "[1,2]" {
		t.Errorf("publisher (no-local off) got %+v", got)
	}
	// No Local: not its own; QoS is min(publish, granted); its subscription id travels.
	got := noLocalEp.deliveries()
	if len(got) != 2 || got[0].payload != "not json" || got[0].qos != 1 || !slices.Equal(got[0].ids, []uint32{7}) || got[1].payload != "[1,2]" {
		t.Errorf("no-local subscriber got %+v", got)
	}
	// The seed subscriber: JSON embedded, anything else as a JSON string,
	// never its own publish.
	frames := seedConn.frames
	if len(frames) != 2 {
		t.Fatalf("seed subscriber got %d frames", len(frames))
	}
	for i, want := range []string{`{"tag":"a/b","message":"not json"}`, `{"tag":"a/b","message":{"x":1}}`} {
		payload, ok := wsPayload(frames[i])
		if !ok || string(payload) != want {
			t.Errorf("seed frame %d = %q, want %q", i, payload, want)
		}
		if !json.Valid(payload) {
			t.Errorf("seed frame %d is not JSON", i)
		}
	}
}

// A session whose subscriptions overlap gets one delivery per message, at
// the highest QoS granted, with every subscription identifier.
func TestOverlappingSubscriptionsMerge(t *testing.T) {
	e := newEnv(t)
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	s, ep := e.open(t, secret, ConnectRequest{})
	s.Subscribe("a/b", SubOptions{QoS: 0, ID: 1})
	s.Subscribe("a/+", SubOptions{QoS: 2, ID: 2})
	s.Subscribe("a/#", SubOptions{QoS: 1, RetainAsPublished: true})
	other, _ := e.open(t, secret, ConnectRequest{})
	publishOn(other, "a/b", "m", 2)
	got := ep.deliveries()
	if len(got) != 1 {
		t.Fatalf("%d deliveries, want 1", len(got))
	}
	d := got[0]
	slices.Sort(d.ids)
	if d.qos != 2 || !d.rap || !slices.Equal(d.ids, []uint32{1, 2}) {
		t.Errorf("merged delivery %+v", d)
	}
}

// Every subscriber of one encoding shares one encode of the message.
func TestEncodedOncePerEncoding(t *testing.T) {
	e := newEnv(t)
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	for range 20 {
		s, _ := e.open(t, secret, ConnectRequest{})
		s.Subscribe("a/#", SubOptions{})
	}
	pub, _ := e.open(t, secret, ConnectRequest{})
	before := testEncodes.Load()
	publishOn(pub, "a/b", "m", 0)
	if n := testEncodes.Load() - before; n != 1 {
		t.Errorf("%d encodes for 20 subscribers, want 1", n)
	}
}

func TestRevocationNeutral(t *testing.T) {
	for _, policy := range []RevokePolicy{RevokeClose, RevokeUnsubscribe} {
		t.Run(fmt.Sprint(policy), func(t *testing.T) {
			e := newEnv(t)
			tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermRead, "b/#": acl.PermRead})
			s, ep := e.open(t, secret, ConnectRequest{OnRevoke: policy})
			s.Subscribe("a/x", SubOptions{})
			s.Subscribe("b/x", SubOptions{})
			// remove the grant on a/#
			ctx := context.Background()
			tags, _ := e.store.ListTags(ctx)
			for _, tg := range tags {
				if tg.Pattern == "a/#" {
					if err := e.store.DeletePermission(ctx, tok.ID, tg.ID); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
				t.Fatal(err)
			}
			switch policy {
			case RevokeClose:
				if !s.Closed() || ep.endCause() != CauseNotAuthorized {
					t.Fatalf("closed=%v cause %v, want closed, not_authorized", s.Closed(), ep.endCause())
				}
			case RevokeUnsubscribe:
				if s.Closed() || ep.ended.Load() != 0 {
					t.Fatal("the session was ended; want only the subscription dropped")
				}
				if got := s.Subscriptions(); !slices.Equal(got, []string{"b/x"}) {
					t.Fatalf("subscriptions %q, want [b/x]", got)
				}
				if r := s.Subscribe("a/x", SubOptions{}); r != SubNotAuthorized {
					t.Fatalf("re-subscribe after revocation: %d", r)
				}
			}
		})
	}
}

// A SUBSCRIBE racing a revocation never leaves an uncovered subscription:
// once RefreshTokens returned, the session holds none (or is closed).
func TestSubscribeRacingRevocation(t *testing.T) {
	for round := range 30 {
		e := newEnv(t)
		tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermRead})
		s, _ := e.open(t, secret, ConnectRequest{OnRevoke: RevokeUnsubscribe})
		var wg sync.WaitGroup
		stop := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s.Subscribe(fmt.Sprintf("a/%d", i%50), SubOptions{})
			}
		}()
		ctx := context.Background()
		tags, _ := e.store.ListTags(ctx)
		if err := e.store.DeletePermission(ctx, tok.ID, tags[0].ID); err != nil {
			t.Fatal(err)
		}
		if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		left := s.Subscriptions()
		close(stop)
		wg.Wait()
		if len(left) != 0 {
			t.Fatalf("round %d: %d subscriptions survived the revocation: %q", round, len(left), left)
		}
		if got := s.Subscriptions(); len(got) != 0 {
			t.Fatalf("round %d: subscribed after the revocation: %q", round, got)
		}
	}
}

func TestForwardedForm(t *testing.T) {
	m := &Message{Topic: "t", Payload: []byte("payload"), QoS: 1, Retain: true, Props: []byte{0x01, 0x01}}
	m.PayloadIsJSON()
	b := appendForward(nil, m)
	var got Message
	var dec proto.SeedDecoder
	if !parseForward(b, &got, &dec) {
		t.Fatal("parseForward refused its own form")
	}
	if string(got.Payload) != "payload" || got.QoS != 1 || !got.Retain || string(got.Props) != "\x01\x01" || got.json != 0 {
		t.Errorf("round trip: %+v", got)
	}
	// A seed frame from a node of the previous version.
	legacy := proto.AppendSeedFrame(nil, "t", []byte(`{"a":1}`))
	got = Message{}
	if !parseForward(legacy, &got, &dec) || string(got.Payload) != `{"a":1}` || got.json != 1 {
		t.Errorf("legacy frame: %+v", got)
	}
	for _, bad := range [][]byte{nil, {0x01}, {0x01, 0, 0xff}, {0x81, 5, 'x'}, {0x7f}} {
		if parseForward(bad, &Message{}, &dec) {
			t.Errorf("parseForward(%x) accepted", bad)
		}
	}
}

func FuzzParseForward(f *testing.F) {
	f.Add(appendForward(nil, &Message{Payload: []byte("x"), Props: []byte{1, 2}}))
	f.Add(proto.AppendSeedFrame(nil, "t", []byte(`{"a":1}`)))
	f.Add([]byte{0x01, 0xff, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		var dec proto.SeedDecoder
		if parseForward(b, &m, &dec) && b[0] == forwardVersion1 {
			again := appendForward(nil, &m)
			var m2 Message
			if !parseForward(again, &m2, &dec) || string(m2.Payload) != string(m.Payload) || string(m2.Props) != string(m.Props) {
				t.Fatalf("re-encoded form differs")
			}
		}
	})
}

// The neutral hot path — publish from any protocol, match, one shared
// encode per encoding, deliver to seed and to other endpoints, the
// forwarded form for the cluster — allocates nothing in steady state.
func TestNeutralPublishAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	e := newEnvConfig(t, Config{Router: &fakeRouter{added: map[string]int{}, removed: map[string]int{}}})
	_, rw := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
	pub, _ := e.open(t, rw, ConnectRequest{})
	var eps []*recEndpoint
	for i := range 30 {
		s, ep := e.open(t, rw, ConnectRequest{})
		ep.keep = false
		s.Subscribe(fmt.Sprintf("fleet/dev%d/#", i%5), SubOptions{QoS: 1, ID: uint32(i + 1)})
		s.Subscribe("fleet/+/temp", SubOptions{})
		eps = append(eps, ep)
		if _, err := e.b.Connect(&recConn{}, ConnectRequest{Secret: []byte(rw), Tags: []string{"fleet/+/temp"}}); err != nil {
			t.Fatal(err)
		}
	}
	payload := []byte(`{"c":21.5}`)
	publish := func() {
		m := AcquireMessage()
		m.Topic = "fleet/dev1/temp"
		m.Payload = payload
		m.QoS = 1
		pub.Publish(m)
		ReleaseMessage(m)
	}
	publish()
	if allocs := testing.AllocsPerRun(200, publish); allocs != 0 {
		t.Fatalf("publish allocates %.1f times per message", allocs)
	}
	var got int64
	for _, ep := range eps {
		got += ep.count.Load()
	}
	if want := int64(30 * 202); got != want {
		t.Fatalf("delivered %d, want %d (once per session)", got, want)
	}
}

// An idle seed connection's broker state is one SeedSession, one
// Subscription per tag and the slice holding them: keep them in their
// malloc size classes (240 and 48 bytes), since a node holds a million.
// (240 since the publish check's pointer, SeedSession.pub: 16 bytes per
// connection for skipping the topic and grant checks of a repeated topic.)
func TestSessionSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(SeedSession{}); n > 240 {
		t.Errorf("SeedSession is %d bytes, over the 240-byte size class", n)
	}
	if n := unsafe.Sizeof(Subscription{}); n > 48 {
		t.Errorf("Subscription is %d bytes, over the 48-byte size class", n)
	}
}

// recRouter keeps what Forward is given.
type recRouter struct {
	fakeRouter
	mu  sync.Mutex
	got [][]byte
}

func (r *recRouter) Forward(_ context.Context, _ string, b []byte) error {
	r.mu.Lock()
	r.got = append(r.got, append([]byte(nil), b...))
	r.mu.Unlock()
	return nil
}

// Nodes forward the neutral form, or seed frames for a rolling upgrade
// (Config.ForwardSeedFrames); both are read back.
func TestForwardForms(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		r := &recRouter{fakeRouter: fakeRouter{added: map[string]int{}, removed: map[string]int{}}}
		e := newEnvConfig(t, Config{Router: r, ForwardSeedFrames: legacy})
		_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
		pub, _ := e.open(t, secret, ConnectRequest{})
		publishOn(pub, "a/b", "not json", 1)
		if len(r.got) != 1 {
			t.Fatalf("legacy=%v: %d forwards", legacy, len(r.got))
		}
		if (r.got[0][0] == 0x81) != legacy {
			t.Fatalf("legacy=%v: forwarded form starts with %#x", legacy, r.got[0][0])
		}
		var m Message
		var dec proto.SeedDecoder
		if !parseForward(r.got[0], &m, &dec) {
			t.Fatalf("legacy=%v: the forwarded form does not parse", legacy)
		}
		want := "not json"
		if legacy {
			want = `"not json"` // the seed protocol carries it as a JSON string
		}
		if string(m.Payload) != want {
			t.Fatalf("legacy=%v: payload %q, want %q", legacy, m.Payload, want)
		}
	}
}

// A seed publisher's repeated topic skips the topic and grant checks only
// while the token's grants are the ones it passed: the publish right taken
// away refuses the very next publish to the same topic, and one given back
// allows it again; another topic is checked on its own.
func TestRepeatedPublishFollowsGrants(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	tags, err := e.store.ListTags(ctx)
	if err != nil || len(tags) != 1 {
		t.Fatal(tags, err)
	}
	pub, pubConn := e.connect(t, secret, "a/pub")
	_, sub := e.connect(t, secret, "a/#")
	send := func(tag string) {
		pub.OnMessage(true, []byte(`{"tag":"`+tag+`","message":1}`))
	}
	expect := func(what string, n int64) {
		t.Helper()
		if got := sub.sent.Load(); got != n {
			t.Fatalf("%s: the subscriber has %d messages, want %d", what, got, n)
		}
	}
	for range 3 {
		send("a/b")
	}
	expect("three publishes to a/b", 3)
	send("b")
	send("a/+")
	expect("a topic outside the grant and a wildcard after the repeats", 3)
	send("a/b") // the repeat is remembered again
	expect("a/b again", 4)
	change := func(p acl.Permission) {
		t.Helper()
		if err := e.store.SetPermission(ctx, tok.ID, tags[0].ID, p); err != nil {
			t.Fatal(err)
		}
		if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
	}
	change(acl.PermRead)
	send("a/b")
	expect("a/b after the publish right was taken away", 4)
	if pubConn.code() != 0 {
		t.Fatalf("the publisher (still allowed to read a/pub) was closed with %d", pubConn.code())
	}
	change(acl.PermReadWrite)
	send("a/b")
	expect("a/b after the right came back", 5)
}
