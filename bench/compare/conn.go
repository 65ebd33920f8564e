package compare

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Protocol is how the harness speaks to one broker, over WebSocket or (MQTT)
// plain TCP. Implementations: Seed (Gatecast), MQTT (Mosquitto, and every
// broker of the MQTT table), NATS (nats-server).
type Protocol interface {
	// Name names the protocol in reports: "seed", "mqtt", "nats".
	Name() string
	// Dial opens one connection, logs in as clientID and
	// subscribes to filters, written with MQTT conventions ("/" between
	// levels, "+" one level, "#" the rest); the NATS client translates
	// them. It returns once the broker has confirmed whatever its protocol
	// lets it confirm (CONNACK and SUBACK, PONG after SUB; nothing for the
	// seed protocol).
	Dial(ctx context.Context, clientID string, filters []string) (*Conn, error)
}

// Limits of the WebSocket reader: a frame or reassembled message larger
// than this is a protocol error, not a reason to allocate without bound.
const maxMessage = 64 << 20

// handshakeTimeout bounds a dial plus the protocol's log-in when ctx has no
// earlier deadline.
const handshakeTimeout = 15 * time.Second

// eventKind is what one decoded server unit means to the client.
type eventKind uint8

const (
	evNone    eventKind = iota // nothing for the caller (INFO, PINGRESP…)
	evMessage                  // a delivery: topic and payload
	evAck                      // a handshake confirmation: ack
	evReply                    // the server asks for reply to be written (NATS PING)
)

type event struct {
	kind           eventKind
	topic, payload []byte
	ack            int
	reply          []byte
	// t is the payload's send time when the decoder read it on the way
	// (hasT; seed deliveries of the harness's payload), else payloadTime
	// reads it.
	t    int64
	hasT bool
}

// wire is one protocol's client codec. The methods that decode run only on
// the connection's reader goroutine; appendPublish only on its publisher.
type wire interface {
	// opcode is the WebSocket opcode of the client's data frames.
	opcode() ws.OpCode
	// stream reports whether the server's data frames carry a byte stream
	// (MQTT, NATS: units may span or share frames) rather than one unit
	// per WebSocket message (seed).
	stream() bool
	appendPublish(dst []byte, topic string, payload []byte) ([]byte, error)
	// appendKeepAlive appends what the client must send to stay connected
	// while idle (MQTT PINGREQ), or nothing.
	appendKeepAlive(dst []byte) []byte
	// parse decodes one unit at the start of b: n == 0 without an error
	// means more bytes are needed (stream protocols only). Slices in the
	// event alias b.
	parse(b []byte) (n int, ev event, err error)
}

// Conn is one client connection. Concurrency: one goroutine reads (Next);
// one goroutine publishes (AppendPublish, Flush, Publish); KeepAlive and
// Close may be called from any goroutine. Writes of whole frames are
// serialised by a mutex, so a frame the reader writes (pong, NATS PONG)
// never splits a publisher's frame.
type Conn struct {
	nc net.Conn
	br *connReader
	w  wire
	// raw: the protocol's byte stream straight on a TCP socket (MQTT over
	// TCP), without WebSocket framing; w.stream() is then true.
	raw bool
	// seed: w is the seed protocol's (one message per frame, evMessage or
	// an error for every data frame), which NextTimed decodes directly.
	seed bool

	wmu     sync.Mutex
	ctl     []byte // frames written under wmu by any goroutine
	ctlMask uint32 // mask generator state, under wmu

	// Publisher side: frames queued by AppendPublish until Flush.
	out     []byte
	tmp     []byte
	frame   []byte
	pubMask uint32

	// Reader side.
	msg    []byte // the current WebSocket message (seed) or the stream buffer
	off    int    // stream protocols: start of the undecoded bytes in msg
	ctlBuf [125]byte

	closed atomic.Bool
}

var connSeq atomic.Uint32

func dialWS(ctx context.Context, url string, protocols []string, h http.Header, w wire) (*Conn, error) {
	d := ws.Dialer{Timeout: handshakeTimeout, Protocols: protocols}
	if h != nil {
		d.Header = ws.HandshakeHeaderHTTP(h)
	}
	nc, br, _, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	// Bytes the server sent right behind its handshake response (NATS
	// sends INFO at once) sit in br; read them before the socket.
	var r io.Reader = nc
	if br != nil {
		r = io.MultiReader(br, nc)
	}
	seed := connSeq.Add(0x9E3779B9) | 1
	_, isSeed := w.(*seedWire)
	return &Conn{nc: nc, br: newConnReader(r), w: w, seed: isSeed, ctlMask: seed, pubMask: seed * 2654435761}, nil
}

