package testserver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds on the one-off installation. They are generous because a fresh
// machine may have a slow mirror, but finite so a wedged apt cannot hang the
// suite until the go test -timeout.
const (
	aptLockWait     = 10 * time.Minute
	aptUpdateLimit  = 5 * time.Minute
	aptInstallLimit = 8 * time.Minute
)

// inCI reports whether the CI environment variable asks for skips to fail.
func inCI() bool {
	switch os.Getenv("CI") {
	case "", "0", "false", "FALSE", "False":
		return false
	}
	return true
}

// unavailable skips the test, or fails it when running under CI, because a
// server binary is missing and cannot be installed.
func unavailable(tb testing.TB, msg string) {
	tb.Helper()
	if inCI() {
		tb.Fatalf("%s (CI is set, so this fails instead of skipping)", msg)
	}
	tb.Skip(msg)
}

// installState remembers, per Debian package, the outcome of the one attempt
// this test binary makes to install it.
type installState struct {
	once sync.Once
	skip string // non-empty: cannot install here
	err  error  // the installation failed
}

var (
	installsMu sync.Mutex
	installs   = map[string]*installState{}
)

// Ensure makes find succeed, installing Debian package pkg with apt-get if
// needed and possible (as root, serialized with every other test binary's
// installs); otherwise it skips the test, or fails it when CI is set.
// Tests that need a tool other than the servers of this package (e.g.
// prometheus) use it too.
func Ensure(tb testing.TB, pkg, what string, find func() bool) {
	tb.Helper()
	ensure(tb, pkg, what, find)
}

func ensure(tb testing.TB, pkg, what string, find func() bool) {
	tb.Helper()
	if find() {
		return
	}
	installsMu.Lock()
	st := installs[pkg]
	if st == nil {
		st = &installState{}
		installs[pkg] = st
	}
	installsMu.Unlock()
	st.once.Do(func() { st.skip, st.err = install(pkg, what, find) })
	if st.skip != "" {
		unavailable(tb, st.skip)
	}
	if st.err != nil {
		tb.Fatalf("testserver: %v", st.err)
	}
	if !find() {
		tb.Fatalf("testserver: %s still not found after installing %s", what, pkg)
	}
}

// install runs apt-get update and apt-get install -y pkg under a file lock
// shared by every test binary on the machine, so parallel packages neither
// race apt nor install twice.
func install(pkg, what string, find func() bool) (skip string, err error) {
	if os.Geteuid() != 0 {
		return fmt.Sprintf("testserver: %s not found and the tests do not run as root, so it cannot be installed: "+
			"run `apt-get install %s` (make test runs as root in CI and installs it itself)", what, pkg), nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Sprintf("testserver: %s not found and there is no apt-get to install it with: install the %s package", what, pkg), nil
	}
	lockPath := filepath.Join(os.TempDir(), "gatecast-testserver-apt.lock")
	lf, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("open install lock: %w", err)
	}
	defer lf.Close()
	deadline := time.Now().Add(aptLockWait)
	for {
		err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			return "", fmt.Errorf("lock %s: %w", lockPath, err)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("waited %v for another test binary to finish installing (lock %s)", aptLockWait, lockPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)

	if find() { // another test binary installed it while we waited
		return "", nil
	}
	if err := apt(aptUpdateLimit, "update"); err != nil {
		return "", err
	}
	if err := apt(aptInstallLimit, "install", "-y", pkg); err != nil {
		return "", err
	}
	return "", nil
}

func apt(limit time.Duration, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		s := strings.TrimSpace(string(out))
		if len(s) > 2000 {
			s = "…" + s[len(s)-2000:]
		}
		return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, s)
	}
	return nil
}

// pgBinDir returns the directory holding initdb and postgres: the highest
// Debian version under /usr/lib/postgresql, else the directory of initdb on
// PATH.
func pgBinDir() (string, bool) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type cand struct {
		dir string
		ver float64
	}
	var cs []cand
	for _, d := range dirs {
		if !isExec(filepath.Join(d, "initdb")) || !isExec(filepath.Join(d, "postgres")) {
			continue
		}
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		cs = append(cs, cand{d, v})
	}
	if len(cs) > 0 {
		sort.Slice(cs, func(i, j int) bool { return cs[i].ver > cs[j].ver })
		return cs[0].dir, true
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(p)
		if isExec(filepath.Join(d, "postgres")) {
			return d, true
		}
	}
	return "", false
}

// redisBins returns the paths of redis-server and redis-cli.
func redisBins() (server, cli string, ok bool) {
	s, err1 := exec.LookPath("redis-server")
	c, err2 := exec.LookPath("redis-cli")
	return s, c, err1 == nil && err2 == nil
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}
