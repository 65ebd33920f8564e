package netpoll

import (
	"encoding/binary"

	"github.com/bytedance/gopkg/lang/mcache"
	"github.com/gobwas/ws"

	"github.com/gatecast/gatecast/proto"
)

// WebSocket opcodes and limits (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa

	maxControlPayload = 125
	maxFrameHeader    = 14 // 2 + 8 (64-bit length) + 4 (mask)
	minStash          = 16 // smallest stash: holds any frame header
)

// protocolError is a violation by the peer that fails the connection with a
// close code. The values below are preallocated so that returning one never
// allocates.
type protocolError struct {
	code   uint16
	reason string
}

func (e *protocolError) Error() string { return e.reason }

var (
	errReservedBits      = &protocolError{1002, "reserved bits set"}
	errReservedOpcode    = &protocolError{1002, "reserved opcode"}
	errUnmasked          = &protocolError{1002, "client frame not masked"}
	errControlFragmented = &protocolError{1002, "fragmented control frame"}
	errControlTooLong    = &protocolError{1002, "control frame payload over 125 bytes"}
	errStrayContinuation = &protocolError{1002, "continuation frame outside a fragmented message"}
	errExpectedContinue  = &protocolError{1002, "data frame inside a fragmented message"}
	errLengthMSB         = &protocolError{1002, "frame length has its most significant bit set"}
	errCloseOneByte      = &protocolError{1002, "close frame with a 1-byte payload"}
	errCloseCode         = &protocolError{1002, "invalid close code"}
	errTooBig            = &protocolError{1009, "message too big"}
	errInvalidUTF8       = &protocolError{1007, "invalid UTF-8 in text message"}
	errInvalidCloseUTF8  = &protocolError{1007, "invalid UTF-8 in close reason"}
)

// byteSource is the part of netpoll's Reader the frame reader needs.
// netpoll's connection Reader implements it; tests and the fuzzer use
// sliceSource. Slices returned by Peek and Next stay valid until the owner
// releases the source (for netpoll: Reader.Release at the end of OnRequest).
type byteSource interface {
	Len() int
	Peek(n int) ([]byte, error)
	Next(n int) ([]byte, error)
	Skip(n int) error
	// Contiguous returns the unread bytes at the head of the source that
	// lie in one buffer (for netpoll: one node of its linked buffer), all of
	// them or a prefix, empty only when the source is; valid like Peek's.
	Contiguous() []byte
}

// frameSink receives what the frame reader decodes. Payloads are valid only
// during the call.
type frameSink interface {
	// onMessage gets a complete, validated text or binary message.
	onMessage(text bool, payload []byte)
	// onControl gets a validated ping, pong or close frame; returning true
	// stops the reader (the rest of the input is the caller's to discard).
	onControl(op byte, payload []byte) (stop bool)
	// admitJoined decides whether a complete binary message that will be
	// joined to its neighbours is taken (false: it is dropped), and
	// onJoined gets the joined payloads of the messages it took (see
	// joiner). Only used when consume is given a joiner.
	admitJoined() bool
	onJoined(payload []byte)
}

// joiner collects the unmasked payloads of consecutive complete,
// unfragmented binary frames during one consume call, to deliver them in
// one onJoined call (ByteStreamSession). It lives on the caller's stack;
// buf is pooled, and the caller returns it (putBuf) after consume.
type joiner struct {
	buf []byte
}

// flush delivers what j holds.
func (j *joiner) flush(sink frameSink) {
	if j != nil && len(j.buf) > 0 {
		sink.onJoined(j.buf)
		j.buf = j.buf[:0]
	}
}

// frameHeader is a decoded client frame header.
type frameHeader struct {
	length int64
	mask   [4]byte
	size   int // header bytes on the wire
	op     byte
	fin    bool
}

