package server

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gatecast/gatecast/broker"
)

// refusalLogEvery is the least interval between two log lines about
// refused connections of one cause: a connect storm (a fleet with a
// rotated token, a scanner) must not flood the log.
const refusalLogEvery = 10 * time.Second

// refusalLog samples the seed protocol's refusal lines, one sampler per
// broker.Cause, so that a storm of one kind (invalid token) does not hide
// the first line of another (connection limit reached). It is the
// process's, shared by the nodes a test runs in one process.
var refusalLog = newCauseSamplers(refusalLogEvery)

// causeSamplers is a logSampler per broker.Cause (a small fixed set;
// causes past the array share its last one).
type causeSamplers [32]logSampler

func newCauseSamplers(every time.Duration) *causeSamplers {
	var s causeSamplers
	for i := range s {
		s[i].every = every
	}
	return &s
}

func (s *causeSamplers) log(c broker.Cause, l *slog.Logger, level slog.Level, msg string, args ...any) {
	s[min(int(c), len(s)-1)].log(l, level, msg, args...)
}

// logSampler lets one log line through per interval, counting the ones it
// holds back into the next. A copy of broker's logSampler (broker/reason.go),
// which is unexported there; lock-free, as refusals are logged on the
// connections' event goroutines.
type logSampler struct {
	every      time.Duration
	next       atomic.Int64 // unix nanoseconds before which lines are held back
	suppressed atomic.Int64
}

// log writes msg at level if the interval has passed since the last line,
// adding how many were held back meanwhile.
func (s *logSampler) log(l *slog.Logger, level slog.Level, msg string, args ...any) {
	now := time.Now().UnixNano()
	next := s.next.Load()
	if now < next || !s.next.CompareAndSwap(next, now+int64(s.every)) {
		s.suppressed.Add(1)
		return
	}
	if n := s.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed_since_last_line", n)
	}
	l.Log(context.Background(), level, msg, args...)
}
