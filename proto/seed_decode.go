package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// Errors returned by SeedDecoder.Decode. Every failed Decode returns exactly
// one of them (compare with == or errors.Is); none carries the payload, so
// they are safe to log.
var (
	// ErrInvalidUTF8: the payload is not valid UTF-8. Checked before the JSON
	// syntax, so a payload that is both gets this error. WebSocket text
	// frames must be UTF-8 and the message bytes are re-sent verbatim in
	// text frames, so invalid UTF-8 is refused even inside JSON strings
	// (where encoding/json would tolerate it).
	ErrInvalidUTF8 = errors.New("proto: payload is not valid UTF-8")
	// ErrInvalidJSON: the payload is not one valid JSON value (RFC 8259,
	// nesting at most 10000 levels like encoding/json).
	ErrInvalidJSON = errors.New("proto: payload is not valid JSON")
	// ErrNotObject: valid JSON whose top level is not an object.
	ErrNotObject = errors.New("proto: payload is not a JSON object")
	// ErrMissingTag: "tag" is absent, not a string, or the empty string.
	ErrMissingTag = errors.New(`proto: "tag" is missing, empty or not a string`)
	// ErrInvalidTag: "tag" escapes an unpaired UTF-16 surrogate (such as
	// "\ud800"), which is not a Unicode character and cannot name a topic.
	ErrInvalidTag = errors.New(`proto: "tag" contains an unpaired surrogate escape`)
	// ErrMissingMessage: "message" is absent or null. Other falsy values
	// (0, false, "", {}, []) are messages.
	ErrMissingMessage = errors.New(`proto: "message" is missing or null`)
)

// maxDepth is the deepest nesting of arrays and objects accepted, counting
// the top-level object; the same limit as encoding/json so that both agree
// on what is valid.
const maxDepth = 10000

// maxRetainedScratch bounds the unescape buffer a decoder keeps between
// calls: a decoder lives as long as its connection, and one huge escaped tag
// must not pin memory for all that time.
const maxRetainedScratch = 1 << 10

// SeedDecoder decodes client→server frames of the seed protocol:
// {"tag": "<topic>", "message": <any JSON>}.
//
// A SeedDecoder is not safe for concurrent use: give each connection its own
// and call it only from the goroutine that reads that connection. The zero
// value is ready to use; it is two nil slices until a payload needs them.
type SeedDecoder struct {
	// buf holds unescaped keys and the unescaped tag when the tag contains
	// backslash escapes.
	buf []byte
	// deep records the container kinds (1 = object) of nesting levels
	// beyond the 64 that fit in a register; grown only by deeply nested
	// payloads, at most maxDepth/64+1 words.
	deep []uint64
	// verbatim: the last decode read the encoder's form (Verbatim).
	verbatim bool
}

// Verbatim reports whether the last Decode or DecodeValid that succeeded
// read a payload that is byte for byte what AppendSeedFrame writes for the
// tag and message it returned: {"tag":"<tag>","message":<message>} and
// nothing else, the tag without escapes - the form devices nearly always
// send. Such a payload can be delivered as it came
// (AppendSeedFrameVerbatim) instead of encoded again. It is the decoder's
// fast path answering, so it costs nothing to ask.
func (d *SeedDecoder) Verbatim() bool { return d.verbatim }

// Which top-level member a key names.
const (
	keyOther = iota
	keyTag
	keyMessage
)