// frameReader decodes client-to-server WebSocket frames incrementally. It is
// a pure state machine over bytes: no sockets, no clock, so the fuzzer can
// drive it. It is used by one goroutine at a time (the connection's event
// goroutine).
//
// consume reads its source until it finds it empty: a frame that is not
// complete yet is copied into stash, so OnRequest never returns with input
// it has seen left unread (netpoll would re-run it in a busy loop).
type frameReader struct {
	stash  []byte // raw bytes (header included) of the frame being received; nil when none. Pooled.
	msg    []byte // unmasked payloads of the fragmented message being assembled; nil when none. Pooled.
	need   int    // total size of the stashed frame once its header is known, else 0
	skip   int    // skimming: bytes of the current frame still to skip
	taken  int    // bytes taken from sources since the reader was made (for byte counts and budgets)
	fragOp byte   // opcode (text or binary) of the fragmented message in progress, 0 when none
	// held is set while a message whose payload views the source's own
	// bytes (a whole frame at the head of src: valid until the source is
	// released) is being delivered, and clear for one in the stash or the
	// fragment buffer (valid only during the call). See Conn.PayloadHeld.
	held bool
}

// consume decodes the complete frames in src, delivers them to sink, and
// stashes a trailing partial frame. It returns once src is empty, or once
// it has taken budget bytes or more from src (at a frame boundary; a
// budget <= 0 means none), leaving the rest for the next call. It returns
// stop=true when sink asked to stop (the caller then discards the rest of
// the input), or the first protocol error, a *protocolError (the caller may
// then hand the rest to skimForClose); after either, consume must not be
// called again.
//
// maxSize is the largest message: a frame (or fragment) declaring a length
// that would exceed it fails with errTooBig before any of its payload is read.
//
// With a joiner (j non-nil), complete unfragmented binary frames that start
// at the head of src are unmasked, admitted (sink.admitJoined) and copied
// into j, and delivered together (sink.onJoined) before anything else is
// acted on and before consume returns; everything else goes through
// onMessage and onControl as without one.
func (r *frameReader) consume(src byteSource, maxSize, budget int, sink frameSink, j *joiner) (stop bool, err error) {
	end := r.taken + budget
	// One header for the whole loop, filled in place: returned by value,
	// it was copied twice per frame, each copy stalled on reading back
	// the narrower stores that had just written it.
	var h frameHeader
	for {
		avail := src.Len()
		if avail == 0 || budget > 0 && r.taken >= end {
			j.flush(sink)
			return false, nil
		}
		if r.stash == nil {
			// Fastest path: the frames that lie whole in the head of src's
			// buffer, decoded from one view and skipped together (one Skip
			// instead of a Len, Peek and Next per frame, each locked for the
			// poller appending to the same buffer).
			if head := src.Contiguous(); len(head) > 0 {
				off, stop, err := r.consumeHead(head, &h, maxSize, end, budget, sink, j)
				if off > 0 {
					_ = src.Skip(off)
				}
				if stop || err != nil {
					if err != nil {
						j.flush(sink)
					}
					return stop, err
				}
				if off > 0 {
					continue
				}
			}
			// The frame at the head of src is not whole in one buffer node:
			// it is read across nodes (netpoll copies), or stashed.
			b, _ := src.Peek(min(avail, maxFrameHeader))
			ok, err := r.parseHeader(&h, b, maxSize)
			if err != nil {
				j.flush(sink)
				return false, err
			}
			if ok {
				total := h.size + int(h.length)
				if avail >= total {
					// Delivered as consumeHead delivers a frame of the head
					// (its header parsed again: the rare path).
					p, _ := src.Next(total)
					if _, stop, err := r.consumeHead(p, &h, maxSize, end, budget, sink, j); stop || err != nil {
						return stop, err
					}
					continue
				}
				r.need = total
			}
			j.flush(sink)
			r.stashFrom(src, avail)
			return false, nil
		}
		j.flush(sink)
		if r.need == 0 {
			// The stash holds part of a header: complete it from src.
			var hb [maxFrameHeader]byte
			n := copy(hb[:], r.stash)
			b, _ := src.Peek(min(avail, maxFrameHeader-n))
			m := copy(hb[n:], b)
			ok, err := r.parseHeader(&h, hb[:n+m], maxSize)
			if err != nil {
				return false, err
			}
			if !ok {
				// Still short: m == avail, since 14 bytes always hold a header.
				r.stashFrom(src, m)
				continue
			}
			r.need = h.size + int(h.length)
		}
		r.stashFrom(src, min(avail, r.need-len(r.stash)))
		if len(r.stash) < r.need {
			continue
		}
		// The header was validated when it completed and nothing changed
		// the reader's state since, so parsing it again cannot fail.
		_, _ = r.parseHeader(&h, r.stash, maxSize)
		stop, err := r.frame(&h, r.stash[h.size:r.need:r.need], sink)
		r.dropStash()
		if stop || err != nil {
			return stop, err
		}
	}
}

