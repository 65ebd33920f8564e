package compare

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one broker process this package started. Its PID is only
// signalled while the process has not been reaped (done is open), so a
// signal can never reach a recycled PID that belongs to someone else.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error // valid once done is closed
}

// startProcess starts bin with args in dir, stdout and stderr appended to
// logPath. The child gets SIGKILL from the kernel if this process dies
// without stopping it (Ctrl-C and errors stop it through Stop).
func startProcess(name, bin string, args, env []string, dir, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = env
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = spawn(cmd)
	logf.Close() // the child has its own copy
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid is the process ID.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to 10 s, then SIGKILL; it returns once the
// process has been reaped, so its port and files are released.
func (p *process) Stop() error {
	for _, st := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGTERM, 10 * time.Second}, {syscall.SIGKILL, 10 * time.Second}} {
		if p.exited() {
			return nil
		}
		// Process.Signal refuses a reaped process, so this reaches only
		// the child started here.
		if err := p.cmd.Process.Signal(st.sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signal %s (pid %d): %w", p.name, p.pid(), err)
		}
		select {
		case <-p.done:
			return nil
		case <-time.After(st.wait):
		}
	}
	return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.pid())
}

// logTail returns the last 2 KiB of the process's log, for error messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return strings.TrimSpace(string(b))
}

// spawn forks every child from one goroutine locked to its OS thread that
// never exits: Pdeathsig fires when the forking THREAD exits
// (https://go.dev/issue/27505), and Go retires threads, so forking from an
// arbitrary goroutine could kill a broker in the middle of a run.
var (
	spawnOnce sync.Once
	spawnCh   chan func()
)

func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan func())
		go func() {
			runtime.LockOSThread()
			for f := range spawnCh {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnCh <- func() { errc <- cmd.Start() }
	return <-errc
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago; a
// broker may still lose the race for it, and its launcher then retries.
//
// The port is taken below the kernel's ephemeral range when there is room
// (from 10,000 up), and only if a socket without SO_REUSEADDR can bind it:
// a port of the ephemeral range may be the local port of some client
// connection, and once that connection is in TIME_WAIT a listener that
// does not set SO_REUSEADDR (Mosquitto's WebSocket listener, through
// libwebsockets) cannot bind it — on a machine where load tests leave
// thousands of TIME_WAIT sockets, most random ephemeral ports.
func freePort() (int, error) {
	lo, _ := ephemeralPorts()
	for attempt := 0; attempt < 200; attempt++ {
		var port int
		if lo > minPort+1000 {
			port = minPort + rand.IntN(lo-minPort)
		} else {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return 0, err
			}
			port = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		if bindable(port) {
			return port, nil
		}
	}
	return 0, errors.New("no free TCP port on 127.0.0.1 found in 200 attempts")
}

// minPort is the lowest port freePort picks.
const minPort = 10000

// ephemeralPorts is the kernel's range of local ports for outgoing
// connections (net.ipv4.ip_local_port_range).
func ephemeralPorts() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && l <= h {
				return l, h
			}
		}
	}
	return 32768, 60999
}

// bindable reports whether a TCP socket without SO_REUSEADDR can bind
// 127.0.0.1:port (then it is closed at once).
func bindable(port int) bool {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer syscall.Close(fd)
	return syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}) == nil
}

// addrInUse reports whether a broker log says its port was taken.
func addrInUse(log string) bool {
	l := strings.ToLower(log)
	return strings.Contains(l, "address already in use") || strings.Contains(l, "unable to start any listening") ||
		strings.Contains(l, "unable to create websockets listener")
}

// procStatusField reads the value of a "Name:	value" field of
// /proc/PID/status, trimmed.
func procStatusField(pid int, field string) (string, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if ok && name == field {
			return strings.TrimSpace(val), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// procStatusKB reads a "Name:   N kB" field of /proc/PID/status in bytes.
func procStatusKB(pid int, field string) (int64, error) {
	val, err := procStatusField(pid, field)
	if err != nil {
		return 0, err
	}
	kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(val, "kB")), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/status %s: %w", pid, field, err)
	}
	return kb << 10, nil
}

// processRSS is the resident set size (VmRSS) of pid in bytes.
func processRSS(pid int) (int64, error) { return procStatusKB(pid, "VmRSS") }

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; 100 on every
// Linux architecture Go supports (sysconf would need cgo).
const clockTicks = 100

// processCPU is the user + system CPU time pid has used.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// processMaxOpenFiles reads the soft "Max open files" limit of pid.
func processMaxOpenFiles(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			if f[0] == "unlimited" {
				return -1, nil
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/limits has no Max open files", pid)
}

// SetOpenFileLimit sets this process's soft RLIMIT_NOFILE to
// min(limit, hard) and returns it. Brokers started afterwards inherit it, so
// Gatecast, Mosquitto and NATS all run with the same limit (Go programs
// raise their own soft limit to the hard one; Mosquitto does not). Once a
// Go program sets the limit itself, os/exec no longer restores the original
// soft limit in children.
func SetOpenFileLimit(limit uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	want := min(limit, rl.Max)
	rl.Cur = want
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return want, nil
}
