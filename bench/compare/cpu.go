package compare

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// CPU pinning: on a machine with at least two CPUs every broker runs under
// `taskset -c BROKER-CPUS` and the harness pins its own threads to the
// other CPUs, so a broker and its load generator never compete for a core,
// and the harness's own CPU use tells whether a figure is the broker's
// limit or the harness's.

// harnessBoundShare: a run in which the harness used at least this share of
// its CPUs is harness-bound — the broker may well have done more.
const harnessBoundShare = 0.95

// Pinning is how the CPUs were shared between the brokers and the harness
// during a run (Host.Pinning in the report).
type Pinning struct {
	Enabled     bool   `json:"enabled"`
	BrokerCPUs  string `json:"broker_cpus,omitempty"`  // taskset -c list every broker ran on
	HarnessCPUs string `json:"harness_cpus,omitempty"` // the harness's own affinity
	Taskset     string `json:"taskset,omitempty"`      // the taskset binary used
	Note        string `json:"note,omitempty"`         // why the run is not pinned, when it is not
}

// cpuMask is a CPU affinity mask for sched_{get,set}affinity: 1,024 CPUs.
type cpuMask [16]uint64

func maskOf(cpus []int) (cpuMask, error) {
	var m cpuMask
	for _, c := range cpus {
		if c < 0 || c >= len(m)*64 {
			return m, fmt.Errorf("CPU %d out of range", c)
		}
		m[c/64] |= 1 << (c % 64)
	}
	return m, nil
}

func (m cpuMask) cpus() []int {
	var out []int
	for i, w := range m {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			out = append(out, i*64+b)
			w &^= 1 << b
		}
	}
	return out
}

// getAffinity is the affinity of thread tid (0: the calling thread).
func getAffinity(tid int) (cpuMask, error) {
	var m cpuMask
	_, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, uintptr(tid), unsafe.Sizeof(m), uintptr(unsafe.Pointer(&m)))
	if e != 0 {
		return m, e
	}
	return m, nil
}

func setAffinity(tid int, m cpuMask) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(m), uintptr(unsafe.Pointer(&m)))
	if e != 0 {
		return e
	}
	return nil
}

// allowedCPUs is the CPUs this process may run on (its affinity at the
// time), ascending.
func allowedCPUs() ([]int, error) {
	m, err := getAffinity(0)
	if err != nil {
		return nil, err
	}
	return m.cpus(), nil
}

// setProcessAffinity sets the affinity of every thread of this process to
// m. A thread created meanwhile inherits its creator's mask, so the threads
// are listed again until a pass finds none to change.
func setProcessAffinity(m cpuMask) error {
	for pass := 0; pass < 10; pass++ {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		changed := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cur, err := getAffinity(tid)
			if errors.Is(err, syscall.ESRCH) {
				continue // the thread exited
			}
			if err != nil {
				return err
			}
			if cur == m {
				continue
			}
			if err := setAffinity(tid, m); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("sched_setaffinity(%d): %w", tid, err)
			}
			changed = true
		}
		if !changed {
			return nil
		}
	}
	return errors.New("sched_setaffinity: threads kept appearing with another affinity")
}

// pinHarness pins every thread of this process to cpus and sizes the Go
// scheduler to them. The returned function restores the affinity this
// process had and the default GOMAXPROCS.
func pinHarness(cpus []int) (restore func() error, err error) {
	old, err := getAffinity(0)
	if err != nil {
		return nil, err
	}
	m, err := maskOf(cpus)
	if err != nil {
		return nil, err
	}
	if err := setProcessAffinity(m); err != nil {
		setProcessAffinity(old)
		return nil, err
	}
	runtime.GOMAXPROCS(len(cpus))
	return func() error {
		err := setProcessAffinity(old)
		runtime.SetDefaultGOMAXPROCS()
		return err
	}, nil
}

