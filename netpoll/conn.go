package netpoll

import (
	"context"
	"encoding/binary"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	cwnetpoll "github.com/cloudwego/netpoll"

	"github.com/gatecast/gatecast/proto"
)

// Conn flags. Written only under Conn.mu (so read-modify-write is safe),
// read with atomic loads from anywhere.
const (
	fHold         uint32 = 1 << iota // the event goroutine owns the writer (handshake, OpenStream); no drain may start
	fDraining                        // a drain owns the writer: queued for a writer (fQueued), run by one, or on a goroutine of its own
	fUpgraded                        // a Session is open: the WebSocket handshake succeeded, or OpenStream ran
	fEstablished                     // the handshake timeout no longer applies: set with fUpgraded (WebSocket), by Established (stream)
	fStream                          // a raw byte stream (ServeStream): no WebSocket framing, no pings, no close frame; fixed at accept
	fRejected                        // an HTTP error was sent; waiting for the peer's EOF
	fClosing                         // our close is queued: Send refuses, OnMessage is no longer called
	fCloseWritten                    // the close frame (stream: the end of output) was handed to the writer
	fCloseFlushed                    // the close frame reached the socket (stream: everything did, and the write side is shut)
	fPeerClosed                      // the peer's close frame arrived
	fGone                            // netpoll closed the connection; the close callback ran
	fJoin                            // the Session is a ByteStreamSession: consecutive binary messages are joined; set by handOver
	fQueued                          // with fDraining: the drain waits in a writer queue, no writer has picked it up (writers.go)
)

// Read modes, owned by the event goroutine. The order matters: from
// modeSkim on, the connection is closing (onRequest counts closingRead).
const (
	modeHandshake  uint8 = iota // WebSocket: waiting for the upgrade request
	modeFrames                  // WebSocket: frames to the Session
	modeStreamOpen              // stream: no Session yet (OpenStream runs at the first bytes)
	modeStream                  // stream: raw chunks to the Session
	modeSkim                    // after a protocol error: frames are skipped, watching for the peer's close
	modeDiscard                 // peer close, HTTP rejection, stream closing: input is skipped
)

// netpollPageSize is netpoll's page size: on Flush, netpoll releases an
// output node larger than this as soon as it is sent, while it keeps a
// smaller one as the connection's tail for its whole life; on Release, it
// drops an input node larger than this once it is read (see tuneNetpoll).
const netpollPageSize = 8 << 10

// mallocBatch returns n writable bytes in netpoll's output buffer, always in
// a node larger than netpollPageSize (a pooled 16 KiB buffer for small
// batches, trimmed to n with MallocAck), so that netpoll frees the node
// right after sending it and an idle connection keeps no output buffer. It
// must be called once per Flush: MallocAck counts every byte allocated
// since the last Flush.
func mallocBatch(w cwnetpoll.Writer, n int) ([]byte, error) {
	if n > netpollPageSize {
		return w.Malloc(n)
	}
	buf, err := w.Malloc(netpollPageSize + 1)
	if err != nil {
		return nil, err
	}
	if err := w.MallocAck(n); err != nil {
		return nil, err
	}
	return buf[:n:n], nil
}

// writeNow copies p into netpoll's output buffer and flushes it. Only the
// writer's owner may call it (the event goroutine under fHold).
func writeNow(w cwnetpoll.Writer, p []byte) error {
	buf, err := mallocBatch(w, len(p))
	if err != nil {
		return err
	}
	copy(buf, p)
	return w.Flush()
}

// shutdownWrite half-closes nc: the peer reads EOF once it has read what was
// written, and can still send (its close, or the rest of its input). Only
// the writer's owner may call it, so that netpoll cannot close (and the
// kernel reuse) the fd meanwhile.
func shutdownWrite(nc cwnetpoll.Connection) {
	if fd, ok := nc.(interface{ Fd() int }); ok {
		_ = syscall.Shutdown(fd.Fd(), syscall.SHUT_WR)
	}
}

