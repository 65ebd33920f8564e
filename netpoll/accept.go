package netpoll

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Open-files watch. A process has RLIMIT_NOFILE descriptors (20,000 on the
// machines Gatecast is measured on, and nobody can raise it). Were client
// connections allowed to take them all, the admin listener could not accept
// the very call that revokes them, and the store and Redis pools could not
// reconnect. So the listener stops accepting once the process's open files
// reach the limit minus Config.FDReserve: it answers netpoll's accept with
// EMFILE, which makes netpoll take the listener off the poller and retry
// with a backoff of up to a second (its own out-of-files path), while new
// clients wait in the kernel's accept queue. One log line says accepting
// paused, one that it resumed.

// fdWatch estimates the process's open files cheaply: the connections this
// Server registered plus "other", the rest of the process's descriptors,
// counted from /proc/self/fd at Listen and by the sweeper when it matters.
type fdWatch struct {
	limit   atomic.Int64 // soft RLIMIT_NOFILE; 0 = unknown (no watch)
	reserve atomic.Int64
	other   atomic.Int64 // open descriptors not in the registry, at the last count
	paused  atomic.Bool
	lastCnt atomic.Int64 // server clock of the last /proc count
}

// countOpenFiles counts the entries of /proc/self/fd (-1 when unreadable).
func countOpenFiles() int {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return -1
	}
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(1024)
		n += len(names)
		if err != nil {
			break
		}
	}
	return n - 1 // the directory itself is open while it is read
}

// initFDWatch reads the limit and counts the open files; called by Listen.
func (s *Server) initFDWatch() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 || rl.Cur > 1<<40 {
		return
	}
	limit := int64(rl.Cur)
	reserve := int64(s.cfg.FDReserve)
	if reserve == 0 {
		reserve = min(max(limit/20, 64), 1024)
	}
	s.fds.reserve.Store(min(reserve, limit/2))
	s.fds.limit.Store(limit)
	s.recountFDs()
}

func (s *Server) recountFDs() {
	if n := countOpenFiles(); n >= 0 {
		s.fds.other.Store(max(0, int64(n)-int64(s.reg.len())))
	}
	s.fds.lastCnt.Store(s.now())
}

// fdHeadroom is how many more connections may be accepted before the
// reserve is reached (negative: over it).
func (s *Server) fdHeadroom() int64 {
	limit := s.fds.limit.Load()
	if limit == 0 {
		return 1 << 40
	}
	return limit - s.fds.reserve.Load() - s.fds.other.Load() - int64(s.reg.len())
}

// sweepFDs runs on the sweeper: it re-counts the process's descriptors
// when the estimate is within twice the reserve of the limit (every 2 s at
// most; counting 20,000 entries costs a few milliseconds), and ends a pause
// once there is room again.
func (s *Server) sweepFDs(now int64) {
	if s.fds.limit.Load() == 0 {
		return
	}
	if s.fdHeadroom() < s.fds.reserve.Load() && now-s.fds.lastCnt.Load() >= int64(2*time.Second) {
		s.recountFDs()
	}
	if s.fds.paused.Load() && s.fdHeadroom() > 0 && s.fds.paused.CompareAndSwap(true, false) {
		s.cfg.Logger.Info("accepting connections again", "open_files", s.fds.other.Load()+int64(s.reg.len()), "limit", s.fds.limit.Load())
	}
}

// errAcceptPaused is what Accept returns while over the reserve: EMFILE,
// so that netpoll runs its out-of-files backoff.
var errAcceptPaused error = syscall.EMFILE

// admitAccept reports whether Accept may take a connection now.
func (s *Server) admitAccept() bool {
	if s.fdHeadroom() > 0 {
		return true
	}
	if s.fds.paused.CompareAndSwap(false, true) {
		s.m.acceptPaused.Inc()
		s.cfg.Logger.Warn("accepting connections paused: open files are near the process limit; new clients wait in the accept queue",
			"open_files", s.fds.other.Load()+int64(s.reg.len()), "limit", s.fds.limit.Load(), "reserve", s.fds.reserve.Load())
	}
	return false
}

// netpollLog receives cloudwego/netpoll's log output (a standard logger,
// which it writes to on every failed accept retry, among others) and turns
// it into slog warnings of the most recent Server's logger, at most one per
// second, with a count of the lines suppressed meanwhile.
var netpollLog = &rateLimitedLog{every: time.Second}

type rateLimitedLog struct {
	logger     atomic.Pointer[slog.Logger]
	every      time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *rateLimitedLog) Write(p []byte) (int, error) {
	lg := l.logger.Load()
	if lg == nil {
		return len(p), nil
	}
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.last) < l.every {
		l.suppressed++
		l.mu.Unlock()
		return len(p), nil
	}
	l.last = now
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	// The standard logger prefixes a date and time; slog has its own.
	msg := bytes.TrimSpace(p)
	if i := bytes.Index(msg, []byte("NETPOLL:")); i >= 0 {
		msg = msg[i:]
	}
	lg.Warn("netpoll", "msg", string(msg), "suppressed", suppressed)
	return len(p), nil
}

// Accept implements the listener netpoll calls.
// Connections that arrive during Shutdown are closed before netpoll builds
// anything for them. netpoll reads (nil, nil) as "nothing to accept now",
// which also ends its out-of-files retry loop once the server is closed.
func (l *listener) Accept() (net.Conn, error) {
	s := l.srv
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, nil
	}
	if !s.admitAccept() {
		return nil, errAcceptPaused
	}
	c, err := l.Listener.Accept()
	if err != nil || c == nil {
		return c, err
	}
	s.mu.Lock()
	closed = s.closed
	s.mu.Unlock()
	if closed {
		c.Close()
		return nil, nil
	}
	return c, nil
}