// Decode parses one client frame payload. tag is the unescaped tag bytes;
// message is the raw JSON value of "message", without surrounding
// whitespace, byte for byte as the client sent it.
//
// Both results point into payload or into d's scratch buffer: they are
// valid only until the next Decode call on d and only while payload is not
// reused. Copy them to keep them longer.
//
// The whole payload is validated (UTF-8 and JSON syntax) before anything is
// returned, so message is always valid JSON that can be re-embedded
// verbatim. Keys are compared after unescaping and exactly (case matters, as
// in the seed's Python json.loads); other keys are ignored; for duplicate
// keys the last one wins, as in encoding/json. Errors are checked in this
// order: ErrInvalidUTF8, ErrInvalidJSON, ErrNotObject, ErrMissingTag,
// ErrInvalidTag, ErrMissingMessage.
//
// Decode allocates nothing in steady state.
func (d *SeedDecoder) Decode(payload []byte) (tag, message []byte, err error) {
	if !ValidUTF8(payload) {
		return nil, nil, ErrInvalidUTF8
	}
	return d.DecodeValid(payload)
}

// DecodeValid is Decode for a payload the caller has already checked is
// valid UTF-8: a WebSocket text message, which the transport must check
// anyway (RFC 6455 section 8.1: it closes with 1007 otherwise), so the
// check is not made twice per message. On invalid UTF-8 it does not crash
// and returns nothing out of payload's bounds, but its results (an invalid
// tag or message accepted) are undefined: only call it where the check was
// made.
func (d *SeedDecoder) DecodeValid(payload []byte) (tag, message []byte, err error) {
	if cap(d.buf) > maxRetainedScratch {
		d.buf = nil
	}
	tag, message, ok := d.decodeEncoderForm(payload)
	if d.verbatim = ok; ok {
		return tag, message, nil
	}
	return d.decodeAny(payload)
}

// decodeAny is DecodeValid for any form: key by key, whitespace allowed
// anywhere JSON allows it.
func (d *SeedDecoder) decodeAny(p []byte) (tag, message []byte, err error) {
	i := skipWS(p, 0)
	if i == len(p) {
		return nil, nil, ErrInvalidJSON
	}
	if p[i] != '{' {
		end := d.skipValue(p, i, 0)
		if end < 0 || skipWS(p, end) != len(p) {
			return nil, nil, ErrInvalidJSON
		}
		return nil, nil, ErrNotObject
	}

	tagStart, tagEnd, tagEscaped := -1, -1, false
	msgStart, msgEnd := -1, -1
	i = skipWS(p, i+1)
	if i < len(p) && p[i] == '}' {
		i++
	} else {
		for {
			if i >= len(p) || p[i] != '"' {
				return nil, nil, ErrInvalidJSON
			}
			ke, esc := scanString(p, i)
			if ke < 0 {
				return nil, nil, ErrInvalidJSON
			}
			which := d.classifyKey(p[i+1:ke-1], esc)
			if i = skipPast(p, ke, ':'); i < 0 {
				return nil, nil, ErrInvalidJSON
			}
			vs := skipWS(p, i)
			valEscaped := false
			if vs < len(p) && p[vs] == '"' {
				// A string, such as the tag: scanString directly also
				// tells whether it needs unescaping.
				i, valEscaped = scanString(p, vs)
			} else {
				i = d.skipValue(p, vs, 1)
			}
			if i < 0 {
				return nil, nil, ErrInvalidJSON
			}
			switch which {
			case keyTag:
				tagStart, tagEnd, tagEscaped = vs, i, valEscaped
			case keyMessage:
				msgStart, msgEnd = vs, i
			}
			i = skipWS(p, i)
			if i >= len(p) {
				return nil, nil, ErrInvalidJSON
			}
			if p[i] == ',' {
				i = skipWS(p, i+1)
				continue
			}
			if p[i] != '}' {
				return nil, nil, ErrInvalidJSON
			}
			i++
			break
		}
	}
	if skipWS(p, i) != len(p) {
		return nil, nil, ErrInvalidJSON
	}

	// tagEnd-tagStart == 2 is the empty string "": every escape decodes to
	// at least one byte, so only a raw empty string is empty.
	if tagStart < 0 || p[tagStart] != '"' || tagEnd-tagStart == 2 {
		return nil, nil, ErrMissingTag
	}
	tag = p[tagStart+1 : tagEnd-1]
	if tagEscaped {
		var ok bool
		d.buf, ok = appendUnescaped(d.buf[:0], tag)
		if !ok {
			return nil, nil, ErrInvalidTag
		}
		tag = d.buf
	}
	// The message is valid JSON, so one that starts with 'n' is null.
	if msgStart < 0 || p[msgStart] == 'n' {
		return nil, nil, ErrMissingMessage
	}
	return tag, p[msgStart:msgEnd], nil
}

