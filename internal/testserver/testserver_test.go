package testserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// helperEnv makes the test binary act as a helper that starts servers and
// exits without stopping them (see TestParentDeathStopsServers).
const helperEnv = "GATECAST_TESTSERVER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		orphanHelper()
		return
	}
	Main(m)
}

// orphanHelper starts one redis and one postgres, prints their addresses and
// directories, and exits as a crashed test binary would: no cleanup.
func orphanHelper() {
	r, err := startRedis(false)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	p, err := startPostgres()
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	fmt.Println(r.Addr(), r.dir, r.PID())
	fmt.Println(p.Addr(), p.dir, p.PID())
	os.Exit(0)
}

// portFree reports whether addr can be listened on again.
func portFree(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// waitPortFree waits (bounded) for a port a stopped server held.
func waitPortFree(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !portFree(addr) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still in use", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rawPing speaks RESP inline by hand, independent of redisCmd.
func rawPing(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestRedis(t *testing.T) {
	var addr, dir string
	t.Run("lifecycle", func(t *testing.T) {
		s := StartRedis(t)
		addr, dir = s.Addr(), s.dir
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Fatalf("addr %q not on loopback", addr)
		}
		if s.PID() <= 0 {
			t.Fatalf("PID %d", s.PID())
		}
		if got, err := rawPing(addr); err != nil || got != "+PONG\r\n" {
			t.Fatalf("PING: %q, %v", got, err)
		}
		if _, err := redisCmd(addr, time.Second, "SET", "k", "v"); err != nil {
			t.Fatal(err)
		}

		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		if s.PID() != 0 {
			t.Fatalf("PID %d after Stop", s.PID())
		}
		if _, err := rawPing(addr); err == nil {
			t.Fatal("PING succeeded after Stop")
		}
		if !portFree(addr) {
			t.Fatal("port still taken after Stop")
		}

		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		if s.Addr() != addr {
			t.Fatalf("restarted on %s, want %s", s.Addr(), addr)
		}
		if got, err := rawPing(addr); err != nil || got != "+PONG\r\n" {
			t.Fatalf("PING after restart: %q, %v", got, err)
		}
		if v, err := redisCmd(addr, time.Second, "GET", "k"); err != nil || v != "" {
			t.Fatalf("GET after restart = %q, %v; want empty (no persistence)", v, err)
		}
		if err := s.Start(); err == nil {
			t.Fatal("Start of a running server succeeded")
		}
	})
	// The subtest's cleanup has stopped the server and removed its files.
	waitPortFree(t, addr)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir %s left behind: %v", dir, err)
	}
}

func TestRedisCluster(t *testing.T) {
	var addrs []string
	t.Run("cluster", func(t *testing.T) {
		c := StartRedisCluster(t, 3)
		addrs = c.Addrs()
		if len(addrs) != 3 {
			t.Fatalf("%d nodes", len(addrs))
		}
		for _, a := range addrs {
			info, err := redisCmd(a, time.Second, "CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				t.Fatalf("%s CLUSTER INFO: %v %q", a, err, info)
			}
		}
		// Every key lives on exactly one master; the others redirect.
		for _, key := range []string{"a", "b", "c", "gatecast"} {
			owners := 0
			for _, a := range addrs {
				_, err := redisCmd(a, time.Second, "SET", key, "1")
				var re redisError
				switch {
				case err == nil:
					owners++
				case errors.As(err, &re) && strings.HasPrefix(string(re), "MOVED "):
				default:
					t.Fatalf("SET %s on %s: %v", key, a, err)
				}
			}
			if owners != 1 {
				t.Fatalf("key %s accepted by %d nodes, want 1", key, owners)
			}
		}
		// A node restarted keeps its identity and the cluster recovers.
		if err := c.Nodes[1].Restart(); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReady(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	})
	for _, a := range addrs {
		waitPortFree(t, a)
	}
}

func TestRedisClusterNeedsThreeMasters(t *testing.T) {
	ft := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine like a real test's
		defer close(done)
		StartRedisCluster(ft, 2)
	}()
	<-done
	if !ft.failed || !strings.Contains(ft.msg, "at least 3") {
		t.Fatalf("failed=%v msg=%q", ft.failed, ft.msg)
	}
}

func TestPostgres(t *testing.T) {
	var addr, dir string
	t.Run("lifecycle", func(t *testing.T) {
		s := StartPostgres(t)
		addr, dir = s.Addr(), s.dir
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()

		conn, err := pgx.Connect(ctx, s.DSN())
		if err != nil {
			t.Fatal(err)
		}
		var fsync, listen, user string
		err = conn.QueryRow(ctx, "SELECT current_setting('fsync'), current_setting('listen_addresses'), current_user").
			Scan(&fsync, &listen, &user)
		if err != nil {
			t.Fatal(err)
		}
		if fsync != "off" || listen != "127.0.0.1" || user != "postgres" {
			t.Fatalf("fsync=%q listen_addresses=%q user=%q", fsync, listen, user)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)"); err != nil {
			t.Fatal(err)
		}

		// Stop ends the open session too (fast shutdown).
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		if s.PID() != 0 {
			t.Fatal("PID after Stop")
		}
		if !portFree(addr) {
			t.Fatal("port still taken after Stop")
		}
		if err := conn.Ping(ctx); err == nil {
			t.Fatal("old connection still works after Stop")
		}
		if _, err := pgx.Connect(ctx, s.DSN()); err == nil {
			t.Fatal("connect succeeded after Stop")
		}

		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		conn, err = pgx.Connect(ctx, s.DSN())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var v int
		if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 7 {
			t.Fatalf("data after restart: %d, %v", v, err)
		}
	})
	waitPortFree(t, addr)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir %s left behind: %v", dir, err)
	}
}

