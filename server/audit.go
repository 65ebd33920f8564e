package server

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
)

// weakSecretsEvery bounds how often gatecast_tokens_weak_secret reads the
// store: scrapes in between get the last count.
const weakSecretsEvery = 5 * time.Second

// weakSecrets is the gatecast_tokens_weak_secret gauge: the tokens of the
// store whose imported secret is weak (acl.IsWeakSecret), to rotate. It is
// read from the store of record, so in a cluster every node reports the
// same count. It takes no lock: one scrape at a time refreshes the count
// (refreshing), the others report the last one.
type weakSecrets struct {
	store      acl.Store
	desc       *prometheus.Desc
	count      atomic.Int64
	readAt     atomic.Int64 // Unix nanoseconds of the last successful read; 0: none yet
	refreshing atomic.Bool
}

func newWeakSecrets(store acl.Store) *weakSecrets {
	return &weakSecrets{store: store, desc: prometheus.NewDesc("gatecast_tokens_weak_secret",
		"Tokens whose imported secret is weak (shorter than 16 characters or low estimated entropy); they authenticate but should be rotated. Read from the store: every node of a cluster reports the same count.",
		nil, nil)}
}

func (w *weakSecrets) Describe(ch chan<- *prometheus.Desc) { ch <- w.desc }

func (w *weakSecrets) Collect(ch chan<- prometheus.Metric) {
	last := w.readAt.Load()
	if time.Since(time.Unix(0, last)) >= weakSecretsEvery && w.refreshing.CompareAndSwap(false, true) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		n, err := w.store.CountWeakSecrets(ctx)
		cancel()
		if err == nil {
			w.count.Store(int64(n))
			w.readAt.Store(time.Now().UnixNano())
			last = 1
		}
		w.refreshing.Store(false)
	}
	if last == 0 {
		return // never read: no sample rather than a wrong 0 (the store errors are in gatecast_store_errors_total)
	}
	ch <- prometheus.MustNewConstMetric(w.desc, prometheus.GaugeValue, float64(w.count.Load()))
}