// decodeEncoderForm decodes the form devices nearly always send, the one
// AppendSeedFrame writes: {"tag":"<tag>","message":<message>} with no
// space, no escape in the tag, no other key, and a message that is not
// null. It answers ok only for a payload of exactly that form, and then
// what the general path would; anything else (including every error) is
// left to the general path, which reads the payload from the start. The
// checks the general path makes key by key - whitespace, key
// classification, a further key - are here two comparisons of constants.
func (d *SeedDecoder) decodeEncoderForm(p []byte) (tag, message []byte, ok bool) {
	const head, mid = seedPrefix + `"`, `"` + seedMiddle
	if len(p) < len(head)+1+len(mid)+1+len(seedSuffix) || string(p[:len(head)]) != head {
		return nil, nil, false
	}
	te, esc := scanString(p, len(head)-1)
	if te < 0 || esc || te == len(head)+1 || len(p)-te < len(mid) || string(p[te-1:te-1+len(mid)]) != mid {
		return nil, nil, false
	}
	vs := te - 1 + len(mid)
	if vs >= len(p) || p[vs] == 'n' { // null, or not JSON: the general path says which
		return nil, nil, false
	}
	var ve int
	switch p[vs] {
	case '"':
		ve, _ = scanString(p, vs)
	case '{':
		if ve = skipCompactObject(p, vs); ve < 0 {
			ve = d.skipValue(p, vs, 1)
		}
	default:
		ve = d.skipValue(p, vs, 1)
	}
	if ve != len(p)-len(seedSuffix) || p[ve] != '}' {
		return nil, nil, false
	}
	return p[len(head) : te-1], p[vs:ve], true
}

// skipCompactObject is skipValue for the message devices nearly always
// send: an object without whitespace whose members are strings, numbers,
// true, false or null, no container inside ({"t":21.5,"id":"room1"}). It
// returns the index just after it, or -1 for anything else, valid or not:
// the caller then asks skipValue, which also tells an invalid payload. It
// skips what skipValue does per value for the general case - the switch
// over every kind, the nesting record, whitespace between tokens.
// p[i] is '{'.
func skipCompactObject(p []byte, i int) int {
	j := i + 1
	if j < len(p) && p[j] == '}' {
		return j + 1
	}
	for {
		if j >= len(p) || p[j] != '"' {
			return -1
		}
		if j, _ = scanString(p, j); j < 0 || j >= len(p) || p[j] != ':' {
			return -1
		}
		if j++; j >= len(p) {
			return -1
		}
		switch c := p[j]; {
		case c == '"':
			j, _ = scanString(p, j)
		case c == '-' || '0' <= c && c <= '9':
			j = scanNumber(p, j)
		case c == 't' || c == 'f' || c == 'n':
			j = skipLiteral(p, j)
		default:
			return -1
		}
		if j < 0 || j >= len(p) {
			return -1
		}
		switch p[j] {
		case ',':
			j++
		case '}':
			return j + 1
		default:
			return -1
		}
	}
}

