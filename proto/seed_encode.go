package proto

import (
	"encoding/binary"
	"unicode/utf8"
	"unsafe"

	"github.com/gobwas/ws"
)

// The constant parts of a seed server→client payload:
// {"tag":<topic>,"message":<message>}.
const (
	seedPrefix = `{"tag":`
	seedMiddle = `,"message":`
	seedSuffix = `}`
)

// AppendFrameHeader appends an unmasked, final (FIN) WebSocket frame header
// with opcode op for a payload of n bytes, using the minimal length
// encoding (RFC 6455 §5.2: 7-bit, 16-bit or 64-bit). Servers never mask.
// gobwas/ws only writes headers to an io.Writer; this appends to a slice so
// that a frame is encoded straight into its shared buffer. n must not be
// negative.
func AppendFrameHeader(dst []byte, op ws.OpCode, n int) []byte {
	dst = append(dst, 0x80|byte(op))
	switch {
	case n < 0:
		panic("proto: negative WebSocket payload length")
	case n <= 125:
		return append(dst, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(dst, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 127), uint64(n))
	}
}

// appendTextHeader appends the header of a text frame with an n-byte
// payload, first growing dst, once and exactly, when it has no room for
// the whole frame: the seed encoders then append the payload in place.
func appendTextHeader(dst []byte, n int) []byte {
	if need := frameHeaderLen(n) + n; cap(dst)-len(dst) < need {
		grown := make([]byte, len(dst), len(dst)+need)
		copy(grown, dst)
		dst = grown
	}
	return AppendFrameHeader(dst, ws.OpText, n)
}

// FrameHeaderLen is the size of the header AppendFrameHeader writes for a
// payload of n bytes.
func FrameHeaderLen(n int) int { return frameHeaderLen(n) }

// frameHeaderLen is the size of the header AppendFrameHeader writes.
func frameHeaderLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xFFFF:
		return 4
	default:
		return 10
	}
}

// SeedPayloadLen returns the exact length of the payload AppendSeedFrame
// writes for topic and message (without the WebSocket header).
func SeedPayloadLen(topic string, message []byte) int {
	m := len(message)
	if m == 0 {
		m = len("null")
	}
	return len(seedPrefix) + quotedLen(topic) + len(seedMiddle) + m + len(seedSuffix)
}

// AppendSeedFrame appends to dst one complete server→client WebSocket text
// frame (FIN, opcode text, unmasked, minimal length encoding) whose payload
// is {"tag":<topic as a JSON string>,"message":<message>}, and returns the
// extended slice.
//
// message must be valid JSON, as returned by SeedDecoder.Decode; it is
// copied verbatim. An empty message is written as null so that the frame
// is valid JSON whatever the caller passes. The topic is escaped the way
// any JSON decoder (the seed's clients use Python's json.loads) reads back
// exactly: '"', '\\' and control characters are escaped, other UTF-8 is kept
// as is, and bytes that are not UTF-8 become \ufffd (a text frame must be
// UTF-8).
//
// It grows dst at most once and allocates nothing when dst has room for
// the frame (see SeedPayloadLen).
func AppendSeedFrame(dst []byte, topic string, message []byte) []byte {
	dst = appendTextHeader(dst, SeedPayloadLen(topic, message))
	dst = append(dst, seedPrefix...)
	dst = appendQuoted(dst, topic)
	dst = append(dst, seedMiddle...)
	if len(message) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, message...)
	}
	return append(dst, seedSuffix...)
}

// AppendSeedFrameVerbatim appends one server→client WebSocket text frame
// whose payload is payload as it is: a client's seed message the decoder
// found in the encoder's own form (SeedDecoder.Verbatim), which is then
// what AppendSeedFrame would write. It grows dst at most once.
func AppendSeedFrameVerbatim(dst, payload []byte) []byte {
	dst = appendTextHeader(dst, len(payload))
	return append(dst, payload...)
}

// quoteLen[c] is the number of bytes appendQuoted writes for the ASCII byte
// c; 0 marks bytes >= 0x80, which are handled per rune.
var quoteLen = func() (t [256]uint8) {
	for c := 0; c < 0x80; c++ {
		switch {
		case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
			t[c] = 2
		case c < 0x20:
			t[c] = 6 // \u00XX
		default:
			t[c] = 1
		}
	}
	return t
}()

// quoteVerbatim reports whether appendQuoted writes s as it is between the
// quotes: every byte printable ASCII other than '"' and '\\', as topics
// nearly always are. It looks at eight bytes per step (a topic is checked
// twice per encoding, by quotedLen and by appendQuoted): a word has a byte
// >= 0x80, < 0x20, '"' or '\\' exactly when one of the masks below has its
// top bit set in that byte (the classic has-zero-byte and has-less-than
// tricks; no borrow crosses into a byte that matters, see the test).
func quoteVerbatim(s string) bool {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s[i:]), 8))
		q := w ^ ('"' * ones)
		b := w ^ ('\\' * ones)
		bad := w | ((w - 0x20*ones) &^ w) | ((q - ones) &^ q) | ((b - ones) &^ b)
		if bad&highs != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if quoteLen[s[i]] != 1 {
			return false
		}
	}
	return true
}

// quotedLen returns len(appendQuoted(nil, s)).
func quotedLen(s string) int {
	if quoteVerbatim(s) {
		return len(s) + 2
	}
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if l := quoteLen[c]; l != 0 {
			n += int(l)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += len(`\ufffd`)
		} else {
			n += size
		}
		i += size
	}
	return n
}

const hexDigits = "0123456789abcdef"

// appendQuoted appends s as a JSON string.
func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	if quoteVerbatim(s) {
		dst = append(dst, s...)
		return append(dst, '"')
	}
	start := 0 // s[start:i] is pending verbatim output
	for i := 0; i < len(s); {
		c := s[i]
		if quoteLen[c] == 1 {
			i++
			continue
		}
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// SeedTextPayloadLen returns the exact length of the payload
// AppendSeedFrameText writes (without the WebSocket header).
func SeedTextPayloadLen(topic string, payload []byte) int {
	return len(seedPrefix) + quotedLen(topic) + len(seedMiddle) + quotedLen(unsafeString(payload)) + len(seedSuffix)
}

// AppendSeedFrameText is AppendSeedFrame for a message that is not JSON (an
// MQTT payload, say): the payload becomes a JSON string,
// {"tag":<topic>,"message":"<payload, escaped>"}, with the same escaping as
// the topic (bytes that are not UTF-8 become \ufffd). Allocation-free when
// dst has room (see SeedTextPayloadLen).
func AppendSeedFrameText(dst []byte, topic string, payload []byte) []byte {
	dst = appendTextHeader(dst, SeedTextPayloadLen(topic, payload))
	dst = append(dst, seedPrefix...)
	dst = appendQuoted(dst, topic)
	dst = append(dst, seedMiddle...)
	dst = appendQuoted(dst, unsafeString(payload))
	return append(dst, seedSuffix...)
}

// unsafeString views b as a string for the read-only escaping helpers.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