// Conn is one client connection: a WebSocket, or a raw byte stream
// (Stream). Its methods are safe for concurrent use from any goroutine and
// never block, except where a method says otherwise.
type Conn struct {
	// The first 64 bytes are what queuing a frame touches (SendBacklog,
	// SendFrames: admitOutput, pushEntry, queuedUnlock), so that a fan-out
	// to thousands of connections, whose Conns are not in the CPU's cache,
	// misses one cache line per connection instead of four. A Conn is a
	// 320-byte allocation (5 × 64), so it starts on a line.
	// TestConnSendFieldsShareALine keeps them there.
	srv         *Server
	mu          sync.Mutex
	head, tail  *outSegment   // outbox, guarded by mu
	queued      int32         // frames in the outbox, guarded by mu
	flags       atomic.Uint32 // f* bits
	queuedBytes int           // bytes charged for the frames in the outbox (frameCharge each), guarded by mu
	inflight    int           // bytes charged for the batch the drain is writing, guarded by mu
	// credit is what this connection has charged to Server.outboxTotal
	// ahead of use (pushEntry), given back when its pending output is
	// back to zero. Guarded by mu.
	credit int

	nc   cwnetpoll.Connection
	sess Session // set on the event goroutine by Open; read there and by the close callback

	prev, next *Conn // registry shard list, guarded by the shard's mutex

	rd        frameReader // event goroutine only
	mode      uint8       // event goroutine only
	shard     uint8
	handler   uint8  // stream connections: 1 + index of their StreamHandler in Server.streams; fixed at accept
	heldPause bool   // reads paused for the process-wide input limit, guarded by Server.inputMu
	pauses    uint32 // netpoll's count of input-limit pauses when last looked; event goroutine only
	held      int    // this connection's share of Server.inputHeld; event goroutine (and the close callback)
	msgCount  uint32 // messages delivered during the current OnRequest; event goroutine only
	// closingRead counts input bytes skipped since the connection started
	// closing (or was refused), saturating just past closeReadAllowance;
	// past closeReadAllowance the TCP connection is dropped. Event
	// goroutine only.
	closingRead int32
	rate        inboundRate // event goroutine only

	refusals atomic.Uint32 // frames refused at a limit, ever: the sweeper tells a continuing overflow from a past one
	// idleMs is the per-connection idle timeout in milliseconds
	// (SetIdleTimeout), 0 for the server's; read by the sweeper. Next to
	// refusals, so neither leaves padding and the Conn stays 320 bytes.
	idleMs atomic.Uint32
	// stall is open while the connection is backlogged (pending output past
	// OutboxSoftLimit, not overflowing): senders wait on it (Backlog). It
	// is closed, and set to nil, when the backlog drains, when the
	// connection overflows (a stuck consumer must not slow its senders for
	// ever) and when the connection is gone. Guarded by mu.
	stall chan struct{}
	// overflowAt is the server clock when a frame was first refused at the
	// hard limit (or the process-wide limit) since the outbox was last under
	// its soft limit; 0 when not overflowing. Written under mu, read by the
	// sweeper (slow-consumer policy after WriteTimeout).
	overflowAt    atomic.Int64
	pending       atomic.Int64 // queuedBytes+inflight, mirrored for the sweeper's gauge
	sweptRefusals uint32       // refusals at the previous sweep; sweeper only
	closeCode     uint16       // guarded by mu; fixed once fClosing is set
	cause         closeCause   // guarded by mu
	refused       bool         // a frame was refused since the drain's last batch, guarded by mu
	// closeReason is the close reason, nil for none (a pointer: most
	// connections never close with one, and the Conn stays in its size
	// class). Guarded by mu; fixed once fClosing is set.
	closeReason *string

	lastRead   atomic.Int64 // server clock of the last input (accept time before any)
	phaseAt    atomic.Int64 // server clock of accept (read precisely: gatecast_ws_handshake_seconds measures from it) or of the close/HTTP error flush
	flushStart atomic.Int64 // server clock when the running Flush started, 0 when none
	lastPing   int64        // sweeper only
}

// outSegment is a block of the outbox queue. Two words plus 14 frames fill
// a 128-byte allocation exactly (so it starts on a cache line); segments are
// pooled. The header comes first: a connection's outbox usually holds a
// frame or two between drains, and with n and the first six entries on one
// line, queuing to a connection out of the CPU's cache (fan-out) misses one
// line of its segment, not two.
type outSegment struct {
	n int32
	// chunks marks the entries (bit i: frames[i]) that are chunks, not
	// frames: buffers of the outbox's own into which SendBytes copied
	// bytes (see chunk.go).
	chunks uint16
	// framed marks the chunks that hold whole frames already (SendFrames):
	// on a WebSocket they are written without a message header of their own.
	framed uint16
	next   *outSegment
	frames [14]*proto.Frame
}

var segmentPool = sync.Pool{New: func() any { return new(outSegment) }}

// frameReleased, when set by tests, observes every proto.Frame reference
// this package releases, so tests can count releases independently of the
// frame pool. Never set in production.
var frameReleased func(*proto.Frame)

func releaseFrame(f *proto.Frame) {
	if h := frameReleased; h != nil {
		h(f)
	}
	f.Release()
}

