package loadtest

import (
	"context"
	"os"
	"testing"
)

// TestMain runs the fleet worker when the test binary is re-run as one: the
// parent re-executes os.Executable(), which under `go test` is this test
// binary, not gatecast, and marks the child with workerEnv.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(runWorkerProcess(context.Background(), os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
