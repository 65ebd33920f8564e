package testserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	pgSuperuser    = "postgres"
	pgStartTimeout = 30 * time.Second
	pgStopGrace    = 10 * time.Second
	pgAdminTimeout = 30 * time.Second
)

// PostgresServer is one throwaway PostgreSQL server: its own cluster
// (initdb) in a temporary directory, listening on 127.0.0.1 only, with trust
// authentication for the superuser "postgres" and fsync off.
type PostgresServer struct {
	port int
	dir  string // temporary directory: socket, log, owner marker
	proc *process
}

// Postgres starts a PostgreSQL server for this test and returns the DSN of
// its "postgres" database (superuser "postgres", no password). The server is
// stopped and its directory removed when the test ends.
func Postgres(t testing.TB) (dsn string) {
	t.Helper()
	return StartPostgres(t).DSN()
}

// StartPostgres is Postgres returning the server, for tests that stop and
// restart it.
func StartPostgres(t testing.TB) *PostgresServer {
	t.Helper()
	ensurePostgres(t)
	s, err := startPostgres()
	if err != nil {
		t.Fatalf("testserver: %v", err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Errorf("testserver: %v", err)
		}
	})
	return s
}

// DSN returns the URL of the server's "postgres" database.
func (s *PostgresServer) DSN() string { return s.DSNFor("postgres") }

// DSNFor returns the URL of database db on this server.
func (s *PostgresServer) DSNFor(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", pgSuperuser, s.port, db)
}

// Addr returns host:port.
func (s *PostgresServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// PID returns the postmaster's PID (0 when stopped).
func (s *PostgresServer) PID() int {
	if !s.proc.running() {
		return 0
	}
	return s.proc.pid()
}

// Stop shuts the server down (fast shutdown: SIGINT, which ends open
// sessions; then SIGQUIT and SIGKILL if it lingers) and returns once the
// process is gone and its port is free. Data is kept for Start.
func (s *PostgresServer) Stop() error {
	return s.proc.stop(step{syscall.SIGINT, pgStopGrace}, step{syscall.SIGQUIT, 5 * time.Second})
}

// Start starts a stopped server again on the same port with the same data.
func (s *PostgresServer) Start() error {
	if s.proc.running() {
		return errors.New("testserver: postgres already running")
	}
	return s.launch(false)
}

// Restart is Stop then Start.
func (s *PostgresServer) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.Start()
}

func (s *PostgresServer) close() error {
	err := s.Stop()
	if rerr := os.RemoveAll(s.dir); err == nil && rerr != nil {
		err = rerr
	}
	return err
}

func ensurePostgres(tb testing.TB) {
	tb.Helper()
	ensure(tb, "postgresql", "PostgreSQL (initdb and postgres under /usr/lib/postgresql/*/bin)",
		func() bool { _, ok := pgBinDir(); return ok })
}

// pgCredential returns the credentials initdb and postgres run with: the
// "postgres" OS user when we are root (postgres refuses to run as root),
// nil (our own) otherwise.
func pgCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, postgres must run as the \"postgres\" OS user, which was not found: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user postgres: bad uid/gid %q/%q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// startPostgres creates a cluster in a new temporary directory and starts
// it. The binaries must be present (ensurePostgres).
func startPostgres() (*PostgresServer, error) {
	bin, ok := pgBinDir()
	if !ok {
		return nil, errors.New("postgres binaries not found")
	}
	cred, err := pgCredential()
	if err != nil {
		return nil, err
	}
	dir, marker, err := newDir("pg")
	if err != nil {
		return nil, err
	}
	s := &PostgresServer{dir: dir}
	fail := func(err error) (*PostgresServer, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fail(err)
	}
	data := filepath.Join(dir, "data")
	env := []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "LANG=C", "TZ=UTC"}

	ctx, cancel := context.WithTimeout(context.Background(), pgStartTimeout)
	defer cancel()
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", data, "-U", pgSuperuser, "--auth=trust", "--no-sync",
		"--encoding=UTF8", "--locale=C")
	initdb.Dir = dir
	initdb.Env = env
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		hint := ""
		if cred != nil {
			hint = fmt.Sprintf("\n(initdb runs as the postgres OS user, which must be able to reach %s: check the permissions of TMPDIR)", dir)
		}
		return fail(fmt.Errorf("initdb: %v\n%s%s", err, out, hint))
	}

	s.proc = &process{
		name:    "postgres",
		path:    filepath.Join(bin, "postgres"),
		dir:     dir,
		env:     env,
		cred:    cred,
		logPath: filepath.Join(dir, "postgres.log"),
		marker:  marker,
		// Immediate shutdown: the data is throwaway.
		deathSig: syscall.SIGQUIT,
	}
	if err := s.launch(true); err != nil {
		return fail(err)
	}
	return s, nil
}