// consumeHead is consume's fast path over head, the contiguous bytes at the
// head of its source: it decodes and delivers the frames that lie whole in
// head, from the start, until one does not, the budget is spent (end) or
// the sink stops, and returns how many bytes of head it took (the caller
// skips them in src). A protocol error is returned like consume's, with
// off the bytes of the frames delivered before it. The frames' payloads
// are views of head, valid while src is (r.held).
func (r *frameReader) consumeHead(head []byte, h *frameHeader, maxSize, end, budget int, sink frameSink, j *joiner) (off int, stop bool, err error) {
	for off < len(head) && (budget <= 0 || r.taken < end) {
		ok, err := r.parseHeader(h, head[off:min(len(head), off+maxFrameHeader)], maxSize)
		if err != nil {
			return off, false, err
		}
		total := h.size + int(h.length)
		if !ok || len(head)-off < total {
			return off, false, nil
		}
		payload := head[off+h.size : off+total : off+total]
		off += total
		r.taken += total
		if j != nil && h.op == opBinary && h.fin && r.fragOp == 0 {
			ws.Cipher(payload, h.mask, 0)
			if sink.admitJoined() && len(payload) > 0 {
				if j.buf == nil {
					j.buf = getBuf(min(len(payload)+len(head)-off, budget, maxSize))
				}
				j.buf = appendPooled(j.buf, payload, 0)
			}
			continue
		}
		j.flush(sink)
		r.held = h.op != opContinuation
		stop, err := r.frame(h, payload, sink)
		r.held = false
		if stop || err != nil {
			return off, stop, err
		}
	}
	return off, false, nil
}

// parseHeader decodes and validates the frame header at the start of b.
// ok=false with a nil error means b is too short to tell yet. Checks that
// need only the first two bytes fail as soon as those two bytes arrive.
func (r *frameReader) parseHeader(h *frameHeader, b []byte, maxSize int) (ok bool, err error) {
	if len(b) < 2 {
		return false, nil
	}
	b0, b1 := b[0], b[1]
	h.fin = b0&0x80 != 0
	h.op = b0 & 0x0f
	l7 := b1 & 0x7f
	if b0&0x70 != 0 {
		return false, errReservedBits // no extension is ever negotiated
	}
	switch h.op {
	case opContinuation:
		if r.fragOp == 0 {
			return false, errStrayContinuation
		}
	case opText, opBinary:
		if r.fragOp != 0 {
			return false, errExpectedContinue
		}
	case opClose, opPing, opPong:
		if !h.fin {
			return false, errControlFragmented
		}
		if l7 > maxControlPayload {
			return false, errControlTooLong
		}
	default:
		return false, errReservedOpcode
	}
	if b1&0x80 == 0 {
		return false, errUnmasked
	}
	h.size = 6
	switch l7 {
	case 126:
		h.size = 8
	case 127:
		h.size = 14
	}
	if len(b) < h.size {
		return false, nil
	}
	switch l7 {
	case 126:
		h.length = int64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return false, errLengthMSB
		}
		h.length = int64(u)
	default:
		h.length = int64(l7)
	}
	copy(h.mask[:], b[h.size-4:h.size])
	if h.op < opClose && h.length > int64(maxSize-len(r.msg)) {
		return false, errTooBig
	}
	return true, nil
}

