package admin

import (
	"strings"
	"sync"
	"time"
)

// logEvery is the least interval between two log lines of one kind that a
// client can trigger without the admin key (refused keys, refused hosts,
// failed health checks).
const logEvery = 10 * time.Second

// logLimiter lets one line of each kind through per interval and counts
// the ones it holds back, for the next line to report. The kinds are a
// fixed handful of constants, so its maps stay small.
type logLimiter struct {
	every time.Duration

	mu         sync.Mutex
	now        func() time.Time // time.Now; a fixed clock in tests
	last       map[string]time.Time
	suppressed map[string]int
}

func newLogLimiter(every time.Duration) *logLimiter {
	return &logLimiter{every: every, now: time.Now, last: map[string]time.Time{}, suppressed: map[string]int{}}
}

// setClock replaces the clock (tests).
func (l *logLimiter) setClock(now func() time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now = now
}

// allow reports whether a line of this kind may be logged now and, if so,
// how many were held back since the last one.
func (l *logLimiter) allow(kind string) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if last, seen := l.last[kind]; seen && now.Sub(last) < l.every {
		l.suppressed[kind]++
		return false, 0
	}
	l.last[kind] = now
	n := l.suppressed[kind]
	l.suppressed[kind] = 0
	return true, n
}

// logSafe bounds a client-supplied string before it is logged: at most 100
// bytes, invalid UTF-8 replaced (slog quotes the rest).
func logSafe(s string) string {
	cut := len(s) > 100
	if cut {
		s = s[:100] // a rune cut in two becomes U+FFFD below
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if cut {
		s += "…"
	}
	return s
}
