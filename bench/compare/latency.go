package compare

import (
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 10 minutes with three
// significant digits.
const (
	latMinUS   = 1
	latMaxUS   = 600_000_000
	latSigFigs = 3
	latShards  = 16
)

// latencyRecorder collects delivery latencies from many reader goroutines:
// each records into the shard of its index, so two readers contend only
// when they share a shard; merged reads the whole distribution once the
// run is over.
type latencyRecorder struct {
	shards [latShards]latencyShard
}

type latencyShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
	_  [40]byte // keep neighbouring shards' locks off one cache line
}

func newLatencyRecorder() *latencyRecorder {
	l := &latencyRecorder{}
	for i := range l.shards {
		l.shards[i].h = hdrhistogram.New(latMinUS, latMaxUS, latSigFigs)
	}
	return l
}

// record adds one latency of ns nanoseconds, clamped to the trackable
// range (a negative value means clocks disagree, which one process cannot;
// it is kept as the minimum rather than dropped).
func (l *latencyRecorder) record(reader int, ns int64) {
	us := ns / 1000
	us = max(us, latMinUS)
	us = min(us, latMaxUS)
	s := &l.shards[uint(reader)%latShards]
	s.mu.Lock()
	s.h.RecordValue(us)
	s.mu.Unlock()
}

// merged returns one histogram of everything recorded.
func (l *latencyRecorder) merged() *hdrhistogram.Histogram {
	h := hdrhistogram.New(latMinUS, latMaxUS, latSigFigs)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		h.Merge(s.h)
		s.mu.Unlock()
	}
	return h
}

// quantileMs is the q-quantile (0..100) of h in milliseconds.
func quantileMs(h *hdrhistogram.Histogram, q float64) float64 {
	if h.TotalCount() == 0 {
		return 0
	}
	return float64(h.ValueAtQuantile(q)) / 1000
}