// unmaskASCII unmasks p in place, as ws.Cipher(p, mask, 0) does, and
// reports whether every byte of the result is ASCII (then it is valid
// UTF-8), sixteen bytes at a time, then eight and four (a 99-byte seed
// publish: 11.7 -> 9 ns, BenchmarkUnmaskASCII99).
func unmaskASCII(p []byte, mask [4]byte) (ascii bool) {
	m32 := binary.LittleEndian.Uint32(mask[:])
	m := uint64(m32) | uint64(m32)<<32
	var acc uint64
	i := 0
	for ; i <= len(p)-16; i += 16 {
		w0 := binary.LittleEndian.Uint64(p[i:]) ^ m
		w1 := binary.LittleEndian.Uint64(p[i+8:]) ^ m
		binary.LittleEndian.PutUint64(p[i:], w0)
		binary.LittleEndian.PutUint64(p[i+8:], w1)
		acc |= w0 | w1
	}
	if i <= len(p)-8 {
		w := binary.LittleEndian.Uint64(p[i:]) ^ m
		binary.LittleEndian.PutUint64(p[i:], w)
		acc |= w
		i += 8
	}
	if i <= len(p)-4 {
		w := binary.LittleEndian.Uint32(p[i:]) ^ m32
		binary.LittleEndian.PutUint32(p[i:], w)
		acc |= uint64(w)
		i += 4
	}
	for ; i < len(p); i++ {
		c := p[i] ^ mask[i&3]
		p[i] = c
		acc |= uint64(c)
	}
	return acc&0x8080808080808080 == 0
}

// frame unmasks one complete frame's payload in place and acts on it.
func (r *frameReader) frame(h *frameHeader, payload []byte, sink frameSink) (stop bool, err error) {
	if h.op == opText && h.fin {
		// The usual text message: unmasked and checked in one pass over it
		// when it is ASCII (a seed message nearly always is).
		if !unmaskASCII(payload, h.mask) && !proto.ValidUTF8(payload) {
			return false, errInvalidUTF8
		}
		sink.onMessage(true, payload)
		return false, nil
	}
	ws.Cipher(payload, h.mask, 0)
	switch h.op {
	case opText, opBinary:
		if !h.fin {
			r.fragOp = h.op
			r.appendMsg(payload)
			return false, nil
		}
		sink.onMessage(h.op == opText, payload)
	case opContinuation:
		r.appendMsg(payload)
		if !h.fin {
			return false, nil
		}
		text := r.fragOp == opText
		r.fragOp = 0
		if text && !proto.ValidUTF8(r.msg) {
			return false, errInvalidUTF8
		}
		sink.onMessage(text, r.msg)
		putBuf(r.msg)
		r.msg = nil
	case opClose:
		if err := checkClosePayload(payload); err != nil {
			return false, err
		}
		return sink.onControl(h.op, payload), nil
	default: // ping, pong
		return sink.onControl(h.op, payload), nil
	}
	return false, nil
}

// checkClosePayload validates a close frame body: empty, or a valid code
// followed by a UTF-8 reason.
func checkClosePayload(p []byte) error {
	switch {
	case len(p) == 0:
		return nil
	case len(p) == 1:
		return errCloseOneByte
	case !validCloseCode(binary.BigEndian.Uint16(p)):
		return errCloseCode
	case !proto.ValidUTF8(p[2:]):
		return errInvalidCloseUTF8
	}
	return nil
}

// validCloseCode reports whether a peer may send code in a close frame
// (RFC 6455 section 7.4): the defined protocol codes that may appear on the
// wire, and the registered and private ranges 3000-4999.
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// stashFrom moves the next k bytes of src into the stash, growing it only as
// bytes actually arrive (never on a peer-declared length alone).
func (r *frameReader) stashFrom(src byteSource, k int) {
	if k <= 0 {
		return
	}
	p, _ := src.Next(k)
	r.taken += k
	r.stash = appendPooled(r.stash, p, r.need)
}

func (r *frameReader) appendMsg(p []byte) {
	if len(p) > 0 {
		r.msg = appendPooled(r.msg, p, 0)
	}
}

func (r *frameReader) dropStash() {
	putBuf(r.stash)
	r.stash, r.need = nil, 0
}

// reset returns every pooled buffer; the reader may be reused afterwards.
func (r *frameReader) reset() {
	r.dropStash()
	putBuf(r.msg)
	r.msg, r.fragOp, r.skip = nil, 0, 0
}

