package storemetrics

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatecast/gatecast/acl"
)

func TestFailed(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("x: %w", acl.ErrNotFound), false},
		{fmt.Errorf("x: %w", acl.ErrConflict), false},
		{fmt.Errorf("x: %w", acl.ErrInvalid), false},
		{fmt.Errorf("x: %w", context.Canceled), false},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{errors.New("connection refused"), true},
	}
	for _, c := range cases {
		if got := Failed(c.err); got != c.want {
			t.Errorf("Failed(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestNilRegisterer(t *testing.T) {
	m, err := New(nil, "sqlite")
	if err != nil || m != nil {
		t.Fatalf("New(nil) = %v, %v; want nil, nil", m, err)
	}
	err = errors.New("boom")
	m.Track(Write, time.Now(), &err) // a nil *Metrics records nothing and does not panic
}

func TestTrack(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "gatecast_store_errors_total"); err != nil || n != int(numOps) {
		t.Fatalf("%d error series (%v), want %d bound at construction", n, err, numOps)
	}
	failure := errors.New("connection refused")
	var none error
	m.Track(LoadGrants, time.Now().Add(-time.Second), &failure)
	m.Track(LoadGrants, time.Now(), &none)
	if got := testutil.ToFloat64(m.errors[LoadGrants]); got != 1 {
		t.Fatalf("load_grants errors = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.errors[LookupToken]); got != 0 {
		t.Fatalf("lookup_token errors = %v, want 0", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gatecast_store_query_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range s.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			h := s.GetHistogram()
			switch {
			case labels["store"] != "postgres":
				t.Fatalf("store label %q", labels["store"])
			case labels["op"] == "load_grants":
				if h.GetSampleCount() != 2 || h.GetSampleSum() < 1 {
					t.Fatalf("load_grants: %d calls, %vs; want 2 calls, one of them 1s long", h.GetSampleCount(), h.GetSampleSum())
				}
			case h.GetSampleCount() != 0:
				t.Fatalf("op %s: %d calls, want 0", labels["op"], h.GetSampleCount())
			}
		}
	}

	// A second store of the same kind on the registry shares the series; a
	// store of another kind gets its own.
	again, err := New(reg, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	again.Track(LoadGrants, time.Now(), &failure)
	if got := testutil.ToFloat64(m.errors[LoadGrants]); got != 2 {
		t.Fatalf("shared load_grants errors = %v, want 2", got)
	}
	if _, err := New(reg, "sqlite"); err != nil {
		t.Fatalf("a second store kind on one registry: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg, "gatecast_store_errors_total"); err != nil || n != 2*int(numOps) {
		t.Fatalf("%d error series (%v), want %d", n, err, 2*numOps)
	}
}

// TestRegisterConflict: a registry holding an incompatible collector under
// the same name is an error, not a panic or silent loss.
func TestRegisterConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "gatecast_store_errors_total", Help: "other"}))
	if _, err := New(reg, "sqlite"); err == nil {
		t.Fatal("New succeeded on a registry with a conflicting gatecast_store_errors_total")
	}
}

func TestOpString(t *testing.T) {
	for op := range numOps {
		if op.String() == "" || op.String() != opNames[op] {
			t.Errorf("Op(%d).String() = %q", op, op.String())
		}
	}
	if got := Op(200).String(); got != "Op(200)" {
		t.Errorf("unknown op: %q", got)
	}
}
