package broker

import (
	"sync"
	"unsafe"

	"github.com/gatecast/gatecast/acl"
)

// Runs: consecutive publishes to one topic, dispatched together.
//
// A device, a gateway or a backend that publishes fast sends many messages
// to one topic in each write, and the broker reads them in one wakeup. Given
// one at a time to dispatch, each costs every subscriber a lock of its
// outbox and a first touch of its session, connection and outbox lines,
// which on a fan-out to thousands are not in the CPU's cache: that was a
// third of the broker's CPU in a 1 → 2,000 fan-out. Held until the read's
// end (or the topic changes) and dispatched as a run, they cost it that
// once per run. The run grows with the load (one message per read when
// publishers are slow, up to runMax when the broker is busy), as a batch
// should.
//
// Each seed subscriber takes a run in one call (runEndpoint): the first
// recipient copies it into its outbox, every other one queues one shared
// Frame that holds the whole run (made once per run), so a run costs a
// subscriber one lock, one outbox entry and one reference.
//
// What stays per message: the topic and grant checks (Session.authorize,
// before a message is held; a message joining its run under the same
// grants object passes as a repeated topic does), the choice of a shared
// group's member, the counts. What a run adds is bounded: runMax messages
// of at most runHeldBytes each, runBytes in all, and at most one read's
// worth of delay. A held message views the transport's read buffer when
// the transport keeps it until the read ends (PayloadHeld), and is copied
// otherwise (a frame assembled across reads, a fragmented message). A run is
// dispatched only while its publisher's session is live and only when the
// grants it was checked against still allow its topic: a revocation or a
// downgrade that completed before the run goes out stops it, as it stops
// the publisher's next message.
//
// Only a transport that reports the end of each read (ConnectRequest.ReadEnds:
// netpoll calls OnReadEnd) lets a session hold publishes; the seed adapter
// is the one that does today.

const (
	// runMax bounds a run's messages (and the scratch a subscriber's view
	// of one needs).
	runMax = 32
	// runHeldBytes: a larger message is not held (it is dispatched at
	// once, after the run before it), so a run's copies stay small.
	runHeldBytes = 4 << 10
	// runBytes bounds a run's topic and payload bytes: a subscriber's
	// outbox lock (which a revocation closing it needs) is held for one
	// run's copy at most, a few microseconds.
	runBytes = 16 << 10
)

// runBuf is one read's run: msgs[:n] are held, in publish order, all to
// the same topic, checked against grants. Its Messages stay in it (reset)
// when it goes back to its pool.
type runBuf struct {
	msgs   [runMax]*Message
	n      int
	bytes  int // topic and payload bytes of msgs[:n]
	grants *acl.Grants
	// views: a message of the run views the transport's read buffer
	// (Message.view), valid only until the read ends.
	views bool
}

var runPool = sync.Pool{New: func() any { return new(runBuf) }}

// runEndpoint is an Endpoint that takes a run of messages in one call
// (SeedSession). deliverRun returns the bytes queued, how many of ms were
// queued (the rest were dropped) and a backlog as Deliver does; sc is the
// dispatcher's scratch, for the endpoint's use during the call.
type runEndpoint interface {
	deliverRun(ms []*Message, d Delivery, sc *matchScratch) (n, queued int, backlog <-chan struct{})
}

// heldMessage returns the Message for p's next held publish, of size
// payload bytes: the run's next slot. The run held so far is dispatched
// first when the publish to topic t cannot join it (another topic, or the
// run is full).
func (s *Session) heldMessage(p *Publisher, t string, size int) *Message {
	r := p.run
	if r == nil {
		r = runPool.Get().(*runBuf)
		p.run = r
	}
	if r.n > 0 && (r.n == runMax || r.bytes+size > runBytes || r.msgs[0].Topic != t) {
		s.publishRun(p)
	}
	m := r.msgs[r.n]
	if m == nil {
		m = new(Message)
		r.msgs[r.n] = m
	}
	return m
}

