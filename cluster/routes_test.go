package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/gatecast/gatecast/internal/testserver"
	"github.com/gatecast/gatecast/topic"
)

// inbox records what a node's Deliver receives.
type inbox struct {
	mu   sync.Mutex
	msgs []string // topic + "|" + payload
}

func (in *inbox) deliver(t string, payload []byte) {
	in.mu.Lock()
	in.msgs = append(in.msgs, t+"|"+string(payload))
	in.mu.Unlock()
}

func (in *inbox) count(msg string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := 0
	for _, m := range in.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

func (in *inbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.msgs)
}

type routeNode struct {
	*Routes
	in *inbox
}

func openRoutes(t *testing.T, c rueidis.Client, id string, ackTimeout time.Duration) routeNode {
	t.Helper()
	in := &inbox{}
	r, err := OpenRoutes(ctxT(t), RoutesConfig{Client: c, NodeID: id, Deliver: in.deliver, AckTimeout: ackTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return routeNode{r, in}
}

func mustAdd(t *testing.T, r routeNode, filters ...string) {
	t.Helper()
	for _, f := range filters {
		if err := r.Add(ctxT(t), f); err != nil {
			t.Fatal(err)
		}
	}
}

func mustRemove(t *testing.T, r routeNode, filters ...string) {
	t.Helper()
	for _, f := range filters {
		if err := r.Remove(ctxT(t), f); err != nil {
			t.Fatal(err)
		}
	}
}

func mustForward(t *testing.T, r routeNode, topic, payload string) {
	t.Helper()
	if err := r.Forward(ctxT(t), topic, []byte(payload)); err != nil {
		t.Fatal(err)
	}
}

// spublishCalls sums SPUBLISH calls over every Redis server of c.
func spublishCalls(t *testing.T, c rueidis.Client) int64 {
	t.Helper()
	var sum int64
	for _, n := range c.Nodes() {
		info, err := n.Do(ctxT(t), n.B().Info().Section("commandstats").Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(info, "\n") {
			if rest, ok := strings.CutPrefix(line, "cmdstat_spublish:calls="); ok {
				v, err := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				sum += v
			}
		}
	}
	return sum
}

func targetIDs(r *Routes, topic string) []string {
	var ids []string
	for _, p := range r.targets(topic, nil) {
		ids = append(ids, p.id)
	}
	slices.Sort(ids)
	return ids
}

// settle waits a little so that a message that should not arrive would
// have (pub/sub on loopback takes well under a millisecond).
func settle() { time.Sleep(150 * time.Millisecond) }

// The scenario of the issue: b and c subscribe, a publishes; each matching
// node gets the message exactly once, nobody else gets anything, and no
// PUBLISH leaves a for a topic nobody matches.
func TestRoutesForwardOncePerMatchingNode(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		a := openRoutes(t, newClient(), "a", 0)
		b := openRoutes(t, newClient(), "b", 0)
		c := openRoutes(t, newClient(), "c", 0)
		mustAdd(t, b, "sensors/+/temp")
		mustAdd(t, c, "sensors/#", "sensors/room1/temp")
		mustAdd(t, a, "sensors/#") // a's own route: never forwarded to a

		// Add returned, so every node has applied the route: no waiting.
		if got := targetIDs(a.Routes, "sensors/room1/temp"); !slices.Equal(got, []string{"b", "c"}) {
			t.Fatalf("a routes sensors/room1/temp to %v, want [b c]", got)
		}
		payload := "bin\x00\xff{\"tag\":\"x\"}"
		mustForward(t, a, "sensors/room1/temp", payload)
		want := "sensors/room1/temp|" + payload
		waitFor(t, "b and c receive", func() bool { return b.in.count(want) == 1 && c.in.count(want) == 1 })
		settle()
		if b.in.len() != 1 || c.in.len() != 1 || a.in.len() != 0 {
			t.Fatalf("deliveries a=%d b=%d c=%d, want 0 1 1", a.in.len(), b.in.len(), c.in.len())
		}
		// Forward returned before the send: Sent counts once Redis took it.
		waitFor(t, "a counts 2 sent", func() bool { return a.Stats().Sent == 2 })

		// Nobody matches: no SPUBLISH at all.
		before := spublishCalls(t, a.c)
		mustForward(t, a, "actuators/room1/valve", "x")
		// "sensors" is matched by sensors/# (MQTT: # includes the parent
		// level): a's own copy of that filter is not a target, c's is.
		mustForward(t, a, "sensors", "x")
		waitFor(t, "c receives sensors", func() bool { return c.in.count("sensors|x") == 1 })
		settle()
		after := spublishCalls(t, a.c)
		if after-before != 1 {
			t.Fatalf("%d SPUBLISH for one matching forward, want 1", after-before)
		}
		if b.in.count("sensors|x") != 0 || a.in.len() != 0 {
			t.Fatal("sensors delivered to a non-matching node")
		}

		// From b: c only (b's own route is not in b's index).
		mustForward(t, b, "sensors/room2/temp", "from-b")
		waitFor(t, "a and c receive from b", func() bool {
			return c.in.count("sensors/room2/temp|from-b") == 1 && a.in.count("sensors/room2/temp|from-b") == 1
		})
		settle()
		if b.in.count("sensors/room2/temp|from-b") != 0 {
			t.Fatal("b received its own message")
		}
		if s := a.Stats(); s.Delivered != 1 || s.Dropped != 0 {
			t.Fatalf("a stats %+v", s)
		}
	})
}

// Remove is reference counted; the last one stops delivery. Purge drops a
// node's routes from every index; a node opened later loads the table.
func TestRoutesRemovePurgeAndLateJoin(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		ctx := ctxT(t)
		a := openRoutes(t, newClient(), "a", 0)
		b := openRoutes(t, newClient(), "b", 0)
		c := openRoutes(t, newClient(), "c", 0)
		mustAdd(t, b, "sensors/+/temp", "sensors/+/temp") // two local subscribers
		mustAdd(t, c, "sensors/#", "sensors/room1/temp")

		mustRemove(t, b, "sensors/+/temp") // one left
		mustRemove(t, c, "sensors/#")
		waitFor(t, "a drops c's sensors/#", func() bool {
			return slices.Equal(targetIDs(a.Routes, "sensors/room2/temp"), []string{"b"})
		})
		mustForward(t, a, "sensors/room1/temp", "1")
		waitFor(t, "b and c receive 1", func() bool {
			return b.in.count("sensors/room1/temp|1") == 1 && c.in.count("sensors/room1/temp|1") == 1
		})

		mustRemove(t, c, "sensors/room1/temp")
		mustRemove(t, b, "sensors/+/temp") // the last one
		waitFor(t, "a drops every route", func() bool { return len(targetIDs(a.Routes, "sensors/room1/temp")) == 0 })
		before := a.Stats().Sent
		mustForward(t, a, "sensors/room1/temp", "2")
		settle()
		if b.in.count("sensors/room1/temp|2")+c.in.count("sensors/room1/temp|2") != 0 || a.Stats().Sent != before {
			t.Fatal("a message was delivered after the last Remove")
		}
		if err := b.Remove(ctx, "sensors/+/temp"); err == nil {
			t.Fatal("Remove of a route that is not there succeeded")
		}
		for _, bad := range []string{"", "a/#/b", "x\x00y"} {
			if err := b.Add(ctx, bad); err == nil {
				t.Fatalf("Add(%q) succeeded", bad)
			}
		}
		if err := a.Forward(ctx, "a/+", nil); err == nil {
			t.Fatal("Forward to a wildcard topic succeeded")
		}

		// Purge: c "died" with routes; a removes them for everyone.
		mustAdd(t, c, "x/#")
		mustAdd(t, b, "x/y")
		d := openRoutes(t, newClient(), "d", 0) // late joiner sees both
		if got := targetIDs(d.Routes, "x/y"); !slices.Equal(got, []string{"b", "c"}) {
			t.Fatalf("late joiner routes x/y to %v, want [b c]", got)
		}
		if err := a.Purge(ctx, "c"); err != nil {
			t.Fatal(err)
		}
		for _, n := range []routeNode{a, b, d} {
			waitFor(t, n.NodeID()+" drops c", func() bool {
				got := targetIDs(n.Routes, "x/y")
				return !slices.Contains(got, "c")
			})
		}
		mustForward(t, d, "x/y", "3")
		waitFor(t, "b receives 3", func() bool { return b.in.count("x/y|3") == 1 })
		settle()
		if c.in.count("x/y|3") != 0 {
			t.Fatal("purged node still receives")
		}
	})
}

