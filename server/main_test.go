package server

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/gatecast/gatecast/internal/testserver"
)

// childEnv marks a re-executed test binary that runs one node as its own
// process (configured through GATECAST_* variables), so tests can SIGKILL
// a node.
const childEnv = "GATECAST_TEST_NODE_PROCESS"

// TestMain stops the shared throwaway Postgres the store tests start, or,
// in a child, runs a node until SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChildNode())
	}
	code := testserver.Run(m)
	if mqttJSUsed.Load() {
		if dir, err := mqttJS(); err == nil {
			os.RemoveAll(dir) // MQTT.js, installed once for the run
		}
	}
	os.Exit(code)
}

func runChildNode() int {
	cfg, err := ParseConfig(nil, os.Getenv, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Run(ctx, cfg, NewLogger(cfg, os.Stderr), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
