package loadtest

import (
	"bytes"
	"strings"
	"testing"
)

// Workers that start late never report the seconds before their first
// tick: progress must still print every second once every live worker is
// past it, and skip seconds nobody reported (a loaded machine starts
// worker processes more than a second after the run's epoch).
func TestAggregatorProgressLateWorkers(t *testing.T) {
	var out bytes.Buffer
	a := newAggregator(2, &out, nil)
	a.addTick(0, &tickData{Sec: 2, Open: 1})
	if out.Len() != 0 {
		t.Fatalf("printed before worker 1 reported anything:\n%s", out.String())
	}
	a.addTick(1, &tickData{Sec: 3, Open: 2}) // worker 1 started later still: past second 2
	if got := strings.TrimSpace(out.String()); !strings.HasPrefix(got, "[   2s]") || strings.Contains(got, "\n") {
		t.Fatalf("want only second 2 once worker 1 is past it:\n%s", out.String())
	}
	a.addTick(0, &tickData{Sec: 3, Open: 1})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "[   2s]") || !strings.HasPrefix(lines[1], "[   3s]") {
		t.Fatalf("progress after both passed second 3:\n%s", out.String())
	}
	a.addTick(1, &tickData{Sec: 5, Open: 2}) // worker 1 skipped second 4
	a.workerGone(0)
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[2], "[   5s]") {
		t.Fatalf("after worker 0 left:\n%s", out.String())
	}
}