// ValidUTF8 is utf8.Valid(p), quicker for the usual all-ASCII payload: it
// looks for a byte from 0x80 up 32 and then 8 bytes at a time, and only
// from the block holding the first one on does it need utf8.Valid (an
// ASCII prefix is whole characters, so skipping it keeps the answer). As
// fast as utf8.Valid below 100 bytes, about 1.6 times as fast at 1 KiB
// (go1.26); netpoll checks WebSocket text messages with it.
func ValidUTF8(p []byte) bool {
	le := binary.LittleEndian
	i := 0
	for ; i <= len(p)-32; i += 32 {
		if (le.Uint64(p[i:])|le.Uint64(p[i+8:])|le.Uint64(p[i+16:])|le.Uint64(p[i+24:]))&msbs != 0 {
			return utf8.Valid(p[i:])
		}
	}
	if len(p) < 8 {
		for ; i < len(p); i++ {
			if p[i] >= utf8.RuneSelf {
				return utf8.Valid(p[i:])
			}
		}
		return true
	}
	for ; i < len(p); i += 8 {
		i = min(i, len(p)-8) // the last block may overlap checked bytes
		if le.Uint64(p[i:])&msbs != 0 {
			return utf8.Valid(p[i:])
		}
	}
	return true
}

// classifyKey reports which member the raw (still escaped) key names.
func (d *SeedDecoder) classifyKey(raw []byte, escaped bool) int {
	if escaped {
		return d.classifyEscapedKey(raw)
	}
	switch string(raw) {
	case "tag":
		return keyTag
	case "message":
		return keyMessage
	}
	return keyOther
}

// classifyEscapedKey is classifyKey for a key with backslash escapes.
// Rare: a client escaping plain ASCII key names. Compare the decoded key; a
// key with a lone surrogate names neither member.
func (d *SeedDecoder) classifyEscapedKey(raw []byte) int {
	var ok bool
	d.buf, ok = appendUnescaped(d.buf[:0], raw)
	if !ok {
		return keyOther
	}
	return d.classifyKey(d.buf, false)
}

// skipPast returns the index just after byte c, which must be the first
// non-whitespace byte at or after i, or -1 if it is not.
func skipPast(p []byte, i int, c byte) int {
	if i < len(p) && p[i] == c { // no whitespace: one comparison
		return i + 1
	}
	if i = skipWS(p, i); i < len(p) && p[i] == c {
		return i + 1
	}
	return -1
}

// wsBits has bit c set for each JSON whitespace byte c.
const wsBits uint64 = 1<<' ' | 1<<'\t' | 1<<'\n' | 1<<'\r'

// skipWS returns the index of the first non-whitespace byte at or after i.
// Every byte above ' ' ends the run at the first comparison: compact JSON
// has no whitespace at all.
func skipWS(p []byte, i int) int {
	for i < len(p) {
		if c := p[i]; c > ' ' || wsBits>>c&1 == 0 {
			return i
		}
		i++
	}
	return i
}

// skipValue validates the JSON value starting at p[i] (no leading
// whitespace) nested inside base open containers, and returns the index just
// after it, or -1 if it is not valid. It iterates instead of recursing so
// that a deeply nested payload costs a bit per level, not a stack frame.
func (d *SeedDecoder) skipValue(p []byte, i, base int) int {
	var lo uint64 // kinds of the innermost-first 64 levels: bit n set = object
	n := 0        // containers opened inside this value and not yet closed
	for {
		// A value starts at p[i].
		if i >= len(p) {
			return -1
		}
		switch c := p[i]; c {
		case '{', '[':
			if base+n+1 > maxDepth {
				return -1
			}
			obj := c == '{'
			i = skipWS(p, i+1)
			if i >= len(p) {
				return -1
			}
			if obj && p[i] == '}' || !obj && p[i] == ']' {
				i++ // empty container: a complete value
				break
			}
			d.push(&lo, n, obj)
			n++
			if obj {
				goto key
			}
			continue
		case '"':
			if i, _ = scanString(p, i); i < 0 {
				return -1
			}
		case 't', 'f', 'n':
			if i = skipLiteral(p, i); i < 0 {
				return -1
			}
		default:
			if i = scanNumber(p, i); i < 0 {
				return -1
			}
		}
		// A value ended at i: close finished containers, then either the
		// whole value is done or the next element starts.
		for {
			if n == 0 {
				return i
			}
			i = skipWS(p, i)
			if i >= len(p) {
				return -1
			}
			obj := d.isObject(lo, n-1)
			if p[i] == ',' {
				i = skipWS(p, i+1)
				if obj {
					goto key
				}
				break
			}
			if obj && p[i] == '}' || !obj && p[i] == ']' {
				i++
				n--
				continue
			}
			return -1
		}
		continue
	key:
		// An object member starts at p[i]: `"key" :` and whitespace, then
		// its value.
		if i >= len(p) || p[i] != '"' {
			return -1
		}
		if i, _ = scanString(p, i); i < 0 {
			return -1
		}
		if i = skipPast(p, i, ':'); i < 0 {
			return -1
		}
		i = skipWS(p, i)
	}
}

