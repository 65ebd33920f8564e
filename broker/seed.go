package broker

import (
	"slices"
	"unsafe"

	"github.com/gatecast/gatecast/proto"
)

// The seed protocol's adapter: JSON {"tag","message"} text frames over a
// WebSocket, subscriptions fixed at connect, close codes 4001-4005. It
// implements Endpoint over a Conn, the transport.

// Conn is the transport side of a seed session. netpoll.Conn implements
// it. All methods are safe for concurrent use and never block.
type Conn interface {
	// Send queues f and takes ownership of one reference to it, in every case.
	Send(f *proto.Frame) bool
	// Close queues a close frame with code and reason, then drops the link.
	Close(code uint16, reason string)
}

// SeedSession is a seed-protocol session: the core Session (embedded, one
// allocation per connection) and its transport.
type SeedSession struct {
	Session
	conn Conn
	// bsend is conn's backpressure-aware, coalescing send, when the
	// transport has one (netpoll does).
	bsend seedSender
	// dec and pub are used only by the transport's goroutine inside
	// OnMessage; pub is made on the first publish.
	dec proto.SeedDecoder
	pub *Publisher
}

// Connect admits a seed client: it authenticates the secret, checks every
// requested subscription (the Tag header) against the token's grants, takes
// a connection slot and subscribes. On success the returned session
// receives c's messages; on refusal the error is a *Rejection (or a store
// error, for which the caller closes with 1011) and nothing was kept.
func (b *Broker) Connect(c Conn, req ConnectRequest) (*SeedSession, error) {
	if len(req.Secret) == 0 {
		b.metrics.connects[resultBadRequest].Inc()
		return nil, reject(CauseBadRequest, "missing Authorization header")
	}
	if len(req.Tags) == 0 {
		b.metrics.connects[resultBadRequest].Inc()
		return nil, reject(CauseBadRequest, "missing Tag header")
	}
	if req.Protocol == "" {
		req.Protocol = "seed"
	}
	ss := &SeedSession{conn: c}
	ss.bsend, _ = c.(seedSender)
	req.seed = true    // the seed's own tag rule applies too
	req.NoLocal = true // the seed protocol never echoes a publish to its publisher
	if err := b.open(&ss.Session, ss, req); err != nil {
		return nil, err
	}
	return ss, nil
}

// OnMessage handles one client message. Binary messages, invalid JSON, a
// missing tag or message, a wildcard or invalid topic (one over
// Config.MaxTopicBytes or MaxTopicLevels included) and a publish the token
// may not make are dropped and counted; the connection stays open, as the
// seed protocol specifies.
//
// payload is only valid during the call: nothing here keeps it. The topic is
// viewed in place (no copy) because the index does not retain it and the
// frame encoders copy it.
func (ss *SeedSession) OnMessage(text bool, payload []byte) {
	if ss.closed.Load() {
		return
	}
	met := ss.b.metrics
	if ss.pub == nil {
		ss.pub = new(Publisher)
	}
	ss.pub.CountInput(len(payload))
	if !text {
		met.rejected[rejectBinary].Inc()
		return
	}
	// A text message is valid UTF-8: the transport checked it, as RFC 6455
	// requires (netpoll.Session), so it is not checked a second time.
	tag, msg, err := ss.dec.DecodeValid(payload)
	if err != nil {
		met.rejected[rejectInvalid].Inc()
		return
	}
	t := unsafe.String(unsafe.SliceData(tag), len(tag))
	p := ss.pub
	if ss.readEnds && len(payload) <= runHeldBytes {
		m := ss.heldMessage(p, t, len(payload)+len(tag))
		if ss.bsend != nil && ss.bsend.PayloadHeld() {
			m.view(t, tag, payload, msg, ss.dec.Verbatim())
			p.run.views = true
		} else {
			m.fill(t, payload, msg, ss.dec.Verbatim())
		}
		ss.hold(p, m)
		return
	}
	ss.publishRun(p) // what is held goes first
	// One Message for the whole read (OnReadEnd gives it back), reset
	// after each publish: one pool round trip per read, not per message.
	m := p.msg
	if m == nil {
		m = AcquireMessage()
		p.msg = m
	}
	m.Topic = t
	m.Payload = msg
	m.SetJSON()
	if ss.dec.Verbatim() {
		m.seedRaw = payload // seed subscribers get it as it came
	}
	m.pub = p
	ss.Publish(m)
	m.Reset()
}

// OnReadEnd is the transport's report that the messages of one read have
// all been handed to OnMessage: the counts kept meanwhile go to the
// metrics, once per read instead of once per message, and the read's
// Message goes back to its pool.
func (ss *SeedSession) OnReadEnd() {
	if p := ss.pub; p != nil {
		ss.endRun(p)
		p.flush(ss.b)
		if p.msg != nil {
			ReleaseMessage(p.msg)
			p.msg = nil
		}
	}
}

// OnClose is the transport's report that the connection is gone.
func (ss *SeedSession) OnClose() {
	if ss.pub != nil {
		ss.dropViews(ss.pub)
	}
	ss.OnReadEnd()
	ss.Close()
}

