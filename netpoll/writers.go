package netpoll

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The writer pool. A drain used to be a goroutine per connection with
// output; a revocation that closes 2,000 sessions at once then started
// 2,000 goroutines, each writing one close frame: their stacks alone
// (16 MiB) pulled a GC cycle into the middle of the revocation, and the
// scheduler interleaved them with the client reads of the same cores.
// Measured on 2 cores (a raw-syscall probe, 2,000 loopback sockets, a
// reader on the same cores): one writer per core delivers the last of
// 2,000 small frames in 13-15 ms, a goroutine per write in 18-20 ms.
//
// So drains are queued on one of a few writer queues (one per core at
// NewServer, round robin), each served by at most one goroutine that
// exists only while its queue has work. A writer never waits on a socket:
// it copies one batch into netpoll's output buffer and writes what the
// socket takes at once (tryFlush). A connection whose socket did not take
// everything continues on a goroutine of its own, which waits in netpoll's
// Flush as every drain did before (that is the rare case: a slow reader),
// so one full socket never holds the close frames of the others back. A
// connection with more to write after its batch goes back to the tail of
// its queue: one busy subscriber does not starve the rest.
//
// A queued connection owns the writer (fDraining) from the moment it is
// queued; fQueued says no writer has picked it up yet, so that the close
// callback need not wait for it (see onClosed).

// writerQueue is one writer's queue.
type writerQueue struct {
	mu      sync.Mutex
	pending []*Conn // guarded by mu
	spare   []*Conn // the other buffer, swapped with pending by the writer
	running bool    // a writer goroutine serves this queue; guarded by mu
	scratch []byte  // the writer's batch buffer (writeBatch); writer goroutine only
	runFn   func()  // run bound once, so that starting a writer allocates nothing
	// ended: when the last writer found the queue empty (written under
	// mu, read by the next writer, which startDrain starts after taking
	// mu; monotonic, so a step of the wall clock cannot fake a busy
	// server). busy: writers started in a row within busyWriterGap of the
	// end of the one before. Writer goroutine only.
	ended time.Time
	busy  int
}

// writerPool is a Server's writer queues.
type writerPool struct {
	qs   []writerQueue
	next atomic.Uint32
}

func (p *writerPool) init() {
	p.qs = make([]writerQueue, max(1, runtime.GOMAXPROCS(0)))
	for i := range p.qs {
		p.qs[i].runFn = p.qs[i].run
	}
}

// startDrain queues c's drain. The caller has set fDraining|fQueued on c
// under c.mu and released it. Never blocks.
func (s *Server) startDrain(c *Conn) {
	p := &s.writers
	q := &p.qs[int(p.next.Add(1))%len(p.qs)]
	q.mu.Lock()
	q.pending = append(q.pending, c)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go q.runFn()
	}
}

// run writes the queue's connections until the queue is empty.
func (q *writerQueue) run() {
	if time.Since(q.ended) < busyWriterGap {
		q.busy++
	} else {
		q.busy = 0
	}
	if q.busy >= busyWriterStarts {
		// Busy: let the reads already runnable go first, so that what
		// they queue joins this batch.
		runtime.Gosched()
	}
	for {
		q.mu.Lock()
		batch := q.pending
		if len(batch) == 0 {
			q.running = false
			q.ended = time.Now()
			q.mu.Unlock()
			return
		}
		q.pending = q.spare[:0]
		q.mu.Unlock()
		if q.scratch == nil {
			q.scratch = make([]byte, writerScratch)
		}
		for i, c := range batch {
			batch[i] = nil
			if c.drainStep(q.scratch) {
				q.requeue(c)
			}
		}
		q.mu.Lock()
		if cap(batch) <= maxWriterSpare {
			q.spare = batch[:0]
		} else {
			q.spare = nil
		}
		q.mu.Unlock()
	}
}

// busyWriterGap, busyWriterStarts: a writer that is the busyWriterStarts-th
// in a row to start within busyWriterGap of the end of the one before is on
// a busy server, and yields once before its first batch. Why: a goroutine
// started with "go" runs next, ahead of its P's run queue, so a writer
// started by the first read of a poller's round wrote that read's messages
// alone, before the other connections' reads queued behind it had run. In
// a fan-in to one subscriber that was a write of ~12 KB per read (17,000 a
// second at 2 M msg/s, docs/PERFORMANCE.md); yielding lets the batch gather
// the whole round (about 100 KB per write, a tenth of the writes). A server
// with a message now and then does not yield: nothing would join, and the
// yield would cost latency (yielding after any one short gap, one writer
// in eight yielded at 1,000 msg/s, where two messages sometimes come close
// together, and the p99 of a 1 → 1 stream rose by 0.1 ms: hence several
// short gaps in a row).
const (
	busyWriterGap    = 200 * time.Microsecond
	busyWriterStarts = 3
)

// writerScratch is the size of a writer's batch buffer: a batch that fits
// goes from there to the socket with one write, taking none of netpoll's
// buffers (a close frame, a burst of small messages). As large as a batch
// (maxBatch), so that the batches a busy writer gathers (busyWriterGap) go
// that way too rather than through netpoll's buffer and a second copy.
// One per writer queue (one per core), allocated at its first batch.
const writerScratch = maxBatch

// maxWriterSpare bounds the spare buffer a writer keeps between bursts: a
// burst of closes may need a large one once, an idle server keeps little.
const maxWriterSpare = 4096

// requeue puts c, still the writer's owner with more to write, back at the
// tail of the queue (the writer serving it is running).
func (q *writerQueue) requeue(c *Conn) {
	c.mu.Lock()
	fl := c.flags.Load()
	if fl&fGone != 0 {
		// Closed meanwhile: the close callback may be waiting for the
		// writer to let go.
		c.flags.Store(fl &^ fDraining)
		c.mu.Unlock()
		return
	}
	c.flags.Store(fl | fQueued)
	c.mu.Unlock()
	q.mu.Lock()
	q.pending = append(q.pending, c)
	q.mu.Unlock()
}

// tryFlusher is netpoll's connection with the non-waiting flush Gatecast
// added to its copy of cloudwego/netpoll (upstream/connection_impl.go).
type tryFlusher interface {
	TryFlush() (done bool, err error)
}
