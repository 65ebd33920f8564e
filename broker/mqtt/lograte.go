package mqtt

import (
	"log/slog"
	"time"

	"github.com/gatecast/gatecast/broker"
)

// refusalLog samples the "mqtt connection refused" lines per cause (at
// most one line per cause every 10 s, the next one saying how many were
// held back), so that a connect storm cannot flood the log. It is the
// process's, shared by the Servers a test runs in one process.
var refusalLog = broker.NewCauseLog(10 * time.Second)

// logRefusal logs a refused CONNECT at info through refusalLog: the remote
// address, cause and reason (never the password).
func logRefusal(l *slog.Logger, remote string, rej *broker.Rejection) {
	refusalLog.Log(rej.Cause, l, slog.LevelInfo, "mqtt connection refused",
		"remote", remote, "cause", rej.Cause, "reason", rej.Reason)
}
