package netpoll

import (
	"bytes"
	"net/http"
	"time"

	"github.com/gobwas/ws"
)

// Handshake is what Handler.Open learns from the upgrade request. The byte
// slices point into a pooled scratch buffer and are valid only during Open;
// copy what you keep.
type Handshake struct {
	Path          []byte // request path, without the query
	RawQuery      []byte // query string without '?', nil when absent
	Authorization []byte // Authorization header value (the first one), nil when absent
	// Headers holds the values of the headers named in Config.CaptureHeaders,
	// index-aligned with it: Headers[i] is the value of CaptureHeaders[i],
	// repeated headers joined with ',', nil when absent.
	Headers     [][]byte
	Protocol    []byte // Sec-WebSocket-Protocol as offered by the client, nil when absent
	Subprotocol string // the offered protocol the server selected (one of Config.Subprotocols), "" when none
	RemoteAddr  string // peer "ip:port"
}

// span locates a captured value in upgrader.arena.
type span struct{ off, end int32 }

func (sp span) of(arena []byte) []byte {
	if sp.end == 0 {
		return nil
	}
	return arena[sp.off:sp.end:sp.end]
}

// upgrader runs gobwas's zero-copy handshake parser over the exact bytes of
// one request and captures the values the Handler needs. It is pooled per
// Server: its callbacks are bound once, so an upgrade allocates no closures.
// Used by one event goroutine at a time.
type upgrader struct {
	srv  *Server
	u    ws.Upgrader
	in   bytes.Reader
	resp []byte // the response gobwas writes, copied out in one batch

	arena                     []byte // captured values; offsets survive its growth
	path, query, auth, offers span
	headers                   []span   // Config.CaptureHeaders, index-aligned
	values                    [][]byte // backs hs.Headers: allocated once per upgrader
	notFound                  bool
	hs                        Handshake
}

var errNotFound = ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound), ws.RejectionReason("not found"))

func newUpgrader(s *Server) any {
	n := len(s.cfg.CaptureHeaders)
	u := &upgrader{srv: s, headers: make([]span, n), values: make([][]byte, n)}
	u.u = ws.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 512,
		OnRequest:       u.onRequest,
		OnHeader:        u.onHeader,
		ProtocolCustom:  u.onProtocol,
	}
	return u
}

// Read and Write make the upgrader the io.ReadWriter gobwas parses: it
// reads the request bytes and collects the response, which the caller
// writes to netpoll in one batch (see mallocBatch).
func (u *upgrader) Read(p []byte) (int, error) { return u.in.Read(p) }

func (u *upgrader) Write(p []byte) (int, error) {
	u.resp = append(u.resp, p...)
	return len(p), nil
}

func (u *upgrader) reset() {
	u.in.Reset(nil)
	u.resp = u.resp[:0]
	u.arena = u.arena[:0]
	u.path, u.query, u.auth, u.offers = span{}, span{}, span{}, span{}
	clear(u.headers)
	clear(u.values)
	u.notFound = false
	u.hs = Handshake{}
}

// capture appends v to the arena and returns its span; with a previous
// span, it joins v to it after sep (repeated headers). Offsets stay valid
// when the arena grows. An empty value with no previous one is "absent".
func (u *upgrader) capture(prev span, sep string, v []byte) span {
	if prev.end == 0 {
		if len(v) == 0 {
			return span{}
		}
		off := len(u.arena)
		u.arena = append(u.arena, v...)
		return span{int32(off), int32(len(u.arena))}
	}
	if int(prev.end) != len(u.arena) {
		// Not at the end any more: move the previous value to the end.
		off := len(u.arena)
		u.arena = append(u.arena, prev.of(u.arena)...)
		prev = span{int32(off), int32(len(u.arena))}
	}
	u.arena = append(append(u.arena, sep...), v...)
	return span{prev.off, int32(len(u.arena))}
}

