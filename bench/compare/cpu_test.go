package compare

import (
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCPUListsParseAndPrintLikeTaskset(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		out  string
	}{
		{"1", []int{1}, "1"},
		{"0,2", []int{0, 2}, "0,2"},
		{"2-4", []int{2, 3, 4}, "2-4"},
		{"3,0-1,1", []int{0, 1, 3}, "0-1,3"},
		{" 5 , 6 ", []int{5, 6}, "5-6"},
	} {
		got, err := parseCPUList(tc.in)
		if err != nil || !slices.Equal(got, tc.want) || formatCPUList(got) != tc.out {
			t.Errorf("%q: %v %v → %q; want %v → %q", tc.in, got, err, formatCPUList(got), tc.want, tc.out)
		}
	}
	for _, bad := range []string{"", ",", "a", "1-", "3-1", "-1", "4096"} {
		if got, err := parseCPUList(bad); err == nil {
			t.Errorf("%q parsed as %v", bad, got)
		}
	}
}

func TestPinningChoosesDisjointCPUSets(t *testing.T) {
	for _, tc := range []struct {
		allowed         []int
		broker, harness string
		wantB, wantH    []int
		err             string
	}{
		{[]int{0, 1}, "", "", []int{1}, []int{0}, ""},
		{[]int{0, 1, 2}, "", "", []int{2}, []int{0, 1}, ""},
		{[]int{0, 1, 2, 3}, "", "", []int{2, 3}, []int{0, 1}, ""},
		{[]int{4, 6}, "", "", []int{6}, []int{4}, ""},
		{[]int{0, 1, 2, 3}, "3", "", []int{3}, []int{0, 1, 2}, ""},
		{[]int{0, 1, 2, 3}, "", "0", []int{1, 2, 3}, []int{0}, ""},
		{[]int{0, 1, 2, 3}, "1", "2", []int{1}, []int{2}, ""},
		{[]int{0}, "", "", nil, nil, "at least 2 CPUs"},
		{[]int{0, 1}, "1", "1", nil, nil, "share CPU 1"},
		{[]int{0, 1}, "5", "", nil, nil, "CPU 5 is not available"},
		{[]int{0, 1}, "0-1", "", nil, nil, "--harness-cpus: no CPU left"},
		{[]int{0, 1}, "y", "", nil, nil, "--broker-cpus: bad CPU list"},
	} {
		b, h, err := choosePinning(tc.allowed, tc.broker, tc.harness)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v %q %q: %v %v, err %v; want %q", tc.allowed, tc.broker, tc.harness, b, h, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(b, tc.wantB) || !slices.Equal(h, tc.wantH) {
			t.Errorf("%v %q %q: broker %v harness %v (%v); want %v %v", tc.allowed, tc.broker, tc.harness, b, h, err, tc.wantB, tc.wantH)
		}
	}
}

// threadCPULists is the Cpus_allowed_list of every thread of this process.
func threadCPULists(t *testing.T) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/status")
		if err != nil {
			continue // exited
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				out[e.Name()] = strings.TrimSpace(v)
			}
		}
	}
	return out
}

// Pinning the harness moves every thread, those started afterwards
// included, onto its CPUs and sizes GOMAXPROCS to them; restoring gives
// the process back what it had.
func TestPinHarnessMovesEveryThreadAndRestores(t *testing.T) {
	allowed, err := allowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) < 2 {
		t.Skip("needs 2 CPUs")
	}
	before := formatCPUList(allowed)
	procs := runtime.GOMAXPROCS(0)
	restore, err := pinHarness(allowed[:1])
	if err != nil {
		t.Fatal(err)
	}
	one := strconv.Itoa(allowed[0])
	// Threads the runtime starts from now on inherit the mask: make some.
	done := make(chan struct{})
	for i := 0; i < 8; i++ {
		go func() {
			runtime.LockOSThread()
			time.Sleep(20 * time.Millisecond)
			done <- struct{}{}
		}()
	}
	for i := 0; i < 8; i++ {
		<-done
	}
	for tid, list := range threadCPULists(t) {
		if list != one {
			t.Errorf("thread %s on CPUs %s after pinning to %s", tid, list, one)
		}
	}
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("GOMAXPROCS %d while pinned to one CPU", n)
	}
	if n := selfCPUCount(); n != 1 {
		t.Errorf("selfCPUCount %d while pinned to one CPU", n)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	for tid, list := range threadCPULists(t) {
		if list != before {
			t.Errorf("thread %s on CPUs %s after restoring %s", tid, list, before)
		}
	}
	if n := runtime.GOMAXPROCS(0); n != procs {
		t.Errorf("GOMAXPROCS %d after restoring, was %d", n, procs)
	}
}

func TestSelfCPUCountsThisProcess(t *testing.T) {
	c0 := selfCPU()
	deadline := time.Now().Add(50 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	if c1 := selfCPU(); c1 <= c0 {
		t.Fatalf("CPU time did not grow while spinning (%v → %v, %d loops)", c0, c1, x)
	}
	list, err := processCPUList(os.Getpid())
	if err != nil || cpuCount(list) < 1 {
		t.Fatalf("Cpus_allowed_list %q, %v", list, err)
	}
}

func TestTasksetPrefixesTheBroker(t *testing.T) {
	if findTaskset() == "" {
		t.Skip("no taskset")
	}
	allowed, err := allowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	cpu := strconv.Itoa(allowed[len(allowed)-1])
	dir := t.TempDir()
	l := Launcher{Dir: dir, Taskset: findTaskset(), CPUs: cpu}
	// sleep stands in for a broker: taskset executes it under the same PID.
	p, err := l.start("sleep", "/bin/sleep", []string{"30"}, nil, dir, dir+"/sleep.log")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	var list string
	for i := 0; i < 100; i++ {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.pid()) + "/cmdline")
		if strings.HasPrefix(string(b), "/bin/sleep\x00") {
			list, err = processCPUList(p.pid())
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || list != cpu {
		t.Fatalf("the process runs on CPUs %q (%v), want %s", list, err, cpu)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
}

// Broker ports come from below the ephemeral range (where no client
// connection's TIME_WAIT can hold them) and are bindable without
// SO_REUSEADDR.
func TestFreePortAvoidsTheEphemeralRange(t *testing.T) {
	lo, _ := ephemeralPorts()
	for i := 0; i < 20; i++ {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if lo > minPort+1000 && (p < minPort || p >= lo) {
			t.Fatalf("port %d outside %d..%d", p, minPort, lo-1)
		}
		if !bindable(p) {
			t.Fatalf("port %d not bindable", p)
		}
	}
}