// seedSender is a Conn that reports backpressure and coalesces whole
// frames (netpoll.Conn: SendBacklog, SendFrames).
type seedSender interface {
	backlogSender
	// SendFrames copies b, one or more complete frames, into the outbox.
	SendFrames(b []byte) (ok bool, backlog <-chan struct{})
	// SendTextRun queues a run of text messages in order under one
	// lock, as many as are admitted (a prefix); see netpoll.
	SendTextRun(payloads [][]byte) (queued int, backlog <-chan struct{})
	// PayloadHeld reports, during OnMessage, that the payload stays valid
	// until OnReadEnd returns (netpoll.Conn.PayloadHeld).
	PayloadHeld() bool
}

// Deliver queues the message's seed frame, encoded once per message. The
// first recipient of a dispatch takes it by copy (Claim, Encode), into an
// outbox that coalesces a burst into a few buffers: a fan-in's single
// subscriber never needs a refcounted frame per message. Every other seed
// subscriber shares one Frame.
func (ss *SeedSession) Deliver(m *Message, _ Delivery) (int, bool, <-chan struct{}) {
	if ss.bsend != nil && m.Claim() {
		b := m.Encode(EncodingSeed, appendSeed)
		ok, backlog := ss.bsend.SendFrames(b)
		return len(b), ok, backlog
	}
	f := m.Frame(EncodingSeed, appendSeed)
	f.Retain() // the connection's reference, released by it in every case
	if ss.bsend != nil {
		ok, backlog := ss.bsend.SendBacklog(f)
		return len(f.B), ok, backlog
	}
	return len(f.B), ss.conn.Send(f), nil
}

// deliverRun implements runEndpoint: the run's seed frames, queued under
// one lock of the connection. The first recipient of the run takes it by
// copy, as Deliver does with one message (a fan-in's subscriber gets a
// whole run copied into its outbox at once); the others share one Frame
// holding the whole run.
func (ss *SeedSession) deliverRun(ms []*Message, d Delivery, sc *matchScratch) (n, queued int, backlog <-chan struct{}) {
	if ss.bsend == nil {
		return deliverEach(ss, ms, d)
	}
	claim := true
	for _, m := range ms {
		claim = claim && !m.claimed
	}
	if claim {
		for _, m := range ms {
			m.claimed = true
			p := m.seedRaw // the seed frame's payload as it came
			if p == nil {
				p = framePayload(m.Encode(EncodingSeed, appendSeed))
			}
			sc.parts = append(sc.parts, p)
		}
		queued, backlog = ss.bsend.SendTextRun(sc.parts)
		for _, p := range sc.parts[:queued] {
			n += proto.FrameHeaderLen(len(p)) + len(p)
		}
		clear(sc.parts)
		sc.parts = sc.parts[:0]
		return n, queued, backlog
	}
	// Every other seed recipient of the run queues the same bytes: the
	// run's frames, one after the other, made once for all of them into
	// one shared Frame (the dispatch's, sc.runFrame), one outbox entry
	// each. A run is admitted or dropped whole.
	f := sc.runFrame
	if f == nil {
		f = proto.AcquireFrame()
		size := 0
		for _, m := range ms {
			if m.seedRaw != nil {
				size += proto.FrameHeaderLen(len(m.seedRaw)) + len(m.seedRaw)
			} else {
				size += len(m.Frame(EncodingSeed, appendSeed).B)
			}
		}
		f.B = slices.Grow(f.B, size) // at most one allocation, none once pooled frames have grown
		for _, m := range ms {
			if m.seedRaw != nil {
				f.B = proto.AppendSeedFrameVerbatim(f.B, m.seedRaw)
			} else {
				f.B = append(f.B, m.Frame(EncodingSeed, appendSeed).B...)
			}
		}
		sc.runFrame = f
	}
	f.Retain() // the connection's reference, released by it in every case
	ok, backlog := ss.bsend.SendBacklog(f)
	if !ok {
		return 0, 0, nil
	}
	return len(f.B), len(ms), backlog
}

// framePayload returns the payload of f, one unmasked server frame.
func framePayload(f []byte) []byte {
	switch f[1] {
	case 126:
		return f[4:]
	case 127:
		return f[10:]
	}
	return f[2:]
}

// CloseWritten implements CloseWriter when the transport can tell.
func (ss *SeedSession) CloseWritten() bool {
	cw, ok := ss.conn.(CloseWriter)
	return !ok || cw.CloseWritten()
}

// End closes the connection with the seed close code for cause.
func (ss *SeedSession) End(cause Cause, reason string) {
	ss.conn.Close(cause.SeedCode(), closeReason(reason))
}

// appendSeed encodes m as a seed text frame: the payload embedded as JSON
// when it is JSON text, as a JSON string otherwise (docs/protocol-mqtt.md).
func appendSeed(dst []byte, m *Message) []byte {
	if m.seedRaw != nil {
		return proto.AppendSeedFrameVerbatim(dst, m.seedRaw)
	}
	if m.PayloadIsJSON() {
		return proto.AppendSeedFrame(dst, m.Topic, m.Payload)
	}
	return proto.AppendSeedFrameText(dst, m.Topic, m.Payload)
}
