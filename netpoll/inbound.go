package netpoll

import "time"

// Inbound limits: what one connection may make the broker do with its input.
//
//   - Bytes: netpoll stops reading a connection's socket once
//     Config.InputBufferLimit bytes are buffered and not yet decoded (the
//     read-pause patch in netpoll/upstream, SetReadBufferLimit), so the
//     client is slowed by TCP flow control instead of growing our memory;
//     a single read adds at most maxReadSize on top.
//   - Work per turn: one OnRequest decodes at most readBudget bytes, then
//     releases what it decoded and returns; netpoll calls it again at once
//     while input remains. Between turns the connection's state is looked at
//     again, so a close decided meanwhile (a revocation, the sweeper's
//     close timeout) takes effect within one turn even while the client
//     keeps sending.
//   - Bytes, all connections: Config.InputTotalLimit (holdInput).
//   - Messages: a token bucket per connection (Config.MaxInboundRate).
//   - Closing: once a connection is closing or was refused, only its close
//     handshake matters. Input is skipped without decoding, and after
//     closeReadAllowance bytes the TCP connection is dropped.
//
// maxReadSize is as large as the default InputBufferLimit: a backlogged
// connection (a broker at capacity, its sockets full) is read in pieces of
// up to that much, and every read costs the same system call, the same
// socket lock and (most of the time) an ACK whatever its size. At 64 KiB a
// seed fan-in at capacity made 9,000-11,000 reads a second; at 256 KiB
// 3,600-4,500, and the broker's one core moved from pushing back at 6 M
// msg/s offered to keeping up with what the harness could send
// (docs/PERFORMANCE.md). A connection that is not backlogged reads what
// has arrived, as before.
const (
	readBudget         = 64 << 10
	maxReadSize        = 256 << 10
	closeReadAllowance = 1 << 20
)

// inboundRate is a connection's token bucket. The coarse server clock is
// too coarse to refill it, so the precise clock is read only when the
// bucket is empty: a client within its rate costs one decrement per
// message.
type inboundRate struct {
	tokens    float64
	last      int64 // server clock of the last refill; 0 before the first message
	overSince int64 // server clock of the first drop of the current overload, 0 when none
}

// admitInbound takes one token for an incoming message. It returns false
// when the message must be dropped; a connection over its rate for longer
// than InboundRateGrace is closed with 1008. Event goroutine only.
func (c *Conn) admitInbound() bool {
	cfg := &c.srv.cfg
	if cfg.MaxInboundRate == Unlimited {
		return true
	}
	r := &c.rate
	if r.tokens >= 1 {
		r.tokens--
		return true
	}
	now := c.srv.preciseNow()
	burst := float64(cfg.InboundBurst)
	if r.last == 0 {
		r.tokens = burst
	} else {
		r.tokens = min(burst, r.tokens+float64(now-r.last)*float64(cfg.MaxInboundRate)/float64(time.Second))
	}
	r.last = now
	if r.tokens >= burst/2 {
		r.overSince = 0 // the client paused long enough: not a sustained overload
	}
	if r.tokens >= 1 {
		r.tokens--
		return true
	}
	c.srv.m.inboundDropped.Inc()
	switch {
	case r.overSince == 0:
		r.overSince = now
	case now-r.overSince >= int64(cfg.InboundRateGrace):
		c.closeWith(1008, "inbound message rate exceeded", causeRateLimit)
	}
	return false
}

// readPauser is netpoll's application-driven read pause (the read-pause
// patch in netpoll/upstream).
type readPauser interface {
	PauseRead() error
	ResumeRead() error
}

// holdInput records that c's buffer holds n unread bytes and, while all
// connections together hold more than InputTotalLimit, pauses c's reads
// until the sweeper sees the total back under three quarters of it
// (resumeHeld). Event goroutine only.
func (c *Conn) holdInput(n int) {
	s := c.srv
	total := s.inputHeld.Add(int64(n - c.held))
	c.held = n
	if total <= s.cfg.InputTotalLimit || n == 0 {
		return
	}
	p, ok := c.nc.(readPauser)
	if !ok {
		return
	}
	s.inputMu.Lock()
	if !c.heldPause {
		c.heldPause = true
		s.inputPaused = append(s.inputPaused, c)
		_ = p.PauseRead()
		s.m.inputPaused.Inc()
	}
	s.inputMu.Unlock()
}

// resumeHeld runs on the sweeper: once the process's unread input is under
// three quarters of InputTotalLimit, it resumes every connection holdInput
// paused.
func (s *Server) resumeHeld() {
	if s.inputHeld.Load() > s.cfg.InputTotalLimit/4*3 {
		return
	}
	s.inputMu.Lock()
	paused := s.inputPaused
	s.inputPaused = nil
	for _, c := range paused {
		c.heldPause = false
		if p, ok := c.nc.(readPauser); ok {
			_ = p.ResumeRead() // closing connections left the list (forgetHeld)
		}
	}
	s.inputMu.Unlock()
}

// forgetHeld drops a closing connection from the paused list: once netpoll
// has freed its poll operator, resuming it could resume another
// connection's reads. Close callback only.
func (s *Server) forgetHeld(c *Conn) {
	s.inputMu.Lock()
	if c.heldPause {
		c.heldPause = false
		for i, p := range s.inputPaused {
			if p == c {
				s.inputPaused = append(s.inputPaused[:i], s.inputPaused[i+1:]...)
				break
			}
		}
	}
	s.inputMu.Unlock()
}
