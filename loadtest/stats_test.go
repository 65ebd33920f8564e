package loadtest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestHistogramSnapshotRoundTrip(t *testing.T) {
	h := newHist()
	for _, ns := range []int64{-5, 0, 999, 1_500_000, 3_000_000, int64(2 * time.Minute)} {
		recordUs(h, ns)
	}
	s := encodeHist(h)
	if s == "" || encodeHist(newHist()) != "" {
		t.Fatal("an empty histogram encodes to \"\", a non-empty one does not")
	}
	g, err := decodeHist(s)
	if err != nil {
		t.Fatal(err)
	}
	if g.TotalCount() != 6 || g.Min() != histMinUs || g.ValueAtQuantile(100) < histMaxUs*999/1000 {
		t.Fatalf("decoded: count %d min %d max %d", g.TotalCount(), g.Min(), g.Max())
	}
	l := latencyOf(g)
	// 1, 1, 1 µs (clamped up), 1.5 ms, 3 ms, 60 s (clamped down).
	if l.Count != 6 || l.P50 != 0.001 || l.P90 < 2.99 || l.P90 > 3.01 || l.Max < 59_900 {
		t.Fatalf("latency %+v", l)
	}
	for _, bad := range []string{"", "!!!", "AAAA", strings.Repeat("QUFB", 20)} {
		if _, err := decodeHist(bad); err == nil {
			t.Errorf("decodeHist(%q) accepted", bad)
		}
	}
}

// FuzzWorkerEvent: the parent decodes whatever a worker writes; a
// malformed line is an error or a counted bad tick, never a panic.
func FuzzWorkerEvent(f *testing.F) {
	f.Fuzz(func(t *testing.T, line []byte) {
		var ev event
		if json.Unmarshal(line, &ev) != nil || ev.Tick == nil {
			return
		}
		a := newAggregator(2, nil, nil)
		a.addTick(0, ev.Tick)
		a.addTick(1, ev.Tick)
		a.workerGone(0)
		_ = a.series()
	})
}

func TestErrorCounts(t *testing.T) {
	var e errorCounts
	e.add(errDialRefused)
	e.add(errDialRefused)
	e.addClose(closeKey{code: 4003, rejected: true})
	e.addClose(closeKey{code: 4002})
	got := e.snapshot()
	want := map[string]int64{"dial_refused": 2, "rejected_4003": 1, "closed_4002": 1}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if d := diffCounts(got, map[string]int64{"dial_refused": 1}); d["dial_refused"] != 1 || d["closed_4002"] != 1 || len(d) != 3 {
		t.Fatalf("diff %v", d)
	}
	if sumCounts(got) != 4 || formatCounts(got) != "closed_4002=1 dial_refused=2 rejected_4003=1" {
		t.Fatalf("sum %d, format %q", sumCounts(got), formatCounts(got))
	}
}

func TestPace(t *testing.T) {
	// Bounded and unpaced: exactly maxN sends.
	n := 0
	pace(make(chan struct{}), 0, 500, func() bool { n++; return true })
	if n != 500 {
		t.Fatalf("unpaced: %d sends, want 500", n)
	}
	// Paced: stops at stop, having sent about rate × time (never more
	// than the schedule allows).
	stop := make(chan struct{})
	n = 0
	start := time.Now()
	time.AfterFunc(300*time.Millisecond, func() { close(stop) })
	pace(stop, 100, 0, func() bool { n++; return true })
	if limit := int(100*time.Since(start).Seconds()) + 1; n == 0 || n > limit {
		t.Fatalf("paced: %d sends in %v, at most %d allowed", n, time.Since(start), limit)
	}
}

func TestChosen(t *testing.T) {
	var n int
	for id := range int32(10000) {
		if chosen(id, 0.1) {
			n++
		}
		if !chosen(id, 1) {
			t.Fatal("fraction 1 must choose everyone")
		}
	}
	if n < 900 || n > 1100 {
		t.Fatalf("fraction 0.1 chose %d of 10000", n)
	}
}