// Add returns only once every other node routes to the new filter: a
// Forward right after Add, from any node, reaches the subscriber.
func TestRoutesVisibleWhenAddReturns(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		a := openRoutes(t, newClient(), "a", 0)
		b := openRoutes(t, newClient(), "b", 0)
		c := openRoutes(t, newClient(), "c", 0)
		for i := range 30 {
			f := "dev/" + strconv.Itoa(i) + "/cmd"
			mustAdd(t, b, f)
			for _, n := range []routeNode{a, c} {
				if got := targetIDs(n.Routes, f); !slices.Equal(got, []string{"b"}) {
					t.Fatalf("%s: right after Add, %s routes to %v", f, n.NodeID(), got)
				}
			}
			mustForward(t, a, f, "p")
		}
		waitFor(t, "b receives all 30", func() bool { return b.in.len() == 30 })
	})
}

// Concurrent Add/Remove of the same filters: the route table in Redis ends
// equal to the filters with local subscribers.
func TestRoutesConcurrentAddRemove(t *testing.T) {
	addr := testserver.Redis(t)
	c := newClient(t, []string{addr})
	a := openRoutes(t, c, "a", 0)
	b := openRoutes(t, newClient(t, []string{addr}), "b", 0)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				f := "f/" + strconv.Itoa((g+i)%5)
				if err := a.Add(ctx, f); err != nil {
					t.Error(err)
					return
				}
				if i%2 == 0 {
					if err := a.Remove(ctx, f); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	got, err := c.Do(ctx, c.B().Smembers().Key(filterSetKey("a")).Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := a.localFilters()
	slices.Sort(want)
	if !slices.Equal(got, want) || len(want) != 5 {
		t.Fatalf("Redis has %v, local %v", got, want)
	}
	waitFor(t, "b sees a's 5 routes", func() bool {
		for i := range 5 {
			if len(b.targets("f/"+strconv.Itoa(i), nil)) != 1 {
				return false
			}
		}
		return true
	})
}

// A node that hears the new route but never confirms it (here: a bare
// subscriber of the change channel) makes Add fail after AckTimeout, and
// the route is rolled back.
func TestRoutesUnconfirmedAddRollsBack(t *testing.T) {
	addr := testserver.Redis(t)
	c := newClient(t, []string{addr})
	b := openRoutes(t, c, "b", 300*time.Millisecond)
	mute := newClient(t, []string{addr})
	subscribed := make(chan struct{})
	var once sync.Once
	go mute.Receive(rueidis.WithOnSubscriptionHook(ctxT(t), func(rueidis.PubSubSubscription) {
		once.Do(func() { close(subscribed) })
	}), mute.B().Ssubscribe().Channel(routesChannel).Build(), func(rueidis.PubSubMessage) {})
	<-subscribed
	ctx := ctxT(t)
	err := b.Add(ctx, "a/b")
	if !errors.Is(err, ErrUnconfirmed) {
		t.Fatalf("Add: %v, want ErrUnconfirmed", err)
	}
	if n, err := c.Do(ctx, c.B().Scard().Key(filterSetKey("b")).Build()).AsInt64(); err != nil || n != 0 {
		t.Fatalf("route left in Redis after rollback: %d %v", n, err)
	}
	if len(b.localFilters()) != 0 || b.Stats().Unconfirmed != 1 {
		t.Fatalf("local %v, stats %+v", b.localFilters(), b.Stats())
	}
	if err := b.Remove(ctx, "a/b"); err == nil {
		t.Fatal("a rolled back route could be removed")
	}
}

// Redis restarts empty: each node resubscribes, reloads the table and
// writes its own routes back, so routing works again.
func TestRoutesRepairAfterRedisRestart(t *testing.T) {
	srv := testserver.StartRedis(t)
	a := openRoutes(t, newClient(t, []string{srv.Addr()}), "a", 0)
	b := openRoutes(t, newClient(t, []string{srv.Addr()}), "b", 0)
	mustAdd(t, b, "s/+")
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a routes s/1 to b again", func() bool {
		return slices.Equal(targetIDs(a.Routes, "s/1"), []string{"b"}) && a.Stats().Resyncs >= 2
	})
	waitFor(t, "b receives after the restart", func() bool {
		_ = a.Forward(ctxT(t), "s/1", []byte("again"))
		time.Sleep(20 * time.Millisecond)
		return b.in.count("s/1|again") >= 1
	})
}