// dialTCP opens a plain TCP connection for a stream protocol (MQTT over
// TCP). Go's dialer sets TCP_NODELAY, as the WebSocket dial does.
func dialTCP(ctx context.Context, addr string, w wire) (*Conn, error) {
	if !w.stream() {
		return nil, errors.New("a protocol framed by WebSocket messages cannot run over plain TCP")
	}
	d := net.Dialer{Timeout: handshakeTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Conn{nc: nc, br: newConnReader(nc), w: w, raw: true}, nil
}

// handshake runs f with the connection's deadline bounded by ctx and
// handshakeTimeout, and stops it early when ctx ends.
func (c *Conn) handshake(ctx context.Context, f func() error) error {
	dl := time.Now().Add(handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.nc.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	err := f()
	if !stop() && err != nil {
		err = fmt.Errorf("%w (%v)", err, ctx.Err())
	}
	c.nc.SetDeadline(time.Time{})
	return err
}

// nextMask returns a fresh masking key from the xorshift state s. Clients
// must mask every frame (RFC 6455 §5.3); the key need not be
// cryptographically random for a load generator on loopback.
func nextMask(s *uint32) [4]byte {
	x := *s
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	*s = x
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], x)
	return m
}

// appendClientFrame appends one final, masked client frame.
func appendClientFrame(dst []byte, op ws.OpCode, payload []byte, mask [4]byte) []byte {
	n := len(payload)
	dst = append(dst, 0x80|byte(op))
	switch {
	case n <= 125:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}

// writeFrame writes one frame under the write lock. On a raw connection
// a data "frame" is its payload as it is, and there are no control frames.
func (c *Conn) writeFrame(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.raw {
		if op.IsControl() {
			return nil
		}
		_, err := c.nc.Write(payload)
		return err
	}
	c.ctl = appendClientFrame(c.ctl[:0], op, payload, nextMask(&c.ctlMask))
	_, err := c.nc.Write(c.ctl)
	return err
}

// writeData writes payload as one data frame of the protocol's opcode.
func (c *Conn) writeData(payload []byte) error { return c.writeFrame(c.w.opcode(), payload) }

// AppendPublish queues one publish of payload on topic (MQTT conventions,
// see Protocol.Dial) without writing it; Flush writes everything queued in
// one write. Only the publisher goroutine may call it.
func (c *Conn) AppendPublish(topic string, payload []byte) error {
	return c.AppendPublishes(topic, payload, 1)
}

// AppendPublishes queues n publishes of the same payload on topic, like n
// calls of AppendPublish: the publish (and its WebSocket frame) is encoded
// and masked once, then copied n times. The frames of one call share one
// masking key, a fresh one per call (RFC 6455 §5.3 asks for a fresh key per
// frame so that a client cannot choose the bytes an intermediary sees; no
// intermediary is between the harness and a broker on loopback, and the
// brokers only unmask). The harness's publishers send the messages of one
// wake-up with one send time, so they are identical anyway.
func (c *Conn) AppendPublishes(topic string, payload []byte, n int) error {
	if n <= 0 {
		return nil
	}
	var err error
	if c.tmp, err = c.w.appendPublish(c.tmp[:0], topic, payload); err != nil {
		return err
	}
	f := c.tmp
	if !c.raw {
		c.frame = appendClientFrame(c.frame[:0], c.w.opcode(), c.tmp, nextMask(&c.pubMask))
		f = c.frame
	}
	c.out = appendRepeated(c.out, f, n)
	return nil
}

// appendRepeated appends n copies of f to dst: one growth, then copies
// that double what is already there.
func appendRepeated(dst, f []byte, n int) []byte {
	start := len(dst)
	total := len(f) * n
	dst = slices.Grow(dst, total)[:start+total]
	done := copy(dst[start:], f)
	for done < total {
		done += copy(dst[start+done:], dst[start:start+done])
	}
	return dst
}

// Flush writes the frames queued by AppendPublish.
func (c *Conn) Flush() error {
	if len(c.out) == 0 {
		return nil
	}
	c.wmu.Lock()
	_, err := c.nc.Write(c.out)
	c.wmu.Unlock()
	c.out = c.out[:0]
	return err
}

// Publish writes one publish at once.
func (c *Conn) Publish(topic string, payload []byte) error {
	if err := c.AppendPublish(topic, payload); err != nil {
		return err
	}
	return c.Flush()
}

// KeepAlive sends what the protocol needs to keep an idle connection open
// (an MQTT PINGREQ); for the others the server pings and Next answers.
func (c *Conn) KeepAlive() error {
	var b [8]byte
	p := c.w.appendKeepAlive(b[:0])
	if len(p) == 0 {
		return nil
	}
	return c.writeData(p)
}

// Close closes the socket. Safe to call more than once, from any goroutine.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.nc.Close()
}

