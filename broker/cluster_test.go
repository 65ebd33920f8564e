package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/cluster"
	"github.com/gatecast/gatecast/internal/testserver"
)

// Two nodes share the store of record and a real Redis: a rights change
// made through node A reaches the sessions on node B through Redis
// client-side caching invalidation, and only those of the changed token.
func TestRightsChangeEnforcedOnOtherNode(t *testing.T) {
	addr := testserver.Redis(t)
	e := newEnv(t) // node A: its broker and the shared store
	nodeB := joinNode(t, e, addr)
	rightsA := joinRights(t, e.b, addr)

	tok, secret := e.token(t, 0, map[string]acl.Permission{"sensors/#": acl.PermReadWrite, "alerts/#": acl.PermRead})
	_, other := e.token(t, 0, map[string]acl.Permission{"sensors/#": acl.PermRead})
	sB, onB := connectTo(t, nodeB, secret, "alerts/#")
	_, otherB := connectTo(t, nodeB, other, "sensors/#")

	// Downgrade on the store, announced by node A: B's session keeps its
	// read subscription but may no longer publish.
	tags, _ := e.store.ListGrants(context.Background(), tok.ID)
	var sensorsTag int64
	for _, g := range tags {
		if g.Pattern == "sensors/#" {
			sensorsTag = g.TagID
		}
	}
	if err := e.store.SetPermission(context.Background(), tok.ID, sensorsTag, acl.PermRead); err != nil {
		t.Fatal(err)
	}
	if err := rightsA.Changed(context.Background(), tok.ID); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "node B applies the downgrade", func() bool {
		return !sB.token.grants.Load().CanPublish("sensors/x")
	})
	if onB.closed.Load() {
		t.Fatal("downgrade closed a session that is still covered")
	}

	// Deleting the token closes its session on B with 4002, and nobody else's.
	if err := e.store.DeleteToken(context.Background(), tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := rightsA.Changed(context.Background(), tok.ID); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "node B closes the deleted token's session", func() bool { return onB.closed.Load() })
	if onB.code() != CloseTokenChanged {
		t.Fatalf("close code %d, want %d", onB.code(), CloseTokenChanged)
	}
	if otherB.closed.Load() {
		t.Fatal("another token's session was closed")
	}
	if n := len(nodeB.Connections(tok.ID)); n != 0 {
		t.Fatalf("node B still lists %d sessions of the deleted token", n)
	}
}

// joinNode starts a second broker on e's store, wired to the rights bus.
func joinNode(t *testing.T, e *env, redisAddr string) *Broker {
	t.Helper()
	var b *Broker
	r := rightsFor(t, redisAddr, &b)
	var err error
	b, err = New(Config{Store: e.store, Watcher: r})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// joinRights gives an existing broker its rights bus (node A announces).
func joinRights(t *testing.T, b *Broker, redisAddr string) *cluster.Rights {
	t.Helper()
	return rightsFor(t, redisAddr, &b)
}

// rightsFor opens a rights bus whose callbacks enforce on *b (which may be
// set after this returns, before any change is announced).
func rightsFor(t *testing.T, redisAddr string, b **Broker) *cluster.Rights {
	t.Helper()
	r, err := cluster.OpenRights(cluster.RightsConfig{
		Addrs:    []string{redisAddr},
		OnChange: func(ids []int64) { (*b).RefreshTokens(context.Background(), ids...) },
		OnReset:  func() { (*b).RefreshAll(context.Background()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func connectTo(t *testing.T, b *Broker, secret string, tags ...string) (*SeedSession, *recConn) {
	t.Helper()
	c := &recConn{keep: true}
	s, err := b.Connect(c, ConnectRequest{Secret: []byte(secret), Tags: tags, Protocol: "seed"})
	if err != nil {
		t.Fatalf("connect %v: %v", tags, err)
	}
	return s, c
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Three nodes sharing one store and one real Redis: 200 concurrent connects
// of a token limited to 5, spread over the nodes, admit exactly 5; a closed
// session gives its slot back to the whole cluster.
func TestConnectionLimitExactAcrossNodes(t *testing.T) {
	addr := testserver.Redis(t)
	e := newEnv(t)
	var nodes []*Broker
	for i := range 3 {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		b, err := New(Config{Store: e.store, Limiter: cluster.NewLeases(c, fmt.Sprintf("node-%d", i), 30*time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, b)
	}
	_, secret := e.token(t, 5, map[string]acl.Permission{"sensors/#": acl.PermRead})
	var mu sync.Mutex
	var admitted []*SeedSession
	codes := map[uint16]int{}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := nodes[i%3].Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: []string{"sensors/#"}})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				admitted = append(admitted, s)
				return
			}
			var rej *Rejection
			if errors.As(err, &rej) {
				codes[rej.Code]++
			} else {
				t.Errorf("connect: %v", err)
			}
		}()
	}
	wg.Wait()
	if len(admitted) != 5 || codes[CloseLimit] != 195 {
		t.Fatalf("admitted %d, refused %v; want 5 admitted and 195 x 4004", len(admitted), codes)
	}
	// Close one session on whichever node holds it: a connect on another
	// node gets the slot (the release reaches Redis asynchronously).
	admitted[0].OnClose()
	waitUntil(t, "the freed slot is usable on another node", func() bool {
		for _, b := range nodes {
			if b == admitted[0].b {
				continue
			}
			if _, err := b.Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: []string{"sensors/#"}}); err == nil {
				return true
			}
		}
		return false
	})
	for _, b := range nodes {
		if _, err := b.Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: []string{"sensors/#"}}); err == nil {
			t.Fatal("a sixth session was admitted")
		}
	}
}