func (u *upgrader) onRequest(uri []byte) error {
	path, query, hasQuery := bytes.Cut(uri, []byte{'?'})
	if !u.srv.pathAllowed(path) {
		u.notFound = true
		return errNotFound
	}
	u.path = u.capture(span{}, "", path)
	if hasQuery {
		u.query = u.capture(span{}, "", query)
	}
	return nil
}

// onHeader sees every header gobwas does not handle itself, with its key
// canonicalised (as Config.CaptureHeaders is, by withDefaults).
func (u *upgrader) onHeader(key, value []byte) error {
	if string(key) == "Authorization" && u.auth.end == 0 {
		u.auth = u.capture(span{}, "", value)
	}
	for i, name := range u.srv.cfg.CaptureHeaders {
		if string(key) == name {
			u.headers[i] = u.capture(u.headers[i], ",", value)
			break
		}
	}
	return nil
}

// onProtocol records the offered subprotocols and selects the first one
// listed in Config.Subprotocols, or none.
func (u *upgrader) onProtocol(v []byte) (string, bool) {
	u.offers = u.capture(u.offers, ", ", v)
	for len(v) > 0 {
		var tok []byte
		tok, v, _ = bytes.Cut(v, []byte{','})
		tok = bytes.TrimSpace(tok)
		for _, p := range u.srv.cfg.Subprotocols {
			if string(tok) == p {
				return p, true
			}
		}
	}
	return "", true
}

// handshake fills u.hs from what the parser captured. It allocates
// nothing: Headers is the upgrader's own slice.
func (u *upgrader) handshake(subprotocol, remote string) *Handshake {
	for i, sp := range u.headers {
		u.values[i] = sp.of(u.arena)
	}
	u.hs = Handshake{
		Path:          u.path.of(u.arena),
		RawQuery:      u.query.of(u.arena),
		Authorization: u.auth.of(u.arena),
		Headers:       u.values,
		Protocol:      u.offers.of(u.arena),
		Subprotocol:   subprotocol,
		RemoteAddr:    remote,
	}
	return &u.hs
}

func (s *Server) pathAllowed(path []byte) bool {
	for _, p := range s.cfg.Paths {
		if string(path) == p {
			return true
		}
	}
	return false
}

// scanHeaderEnd finds the blank line that ends an HTTP header block (CRLF
// CRLF, tolerating bare LFs). state carries a partial terminator across
// calls: 0 = none, 1 = after LF, 2 = after LF CR. It returns the offset just
// past the terminator in b, or -1 and the state to resume from.
func scanHeaderEnd(state uint8, b []byte) (end int, next uint8) {
	for i, ch := range b {
		switch ch {
		case '\n':
			if state != 0 {
				return i + 1, 0
			}
			state = 1
		case '\r':
			if state == 1 {
				state = 2
			} else {
				state = 0
			}
		default:
			state = 0
		}
	}
	return -1, state
}

var responseTooLarge = []byte("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\r\nrequest header fields too large\n")

// readHandshake accumulates the upgrade request and runs the upgrade once
// its header block is complete. Bytes after the request (a pipelined first
// frame) are left in rd for the frame reader.
func (c *Conn) readHandshake(rd byteSource) {
	limit := c.srv.cfg.MaxHeaderBytes
	avail := rd.Len()
	if c.rd.stash == nil {
		// Usual case: the whole request is in netpoll's buffer; parse it in
		// place (Peek is zero-copy within one buffer node).
		b, _ := rd.Peek(min(avail, limit))
		end, _ := scanHeaderEnd(0, b)
		if end < 0 {
			if avail >= limit {
				c.rejectTooLarge()
				return
			}
			c.rd.stashFrom(rd, avail)
			return
		}
		ok := c.upgrade(b[:end])
		_ = rd.Skip(end)
		c.rd.taken += end
		if ok && rd.Len() > 0 {
			c.readFrames(rd)
		}
		return
	}
	// The request arrived in pieces: continue in the stash.
	stash := c.rd.stash
	_, state := scanHeaderEnd(0, stash[max(0, len(stash)-2):])
	b, _ := rd.Peek(min(avail, limit-len(stash)))
	end, _ := scanHeaderEnd(state, b)
	if end < 0 {
		if len(stash)+avail >= limit {
			c.rejectTooLarge()
			return
		}
		c.rd.stashFrom(rd, avail)
		return
	}
	c.rd.stashFrom(rd, end)
	ok := c.upgrade(c.rd.stash)
	c.rd.dropStash()
	if ok && rd.Len() > 0 {
		c.readFrames(rd)
	}
}

