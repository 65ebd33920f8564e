package loadtest

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
)

// netpollPageSize is netpoll's buffer page: a connection keeps an input
// node no larger than this while idle, and drops a larger one once read.
const netpollPageSize = 8 << 10

var tuneOnce sync.Once

// tuneNetpoll sets netpoll's process-global knobs once, before the first
// connection: a first input node just over netpoll's page, so that an idle
// connection holds no input buffer (netpoll's default pins 8 KiB per
// connection), and OnRequest wakeups started as plain goroutines instead
// of through gopool's mutex-guarded task list. The broker's netpoll
// package sets the same values, so the two agree when a test runs both in
// one process.
func tuneNetpoll() {
	tuneOnce.Do(func() {
		_ = netpoll.Configure(netpoll.Config{
			BufferSize: netpollPageSize + 1,
			Runner:     func(_ context.Context, f func()) { go f() },
		})
	})
}

// Roles of a simulated connection.
const (
	roleDevice    = iota // subscribes to its command topics, publishes telemetry
	roleDashboard        // subscribes to a region's telemetry with a wildcard
	roleCommander        // publishes commands
)

// devConn flags, for the connection currently attached.
const (
	fOpen     = 1 << iota // attached and not yet closed
	fGotClose             // the broker's close frame was read
	fByUs                 // we closed it (outage, end of run)
)

// rejectWindow: a close frame this soon after the handshake is the broker
// refusing the connection (it upgrades, then closes with the reason), not
// the close of an established session.
const rejectWindow = time.Second

// frameReadTimeout bounds the wait for the rest of a frame whose first
// bytes arrived.
const frameReadTimeout = 30 * time.Second

// writeTimeout bounds a write the broker does not drain.
const writeTimeout = 10 * time.Second

// devConn is one simulated client. It is small on purpose: a fleet worker
// holds thousands. Which goroutine touches what:
//   - conn and gen: guarded by wmu (publishers, the event goroutine's
//     pong/close replies, the close callback, outage and stop);
//   - flags: atomic, read anywhere;
//   - openedAt, frag: the event goroutine (OnRequest), after attach wrote
//     openedAt before installing OnRequest.
type devConn struct {
	w        *worker
	id       int32 // global connection index
	role     uint8
	frag     bool // a fragmented message is being received
	flags    atomic.Uint32
	gen      uint32
	wmu      sync.Mutex
	conn     netpoll.Connection
	openedAt int64 // unix ns of the completed handshake (MQTT: of the dial's start)
}

// headReader lets ws.Dialer.Upgrade read the HTTP response from netpoll
// without reading past it: bytes after the blank line (a close frame sent
// right after the upgrade, say) stay in netpoll's buffer for OnRequest.
type headReader struct {
	c     netpoll.Connection
	state int // how much of "\r\n\r\n" was just seen
	done  bool
}

func (h *headReader) Read(p []byte) (int, error) {
	if h.done {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	r := h.c.Reader()
	if _, err := r.Peek(1); err != nil {
		return 0, err
	}
	n := min(len(p), r.Len())
	buf, err := r.Peek(n)
	if err != nil {
		return 0, err
	}
	for i, c := range buf {
		switch {
		case c == "\r\n\r\n"[h.state]:
			h.state++
		case c == '\r':
			h.state = 1
		default:
			h.state = 0
		}
		if h.state == 4 {
			n, h.done = i+1, true
			break
		}
	}
	copy(p, buf[:n])
	if err := r.Skip(n); err != nil {
		return 0, err
	}
	return n, r.Release()
}

// Write sends the upgrade request through mallocBatch: netpoll's own
// Write would leave an output node pinned to the connection for its life.
func (h *headReader) Write(p []byte) (int, error) {
	w := h.c.Writer()
	buf, err := mallocBatch(w, len(p))
	if err != nil {
		return 0, err
	}
	copy(buf, p)
	if err := w.Flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// dialTarget is one broker URL, resolved once.
type dialTarget struct {
	u     *url.URL
	raddr *netpoll.TCPAddr
}

// resolveTarget resolves a broker URL: ws://host[:port]/path for the seed
// protocol, tcp://host[:port] (MQTT's listener, port 1883 by default) for
// mqtt.
func resolveTarget(raw string, mqtt bool) (dialTarget, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return dialTarget{}, err
	}
	scheme, port := "ws", "80"
	if mqtt {
		scheme, port = "tcp", "1883"
	}
	if u.Scheme != scheme {
		return dialTarget{}, errors.New("loadtest: only " + scheme + ":// URLs are supported here, got " + raw)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), port)
	}
	ra, err := netpoll.ResolveTCPAddr("tcp", host)
	if err != nil {
		return dialTarget{}, err
	}
	return dialTarget{u: u, raddr: ra}, nil
}