// RecvTime is the receive time, in Unix nanoseconds, of the message the
// latest Next returned: the moment the socket read that completed it
// returned (time.Now once per read rather than once per message). It is no
// earlier than the message's arrival in the socket and no later than the
// return of Next, so a latency computed from it can only be shorter than
// one read at the return of Next, by the time the reader spent on the
// messages before it in the same read (one read is at most readBufMax =
// 256 KiB: ~2,600 fan-in deliveries, decoded at ~50 ns each, ~0.13 ms at
// the very worst) plus any time the reader goroutine waited for the CPU in
// between; that part was the harness's delay, never the broker's.
func (c *Conn) RecvTime() int64 { return c.br.at }

// SetReadDeadline bounds the next reads (Next); the zero time removes the
// bound.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// Next returns the next message delivered to this connection: its topic as
// the broker wrote it and its payload. Both are valid only until the next
// call. Pings are answered and acknowledgements skipped on the way. A close
// frame from the server ends with a wsutil.ClosedError carrying its code.
func (c *Conn) Next() (topic, payload []byte, err error) {
	ev, err := c.nextMessage()
	return ev.topic, ev.payload, err
}

// NextTimed is Next for the subscribers of the scenarios: the payload and
// its send time, ok as payloadTime's (false: not the harness's payload).
func (c *Conn) NextTimed() (payload []byte, t int64, ok bool, err error) {
	if c.seed {
		// The fan-in subscriber's path, millions of times a second: the
		// frame where it lies, the harness's own delivery decoded by
		// seedBenchDelivery; anything else as nextEvent would.
		f, ok, err := c.bufferedFrame()
		if err != nil {
			return nil, 0, false, err
		}
		if ok {
			if _, msg, t, ok := seedBenchDelivery(f); ok {
				return msg, t, true, nil
			}
			_, ev, err := c.w.parse(f)
			if err != nil {
				return nil, 0, false, err
			}
			t, ok = payloadTime(ev.payload)
			return ev.payload, t, ok, nil
		}
	}
	ev, err := c.nextMessage()
	if err != nil {
		return nil, 0, false, err
	}
	if ev.hasT {
		return ev.payload, ev.t, true, nil
	}
	t, ok = payloadTime(ev.payload)
	return ev.payload, t, ok, nil
}

func (c *Conn) nextMessage() (event, error) {
	for {
		ev, err := c.nextEvent()
		if err != nil {
			return event{}, err
		}
		switch ev.kind {
		case evMessage:
			return ev, nil
		case evReply:
			if err := c.writeData(ev.reply); err != nil {
				return event{}, err
			}
		}
	}
}

// awaitAck reads until the acknowledgement ack arrives; deliveries before
// it are dropped (none are expected during a handshake).
func (c *Conn) awaitAck(ack int) error {
	for {
		ev, err := c.nextEvent()
		if err != nil {
			return err
		}
		switch {
		case ev.kind == evAck && ev.ack == ack:
			return nil
		case ev.kind == evReply:
			if err := c.writeData(ev.reply); err != nil {
				return err
			}
		}
	}
}

// nextEvent decodes the next unit the server sent.
func (c *Conn) nextEvent() (event, error) {
	if !c.w.stream() {
		if p, ok, err := c.bufferedFrame(); err != nil {
			return event{}, err
		} else if ok {
			_, ev, err := c.w.parse(p)
			return ev, err
		}
		msg, err := c.readMessage(c.msg[:0])
		c.msg = msg
		if err != nil {
			return event{}, err
		}
		_, ev, err := c.w.parse(msg)
		return ev, err
	}
	for {
		if c.off < len(c.msg) {
			n, ev, err := c.w.parse(c.msg[c.off:])
			if err != nil {
				return event{}, err
			}
			if n > 0 {
				c.off += n
				return ev, nil
			}
		}
		// Need more bytes: drop what was decoded, then append the next
		// WebSocket message (raw: what the socket has) to the stream.
		if c.off == len(c.msg) {
			c.msg, c.off = c.msg[:0], 0
		} else if c.off > 0 {
			c.msg = c.msg[:copy(c.msg, c.msg[c.off:])]
			c.off = 0
		}
		var msg []byte
		var err error
		if c.raw {
			msg, err = c.readRaw(c.msg)
		} else if p, ok, ferr := c.bufferedFrame(); ferr != nil {
			msg, err = c.msg, ferr
		} else if ok {
			if len(c.msg)+len(p) > maxMessage {
				msg, err = c.msg, fmt.Errorf("websocket: message larger than %d bytes", maxMessage)
			} else {
				msg = append(c.msg, p...)
			}
		} else {
			msg, err = c.readMessage(c.msg)
		}
		c.msg = msg
		if err != nil {
			return event{}, err
		}
	}
}

