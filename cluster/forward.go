package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/gatecast/gatecast/topic"
)

// Forwarding to other nodes: Forward copies each message into a bounded
// queue per matching peer and returns; one sender goroutine per peer
// drains it and sends with SPUBLISH, several queued messages per command
// (a batch frame) when they piled up while the previous command was in
// flight.
const (
	// DefaultPeerQueueBytes bounds the bytes queued or in flight to one
	// peer (RoutesConfig.PeerQueueBytes); the soft limit is half of it.
	DefaultPeerQueueBytes = 8 << 20
	// DefaultBatchBytes bounds the entries of one SPUBLISH
	// (RoutesConfig.BatchBytes); a single larger message goes alone.
	DefaultBatchBytes = 64 << 10
	// DefaultSendTimeout bounds one SPUBLISH of a sender.
	DefaultSendTimeout = 5 * time.Second

	// closeFlushTimeout bounds how long Close waits for the senders to
	// send what was queued before it returned.
	closeFlushTimeout = 2 * time.Second
	// idleBufCap: when its queue runs empty, a sender lets buffers grown
	// past this capacity (by a backlog) go back to the GC; while busy it
	// keeps them, so a sustained backlog does not regrow them each drain.
	idleBufCap = 1 << 20
	// sendErrLogEvery rate-limits the log of failed sends, per peer.
	sendErrLogEvery = 10 * time.Second
)

// ErrPeerQueueFull is returned by Forward (unwrapped, so returning it
// allocates nothing) when the message was dropped for at least one
// matching peer because that peer's queue was at RoutesConfig.PeerQueueBytes.
// The drop is counted (RoutesStats.QueueDropped, PeerStats.Dropped); the
// other matching peers got the message.
var ErrPeerQueueFull = errors.New("cluster: peer forwarding queue full")

// PeerStats describes the forwarding queue of one peer node.
type PeerStats struct {
	Node       string
	QueueBytes int64  // bytes queued or in flight now
	Backlogged bool   // over the soft limit (half of PeerQueueBytes)
	Sent       uint64 // messages sent (SPUBLISH succeeded)
	Batches    uint64 // successful SPUBLISH calls
	Dropped    uint64 // messages dropped: queue full
	SendErrors uint64 // failed SPUBLISH calls
	Lost       uint64 // messages in failed SPUBLISH calls (or abandoned after one)
}

// Forward sends topic and payload to every other node with a matching
// route, once per node, without waiting for Redis: the message is copied
// into each matching peer's queue and Forward returns; the peer's sender
// goroutine sends it (see Routes). ctx is unused (nothing waits).
//
// The match takes no lock; each matching peer costs one short critical
// section on that peer's queue and a copy of the message into its reused
// buffer: no allocation in steady state. A peer whose queue is full does
// not get the message (counted); Forward then returns ErrPeerQueueFull.
// A message for no peer, or for peers that are leaving, returns nil.
// payload is not kept.
func (r *Routes) Forward(_ context.Context, t string, payload []byte) error {
	if err := topic.ValidateTopic(t); err != nil {
		return fmt.Errorf("cluster: forwarding to %q: %w", t, err)
	}
	s := r.scratch.Get().(*fwdScratch)
	s.peers = r.targets(t, s.peers[:0])
	var err error
	for _, p := range s.peers {
		if !r.enqueue(p, t, payload) {
			err = ErrPeerQueueFull
		}
	}
	clear(s.peers) // do not keep peers reachable from the pool
	r.scratch.Put(s)
	return err
}

// Backlog reports forwarding backpressure. It returns nil (no lock, no
// allocation) while every peer queue is under its soft limit (half of
// RoutesConfig.PeerQueueBytes). Otherwise it returns a channel that is
// closed once every queue that was over the soft limit is back under it
// (sent, failed or its peer gone). A publisher that forwarded a message
// may wait on it, bounded in time, to slow down while the cluster link
// catches up. Any goroutine.
func (r *Routes) Backlog() <-chan struct{} {
	if r.overN.Load() == 0 {
		return nil
	}
	r.blmu.Lock()
	defer r.blmu.Unlock()
	if r.overN.Load() == 0 {
		return nil
	}
	if r.blch == nil {
		r.blch = make(chan struct{})
	}
	return r.blch
}

// PeerStats lists the forwarding queue of every peer that has a sender.
// Any goroutine.
func (r *Routes) PeerStats() []PeerStats {
	r.smu.Lock()
	defer r.smu.Unlock()
	out := make([]PeerStats, 0, len(r.senders))
	for p := range r.senders {
		out = append(out, PeerStats{
			Node: p.id, QueueBytes: p.queued.Load(), Backlogged: p.backlogged.Load(),
			Sent: p.sent.Load(), Batches: p.batches.Load(), Dropped: p.dropped.Load(),
			SendErrors: p.sendErrors.Load(), Lost: p.lost.Load(),
		})
	}
	return out
}

func (r *Routes) queueBytes() int64 {
	r.smu.Lock()
	defer r.smu.Unlock()
	var n int64
	for p := range r.senders {
		n += p.queued.Load()
	}
	return n
}

