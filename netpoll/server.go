package netpoll

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	cwnetpoll "github.com/cloudwego/netpoll"
	"github.com/prometheus/client_golang/prometheus"
)

// Handler admits upgraded connections.
type Handler interface {
	// Open is called once per connection after a successful upgrade, on the
	// connection's event goroutine; hs and its byte slices are valid only
	// during the call. It returns the Session that receives the
	// connection's messages, or nil after having called c.Close(code,
	// reason): rejections are close frames right after the upgrade, never
	// HTTP errors. Returning nil without closing closes with 1011.
	Open(c *Conn, hs *Handshake) Session
}

// StreamHandler opens sessions for raw TCP connections (ServeStream: no
// WebSocket upgrade, no framing).
type StreamHandler interface {
	// OpenStream is called once per connection, on its event goroutine,
	// when its first bytes arrive (a connection that never sends any is
	// closed at HandshakeTimeout without a Session), right before those
	// bytes are delivered to the returned Session's OnMessage. It returns
	// nil after having called c.Close, or nil without closing, which closes
	// the connection too. Until the Session calls c.Established, the
	// handshake timeout (from accept) applies.
	OpenStream(c *Conn) Session
}

// Session receives one connection's messages.
type Session interface {
	// OnMessage is called for each complete text or binary message,
	// serially per connection, never concurrently with itself, on the
	// connection's event goroutine. payload is only valid during the call
	// (it points into netpoll's input buffer or a pooled assembly buffer).
	// It is not called once the connection is closing. A text payload is
	// valid UTF-8: a text message that is not closes the connection with
	// 1007 (RFC 6455 section 8.1) instead of reaching OnMessage.
	//
	// On a stream connection (Conn.Stream), text is false and payload is
	// the next chunk of raw input, in order, at most 64 KiB (the per-turn
	// read budget) per call; chunk boundaries are wherever the reads fell,
	// so the Session reassembles its own messages, which may span chunks
	// (it copies what it keeps of a partial one).
	OnMessage(text bool, payload []byte)
	// OnClose is called exactly once when the connection is gone (any
	// reason), after the last OnMessage and never concurrently with it.
	OnClose()
}

// ReadEnder is a Session that is told when the messages of one read (one
// wakeup of its connection) have all been handed to OnMessage: OnReadEnd
// runs on the event goroutine right after the last of them, so the Session
// can settle once per read what it kept per message (counts for its
// metrics). It is not called after a read that delivered no message.
type ReadEnder interface {
	OnReadEnd()
}

// ByteStreamSession is a Session whose WebSocket binary messages carry a
// byte stream: their boundaries mean nothing to it (MQTT over WebSocket,
// whose packets may span or share messages). When ByteStream reports true,
// netpoll may hand it several consecutive binary messages of one read in
// one OnMessage call, their payloads concatenated in order (each still
// counted, and admitted against the inbound rate, as a message), which
// saves the Session a call per message. Text messages and messages
// assembled from fragments still come one per call, in their place.
type ByteStreamSession interface {
	Session
	ByteStream() bool
}

// netpollBufferSize is the size of a new connection's first input buffer
// node (netpoll's default: 8 KiB). See tuneNetpoll.
const netpollBufferSize = netpollPageSize + 1

var tuneOnce sync.Once