// rawReadSize is the least free room readRaw offers the socket.
const rawReadSize = 4 << 10

// readRaw appends what one read returns from a raw connection to dst.
func (c *Conn) readRaw(dst []byte) ([]byte, error) {
	if len(dst) >= maxMessage {
		return dst, fmt.Errorf("mqtt: more than %d bytes buffered without a whole packet", maxMessage)
	}
	if cap(dst)-len(dst) < rawReadSize {
		dst = append(dst, make([]byte, rawReadSize)...)[:len(dst)]
	}
	n, err := c.br.Read(dst[len(dst):cap(dst)])
	dst = dst[:len(dst)+n]
	if n > 0 {
		return dst, nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return dst, err
}

// bufferedFrame returns the payload of the next frame when it is a whole,
// unfragmented, unmasked data message of at most readBufMax bytes (what
// servers send): it is decoded where it lies in the read buffer, valid
// until the next read. ok is false, with nothing consumed, for anything
// else (control frames, fragments, masked or reserved-bit frames, large
// ones): readMessage handles those, exactly as before. An error is the
// socket's.
func (c *Conn) bufferedFrame() (p []byte, ok bool, err error) {
	h, err := c.br.peek(2)
	if err != nil {
		return nil, false, err
	}
	b0, b1 := h[0], h[1]
	op := ws.OpCode(b0 & 0x0f)
	if b0&0xf0 != 0x80 || b1&0x80 != 0 || (op != ws.OpText && op != ws.OpBinary) {
		return nil, false, nil // not final, reserved bits, masked, control or continuation
	}
	hl, n := 2, int(b1&0x7f)
	switch n {
	case 126:
		hl = 4
	case 127:
		hl = 10
	}
	if hl > 2 {
		if h, err = c.br.peek(hl); err != nil {
			return nil, false, err
		}
		if hl == 4 {
			n = int(binary.BigEndian.Uint16(h[2:4]))
		} else {
			v := binary.BigEndian.Uint64(h[2:10])
			if v > readBufMax {
				return nil, false, nil
			}
			n = int(v)
		}
	}
	if n > readBufMax {
		return nil, false, nil
	}
	f, err := c.br.peek(hl + n)
	if err != nil {
		return nil, false, err
	}
	c.br.discard(hl + n)
	return f[hl:], true, nil
}

// readMessage appends the payload of the next WebSocket data message
// (reassembling fragments) to dst. Control frames in between are handled:
// ping is answered with pong, close ends with wsutil.ClosedError.
func (c *Conn) readMessage(dst []byte) ([]byte, error) {
	base := len(dst)
	started := false
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return dst, err
		}
		if h.OpCode.IsControl() {
			if h.Length > 125 || !h.Fin {
				return dst, ws.ErrProtocolControlPayloadOverflow
			}
			p := c.ctlBuf[:h.Length]
			if _, err := io.ReadFull(c.br, p); err != nil {
				return dst, err
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			switch h.OpCode {
			case ws.OpPing:
				if err := c.writeFrame(ws.OpPong, p); err != nil {
					return dst, err
				}
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(p)
				_ = c.writeFrame(ws.OpClose, ws.NewCloseFrameBody(code, ""))
				return dst, wsutil.ClosedError{Code: code, Reason: reason}
			}
			continue
		}
		if h.OpCode.IsReserved() {
			return dst, ws.ErrProtocolOpCodeReserved
		}
		if (h.OpCode == ws.OpContinuation) != started {
			return dst, ws.ErrProtocolContinuationUnexpected
		}
		started = true
		if h.Length > maxMessage || int64(len(dst)-base)+h.Length > maxMessage {
			return dst, fmt.Errorf("websocket: message larger than %d bytes", maxMessage)
		}
		n := len(dst)
		dst = append(dst, make([]byte, h.Length)...)
		if _, err := io.ReadFull(c.br, dst[n:]); err != nil {
			return dst[:n], err
		}
		if h.Masked {
			ws.Cipher(dst[n:], h.Mask, 0)
		}
		if h.Fin {
			return dst, nil
		}
	}
}

// closeCode returns the code of a close frame from the broker, if err is one.
func closeCode(err error) (ws.StatusCode, bool) {
	var ce wsutil.ClosedError
	if errors.As(err, &ce) {
		return ce.Code, true
	}
	return 0, false
}
