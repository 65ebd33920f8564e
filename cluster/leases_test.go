package cluster

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/gatecast/gatecast/internal/testserver"
)

// redisBackends runs f against a real standalone Redis and a real 3-master
// Redis Cluster: the lease scripts must hold one slot per token on both.
func redisBackends(t *testing.T, f func(t *testing.T, newClient func() rueidis.Client)) {
	t.Run("standalone", func(t *testing.T) {
		addr := testserver.Redis(t)
		f(t, func() rueidis.Client { return newClient(t, []string{addr}) })
	})
	t.Run("cluster", func(t *testing.T) {
		if testing.Short() {
			t.Skip("Redis Cluster skipped in -short")
		}
		addrs := testserver.RedisCluster(t, 3)
		f(t, func() rueidis.Client { return newClient(t, addrs) })
	})
}

func newClient(t *testing.T, addrs []string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatalf("redis client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// 200 concurrent Acquire spread over three nodes against a limit of 5:
// exactly 5 succeed, on every topology.
func TestAcquireExactAcrossNodes(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		ctx := ctxT(t)
		nodes := []*Leases{
			NewLeases(newClient(), "node-a", 30*time.Second),
			NewLeases(newClient(), "node-b", 30*time.Second),
			NewLeases(newClient(), "node-c", 30*time.Second),
		}
		for _, tokenID := range []int64{1, 2, 77, 1234} { // several slots of a cluster
			var admitted atomic.Int64
			var wg sync.WaitGroup
			for i := range 200 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ok, err := nodes[i%3].Acquire(ctx, tokenID, 5)
					if err != nil {
						t.Errorf("acquire: %v", err)
					}
					if ok {
						admitted.Add(1)
					}
				}()
			}
			wg.Wait()
			if got := admitted.Load(); got != 5 {
				t.Fatalf("token %d: %d acquired, want exactly 5", tokenID, got)
			}
			held := nodes[0].Held(tokenID) + nodes[1].Held(tokenID) + nodes[2].Held(tokenID)
			if n, err := nodes[0].Count(ctx, tokenID); err != nil || n != 5 || held != 5 {
				t.Fatalf("token %d: count %d (%v), held locally %d, want 5", tokenID, n, err, held)
			}
		}
	})
}

// Release frees exactly one slot, never goes below zero, and another node
// can then take the slot.
func TestReleaseFreesSlot(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		ctx := ctxT(t)
		a := NewLeases(newClient(), "a", 30*time.Second)
		b := NewLeases(newClient(), "b", 30*time.Second)
		const tok = 42
		for range 2 {
			if ok, err := a.Acquire(ctx, tok, 2); !ok || err != nil {
				t.Fatalf("acquire: %v %v", ok, err)
			}
		}
		if ok, _ := b.Acquire(ctx, tok, 2); ok {
			t.Fatal("third slot granted over a limit of 2")
		}
		if err := a.Release(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if n, _ := a.Count(ctx, tok); n != 1 || a.Held(tok) != 1 {
			t.Fatalf("after release: count %d held %d, want 1", n, a.Held(tok))
		}
		if ok, err := b.Acquire(ctx, tok, 2); !ok || err != nil {
			t.Fatalf("freed slot not granted: %v %v", ok, err)
		}
		// b releasing more than it holds costs nothing and changes nothing
		_ = b.Release(ctx, tok)
		_ = b.Release(ctx, tok)
		if n, _ := a.Count(ctx, tok); n != 1 {
			t.Fatalf("count %d after over-release, want 1", n)
		}
	})
}

// A node that stops heartbeating (SIGKILL) stops counting within the TTL;
// a node that heartbeats keeps its share.
func TestSharesExpireWithoutHeartbeat(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		ctx := ctxT(t)
		const ttl = 400 * time.Millisecond
		dead := NewLeases(newClient(), "dead", ttl)
		alive := NewLeases(newClient(), "alive", ttl)
		other := NewLeases(newClient(), "other", ttl)
		const tok = 7
		for range 2 {
			if ok, _ := dead.Acquire(ctx, tok, 4); !ok {
				t.Fatal("acquire dead")
			}
			if ok, _ := alive.Acquire(ctx, tok, 4); !ok {
				t.Fatal("acquire alive")
			}
		}
		if ok, _ := other.Acquire(ctx, tok, 4); ok {
			t.Fatal("limit not enforced")
		}
		// alive renews across three TTLs; dead never does.
		deadline := time.Now().Add(3 * ttl)
		for time.Now().Before(deadline) {
			if err := alive.Heartbeat(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(ttl / 4)
		}
		if n, err := other.Count(ctx, tok); err != nil || n != 2 {
			t.Fatalf("count %d (%v), want only alive's 2", n, err)
		}
		for range 2 {
			if ok, _ := other.Acquire(ctx, tok, 4); !ok {
				t.Fatal("dead node's slots were not freed")
			}
		}
		if ok, _ := other.Acquire(ctx, tok, 4); ok {
			t.Fatal("alive node's slots were lost")
		}
	})
}

