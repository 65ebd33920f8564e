package compare

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/gobwas/ws"
)

// Bounds of the NATS decoder. The server's own default control line limit
// is 4 KiB and its payload limit 1 MiB; the decoder allows more so that it
// never refuses what a server may legitimately send, but not without limit.
const (
	natsMaxLine    = 64 << 10
	natsMaxPayload = 64 << 20
)

var errNATSMalformed = errors.New("nats: malformed protocol line")

// natsOp is one decoded server→client protocol operation. Every slice
// aliases the decoded buffer.
type natsOp struct {
	Op      string // "INFO", "MSG", "HMSG", "PING", "PONG", "+OK", "-ERR"
	Subject []byte // MSG, HMSG
	Sid     []byte // MSG, HMSG
	Reply   []byte // MSG, HMSG (optional)
	Header  []byte // HMSG: the header block, "NATS/1.0…\r\n\r\n"
	Payload []byte // MSG, HMSG
	Arg     []byte // INFO: the JSON object; -ERR: the quoted message
}

// parseNATS decodes the operation at the start of b. It returns n == 0 and
// no error when b holds only part of one. Operation names are matched
// without regard to case, as the server does; lines end in CRLF.
func parseNATS(b []byte) (n int, op natsOp, err error) {
	lim := len(b)
	if lim > natsMaxLine+2 {
		lim = natsMaxLine + 2
	}
	nl := bytes.IndexByte(b[:lim], '\n')
	if nl < 0 {
		if len(b) > natsMaxLine {
			return 0, op, fmt.Errorf("%w: no line end within %d bytes", errNATSMalformed, natsMaxLine)
		}
		return 0, op, nil
	}
	if nl == 0 || b[nl-1] != '\r' {
		return 0, op, fmt.Errorf("%w: line does not end in CRLF", errNATSMalformed)
	}
	line := b[:nl-1]
	n = nl + 1
	name, args := cutField(line)
	switch {
	case equalFold(name, "MSG"), equalFold(name, "HMSG"):
		hdr := equalFold(name, "HMSG")
		var f [5][]byte
		k := 0
		for rest := args; len(rest) > 0; k++ {
			if k == len(f) {
				return 0, op, fmt.Errorf("%w: too many arguments", errNATSMalformed)
			}
			f[k], rest = cutField(rest)
		}
		sizes := 1
		if hdr {
			sizes = 2
		}
		if k != 2+sizes && k != 3+sizes {
			return 0, op, fmt.Errorf("%w: %s has %d arguments", errNATSMalformed, name, k)
		}
		op.Subject, op.Sid = f[0], f[1]
		if k == 3+sizes {
			op.Reply = f[2]
		}
		total, ok := parseSize(f[k-1])
		if !ok {
			return 0, op, fmt.Errorf("%w: bad size %q", errNATSMalformed, f[k-1])
		}
		hlen := 0
		if hdr {
			if hlen, ok = parseSize(f[k-2]); !ok || hlen > total {
				return 0, op, fmt.Errorf("%w: bad header size %q", errNATSMalformed, f[k-2])
			}
		}
		if len(b)-n < total+2 {
			return 0, op, nil
		}
		body := b[n : n+total]
		if b[n+total] != '\r' || b[n+total+1] != '\n' {
			return 0, op, fmt.Errorf("%w: payload not followed by CRLF", errNATSMalformed)
		}
		op.Op = "MSG"
		if hdr {
			op.Op = "HMSG"
		}
		op.Header, op.Payload = body[:hlen], body[hlen:]
		return n + total + 2, op, nil
	case equalFold(name, "INFO"):
		op.Op, op.Arg = "INFO", args
	case equalFold(name, "PING") && len(args) == 0:
		op.Op = "PING"
	case equalFold(name, "PONG") && len(args) == 0:
		op.Op = "PONG"
	case equalFold(name, "+OK") && len(args) == 0:
		op.Op = "+OK"
	case equalFold(name, "-ERR"):
		op.Op, op.Arg = "-ERR", args
	default:
		return 0, op, fmt.Errorf("%w: unknown operation %q", errNATSMalformed, truncate(name, 16))
	}
	return n, op, nil
}

// cutField returns the first space- or tab-separated field of s and what
// follows it with the separators skipped.
func cutField(s []byte) (field, rest []byte) {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	s = s[i:]
	i = 0
	for i < len(s) && s[i] != ' ' && s[i] != '\t' {
		i++
	}
	field, rest = s[:i], s[i:]
	i = 0
	for i < len(rest) && (rest[i] == ' ' || rest[i] == '\t') {
		i++
	}
	return field, rest[i:]
}

// parseSize parses a decimal byte count no larger than natsMaxPayload.
func parseSize(s []byte) (int, bool) {
	if len(s) == 0 || len(s) > 9 {
		return 0, false
	}
	v := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, v <= natsMaxPayload
}

