package mqtt

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gatecast/gatecast/broker"
)

// refusalLog samples the "mqtt connection refused" lines, one sampler per
// broker.Cause (at most one line per cause every 10 s, the next one saying
// how many were held back), so that a connect storm cannot flood the log.
// It is the process's, shared by the Servers a test runs in one process.
var refusalLog = func() *[32]logSampler {
	var s [32]logSampler
	for i := range s {
		s[i].every = 10 * time.Second
	}
	return &s
}()

// logRefusal logs a refused CONNECT at info through refusalLog: the remote
// address, cause and reason (never the password).
func logRefusal(l *slog.Logger, remote string, rej *broker.Rejection) {
	refusalLog[min(int(rej.Cause), len(refusalLog)-1)].log(l, slog.LevelInfo, "mqtt connection refused",
		"remote", remote, "cause", rej.Cause, "reason", rej.Reason)
}

// logSampler lets one log line through per interval, counting the ones it
// holds back into the next. A copy of broker's logSampler (broker/reason.go),
// which is unexported there.
type logSampler struct {
	every      time.Duration
	next       atomic.Int64 // unix nanoseconds before which lines are held back
	suppressed atomic.Int64
}

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