// enqueue copies one message into p's queue. It reports false when the
// queue was full (the message is dropped and counted).
func (r *Routes) enqueue(p *peer, t string, payload []byte) bool {
	need := entryLen(len(t), len(payload))
	p.mu.Lock()
	if p.closed {
		// Leaving (or Routes closing): its routes are gone or going.
		p.mu.Unlock()
		return true
	}
	if p.bytes+need > r.hardLimit {
		p.mu.Unlock()
		p.dropped.Add(1)
		r.queueDropped.Add(1)
		return false
	}
	if cap(p.buf) == 0 {
		p.buf = make([]byte, 1, r.initCap)
	}
	wasEmpty := len(p.buf) == 1
	p.buf = appendEntry(p.buf, t, payload)
	p.bytes += need
	p.queued.Store(int64(p.bytes))
	if !p.over && p.bytes >= r.softLimit {
		p.over = true
		r.markOver(p, true)
	}
	p.mu.Unlock()
	if wasEmpty {
		// The sender is waiting, or will look at the queue again after
		// its current send: one token is enough.
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// release accounts n bytes as no longer in flight to p.
func (r *Routes) release(p *peer, n int) {
	p.mu.Lock()
	p.bytes -= n
	p.queued.Store(int64(p.bytes))
	if p.over && p.bytes < r.softLimit {
		p.over = false
		r.markOver(p, false)
	}
	p.mu.Unlock()
}

// markOver counts a peer crossing its soft limit; the last one back under
// it closes the Backlog channel. Called with p.mu held (lock order: p.mu,
// then blmu).
func (r *Routes) markOver(p *peer, over bool) {
	p.backlogged.Store(over)
	r.blmu.Lock()
	if over {
		r.overN.Add(1)
	} else if r.overN.Add(-1) == 0 && r.blch != nil {
		close(r.blch)
		r.blch = nil
	}
	r.blmu.Unlock()
}

// startSender starts p's sender (route goroutine, when p enters the route
// table), unless Routes is closing.
func (r *Routes) startSender(p *peer) {
	r.smu.Lock()
	defer r.smu.Unlock()
	if r.stopping {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		return
	}
	r.senders[p] = struct{}{}
	r.swg.Add(1)
	go r.sendLoop(p)
}

// stopSender tells p's sender that p left the route table (route
// goroutine, once per peer): it discards what is queued and exits.
func (r *Routes) stopSender(p *peer) {
	if p.stop != nil {
		close(p.stop)
	}
}

// sendLoop is p's sender goroutine.
func (r *Routes) sendLoop(p *peer) {
	defer r.swg.Done()
	defer r.retire(p)
	var spare []byte // the drained buffer kept for reuse (this goroutine only)
	for {
		select {
		case <-p.wake:
			if !r.drain(p, &spare) {
				return
			}
		case <-p.stop:
			return
		case <-r.closing:
			// Close: take no more messages, send what was queued
			// (bounded by closeFlushTimeout, then r.ctx ends).
			p.mu.Lock()
			p.closed = true
			p.mu.Unlock()
			r.drain(p, &spare)
			return
		}
	}
}

// retire discards what is left in p's queue when its sender exits.
func (r *Routes) retire(p *peer) {
	p.mu.Lock()
	p.closed = true
	p.buf = nil
	p.bytes = 0
	p.queued.Store(0)
	if p.over {
		p.over = false
		r.markOver(p, false)
	}
	p.mu.Unlock()
	r.smu.Lock()
	delete(r.senders, p)
	r.smu.Unlock()
}

// drain sends everything queued to p until the queue is empty. It reports
// false when the sender must exit (p left, or Routes closed).
func (r *Routes) drain(p *peer, spare *[]byte) bool {
	for {
		p.mu.Lock()
		if len(p.buf) <= 1 {
			// Idle: give back what a backlog grew.
			if cap(p.buf) > idleBufCap {
				p.buf = nil
			}
			p.mu.Unlock()
			if cap(*spare) > idleBufCap {
				*spare = nil
			}
			return true
		}
		b := p.buf
		p.buf = *spare
		p.mu.Unlock()
		*spare = nil
		reusable, ok := r.sendAll(p, b)
		if reusable {
			*spare = b[:1]
		}
		if !ok {
			return false
		}
	}
}

// sendAll sends the entries of one drained buffer, in order, in batches.
// reusable is false when a send was abandoned while rueidis may still read
// b; ok is false when the sender must exit.
func (r *Routes) sendAll(p *peer, b []byte) (reusable, ok bool) {
	off := 1 // b[0] is reserved for the first batch's frame kind
	for off < len(b) {
		select {
		case <-p.stop:
			return true, false
		case <-r.ctx.Done():
			return false, false
		default:
		}
		start, n := off, 0
		for off < len(b) {
			l := storedEntryLen(b[off:])
			if n > 0 && (r.batchBytes < 0 || off+l-start > r.batchBytes) {
				break
			}
			off += l
			n++
		}
		if abandoned := r.sendBatch(p, b, start, off, n); abandoned {
			// The rest of b cannot be framed in place (the next frame
			// kind would overwrite the last byte of the abandoned
			// message): it is lost too, and counted.
			rest := countEntries(b[off:])
			p.lost.Add(uint64(rest))
			r.lost.Add(uint64(rest))
			r.release(p, len(b)-off)
			return false, r.ctx.Err() == nil
		}
	}
	return true, true
}

// sendBatch sends the n entries b[start:end] in one SPUBLISH. The frame is
// built in place, without copying: a single entry becomes the old message
// frame by writing 'm' over the last byte of its payload-length varint; a
// batch gets 'b' in the byte before its first entry (b[0], or the last
// byte of the previous batch, sent already). It reports whether the
// command was abandoned (the deadline or Close cut it short), in which
// case rueidis may still read b.
func (r *Routes) sendBatch(p *peer, b []byte, start, end, n int) (abandoned bool) {
	msg := frameInPlace(b, start, end, n)
	if h := r.cfg.sendHook; h != nil {
		h(p.id)
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.SendTimeout)
	err := r.c.Do(ctx, r.c.B().Spublish().Channel(p.channel).Message(msg).Build()).Error()
	abandoned = err != nil && ctx.Err() != nil
	cancel()
	if err != nil {
		p.sendErrors.Add(1)
		p.lost.Add(uint64(n))
		r.sendErrors.Add(1)
		r.lost.Add(uint64(n))
		if now := time.Now(); r.ctx.Err() == nil && now.Sub(p.lastErrLog) >= sendErrLogEvery {
			p.lastErrLog = now
			r.cfg.Logger.Warn("forwarding to a node failed; messages dropped", "node", p.id, "messages", n, "err", err)
		}
	} else {
		p.sent.Add(uint64(n))
		p.batches.Add(1)
		r.sent.Add(uint64(n))
		r.batches.Add(1)
	}
	r.release(p, end-start)
	return abandoned
}

// frameInPlace turns the n entries b[start:end] into one frame, writing
// one byte at or before start (see sendBatch), and returns it as a string
// aliasing b: b must not change while the string is in use.
func frameInPlace(b []byte, start, end, n int) string {
	if n == 1 {
		_, vl := binary.Uvarint(b[start:])
		i := start + vl - 1
		b[i] = frameMessage
		return unsafe.String(&b[i], end-i)
	}
	b[start-1] = frameBatch
	return unsafe.String(&b[start-1], end-start+1)
}

// Queue entries and batch frames.
//
// An entry is uvarint(len(payload)) uvarint(len(topic)) topic payload.
// Its length in the queue is what counts against PeerQueueBytes.

func uvarintLen(x int) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func entryLen(topicLen, payloadLen int) int {
	return uvarintLen(payloadLen) + uvarintLen(topicLen) + topicLen + payloadLen
}

func appendEntry(b []byte, t string, payload []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(payload)))
	b = binary.AppendUvarint(b, uint64(len(t)))
	b = append(b, t...)
	return append(b, payload...)
}

