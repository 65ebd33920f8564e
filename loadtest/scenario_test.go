package loadtest

import (
	"context"
	"testing"
	"time"

	"github.com/gatecast/gatecast/server"
)

// The scenarios run end to end, at a small scale, against a real node: the
// figures in docs/PERFORMANCE.md come from these same code paths.
func TestScenariosAgainstRealNode(t *testing.T) {
	cfg := server.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = "127.0.0.1:0"
	n, err := server.Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	base := Options{
		URL:      "ws://" + n.WSAddr() + "/ws/brocker/",
		AdminURL: "http://" + n.AdminAddr(),
		AdminKey: n.AdminKey(),
		Size:     64,
		Duration: 30 * time.Second,
		Hold:     100 * time.Millisecond,
		Dial:     8,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("idle", func(t *testing.T) {
		o := base
		o.Conns = 50
		r, err := Idle(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if r.Conns != 50 || r.BrokerGoroutines == 0 {
			t.Fatalf("report %+v", r)
		}
	})
	t.Run("fanout", func(t *testing.T) {
		o := base
		o.Conns, o.Messages, o.Rate = 20, 10, 1000
		r, err := FanOut(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if r.Delivered != 200 || r.Expected != 200 || r.Errors != 0 || r.LatencyP99Ms <= 0 {
			t.Fatalf("report %+v", r)
		}
	})
	t.Run("fanin", func(t *testing.T) {
		o := base
		o.Conns, o.Messages, o.Rate = 5, 100, 2000
		r, err := FanIn(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if r.Delivered != 100 || r.Errors != 0 {
			t.Fatalf("report %+v", r)
		}
	})
	t.Run("revoke", func(t *testing.T) {
		o := base
		o.Conns = 30
		r, err := Revoke(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if r.Closed != 30 || r.CloseCodes != "map[4002:30]" || r.Errors != 0 {
			t.Fatalf("report %+v", r)
		}
	})
}
