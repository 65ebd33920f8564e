package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

func TestRegistryLiveNodes(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		ctx := ctxT(t)
		const ttl = 500 * time.Millisecond
		a := NewRegistry(newClient(), ttl)
		b := NewRegistry(newClient(), ttl)
		started := time.Now().UTC().Truncate(time.Second)
		if err := a.Heartbeat(ctx, NodeInfo{ID: "node-b", WSAddr: "127.0.0.1:8080", Connections: 3, StartedAt: started}); err != nil {
			t.Fatal(err)
		}
		if err := b.Heartbeat(ctx, NodeInfo{ID: "node-a", AdminAddr: "127.0.0.1:8081"}); err != nil {
			t.Fatal(err)
		}
		nodes, err := a.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) != 2 || nodes[0].ID != "node-a" || nodes[1].ID != "node-b" {
			t.Fatalf("nodes %+v", nodes)
		}
		if n := nodes[1]; n.WSAddr != "127.0.0.1:8080" || n.Connections != 3 || !n.StartedAt.Equal(started) || n.ExpiresAt.IsZero() {
			t.Fatalf("node-b info %+v", n)
		}

		// node-a leaves gracefully; node-b stops heartbeating (killed) and
		// drops out after the TTL while node-c keeps heartbeating.
		if err := b.Leave(ctx, "node-a"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * ttl)
		for time.Now().Before(deadline) {
			if err := b.Heartbeat(ctx, NodeInfo{ID: "node-c"}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(ttl / 5)
		}
		nodes, err = a.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) != 1 || nodes[0].ID != "node-c" {
			t.Fatalf("after leave and expiry: %+v, want only node-c", nodes)
		}
	})
}

func TestRegistryRejectsBadArguments(t *testing.T) {
	ctx := ctxT(t)
	if err := NewRegistry(nil, time.Second).Heartbeat(ctx, NodeInfo{ID: "x"}); err == nil {
		t.Fatal("nil client accepted")
	}
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		if err := NewRegistry(newClient(), time.Second).Heartbeat(ctx, NodeInfo{}); err == nil {
			t.Fatal("empty ID accepted")
		}
	})
}

func TestNewNodeIDUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewNodeID()
		if seen[id] || strings.ContainsAny(id, " /:{}") || len(id) > 60 {
			t.Fatalf("bad or repeated node ID %q", id)
		}
		seen[id] = true
	}
}