// hold adds m (from heldMessage, filled) to p's run once it passes the
// publish checks; otherwise it resets it. It reports the checks' answer.
func (s *Session) hold(p *Publisher, m *Message) PublishResult {
	m.pub = p
	r := p.run
	if r.n > 0 && s.token.grants.Load() == r.grants {
		// It joins the run (heldMessage: the same topic), whose first
		// message passed the checks against these very grants: they pass
		// again (as a repeated topic does in authorize).
		p.messagesIn[s.proto]++
		m.from = s
	} else if res := s.authorize(m); res != Published {
		m.Reset()
		return res
	}
	if r.n == 0 {
		r.grants = p.grants // what the topic was checked against
	}
	r.n++
	r.bytes += len(m.Topic) + len(m.Payload) // what queuing it copies
	return Published
}

// publishRun dispatches p's run, if any, then waits out a backlog it
// reported (as Publish does). The run is dropped when the session has
// ended meanwhile, or when the token's grants changed and no longer allow
// its topic (counted as refused).
func (s *Session) publishRun(p *Publisher) {
	r := p.run
	if r == nil || r.n == 0 {
		return
	}
	ms := r.msgs[:r.n]
	var backlog <-chan struct{}
	if !s.closed.Load() {
		if g := s.token.grants.Load(); g == r.grants || g.CanPublish(ms[0].Topic) {
			_, backlog = s.b.dispatchRun(ms, true)
		} else {
			s.b.metrics.rejected[rejectDenied].Add(float64(len(ms)))
		}
	}
	r.reset()
	if backlog != nil {
		s.stall(backlog)
	}
}

// endRun dispatches p's run and gives its buffer back (the read ended).
func (s *Session) endRun(p *Publisher) {
	if p.run == nil {
		return
	}
	s.publishRun(p)
	runPool.Put(p.run)
	p.run = nil
}

// dropViews discards p's run when it views a read buffer: at a close that
// did not come after the read's end (a read cut short by a panic), that
// buffer may be gone. After a read that ended normally the run is empty.
func (s *Session) dropViews(p *Publisher) {
	if r := p.run; r != nil && r.views {
		r.reset()
	}
}

// reset empties the run, its Messages kept for the next.
func (r *runBuf) reset() {
	for _, m := range r.msgs[:r.n] {
		m.Reset()
	}
	r.n, r.bytes, r.views, r.grants = 0, 0, false, nil
}

// fill makes m the seed message payload (tag t, JSON value msg, both views
// of payload) in a copy of its own: payload is only valid during
// OnMessage, and a held message outlives it.
func (m *Message) fill(t string, payload, msg []byte, verbatim bool) {
	m.buf = append(m.buf[:0], payload...)
	raw := m.buf[:len(payload):len(payload)]
	if verbatim {
		m.seedRaw = raw
	}
	if off, ok := within(msg, payload); ok {
		m.Payload = raw[off : off+len(msg)]
	} else {
		start := len(m.buf)
		m.buf = append(m.buf, msg...)
		m.Payload = m.buf[start:]
	}
	start := len(m.buf)
	m.buf = append(m.buf, t...)
	m.Topic = unsafe.String(unsafe.SliceData(m.buf[start:]), len(t))
	m.SetJSON()
}

// view makes m the seed message payload (tag t, JSON value msg) as views
// of payload, which the transport keeps valid until the read ends
// (PayloadHeld): nothing is copied but a tag the decoder unescaped (then t
// views the decoder's buffer, reused by the next message).
func (m *Message) view(t string, tag, payload, msg []byte, verbatim bool) {
	m.Topic = t
	if _, ok := within(tag, payload); !ok {
		m.buf = append(m.buf[:0], t...)
		m.Topic = unsafe.String(unsafe.SliceData(m.buf), len(t))
	}
	m.Payload = msg
	if _, ok := within(msg, payload); !ok {
		start := len(m.buf)
		m.buf = append(m.buf, msg...)
		m.Payload = m.buf[start:]
	}
	m.SetJSON()
	if verbatim {
		m.seedRaw = payload
	}
}

// within reports where sub starts in whole when it is a part of it.
func within(sub, whole []byte) (int, bool) {
	if len(sub) == 0 || len(whole) == 0 {
		return 0, len(sub) == 0
	}
	off := uintptr(unsafe.Pointer(unsafe.SliceData(sub))) - uintptr(unsafe.Pointer(unsafe.SliceData(whole)))
	if off > uintptr(len(whole)) || uintptr(len(sub)) > uintptr(len(whole))-off {
		return 0, false
	}
	return int(off), true
}