func equalFold(b []byte, upper string) bool {
	if len(b) != len(upper) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != upper[i] {
			return false
		}
	}
	return true
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// appendNATSSubject appends topic, written with MQTT conventions ("/"
// between levels, "+" one level, "#" the rest), as a NATS subject ("."
// between tokens, "*", ">"). Topics whose meaning would change (a "." in a
// level, an empty level, white space) are refused; wildcards only when
// filter is true.
func appendNATSSubject(dst []byte, topic string, filter bool) ([]byte, error) {
	if topic == "" {
		return dst, errors.New("nats: empty topic")
	}
	start := 0
	for i := 0; i <= len(topic); i++ {
		if i < len(topic) && topic[i] != '/' {
			c := topic[i]
			if c <= ' ' || c == '.' || c == '*' || c == '>' || c == 0x7f {
				return dst, fmt.Errorf("nats: topic %q has a byte (%q) with no equivalent in a NATS subject", topic, c)
			}
			continue
		}
		level := topic[start:i]
		switch {
		case level == "":
			return dst, fmt.Errorf("nats: topic %q has an empty level", topic)
		case level == "+" || level == "#":
			if !filter {
				return dst, fmt.Errorf("nats: wildcard in topic name %q", topic)
			}
			if level == "#" && i != len(topic) {
				return dst, fmt.Errorf("nats: '#' is not the last level of %q", topic)
			}
			if level == "+" {
				dst = append(dst, '*')
			} else {
				dst = append(dst, '>')
			}
		default:
			for j := 0; j < len(level); j++ {
				if level[j] == '+' || level[j] == '#' {
					return dst, fmt.Errorf("nats: wildcard inside a level of %q", topic)
				}
			}
			dst = append(dst, level...)
		}
		if i < len(topic) {
			dst = append(dst, '.')
		}
		start = i + 1
	}
	return dst, nil
}

// appendNATSPub appends PUB <subject> <size>\r\n<payload>\r\n.
func appendNATSPub(dst []byte, topic string, payload []byte) ([]byte, error) {
	if len(payload) > natsMaxPayload {
		return dst, fmt.Errorf("nats: payload larger than %d bytes", natsMaxPayload)
	}
	start := len(dst)
	dst = append(dst, "PUB "...)
	dst, err := appendNATSSubject(dst, topic, false)
	if err != nil {
		return dst[:start], err
	}
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(len(payload)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, payload...)
	return append(dst, "\r\n"...), nil
}

// appendNATSConnect appends CONNECT (no verbose +OK acknowledgements, no
// echo of the connection's own publishes, as in Gatecast's seed protocol),
// one SUB per filter (sid = index + 1) and a PING whose PONG confirms that
// the server has processed all of them.
func appendNATSConnect(dst []byte, name string, filters []string) ([]byte, error) {
	opts, _ := json.Marshal(map[string]any{
		"verbose": false, "pedantic": false, "tls_required": false, "name": name,
		"lang": "go", "version": "gatecast-bench", "protocol": 1, "echo": false,
		"headers": false, "no_responders": false,
	})
	dst = append(dst, "CONNECT "...)
	dst = append(dst, opts...)
	dst = append(dst, "\r\n"...)
	for i, f := range filters {
		dst = append(dst, "SUB "...)
		var err error
		if dst, err = appendNATSSubject(dst, f, true); err != nil {
			return dst, err
		}
		dst = append(dst, ' ')
		dst = strconv.AppendInt(dst, int64(i+1), 10)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "PING\r\n"...), nil
}

// natsWire is the NATS client protocol over WebSocket: the server sends
// binary frames carrying a byte stream of operations (an operation may span
// frames, a frame may carry several).
type natsWire struct{}

func (natsWire) opcode() ws.OpCode { return ws.OpBinary }
func (natsWire) stream() bool      { return true }

func (natsWire) appendPublish(dst []byte, topic string, payload []byte) ([]byte, error) {
	return appendNATSPub(dst, topic, payload)
}

// appendKeepAlive: the NATS server pings clients itself (the reader answers
// with PONG), so the client sends nothing.
func (natsWire) appendKeepAlive(dst []byte) []byte { return dst }

var natsPong = []byte("PONG\r\n")

func (natsWire) parse(b []byte) (int, event, error) {
	n, op, err := parseNATS(b)
	if err != nil || n == 0 {
		return n, event{}, err
	}
	switch op.Op {
	case "MSG", "HMSG":
		return n, event{kind: evMessage, topic: op.Subject, payload: op.Payload}, nil
	case "PING":
		return n, event{kind: evReply, reply: natsPong}, nil
	case "PONG":
		return n, event{kind: evAck, ack: natsAckPong}, nil
	case "-ERR":
		return n, event{}, fmt.Errorf("nats: server error %s", truncate(op.Arg, 200))
	default: // INFO, +OK
		return n, event{kind: evNone}, nil
	}
}

// natsAckPong is the ack code of PONG, the confirmation of a PING.
const natsAckPong = 1

// NATS is the NATS client protocol over the NATS server's WebSocket
// listener (anonymous, no TLS).
type NATS struct {
	URL string // ws://host:port/
}

// Name implements Protocol.
func (NATS) Name() string { return "nats" }

// Dial implements Protocol: CONNECT, one SUB per filter and a PING, then
// waits for the PONG (the server handles a connection's operations in
// order, so the PONG means the subscriptions are in place).
func (n NATS) Dial(ctx context.Context, clientID string, filters []string) (*Conn, error) {
	c, err := dialWS(ctx, n.URL, nil, nil, natsWire{})
	if err != nil {
		return nil, err
	}
	err = c.handshake(ctx, func() error {
		b, err := appendNATSConnect(nil, clientID, filters)
		if err != nil {
			return err
		}
		if err := c.writeData(b); err != nil {
			return err
		}
		return c.awaitAck(natsAckPong)
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("nats %s (client %s): %w", n.URL, strconv.Quote(clientID), err)
	}
	return c, nil
}
