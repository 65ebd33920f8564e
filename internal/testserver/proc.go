package testserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one server process this package started. The PID is only ever
// signalled while the process has not been reaped (done is open), so the
// signal cannot reach a recycled PID that belongs to someone else.
type process struct {
	name    string   // for messages
	path    string   // binary
	args    []string // without argv[0]
	dir     string   // working directory
	env     []string // nil: inherit
	cred    *syscall.Credential
	logPath string
	marker  string // owner marker file the PID is recorded in
	// deathSig is sent by the kernel when the test binary dies without
	// stopping the server: one the server handles as a quick shutdown.
	deathSig syscall.Signal

	cmd     *exec.Cmd
	logOff  int64         // size of the log before this incarnation started
	done    chan struct{} // closed once Wait has returned
	waitErr error         // valid after done is closed
}

// start launches the process with its stdout and stderr appended to logPath.
func (p *process) start() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if fi, err := logf.Stat(); err == nil {
		p.logOff = fi.Size()
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Dir = p.dir
	cmd.Env = p.env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: p.cred,
		// The kernel stops the server when the test binary dies without
		// running its cleanups.
		Pdeathsig: p.deathSig,
	}
	err = spawn(cmd)
	logf.Close() // the child holds its own copy
	if err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func(done chan struct{}) {
		p.waitErr = cmd.Wait()
		close(done)
	}(p.done)
	if p.marker != "" {
		recordPID(p.marker, cmd.Process.Pid)
	}
	return nil
}

// running reports whether the process was started and has not exited.
func (p *process) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exited returns a channel closed when the process has exited.
func (p *process) exited() <-chan struct{} { return p.done }

// step is one stage of stopping a process: send sig, wait up to wait.
type step struct {
	sig  syscall.Signal
	wait time.Duration
}

// stop runs the steps in order until the process has exited, then falls
// back to SIGKILL. It returns once the process has been reaped, so its port
// and files are released.
func (p *process) stop(steps ...step) error {
	if p.done == nil {
		return nil
	}
	steps = append(steps, step{syscall.SIGKILL, 10 * time.Second})
	for _, st := range steps {
		if !p.running() {
			return nil
		}
		// Process.Signal refuses to signal a process that has been
		// reaped, so this can only reach the child we started.
		if err := p.cmd.Process.Signal(st.sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signal %s (pid %d): %w", p.name, p.cmd.Process.Pid, err)
		}
		select {
		case <-p.done:
			return nil
		case <-time.After(st.wait):
		}
	}
	return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
}

// pid returns the PID of the current incarnation (0 if never started).
func (p *process) pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// log returns the last few KiB this incarnation of the process wrote to its
// log, for error messages.
func (p *process) log() string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4 << 10
	off := p.logOff
	if fi, err := f.Stat(); err == nil && fi.Size()-off > max {
		off = fi.Size() - max
	}
	f.Seek(off, io.SeekStart)
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// spawner: Pdeathsig fires when the THREAD that forked the child exits, not
// the process (https://go.dev/issue/27505). Go retires a thread when a
// goroutine that locked it exits, so every child is forked from one goroutine
// that locks its thread and never returns: the signal then fires only when
// the whole test binary exits.
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

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// server may still lose a race for it; callers retry with a fresh port when
// the server reports the address in use.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// addrInUse reports whether a server log says it could not bind its port.
func addrInUse(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not bind") ||
		strings.Contains(log, "could not create any TCP/IP sockets")
}

// ---- directories and the owner marker ----

const (
	dirPrefix  = "gatecast-testserver-"
	markerName = "owner"
)

// newDir creates a private temporary directory for one server (or the
// shared one) and records the test binary as its owner, so that a later run
// can tell a directory left behind by a crashed run from a live one.
func newDir(kind string) (dir, marker string, err error) {
	sweepOnce.Do(sweepStale)
	dir, err = os.MkdirTemp("", dirPrefix+kind+"-")
	if err != nil {
		return "", "", err
	}
	marker = filepath.Join(dir, markerName)
	if err := os.WriteFile(marker, []byte(procLine(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", "", err
	}
	return dir, marker, nil
}

// recordPID appends a server's PID to the owner marker.
func recordPID(marker string, pid int) {
	f, err := os.OpenFile(marker, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return
	}
	f.WriteString(procLine(pid))
	f.Close()
}

// procLine identifies a process by PID and start time (field 22 of
// /proc/PID/stat), which together are not reused.
func procLine(pid int) string {
	return strconv.Itoa(pid) + " " + procStart(pid) + "\n"
}

func procStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	// The command name (field 2) may contain spaces; it ends at the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); the start time is field 22. A zombie has
	// exited already (its parent, possibly init, has not reaped it yet).
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return ""
	}
	return f[19]
}

var sweepOnce sync.Once

// sweepStale removes directories of earlier runs whose test binary and
// servers are all gone (a run killed by -timeout or a panic skips its
// cleanups). It signals nothing: a directory whose recorded owner or server
// is still alive, or that has no readable marker yet, is left alone.
func sweepStale() {
	if procStart(os.Getpid()) == "" {
		return // no /proc: liveness cannot be told, so touch nothing
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, markerName))
		if err != nil {
			// No marker: a directory being created right now, or not
			// ours to judge unless it is clearly abandoned.
			if fi, err2 := os.Stat(dir); err2 != nil || time.Since(fi.ModTime()) < 24*time.Hour {
				continue
			}
			os.RemoveAll(dir)
			continue
		}
		alive := false
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			pid, err := strconv.Atoi(f[0])
			if err != nil {
				continue
			}
			if procStart(pid) == f[1] {
				alive = true
				break
			}
		}
		if !alive {
			os.RemoveAll(dir)
		}
	}
}

// waitFor polls ready every interval until it returns nil, the process
// exits, or the deadline passes.
func waitFor(p *process, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = ready(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v", p.name, timeout, last)
		}
		select {
		case <-p.exited():
			return fmt.Errorf("%s exited during start-up (%v)", p.name, p.waitErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
