package acltest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatecast/gatecast/acl"
)

// MetricOps are the op label values every store exports from Open on.
var MetricOps = []string{"lookup_token", "get_token", "load_grants", "read", "write", "migrate", "ping"}

// StoreMetric returns, for the series {store, op}, how many calls
// gatecast_store_query_seconds observed and gatecast_store_errors_total.
func StoreMetric(t testing.TB, g prometheus.Gatherer, store, op string) (calls uint64, errs float64) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["store"] != store || labels["op"] != op || len(labels) != 2 {
				continue
			}
			switch mf.GetName() {
			case "gatecast_store_query_seconds":
				calls = m.GetHistogram().GetSampleCount()
				found++
			case "gatecast_store_errors_total":
				errs = m.GetCounter().GetValue()
				found++
			}
		}
	}
	if found != 2 {
		t.Fatalf("store %q op %q: %d of the 2 series found", store, op, found)
	}
	return calls, errs
}

// RunMetricsSuite checks the metrics contract of a store: open must return
// a new, empty store that registers its metrics on reg under the label
// store (and arranges its Close). It checks that every series exists from
// Open on, that calls are counted per op, and which outcomes count as
// errors: not the acl.Store answers (not found, conflict, invalid value),
// not a cancellation by the caller, but a deadline that expired. Argument
// validation never reaches the database and is not observed.
func RunMetricsSuite(t *testing.T, store string, open func(t *testing.T, reg prometheus.Registerer) acl.Store) {
	reg := prometheus.NewRegistry()
	s := open(t, reg)
	for _, name := range []string{"gatecast_store_query_seconds", "gatecast_store_errors_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != len(MetricOps) {
			t.Fatalf("%s: %d series (%v), want one per op (%d)", name, n, err, len(MetricOps))
		}
	}
	type want struct {
		calls uint64
		errs  float64
	}
	expect := map[string]want{"migrate": {1, 0}}
	check := func(step string) {
		t.Helper()
		for _, op := range MetricOps {
			calls, errs := StoreMetric(t, reg, store, op)
			if w := expect[op]; calls != w.calls || errs != w.errs {
				t.Fatalf("%s: op %s: %d calls, %v errors; want %d, %v", step, op, calls, errs, w.calls, w.errs)
			}
		}
	}
	check("after Open")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.GetTokenByHash(ctx, acl.HashSecret([]byte("nobody"))); !errors.Is(err, acl.ErrNotFound) {
		t.Fatalf("GetTokenByHash: %v", err)
	}
	expect["lookup_token"] = want{1, 0}
	check("not found")

	tok, err := s.CreateToken(ctx, "m", 0, acl.HashSecret([]byte("m")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateToken(ctx, "m2", 0, tok.Hash); !errors.Is(err, acl.ErrConflict) {
		t.Fatalf("duplicate CreateToken: %v", err)
	}
	if _, err := s.CreateTag(ctx, "a/#/b"); !errors.Is(err, acl.ErrInvalid) {
		t.Fatalf("CreateTag of an invalid pattern: %v", err)
	}
	expect["write"] = want{2, 0}
	check("writes")

	if _, err := s.GetToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListGrants(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListTags(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokensWithTag(ctx, 1); !errors.Is(err, acl.ErrNotFound) {
		t.Fatalf("TokensWithTag of a missing tag: %v", err)
	}
	expect["get_token"] = want{1, 0}
	expect["load_grants"] = want{1, 0}
	expect["read"] = want{2, 0}
	check("reads")

	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if _, err := s.ListGrants(cancelled, tok.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("ListGrants with a cancelled context: %v", err)
	}
	expect["load_grants"] = want{2, 0}
	check("cancelled by the caller")

	expired, cancelExpired := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelExpired()
	if _, err := s.GetTokenByHash(expired, tok.Hash); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetTokenByHash past its deadline: %v", err)
	}
	if err := s.DeleteToken(expired, tok.ID); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DeleteToken past its deadline: %v", err)
	}
	expect["lookup_token"] = want{2, 1}
	expect["write"] = want{3, 1}
	check("deadline expired")
}
