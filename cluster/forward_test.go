package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/gatecast/gatecast/internal/testserver"
)

// gate blocks the sender of one peer in the send hook while closed.
type gate struct {
	node    string
	mu      sync.Mutex
	ch      chan struct{} // nil: open
	entered atomic.Int64  // hook calls for node
}

func (g *gate) hook(node string) {
	if node != g.node {
		return
	}
	g.entered.Add(1)
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (g *gate) close() {
	g.mu.Lock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
	g.mu.Unlock()
}

func (g *gate) open() {
	g.mu.Lock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
	g.mu.Unlock()
}

// openRoutesCfg is openRoutes with a config (Client and Deliver set here).
// A gate, if given, is opened before the node closes.
func openRoutesCfg(t *testing.T, c rueidis.Client, cfg RoutesConfig, g *gate) routeNode {
	t.Helper()
	in := &inbox{}
	cfg.Client, cfg.Deliver = c, in.deliver
	if g != nil {
		cfg.sendHook = g.hook
	}
	r, err := OpenRoutes(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	if g != nil {
		t.Cleanup(g.open) // runs before r.Close
	}
	return routeNode{r, in}
}

func peerStats(r *Routes, node string) (PeerStats, bool) {
	for _, s := range r.PeerStats() {
		if s.Node == node {
			return s, true
		}
	}
	return PeerStats{}, false
}

// inOrder checks that, per publisher prefix "g<k>/", the sequence numbers
// in msgs (topic|g<k>/<i>) are 0..n-1 in order.
func inOrder(t *testing.T, who string, msgs []string, publishers, n int) {
	t.Helper()
	next := make([]int, publishers)
	for _, m := range msgs {
		_, p, _ := strings.Cut(m, "|")
		gs, is, _ := strings.Cut(strings.TrimPrefix(p, "g"), "/")
		g, err1 := strconv.Atoi(gs)
		i, err2 := strconv.Atoi(is)
		if err1 != nil || err2 != nil || g >= publishers {
			t.Fatalf("%s: unexpected message %q", who, m)
		}
		if i != next[g] {
			t.Fatalf("%s: publisher %d: got #%d, want #%d", who, g, i, next[g])
		}
		next[g]++
	}
	for g, got := range next {
		if got != n {
			t.Fatalf("%s: publisher %d: %d messages, want %d", who, g, got, n)
		}
	}
}

// Concurrent publishers on one node: every peer gets every message once,
// and each publisher's messages in the order it forwarded them.
func TestForwardOrderPerPeerConcurrentPublishers(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		a := openRoutes(t, newClient(), "a", 0)
		b := openRoutes(t, newClient(), "b", 0)
		c := openRoutes(t, newClient(), "c", 0)
		mustAdd(t, b, "o/#")
		mustAdd(t, c, "o/+/x")
		const publishers, n = 8, 500
		var wg sync.WaitGroup
		for g := range publishers {
			wg.Go(func() {
				for i := range n {
					if err := a.Forward(context.Background(), "o/"+strconv.Itoa(i%3)+"/x", fmt.Appendf(nil, "g%d/%d", g, i)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		waitFor(t, "b and c receive all", func() bool { return b.in.len() == publishers*n && c.in.len() == publishers*n })
		for _, x := range []routeNode{b, c} {
			x.in.mu.Lock()
			msgs := slices.Clone(x.in.msgs)
			x.in.mu.Unlock()
			inOrder(t, x.NodeID(), msgs, publishers, n)
		}
		waitFor(t, "a counts all sent", func() bool { return a.Stats().Sent == 2*publishers*n })
		s := a.Stats()
		t.Logf("sent %d in %d SPUBLISH", s.Sent, s.Batches)
		if s.QueueDropped != 0 || s.SendErrors != 0 || s.Lost != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// Messages queued while a send is in flight go out together: 1,000
// messages queued behind a blocked send leave in a handful of SPUBLISH
// (counted by Stats and by Redis itself), bounded by BatchBytes, in order.
// A lone message travels as the single-message frame older nodes decode,
// and BatchBytes < 0 sends every message alone.
func TestForwardBatches(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		g := &gate{node: "b"}
		a := openRoutesCfg(t, newClient(), RoutesConfig{NodeID: "a", BatchBytes: 4096}, g)
		b := openRoutes(t, newClient(), "b", 0)
		mustAdd(t, b, "bt/+")
		g.close()
		mustForward(t, a, "bt/x", "g0/0")
		waitFor(t, "a's sender is blocked in its first send", func() bool { return g.entered.Load() == 1 })
		const n = 1000
		for i := 1; i < n; i++ {
			mustForward(t, a, "bt/x", "g0/"+strconv.Itoa(i))
		}
		if s, _ := peerStats(a.Routes, "b"); s.QueueBytes == 0 {
			t.Fatalf("nothing queued: %+v", s)
		}
		before := spublishCalls(t, a.c)
		g.open()
		waitFor(t, "b receives all", func() bool { return b.in.len() == n })
		waitFor(t, "a counts all sent", func() bool { return a.Stats().Sent == n })
		b.in.mu.Lock()
		inOrder(t, "b", b.in.msgs, 1, n)
		b.in.mu.Unlock()
		s := a.Stats()
		// 999 entries of 10-12 bytes (about 11.8 KB) in frames of at most
		// 4 KiB: 3 batches after the lone first message.
		if s.Batches != 4 {
			t.Fatalf("%d messages in %d SPUBLISH, want 4", s.Sent, s.Batches)
		}
		// before was read while the first SPUBLISH waited in the hook.
		if calls := spublishCalls(t, a.c) - before; calls != int64(s.Batches) {
			t.Fatalf("Redis counted %d SPUBLISH, Stats %d", calls, s.Batches)
		}
		if s.QueueBytes != 0 || s.Backlogged != 0 {
			t.Fatalf("queue not empty after the drain: %+v", s)
		}

		// No batching: one SPUBLISH per message even when they pile up.
		g2 := &gate{node: "b"}
		a2 := openRoutesCfg(t, newClient(), RoutesConfig{NodeID: "a2", BatchBytes: -1}, g2)
		g2.close()
		mustForward(t, a2, "bt/y", "0")
		waitFor(t, "a2's sender is blocked", func() bool { return g2.entered.Load() == 1 })
		for i := 1; i < 50; i++ {
			mustForward(t, a2, "bt/y", strconv.Itoa(i))
		}
		g2.open()
		waitFor(t, "a2 sent all", func() bool { return a2.Stats().Sent == 50 })
		if s := a2.Stats(); s.Batches != 50 {
			t.Fatalf("BatchBytes<0: %d SPUBLISH for 50 messages", s.Batches)
		}
	})
}

// What a node that predates batch frames receives: a lone message is the
// old single-message frame, a pile-up is one batch frame that decodes to
// the messages in order.
func TestForwardWireFrames(t *testing.T) {
	addr := testserver.Redis(t)
	g := &gate{node: "old"}
	a := openRoutesCfg(t, newClient(t, []string{addr}), RoutesConfig{NodeID: "a"}, g)
	raw := newClient(t, []string{addr})
	var mu sync.Mutex
	var frames []string
	subscribed := make(chan struct{})
	var once sync.Once
	go raw.Receive(rueidis.WithOnSubscriptionHook(ctxT(t), func(rueidis.PubSubSubscription) {
		once.Do(func() { close(subscribed) })
	}), raw.B().Ssubscribe().Channel(nodeChannel("old")).Build(), func(m rueidis.PubSubMessage) {
		mu.Lock()
		frames = append(frames, m.Message)
		mu.Unlock()
	})
	<-subscribed
	// A route of node "old", written as that node would.
	keys := []string{routesNodesKey, filterSetKey("old"), routesVersionKey, routesChannel}
	if err := routeAddScript.Exec(ctxT(t), raw, keys, []string{"old", "w/#"}).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a routes to old", func() bool { return slices.Equal(targetIDs(a.Routes, "w/1"), []string{"old"}) })
	g.close()
	mustForward(t, a, "w/1", "lone")
	waitFor(t, "sender blocked", func() bool { return g.entered.Load() == 1 })
	mustForward(t, a, "w/2", "x")
	mustForward(t, a, "w/3", "")
	mustForward(t, a, "w/4", "\x00\xff")
	g.open()
	var got []string
	waitFor(t, "two data frames", func() bool {
		mu.Lock()
		defer mu.Unlock()
		got = got[:0]
		for _, f := range frames {
			if f[0] != frameAck {
				got = append(got, f)
			}
		}
		return len(got) == 2
	})
	if want := string(appendMessage(nil, "w/1", []byte("lone"))); got[0] != want {
		t.Fatalf("lone message sent as %q, want the single-message frame %q", got[0], want)
	}
	if want := string(appendBatch(nil, [2]string{"w/2", "x"}, [2]string{"w/3", ""}, [2]string{"w/4", "\x00\xff"})); got[1] != want {
		t.Fatalf("batch sent as %q, want %q", got[1], want)
	}
}

// A peer whose sender is stuck: Forward keeps returning at once; past the
// soft limit Backlog is non-nil; at the hard limit the peer's messages are
// dropped, counted for that peer only, and Forward says so; another peer
// still gets its messages. Once the sender drains, the Backlog channel closes and
// Backlog is nil again.
func TestForwardQueueFullDropsAndBacklog(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		g := &gate{node: "b"}
		a := openRoutesCfg(t, newClient(), RoutesConfig{NodeID: "a", PeerQueueBytes: 4096}, g)
		b := openRoutes(t, newClient(), "b", 0)
		c := openRoutes(t, newClient(), "c", 0)
		mustAdd(t, b, "q/+")
		mustAdd(t, c, "other/#")
		if a.Backlog() != nil {
			t.Fatal("Backlog non-nil with empty queues")
		}
		g.close()
		payload := strings.Repeat("p", 100) // entry: 1+1+3+100 = 105 bytes
		mustForward(t, a, "q/t", payload)
		waitFor(t, "a's sender to b is blocked", func() bool { return g.entered.Load() == 1 })

		var backlog <-chan struct{}
		accepted, dropped := 1, 0
		start := time.Now()
		for i := 1; i < 100; i++ {
			err := a.Forward(ctxT(t), "q/t", []byte(payload))
			switch {
			case err == nil:
				accepted++
			case errors.Is(err, ErrPeerQueueFull):
				dropped++
			default:
				t.Fatal(err)
			}
			bl := a.Backlog()
			q := accepted * 105
			switch {
			case q < 2048 && bl != nil:
				t.Fatalf("Backlog non-nil at %d queued bytes (soft limit 2048)", q)
			case q >= 2048 && bl == nil:
				t.Fatalf("Backlog nil at %d queued bytes (soft limit 2048)", q)
			}
			if bl != nil {
				backlog = bl
			}
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("99 Forwards to a stuck peer took %v", el)
		}
		if accepted != 4096/105 || dropped != 100-accepted {
			t.Fatalf("accepted %d dropped %d, want %d and %d", accepted, dropped, 4096/105, 100-4096/105)
		}
		// c is not held up by b.
		mustForward(t, a, "other/x", "to-c")
		waitFor(t, "c receives", func() bool { return c.in.count("other/x|to-c") == 1 })
		sb, _ := peerStats(a.Routes, "b")
		sc, _ := peerStats(a.Routes, "c")
		if sb.Dropped != uint64(dropped) || !sb.Backlogged || sb.QueueBytes != int64(accepted*105) || sc.Dropped != 0 || sc.Sent != 1 {
			t.Fatalf("peer stats b %+v c %+v", sb, sc)
		}
		if s := a.Stats(); s.QueueDropped != uint64(dropped) || s.Backlogged != 1 {
			t.Fatalf("stats %+v", s)
		}
		select {
		case <-backlog:
			t.Fatal("Backlog closed while b's queue is still full")
		default:
		}

		g.open()
		select {
		case <-backlog:
		case <-time.After(10 * time.Second):
			t.Fatal("Backlog channel not closed after the drain")
		}
		if a.Backlog() != nil {
			t.Fatal("Backlog non-nil after the drain")
		}
		waitFor(t, "b receives the accepted messages", func() bool { return b.in.len() == accepted })
		settle()
		if b.in.len() != accepted {
			t.Fatalf("b received %d, want %d", b.in.len(), accepted)
		}
		if s := a.Stats(); s.QueueBytes != 0 || s.Backlogged != 0 {
			t.Fatalf("stats after the drain %+v", s)
		}
	})
}

// Redis stopped: Forward returns at once (nothing waits on Redis); the
// senders count the failed sends, drop them and keep going, so the queues
// drain. Redis back: forwarding works again.
func TestForwardNeverBlocksWhenRedisDown(t *testing.T) {
	forwardWhileDown := func(t *testing.T, a, b routeNode, stop, start func() error) {
		mustAdd(t, b, "d/+")
		mustForward(t, a, "d/1", "before")
		waitFor(t, "b receives before the outage", func() bool { return b.in.count("d/1|before") == 1 })
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		payload := []byte(strings.Repeat("z", 200))
		var worst time.Duration
		begin := time.Now()
		for range 5000 {
			t0 := time.Now()
			_ = a.Forward(context.Background(), "d/1", payload)
			worst = max(worst, time.Since(t0))
		}
		total := time.Since(begin)
		t.Logf("5000 Forwards with Redis down: %v, slowest %v; stats %+v", total, worst, a.Stats())
		if total > 2*time.Second || worst > 100*time.Millisecond {
			t.Fatalf("Forward blocked with Redis down: 5000 took %v, slowest %v", total, worst)
		}
		waitFor(t, "failed sends counted and the queue drained", func() bool {
			s := a.Stats()
			return s.SendErrors > 0 && s.Lost > 0 && s.QueueBytes == 0
		})
		if s, _ := peerStats(a.Routes, "b"); s.SendErrors == 0 || s.Lost == 0 {
			t.Fatalf("peer stats %+v", s)
		}
		if err := start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b receives after the outage", func() bool {
			_ = a.Forward(context.Background(), "d/1", []byte("after"))
			time.Sleep(20 * time.Millisecond)
			return b.in.count("d/1|after") >= 1
		})
	}
	t.Run("standalone", func(t *testing.T) {
		srv := testserver.StartRedis(t)
		a := openRoutes(t, newClient(t, []string{srv.Addr()}), "a", 0)
		b := openRoutes(t, newClient(t, []string{srv.Addr()}), "b", 0)
		forwardWhileDown(t, a, b, srv.Stop, srv.Start)
	})
	t.Run("cluster", func(t *testing.T) {
		if testing.Short() {
			t.Skip("Redis Cluster skipped in -short")
		}
		cl := testserver.StartRedisCluster(t, 3)
		a := openRoutes(t, newClient(t, cl.Addrs()), "a", 0)
		b := openRoutes(t, newClient(t, cl.Addrs()), "b", 0)
		forwardWhileDown(t, a, b, func() error {
			for _, n := range cl.Nodes {
				if err := n.Stop(); err != nil {
					return err
				}
			}
			return nil
		}, func() error {
			for _, n := range cl.Nodes {
				if err := n.Start(); err != nil {
					return err
				}
			}
			return cl.WaitReady(30 * time.Second)
		})
	})
}

// Close sends what was queued before it returns; a peer that leaves the
// route table (purged) gets its sender stopped.
func TestForwardCloseFlushesAndPeerLeaves(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		a := openRoutes(t, newClient(), "a", 0)
		b := openRoutes(t, newClient(), "b", 0)
		c := openRoutes(t, newClient(), "c", 0)
		mustAdd(t, b, "cf/+")
		mustAdd(t, c, "cf/+")
		for i := range 200 {
			mustForward(t, a, "cf/x", strconv.Itoa(i))
		}
		a.Close()
		if s := a.Stats(); s.Sent != 400 || s.QueueBytes != 0 || len(a.PeerStats()) != 0 {
			t.Fatalf("after Close: %+v, peers %v", s, a.PeerStats())
		}
		waitFor(t, "b and c receive all", func() bool { return b.in.len() == 200 && c.in.len() == 200 })
		if err := a.Forward(ctxT(t), "cf/x", []byte("late")); err != nil {
			t.Fatalf("Forward after Close: %v", err)
		}

		if _, ok := peerStats(b.Routes, "c"); !ok {
			t.Fatal("b has no sender for c")
		}
		if err := b.Purge(ctxT(t), "c"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b stops its sender for c", func() bool { _, ok := peerStats(b.Routes, "c"); return !ok })
		if got := targetIDs(b.Routes, "cf/x"); len(got) != 0 {
			t.Fatalf("b still routes to %v", got)
		}
	})
}

// Forward to one matching peer, through the real Routes on a real Redis,
// allocates nothing once warm: the message is copied into the peer's
// reused queue buffer. The sender is held in its hook meanwhile, so its
// own allocations (the rueidis command) are not counted.
func TestForwardAllocFree(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	addr := testserver.Redis(t)
	g := &gate{node: "b"}
	a := openRoutesCfg(t, newClient(t, []string{addr}), RoutesConfig{NodeID: "a"}, g)
	b := openRoutes(t, newClient(t, []string{addr}), "b", 0)
	mustAdd(t, b, "sensors/+/temp")
	g.close()
	payload := []byte(`{"tag":"sensors/room1/temp","message":{"v":21.5}}`)
	ctx := context.Background()
	mustForward(t, a, "sensors/room1/temp", string(payload))
	waitFor(t, "sender blocked", func() bool { return g.entered.Load() == 1 })
	// 501 entries of 70 bytes fit the first 64 KiB buffer.
	if n := testing.AllocsPerRun(500, func() {
		if err := a.Forward(ctx, "sensors/room1/temp", payload); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Forward allocates %v times per call", n)
	}
	g.open()
	waitFor(t, "b receives all", func() bool { return b.in.len() == 502 })
}

// The same without Redis and without any noise from other goroutines: a
// Routes with a peer whose queue is emptied by hand.
func TestForwardEnqueueAllocFree(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	r := &Routes{hardLimit: DefaultPeerQueueBytes, softLimit: DefaultPeerQueueBytes / 2, initCap: DefaultBatchBytes}
	r.scratch.New = func() any { return &fwdScratch{} }
	r.remote.Store(topicIndexForTest(r))
	var ps []*peer
	for _, p := range r.targets("sensors/room1/temp", nil) {
		ps = append(ps, p)
	}
	payload := []byte(`{"v":1}`)
	reset := func() {
		for _, p := range ps {
			p.mu.Lock()
			p.buf, p.bytes = p.buf[:1], 0
			p.mu.Unlock()
		}
	}
	for range 3 {
		_ = r.Forward(context.Background(), "sensors/room1/temp", payload)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if err := r.Forward(context.Background(), "sensors/room1/temp", payload); err != nil {
			t.Fatal(err)
		}
		reset()
	}); n != 0 {
		t.Fatalf("Forward to 2 peers allocates %v times", n)
	}
	for _, p := range ps {
		p.mu.Lock()
		n := len(p.buf)
		p.mu.Unlock()
		if n != 1 {
			t.Fatalf("peer %s buffer len %d after reset", p.id, n)
		}
	}
}

// The sender's in-place framing: consecutive frames cut from one drained
// buffer decode to the entries, in order, each frame decoded before the
// next is framed (as each SPUBLISH completes before the next is built).
func TestFrameInPlace(t *testing.T) {
	type msg struct{ t, p string }
	msgs := []msg{{"a", "1"}, {"b/c", ""}, {"d", strings.Repeat("x", 300)}, {"e", "\x00"}, {"f/g", "last"}}
	b := []byte{0}
	var ends []int
	for _, m := range msgs {
		b = appendEntry(b, m.t, []byte(m.p))
		ends = append(ends, len(b))
	}
	// Cut as [0] [1 2] [3] [4].
	cuts := [][2]int{{0, 1}, {1, 3}, {3, 4}, {4, 5}}
	start := 1
	for _, cut := range cuts {
		end := ends[cut[1]-1]
		s := frameInPlace(b, start, end, cut[1]-cut[0])
		f, err := decodeFrame(s)
		if err != nil {
			t.Fatalf("frame %v: %v", cut, err)
		}
		var got []msg
		if f.count > 0 {
			for rest := f.batch; rest != ""; {
				var tp, p string
				tp, p, rest, _ = nextEntry(rest)
				got = append(got, msg{tp, p})
			}
		} else {
			got = []msg{{f.topic, f.payload}}
		}
		if !slices.Equal(got, msgs[cut[0]:cut[1]]) {
			t.Fatalf("frame %v decodes to %v", cut, got)
		}
		start = end
	}
}

func TestBatchFrameRoundTrip(t *testing.T) {
	entries := [][2]string{{"a", ""}, {"sensors/room1/temp", "{\"tag\":1}"}, {strings.Repeat("x", 300), "\x00\x01\xff"}}
	f, err := decodeFrame(string(appendBatch(nil, entries...)))
	if err != nil || f.ack || f.count != 3 {
		t.Fatalf("%+v %v", f, err)
	}
	var got [][2]string
	for rest := f.batch; rest != ""; {
		var tp, p string
		tp, p, rest, err = nextEntry(rest)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, [2]string{tp, p})
	}
	if !slices.Equal(got, entries) {
		t.Fatalf("entries %q", got)
	}
	for _, bad := range []string{
		"b",                   // no entry
		"b\x00",               // no topic length
		"b\x00\x00",           // empty topic
		"b\x05\x01a",          // payload past the end
		"b\x00\x05a",          // topic past the end
		"b\x00\x03a/+",        // wildcard topic
		"b\x00\x01a\x00",      // a truncated second entry
		"b\x00\x01a\x00\x01+", // a bad second entry
		"b\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x01a", // varint overflow
		"b\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x01a",         // payload length near 2^63
	} {
		if _, err := decodeFrame(bad); err == nil {
			t.Fatalf("decodeFrame(%q) succeeded", bad)
		}
	}
}

// One undecodable batch is dropped whole and counted once; the batch
// before it is delivered.
func TestDeliverBatch(t *testing.T) {
	in := &inbox{}
	r := &Routes{cfg: RoutesConfig{Deliver: in.deliver}}
	r.cfg.Logger = slog.New(slog.DiscardHandler)
	r.onFrame(string(appendBatch(nil, [2]string{"a/b", "1"}, [2]string{"c", "2"})))
	r.onFrame("b\x00\x01a\x00\x01+")
	r.onFrame(string(appendMessage(nil, "old", []byte("3"))))
	if s := r.Stats(); s.Delivered != 3 || s.Dropped != 1 {
		t.Fatalf("stats %+v", s)
	}
	if !slices.Equal(in.msgs, []string{"a/b|1", "c|2", "old|3"}) {
		t.Fatalf("delivered %q", in.msgs)
	}
}