func TestFrameRoundTrip(t *testing.T) {
	for _, c := range []struct{ topic, payload string }{
		{"a", ""}, {"sensors/room1/temp", "{\"tag\":1}"}, {strings.Repeat("x", 300), "\x00\x01\xff"},
	} {
		f, err := decodeFrame(string(appendMessage(nil, c.topic, []byte(c.payload))))
		if err != nil || f.ack || f.topic != c.topic || f.payload != c.payload {
			t.Fatalf("%q: %+v %v", c.topic, f, err)
		}
	}
	f, err := decodeFrame(string(appendAck(nil, 1<<40, "node-1")))
	if err != nil || !f.ack || f.version != 1<<40 || f.acker != "node-1" {
		t.Fatalf("ack: %+v %v", f, err)
	}
	for _, bad := range []string{"", "m", "m\x05ab", "a\x01", "z\x00", "m\x01+", "m\x80\x80"} {
		if _, err := decodeFrame(bad); err == nil {
			t.Fatalf("decodeFrame(%q) succeeded", bad)
		}
	}
}

func TestParseNote(t *testing.T) {
	n, err := parseNote("12 + 4 nodesensors/+/temp")
	if err != nil || n != (note{12, '+', "node", "sensors/+/temp"}) {
		t.Fatalf("%+v %v", n, err)
	}
	n, err = parseNote("3 P 3 a b")
	if err != nil || n != (note{3, 'P', "a b", ""}) {
		t.Fatalf("%+v %v", n, err)
	}
	for _, bad := range []string{"", "x + 1 ab", "1 * 1 ab", "1 + 9 ab", "1 + 0 ab", "1 P 1 ab", "1 + 1 a", "1 - 1 aa/#/b", "1 +"} {
		if _, err := parseNote(bad); err == nil {
			t.Fatalf("parseNote(%q) succeeded", bad)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add(string(appendMessage(nil, "a/b", []byte("x"))))
	f.Add(string(appendAck(nil, 7, "n")))
	f.Add(string(appendBatch(nil, [2]string{"a/b", "x"}, [2]string{"c", ""})))
	f.Fuzz(func(t *testing.T, b string) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		var again []byte
		var entries [][2]string
		switch {
		case fr.ack:
			again = appendAck(nil, fr.version, fr.acker)
		case fr.count > 0:
			if !strings.HasSuffix(b, fr.batch) {
				t.Fatalf("batch body not a suffix of %q", b)
			}
			for rest := fr.batch; rest != ""; {
				tp, p, r, err := nextEntry(rest)
				if err != nil {
					t.Fatalf("validated batch %q: entry %d: %v", b, len(entries), err)
				}
				entries = append(entries, [2]string{tp, p})
				rest = r
			}
			if len(entries) != fr.count {
				t.Fatalf("batch %q: %d entries, count %d", b, len(entries), fr.count)
			}
			again = appendBatch(nil, entries...)
		default:
			again = appendMessage(nil, fr.topic, []byte(fr.payload))
		}
		// Decode, encode, decode is the identity (the varints of the
		// input may have been padded, so compare contents, not bytes).
		fr2, err := decodeFrame(string(again))
		if err != nil {
			t.Fatalf("re-decode of %q: %v", b, err)
		}
		if fr.count > 0 {
			var entries2 [][2]string
			for rest := fr2.batch; rest != ""; {
				tp, p, r, _ := nextEntry(rest)
				entries2 = append(entries2, [2]string{tp, p})
				rest = r
			}
			if !slices.Equal(entries, entries2) || fr2.count != fr.count {
				t.Fatalf("re-decode of batch %q: %q, want %q", b, entries2, entries)
			}
			return
		}
		if fr2 != fr {
			t.Fatalf("re-decode of %q: %+v, want %+v", b, fr2, fr)
		}
		if !strings.HasSuffix(b, fr.payload+fr.acker) {
			t.Fatalf("decoded tail not a suffix of %q", b)
		}
	})
}

func FuzzParseNote(f *testing.F) {
	f.Add("1 + 1 as/#")
	f.Add("9 P 2 ab")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseNote(s)
		if err != nil {
			return
		}
		again := fmt.Sprintf("%d %c %d %s%s", n.version, n.op, len(n.node), n.node, n.filter)
		if n2, err := parseNote(again); err != nil || n2 != n {
			t.Fatalf("re-parse of %q: %+v %v, want %+v", s, n2, err, n)
		}
	})
}