// push appends f to the outbox; c.mu must be held.
func (c *Conn) push(f *proto.Frame) {
	c.pushEntry(f, false)
}

// pushEntry appends a frame, or a chunk when chunk is set, to the outbox;
// c.mu must be held.
func (c *Conn) pushEntry(f *proto.Frame, chunk bool) {
	t := c.tail
	if t == nil || int(t.n) == len(t.frames) {
		s := segmentPool.Get().(*outSegment)
		if t == nil {
			c.head = s
		} else {
			t.next = s
		}
		c.tail, t = s, s
	}
	n := frameCharge(f)
	total := n
	if chunk {
		t.chunks |= 1 << t.n
		// The process total counts a chunk's whole buffer from the start,
		// so that appending to it needs no atomic add; what it has not
		// filled is given back when it is freed (releaseSegments).
		total = cap(f.B) + frameOverhead
	}
	t.frames[t.n] = f
	t.n++
	c.queued++
	c.queuedBytes += n
	// Both counters below are shared with other goroutines, and an atomic
	// store or add is a full barrier: one each per queued frame was about a
	// tenth of the broker's CPU in a 1 → 2,000 fan-out. So the sweeper's
	// mirror is refreshed only when it is pendingStep behind (settleLocked
	// stores the exact figure), and the process total is charged in blocks
	// of creditBlock: it may count up to creditBlock more than is queued per
	// connection with output pending, never less.
	if pend := int64(c.queuedBytes + c.inflight); pend-c.pending.Load() >= pendingStep {
		c.pending.Store(pend)
	}
	if c.credit >= total {
		c.credit -= total
	} else {
		c.srv.outboxTotal.Add(int64(total - c.credit + creditBlock))
		c.credit = creditBlock
	}
}

const (
	pendingStep = 4 << 10 // bytes the sweeper's pending mirror may lag behind
	creditBlock = 1 << 10 // bytes charged to the process total ahead of use
)

// releaseSegments releases every frame (and frees every chunk) of a
// detached outbox chain and returns its segments to the pool. The part of
// each chunk's buffer it did not fill leaves the process total here (see
// pushEntry); the rest of the chain's charge is its caller's to give back.
func (c *Conn) releaseSegments(s *outSegment) {
	slack := 0
	for s != nil {
		next := s.next
		for i := range s.n {
			if s.chunks&(1<<i) != 0 {
				slack += cap(s.frames[i].B) - len(s.frames[i].B)
				freeChunk(s.frames[i])
			} else {
				releaseFrame(s.frames[i])
			}
			s.frames[i] = nil
		}
		s.n, s.chunks, s.framed, s.next = 0, 0, 0, nil
		segmentPool.Put(s)
		s = next
	}
	if slack != 0 {
		c.srv.outboxTotal.Add(int64(-slack))
	}
}

// Send queues f for writing and takes ownership of one reference of it: the
// caller Retains first if it keeps its own. f.B is written as it is: one or
// more complete WebSocket frames (AppendFrame) on a WebSocket connection, raw
// bytes of the protocol above on a stream (Stream). It never blocks. It returns
// false, having Released f, when the connection is closing or gone, or when
// the outbox is full (then the slow-consumer policy applies). A frame that
// was queued is Released once written, or by the close path if the
// connection dies first.
func (c *Conn) Send(f *proto.Frame) bool {
	ok, _ := c.SendBacklog(f)
	return ok
}

// SendBacklog is Send that also reports backpressure: backlog is non-nil
// when, after this frame, the connection's pending output is past its soft
// limit; it is closed once the backlog drains (or the connection
// overflows or goes). A sender that can wait — a publisher's goroutine —
// waits on it for a bounded time before sending more (see outbox.go).
func (c *Conn) SendBacklog(f *proto.Frame) (ok bool, backlog <-chan struct{}) {
	c.mu.Lock()
	fl := c.flags.Load()
	if fl&(fClosing|fGone) != 0 {
		c.mu.Unlock()
		releaseFrame(f)
		return false, nil
	}
	if reason := c.admitOutput(frameCharge(f)); reason != nil {
		c.mu.Unlock()
		releaseFrame(f)
		reason.Inc()
		return false, nil
	}
	c.push(f)
	return true, c.queuedUnlock(fl)
}

// queuedUnlock ends a Send that queued output: it reads the backlog signal,
// marks a drain started when none runs or is held (fl is the flags read
// under c.mu at the start), unlocks c.mu and starts that drain.
func (c *Conn) queuedUnlock(fl uint32) (backlog <-chan struct{}) {
	backlog = c.backlogLocked()
	start := fl&(fDraining|fHold) == 0
	if start {
		c.flags.Store(fl | fDraining | fQueued)
	}
	c.mu.Unlock()
	if start {
		c.srv.startDrain(c)
	}
	return backlog
}

