package grafana

import (
	"testing"

	"github.com/gatecast/gatecast/internal/testserver"
)

// The dashboards are checked against a real two-node cluster, whose shared
// Postgres server testserver stops after the tests.
func TestMain(m *testing.M) { testserver.Main(m) }
