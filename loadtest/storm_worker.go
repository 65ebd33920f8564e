package loadtest

import (
	"container/heap"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The worker's side of `loadtest storm` (storm.go). Once armed
// ("stormarm"), a device whose connection the broker drops (a close frame,
// a DISCONNECT, the TCP connection gone) is queued for a reconnect at once
// (after a random delay below Jitter, when set); a scheduler goroutine
// dials the queue with at most Concurrency dials in flight and retries
// a failed attempt after a jittered, doubling backoff while the node is
// down (connection refused) or refuses with a try-again code (seed 1013,
// MQTT 0x88 / 0x89), at most Attempts times and until Timeout after the
// device's first drop. A reconnect is complete when the broker has
// admitted the connection: MQTT CONNACK (and SUBACK), seed the pong of a
// ping sent after the upgrade (ConfirmPing). Times are CLOCK_MONOTONIC
// (monoNow), comparable across the workers.

// stormSettings are a stormarm command's.
type stormSettings struct {
	Attempts   int           `json:"attempts"`    // per device and drop
	Timeout    time.Duration `json:"timeout"`     // per device, from its first drop
	Jitter     time.Duration `json:"jitter"`      // first attempt after a drop delayed by [0, Jitter)
	Backoff    time.Duration `json:"backoff"`     // retry delay after the first failed attempt; doubles
	BackoffMax time.Duration `json:"backoff_max"` // at most this
	// Concurrency is the reconnects in flight in this worker: a real fleet
	// has every device dialing at once, so this must not be what limits
	// the storm (the initial connect uses DialConcurrency).
	Concurrency int `json:"concurrency"`
}

// stormStatus is a worker's storm so far; the per-device arrays only in
// the answer to "stormtimes".
type stormStatus struct {
	Dropped   int64            `json:"dropped"` // devices dropped at least once since stormarm
	Down      int64            `json:"down"`    // dropped and not back (retrying)
	Back      int64            `json:"back"`    // back after their last drop, and connected
	Failed    int64            `json:"failed"`  // gave up
	Drops     int64            `json:"drops"`   // drop events (a device may drop again once back)
	FirstDrop int64            `json:"first_drop,omitempty"`
	FirstBack int64            `json:"first_back,omitempty"`
	LastBack  int64            `json:"last_back,omitempty"`
	Causes    map[string]int64 `json:"causes,omitempty"` // how the connections were dropped
	Handshake string           `json:"handshake,omitempty"`

	DropAt   []int64 `json:"drop_at,omitempty"`  // first drop
	UpAt     []int64 `json:"up_at,omitempty"`    // start of the first attempt after the last one refused at the TCP level (the node back)
	BackAt   []int64 `json:"back_at,omitempty"`  // last successful reconnect
	Attempts []int32 `json:"attempts,omitempty"` // reconnect attempts, all drops together
}

// Device states in a storm.
const (
	stUp     = iota // connected since stormarm
	stDown          // dropped, reconnecting
	stBack          // reconnected
	stFailed        // gave up
)

type stormState struct {
	set    stormSettings
	drops  chan int32 // devices to reconnect (indexes into conns)
	stop   chan struct{}
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	mu        sync.Mutex
	stopped   bool
	state     []uint8
	dropAt    []int64
	upAt      []int64
	backAt    []int64
	attempts  []int32
	st        stormStatus // counters
	causes    map[string]int64
	handshake *hdrhistogram.Histogram
}

// Storm defaults (the CLI's).
const (
	defStormAttempts   = 100
	defStormTimeout    = time.Minute
	defStormBackoff    = 50 * time.Millisecond
	defStormBackoffMax = time.Second
	defStormConc       = 2000
)

func (w *worker) stormArm(set *stormSettings) error {
	if set == nil || set.Concurrency < 1 || set.Attempts < 1 || set.Timeout <= 0 || set.Backoff <= 0 || set.BackoffMax < set.Backoff || set.Jitter < 0 {
		return errors.New("stormarm: bad settings")
	}
	if w.storm.Load() != nil {
		return errors.New("stormarm: already armed")
	}
	st := &stormState{set: *set, drops: make(chan int32, w.nDev+1), stop: make(chan struct{}), done: make(chan struct{}),
		state: make([]uint8, w.nDev), dropAt: make([]int64, w.nDev), upAt: make([]int64, w.nDev), backAt: make([]int64, w.nDev),
		attempts: make([]int32, w.nDev), causes: map[string]int64{}, handshake: newHist()}
	st.ctx, st.cancel = context.WithCancel(context.Background())
	w.storm.Store(st)
	go w.stormLoop(st)
	return nil
}

// stormStop stops reconnecting (dials in flight finish). Safe to call
// when not armed, and twice.
func (w *worker) stormStop() {
	st := w.storm.Load()
	if st == nil {
		return
	}
	st.once.Do(func() {
		st.mu.Lock()
		st.stopped = true
		st.mu.Unlock()
		close(st.stop)
		<-st.done
	})
}

// stormCause counts how a device's connection ended while a storm is on
// and reports whether it did (then it is no error: the nodes restart).
func (w *worker) stormCause(dc *devConn, cause string) bool {
	st := w.storm.Load()
	if st == nil || dc.role != roleDevice {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stopped {
		return false
	}
	st.causes[cause]++
	return true
}

// stormDropped queues device dc, whose connection the broker ended, for a
// reconnect, and reports whether it did (a storm is on). netpoll's close
// callback, after dc's flags were updated.
func (w *worker) stormDropped(dc *devConn, gotClose bool) bool {
	st := w.storm.Load()
	if st == nil || dc.role != roleDevice {
		return false
	}
	i := int(dc.id) - w.spec.DevLo
	now := monoNow()
	st.mu.Lock()
	if st.stopped {
		st.mu.Unlock()
		return false
	}
	if !gotClose {
		if w.spec.mqtt() {
			st.causes[errKindNames[errDroppedMQTT]]++
		} else {
			st.causes[errKindNames[errDropped]]++
		}
	}
	st.st.Drops++
	if st.st.FirstDrop == 0 {
		st.st.FirstDrop = now
	}
	switch st.state[i] {
	case stUp:
		st.st.Dropped++
		st.st.Down++
		st.dropAt[i] = now
	case stBack:
		st.st.Back--
		st.st.Down++
	}
	st.state[i] = stDown
	st.mu.Unlock()
	select {
	case st.drops <- int32(i):
	default: // cannot happen: a device is queued at most once per connection
	}
	return true
}

// stormRetryable reports whether a failed reconnect is worth retrying: the
// node is down or restarting, or refused with a try-again code; not a
// refusal of the credentials or the subscription.
func stormRetryable(kind errKind, err error) bool {
	var re *refusedError
	if errors.As(err, &re) {
		if !re.mqtt {
			return re.code < 4000 // 1013 try again, 1001 going away, 1011…; not 4001–4005
		}
		switch re.code {
		case 0x80, 0x88, 0x89, 0x8b: // unspecified, server unavailable, server busy, shutting down
			return true
		}
		return false
	}
	return kind != errProtocol
}

// tcpConnected reports whether a failed attempt got past the TCP connect:
// the node was listening.
func tcpConnected(kind errKind) bool {
	switch kind {
	case errDial, errDialRefused, errDialNoPort, errDialFiles, errDialTimeout:
		return false
	}
	return true
}

func (st *stormState) backoff(attempt int32) time.Duration {
	d := st.set.Backoff << min(attempt, 16)
	if d > st.set.BackoffMax || d <= 0 {
		d = st.set.BackoffMax
	}
	return d/2 + rand.N(d/2+1)
}

// stormLoop schedules and dials the reconnects until stormStop.
func (w *worker) stormLoop(st *stormState) {
	defer close(st.done)
	conc := st.set.Concurrency
	jobs := make(chan dialJob)
	results := make(chan dialResult, conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				t0 := monoNow()
				kind, err := w.conns[j.idx].connect(st.ctx)
				results <- dialResult{job: j, kind: kind, err: err, start: t0, dur: monoNow() - t0}
			}
		}()
	}
	var h jobHeap
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	inflight := 0
loop:
	for {
		var send chan dialJob
		var wait <-chan time.Time
		var next dialJob
		if h.Len() > 0 && inflight < conc {
			next = h[0]
			if d := next.due - monoNow(); d > 0 {
				timer.Reset(time.Duration(d))
				wait = timer.C
			} else {
				send = jobs
			}
		}
		select {
		case <-st.stop:
			break loop
		case i := <-st.drops:
			due := monoNow()
			if st.set.Jitter > 0 {
				due += rand.Int64N(int64(st.set.Jitter))
			}
			heap.Push(&h, dialJob{due: due, idx: i})
		case send <- next:
			heap.Pop(&h)
			inflight++
		case <-wait:
		case r := <-results:
			inflight--
			w.stormResult(st, &h, r)
		}
	}
	close(jobs)
	st.cancel()
	for ; inflight > 0; inflight-- {
		w.stormResult(st, &h, <-results)
	}
	wg.Wait()
}