// sendControl queues a ping or pong of our own. Unlike Send, a full outbox
// drops it silently: the policy is for application frames, and a pong may
// answer only the latest ping anyway.
func (c *Conn) sendControl(f *proto.Frame) {
	c.mu.Lock()
	fl := c.flags.Load()
	if fl&(fClosing|fGone) != 0 || c.queued > 0 && c.queuedBytes+c.inflight+frameCharge(f) > c.srv.cfg.OutboxLimit {
		c.mu.Unlock()
		releaseFrame(f)
		return
	}
	c.push(f)
	start := fl&(fDraining|fHold) == 0
	if start {
		c.flags.Store(fl | fDraining | fQueued)
	}
	c.mu.Unlock()
	if start {
		c.srv.startDrain(c)
	}
}

// Close queues a close frame with code and reason after the frames already
// queued, stops accepting Sends and stops delivering OnMessage. The TCP
// connection is dropped once the peer answers with its close frame (or EOF),
// or CloseTimeout after our close frame was flushed. Idempotent: only the
// first call's code and reason are sent. Code 0 sends a close frame without
// a body. A reason longer than 123 bytes is truncated.
//
// On a stream connection (Stream) no close frame exists: code and reason are
// only recorded. Everything queued is written, then the write side of the
// TCP connection is shut (the peer reads EOF after the last byte), input is
// skipped, and the connection is closed at the peer's EOF or CloseTimeout
// after the flush.
func (c *Conn) Close(code uint16, reason string) {
	c.closeWith(code, reason, causeServer)
}

// CloseAfter is Close with a last frame: final (for instance a protocol's
// disconnect message, encoded for the connection's framing — a complete
// WebSocket frame, or raw bytes on a stream) is written after every frame
// already queued and before the close frame (stream: before the write side
// is shut). It is queued whatever the outbox limits, even at the hard
// limit: there is at most one per connection, so it stays bounded.
// CloseAfter takes ownership of one reference of final in every case: when
// the connection is already closing or gone, final is Released unwritten.
// A nil final makes it Close.
func (c *Conn) CloseAfter(final *proto.Frame, code uint16, reason string) {
	if final == nil {
		c.closeWith(code, reason, causeServer)
		return
	}
	c.mu.Lock()
	if c.flags.Load()&(fClosing|fGone) != 0 {
		c.mu.Unlock()
		releaseFrame(final)
		return
	}
	c.push(final) // past admitOutput on purpose: the last frame, and only one
	start := c.beginCloseLocked(code, reason, causeServer)
	c.mu.Unlock()
	if start {
		c.srv.startDrain(c)
	}
}

func (c *Conn) closeWith(code uint16, reason string, cause closeCause) {
	c.mu.Lock()
	start := c.beginCloseLocked(code, reason, cause)
	c.mu.Unlock()
	if start {
		c.srv.startDrain(c)
	}
}

// beginCloseLocked records the close and reports whether the caller must
// start a drain to write it. c.mu must be held.
func (c *Conn) beginCloseLocked(code uint16, reason string, cause closeCause) (startDrain bool) {
	fl := c.flags.Load()
	if fl&(fClosing|fGone) != 0 {
		return false
	}
	c.closeCode = code
	if reason != "" {
		r := truncateReason(reason)
		c.closeReason = &r
	}
	if c.cause == causeNone {
		c.cause = cause
	}
	fl |= fClosing
	startDrain = fl&(fDraining|fHold) == 0
	if startDrain {
		fl |= fDraining | fQueued
	}
	c.flags.Store(fl)
	return startDrain
}

// CloseWritten reports whether the close Close or CloseAfter queued has
// reached the socket — on a WebSocket the close frame, on a stream the last
// byte before the half-close — or the connection is gone. Safe from any
// goroutine: one atomic load.
func (c *Conn) CloseWritten() bool {
	return c.flags.Load()&(fCloseFlushed|fGone) != 0
}

// Stream reports whether c is a raw byte stream (accepted by ServeStream):
// Send writes frames' bytes as they are, and the Session receives raw
// chunks. Otherwise c is a WebSocket connection.
func (c *Conn) Stream() bool { return c.flags.Load()&fStream != 0 }

