package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fdCount counts this process's open files, after a first read (which may
// open the runtime's poller files, once).
func fdCount(t *testing.T) int {
	t.Helper()
	if _, err := openFDs(); err != nil {
		t.Fatal(err)
	}
	n, err := openFDs()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkFloorTimes asserts one read time per measured socket, all after the
// release, and ordered figures.
func checkFloorTimes(t *testing.T, r FloorReport, measured int) {
	t.Helper()
	if len(r.times) != measured || r.MeasuredPairs != measured {
		t.Fatalf("%d read times, measured pairs %d, want %d", len(r.times), r.MeasuredPairs, measured)
	}
	for i, d := range r.times {
		if d <= 0 {
			t.Errorf("socket %d: read time %v", i, d)
		}
	}
	if !(r.P50Ms > 0 && r.P50Ms <= r.P99Ms && r.P99Ms <= r.LastMs) || r.WriteMs <= 0 {
		t.Errorf("p50 %v p99 %v last %v write %v", r.P50Ms, r.P99Ms, r.LastMs, r.WriteMs)
	}
	if p := runtime.GOMAXPROCS(0); r.Writers != p || r.Readers != p {
		t.Errorf("writers %d readers %d, want GOMAXPROCS %d", r.Writers, r.Readers, p)
	}
}

func TestSocketFloor(t *testing.T) {
	before := fdCount(t)
	r, err := socketFloor(context.Background(), 50, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if after := fdCount(t); after != before {
		t.Errorf("open files: %d before, %d after", before, after)
	}
	checkFloorTimes(t, r, 50)
	if r.Pairs != 50 || r.Scaled || r.Scale != 0 || r.FDLimit <= 0 || r.FDsOpen <= 0 || r.Error != "" {
		t.Errorf("%+v", r)
	}
	// The unscaled figures are those of the read times.
	ns := make([]int64, len(r.times))
	for i, d := range r.times {
		ns[i] = int64(d)
	}
	if l := exactLatency(ns); r.P50Ms != round3(l.P50) || r.P99Ms != round3(l.P99) || r.LastMs != round3(l.Max) {
		t.Errorf("figures %v/%v/%v, read times give %v/%v/%v", r.P50Ms, r.P99Ms, r.LastMs, l.P50, l.P99, l.Max)
	}
	if s := floorLine(&r); !strings.HasPrefix(s, "socket floor (50 raw loopback sockets, ") || strings.Contains(s, "scaled") {
		t.Errorf("line %q", s)
	}
}

// With a limit that leaves room for 20 pairs, 20 are measured and the
// figures are multiplied by 50/20.
func TestSocketFloorScaled(t *testing.T) {
	before := fdCount(t)
	limit := before + floorMargin + 1 + runtime.GOMAXPROCS(0) + 2*20
	r, err := socketFloorLimit(context.Background(), 50, 5*time.Second, limit)
	if err != nil {
		t.Fatal(err)
	}
	if after := fdCount(t); after != before {
		t.Errorf("open files: %d before, %d after", before, after)
	}
	// 20 unless a file was opened meanwhile.
	m := floorFit(50, limit, r.FDsOpen, r.Readers)
	if m < 1 || m > 20 {
		t.Fatalf("fit %d (files open %d, limit %d)", m, r.FDsOpen, limit)
	}
	checkFloorTimes(t, r, m)
	scale := 50 / float64(m)
	if !r.Scaled || r.Pairs != 50 || r.Scale != round3(scale) || r.FDLimit != limit {
		t.Errorf("%+v", r)
	}
	ns := make([]int64, len(r.times))
	for i, d := range r.times {
		ns[i] = int64(d)
	}
	if l := exactLatency(ns); r.P50Ms != round3(l.P50*scale) || r.P99Ms != round3(l.P99*scale) || r.LastMs != round3(l.Max*scale) {
		t.Errorf("figures %v/%v/%v, read times ×%v give %v/%v/%v", r.P50Ms, r.P99Ms, r.LastMs, scale, l.P50*scale, l.P99*scale, l.Max*scale)
	}
	if s := floorLine(&r); !strings.HasPrefix(s, "socket floor (50 raw loopback sockets, ") || !strings.Contains(s, "scaled") {
		t.Errorf("line %q", s)
	}
}

func TestSocketFloorFails(t *testing.T) {
	before := fdCount(t)
	// No room for one pair.
	if _, err := socketFloorLimit(context.Background(), 50, 5*time.Second, before+floorMargin); err == nil {
		t.Error("no room: no error")
	}
	// A context already ended: an error, and no file left open.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := socketFloor(ctx, 50, 5*time.Second); err == nil {
		t.Error("ended context: no error")
	}
	if _, err := socketFloor(context.Background(), 0, 5*time.Second); err == nil {
		t.Error("no sockets: no error")
	}
	if after := fdCount(t); after != before {
		t.Errorf("open files: %d before, %d after", before, after)
	}
	r := FloorReport{Pairs: 7, Error: "boom"}
	if s := floorLine(&r); !strings.Contains(s, "not measured: boom") {
		t.Errorf("line %q", s)
	}
}

func TestFloorFit(t *testing.T) {
	for _, c := range []struct{ n, limit, open, readers, want int }{
		{2000, 20000, 10, 2, 2000},
		{19000, 20000, 10, 2, (20000 - 10 - floorMargin - 3) / 2},
		{50, 10 + floorMargin + 3 + 40, 10, 2, 20},
		{50, 10 + floorMargin + 3 + 41, 10, 2, 20},
		{50, 10 + floorMargin + 3 + 1, 10, 2, 0},
		{50, 100, 10, 2, 0},
	} {
		if got := floorFit(c.n, c.limit, c.open, c.readers); got != c.want {
			t.Errorf("floorFit(%d, %d, %d, %d) = %d, want %d", c.n, c.limit, c.open, c.readers, got, c.want)
		}
	}
}

// revoke --kind measures the floor once, for --conns sockets, before the
// first kind: a line under the table and socket_floor in the report;
// --floor=false leaves both out.
func TestRevKindFloorCLI(t *testing.T) {
	n := testNode(t)
	args := []string{"revoke", "--kinds", "token-delete",
		"--url", "ws://" + n.WSAddr() + "/ws/brocker/", "--admin-url", "http://" + n.AdminAddr(), "--admin-key", n.AdminKey(),
		"--conns", "10", "--unaffected", "2", "--workers", "1", "--in-process", "--source-ips", "1", "--quiet"}
	for _, floor := range []bool{true, false} {
		var out, errb bytes.Buffer
		a := args
		if !floor {
			a = append(a[:len(a):len(a)], "--floor=false")
		}
		if code := RunCLI(context.Background(), a, &out, &errb); code != 0 {
			t.Fatalf("floor %v: exit %d: %s", floor, code, errb.String())
		}
		var rep Report
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.RevKind == nil {
			t.Fatalf("floor %v: stdout: %v\n%s", floor, err, out.String())
		}
		line := strings.Contains(errb.String(), "socket floor (10 raw loopback sockets, ")
		f := rep.SocketFloor
		switch {
		case floor && (f == nil || f.Pairs != 10 || f.MeasuredPairs != 10 || f.Scaled || f.Error != "" || f.LastMs <= 0 || !line):
			t.Errorf("floor: %+v, stderr:\n%s", f, errb.String())
		case !floor && (f != nil || line):
			t.Errorf("--floor=false: %+v, stderr:\n%s", f, errb.String())
		}
	}
}
