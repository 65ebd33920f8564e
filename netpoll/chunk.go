package netpoll

import (
	"sync"

	"github.com/bytedance/gopkg/lang/mcache"

	"github.com/gatecast/gatecast/proto"
)

// Coalesced output (SendBytes). A protocol that frames its own packets in
// a byte stream (MQTT) need not hand the outbox one refcounted Frame per
// packet: SendBytes copies the bytes into the last entry of the outbox
// when that entry is a chunk with room, else into a new chunk. A chunk is a
// buffer of the outbox's own (a size-class buffer from mcache in a pooled
// proto.Frame wrapper that is never shared or Released), so a burst of
// small packets to one connection costs its bytes in a few buffers instead
// of a pooled 512-byte Frame each, and the drain copies a few chunks
// instead of many frames. Chunks grow from minChunk, doubling while the
// outbox keeps filling, up to maxChunk; a larger packet gets a chunk of its
// own, which takes nothing more. The drain frees a chunk once it has
// copied it, so an idle connection holds none.
//
// On a raw stream a chunk is written as it is. On a WebSocket it is written
// as one binary message (the drain puts the frame header in front), which
// is why SendBytes suits only protocols whose WebSocket message boundaries
// carry no meaning (MQTT over WebSocket: packets may span or share
// messages, MQTT-6.0.0-2); a protocol with one unit per message (the seed
// protocol) uses Send with complete frames. A chunk is charged to its
// connection its bytes plus frameOverhead once, whatever the packets in it;
// the process total (OutboxTotalLimit) counts its whole buffer from the
// start (so appending to a chunk takes the connection's lock and no atomic
// operation), and gets back what it did not fill when it is freed.
const (
	minChunk = 512
	maxChunk = 16 << 10
)

var chunkPool = sync.Pool{New: func() any { return new(proto.Frame) }}

// newChunk returns an empty chunk with room for at least n bytes.
func newChunk(n int) *proto.Frame {
	ch := chunkPool.Get().(*proto.Frame)
	ch.B = mcache.Malloc(0, n)
	return ch
}

// freeChunk gives a chunk's buffer back to mcache and the wrapper to its pool.
func freeChunk(ch *proto.Frame) {
	mcache.Free(ch.B)
	ch.B = nil
	chunkPool.Put(ch)
}

// SendBytes is SendBacklog for bytes the caller keeps: it copies b into the
// outbox (b may be reused as soon as it returns) and reports the same
// results. On a stream the bytes are written as they are; on a WebSocket,
// in binary messages whose boundaries need not match those of the calls
// (see above). It never blocks and allocates nothing in steady state.
func (c *Conn) SendBytes(b []byte) (ok bool, backlog <-chan struct{}) {
	return c.sendCopy(b, false)
}

// SendFrames is SendBytes for bytes that are whole frames already: one or
// more complete WebSocket frames the caller encoded (a seed text frame). They
// are copied into a chunk as SendBytes does, but on a WebSocket the chunk is
// written as it is, without a message header of its own: a chunk of frames
// holds whole frames only, so message boundaries stay the caller's. This is
// how a protocol with one unit per message (the seed protocol) coalesces a
// burst to one subscriber (a fan-in) without a refcounted Frame per message.
// On a stream the chunk is written as it is, like SendBytes'. It never
// blocks and allocates nothing in steady state.
func (c *Conn) SendFrames(b []byte) (ok bool, backlog <-chan struct{}) {
	return c.sendCopy(b, true)
}

// sendCopy is SendBytes (framed false) and SendFrames (framed true).
func (c *Conn) sendCopy(b []byte, framed bool) (ok bool, backlog <-chan struct{}) {
	c.mu.Lock()
	fl := c.flags.Load()
	if fl&(fClosing|fGone) != 0 {
		c.mu.Unlock()
		return false, nil
	}
	if reason := c.admitOutput(c.appendCharge(len(b), framed)); reason != nil {
		c.mu.Unlock()
		reason.Inc()
		return false, nil
	}
	c.appendLocked(b, framed)
	return true, c.queuedUnlock(fl)
}