// launch starts the postmaster and waits until it accepts connections. With
// newPort it picks a fresh free port, and another one if it loses the race
// for it; otherwise it keeps s.port and retries briefly while the port is
// still taken.
func (s *PostgresServer) launch(newPort bool) error {
	for attempt := 1; ; attempt++ {
		if newPort {
			p, err := freePort()
			if err != nil {
				return err
			}
			s.port = p
		}
		s.proc.args = []string{
			"-D", filepath.Join(s.dir, "data"),
			"-p", strconv.Itoa(s.port),
			"-h", "127.0.0.1",
			"-k", s.dir,
			"-c", "unix_socket_permissions=0700",
			// Throwaway data: durability buys nothing here.
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
			"-c", "autovacuum=off",
			"-c", "max_connections=200",
			"-c", "shared_buffers=32MB",
		}
		if err := s.proc.start(); err != nil {
			return err
		}
		err := waitFor(s.proc, pgStartTimeout, s.ping)
		if err == nil {
			return nil
		}
		log := s.proc.log()
		s.proc.stop(step{syscall.SIGQUIT, 5 * time.Second})
		if addrInUse(log) && attempt < 4 {
			if !newPort {
				time.Sleep(500 * time.Millisecond)
			}
			continue
		}
		return fmt.Errorf("%v\npostgres log:\n%s", err, log)
	}
}

// ping connects once to the postgres database.
func (s *PostgresServer) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, s.DSN())
	if err != nil {
		return err
	}
	return c.Close(ctx)
}

// ---- one server per test binary, one database per test ----

var (
	runActive atomic.Bool // Run is running the tests

	shared struct {
		once sync.Once
		srv  *PostgresServer
		err  error

		mu    sync.Mutex // serialises use of admin
		admin *pgx.Conn
		seq   atomic.Int64
	}
)

// PostgresDB creates a fresh, uniquely named database for this test on the
// PostgreSQL server shared by the whole test binary and returns its DSN. The
// database is dropped (connections still open to it are terminated) when the
// test ends. The package's TestMain must call Main (or Run), which stops the
// shared server after the last test.
func PostgresDB(t testing.TB) (dsn string) {
	t.Helper()
	if !runActive.Load() {
		t.Fatal("testserver.PostgresDB needs `func TestMain(m *testing.M) { testserver.Main(m) }` " +
			"in the test package, so the shared server is stopped after the tests")
	}
	ensurePostgres(t)
	shared.once.Do(func() {
		shared.srv, shared.err = startPostgres()
		if shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), pgAdminTimeout)
		defer cancel()
		shared.admin, shared.err = pgx.Connect(ctx, shared.srv.DSN())
	})
	if shared.err != nil {
		t.Fatalf("testserver: shared postgres: %v", shared.err)
	}
	name := dbName(t.Name(), shared.seq.Add(1))
	ident := pgx.Identifier{name}.Sanitize()
	if err := sharedExec("CREATE DATABASE " + ident); err != nil {
		t.Fatalf("testserver: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := sharedExec("DROP DATABASE IF EXISTS " + ident + " WITH (FORCE)"); err != nil {
			t.Errorf("testserver: drop database %s: %v", name, err)
		}
	})
	return shared.srv.DSNFor(name)
}

func sharedExec(sql string) error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), pgAdminTimeout)
	defer cancel()
	_, err := shared.admin.Exec(ctx, sql)
	return err
}

// dbName derives a valid, unique database name (at most 63 bytes) from the
// test name and a per-binary sequence number.
func dbName(test string, seq int64) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(test) {
		if b.Len() >= 40 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return fmt.Sprintf("%s_%d_%d", b.String(), os.Getpid(), seq)
}

// Main runs the package's tests and exits; use it as the whole TestMain of a
// package that calls PostgresDB:
//
//	func TestMain(m *testing.M) { testserver.Main(m) }
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run runs the tests and then stops the shared servers, returning the exit
// code; for a TestMain that needs its own set-up around the tests.
func Run(m *testing.M) int {
	runActive.Store(true)
	code := m.Run()
	runActive.Store(false)
	if err := shutdownShared(); err != nil {
		fmt.Fprintf(os.Stderr, "testserver: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// shutdownShared stops the shared PostgreSQL server, if one was started.
func shutdownShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		shared.admin.Close(ctx)
		cancel()
		shared.admin = nil
	}
	if shared.srv == nil {
		return nil
	}
	err := shared.srv.close()
	shared.srv = nil
	return err
}
