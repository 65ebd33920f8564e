package mqtt

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"
)

// decodeVarint reads an MQTT variable byte integer at the start of b. It
// returns the value and the number of bytes used; n == 0 means b ends
// inside the integer, n < 0 that the encoding is invalid (a fifth byte, or
// a longer encoding than the value needs, which MQTT-1.5.5-1 forbids).
func decodeVarint(b []byte) (v uint32, n int) {
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0
		}
		c := b[i]
		v |= uint32(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				return 0, -2
			}
			return v, i + 1
		}
	}
	return 0, -1
}

func varintErr(n int) *Error {
	if n == -2 {
		return errVarintNotMinimal
	}
	return errVarintTooLong
}

// appendVarint appends v as a variable byte integer. Values above
// MaxRemainingLength take five bytes (which no decoder accepts); callers
// never produce them from valid input.
func appendVarint(b []byte, v int) []byte {
	u := uint(v)
	for u >= 0x80 {
		b = append(b, byte(u)|0x80)
		u >>= 7
	}
	return append(b, byte(u))
}

// AppendVarint appends v as an MQTT variable byte integer (for callers that
// write a packet themselves, as the broker's shared PUBLISH encoder does).
func AppendVarint(b []byte, v int) []byte { return appendVarint(b, v) }

// VarintLen is the encoded size of v as a variable byte integer.
func VarintLen(v int) int { return varintLen(v) }

// DecodeVarint reads a variable byte integer at the start of b: n > 0 its
// size, 0 when b ends inside it, < 0 when it is malformed.
func DecodeVarint(b []byte) (v uint32, n int) { return decodeVarint(b) }

// varintLen is the encoded size of v.
func varintLen(v int) int {
	switch u := uint(v); {
	case u < 1<<7:
		return 1
	case u < 1<<14:
		return 2
	case u < 1<<21:
		return 3
	case u < 1<<28:
		return 4
	}
	return 5
}

func appendUint16(b []byte, v uint16) []byte { return append(b, byte(v>>8), byte(v)) }

func appendUint32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// appendBinary appends a two-byte length and v (Binary Data and UTF-8
// Encoded String share this form). Values longer than 65,535 bytes are
// invalid input; their length is written modulo 65,536.
func appendBinary(b []byte, v []byte) []byte {
	b = append(b, byte(len(v)>>8), byte(len(v)))
	return append(b, v...)
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

// ValidUTF8String reports whether b is a valid MQTT UTF-8 Encoded String
// value (MQTT-1.5.4-1, MQTT-1.5.4-2): well-formed UTF-8 (no surrogate code
// points, no overlong forms) without U+0000. Control characters and
// non-characters, which the spec says SHOULD NOT appear, are accepted. The
// length limit of 65,535 bytes is the caller's business.
func ValidUTF8String(b []byte) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c >= utf8.RuneSelf {
			rest := b[i:]
			return utf8.Valid(rest) && bytes.IndexByte(rest, 0) < 0
		}
		if c == 0 {
			return false
		}
	}
	return true
}

// checkTopicName validates a topic name's bytes: it returns errBadUTF8 if
// it is not a valid MQTT string and errTopicWildcard (or the given
// wildcard error) if it contains '+' or '#'. Emptiness is checked by the
// callers, whose rules differ.
func checkTopicName(b []byte, wildcard *Error) *Error {
	if plainTopic(b) {
		return nil // the usual case, 8 bytes at a time
	}
	wild := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c >= utf8.RuneSelf {
			rest := b[i:]
			if !utf8.Valid(rest) || bytes.IndexByte(rest, 0) >= 0 {
				return errBadUTF8
			}
			if wild || bytes.IndexByte(rest, '+') >= 0 || bytes.IndexByte(rest, '#') >= 0 {
				return wildcard
			}
			return nil
		}
		switch c {
		case 0:
			return errBadUTF8
		case '+', '#':
			wild = true
		}
	}
	if wild {
		return wildcard
	}
	return nil
}

// plainTopic reports whether b (at least 8 bytes long; false otherwise)
// is all ASCII without NUL, '+' or '#', reading it 8 bytes at a time (the
// last word overlapping the one before). false only means "look closer".
func plainTopic(b []byte) bool {
	n := len(b)
	if n < 8 {
		return false
	}
	for i := 0; i < n-8; i += 8 {
		if !plainWord(binary.LittleEndian.Uint64(b[i:])) {
			return false
		}
	}
	return plainWord(binary.LittleEndian.Uint64(b[n-8:]))
}

// plainWord reports whether none of the 8 bytes of v has its high bit set
// or is 0, '+' or '#' (the classic "has a zero byte" test on v and on v
// xor each of the two wildcards; exact for the existence of such a byte).
func plainWord(v uint64) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	zero := func(x uint64) uint64 { return (x - lo) &^ x & hi }
	return (v&hi | zero(v) | zero(v^lo*'+') | zero(v^lo*'#')) == 0
}

// reader walks a packet body. Every accessor reports false when the body
// is too short; slices it returns are views into the body with their
// capacity cut to their length, so appending to one never overwrites the
// bytes after it.
type reader struct {
	b []byte
	i int
}

func (r *reader) left() int { return len(r.b) - r.i }

func (r *reader) u8() (byte, bool) {
	if r.i >= len(r.b) {
		return 0, false
	}
	c := r.b[r.i]
	r.i++
	return c, true
}

func (r *reader) u16() (uint16, bool) {
	if len(r.b)-r.i < 2 {
		return 0, false
	}
	v := uint16(r.b[r.i])<<8 | uint16(r.b[r.i+1])
	r.i += 2
	return v, true
}

// binary reads a two-byte length and that many bytes.
func (r *reader) binary() ([]byte, bool) {
	n, ok := r.u16()
	if !ok || int(n) > len(r.b)-r.i {
		return nil, false
	}
	v := r.b[r.i : r.i+int(n) : r.i+int(n)]
	r.i += int(n)
	return v, true
}

// str reads a UTF-8 Encoded String.
func (r *reader) str() ([]byte, *Error) {
	v, ok := r.binary()
	if !ok {
		return nil, errTruncated
	}
	if !ValidUTF8String(v) {
		return nil, errBadUTF8
	}
	return v, nil
}

func (r *reader) rest() []byte {
	v := r.b[r.i:len(r.b):len(r.b)]
	r.i = len(r.b)
	return v
}
