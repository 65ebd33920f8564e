package broker

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// LogSampler lets one log line through per interval, for events a client
// can trigger at will: an attacker must not be able to fill the disk
// through our logs. The lines it holds back are counted into the next one
// (suppressed_since_last_line). Lock-free: it is called on connections'
// event goroutines. The zero value with Every set is ready to use.
type LogSampler struct {
	Every      time.Duration
	next       atomic.Int64 // unix nanoseconds before which lines are held back
	suppressed atomic.Int64
}

// Log writes msg at level if the interval has passed since the last line,
// adding how many were held back meanwhile.
func (s *LogSampler) Log(l *slog.Logger, level slog.Level, msg string, args ...any) {
	now := time.Now().UnixNano()
	next := s.next.Load()
	if now < next || !s.next.CompareAndSwap(next, now+int64(s.Every)) {
		s.suppressed.Add(1)
		return
	}
	if n := s.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed_since_last_line", n)
	}
	l.Log(context.Background(), level, msg, args...)
}

// Expire lets the next line through, as if the interval had passed; the
// held-back count stays (tests).
func (s *LogSampler) Expire() { s.next.Store(0) }

// Reset forgets the last line and the held-back count (tests).
func (s *LogSampler) Reset() {
	s.next.Store(0)
	s.suppressed.Store(0)
}

// CauseLog is a LogSampler per Cause, so that a storm of one kind of
// refusal (an invalid token) does not hide the first line of another (a
// connection limit): what the protocol adapters log refusals through.
type CauseLog [numCauses]LogSampler

// NewCauseLog returns a CauseLog letting one line per cause through every
// interval.
func NewCauseLog(every time.Duration) *CauseLog {
	var c CauseLog
	for i := range c {
		c[i].Every = every
	}
	return &c
}

// Log logs through cause's sampler.
func (c *CauseLog) Log(cause Cause, l *slog.Logger, level slog.Level, msg string, args ...any) {
	c[min(int(cause), len(c)-1)].Log(l, level, msg, args...)
}

// Reset resets every cause's sampler (tests).
func (c *CauseLog) Reset() {
	for i := range c {
		c[i].Reset()
	}
}
