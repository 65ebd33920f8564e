package netpoll

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// histogramValue returns the sample count and sum of the histogram name in
// reg, and the cumulative count of its bucket with upper bound le.
func histogramValue(t testing.TB, reg prometheus.Gatherer, name string, le float64) (count uint64, sum float64, below uint64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		if mf.GetType() != dto.MetricType_HISTOGRAM || len(mf.GetMetric()) != 1 {
			t.Fatalf("%s: type %v with %d series, want one histogram", name, mf.GetType(), len(mf.GetMetric()))
		}
		h := mf.GetMetric()[0].GetHistogram()
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() == le {
				below = b.GetCumulativeCount()
			}
		}
		return h.GetSampleCount(), h.GetSampleSum(), below
	}
	t.Fatalf("%s not registered", name)
	return 0, 0, 0
}

// TestMetricsRegistered: the new histograms are on the Server's Registerer,
// one series each (no labels), from construction on.
func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}, Registerer: reg}, newTestHandler()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gatecast_ws_handshake_seconds", "gatecast_eventloop_lag_seconds"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Errorf("%s: %d series (%v), want 1", name, n, err)
		}
	}
}

// TestHandshakeSeconds: every upgrade attempt that got a response (101 or
// an HTTP error) is observed once, from accept to the response; a handshake
// timeout is not.
func TestHandshakeSeconds(t *testing.T) {
	const name = "gatecast_ws_handshake_seconds"
	h := newTestHandler()
	s, reg := startServer(t, Config{MaxHeaderBytes: 1024, HandshakeTimeout: 300 * time.Millisecond}, h)
	wantCount := func(step string, n uint64) {
		t.Helper()
		if got, _, _ := histogramValue(t, reg, name, 0); got != n {
			t.Fatalf("%s: %d handshakes observed, want %d", step, got, n)
		}
	}
	wantCount("start", 0)

	// A request completed 50ms after the accept: the observation covers the
	// wait. The registry holds the connection from accept on, and its
	// accept time is recorded before it is added.
	dialed := time.Now()
	conn := dialRaw(t, s)
	eventually(t, "the accept", func() bool { return s.reg.len() == 1 })
	accepted := time.Now()
	time.Sleep(50 * time.Millisecond)
	if _, err := conn.Write([]byte(upgradeRequest("/ws", ""))); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	h.waitOpened(t) // Open runs after the observation
	upper := time.Since(dialed).Seconds()
	if lower := time.Since(accepted).Seconds(); lower < .05 {
		t.Fatalf("the test waited only %.4fs", lower)
	}
	count, sum, fast := histogramValue(t, reg, name, .025)
	if count != 1 || sum < .05 || sum > upper || fast != 0 {
		t.Fatalf("slow upgrade: count %d, sum %.4fs, %d under 25ms; want 1 observation in [50ms, %.4fs]", count, sum, fast, upper)
	}

	dial(t, s, "/ws", nil)
	h.waitOpened(t)
	wantCount("second upgrade", 2)
	if got := httpExchange(t, s, upgradeRequest("/elsewhere", "")); !strings.HasPrefix(got, "HTTP/1.1 404") {
		t.Fatalf("status %q", got)
	}
	wantCount("404", 3)
	if got := httpExchange(t, s, upgradeRequest("/ws", "X-Big: "+strings.Repeat("a", 2000)+"\r\n")); !strings.HasPrefix(got, "HTTP/1.1 431") {
		t.Fatalf("status %q", got)
	}
	wantCount("431", 4)

	// Slowloris: timed out, counted by handshakes_total, not observed.
	slow := dialRaw(t, s)
	if _, err := slow.Write([]byte("GET /ws HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the handshake timeout", func() bool {
		return counterValue(t, reg, "gatecast_ws_handshakes_total", "result", "timeout") == 1
	})
	wantCount("timeout", 4)
}

// TestEventLoopLagRealWakeups: the probe times real read wakeups only, at
// most one per wakeup: while no connection sends anything nothing is
// observed however often the probe arms, and traffic produces observations.
func TestEventLoopLagRealWakeups(t *testing.T) {
	const name = "gatecast_eventloop_lag_seconds"
	h := newTestHandler()
	s, reg := startServer(t, Config{LagProbeInterval: time.Millisecond}, h)
	c, _ := dial(t, s, "/ws", nil)
	h.waitOpened(t)

	time.Sleep(10 * time.Millisecond) // the handshake's wakeup may have been sampled
	idle, _, _ := histogramValue(t, reg, name, 0)
	time.Sleep(30 * time.Millisecond) // thirty probe intervals without input
	if got, _, _ := histogramValue(t, reg, name, 0); got != idle {
		t.Fatalf("%d observations while idle, want none (no wakeup happened)", got-idle)
	}

	sent := 0
	for {
		count, _, _ := histogramValue(t, reg, name, 0)
		if count >= idle+3 {
			if int(count-idle) > sent {
				t.Fatalf("%d observations for %d messages: more than one per wakeup", count-idle, sent)
			}
			break
		}
		if sent == 20000 {
			t.Fatalf("%d messages echoed, only %d lag observations", sent, count-idle)
		}
		c.send(true, []byte("ping"))
		c.expectMessage()
		sent++
	}
}

// lagTestConn returns a connection context of a fresh, unserved Server, as
// netpoll passes it to the Runner, and the Server's registry.
func lagTestConn(t testing.TB) (context.Context, *Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}, Registerer: reg}, newTestHandler())
	if err != nil {
		t.Fatal(err)
	}
	return (*connCtx)(&Conn{srv: s}), s, reg
}

