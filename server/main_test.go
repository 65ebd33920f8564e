package server

import (
	"testing"

	"github.com/gatecast/gatecast/internal/testserver"
)

// TestMain stops the shared throwaway Postgres the store tests start.
func TestMain(m *testing.M) { testserver.Main(m) }
