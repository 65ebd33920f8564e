package netpoll

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Event-loop lag: gatecast_eventloop_lag_seconds.
//
// What it measures, precisely: for one real read wakeup per
// Config.LagProbeInterval, the time from netpoll's poller handing the
// connection's task to the Runner (runTask, called right after the poller
// read the socket into the connection's input buffer) to the first
// instruction of that task on its goroutine, i.e. to the moment OnRequest
// (and so Session.OnMessage) can start. With the Runner starting each task
// as its own goroutine, that is the Go scheduler's run-queue delay for event
// goroutines: near zero on an idle node, growing when every core is busy
// (GC assists, a burst of publishes, CPU throttling). It is the delay that
// bytes already read from the socket wait before any Gatecast code sees
// them.
//
// Not included: the time bytes spend in the kernel before epoll reports
// them, the poller's own batch processing, OnRequest's processing time, and
// input that arrives while a connection's task is still running (netpoll
// loops over it inside that task without calling the Runner again).
//
// Why real wakeups rather than a synthetic task: Go puts a goroutine
// started with "go" in its P's runnext slot, which runs as soon as the
// starting goroutine blocks, ahead of the P's whole run queue. A probe
// goroutine that starts a task and then sleeps would therefore see its task
// start at once however long the queue is, while the poller keeps running
// after starting tasks (it polls epoll again), so its tasks do queue. Hence
// the probe only arms a sample (lagIdle → lagArmed, once per interval) and
// runTask times the next real wakeup of one of this Server's connections
// (lagArmed → lagInFlight). With no wakeup during an interval there is no
// observation: _count grows with traffic, at most once per interval.
//
// Cost: every wakeup pays a type assertion and one atomic load of
// lagProbe.state, a word alone on its cache line that changes at most twice
// per interval; the sampled wakeup starts a pre-bound method value instead
// of the task, so sampling allocates nothing.

// Sampler states.
const (
	lagIdle     uint32 = iota // no sample wanted
	lagArmed                  // the next wakeup of this Server is timed
	lagInFlight               // a timed task was handed to its goroutine and has not started
)

// lagProbe is one Server's event-loop lag sampler.
type lagProbe struct {
	_     [64]byte
	state atomic.Uint32 // read by every wakeup: keep it alone on its line
	_     [60]byte

	// Written by the runTask call that won lagArmed → lagInFlight, read by
	// the goroutine it starts (ordered by the go statement); reused only
	// after that goroutine set lagIdle.
	task     func()
	handedAt time.Time
	hist     prometheus.Histogram
	runFn    func() // run, bound once
}

// run is the sampled task's goroutine: it records how late it started,
// releases the sampler and runs the task.
func (l *lagProbe) run() {
	f, at := l.task, l.handedAt
	l.task = nil
	l.hist.Observe(time.Since(at).Seconds())
	l.state.Store(lagIdle)
	f()
}

// runTask is netpoll's Runner for every OnRequest task of the process (see
// tuneNetpoll): it starts f on its own goroutine. When the task belongs to a
// connection of a Server whose lag probe is armed, the start is timed.
func runTask(ctx context.Context, f func()) {
	if cc, ok := ctx.(*connCtx); ok {
		l := &cc.srv.lag
		if l.state.Load() == lagArmed && l.state.CompareAndSwap(lagArmed, lagInFlight) {
			l.task = f
			l.handedAt = time.Now()
			go l.runFn()
			return
		}
	}
	go f()
}

// lagLoop arms one sample per LagProbeInterval until the Server stops. An
// armed sample that found no wakeup stays armed; a sample still in flight
// is left alone.
func (s *Server) lagLoop() {
	defer close(s.lagDone)
	t := time.NewTicker(s.cfg.LagProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-t.C:
			s.lag.state.CompareAndSwap(lagIdle, lagArmed)
		}
	}
}