// tuneNetpoll sets netpoll's process-global knobs once, before the first
// connection exists (netpoll reads them when it creates buffers and runs
// handlers). They affect every netpoll user in the process; Gatecast has no
// other.
//
//   - BufferSize: netpoll keeps a connection's last input node while it is
//     idle unless the node is larger than its 8 KiB page, in which case
//     Release drops it once everything is read. With the first node (and so
//     every later one: netpoll sizes nodes by the largest input seen) just
//     over 8 KiB, an idle connection holds no input buffer at all; a
//     wakeup borrows a pooled 16 KiB buffer (bytedance mcache) for as long
//     as it has unread bytes. netpoll's default (8 KiB) pins 8 KiB per
//     connection forever. The output side gets the same property from
//     mallocBatch. LinkBufferCap (the minimum node size) is left alone:
//     this package never asks for a node smaller than 8 KiB + 1.
//   - Runner: netpoll's default runner (bytedance gopool) queues every
//     OnRequest wakeup on one mutex-guarded list and allocates a closure
//     whenever it starts a worker, which with mostly idle connections is
//     nearly every wakeup. Starting the task directly ("go f()": f is
//     already a func value, and exited goroutines are reused by the
//     runtime) removes that global lock and allocation from the read path.
//     gopool also recovered handler panics; onRequest does that itself.
//     runTask does this, and times one wakeup per lag-probe interval for
//     gatecast_eventloop_lag_seconds (see lag.go).
//   - MaxReadSize (read-pause patch): netpoll doubles a connection's read
//     size up to 8 MiB for a fast sender; capped, one read can pass the
//     input limit by at most maxReadSize (inbound.go).
//   - LoggerOutput: netpoll logs with the standard logger, once per failed
//     accept retry among others; netpollLog turns that into rate-limited
//     slog records.
func tuneNetpoll() {
	tuneOnce.Do(func() {
		_ = cwnetpoll.Configure(cwnetpoll.Config{
			BufferSize:   netpollBufferSize,
			Runner:       runTask,
			MaxReadSize:  maxReadSize,
			LoggerOutput: netpollLog,
		})
	})
}

// ErrServerClosed is returned by Listen after Shutdown.
var ErrServerClosed = errors.New("netpoll: server closed")

// Server is a connection core on netpoll event loops with two framings:
// WebSocket (Serve, on Config.Addr) and raw TCP streams (ServeStream, on
// listeners of the caller's). Every connection, either kind, shares the
// same limits, timeouts, registry, metrics and shutdown.
type Server struct {
	cfg     Config
	h       Handler
	streams atomic.Pointer[[]StreamHandler] // ServeStream's handlers, copied on write; Conn.handler-1 indexes it
	m       *metrics
	reg     registry
	fds     fdWatch

	// inputHeld is the unread input of every connection, as each last saw
	// its own buffer (inbound.go); inputPaused lists the connections whose
	// reads were paused because it passed InputTotalLimit.
	inputHeld   atomic.Int64
	outboxTotal atomic.Int64 // pending output of every connection, in charged bytes (outbox.go)
	inputMu     sync.Mutex
	inputPaused []*Conn
	start       time.Time
	clock       atomic.Int64 // nanoseconds since start, updated by the sweeper (coarse on purpose: reading it is one load)

	wsConns  atomic.Int64 // connections with an open Session (upgraded, or streams past OpenStream) not yet gone
	upgrades sync.Pool    // *upgrader
	writers  writerPool   // writes the connections' outboxes (writers.go)

	mu           sync.Mutex
	ln           *listener
	serving      bool         // Serve was called
	loops        []*serveLoop // every event loop started (Serve, ServeStream)
	background   bool         // the sweeper and the lag probe were started
	closed       bool
	shutdownDone chan struct{} // closed when the first Shutdown returns
	shutdownErr  error
	stopSweep    chan struct{} // closed by Shutdown: stops the sweeper and the lag probe
	sweepDone    chan struct{}
	lagDone      chan struct{} // closed when lagLoop returns

	lag lagProbe // event-loop lag sampler, fed by runTask

	// testHookOnRequest, when set by a test, runs at the start of every
	// OnRequest.
	testHookOnRequest atomic.Pointer[func()]
}

