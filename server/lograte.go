package server

import (
	"time"

	"github.com/gatecast/gatecast/broker"
)

// refusalLogEvery is the least interval between two log lines about
// refused connections of one cause: a connect storm (a fleet with a
// rotated token, a scanner) must not flood the log.
const refusalLogEvery = 10 * time.Second

// refusalLog samples the seed protocol's refusal lines per cause. It is the
// process's, shared by the nodes a test runs in one process.
var refusalLog = broker.NewCauseLog(refusalLogEvery)
