package broker

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatecast/gatecast/acl"
)

// Connections are counted by protocol; every rights change a node enforces
// is timed, and the sessions it closes are counted by kind.
func TestMetricsConnectionsAndRevocation(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnvRegistered(t, reg)
	b, st := e.b, e.store
	tok, secret := e.token(t, 0, map[string]acl.Permission{"sensors/#": acl.PermRead})
	for range 2 {
		if _, err := b.Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: []string{"sensors/#"}, Protocol: "seed"}); err != nil {
			t.Fatal(err)
		}
	}
	if v := testutil.ToFloat64(b.metrics.connections[0]); v != 2 {
		t.Fatalf(`gatecast_connections{protocol="seed"} = %v, want 2`, v)
	}
	disabled := true
	if _, err := st.UpdateToken(context.Background(), tok.ID, acl.TokenUpdate{Disabled: &disabled}); err != nil {
		t.Fatal(err)
	}
	if err := b.RefreshTokens(context.Background(), tok.ID); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(b.metrics.connections[0]); v != 0 {
		t.Fatalf("connections after the revoke = %v, want 0", v)
	}
	if v := testutil.ToFloat64(b.metrics.revocations[revokeToken]); v != 2 {
		t.Fatalf(`gatecast_revocations_total{kind="token"} = %v, want 2`, v)
	}
	if n := testutil.CollectAndCount(reg, "gatecast_revocation_seconds"); n != 1 {
		t.Fatalf("gatecast_revocation_seconds series: %d", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "gatecast_revocation_seconds" {
			if c := mf.GetMetric()[0].GetHistogram().GetSampleCount(); c != 1 {
				t.Fatalf("revocation observations %d, want 1", c)
			}
		}
	}
}
