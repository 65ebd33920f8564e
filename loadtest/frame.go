package loadtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"sync"

	"github.com/gatecast/gatecast/proto"
	"github.com/gobwas/ws"
)

// The client's side of the WebSocket framing (RFC 6455): frames from the
// broker are parsed from netpoll's buffer with parseHeader, frames to the
// broker are masked (a client must mask every frame) and built into a
// caller's buffer. Nothing here allocates.

// maxServerFrame bounds a frame the client accepts. The broker never sends
// more than its --max-frame-size (64 KiB by default) plus the seed envelope;
// a larger declared length is a protocol error, not a reason to buffer it.
const maxServerFrame = 1 << 20

var (
	errMaskedFrame   = errors.New("loadtest: masked frame from the server")
	errReservedBits  = errors.New("loadtest: frame with reserved bits set (no extension was negotiated)")
	errReservedOp    = errors.New("loadtest: frame with a reserved opcode")
	errControlFrame  = errors.New("loadtest: fragmented or oversized control frame")
	errFrameTooLarge = errors.New("loadtest: frame larger than the client accepts")
	errLengthMSB     = errors.New("loadtest: 64-bit frame length with the most significant bit set")
	errShortHeader   = errors.New("loadtest: incomplete frame header")
)

// headerLen returns the length of a frame header (2 to 14 bytes) from its
// second byte.
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// parseHeader decodes the frame header at the start of b and returns it
// with its length in bytes. It refuses what a server must not send to a
// client that negotiated no extension: a masked frame, reserved bits or
// opcodes, a fragmented or long control frame, and lengths above
// maxServerFrame.
func parseHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, errShortHeader
	}
	n = headerLen(b[1])
	if len(b) < n {
		return h, 0, errShortHeader
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	switch l := b[1] & 0x7f; l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		u := binary.BigEndian.Uint64(b[2:10])
		if u&(1<<63) != 0 {
			return h, n, errLengthMSB
		}
		h.Length = int64(u)
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[n-4:n])
		return h, n, errMaskedFrame
	}
	if h.Rsv != 0 {
		return h, n, errReservedBits
	}
	if h.OpCode.IsReserved() {
		return h, n, errReservedOp
	}
	if h.OpCode.IsControl() && (!h.Fin || h.Length > 125) {
		return h, n, errControlFrame
	}
	if h.Length > maxServerFrame {
		return h, n, errFrameTooLarge
	}
	return h, n, nil
}

// appendClientFrame appends one complete, final, masked frame carrying
// payload, masked with mask.
func appendClientFrame(dst []byte, op ws.OpCode, payload []byte, mask [4]byte) []byte {
	dst = appendClientHeader(dst, op, len(payload), mask)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}

// appendClientHeader appends the header of a final, masked frame of n
// payload bytes.
func appendClientHeader(dst []byte, op ws.OpCode, n int, mask [4]byte) []byte {
	dst = append(dst, 0x80|byte(op))
	switch {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, mask[:]...)
}

// maskFrom turns a random word into a masking key.
func maskFrom(r uint32) (m [4]byte) {
	binary.LittleEndian.PutUint32(m[:], r)
	return m
}

// The payload of every message the simulator publishes is a JSON object
// whose first member is the send time, so that the receiver, in whichever
// worker process, computes the latency on the same (machine) clock:
//
//	{"t":<unix nanoseconds>,"p":"xxxx…"}
//
// padded with x to the configured size.

// minMessageSize is the smallest payload appendMessage produces: the stamp
// of a current time (19 digits) and an empty pad.
const minMessageSize = len(`{"t":1700000000000000000,"p":""}`)

// appendMessage appends a message of size bytes (at least minMessageSize)
// stamped with sentNs.
func appendMessage(dst []byte, size int, sentNs int64) []byte {
	start := len(dst)
	dst = append(dst, `{"t":`...)
	dst = strconv.AppendInt(dst, sentNs, 10)
	dst = append(dst, `,"p":"`...)
	for len(dst)-start < size-2 {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

// seedLead and seedMid frame the topic in the broker's delivery
// {"tag":"<topic>","message":<message>}, as proto.AppendSeedFrame writes it.
const (
	seedLead = `{"tag":"`
	seedMid  = `","message":`
)

// appendPublish appends a seed publish payload: {"tag":"<topic>","message":<msg>}.
// topic is written as is: the simulator's topics need no JSON escaping.
func appendPublish(dst, topic, msg []byte) []byte {
	dst = append(dst, seedLead...)
	dst = append(dst, topic...)
	dst = append(dst, seedMid...)
	dst = append(dst, msg...)
	return append(dst, '}')
}

// seedDecoders serve deliveryStamp's general path (deliveries laid out
// otherwise than Gatecast writes them, e.g. with spaces as Python's
// json.dumps does). Pooled: any goroutine may parse.
var seedDecoders = sync.Pool{New: func() any { return new(proto.SeedDecoder) }}

// deliveryStamp returns the send time carried by a delivery's payload
// ({"tag":…,"message":{"t":…}}), or false when the payload is not a seed
// delivery of a message stamped by the simulator. Gatecast's own layout is
// recognised from its envelope and the stamp, without validating the rest
// of the message (the load tool needs the stamp, not the JSON); anything
// else goes through the seed decoder, which validates everything. It
// allocates nothing in steady state.
func deliveryStamp(p []byte) (int64, bool) {
	if bytes.HasPrefix(p, []byte(seedLead)) && p[len(p)-1] == '}' {
		i := len(seedLead)
		for i < len(p) && p[i] != '"' {
			if p[i] == '\\' {
				i++
			}
			i++
		}
		if i < len(p) && bytes.HasPrefix(p[i:], []byte(seedMid)) {
			if t, ok := parseStamp(p[i+len(seedMid):]); ok {
				return t, true
			}
		}
	}
	d := seedDecoders.Get().(*proto.SeedDecoder)
	_, msg, err := d.Decode(p)
	t, ok := int64(0), false
	if err == nil {
		t, ok = parseStamp(msg)
	}
	seedDecoders.Put(d)
	return t, ok
}

// parseStamp reads the leading `{"t":<digits>` of a message (JSON
// whitespace allowed between tokens). The number must be a positive
// integer that fits in an int64 and be followed by ',' or '}'.
func parseStamp(m []byte) (int64, bool) {
	i := skipSpace(m, 0)
	if i >= len(m) || m[i] != '{' {
		return 0, false
	}
	i = skipSpace(m, i+1)
	if !bytes.HasPrefix(m[i:], []byte(`"t"`)) {
		return 0, false
	}
	i = skipSpace(m, i+3)
	if i >= len(m) || m[i] != ':' {
		return 0, false
	}
	i = skipSpace(m, i+1)
	var v int64
	start := i
	for ; i < len(m) && m[i] >= '0' && m[i] <= '9'; i++ {
		d := int64(m[i] - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	if i == start || v == 0 || (m[start] == '0' && i-start > 1) {
		return 0, false
	}
	i = skipSpace(m, i)
	if i >= len(m) || (m[i] != ',' && m[i] != '}') {
		return 0, false
	}
	return v, true
}

func skipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}