func (c *Conn) rejectTooLarge() {
	c.srv.m.hsTooLarge.Inc()
	_ = writeNow(c.nc.Writer(), responseTooLarge)
	c.observeHandshake()
	c.lingerAfterHTTPError()
}

// observeHandshake records the time from accept (phaseAt, until the
// handshake ends) to now, just after the upgrade response was written.
// Event goroutine only, before phaseAt is reused for the close phase.
func (c *Conn) observeHandshake() {
	s := c.srv
	s.m.handshakeSeconds.Observe(float64(s.preciseNow()-c.phaseAt.Load()) / float64(time.Second))
}

// upgrade runs the handshake over req (the exact request bytes), writes the
// response, and on success calls Handler.Open. It reports whether the
// connection is now a WebSocket.
func (c *Conn) upgrade(req []byte) bool {
	s := c.srv
	u := s.upgrades.Get().(*upgrader)
	defer func() {
		u.reset()
		s.upgrades.Put(u)
	}()
	if err := checkRequest(req); err != nil {
		s.m.hsBadRequest.Inc()
		u.resp = badRequestResponse(u.resp[:0], err.Error())
		if writeNow(c.nc.Writer(), u.resp) == nil {
			c.observeHandshake()
		}
		c.lingerAfterHTTPError()
		return false
	}
	u.in.Reset(req)
	hs, err := u.u.Upgrade(u)
	flushErr := writeNow(c.nc.Writer(), u.resp)
	if flushErr == nil {
		c.observeHandshake()
	}
	if err != nil {
		if u.notFound {
			s.m.hsNotFound.Inc()
		} else {
			s.m.hsBadRequest.Inc()
		}
		c.lingerAfterHTTPError()
		return false
	}
	if flushErr != nil {
		c.mode = modeDiscard
		c.dropTCP(causeNone)
		return false
	}
	s.m.hsOK.Inc()
	c.mode = modeFrames
	c.opened(fUpgraded | fEstablished)
	c.handOver(s.h.Open(c, u.handshake(hs.Protocol, c.RemoteAddr())))
	return true
}

// opened records that the connection's Session is being opened (with fl:
// fUpgraded, and fEstablished for a WebSocket). Event goroutine only.
func (c *Conn) opened(fl uint32) {
	c.mu.Lock()
	fl |= c.flags.Load()
	c.flags.Store(fl)
	c.mu.Unlock()
	c.srv.m.connections[transportOf(fl)].Inc()
	c.srv.wsConns.Add(1)
}

// handOver installs the Session that Open (or OpenStream) returned and
// hands the writer over: from now on drains write, and one must start if
// the Handler queued frames or closed. A nil Session without a close
// closes with 1011. Event goroutine only.
func (c *Conn) handOver(sess Session) {
	c.sess = sess
	c.mu.Lock()
	fl := c.flags.Load() &^ fHold
	if bs, ok := sess.(ByteStreamSession); ok && bs.ByteStream() {
		fl |= fJoin
	}
	c.flags.Store(fl)
	var start bool
	if sess == nil && fl&fClosing == 0 {
		start = c.beginCloseLocked(1011, "internal error", causeServer)
	} else {
		start = fl&fDraining == 0 && (c.head != nil || fl&(fClosing|fCloseWritten) == fClosing)
		if start {
			c.flags.Store(fl | fDraining | fQueued)
		}
	}
	c.mu.Unlock()
	if start {
		c.srv.startDrain(c)
	}
}
