package loadtest

import (
	"bytes"
	"strings"
	"testing"
)

func TestChartIsWellFormedSVG(t *testing.T) {
	pts := []Point{
		{T: 0, Conns: 5000, P99: 0},
		{T: 1, Conns: 15000, Delivered: 10, P99: 2.5},
		{T: 2, Conns: 15000, Delivered: 10, P99: 3.25},
		{T: 3, Conns: 0},
	}
	var b bytes.Buffer
	if err := writeChart(&b, `run <1> & "quotes"`, pts); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, b.Bytes(), 2)
	s := b.String()
	if !strings.Contains(s, "run &lt;1&gt; &amp;") || !strings.Contains(s, "open connections") || !strings.Contains(s, "p99") {
		t.Fatalf("title or labels missing:\n%s", s)
	}
	// An empty run still gives a valid (empty) chart.
	b.Reset()
	if err := writeChart(&b, "empty", nil); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, b.Bytes(), 0)
}

func TestNiceAxis(t *testing.T) {
	for _, c := range []struct{ in, step float64 }{{0, 1}, {0.3, 0.5}, {1, 1}, {3, 5}, {7, 10}, {1500, 2000}} {
		if got := niceStep(c.in); got != c.step {
			t.Errorf("niceStep(%v) = %v, want %v", c.in, got, c.step)
		}
	}
	if niceMax(15000) != 20000 || niceMax(0) != 1 {
		t.Errorf("niceMax(15000) = %v, niceMax(0) = %v", niceMax(15000), niceMax(0))
	}
}