func TestPostgresDB(t *testing.T) {
	var names []string
	t.Run("two databases", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		dsnA, dsnB := PostgresDB(t), PostgresDB(t)
		if dsnA == dsnB {
			t.Fatalf("same DSN twice: %s", dsnA)
		}
		a, err := pgx.Connect(ctx, dsnA)
		if err != nil {
			t.Fatal(err)
		}
		// Deliberately left open: the drop at cleanup must still work.
		b, err := pgx.Connect(ctx, dsnB)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*pgx.Conn{a, b} {
			var n string
			if err := c.QueryRow(ctx, "SELECT current_database()").Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		if _, err := a.Exec(ctx, "CREATE TABLE only_in_a (v int)"); err != nil {
			t.Fatal(err)
		}
		var exists bool
		if err := b.QueryRow(ctx, "SELECT to_regclass('only_in_a') IS NOT NULL").Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Fatal("table of database A visible in database B")
		}
	})
	if len(names) != 2 {
		t.Fatalf("names %v", names)
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var left int
	if err := shared.admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = ANY($1)", names).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d of %v not dropped", left, names)
	}
}

func TestPostgresDBWithoutMain(t *testing.T) {
	runActive.Store(false)
	defer runActive.Store(true)
	ft := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		PostgresDB(ft)
	}()
	<-done
	if !ft.failed || !strings.Contains(ft.msg, "TestMain") {
		t.Fatalf("failed=%v msg=%q", ft.failed, ft.msg)
	}
}

func TestDBName(t *testing.T) {
	long := strings.Repeat("TestSomething/With Spaces-and.Dots", 5)
	for _, name := range []string{"TestX", long, "Test/ü/€"} {
		n := dbName(name, 123456789)
		if len(n) > 63 {
			t.Fatalf("%q: %d bytes", n, len(n))
		}
		for _, r := range n {
			if !(r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9')) {
				t.Fatalf("%q has %q", n, r)
			}
		}
	}
	if dbName("TestX", 1) == dbName("TestX", 2) {
		t.Fatal("sequence not in name")
	}
}

// TestParentDeathStopsServers runs a helper test binary that starts servers
// and exits without cleanup, as one killed by -timeout would. The kernel's
// parent-death signal must stop both servers, and the next sweep must remove
// their directories.
func TestParentDeathStopsServers(t *testing.T) {
	ensureRedis(t)
	ensurePostgres(t)
	// Become the subreaper of the helper's orphans so that this test reaps
	// the servers it caused to be started, instead of leaving zombies to an
	// init that may not reap (as in containers). Tests of this package do
	// not run in parallel, so no other orphan can arrive meanwhile.
	if err := setSubreaper(true); err != nil {
		t.Skipf("cannot become a child subreaper: %v", err)
	}
	defer setSubreaper(false)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("helper output %q", out)
	}
	var dirs []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] == "ERR" {
			t.Fatalf("helper output %q", out)
		}
		pid, err := strconv.Atoi(f[2])
		if err != nil || pid <= 0 {
			t.Fatalf("helper output %q", out)
		}
		reap(t, pid)
		waitPortFree(t, f[0])
		dirs = append(dirs, f[1])
	}
	sweepStale()
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("sweep left %s: %v", d, err)
		}
	}
}

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER from <linux/prctl.h>.
const prSetChildSubreaper = 36

func setSubreaper(on bool) error {
	v := uintptr(0)
	if on {
		v = 1
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, v, 0); errno != 0 {
		return errno
	}
	return nil
}

// reap waits (bounded) until the orphaned server pid, now our child, has
// exited, and collects it. The parent-death signal is what must make it exit.
func reap(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if got == pid {
			return
		}
		if err != nil && err != syscall.EINTR {
			t.Fatalf("wait4(%d): %v", pid, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("server pid %d still running 15s after its test binary died", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSweepKeepsLiveDirs(t *testing.T) {
	dir, marker, err := newDir("sweeptest")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sweepStale()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("live dir swept: %v", err)
	}
	// A directory whose recorded processes are all gone is swept; the
	// dead process is one this test started and reaped.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marker, []byte(strconv.Itoa(c.Process.Pid)+" 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sweepStale()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dead dir kept: %v", err)
	}
	// A directory without a marker (being created) is left alone.
	young := filepath.Join(os.TempDir(), dirPrefix+"young-test")
	if err := os.Mkdir(young, 0o700); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(young)
	sweepStale()
	if _, err := os.Stat(young); err != nil {
		t.Fatalf("young dir swept: %v", err)
	}
}

// fakeTB records Skip and Fatal instead of acting on the real test; both
// end the calling goroutine, as the real ones do.
type fakeTB struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.failed, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func TestUnavailable(t *testing.T) {
	for _, tc := range []struct {
		ci       string
		wantFail bool
	}{{"", false}, {"false", false}, {"true", true}, {"1", true}} {
		t.Setenv("CI", tc.ci)
		ft := &fakeTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			unavailable(ft, "redis-server not found")
		}()
		<-done
		if ft.failed != tc.wantFail || ft.skipped == tc.wantFail || !strings.Contains(ft.msg, "redis-server not found") {
			t.Errorf("CI=%q: failed=%v skipped=%v msg=%q", tc.ci, ft.failed, ft.skipped, ft.msg)
		}
	}
}
