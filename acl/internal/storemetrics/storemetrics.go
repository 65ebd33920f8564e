// Package storemetrics is the instrumentation shared by acl's stores
// (acl/sqlite, acl/postgres): the latency of every store call and the count
// of calls that failed, by store and by a small fixed set of operations.
//
//	gatecast_store_query_seconds{store,op}  histogram
//	gatecast_store_errors_total{store,op}   counter
//
// store is a constant label ("sqlite" or "postgres"); op is one of the Op
// names below. Every child is bound when the Metrics is built, so a call
// records with two array lookups and no label hashing.
//
// It must not know about SQL or drivers: the stores decide which op a call
// is and hand over the call's start time and final error.
package storemetrics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
)

// Op is the kind of a store call, the op label.
type Op uint8

// The op label values. A call is one Store method call, from its start
// (after argument validation, which never reaches the database) to its
// return, including the wait for a pooled connection or, in SQLite, for the
// writer slot.
const (
	// LookupToken is GetTokenByHash: the connect-time lookup of a secret,
	// which the broker makes only when its token cache misses.
	LookupToken Op = iota
	// GetToken is GetToken (token re-reads by rights enforcement and the
	// admin API).
	GetToken
	// LoadGrants is ListGrants: a token's permissions, read on a token
	// cache miss and on every rights refresh.
	LoadGrants
	// Read is every other read: ListTokens, GetTag, ListTags, GetGrant,
	// TokensWithTag, ListImported, CountWeakSecrets, ListAudit,
	// RightsVersion, TokenVersions.
	Read
	// Write is every change: the Create (CreateTokenWith included),
	// Update, Delete, SetTokenHash, SetPermission, DeletePermission and
	// AppendAudit methods.
	Write
	// Migrate is the schema check and migration run when a store opens.
	Migrate
	// Ping is a health check (acl/postgres Store.Ping).
	Ping
	numOps
)

var opNames = [numOps]string{
	LookupToken: "lookup_token",
	GetToken:    "get_token",
	LoadGrants:  "load_grants",
	Read:        "read",
	Write:       "write",
	Migrate:     "migrate",
	Ping:        "ping",
}

// String returns the op label value.
func (o Op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// buckets of gatecast_store_query_seconds: from an in-process SQLite read
// (tens of microseconds) to a Postgres call stuck until its deadline.
var buckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics records store calls. A nil *Metrics records nothing, so a store
// opened without a Registerer pays nothing but the nil check. Safe for
// concurrent use.
type Metrics struct {
	seconds [numOps]prometheus.Observer
	errors  [numOps]prometheus.Counter
}

// New builds the collectors for store ("sqlite", "postgres") and registers
// them on reg; a nil reg returns a nil *Metrics (no metrics). When reg
// already holds this store's collectors (a second store of the same kind on
// one registry, e.g. a reopened store), they are shared: the series count
// the calls of both.
func New(reg prometheus.Registerer, store string) (*Metrics, error) {
	if reg == nil {
		return nil, nil
	}
	constLabels := prometheus.Labels{"store": store}
	seconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "gatecast_store_query_seconds",
		Help:        "Duration of ACL store calls (one Store method call, including the wait for a connection), by store and operation.",
		ConstLabels: constLabels,
		Buckets:     buckets,
	}, []string{"op"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "gatecast_store_errors_total",
		Help:        "ACL store calls that failed (not counting not-found, conflict and invalid-value answers, nor calls cancelled by their caller), by store and operation.",
		ConstLabels: constLabels,
	}, []string{"op"})
	if err := register(reg, &seconds); err != nil {
		return nil, err
	}
	if err := register(reg, &errs); err != nil {
		return nil, err
	}
	m := &Metrics{}
	for op := range numOps {
		m.seconds[op] = seconds.WithLabelValues(opNames[op])
		m.errors[op] = errs.WithLabelValues(opNames[op])
	}
	return m, nil
}

// register registers *c on reg, replacing *c by the collector already
// registered in its place if there is one of the same type.
func register[C prometheus.Collector](reg prometheus.Registerer, c *C) error {
	err := reg.Register(*c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			*c = existing
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("registering store metrics: %w", err)
	}
	return nil
}

// Track records one call of op that started at start and ended with *err.
// Use it deferred, with a named error result:
//
//	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
func (m *Metrics) Track(op Op, start time.Time, err *error) {
	if m == nil {
		return
	}
	m.seconds[op].Observe(time.Since(start).Seconds())
	if Failed(*err) {
		m.errors[op].Inc()
	}
}

// Failed reports whether err is a store failure: any error except the
// answers the acl.Store contract defines (acl.ErrNotFound, ErrConflict,
// ErrInvalid) and a cancellation by the caller (context.Canceled). A
// deadline that expired (context.DeadlineExceeded) is a failure: the store
// did not answer in time.
func Failed(err error) bool {
	return err != nil &&
		!errors.Is(err, acl.ErrNotFound) &&
		!errors.Is(err, acl.ErrConflict) &&
		!errors.Is(err, acl.ErrInvalid) &&
		!errors.Is(err, context.Canceled)
}