// stormResult accounts for one reconnect attempt and schedules the next
// after a failure (scheduler goroutine).
func (w *worker) stormResult(st *stormState, h *jobHeap, r dialResult) {
	i := r.job.idx
	dc := &w.conns[i]
	st.mu.Lock()
	defer st.mu.Unlock()
	st.attempts[i]++
	// upAt: the first attempt since the last one the node refused at the
	// TCP level (down), i.e. the first after the node came back (an attempt
	// that reached the old node while it was stopping does not count).
	switch {
	case r.err != nil && !tcpConnected(r.kind):
		st.upAt[i] = 0
	case st.upAt[i] == 0:
		st.upAt[i] = r.start
	}
	if r.err == nil {
		recordUs(st.handshake, r.dur)
		// dc may already have been dropped again (then it is queued): it
		// is back only while connected. Its close callback takes st.mu
		// after clearing fOpen, so the two cannot cross.
		if st.state[i] == stDown && dc.isOpen() {
			st.state[i] = stBack
			st.st.Down--
			st.st.Back++
			now := r.start + r.dur
			st.backAt[i] = now
			if st.st.FirstBack == 0 || now < st.st.FirstBack {
				st.st.FirstBack = now
			}
			st.st.LastBack = max(st.st.LastBack, now)
		}
		return
	}
	if r.kind != errCounted {
		w.errs.add(r.kind)
	}
	if st.stopped {
		return
	}
	now := monoNow()
	if stormRetryable(r.kind, r.err) && int(r.job.attempt)+1 < st.set.Attempts && now < st.dropAt[i]+int64(st.set.Timeout) {
		heap.Push(h, dialJob{due: now + int64(st.backoff(r.job.attempt)), idx: i, attempt: r.job.attempt + 1})
		return
	}
	w.errs.add(errGaveUp)
	if st.state[i] == stDown {
		st.state[i] = stFailed
		st.st.Down--
		st.st.Failed++
	}
}

// stormStatus returns the storm's counters (nil when not armed).
func (w *worker) stormStatus() *stormStatus {
	st := w.storm.Load()
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.st
	s.Causes = make(map[string]int64, len(st.causes))
	for k, v := range st.causes {
		s.Causes[k] = v
	}
	return &s
}

// stormTimes is stormStatus with the per-device times and the handshake
// histogram of the successful reconnects.
func (w *worker) stormTimes() *stormStatus {
	s := w.stormStatus()
	st := w.storm.Load()
	if s == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	s.DropAt = append([]int64(nil), st.dropAt...)
	s.UpAt = append([]int64(nil), st.upAt...)
	s.BackAt = append([]int64(nil), st.backAt...)
	s.Attempts = append([]int32(nil), st.attempts...)
	s.Handshake = encodeHist(st.handshake)
	return s
}