// NewServer validates cfg (applying defaults) and builds a Server. It
// registers the metrics on cfg.Registerer.
func NewServer(cfg Config, h Handler) (*Server, error) {
	if h == nil {
		return nil, errors.New("netpoll: nil Handler")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	tuneNetpoll()
	s := &Server{
		cfg:          cfg,
		h:            h,
		m:            m,
		start:        time.Now(),
		shutdownDone: make(chan struct{}),
		stopSweep:    make(chan struct{}),
		sweepDone:    make(chan struct{}),
		lagDone:      make(chan struct{}),
	}
	s.clock.Store(1) // 0 means "not set" in Conn timestamps
	s.lag.hist = m.eventLoopLag
	s.lag.runFn = s.lag.run
	s.upgrades.New = func() any { return newUpgrader(s) }
	s.writers.init()
	netpollLog.logger.Store(cfg.Logger)
	if cfg.Registerer != nil {
		total := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gatecast_ws_outbox_bytes", Help: "Pending output of all connections (queued plus being written), in bytes."},
			func() float64 { return float64(s.outboxTotal.Load()) })
		if err := cfg.Registerer.Register(total); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// now is the server's coarse clock (nanoseconds since start, at least 1).
func (s *Server) now() int64 { return s.clock.Load() }

func (s *Server) tick() int64 {
	t := s.preciseNow()
	s.clock.Store(t)
	return t
}

// preciseNow reads the monotonic clock on the server clock's scale
// (nanoseconds since start, at least 1). It costs a clock read; now is the
// cheap, coarse version.
func (s *Server) preciseNow() int64 { return int64(time.Since(s.start)) + 1 }

// Listen binds cfg.Addr. Serve calls it when it was not called before.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrServerClosed
	}
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	npl, err := cwnetpoll.ConvertListener(ln)
	if err != nil {
		ln.Close()
		return err
	}
	s.ln = &listener{Listener: npl, srv: s}
	s.initFDWatch()
	return nil
}

// Addr is the bound address (nil before Listen).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// ConnCount is the number of connections with an open Session not yet
// gone: upgraded WebSocket connections, and streams past OpenStream.
func (s *Server) ConnCount() int { return int(s.wsConns.Load()) }

// serveLoop is one netpoll event loop serving one listener.
type serveLoop struct {
	evl  cwnetpoll.EventLoop
	done chan struct{} // closed when its Serve returned
}

// Serve accepts WebSocket connections on Config.Addr and serves them until
// Shutdown, then returns nil (at once if Shutdown came first). It binds
// first if Listen was not called. At most one Serve per Server.
func (s *Server) Serve() error {
	if err := s.Listen(); err != nil {
		if errors.Is(err, ErrServerClosed) {
			return nil
		}
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	return s.run(ln, s.onPrepare, true)
}

// maxStreamHandlers bounds ServeStream calls per Server (Conn.handler is a
// byte).
const maxStreamHandlers = 255

// ServeStream accepts raw TCP connections on ln and serves them with h until
// Shutdown, then returns nil (at once, having closed ln, if Shutdown came
// first). It takes ln over: Shutdown closes it. ln must be a
// *net.TCPListener (or a *net.UnixListener). Stream connections get no
// WebSocket upgrade and no framing: h.OpenStream runs at a connection's
// first bytes, its Session receives raw chunks, and Conn.Send writes raw
// bytes; everything else — the fd reserve, input limits and read pauses,
// the per-turn read budget, the outbox and its limits, the timeouts (the
// handshake timeout until Conn.Established), the metrics, Shutdown — is
// shared with the WebSocket connections of Serve. It may be called
// several times, with other listeners, alongside Serve.
func (s *Server) ServeStream(ln net.Listener, h StreamHandler) error {
	if ln == nil || h == nil {
		return errors.New("netpoll: ServeStream needs a listener and a StreamHandler")
	}
	npl, err := cwnetpoll.ConvertListener(ln)
	if err != nil {
		return err
	}
	s.mu.Lock()
	var hs []StreamHandler
	if p := s.streams.Load(); p != nil {
		hs = *p
	}
	if len(hs) == maxStreamHandlers {
		s.mu.Unlock()
		npl.Close()
		return errors.New("netpoll: too many ServeStream calls")
	}
	hs = append(hs[:len(hs):len(hs)], h) // a new array: connections of earlier calls read the old one
	s.streams.Store(&hs)
	idx := uint8(len(hs))
	if s.fds.limit.Load() == 0 {
		s.initFDWatch() // no Listen before: the watch starts here
	}
	s.mu.Unlock()
	return s.run(&listener{Listener: npl, srv: s}, func(nc cwnetpoll.Connection) context.Context {
		return s.prepare(nc, idx)
	}, false)
}

// run serves ln on a new event loop until Shutdown. The first loop starts
// the sweeper and the lag probe.
func (s *Server) run(ln *listener, prepare func(cwnetpoll.Connection) context.Context, ws bool) error {
	evl, err := cwnetpoll.NewEventLoop(s.onRequest, cwnetpoll.WithOnPrepare(prepare))
	if err != nil {
		return err
	}
	l := &serveLoop{evl: evl, done: make(chan struct{})}
	s.mu.Lock()
	if ws && s.serving {
		s.mu.Unlock()
		return errors.New("netpoll: Serve called twice")
	}
	if s.closed {
		s.mu.Unlock()
		if !ws {
			ln.Close() // Shutdown closes Config.Addr's listener itself
		}
		return nil
	}
	if ws {
		s.serving = true
	}
	s.loops = append(s.loops, l)
	startBackground := !s.background
	s.background = true
	s.mu.Unlock()
	defer close(l.done)

	if startBackground {
		go s.sweepLoop()
		go s.lagLoop()
	}
	err = evl.Serve(ln)
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil
	}
	return err
}