// connect dials, upgrades and attaches dc. It runs on a dialing goroutine;
// the returned error kind says why it failed.
func (dc *devConn) connect(ctx context.Context) (errKind, error) {
	w := dc.w
	t := w.targets[int(dc.id)%len(w.targets)]
	dialAt := time.Now().UnixNano()
	dctx, cancel := context.WithTimeout(ctx, w.spec.DialTimeout)
	c, err := netpoll.DialTCP(dctx, "tcp", w.laddr(dc.id), t.raddr)
	cancel()
	if err != nil {
		return classifyDial(err), err
	}
	if w.spec.mqtt() {
		return dc.handshakeMQTT(c, dialAt)
	}
	_ = c.SetReadTimeout(w.spec.HandshakeTimeout)
	_ = c.SetWriteTimeout(w.spec.HandshakeTimeout)
	d := ws.Dialer{Header: ws.HandshakeHeaderBytes(w.handshakeHeader(dc))}
	br, _, err := d.Upgrade(&headReader{c: c}, t.u)
	if br != nil {
		// headReader never reads past the response; anything buffered
		// would be lost, so refuse rather than miscount.
		ws.PutReader(br)
		if err == nil {
			err = errors.New("loadtest: bytes buffered past the upgrade response")
		}
	}
	if err != nil {
		_ = c.Close()
		var se ws.StatusError
		switch {
		case errors.As(err, &se):
			return errHandshakeHTTP, err
		case isTimeout(err):
			return errHandshakeTimeout, err
		}
		return errHandshake, err
	}
	if w.spec.ConfirmPing {
		if kind, err := dc.confirmSeed(c); err != nil {
			_ = c.Close()
			return kind, err
		}
	}
	_ = c.SetReadTimeout(frameReadTimeout)
	_ = c.SetWriteTimeout(writeTimeout)
	dc.attach(c, time.Now().UnixNano())
	return 0, nil
}

// confirmSeed sends a ping on a freshly upgraded connection and reads
// frames (from the dialing goroutine, before the connection is attached)
// until its pong: the broker admits a seed connection after its 101, so
// the pong is the first sign that it was admitted, and a refusal's close
// frame comes before it. The read timeout set for the handshake bounds the
// wait. A refusal is counted (rejected_<code>) and returned as a
// *refusedError.
func (dc *devConn) confirmSeed(c netpoll.Connection) (errKind, error) {
	w := dc.w
	var buf [14 + 125]byte
	if err := writeNow(c, appendClientFrame(buf[:0], ws.OpPing, []byte("lt"), w.mask())); err != nil {
		return errHandshake, err
	}
	r := c.Reader()
	for {
		b, err := r.Peek(2)
		if err != nil {
			if isTimeout(err) {
				return errHandshakeTimeout, err
			}
			return errHandshake, err
		}
		hl := headerLen(b[1])
		if b, err = r.Peek(hl); err != nil {
			return errHandshake, err
		}
		h, _, err := parseHeader(b)
		if err != nil {
			return errProtocol, err
		}
		frame, err := r.Next(hl + int(h.Length))
		if err != nil {
			return errHandshake, err
		}
		p := frame[hl:]
		switch h.OpCode {
		case ws.OpPong:
			return 0, r.Release()
		case ws.OpClose:
			code := uint16(ws.StatusNoStatusRcvd)
			if len(p) >= 2 {
				code = binary.BigEndian.Uint16(p)
			}
			_ = r.Release()
			w.errs.addClose(closeKey{code: code, rejected: true})
			return errCounted, &refusedError{code: code, what: "close frame"}
		case ws.OpPing:
			pong := appendClientFrame(buf[:0], ws.OpPong, p, w.mask())
			if err := writeNow(c, pong); err != nil {
				_ = r.Release()
				return errHandshake, err
			}
		}
		// A delivery before the pong: the connection is admitted (the
		// pong follows); nothing else to do with it here.
		if err := r.Release(); err != nil {
			return errHandshake, err
		}
	}
}

// refusedError is a connection the broker refused after the TCP connect:
// a seed close frame (code), an MQTT CONNACK or SUBACK failure (reason
// code).
type refusedError struct {
	code uint16
	mqtt bool
	what string
}

func (e *refusedError) Error() string {
	if e.mqtt {
		return "loadtest: " + e.what + " refused: " + closeKey{code: e.code, mqtt: mqttKindConnack}.String()
	}
	return "loadtest: refused with " + e.what + " " + strconv.Itoa(int(e.code))
}