// skipLiteral returns the index after the literal true, false or null
// starting at p[i] (whose first byte is 't', 'f' or 'n'), or -1.
func skipLiteral(p []byte, i int) int {
	lit := "null"
	switch p[i] {
	case 't':
		lit = "true"
	case 'f':
		lit = "false"
	}
	if len(p)-i < len(lit) || string(p[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// push records the kind of nesting level n.
func (d *SeedDecoder) push(lo *uint64, n int, obj bool) {
	var bit uint64
	if obj {
		bit = 1
	}
	if n < 64 {
		*lo = *lo&^(1<<n) | bit<<n
		return
	}
	k := n - 64
	for len(d.deep) <= k/64 {
		d.deep = append(d.deep, 0)
	}
	w := &d.deep[k/64]
	*w = *w&^(1<<(k%64)) | bit<<(k%64)
}

// isObject reports whether nesting level n is an object.
func (d *SeedDecoder) isObject(lo uint64, n int) bool {
	if n < 64 {
		return lo>>n&1 == 1
	}
	k := n - 64
	return d.deep[k/64]>>(k%64)&1 == 1
}

// Word-at-a-time (SWAR) byte tests on eight bytes loaded little-endian, so
// that byte k of the word is the k-th byte in memory. Each test sets the top
// bit of every byte that matches, but a borrow or carry out of a matching
// byte may also set it in bytes above: only the lowest set bit is exact,
// which is all firstByte needs.
const (
	lsbs = 0x0101010101010101 // the low bit of every byte
	msbs = 0x8080808080808080 // the top bit of every byte
)

// firstByte returns the index (0..7) of the byte whose top bit is the
// lowest set bit of a non-zero SWAR test result m.
func firstByte(m uint64) int { return bits.TrailingZeros64(m) >> 3 }

// stringStops flags the bytes of w that do not stand for themselves in a
// JSON string: '"', '\\' and control characters (below 0x20). Bytes from
// 0x80 up are plain, like in plainString. A byte x below 0x80 gets its top
// bit from x^'"'-1 exactly when x is '"' (0 wraps to 0xFF), from x^'\\'-1
// when x is '\\', and from x-0x20 when x is below 0x20; the XOR constants
// are below 0x80 and keep every byte's top bit, so one &^w clears the bytes
// from 0x80 up for all three tests.
func stringStops(w uint64) uint64 {
	q := w ^ (lsbs * '"')
	b := w ^ (lsbs * '\\')
	return ((q - lsbs) | (b - lsbs) | (w - lsbs*0x20)) &^ w & msbs
}

// plainString marks the bytes that stand for themselves inside a JSON
// string: everything but '"', '\\' and control characters. (UTF-8 validity
// was already checked for the whole payload.)
var plainString = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString validates the JSON string whose opening quote is p[i]; it
// returns the index after the closing quote (or -1) and whether the string
// contains backslash escapes. It skips plain bytes eight at a time while
// eight remain, then byte by byte.
func scanString(p []byte, i int) (end int, escaped bool) {
	j := i + 1
	_ = p[j:] // p[i] is the quote, so j <= len(p); lets the compiler drop the word loop's checks
	for {
		for ; j <= len(p)-8; j += 8 {
			if m := stringStops(binary.LittleEndian.Uint64(p[j:])); m != 0 {
				j += firstByte(m)
				goto stop
			}
		}
		for j < len(p) && plainString[p[j]] {
			j++
		}
		if j >= len(p) {
			return -1, false
		}
	stop:
		switch p[j] {
		case '"':
			return j + 1, escaped
		case '\\':
			escaped = true
			if j+1 >= len(p) {
				return -1, false
			}
			switch p[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if len(p)-j < 6 || !isHex(p[j+2]) || !isHex(p[j+3]) || !isHex(p[j+4]) || !isHex(p[j+5]) {
					return -1, false
				}
				j += 6
			default:
				return -1, false
			}
		default: // control character
			return -1, false
		}
	}
}

// scanNumber validates the JSON number starting at p[i] and returns the
// index after it, or -1.
func scanNumber(p []byte, i int) int {
	if p[i] == '-' {
		i++
	}
	if i >= len(p) {
		return -1
	}
	switch {
	case p[i] == '0':
		i++
	case '1' <= p[i] && p[i] <= '9':
		i = skipDigits(p, i+1)
	default:
		return -1
	}
	if i < len(p) && p[i] == '.' {
		j := skipDigits(p, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		i++
		if i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		j := skipDigits(p, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

// skipDigits returns the index of the first byte at or after i (at most
// len(p)) that is not an ASCII digit, eight bytes at a time while eight
// remain.
func skipDigits(p []byte, i int) int {
	_ = p[i:] // 0 <= i <= len(p): lets the compiler drop the word loop's checks
	for ; i <= len(p)-8; i += 8 {
		if m := nonDigits(binary.LittleEndian.Uint64(p[i:])); m != 0 {
			return i + firstByte(m)
		}
	}
	for i < len(p) && '0' <= p[i] && p[i] <= '9' {
		i++
	}
	return i
}

// nonDigits flags the bytes of w that are not '0'..'9' (SWAR, see lsbs):
// for a byte x below 0x80, x-'0' wraps to 0x80 or more when x is below '0'
// and x+(0x80-'9'-1) reaches 0x80 when x is above '9'; |w flags the bytes
// from 0x80 up (whose sum may carry out and wrap below 0x80).
func nonDigits(w uint64) uint64 {
	return ((w - lsbs*'0') | (w + lsbs*(0x80-'9'-1)) | w) & msbs
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func hexVal(c byte) rune {
	switch {
	case c <= '9':
		return rune(c - '0')
	case c >= 'a':
		return rune(c - 'a' + 10)
	default:
		return rune(c - 'A' + 10)
	}
}

// hex4 decodes four hex digits already checked by scanString.
func hex4(s []byte) rune {
	return hexVal(s[0])<<12 | hexVal(s[1])<<8 | hexVal(s[2])<<4 | hexVal(s[3])
}

// appendUnescaped appends the decoded contents of a JSON string (s is the
// text between the quotes, already validated by scanString) to dst. It
// reports false if s escapes an unpaired UTF-16 surrogate.
func appendUnescaped(dst, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			j := bytes.IndexByte(s[i:], '\\')
			if j < 0 {
				return append(dst, s[i:]...), true
			}
			dst = append(dst, s[i:i+j]...)
			i += j
			continue
		}
		switch c := s[i+1]; c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				// Only a high surrogate directly followed by an escaped low
				// surrogate is a character.
				if r >= 0xDC00 || len(s)-i < 6 || s[i] != '\\' || s[i+1] != 'u' {
					return dst, false
				}
				r2 := hex4(s[i+2 : i+6])
				if r2 < 0xDC00 || r2 > 0xDFFF {
					return dst, false
				}
				r = utf16.DecodeRune(r, r2)
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
		i += 2
	}
	return dst, true
}