// Established ends a stream connection's handshake phase: until it is
// called, HandshakeTimeout (counted from accept) closes the connection;
// from then on the idle timeout applies. A stream's Session calls it once
// the protocol above has accepted the client (for MQTT, after a successful
// CONNECT). WebSocket connections are established by their upgrade, so for
// them it does nothing. Safe from any goroutine; idempotent.
func (c *Conn) Established() {
	if c.flags.Load()&fEstablished != 0 {
		return
	}
	c.lastRead.Store(c.srv.now()) // the idle timeout counts from here at the latest
	c.mu.Lock()
	c.flags.Store(c.flags.Load() | fEstablished)
	c.mu.Unlock()
}

// SetIdleTimeout overrides Config.IdleTimeout for this connection: once
// established, it is closed when it has sent nothing for d (for a stream,
// the keep alive of the protocol above, e.g. MQTT's × 1.5). d <= 0 restores
// the server's setting. With an override the sweeper sends no WebSocket
// pings to the connection (the protocol above has its own keep alive, and a
// pong would count as input); streams never get pings. The timeout is
// enforced at the sweeper's granularity (a quarter of the shortest
// configured timeout, at most 1 s) and in whole milliseconds, up to about
// 49 days. One atomic store: cheap, and safe from any goroutine.
func (c *Conn) SetIdleTimeout(d time.Duration) {
	var ms uint32
	if d > 0 {
		ms = uint32(min((d+time.Millisecond-1)/time.Millisecond, math.MaxUint32))
	}
	c.idleMs.Store(ms)
}

// AdmitInbound takes one token of the connection's inbound rate limit
// (Config.MaxInboundRate) for a message its Session found in a stream's
// input: netpoll sees bytes there, not messages, so the Session asks, once
// per message (for MQTT, per control packet). It returns false when the
// message must be dropped (counted in gatecast_ws_inbound_dropped_total); a
// connection still over the rate InboundRateGrace after its first drop is
// closed, on a stream by a TCP close after what is queued. Admitted
// messages count in gatecast_ws_messages_received_total. On a WebSocket
// connection netpoll already took the token when the message arrived,
// before OnMessage, so AdmitInbound takes none and reports true. Event
// goroutine only (call it from OnMessage).
func (c *Conn) AdmitInbound() bool {
	if c.flags.Load()&fStream == 0 {
		return true
	}
	if !c.admitInbound() {
		return false
	}
	c.msgCount++
	return true
}