// Redis restarted empty: the node's share is gone, but its connections are
// still open. The next Acquire re-instates the share before comparing, and
// the next Heartbeat repairs it exactly.
func TestShareRepairedAfterRedisLosesIt(t *testing.T) {
	ctx := ctxT(t)
	addr := testserver.Redis(t)
	c := newClient(t, []string{addr})
	a := NewLeases(c, "a", 30*time.Second)
	const tok = 9
	for range 3 {
		if ok, _ := a.Acquire(ctx, tok, 4); !ok {
			t.Fatal("acquire")
		}
	}
	if err := c.Do(ctx, c.B().Flushall().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.Count(ctx, tok); n != 0 {
		t.Fatalf("count %d after FLUSHALL, want 0", n)
	}
	if err := a.Heartbeat(ctx); err != nil { // renew finds the share lost and repairs it
		t.Fatal(err)
	}
	if n, _ := a.Count(ctx, tok); n != 3 {
		t.Fatalf("count %d after heartbeat repair, want 3", n)
	}
	if ok, _ := a.Acquire(ctx, tok, 4); !ok {
		t.Fatal("fourth slot refused")
	}
	if ok, _ := a.Acquire(ctx, tok, 4); ok {
		t.Fatal("fifth slot granted: the repaired share was not counted")
	}
	// Without a heartbeat in between, Acquire itself re-instates the share.
	if err := c.Do(ctx, c.B().Flushall().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.Acquire(ctx, tok, 4); ok {
		t.Fatal("slot granted over the limit after Redis lost the share")
	}
	if n, _ := a.Count(ctx, tok); n != 4 {
		t.Fatalf("count %d, want the re-instated 4", n)
	}
}

// Reset clears what a previous run of this node ID left behind.
func TestResetClearsOwnShares(t *testing.T) {
	ctx := ctxT(t)
	addr := testserver.Redis(t)
	prev := NewLeases(newClient(t, []string{addr}), "n1", 30*time.Second)
	other := NewLeases(newClient(t, []string{addr}), "n2", 30*time.Second)
	for _, tok := range []int64{1, 2, 3} {
		prev.Acquire(ctx, tok, 10)
		other.Acquire(ctx, tok, 10)
	}
	restarted := NewLeases(newClient(t, []string{addr}), "n1", 30*time.Second)
	if err := restarted.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []int64{1, 2, 3} {
		if n, _ := other.Count(ctx, tok); n != 1 {
			t.Fatalf("token %d: count %d after reset, want other's 1", tok, n)
		}
	}
}

func TestLeasesRejectBadArguments(t *testing.T) {
	ctx := context.Background()
	if _, err := NewLeases(nil, "n", time.Second).Acquire(ctx, 1, 1); err == nil {
		t.Fatal("nil client accepted")
	}
	c := newClient(t, []string{testserver.Redis(t)})
	if _, err := NewLeases(c, "", time.Second).Acquire(ctx, 1, 1); err == nil {
		t.Fatal("empty node accepted")
	}
	if _, err := NewLeases(c, "n", 0).Acquire(ctx, 1, 1); err == nil {
		t.Fatal("zero TTL accepted")
	}
	if _, err := NewLeases(c, "n", time.Second).Acquire(ctx, 1, 0); err == nil {
		t.Fatal("max 0 accepted")
	}
}

// Adopt counts open connections without a limit check; Trim takes a lowered
// limit's excess from the calling node's share only, so nodes applying it in
// any order close exactly the excess between them.
func TestAdoptAndTrim(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		ctx := ctxT(t)
		a := NewLeases(newClient(), "node-a", 30*time.Second)
		b := NewLeases(newClient(), "node-b", 30*time.Second)
		const tok = 42
		count := func() int {
			n, err := a.Count(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		for _, l := range []*Leases{a, b} {
			if err := l.Adopt(ctx, tok, 3); err != nil {
				t.Fatal(err)
			}
		}
		if c := count(); c != 6 {
			t.Fatalf("count after adopting 3+3: %d", c)
		}
		if ok, _ := a.Acquire(ctx, tok, 6); ok {
			t.Fatal("acquired past the limit after adoption")
		}
		trim := func(l *Leases, max, want int) {
			t.Helper()
			took, err := l.Trim(ctx, tok, max)
			if err != nil || took != want {
				t.Fatalf("%s Trim(%d) = %d, %v; want %d", l.node, max, took, err, want)
			}
		}
		trim(b, 4, 2) // B applies the new limit first: it gives up the excess
		trim(a, 4, 0) // A then finds the count at the limit
		if c := count(); c != 4 || a.Held(tok) != 3 || b.Held(tok) != 1 {
			t.Fatalf("count %d, held A %d B %d; want 4, 3, 1", c, a.Held(tok), b.Held(tok))
		}
		trim(a, 1, 3) // the excess is more than A holds: A gives all it has
		trim(b, 1, 0)
		if c := count(); c != 1 {
			t.Fatalf("count %d, want 1", c)
		}
		// A node holding nothing has nothing to trim (and no Redis call).
		if took, err := NewLeases(newClient(), "node-c", 30*time.Second).Trim(ctx, tok, 1); took != 0 || err != nil {
			t.Fatalf("Trim on a node without slots: %d, %v", took, err)
		}
		// The last slot's Release empties the count.
		if err := b.Release(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if c := count(); c != 0 {
			t.Fatalf("count %d after the last release", c)
		}
		if _, err := a.Trim(ctx, tok, 0); err == nil {
			t.Fatal("Trim accepted max 0")
		}
	})
}