// attach makes c dc's live connection and hands its reads to netpoll's
// event loop. openedAt: when its handshake completed (MQTT: began).
func (dc *devConn) attach(c netpoll.Connection, openedAt int64) {
	dc.wmu.Lock()
	dc.gen++
	gen := dc.gen
	dc.conn = c
	dc.openedAt = openedAt
	dc.frag = false
	dc.flags.Store(fOpen)
	dc.wmu.Unlock()
	dc.w.open.Add(1)
	dc.w.connects.Add(1)
	_ = c.AddCloseCallback(func(netpoll.Connection) error {
		dc.closed(c, gen)
		return nil
	})
	if dc.w.spec.mqtt() {
		_ = c.SetOnRequest(dc.onRequestMQTT)
	} else {
		_ = c.SetOnRequest(dc.onRequest)
	}
	if !c.IsActive() {
		// The broker hung up before OnRequest was installed: netpoll ran no
		// callback then, closing runs them now.
		_ = c.Close()
	}
}

// closed is netpoll's close callback: exactly once per attached connection,
// never concurrently with its OnRequest. It waits for a running write to
// let go of netpoll's output buffer, which netpoll recycles right after.
func (dc *devConn) closed(c netpoll.Connection, gen uint32) {
	dc.wmu.Lock()
	current := dc.gen == gen
	var fl uint32
	if current {
		dc.conn = nil
		fl = dc.flags.Load()
		dc.flags.Store(fl &^ fOpen)
	}
	dc.wmu.Unlock()
	dc.w.open.Add(-1)
	if current && fl&fByUs == 0 && dc.w.stormDropped(dc, fl&fGotClose != 0) {
		return
	}
	if current && fl&(fGotClose|fByUs) == 0 {
		if dc.w.spec.mqtt() {
			dc.w.lostMQTT(dc)
		} else if !dc.w.signal(dc, sigLost, 0) {
			dc.w.errs.add(errDropped)
		}
	}
}

// isOpen reports whether a connection is attached and not closed.
func (dc *devConn) isOpen() bool { return dc.flags.Load()&fOpen != 0 }

// onRequest is netpoll's OnRequest: it runs on an event goroutine, serially
// per connection, whenever input is buffered.
func (dc *devConn) onRequest(_ context.Context, c netpoll.Connection) error {
	r := c.Reader()
	for r.Len() > 0 {
		if dc.flags.Load()&fGotClose != 0 {
			// After the close frame nothing more is read; netpoll must
			// still see its buffer emptied.
			_ = r.Skip(r.Len())
			_ = r.Release()
			return nil
		}
		if err := dc.readFrame(c, r); err != nil {
			switch {
			case isTimeout(err):
				dc.w.errs.add(errReadTimeout)
			case errors.Is(err, netpoll.ErrEOF), errors.Is(err, netpoll.ErrConnClosed):
			default:
				dc.w.errs.add(errProtocol)
			}
			_ = c.Close()
			return nil
		}
	}
	return nil
}

// revEchoDelay is how long a device answers a close frame late during a
// revoke --kind measurement (see readFrame): past the measurement's wait
// for the signals at this size, well within the broker's --close-timeout
// (2 s by default).
const revEchoDelay = time.Second

// closeLinger is how long a client waits, after the close handshake, for
// the broker to close the TCP connection. RFC 6455 has the server close
// first, which leaves TIME_WAIT on the server's side and keeps the
// client's source ports free for the next connection.
const closeLinger = 3 * time.Second

// readFrame reads and handles one frame from r. When only part of the
// frame has arrived it waits for the rest (netpoll blocks the event
// goroutine, bounded by frameReadTimeout): frames are small and their tail
// is already in flight. c is used only to answer pings and close frames.
// A data frame allocates nothing.
func (dc *devConn) readFrame(c netpoll.Connection, r netpoll.Reader) error {
	b, err := r.Peek(2)
	if err != nil {
		return err
	}
	hl := headerLen(b[1])
	if b, err = r.Peek(hl); err != nil {
		return err
	}
	h, _, err := parseHeader(b)
	if err != nil {
		return err
	}
	frame, err := r.Next(hl + int(h.Length))
	if err != nil {
		return err
	}
	p := frame[hl:]
	switch h.OpCode {
	case ws.OpText, ws.OpBinary, ws.OpContinuation:
		now := time.Now().UnixNano()
		first := !dc.frag
		dc.frag = !h.Fin
		if h.Fin {
			lat := int64(-1)
			if first && h.OpCode == ws.OpText {
				if t, ok := deliveryStamp(p); ok {
					lat = now - t
				}
			}
			dc.w.delivered(dc, lat)
		}
	case ws.OpPing:
		var buf [14 + 125]byte
		dc.write(appendClientFrame(buf[:0], ws.OpPong, p, dc.w.mask()))
	case ws.OpClose:
		code := uint16(ws.StatusNoStatusRcvd)
		if len(p) >= 2 {
			code = binary.BigEndian.Uint16(p)
		}
		prev := dc.flags.Or(fGotClose)
		if prev&fByUs == 0 {
			// The broker closed first: count why, and answer (echoing
			// the code) as RFC 6455 asks. When we closed first this is
			// its answer to ours, which needs none.
			dc.w.closeFrame(dc, code, time.Now().UnixNano())
			var body [2]byte
			if len(p) >= 2 {
				copy(body[:], p)
			}
			n := min(len(p), 2)
			if dc.role == roleDevice && dc.w.rev.Load() != nil {
				// A revoke --kind measurement: the other sessions' close
				// frames are still on their way, and on a machine the
				// broker and the fleet share, answering now (our write, the
				// broker's read and TCP close, our close callback) would
				// compete with them for the CPU. A real device answers from
				// its own machine; here the answer waits until the
				// measurement is over ("revecho"), or revEchoDelay at the
				// latest: within the broker's close timeout.
				dc.w.deferEcho(func() {
					var buf [14 + 2]byte
					dc.write(appendClientFrame(buf[:0], ws.OpClose, body[:n], dc.w.mask()))
					dc.lingerThenClose(c)
				})
				return r.Release()
			}
			var buf [14 + 2]byte
			dc.write(appendClientFrame(buf[:0], ws.OpClose, body[:n], dc.w.mask()))
		}
		dc.lingerThenClose(c)
		return r.Release()
	}
	return r.Release()
}