// RemoteAddr is the peer's address ("ip:port").
func (c *Conn) RemoteAddr() string {
	if a := c.nc.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// dropTCP closes the TCP connection now, recording cause if none was.
// netpoll then runs the close callback (onClosed). Safe from any goroutine
// that does not own the writer.
func (c *Conn) dropTCP(cause closeCause) {
	c.mu.Lock()
	if c.cause == causeNone {
		c.cause = cause
	}
	c.mu.Unlock()
	_ = c.nc.Close()
}

// drain writes the outbox until it is empty, waiting in Flush whenever the
// socket is full. It runs on a goroutine of its own (a drain a writer
// handed off, see writers.go) and is the only writer of netpoll's output
// buffer while fDraining is set.
func (c *Conn) drain() {
	for c.drainStep(nil) {
	}
}

// drainStep writes one batch of the outbox (and the close frame after the
// last one) and reports whether c still owns the writer with more to
// write. With scratch (a writer of the pool), it waits for nothing: when the
// socket does not take the whole batch at once, a goroutine of its own
// finishes the flush and continues the drain, and drainStep reports false.
func (c *Conn) drainStep(scratch []byte) (again bool) {
	c.mu.Lock()
	fl := c.flags.Load() &^ fQueued
	head, batch := c.detachLocked()
	c.inflight = batch // still pending until written: backpressure holds
	// The close goes after the last queued frame: only with the batch
	// that empties the outbox (Send refuses once closing, so nothing
	// can be queued after it).
	writeClose := fl&(fClosing|fCloseWritten) == fClosing && c.head == nil
	if fl&fGone != 0 || (head == nil && !writeClose) {
		c.wroteLocked(batch)
		c.flags.Store(fl &^ fDraining)
		c.mu.Unlock()
		c.releaseSegments(head)
		return false
	}
	if writeClose {
		fl |= fCloseWritten
	}
	c.flags.Store(fl)
	code, reason := c.closeCode, ""
	if c.closeReason != nil {
		reason = *c.closeReason
	}
	c.mu.Unlock()

	w := c.nc.Writer()
	stream := fl&fStream != 0
	pending, err := c.writeBatch(w, head, !stream, writeClose && !stream, code, reason, scratch)
	if pending != 0 {
		go func() {
			err := w.Flush()
			c.flushStart.Store(0)
			if err == nil {
				c.srv.m.bytesOut.Add(float64(pending))
			}
			if c.wrote(batch, writeClose, stream, err) {
				c.drain()
			}
		}()
		return false
	}
	return c.wrote(batch, writeClose, stream, err)
}

// wrote ends a batch drainStep wrote (err: its flush's error) and reports
// whether c still owns the writer with more to write.
func (c *Conn) wrote(batch int, wroteClose, stream bool, err error) (again bool) {
	if err == nil && wroteClose && stream {
		// Everything is out: the peer reads EOF after the last byte.
		// Still the writer's owner (fDraining), so netpoll cannot have
		// closed the fd (onClosed waits for us).
		shutdownWrite(c.nc)
	}
	c.mu.Lock()
	c.wroteLocked(batch)
	if err != nil {
		c.flags.Store(c.flags.Load() &^ fDraining)
		c.mu.Unlock()
		c.dropTCP(causePeer)
		return false
	}
	if wroteClose {
		// Nothing can be queued after the close frame: the drain ends.
		c.phaseAt.Store(c.srv.now())
		fl := c.flags.Load() | fCloseFlushed
		c.flags.Store(fl &^ fDraining)
		c.mu.Unlock()
		if fl&fPeerClosed != 0 {
			// Close handshake complete: the peer sent its close first
			// and has nothing more to send.
			_ = c.nc.Close()
		}
		return false
	}
	c.mu.Unlock()
	return true
}

// maxBatch bounds the bytes one Flush writes, so that a slow reader's
// flushes keep completing (WriteTimeout measures one flush) and a batch
// never pins the whole outbox in netpoll's buffer at once.
const maxBatch = 256 << 10

// detachLocked takes whole segments off the head of the outbox, up to about
// maxBatch bytes (at least one segment), and returns them with their charge.
// c.mu must be held.
func (c *Conn) detachLocked() (*outSegment, int) {
	head := c.head
	if head == nil || c.queuedBytes <= maxBatch {
		// The usual case: everything, in O(1).
		charge := c.queuedBytes
		c.head, c.tail, c.queued, c.queuedBytes = nil, nil, 0, 0
		return head, charge
	}
	last, charge, frames := c.firstBatchLocked()
	c.head = last.next
	last.next = nil
	if c.head == nil {
		c.tail = nil
	}
	c.queued -= frames
	c.queuedBytes -= charge
	return head, charge
}

// firstBatchLocked measures the whole segments at the head of a non-empty
// outbox that make up about maxBatch bytes (at least one segment): their
// last segment, charge and frame count. c.mu must be held.
func (c *Conn) firstBatchLocked() (last *outSegment, charge int, frames int32) {
	last = c.head
	for seg := c.head; seg != nil; seg = seg.next {
		segCharge := 0
		for _, f := range seg.frames[:seg.n] {
			segCharge += frameCharge(f)
		}
		if seg != c.head && charge+segCharge > maxBatch {
			break
		}
		charge += segCharge
		frames += seg.n
		last = seg
	}
	return last, charge, frames
}

// closeSlow closes a slow consumer (the CloseSlow policy) promptly: of what
// it has queued, only about one batch is kept ahead of the close frame, the
// rest is released unwritten (it may never read it).
func (c *Conn) closeSlow() {
	c.mu.Lock()
	var rest *outSegment
	if c.flags.Load()&(fClosing|fGone) == 0 && c.head != nil && c.queuedBytes > maxBatch {
		last, charge, frames := c.firstBatchLocked()
		rest, last.next, c.tail = last.next, nil, last
		c.srv.outboxTotal.Add(int64(charge - c.queuedBytes))
		c.queued, c.queuedBytes = frames, charge
		c.settleLocked(false)
	}
	start := c.beginCloseLocked(1008, "slow consumer", causeServer)
	c.mu.Unlock()
	c.releaseSegments(rest)
	if start {
		c.srv.startDrain(c)
	}
}

// writeBatch writes a detached outbox chain (and the close frame), releasing
// each frame once it is copied. On a WebSocket each chunk goes out as one
// binary message: a frame header is written in front of its bytes.
//
// With scratch nil (a drain on a goroutine of its own), the batch is copied
// into netpoll's output buffer and flushed once, waiting while the socket
// is full. With scratch (a writer of the pool, writers.go), nothing waits:
// a batch that fits is copied there and written to the socket at once, and
// a larger one is copied into netpoll's buffer and flushed with TryFlush.
// Whatever the socket did not take is left in netpoll's output buffer:
// pending, when not zero, is the batch's size and tells the caller to
// Flush (flushStart stays set until it does).
func (c *Conn) writeBatch(w cwnetpoll.Writer, head *outSegment, ws, writeClose bool, code uint16, reason string, scratch []byte) (pending int, err error) {
	total := 0
	for s := head; s != nil; s = s.next {
		for i, f := range s.frames[:s.n] {
			total += len(f.B)
			if ws && (s.chunks&^s.framed)&(1<<i) != 0 {
				total += frameHeaderLen(len(f.B))
			}
		}
	}
	var closeBuf [2 + maxControlPayload]byte
	var closeFrame []byte
	if writeClose {
		closeFrame = appendCloseFrame(closeBuf[:0], code, reason)
		total += len(closeFrame)
	}
	if total == 0 {
		c.releaseSegments(head)
		return 0, nil
	}
	if fd, ok := c.nc.(interface{ Fd() int }); ok && total <= len(scratch) {
		// Straight to the socket: netpoll's output buffer is empty (every
		// batch before this one was flushed whole), so no byte can be
		// overtaken, and no buffer of netpoll's is taken for it.
		buf := scratch[:total]
		c.fillBatch(buf, head, ws, closeFrame)
		c.releaseSegments(head)
		c.flushStart.Store(c.srv.now())
		n, err := writeSome(fd.Fd(), buf)
		if err != nil {
			c.flushStart.Store(0)
			return 0, err
		}
		if n == total {
			c.flushStart.Store(0)
			c.srv.m.bytesOut.Add(float64(total))
			return 0, nil
		}
		rest, err := mallocBatch(w, total-n)
		if err != nil {
			c.flushStart.Store(0)
			return 0, err
		}
		copy(rest, buf[n:])
		return total, nil
	}
	buf, err := mallocBatch(w, total)
	if err != nil {
		c.releaseSegments(head)
		return 0, err
	}
	c.fillBatch(buf, head, ws, closeFrame)
	c.releaseSegments(head)
	c.flushStart.Store(c.srv.now())
	if tf, ok := w.(tryFlusher); ok && scratch != nil {
		var done bool
		done, err = tf.TryFlush()
		if err == nil && !done {
			return total, nil
		}
	} else {
		err = w.Flush()
	}
	c.flushStart.Store(0)
	if err == nil {
		c.srv.m.bytesOut.Add(float64(total))
	}
	return 0, err
}

// fillBatch copies a detached outbox chain and the close frame into buf,
// exactly their size (writeBatch).
func (c *Conn) fillBatch(buf []byte, head *outSegment, ws bool, closeFrame []byte) {
	off := 0
	for s := head; s != nil; s = s.next {
		for i, f := range s.frames[:s.n] {
			if ws && (s.chunks&^s.framed)&(1<<i) != 0 {
				off += len(appendFrameHeader(buf[off:off], opBinary, len(f.B)))
			}
			off += copy(buf[off:], f.B)
		}
	}
	copy(buf[off:], closeFrame)
}

// writeSome writes what the non-blocking socket fd takes of p now: a full
// socket is n < len(p) and no error.
func writeSome(fd int, p []byte) (n int, err error) {
	for n < len(p) {
		m, err := rawWrite(fd, p[n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return n, nil
		case err != nil:
			return n, err
		case m == 0:
			return n, nil
		}
		n += m
	}
	return n, nil
}

// rawWrite is write(2) on a non-blocking socket, made as a raw system call
// (as netpoll makes its own readv and sendmsg): the call never waits, so
// it need not tell the scheduler, and telling it cost. syscall.Write
// enters the scheduler's system-call state, and the first to do so while
// sysmon sleeps because every P is idle wakes it: on a broker with one P
// receiving a message now and then, that was a thread wakeup per message,
// and sysmon's sleep again after it, on the same core as the write (a
// fifth of the broker's CPU in a 1 → 1 stream at 1,000 msg/s,
// docs/PERFORMANCE.md). Busy, a long write (a 256 KiB batch) could also
// have its P handed to another thread by sysmon while it ran. p is not
// empty.
func rawWrite(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	runtime.KeepAlive(p)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// onClosed is netpoll's close callback. netpoll runs it exactly once, never
// concurrently with OnRequest and after the last one, and before it frees
// the connection's buffers and closes the fd.
func (c *Conn) onClosed(cwnetpoll.Connection) error {
	c.mu.Lock()
	fl := c.flags.Load()
	if fl&fGone != 0 {
		c.mu.Unlock()
		return nil
	}
	c.flags.Store(fl | fGone)
	head := c.head
	c.srv.outboxTotal.Add(int64(-c.queuedBytes - c.credit))
	c.head, c.tail, c.queued, c.queuedBytes, c.credit = nil, nil, 0, 0, 0
	c.settleLocked(true) // releases senders waiting on the backlog
	cause := c.cause
	c.mu.Unlock()
	// A running drain may be copying into netpoll's output buffer, which
	// netpoll recycles right after this callback: wait for it to let go. It
	// does promptly, since the connection is closed: Flush returns at once
	// and the drain sees fGone. A drain still in a writer queue (fQueued)
	// will see fGone before it touches the buffer: no wait for it.
	if fl&fQueued == 0 {
		for c.flags.Load()&fDraining != 0 {
			runtime.Gosched()
		}
	}
	c.releaseSegments(head)
	c.rd.reset()
	s := c.srv
	s.inputHeld.Add(int64(-c.held))
	c.held = 0
	s.forgetHeld(c) // before netpoll frees (and may reuse) the connection's poll operator
	s.reg.remove(c)
	defer c.recoverHandler("OnClose")
	if fl&fUpgraded != 0 {
		s.m.connections[transportOf(fl)].Dec()
		s.wsConns.Add(-1)
		s.m.closes[cause].Inc()
		if c.sess != nil {
			c.sess.OnClose()
		}
	} else if cause == causeHandshakeTimeout {
		s.m.closes[cause].Inc()
	}
	return nil
}

// PayloadHeld reports, during Session.OnMessage on a WebSocket connection,
// whether the message's payload stays valid until the read ends (after the
// Session's OnReadEnd returns), not only during the call: it then views
// the connection's read buffer, which is released after the read, rather
// than a buffer reused for the next message (a frame that came in pieces,
// a fragmented message). A Session may keep such a payload until its
// OnReadEnd instead of copying it. Event goroutine only.
func (c *Conn) PayloadHeld() bool { return c.rd.held }

// onMessage implements frameSink: deliver a message unless closing or over
// the inbound rate.
func (c *Conn) onMessage(text bool, payload []byte) {
	if c.flags.Load()&fClosing != 0 || c.sess == nil || !c.admitInbound() {
		return
	}
	c.msgCount++
	c.sess.OnMessage(text, payload)
}

// admitJoined implements frameSink: admit one binary message that will be
// delivered joined to its neighbours (onJoined).
func (c *Conn) admitJoined() bool {
	if c.flags.Load()&fClosing != 0 || c.sess == nil || !c.admitInbound() {
		return false
	}
	c.msgCount++
	return true
}

// onJoined implements frameSink: deliver admitted binary messages, joined.
func (c *Conn) onJoined(payload []byte) {
	if c.flags.Load()&fClosing != 0 || c.sess == nil {
		return
	}
	c.sess.OnMessage(false, payload)
}

// onControl implements frameSink. Pings and pongs count against the
// inbound rate (a ping flood would otherwise make us write a pong for
// each); the close frame never does.
func (c *Conn) onControl(op byte, payload []byte) (stop bool) {
	if op != opClose && !c.admitInbound() {
		return false
	}
	switch op {
	case opPing:
		if c.flags.Load()&fClosing == 0 {
			f := proto.AcquireFrame()
			f.B = appendFrame(f.B[:0], opPong, payload)
			c.sendControl(f)
		}
	case opClose:
		c.peerClose(payload)
		return true
	}
	// A pong only proves liveness, already recorded by OnRequest.
	return false
}

// peerClose handles the peer's close frame: echo it (same code when valid,
// which the frame reader checked) unless we already sent ours, then drop TCP
// once our close frame is flushed.
func (c *Conn) peerClose(payload []byte) {
	var code uint16
	if len(payload) >= 2 {
		code = binary.BigEndian.Uint16(payload)
	}
	c.mu.Lock()
	fl := c.flags.Load() | fPeerClosed
	c.flags.Store(fl)
	if fl&fClosing == 0 {
		start := c.beginCloseLocked(code, "", causePeer)
		c.mu.Unlock()
		if start {
			c.srv.startDrain(c)
		}
		return
	}
	c.mu.Unlock()
	if fl&fCloseFlushed != 0 {
		_ = c.nc.Close()
	}
}

// connCtx is the context netpoll carries for a connection: the Conn itself,
// so OnRequest finds it with a type assertion and no per-connection
// context allocation. It is never cancelled and holds no values.
type connCtx Conn

var _ context.Context = (*connCtx)(nil)

func (*connCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (*connCtx) Done() <-chan struct{}       { return nil }
func (*connCtx) Err() error                  { return nil }
func (*connCtx) Value(any) any               { return nil }