// The match half of Forward allocates nothing once warm, with wildcard and
// literal routes of several nodes and duplicate matches per node.
func TestForwardTargetsAllocFree(t *testing.T) {
	r := &Routes{}
	idx := topicIndexForTest(r)
	r.remote.Store(idx)
	dst := make([]*peer, 0, 16)
	for _, tp := range []string{"sensors/room1/temp", "sensors/room2/hum", "other"} {
		for range 3 { // admit into the match cache
			dst = r.targets(tp, dst[:0])
		}
		if n := testing.AllocsPerRun(200, func() { dst = r.targets(tp, dst[:0]) }); n != 0 {
			t.Fatalf("targets(%q) allocates %v times", tp, n)
		}
	}
	if got := len(r.targets("sensors/room1/temp", nil)); got != 2 {
		t.Fatalf("%d targets, want 2 (deduplicated)", got)
	}
}

func BenchmarkForwardTargets(b *testing.B) {
	r := &Routes{}
	r.remote.Store(topicIndexForTest(r))
	dst := make([]*peer, 0, 16)
	b.ReportAllocs()
	for b.Loop() {
		dst = r.targets("sensors/room1/temp", dst[:0])
	}
}

func topicIndexForTest(r *Routes) *topic.Index[*peer] {
	idx := topic.NewIndex[*peer]()
	b, c := newPeer("b"), newPeer("c")
	idx.Subscribe("sensors/+/temp", b)
	idx.Subscribe("sensors/#", c)
	idx.Subscribe("sensors/room1/temp", c)
	idx.Subscribe("sensors/room1/temp", b)
	for i := range 1000 {
		idx.Subscribe("dev/"+strconv.Itoa(i)+"/cmd", b)
	}
	return idx
}

// Forward to one matching node on a real standalone Redis (loopback), for
// the allocations of the whole path including the sender and rueidis
// (per message: the sender's per-SPUBLISH allocations are shared by the
// messages of a batch). Waits on Backlog as the broker does.
func BenchmarkForwardOneNode(b *testing.B) {
	addr := testserver.Redis(b)
	a := openRoutesB(b, addr, "a", nil)
	sub := openRoutesB(b, addr, "b", nil)
	if err := sub.Add(context.Background(), "sensors/+/temp"); err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"tag":"t","message":{"v":21.5}}`)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := a.Forward(ctx, "sensors/room1/temp", payload); err != nil {
			b.Fatal(err)
		}
		if ch := a.Backlog(); ch != nil {
			<-ch
		}
	}
}

func openRoutesB(b *testing.B, addr, id string, deliver func(string, []byte)) *Routes {
	if deliver == nil {
		deliver = func(string, []byte) {}
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	r, err := OpenRoutes(context.Background(), RoutesConfig{Client: c, NodeID: id, Deliver: deliver})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.Close)
	return r
}
