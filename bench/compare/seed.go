package compare

import (
	"context"
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

// parse decodes one whole text message.
func (w *seedWire) parse(b []byte) (int, event, error) {
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