// write sends one complete frame. Any goroutine may call it; it returns
// false when no connection is open or the write failed (the connection is
// then closed).
func (dc *devConn) write(frame []byte) bool {
	dc.wmu.Lock()
	c := dc.conn
	if c == nil || dc.flags.Load()&fOpen == 0 {
		dc.wmu.Unlock()
		return false
	}
	w := c.Writer()
	buf, err := mallocBatch(w, len(frame))
	if err == nil {
		copy(buf, frame)
		err = w.Flush()
	}
	dc.wmu.Unlock()
	if err != nil {
		if dc.flags.Load()&(fGotClose|fByUs) == 0 && c.IsActive() {
			dc.w.errs.add(errWrite)
		}
		_ = c.Close() // not under wmu: the close callback takes it
		return false
	}
	return true
}

// mallocBatch returns n writable bytes of netpoll's output buffer, always
// in a node larger than netpoll's page (a pooled buffer for small frames,
// trimmed with MallocAck), so that netpoll frees it once sent and an idle
// connection keeps no output buffer.
func mallocBatch(w netpoll.Writer, n int) ([]byte, error) {
	if n > netpollPageSize {
		return w.Malloc(n)
	}
	buf, err := w.Malloc(netpollPageSize + 1)
	if err != nil {
		return nil, err
	}
	if err := w.MallocAck(n); err != nil {
		return nil, err
	}
	return buf[:n:n], nil
}

// closeBy closes dc's connection from our side: gracefully with a close
// frame, or abruptly with a TCP reset (an outage: no close frame, no
// TIME_WAIT left on the client's ports).
func (dc *devConn) closeBy(graceful bool) bool {
	dc.wmu.Lock()
	c := dc.conn
	if c == nil || dc.flags.Load()&fOpen == 0 {
		dc.wmu.Unlock()
		return false
	}
	dc.flags.Or(fByUs)
	dc.wmu.Unlock()
	if graceful && dc.w.spec.mqtt() {
		var buf [2]byte
		if dc.write(appendMQTTDisconnect(buf[:0], dc.w.spec.MQTTVersion)) {
			return true // the broker hangs up
		}
	} else if graceful {
		var buf [14 + 2]byte
		body := [2]byte{byte(ws.StatusNormalClosure >> 8), byte(ws.StatusNormalClosure & 0xff)}
		if dc.write(appendClientFrame(buf[:0], ws.OpClose, body[:], dc.w.mask())) {
			return true // the broker answers and hangs up
		}
	} else if fc, ok := c.(interface{ Fd() int }); ok {
		_ = syscall.SetsockoptLinger(fc.Fd(), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	}
	_ = c.Close()
	return true
}

// lingerThenClose closes c if the broker has not closed it closeLinger
// after the close handshake.
func (dc *devConn) lingerThenClose(c netpoll.Connection) {
	if c == nil {
		return
	}
	time.AfterFunc(closeLinger, func() {
		if c.IsActive() {
			_ = c.Close()
		}
	})
}

// forceClose closes dc's connection without a word (end of run, for
// connections that did not answer the graceful close in time).
func (dc *devConn) forceClose() {
	dc.wmu.Lock()
	c := dc.conn
	if c != nil {
		dc.flags.Or(fByUs)
	}
	dc.wmu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

func classifyDial(err error) errKind {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return errDialRefused
	case errors.Is(err, netpoll.ErrConnClosed):
		// netpoll's connect waits for writability; a refused connect
		// shows up as the poller seeing the socket hung up.
		return errDialRefused
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return errDialNoPort
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return errDialFiles
	case isTimeout(err):
		return errDialTimeout
	}
	return errDial
}