// storedEntryLen is the length of the entry at the start of b, which this
// node wrote (well formed).
func storedEntryLen(b []byte) int {
	lp, n1 := binary.Uvarint(b)
	lt, n2 := binary.Uvarint(b[n1:])
	return n1 + n2 + int(lt) + int(lp)
}

func countEntries(b []byte) int {
	n := 0
	for len(b) > 0 {
		b = b[storedEntryLen(b):]
		n++
	}
	return n
}

// appendBatch appends a batch frame of the given (topic, payload) pairs.
func appendBatch(b []byte, entries ...[2]string) []byte {
	b = append(b, frameBatch)
	for _, e := range entries {
		b = appendEntry(b, e[0], unsafe.Slice(unsafe.StringData(e[1]), len(e[1])))
	}
	return b
}

// nextEntry parses the first entry of a batch body. The strings are views
// of s.
func nextEntry(s string) (t, payload, rest string, err error) {
	lp, n1 := binary.Uvarint(unsafe.Slice(unsafe.StringData(s), len(s)))
	if n1 <= 0 {
		return "", "", "", errors.New("batch entry: bad payload length")
	}
	s = s[n1:]
	lt, n2 := binary.Uvarint(unsafe.Slice(unsafe.StringData(s), len(s)))
	if n2 <= 0 {
		return "", "", "", errors.New("batch entry: bad topic length")
	}
	s = s[n2:]
	if lt > uint64(len(s)) || lp > uint64(len(s))-lt {
		return "", "", "", errors.New("batch entry: length out of range")
	}
	t, payload, rest = s[:lt], s[lt:lt+lp], s[lt+lp:]
	if err := topic.ValidateTopic(t); err != nil {
		return "", "", "", fmt.Errorf("batch entry: topic: %w", err)
	}
	return t, payload, rest, nil
}

// validateBatch checks every entry of a batch body and counts them.
func validateBatch(s string) (int, error) {
	if s == "" {
		return 0, errors.New("frame: empty batch")
	}
	n := 0
	for s != "" {
		var err error
		if _, _, s, err = nextEntry(s); err != nil {
			return 0, fmt.Errorf("frame: entry %d: %w", n, err)
		}
		n++
	}
	return n, nil
}
