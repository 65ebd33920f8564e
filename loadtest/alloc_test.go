package loadtest

import (
	"testing"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gatecast/gatecast/proto"
	"github.com/gobwas/ws"
)

// newTestWorker is a worker with n devices and no connection, enough to
// run the receive and publish paths without a broker.
func newTestWorker(t testing.TB, n int) *worker {
	t.Helper()
	w, err := newWorker(workerSpec{
		Count: 1, Epoch: time.Now().UnixNano(), URLs: []string{"ws://127.0.0.1:1/ws/brocker/"},
		Devices: n, DevHi: n, Dashboards: 1, Regions: 1, DeviceTokens: []string{"t"}, DashboardToken: "d",
		Size: 64, DialConcurrency: 1, DialTimeout: time.Second, HandshakeTimeout: time.Second,
	}, newEventWriter(discard{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.shutdown)
	return w
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestReceivePathAllocs: reading a delivery from netpoll's buffer, parsing
// its stamp and recording it allocates nothing in steady state (the path
// every OnRequest wakeup runs per message).
func TestReceivePathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	w := newTestWorker(t, 1)
	dash := &w.conns[len(w.conns)-1]
	const runs = 1000
	lb := netpoll.NewLinkBuffer()
	msg := appendMessage(nil, 64, time.Now().UnixNano())
	frame := proto.AppendSeedFrame(nil, "lt/r0/d0/telemetry", msg)
	for range runs + 10 {
		buf, _ := lb.Malloc(len(frame))
		copy(buf, frame)
	}
	if err := lb.Flush(); err != nil {
		t.Fatal(err)
	}
	for range 10 { // warm up pools and histogram buckets
		if err := dash.readFrame(nil, lb); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(runs-1, func() {
		if err := dash.readFrame(nil, lb); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per received message", allocs)
	}
	_, _, delivered := w.totals()
	if delivered[kindTelemetry] != runs+10 {
		t.Fatalf("counted %d deliveries, want %d", delivered[kindTelemetry], runs+10)
	}
	var recorded int64
	for i := range w.shards {
		recorded += w.shards[i].lat[kindTelemetry].TotalCount()
	}
	if recorded != runs+10 {
		t.Fatalf("recorded %d latencies, want %d", recorded, runs+10)
	}
}

// TestPublishFrameAllocs: building a masked, stamped publish frame into a
// publisher's buffers allocates nothing once they have grown.
func TestPublishFrameAllocs(t *testing.T) {
	w := newTestWorker(t, 1)
	var topic, msg, payload, frame []byte
	build := func() {
		topic = appendDeviceTopic(topic[:0], 3, 12345, "telemetry")
		msg = appendMessage(msg[:0], 64, time.Now().UnixNano())
		payload = appendPublish(payload[:0], topic, msg)
		frame = appendClientFrame(frame[:0], ws.OpText, payload, w.mask())
	}
	build()
	if allocs := testing.AllocsPerRun(1000, build); allocs != 0 {
		t.Fatalf("%v allocations per published frame", allocs)
	}
}

func BenchmarkReceivePath(b *testing.B) {
	w := newTestWorker(b, 1)
	dash := &w.conns[len(w.conns)-1]
	frame := proto.AppendSeedFrame(nil, "lt/r0/d0/telemetry", appendMessage(nil, 64, time.Now().UnixNano()))
	lb := netpoll.NewLinkBuffer()
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for i := 0; i < b.N; i++ {
		if i%1024 == 0 {
			for range min(1024, b.N-i) {
				buf, _ := lb.Malloc(len(frame))
				copy(buf, frame)
			}
			_ = lb.Flush()
		}
		if err := dash.readFrame(nil, lb); err != nil {
			b.Fatal(err)
		}
	}
}