// SendTextRun queues one text message per payload, in order, under one
// lock, so that a publisher's run of messages to one subscriber (the
// broker's dispatchRun) costs one lock and one first touch of the Conn and
// its outbox, not one per message: each becomes a text frame copied into the
// outbox's chunks, header and payload together, as SendFrames would copy
// the frame the caller encoded, but without that encoding's copy. Each is
// admitted as SendFrames admits a frame, and at the first refusal it and
// the rest are dropped. queued is how many were copied: a prefix of
// payloads. Nothing of payloads is kept. WebSocket connections only.
func (c *Conn) SendTextRun(payloads [][]byte) (queued int, backlog <-chan struct{}) {
	if len(payloads) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	fl := c.flags.Load()
	if fl&(fClosing|fGone) != 0 {
		c.mu.Unlock()
		return 0, nil
	}
	// The usual case first: the whole run fits the tail chunk and is
	// admitted at once (admission is monotone in size: every message of it
	// would be), so each message costs its copy and nothing else. A run
	// that is not goes message by message, which refuses (with refusal's
	// effects) only what the limits refuse.
	total := 0
	for _, p := range payloads {
		total += frameHeaderLen(len(p)) + len(p)
	}
	if ch := c.tailChunk(true); ch != nil && fits(ch, total) && c.refusal(total) == nil {
		for _, p := range payloads {
			ch.B = appendFrameHeader(ch.B, opText, len(p))
			ch.B = append(ch.B, p...)
		}
		c.queuedBytes += total
		return len(payloads), c.queuedUnlock(fl)
	}
	for i, p := range payloads {
		n := frameHeaderLen(len(p)) + len(p)
		if reason := c.admitOutput(c.appendCharge(n, true)); reason != nil {
			if i == 0 {
				c.mu.Unlock()
			} else {
				backlog = c.queuedUnlock(fl)
			}
			reason.Add(float64(len(payloads) - i))
			return i, backlog
		}
		c.appendTextLocked(p, n)
	}
	return len(payloads), c.queuedUnlock(fl)
}

// tailChunk returns the outbox's last entry when it is a chunk of the kind
// framed asks for (whole frames, or bytes that the drain frames), else nil.
// c.mu must be held.
func (c *Conn) tailChunk(framed bool) *proto.Frame {
	t := c.tail
	if t == nil || t.n == 0 {
		return nil
	}
	bit := uint16(1) << (t.n - 1)
	if t.chunks&bit == 0 || (t.framed&bit != 0) != framed {
		return nil
	}
	return t.frames[t.n-1]
}

// appendCharge is what appending n bytes costs the outbox's accounting: n
// when they fit the tail chunk, plus frameOverhead when they start a new
// one. c.mu must be held.
func (c *Conn) appendCharge(n int, framed bool) int {
	if ch := c.tailChunk(framed); ch != nil && fits(ch, n) {
		return n
	}
	return n + frameOverhead
}

// fits reports whether n more bytes go into chunk ch: within its capacity
// and maxChunk (a chunk holding one larger piece takes nothing more, so a
// WebSocket message is at most maxChunk or one piece).
func fits(ch *proto.Frame, n int) bool {
	return len(ch.B)+n <= min(cap(ch.B), maxChunk)
}

// appendTextLocked is appendLocked(framed) of the text frame of payload p,
// n bytes with its header, written straight into the chunk: the whole
// frame goes into one chunk. c.mu must be held.
func (c *Conn) appendTextLocked(p []byte, n int) {
	ch := c.tailChunk(true)
	if ch == nil || !fits(ch, n) {
		ch = c.newTailChunk(ch, n)
		ch.B = appendFrameHeader(ch.B, opText, len(p))
		ch.B = append(ch.B, p...)
		c.pushChunk(ch, true)
		return
	}
	ch.B = appendFrameHeader(ch.B, opText, len(p))
	ch.B = append(ch.B, p...)
	c.queuedBytes += n // as in appendLocked
}

// appendLocked copies b into the tail chunk of its kind, or a new one.
// c.mu must be held.
func (c *Conn) appendLocked(b []byte, framed bool) {
	ch := c.tailChunk(framed)
	if ch == nil || !fits(ch, len(b)) {
		ch = c.newTailChunk(ch, len(b))
		ch.B = append(ch.B, b...)
		c.pushChunk(ch, framed)
		return
	}
	// No atomic here: the process total already counts the whole chunk,
	// and the pending mirror (a gauge) catches up at the next chunk or
	// batch.
	ch.B = append(ch.B, b...)
	c.queuedBytes += len(b)
}

// newTailChunk returns a new chunk for n bytes that do not fit tail (the
// tail chunk of their kind, or nil): larger than tail as the outbox fills.
// The caller fills it, then queues it with pushChunk. (The fast path, the
// bytes fitting the tail chunk, stays in the callers, inlined.)
func (c *Conn) newTailChunk(tail *proto.Frame, n int) *proto.Frame {
	size := minChunk
	if tail != nil {
		size = min(2*cap(tail.B), maxChunk) // the outbox is filling: a larger one
	}
	return newChunk(max(size, n))
}

// pushChunk queues a filled new chunk (charged as pushEntry charges it).
// c.mu must be held.
func (c *Conn) pushChunk(ch *proto.Frame, framed bool) {
	c.pushEntry(ch, true)
	if framed {
		c.tail.framed |= 1 << (c.tail.n - 1)
	}
}
