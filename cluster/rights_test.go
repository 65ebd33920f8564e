package cluster

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatecast/gatecast/internal/testserver"
)

// rightsRecorder collects what a node's Rights reports.
type rightsRecorder struct {
	mu      sync.Mutex
	changes []int64
	resets  int
}

func (rr *rightsRecorder) config(addrs []string) RightsConfig {
	return RightsConfig{
		Addrs: addrs,
		OnChange: func(ids []int64) {
			rr.mu.Lock()
			rr.changes = append(rr.changes, ids...)
			rr.mu.Unlock()
		},
		OnReset: func() {
			rr.mu.Lock()
			rr.resets++
			rr.mu.Unlock()
		},
	}
}

func (rr *rightsRecorder) snapshot() ([]int64, int) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return slices.Clone(rr.changes), rr.resets
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openRights(t *testing.T, rr *rightsRecorder, addrs []string) *Rights {
	t.Helper()
	r, err := OpenRights(rr.config(addrs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// A change announced on node A reaches node B for exactly the tokens B
// watches, every time (the watch is re-armed after each invalidation).
func TestRightsChangeReachesWatchingNodes(t *testing.T) {
	for _, topo := range []string{"standalone", "cluster"} {
		t.Run(topo, func(t *testing.T) {
			var addrs []string
			if topo == "standalone" {
				addrs = []string{testserver.Redis(t)}
			} else {
				if testing.Short() {
					t.Skip("Redis Cluster skipped in -short")
				}
				addrs = testserver.RedisCluster(t, 3)
			}
			ctx := ctxT(t)
			var ra, rb rightsRecorder
			a := openRights(t, &ra, addrs)
			b := openRights(t, &rb, addrs)
			for _, id := range []int64{5, 6, 1234} {
				if err := b.Watch(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Changed(ctx, 5, 7); err != nil { // 7: watched by nobody
				t.Fatal(err)
			}
			waitFor(t, "B hears token 5", func() bool { c, _ := rb.snapshot(); return slices.Contains(c, 5) })
			// second change of the same token: heard again
			if err := a.Changed(ctx, 5, 1234); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "B hears 5 and 1234 again", func() bool {
				c, _ := rb.snapshot()
				n := 0
				for _, id := range c {
					if id == 5 {
						n++
					}
				}
				return n >= 2 && slices.Contains(c, 1234)
			})
			// Unwatched tokens stay silent; A watched nothing and heard nothing.
			time.Sleep(100 * time.Millisecond)
			got, resets := rb.snapshot()
			// rueidis reports a nil invalidation when it replaces a cluster
			// connection during discovery: a reset is always allowed (it
			// only costs a re-validation), a lost change never is.
			if slices.Contains(got, 6) || slices.Contains(got, 7) || (topo == "standalone" && resets != 0) {
				t.Fatalf("B heard %v, resets %d", got, resets)
			}
			if c, _ := ra.snapshot(); len(c) != 0 {
				t.Fatalf("A heard %v without watching", c)
			}
			// After Unwatch the token is heard at most once more.
			b.Unwatch(1234)
			before, _ := rb.snapshot()
			a.Changed(ctx, 1234)
			a.Changed(ctx, 1234)
			time.Sleep(200 * time.Millisecond)
			after, _ := rb.snapshot()
			if n := countOf(after, 1234) - countOf(before, 1234); n > 1 {
				t.Fatalf("unwatched token heard %d times", n)
			}
		})
	}
}

func countOf(ids []int64, id int64) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// Redis restarted: the node can no longer trust its copy, hears a reset,
// and after re-arming hears changes again.
func TestRightsResetWhenRedisLinkLost(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := ctxT(t)
	var rr rightsRecorder
	r := openRights(t, &rr, []string{srv.Addr()})
	if err := r.Watch(ctx, 42); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a reset after the restart", func() bool { _, n := rr.snapshot(); return n >= 1 })
	// Re-armed: a change after the restart is heard (retry while the
	// client reconnects and re-arms).
	waitFor(t, "token 42 heard after reconnect", func() bool {
		_ = r.Changed(ctx, 42)
		time.Sleep(20 * time.Millisecond)
		c, _ := rr.snapshot()
		return slices.Contains(c, 42)
	})
}

func TestChangeKeyRoundTrip(t *testing.T) {
	for _, id := range []int64{0, 1, 987654321} {
		got, ok := parseChangeKey(changeKey(id))
		if !ok || got != id {
			t.Fatalf("%d -> %q -> %d %v", id, changeKey(id), got, ok)
		}
	}
	for _, k := range []string{"gc:{t1}:n", "gc:{tx}:v", "other", "gc:{t}:v"} {
		if _, ok := parseChangeKey(k); ok {
			t.Fatalf("%q parsed as a change key", k)
		}
	}
}