// skimForClose is used after consume failed with a protocol error, while
// our close frame is on its way: it skips frames without validating them,
// only to notice the peer's close frame, so that a well-behaved peer
// answering our close gets its TCP connection closed at once instead of
// after CloseTimeout. It consumes all of src and reports whether a close
// frame header was seen (the caller stops reading then).
//
// It continues exactly where consume stopped: consume leaves the stash
// holding the start of the offending frame's header (or nothing), and src
// at the offending frame (header errors) or after it (payload errors).
func (r *frameReader) skimForClose(src byteSource) bool {
	putBuf(r.msg)
	r.msg, r.fragOp = nil, 0
	for {
		avail := src.Len()
		if avail == 0 {
			return false
		}
		if r.skip > 0 {
			k := min(avail, r.skip)
			_ = src.Skip(k)
			r.taken += k
			r.skip -= k
			continue
		}
		var hb [maxFrameHeader]byte
		n := copy(hb[:], r.stash)
		b, _ := src.Peek(min(avail, maxFrameHeader-n))
		m := copy(hb[n:], b)
		op, size, length, ok := skimHeader(hb[:n+m])
		if !ok {
			r.stashFrom(src, m)
			continue
		}
		if op == opClose {
			r.dropStash()
			return true
		}
		// The frame's remaining header bytes and its payload are in src
		// (or yet to arrive).
		if length > 1<<62 {
			r.skip = 1 << 62 // more than will ever arrive
		} else {
			r.skip = size - n + int(length)
		}
		r.dropStash()
	}
}

// skimHeader reads a frame header's opcode and sizes without validating
// anything (masked or not).
func skimHeader(b []byte) (op byte, size int, length uint64, ok bool) {
	if len(b) < 2 {
		return 0, 0, 0, false
	}
	l7 := b[1] & 0x7f
	size = 2
	switch l7 {
	case 126:
		size = 4
	case 127:
		size = 10
	}
	if b[1]&0x80 != 0 {
		size += 4
	}
	if len(b) < size {
		return 0, 0, 0, false
	}
	switch l7 {
	case 126:
		length = uint64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		length = binary.BigEndian.Uint64(b[2:10])
	default:
		length = uint64(l7)
	}
	return b[0] & 0x0f, size, length, true
}

// appendPooled appends p to a pooled buffer, replacing it by a larger pooled
// one when needed. Capacity at least doubles (amortised copying) but stays
// within limit when limit > 0 and the data fits.
func appendPooled(buf, p []byte, limit int) []byte {
	need := len(buf) + len(p)
	if need > cap(buf) {
		c := max(need, 2*cap(buf), minStash)
		if limit > 0 && c > limit {
			c = max(limit, need)
		}
		nb := getBuf(c)
		nb = append(nb, buf...)
		putBuf(buf)
		buf = nb
	}
	return append(buf, p...)
}

// getBuf returns an empty pooled buffer with capacity at least n (rounded up
// to a power of two by mcache).
func getBuf(n int) []byte { return mcache.Malloc(0, n) }

// putBuf returns a buffer obtained from getBuf; nil is ignored.
func putBuf(b []byte) {
	if cap(b) > 0 {
		mcache.Free(b)
	}
}

// sliceSource is a byteSource over one slice. It serves tests, the fuzzer
// and benchmarks, which feed the reader without a socket.
type sliceSource struct {
	b    []byte
	head int // bytes of b that are contiguous (0: all); see Contiguous
}

func (s *sliceSource) Len() int { return len(s.b) }

func (s *sliceSource) Peek(n int) ([]byte, error) { return s.b[:n:n], nil }

func (s *sliceSource) Next(n int) ([]byte, error) {
	p := s.b[:n:n]
	s.b = s.b[n:]
	return p, nil
}

func (s *sliceSource) Skip(n int) error {
	s.b = s.b[n:]
	return nil
}

// Contiguous is the first head bytes of the slice (all of it when head is
// 0), so that tests can place a buffer boundary anywhere.
func (s *sliceSource) Contiguous() []byte {
	if s.head > 0 && s.head < len(s.b) {
		return s.b[:s.head:s.head]
	}
	return s.b
}