// TestRunTaskSampling: runTask runs every task exactly once; it times a
// task only while its own Server's probe is armed, and then disarms it.
func TestRunTaskSampling(t *testing.T) {
	const name = "gatecast_eventloop_lag_seconds"
	ctxA, a, regA := lagTestConn(t)
	_, b, regB := lagTestConn(t)
	done := make(chan int, 8)
	run := func(ctx context.Context, id int) {
		t.Helper()
		runTask(ctx, func() { done <- id })
		select {
		case got := <-done:
			if got != id {
				t.Fatalf("task %d ran instead of %d", got, id)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("task %d never ran", id)
		}
	}

	run(ctxA, 1) // not armed
	if n, _, _ := histogramValue(t, regA, name, 0); n != 0 {
		t.Fatalf("unarmed: %d observations", n)
	}
	b.lag.state.Store(lagArmed)
	run(ctxA, 2) // another Server's probe is armed
	run(nil, 3)  // not a connection (netpoll passes other contexts elsewhere)
	if n, _, _ := histogramValue(t, regA, name, 0); n != 0 {
		t.Fatalf("task of Server a timed for Server b: %d observations", n)
	}
	if b.lag.state.Load() != lagArmed {
		t.Fatal("Server b's sample was consumed by another Server's task")
	}
	a.lag.state.Store(lagArmed)
	run(ctxA, 4)
	eventually(t, "the sampler to be released", func() bool { return a.lag.state.Load() == lagIdle })
	if n, _, _ := histogramValue(t, regA, name, 0); n != 1 {
		t.Fatalf("armed: %d observations, want 1", n)
	}
	run(ctxA, 5) // disarmed again
	if n, _, _ := histogramValue(t, regA, name, 0); n != 1 {
		t.Fatalf("after the sample: %d observations, want 1", n)
	}
	if n, _, _ := histogramValue(t, regB, name, 0); n != 0 {
		t.Fatalf("Server b: %d observations, want 0", n)
	}
	if a.lag.task != nil {
		t.Fatal("the sampled task is still referenced")
	}
}

// TestRunTaskAllocs: starting a task allocates nothing, sampled or not.
func TestRunTaskAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race")
	}
	ctx, s, _ := lagTestConn(t)
	done := make(chan struct{}, 1)
	task := func() { done <- struct{}{} }
	run := func() {
		runTask(ctx, task)
		<-done
	}
	for range 100 {
		run()
	}
	if n := testing.AllocsPerRun(1000, run); n != 0 {
		t.Errorf("unsampled runTask: %v allocations", n)
	}
	armed := func() {
		eventually(t, "the sampler to be released", func() bool { return s.lag.state.Load() == lagIdle })
		s.lag.state.Store(lagArmed)
		run()
	}
	if n := testing.AllocsPerRun(200, armed); n != 0 {
		t.Errorf("sampled runTask: %v allocations", n)
	}
}

// TestEventLoopLagMeasuresStartDelay: the observation is the time the task
// waited to start. With one P held by a goroutine that keeps running after
// handing over the task (as netpoll's poller does), the task cannot start
// until that goroutine yields or is preempted; the histogram must see that
// delay, as measured by the task itself.
func TestEventLoopLagMeasuresStartDelay(t *testing.T) {
	ctx, s, reg := lagTestConn(t)
	started := make(chan time.Time, 1)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	s.lag.state.Store(lagArmed)
	handed := time.Now()
	runTask(ctx, func() { started <- time.Now() })
	for time.Since(handed) < 20*time.Millisecond {
		// Busy: the P is ours until the runtime preempts us (about 10ms).
	}
	runtime.Gosched()
	waited := (<-started).Sub(handed).Seconds()

	count, sum, _ := histogramValue(t, reg, "gatecast_eventloop_lag_seconds", 0)
	if count != 1 {
		t.Fatalf("%d observations, want 1", count)
	}
	// handed ≤ the runner's timestamp and the observation precedes the
	// task's first instruction, so sum ≤ waited; what separates them is a
	// few instructions on each side.
	if sum > waited || sum < waited-.001 {
		t.Fatalf("observed %.6fs for a task that waited %.6fs to start", sum, waited)
	}
	if waited < .001 {
		t.Logf("the task started after %.6fs: the runtime stopped the busy goroutine early", waited)
	}
}

// TestLagProbeStopsWithServer: the probe goroutine runs from Serve to
// Shutdown and no longer; a Server never served starts none.
func TestLagProbeStopsWithServer(t *testing.T) {
	probes := func(s *Server) int {
		buf := make([]byte, 1<<20)
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) {
				return strings.Count(string(buf[:n]), fmt.Sprintf("(*Server).lagLoop(%p", s))
			}
			buf = make([]byte, 2*len(buf))
		}
	}

	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}, LagProbeInterval: time.Millisecond}, newTestHandler())
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	eventually(t, "the probe to start", func() bool { return probes(s) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.lagDone:
	default:
		t.Fatal("Shutdown returned before the probe stopped")
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	eventually(t, "the probe goroutine to exit", func() bool { return probes(s) == 0 })

	idle, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}, LagProbeInterval: time.Millisecond}, newTestHandler())
	if err != nil {
		t.Fatal(err)
	}
	if err := idle.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := idle.Serve(); err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if n := probes(idle); n != 0 {
		t.Fatalf("%d probe goroutines for a Server shut down before Serve", n)
	}
}

// BenchmarkRunTask measures starting one OnRequest task through runTask
// against a bare "go f()" (the Runner before the lag probe existed): the
// difference is what the probe costs every read wakeup. The probe is never
// armed here, as on all but one wakeup per interval.
func BenchmarkRunTask(b *testing.B) {
	ctx, _, _ := lagTestConn(b)
	done := make(chan struct{})
	task := func() { done <- struct{}{} }
	b.Run("go", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			go task()
			<-done
		}
	})
	b.Run("runTask", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			runTask(ctx, task)
			<-done
		}
	})
}