// A lowered max_connections holds across the cluster, not per node: nine
// sessions admitted while the token had no limit, three per node, become
// exactly five when the limit is set to 5 (four closed with 4004), then exactly two when it drops to 2 with the three
// nodes enforcing it at the same time; the freed slots are usable again.
func TestLoweredLimitEnforcedAcrossNodes(t *testing.T) {
	addr := testserver.Redis(t)
	e := newEnv(t)
	var nodes []*Broker
	var leases []*cluster.Leases
	for i := range 3 {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		l := cluster.NewLeases(c, fmt.Sprintf("node-%d", i), 30*time.Second)
		b, err := New(Config{Store: e.store, Limiter: l})
		if err != nil {
			t.Fatal(err)
		}
		nodes, leases = append(nodes, b), append(leases, l)
	}
	tok, secret := e.token(t, 0, map[string]acl.Permission{"sensors/#": acl.PermRead})
	var conns []*recConn
	for i := range 9 {
		c := &recConn{}
		if _, err := nodes[i%3].Connect(c, ConnectRequest{Secret: []byte(secret), Tags: []string{"sensors/#"}}); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	limit := func(n int) {
		t.Helper()
		if _, err := e.store.UpdateToken(context.Background(), tok.ID, acl.TokenUpdate{MaxConnections: &n}); err != nil {
			t.Fatal(err)
		}
	}
	open := func() (n int) {
		for _, c := range conns {
			if !c.closed.Load() {
				n++
			} else if code := c.code(); code != CloseLimit {
				t.Fatalf("closed with %d, want %d", code, CloseLimit)
			}
		}
		return n
	}
	count := func() int {
		n, err := leases[0].Count(context.Background(), tok.ID)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	limit(5)
	for _, b := range nodes { // one after another, as the rights bus would
		if err := b.RefreshTokens(context.Background(), tok.ID); err != nil {
			t.Fatal(err)
		}
	}
	if n, c := open(), count(); n != 5 || c != 5 {
		t.Fatalf("after lowering to 5: %d sessions open, %d counted; want 5 and 5", n, c)
	}
	// Each node adopted its three unleased sessions when it learned the
	// limit; the nodes that found the count above 5 gave up the excess.
	if got := []int{nodes[0].SessionCount(), nodes[1].SessionCount(), nodes[2].SessionCount()}; got[0] != 3 || got[1] != 2 || got[2] != 0 {
		t.Fatalf("sessions per node %v, want [3 2 0]", got)
	}

	limit(2)
	var wg sync.WaitGroup
	for _, b := range nodes { // all at once, as after a barrier broadcast
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.RefreshTokens(context.Background(), tok.ID); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n, c := open(), count(); n != 2 || c != 2 {
		t.Fatalf("after lowering to 2: %d sessions open, %d counted; want 2 and 2", n, c)
	}
	if _, err := nodes[0].Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: []string{"sensors/#"}}); err == nil {
		t.Fatal("a third session was admitted under a limit of 2")
	}
	// Raising the limit frees slots for every node.
	limit(3)
	for _, b := range nodes {
		if err := b.RefreshTokens(context.Background(), tok.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nodes[0].Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: []string{"sensors/#"}}); err != nil {
		t.Fatalf("connect after raising the limit: %v", err)
	}
	if c := count(); c != 3 {
		t.Fatalf("counted %d, want 3", c)
	}
}

// Three nodes with real cross-node routing through Redis: a publish on A
// reaches matching sessions on B and C exactly once (wildcards included,
// several matching filters of one session included), a local subscriber
// on A once, and never the publisher.
func TestPublishRoutedAcrossNodes(t *testing.T) {
	addr := testserver.Redis(t)
	e := newEnv(t)
	var nodes []*Broker
	for i := range 3 {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		var b *Broker
		routes, err := cluster.OpenRoutes(context.Background(), cluster.RoutesConfig{
			Client: c, NodeID: fmt.Sprintf("node-%d", i),
			Deliver: func(topic string, frame []byte) { b.DeliverRemote(topic, frame) },
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(routes.Close)
		b, err = New(Config{Store: e.store, Router: routes})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, b)
	}
	_, rw := e.token(t, 0, map[string]acl.Permission{"sensors/#": acl.PermReadWrite})
	pub, pubConn := connectTo(t, nodes[0], rw, "sensors/room1/temp")
	_, localA := connectTo(t, nodes[0], rw, "sensors/#")
	_, onB := connectTo(t, nodes[1], rw, "sensors/+/temp")
	_, onC := connectTo(t, nodes[2], rw, "sensors/#", "sensors/room1/temp")
	_, missC := connectTo(t, nodes[2], rw, "sensors/room2/#")

	pub.OnMessage(true, []byte(`{"tag":"sensors/room1/temp","message":{"c":21.5}}`))
	want := `{"tag":"sensors/room1/temp","message":{"c":21.5}}`
	for name, c := range map[string]*recConn{"local A": localA, "B": onB, "C": onC} {
		waitUntil(t, name+" receives", func() bool { return c.sent.Load() >= 1 })
	}
	time.Sleep(100 * time.Millisecond) // room for a duplicate to show up
	for name, c := range map[string]*recConn{"local A": localA, "B": onB, "C": onC} {
		c.mu.Lock()
		frames := c.frames
		c.mu.Unlock()
		// frames carry their WebSocket header (text, 49 bytes): 0x81 0x31
		if len(frames) != 1 || string(frames[0]) != "\x81\x31"+want {
			t.Fatalf("%s got %q, want exactly one %s", name, frames, want)
		}
	}
	if pubConn.sent.Load() != 0 || missC.sent.Load() != 0 {
		t.Fatalf("publisher got %d, non-matching session got %d", pubConn.sent.Load(), missC.sent.Load())
	}
}
