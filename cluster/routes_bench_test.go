package cluster

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatecast/gatecast/internal/testserver"
)

// Forward to one matching node on a real standalone Redis, measured until
// the other node received every message: msgs/s is end-to-end forwarding
// throughput, serial (one publisher) and parallel (GOMAXPROCS×4
// publishers), each publisher waiting on Backlog after a Forward as the
// broker does; "nowait" forwards flat out (what the queue drops shows in
// %delivered).
func BenchmarkForwardDelivered(b *testing.B) {
	for _, mode := range []string{"serial", "parallel", "serial-nowait"} {
		b.Run(mode, func(b *testing.B) {
			addr := testserver.Redis(b)
			a := openRoutesB(b, addr, "a", nil)
			var got atomic.Int64
			sub := openRoutesB(b, addr, "b", func(string, []byte) { got.Add(1) })
			if err := sub.Add(context.Background(), "sensors/+/temp"); err != nil {
				b.Fatal(err)
			}
			payload := []byte(`{"tag":"sensors/room1/temp","message":{"v":21.5}}`)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			forward := func() {
				_ = a.Forward(ctx, "sensors/room1/temp", payload)
				if mode != "serial-nowait" {
					if ch := a.Backlog(); ch != nil {
						<-ch
					}
				}
			}
			if mode == "parallel" {
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						forward()
					}
				})
			} else {
				for range b.N {
					forward()
				}
			}
			deadline := time.Now().Add(30 * time.Second)
			for got.Load() < int64(b.N) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond)
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(got.Load())/el.Seconds(), "msgs/s")
			b.ReportMetric(100*float64(got.Load())/float64(b.N), "%delivered")
		})
	}
}
