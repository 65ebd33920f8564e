package compare

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/gatecast/gatecast/proto"
)

// appendJSONString appends s as a JSON string literal.
func appendJSONString(dst []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return dst, errors.New("seed: topic is not UTF-8")
	}
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"'), nil
}

// appendSeedPublish appends the seed client frame {"tag":<topic>,"message":<payload>};
// payload must be one JSON value (the harness's payload is a JSON object).
func appendSeedPublish(dst []byte, topic string, payload []byte) ([]byte, error) {
	if topic == "" {
		return dst, errors.New("seed: empty topic")
	}
	if len(payload) == 0 {
		return dst, errors.New("seed: empty message")
	}
	start := len(dst)
	dst = append(dst, `{"tag":`...)
	dst, err := appendJSONString(dst, topic)
	if err != nil {
		return dst[:start], err
	}
	dst = append(dst, `,"message":`...)
	dst = append(dst, payload...)
	return append(dst, '}'), nil
}

// seedWire is Gatecast's seed-compatible protocol: one JSON object per
// WebSocket text message, the same shape both ways. Its decoder is
// proto.SeedDecoder (the same shape in both directions), which keeps state
// only for escaped tags, so each connection has its own.
type seedWire struct {
	dec proto.SeedDecoder
}

func (*seedWire) opcode() ws.OpCode { return ws.OpText }
func (*seedWire) stream() bool      { return false }

func (*seedWire) appendPublish(dst []byte, topic string, payload []byte) ([]byte, error) {
	return appendSeedPublish(dst, topic, payload)
}

// appendKeepAlive: Gatecast pings idle connections itself and the reader
// answers, so the client sends nothing.
func (*seedWire) appendKeepAlive(dst []byte) []byte { return dst }

// parse decodes one whole text message: the harness's own deliveries by
// seedBenchDelivery, anything else by proto.SeedDecoder.
func (w *seedWire) parse(b []byte) (int, event, error) {
	if tag, msg, t, ok := seedBenchDelivery(b); ok {
		return len(b), event{kind: evMessage, topic: tag, payload: msg, t: t, hasT: true}, nil
	}
	tag, msg, err := w.dec.Decode(b)
	if err != nil {
		return 0, event{}, fmt.Errorf("seed: delivery: %w", err)
	}
	return len(b), event{kind: evMessage, topic: tag, payload: msg}, nil
}

// Seed is Gatecast's seed-compatible protocol (docs/protocol-seed.md): the
// token in `Authorization: Token …`, the subscriptions in the `Tag` header,
// JSON text frames {"tag","message"}.
type Seed struct {
	URL   string // ws://host:port/ws/brocker/
	Token string // secret of a token with a readwrite grant covering every topic used
}

// Name implements Protocol.
func (Seed) Name() string { return "seed" }

// Dial implements Protocol. The seed protocol has no subscription
// acknowledgement: a refused connection is upgraded and then closed with a
// 4xxx code, which the first Next reports. The scenarios therefore prove
// every path with warm-up messages before they measure.
func (s Seed) Dial(ctx context.Context, clientID string, filters []string) (*Conn, error) {
	if len(filters) == 0 {
		return nil, errors.New("seed: a connection needs at least one subscription (the Tag header is required)")
	}
	for _, f := range filters {
		if f == "" || strings.ContainsAny(f, ",\r\n") {
			return nil, fmt.Errorf("seed: filter %s cannot be sent in a Tag header", strconv.Quote(f))
		}
	}
	h := http.Header{}
	h.Set("Authorization", "Token "+s.Token)
	h.Set("Tag", strings.Join(filters, ","))
	c, err := dialWS(ctx, s.URL, nil, h, &seedWire{})
	if err != nil {
		return nil, fmt.Errorf("seed %s (client %s): %w", s.URL, strconv.Quote(clientID), err)
	}
	return c, nil
}

