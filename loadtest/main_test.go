package loadtest

import (
	"context"
	"os"
	"testing"

	"github.com/gatecast/gatecast/internal/testserver"
)

// TestMain runs the fleet worker when the test binary is re-run as one: the
// parent re-executes os.Executable(), which under `go test` is this test
// binary, not gatecast, and marks the child with workerEnv. Otherwise it
// runs the tests through testserver.Run, which stops the shared Postgres
// server (started only by a test that asks for a database) at the end.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(runWorkerProcess(context.Background(), os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(testserver.Run(m))
}