// parseCPUList parses a taskset-style CPU list ("1", "0,2", "2-3") into
// ascending distinct CPU numbers.
func parseCPUList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a || b >= len(cpuMask{})*64 {
			return nil, fmt.Errorf("bad CPU list %q", s)
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty CPU list %q", s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// formatCPUList prints ascending CPUs as a taskset list: "0", "0,2", "2-5".
func formatCPUList(cpus []int) string {
	var parts []string
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		switch {
		case j == i:
			parts = append(parts, strconv.Itoa(cpus[i]))
		default:
			parts = append(parts, strconv.Itoa(cpus[i])+"-"+strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// defaultCPUSplit splits the allowed CPUs: the brokers get the upper half
// (rounded down), the harness the rest — on two CPUs, broker on the second,
// harness on the first. The harness gets the larger half because it both
// publishes and receives every message.
func defaultCPUSplit(allowed []int) (broker, harness []int) {
	n := len(allowed) / 2
	return allowed[len(allowed)-n:], allowed[:len(allowed)-n]
}

// choosePinning decides the CPU sets from the flags: brokerList and
// harnessList empty mean the default split. Both must be non-empty,
// disjoint and within allowed.
func choosePinning(allowed []int, brokerList, harnessList string) (broker, harness []int, err error) {
	if len(allowed) < 2 {
		return nil, nil, fmt.Errorf("pinning needs at least 2 CPUs, this process may use %d", len(allowed))
	}
	broker, harness = defaultCPUSplit(allowed)
	if brokerList != "" {
		if broker, err = parseCPUList(brokerList); err != nil {
			return nil, nil, fmt.Errorf("--broker-cpus: %w", err)
		}
	}
	if harnessList != "" {
		if harness, err = parseCPUList(harnessList); err != nil {
			return nil, nil, fmt.Errorf("--harness-cpus: %w", err)
		}
	} else if brokerList != "" {
		harness = nil // the default harness set: every allowed CPU the brokers do not get
		for _, c := range allowed {
			if !slices.Contains(broker, c) {
				harness = append(harness, c)
			}
		}
	}
	if brokerList == "" && harnessList != "" {
		broker = nil
		for _, c := range allowed {
			if !slices.Contains(harness, c) {
				broker = append(broker, c)
			}
		}
	}
	for _, set := range []struct {
		name string
		cpus []int
	}{{"--broker-cpus", broker}, {"--harness-cpus", harness}} {
		if len(set.cpus) == 0 {
			return nil, nil, fmt.Errorf("%s: no CPU left (this process may use %s)", set.name, formatCPUList(allowed))
		}
		for _, c := range set.cpus {
			if !slices.Contains(allowed, c) {
				return nil, nil, fmt.Errorf("%s: CPU %d is not available (this process may use %s)", set.name, c, formatCPUList(allowed))
			}
		}
	}
	for _, c := range broker {
		if slices.Contains(harness, c) {
			return nil, nil, fmt.Errorf("--broker-cpus %s and --harness-cpus %s share CPU %d", formatCPUList(broker), formatCPUList(harness), c)
		}
	}
	return broker, harness, nil
}

// findTaskset is the taskset binary (util-linux), "" when there is none.
func findTaskset() string {
	if p, err := exec.LookPath("taskset"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/taskset", "/bin/taskset"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// selfCPU is the user + system CPU time of this process (every thread).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// selfCPUCount is how many CPUs the calling thread may run on (after
// pinHarness: every thread of the harness).
func selfCPUCount() int {
	m, err := getAffinity(0)
	if err != nil {
		return runtime.NumCPU()
	}
	return max(1, len(m.cpus()))
}

// processCPUList is the Cpus_allowed_list of pid (its main thread), as the
// kernel prints it: "1", "0-1".
func processCPUList(pid int) (string, error) { return procStatusField(pid, "Cpus_allowed_list") }

// cpuCount counts the CPUs of a kernel CPU list, 0 if it does not parse.
func cpuCount(list string) int {
	c, err := parseCPUList(list)
	if err != nil {
		return 0
	}
	return len(c)
}