// seedBenchDelivery decodes a delivery of the harness's own payload written
// the way Gatecast writes it, {"tag":"<topic>","message":{"t":<n>,"p":"xx…"}}
// with no white space, a topic of printable ASCII without escapes and a
// padding of 'x' only (appendPayload), and returns the topic, the message
// and its send time. ok is false for anything else, which then goes to the
// general decoder: every frame it accepts is one proto.SeedDecoder accepts
// with the same tag and message (TestSeedBenchDeliveryAgreesWithDecoder,
// FuzzSeedBenchDelivery), and t is what payloadTime returns for the message,
// so the fast path changes the cost of a delivery, not its outcome.
func seedBenchDelivery(b []byte) (tag, msg []byte, t int64, ok bool) {
	const head, mid = `{"tag":"`, `","message":`
	le := binary.LittleEndian
	if len(b) < len(head)+1+len(mid)+len(`{"t":1,"p":""}`)+1 || le.Uint64(b) != le.Uint64([]byte(head)) || b[len(b)-1] != '}' {
		return nil, nil, 0, false
	}
	q := bytes.IndexByte(b[len(head):], '"')
	if q <= 0 {
		return nil, nil, 0, false
	}
	i := len(head) + q
	tag = b[len(head):i]
	for _, c := range tag {
		if c < 0x20 || c > 0x7e || c == '\\' {
			return nil, nil, 0, false
		}
	}
	if len(b)-i < len(mid) || string(b[i:i+len(mid)]) != mid {
		return nil, nil, 0, false
	}
	msg = b[i+len(mid) : len(b)-1]
	if t, ok = benchPayloadTime(msg); !ok {
		return nil, nil, 0, false
	}
	return tag, msg, t, true
}

// benchPayloadTime checks that p is exactly a payload appendPayload builds
// ({"t":<n>,"p":"x…"}: n a JSON integer without leading zeros, the padding
// 'x' only) and returns its t as payloadTime does (ok false for t == 0 and
// for what does not fit in int64, as there).
func benchPayloadTime(p []byte) (int64, bool) {
	const prefix, mid, end = `{"t":`, `,"p":"`, `"}`
	i := len(prefix)
	if len(p) < len(`{"t":1,"p":""}`) || string(p[:i]) != prefix {
		return 0, false
	}
	neg := p[i] == '-'
	if neg {
		i++
	}
	if p[i] < '1' || p[i] > '9' {
		return 0, false
	}
	start := i
	var v uint64
	for i-start < 16 && len(p)-i >= 8 { // 8 digits at a time, at most 16 so
		d, ok := digits8(p[i:])
		if !ok {
			break
		}
		v = v*100_000_000 + d
		i += 8
	}
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		if i-start >= 19 { // more than 19 digits cannot fit in int64
			return 0, false
		}
		v = v*10 + uint64(p[i]-'0')
	}
	var t int64
	switch {
	case neg && v <= 1<<63:
		t = -int64(v-1) - 1
	case !neg && v <= 1<<63-1:
		t = int64(v)
	default:
		return 0, false
	}
	if len(p)-i < len(mid)+len(end) || string(p[i:i+len(mid)]) != mid || string(p[len(p)-len(end):]) != end {
		return 0, false
	}
	pad := p[i+len(mid) : len(p)-len(end)]
	const xs = 0x7878787878787878
	j := 0
	for ; j+8 <= len(pad); j += 8 {
		if binary.LittleEndian.Uint64(pad[j:]) != xs {
			return 0, false
		}
	}
	for ; j < len(pad); j++ {
		if pad[j] != 'x' {
			return 0, false
		}
	}
	return t, true
}

// digits8 returns the value of the 8 ASCII digits b[:8] (b[0] the most
// significant) and whether all 8 are digits, in a few word operations
// instead of a loop: a Unix time in nanoseconds has 19 digits.
func digits8(b []byte) (uint64, bool) {
	const nibbles, threes, sixes = 0xF0F0F0F0F0F0F0F0, 0x3030303030303030, 0x0606060606060606
	v := binary.LittleEndian.Uint64(b)
	// Every byte is 0x30..0x39: its high nibble is 3, and adding 6 does
	// not carry out of its low nibble (no carry crosses bytes either: the
	// sums are at most 0x45).
	if v&nibbles != threes || (v+sixes)&nibbles != threes {
		return 0, false
	}
	v -= threes
	v = (v*10 + v>>8) & 0x00FF00FF00FF00FF      // pairs of digits in 16-bit lanes
	v = (v*100 + v>>16) & 0x0000FFFF0000FFFF    // 4 digits in 32-bit lanes
	return (v*10000 + v>>32) & 0xFFFFFFFF, true // all 8
}