// Shutdown stops accepting (connections that arrive meanwhile are closed at
// once), closes every connection with 1001 "server shutting down" (streams:
// Close, no close frame), lets their outboxes flush and waits until all are
// gone or ctx is done, then closes the listeners and makes Serve and
// ServeStream return. Connections without a Session yet are dropped at
// once. It returns ctx.Err() when connections remained at the deadline
// (they are then dropped). A second call waits for the first one (or its
// own ctx) and returns its result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		select {
		case <-s.shutdownDone:
			return s.shutdownErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.closed = true
	s.mu.Unlock()
	s.shutdownErr = s.shutdown(ctx)
	close(s.shutdownDone)
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	loops, serving, ln := s.loops, s.serving, s.ln
	s.mu.Unlock()
	if !serving && ln != nil {
		ln.Close() // bound but never served
	}
	if len(loops) == 0 {
		return nil
	}

	for _, c := range s.reg.snapshot() {
		if c.flags.Load()&fUpgraded != 0 {
			// A stream gets no close frame: what is queued is flushed, then
			// its TCP connection is closed (Close).
			c.closeWith(1001, "server shutting down", causeServer)
		} else {
			c.dropTCP(causeServer)
		}
	}
	var waitErr error
	poll := time.NewTicker(5 * time.Millisecond)
	for s.reg.len() > 0 && waitErr == nil {
		select {
		case <-ctx.Done():
			waitErr = ctx.Err()
		case <-poll.C:
		}
	}
	poll.Stop()
	if waitErr != nil {
		// Out of time: drop whatever is left (stuck writers, peers that
		// never answer) rather than leave it to netpoll, which would wait
		// for busy connections to go idle.
		for _, c := range s.reg.snapshot() {
			c.dropTCP(causeServer)
		}
	}

	// netpoll's Shutdown closes the listener and any idle connection left,
	// and makes Serve return; with ctx done it does so without waiting for
	// busy ones. It is a no-op when Serve has not yet handed the listener
	// to netpoll, so retry until Serve has returned. No loop is added once
	// closed is set.
	for _, l := range loops {
		for stopped := false; !stopped; {
			_ = l.evl.Shutdown(ctx)
			select {
			case <-l.done:
				stopped = true
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	close(s.stopSweep)
	<-s.sweepDone
	<-s.lagDone
	return waitErr
}

// listener wraps netpoll's listener so that connections accepted during
// Shutdown are closed before netpoll builds anything for them.
type listener struct {
	cwnetpoll.Listener
	srv *Server
}

// onPrepare runs on a poller goroutine for each accepted WebSocket
// connection, before netpoll registers it for reads.
func (s *Server) onPrepare(nc cwnetpoll.Connection) context.Context { return s.prepare(nc, 0) }

// prepare builds the Conn of an accepted connection: a WebSocket when
// handler is 0, else a stream served by Server.streams[handler-1].
func (s *Server) prepare(nc cwnetpoll.Connection, handler uint8) context.Context {
	c := &Conn{srv: s, nc: nc, handler: handler}
	fl := fHold
	if handler != 0 {
		fl |= fStream
		c.mode = modeStreamOpen
	}
	c.flags.Store(fl)
	c.lastRead.Store(s.now())
	// Precise, not the sweeper's coarse clock: the handshake histogram
	// measures from here (the sweeper's timeout check works on either).
	c.phaseAt.Store(s.preciseNow())
	if l, ok := nc.(inputLimiter); ok {
		l.SetReadBufferLimit(s.cfg.InputBufferLimit)
	}
	_ = nc.AddCloseCallback(c.onClosed)
	s.reg.add(c)
	return (*connCtx)(c)
}

// inputLimiter is the input bound of netpoll's connection (the read-pause
// patch in netpoll/upstream).
type inputLimiter interface {
	SetReadBufferLimit(n int)
	ReadLimitPauses() uint32
}

// onRequest runs on the connection's event goroutine whenever input is
// available. One call is one turn: it decodes up to readBudget bytes (a
// partial frame goes to the stash, see frameReader), then releases what it
// decoded from netpoll's buffer, which invalidates every payload handed out
// during the call. netpoll calls it again at once while unread input
// remains, and when more arrives.
func (s *Server) onRequest(ctx context.Context, nc cwnetpoll.Connection) error {
	c := (*Conn)(ctx.(*connCtx))
	defer c.recoverHandler("OnRequest")
	growStack()
	if h := s.testHookOnRequest.Load(); h != nil {
		(*h)()
	}
	in := nc.Reader()
	rd := in.(byteSource) // the fork's connection has Contiguous
	if rd.Len() == 0 {
		return nil
	}
	c.lastRead.Store(s.now())
	c.holdInput(rd.Len())
	if l, ok := nc.(inputLimiter); ok {
		if p := l.ReadLimitPauses(); p != c.pauses {
			s.m.inputPaused.Add(float64(p - c.pauses))
			c.pauses = p
		}
	}
	before := c.rd.taken
	switch c.mode {
	case modeHandshake:
		c.readHandshake(rd)
	case modeFrames:
		c.readFrames(rd)
	case modeStreamOpen:
		c.openStream(rd)
	case modeStream:
		c.readStream(rd)
	case modeSkim:
		c.skim(rd)
	}
	if c.mode == modeDiscard {
		// Only here: in the other modes the readers consume what they
		// decide to, and bytes left are the next turn's.
		if left := rd.Len(); left > 0 {
			_ = rd.Skip(left)
			c.rd.taken += left
		}
	}
	n := c.rd.taken - before
	s.m.bytesIn.Add(float64(n))
	if c.mode >= modeSkim {
		// Closing: past the close handshake's allowance, stop reading
		// altogether (dropTCP is idempotent).
		c.closingRead = int32(min(int(c.closingRead)+n, closeReadAllowance+1))
		if c.closingRead > closeReadAllowance {
			c.mode = modeDiscard
			c.dropTCP(causeServer)
		}
	}
	_ = in.Release()
	c.holdInput(rd.Len())
	return nil
}

// recoverHandler contains a panic from Handler or Session code (or a bug
// here) to its connection: logged with its stack, the connection dropped,
// the process kept alive.
func (c *Conn) recoverHandler(where string) {
	if r := recover(); r != nil {
		c.srv.cfg.Logger.Error("panic in connection handler; connection dropped",
			"where", where, "remote", c.RemoteAddr(), "panic", r, "stack", string(debug.Stack()))
		c.mode = modeDiscard
		c.dropTCP(causeServer)
	}
}

// readFrames decodes up to readBudget bytes of frames from rd and delivers
// them. A connection that is closing (refused by Open, revoked, kicked)
// only watches for the peer's close frame from then on.
func (c *Conn) readFrames(rd byteSource) {
	s := c.srv
	if c.flags.Load()&fClosing != 0 {
		c.mode = modeSkim
		c.skim(rd)
		return
	}
	var j *joiner
	var jv joiner
	if c.flags.Load()&fJoin != 0 {
		j = &jv
	}
	stop, err := c.rd.consume(rd, s.cfg.MaxFrameSize, readBudget, c, j)
	putBuf(jv.buf)
	if c.msgCount > 0 {
		s.m.messagesIn.Add(float64(c.msgCount))
		c.msgCount = 0
		if re, ok := c.sess.(ReadEnder); ok {
			re.OnReadEnd()
		}
	}
	if err != nil {
		c.mode = modeSkim
		pe, _ := err.(*protocolError)
		if pe == nil { // consume returns only *protocolError; be safe anyway
			pe = &protocolError{1002, err.Error()}
		}
		if s.cfg.Logger.Enabled(context.Background(), slog.LevelDebug) {
			s.cfg.Logger.Debug("closing connection on protocol error", "remote", c.RemoteAddr(), "code", pe.code, "reason", pe.reason)
		}
		c.closeWith(pe.code, pe.reason, causeOf(pe.code))
		c.skim(rd)
		return
	}
	if stop {
		c.mode = modeDiscard
		c.rd.reset()
	}
}

// skim watches the input for the peer's answer to our close after a
// protocol error (see frameReader.skimForClose).
func (c *Conn) skim(rd byteSource) {
	if c.rd.skimForClose(rd) {
		c.mode = modeDiscard
		c.rd.reset()
		c.peerClose(nil)
	}
}

// lingerAfterHTTPError follows an HTTP error response: half-close our side
// so the client sees the response and EOF, and discard its input until it
// closes or CloseTimeout passes (closing with unread input would send a RST
// that can destroy the response in flight).
func (c *Conn) lingerAfterHTTPError() {
	c.mode = modeDiscard
	c.rd.reset()
	c.phaseAt.Store(c.srv.now())
	c.mu.Lock()
	c.flags.Store(c.flags.Load() | fRejected)
	c.mu.Unlock()
	shutdownWrite(c.nc) // the event goroutine owns the writer (fHold)
}

// growStack makes the task goroutine's stack large enough for the whole
// read path before that path starts. Every OnRequest task runs on a new
// goroutine (runTask), which starts with the runtime's starting stack size
// (2 KiB until a GC has seen larger stacks); the read path (frame reader,
// Session, publish, topic match, delivery into the outboxes) needs more, so
// the stack grew in the middle of it, copying a dozen frames and adjusting
// each through its PC tables: 5 % of the broker's CPU in a seed fan-in
// (perf, 800 k msg/s). Growing here, with two frames on the stack, costs a
// fraction of that, and nothing once the starting size is large enough.
//
//go:noinline
func growStack() {
	var pad [growStackBytes]byte
	if pad[growStackIndex] != 0 { // never: a read at a variable index keeps pad, so the frame is this large
		growStackSink = true
	}
}

// growStackBytes is the frame growStack asks for: with the runtime's guard
// and what is already on the stack, the goroutine gets an 8 KiB stack.
const growStackBytes = 5 << 10

var (
	growStackSink  bool
	growStackIndex = growStackBytes - 1
)
