package postgres

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/acltest"
	"github.com/gatecast/gatecast/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// openFresh opens a store on a new database of the shared throwaway server.
func openFresh(t testing.TB) (*Store, string) {
	t.Helper()
	dsn := testserver.PostgresDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dsn
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	dsn := testserver.PostgresDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const nodes = 4
	var wg sync.WaitGroup
	stores := make([]*Store, nodes)
	errs := make([]error, nodes)
	start := make(chan struct{})
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stores[i], errs[i] = Open(ctx, dsn)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		defer stores[i].Close()
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows, distinct, maxVersion int
	if err := conn.QueryRow(ctx,
		"SELECT count(*), count(DISTINCT version), coalesce(max(version), 0) FROM schema_migrations").
		Scan(&rows, &distinct, &maxVersion); err != nil {
		t.Fatal(err)
	}
	if rows != SchemaVersion() || distinct != rows || maxVersion != SchemaVersion() {
		t.Fatalf("schema_migrations: %d rows, %d versions, max %d; want each of 1..%d once",
			rows, distinct, maxVersion, SchemaVersion())
	}

	// Every node works on the one schema: what one writes, another reads.
	tok, err := stores[0].CreateToken(ctx, "n0", 0, acl.HashSecret([]byte("s")))
	if err != nil {
		t.Fatal(err)
	}
	got, err := stores[3].GetToken(ctx, tok.ID)
	if err != nil || got != tok {
		t.Fatalf("node 3 read %+v, %v; want %+v", got, err, tok)
	}
}

func TestReopenKeepsData(t *testing.T) {
	s, dsn := openFresh(t)
	ctx := context.Background()
	tag, err := s.CreateTag(ctx, "a/#")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.GetTag(ctx, tag.ID); err != nil || got != tag {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	_, dsn := openFresh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, dsn)
	if err == nil {
		s.Close()
		t.Fatal("Open accepted a schema newer than this build")
	}
	if !strings.Contains(err.Error(), "newer than this build") {
		t.Fatalf("error %q", err)
	}
}

func TestErrorMapping(t *testing.T) {
	s, _ := openFresh(t)
	ctx := context.Background()
	tok, err := s.CreateToken(ctx, "a", 0, acl.HashSecret([]byte("a")))
	if err != nil {
		t.Fatal(err)
	}
	tag, err := s.CreateTag(ctx, "x/+")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
		msg  string
	}{
		{"permission on missing tag", s.SetPermission(ctx, tok.ID, tag.ID+100, acl.PermRead), acl.ErrNotFound, "tag"},
		{"permission of missing token", s.SetPermission(ctx, tok.ID+100, tag.ID, acl.PermRead), acl.ErrNotFound, "token"},
		{"both missing", s.SetPermission(ctx, tok.ID+100, tag.ID+100, acl.PermRead), acl.ErrNotFound, "token"},
		{"duplicate pattern", second(s.CreateTag(ctx, "x/+")), acl.ErrConflict, "x/+"},
		{"duplicate hash", second(s.CreateToken(ctx, "b", 0, acl.HashSecret([]byte("a")))), acl.ErrConflict, "hash"},
		{"bad pattern", second(s.CreateTag(ctx, "a/#/b")), acl.ErrInvalid, "a/#/b"},
		{"huge max_connections fits", second(s.CreateToken(ctx, "c", 1<<40, acl.HashSecret([]byte("c")))), nil, ""},
	} {
		if !errors.Is(tc.err, tc.want) || (tc.err != nil && !strings.Contains(tc.err.Error(), tc.msg)) {
			t.Errorf("%s: %v, want %v mentioning %q", tc.name, tc.err, tc.want, tc.msg)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// TestStoppedPostgres: with the server gone every call fails with an error,
// promptly and never beyond its context deadline, counted in
// gatecast_store_errors_total under its op, and the store recovers by
// itself when the server is back.
func TestStoppedPostgres(t *testing.T) {
	srv := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	s, err := Open(ctx, srv.DSN(), WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tok, err := s.CreateToken(ctx, "survivor", 1, acl.HashSecret([]byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	const deadline = 3 * time.Second
	calls := map[string]func(context.Context) error{
		"Ping":           s.Ping,
		"GetToken":       func(c context.Context) error { _, err := s.GetToken(c, tok.ID); return err },
		"GetTokenByHash": func(c context.Context) error { _, err := s.GetTokenByHash(c, tok.Hash); return err },
		"ListGrants":     func(c context.Context) error { _, err := s.ListGrants(c, tok.ID); return err },
		"CreateTag":      func(c context.Context) error { _, err := s.CreateTag(c, "y"); return err },
		"DeleteToken":    func(c context.Context) error { return s.DeleteToken(c, tok.ID) },
	}
	for name, call := range calls {
		cctx, ccancel := context.WithTimeout(context.Background(), deadline)
		done := make(chan error, 1)
		go func() { done <- call(cctx) }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s succeeded with the server stopped", name)
			} else if errors.Is(err, acl.ErrNotFound) || errors.Is(err, acl.ErrConflict) || errors.Is(err, acl.ErrInvalid) {
				t.Errorf("%s: outage reported as a domain error: %v", name, err)
			}
		case <-time.After(deadline + 5*time.Second):
			t.Errorf("%s still blocked well past its %v deadline", name, deadline)
		}
		ccancel()
	}
	wantErrors := map[string]float64{"ping": 1, "get_token": 1, "lookup_token": 1, "load_grants": 1, "write": 2, "read": 0, "migrate": 0}
	for op, want := range wantErrors {
		if _, errs := acltest.StoreMetric(t, reg, "postgres", op); errs != want {
			t.Errorf("server stopped: gatecast_store_errors_total{op=%q} = %v, want %v", op, errs, want)
		}
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var got acl.Token
	for {
		got, err = s.GetToken(ctx, tok.ID)
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || got != tok {
		t.Fatalf("after restart: %+v, %v; want %+v", got, err, tok)
	}
}

// TestUnresponsiveServer: a server that accepts TCP connections and never
// answers must not hang Open beyond its context.
func TestUnresponsiveServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		s, err := Open(ctx, "postgres://u@"+l.Addr().String()+"/db?sslmode=disable")
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Open = %v, want an error wrapping context.DeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open still blocked 10s after a 1s deadline")
	}
}

func TestOpenErrorsHideThePassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"postgres://gc:hunter2secret@127.0.0.1:1/db?sslmode=disable", // nothing listens on port 1
		"postgres://gc:hunter2secret@127.0.0.1:notaport/db",
		"host=127.0.0.1 port=1 password=hunter2secret sslmode=disable",
		"::: not a dsn",
	} {
		s, err := Open(ctx, dsn)
		if err == nil {
			s.Close()
			t.Fatalf("Open(%q) succeeded", dsn)
		}
		if strings.Contains(err.Error(), "hunter2secret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}

func TestCancelledContext(t *testing.T) {
	s, _ := openFresh(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.ListTokens(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ListTokens = %v, want context.Canceled", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ping = %v, want context.Canceled", err)
	}
}

func TestCloseTwice(t *testing.T) {
	s, _ := openFresh(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// Connect-path lookups against a real server over loopback:
//
//	go test -run '^$' -bench . -benchmem ./acl/postgres
func BenchmarkGetTokenByHash(b *testing.B) {
	s, _ := openFresh(b)
	ctx := context.Background()
	h := acl.HashSecret([]byte("bench"))
	if _, err := s.CreateToken(ctx, "bench", 0, h); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetTokenByHash(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListGrants(b *testing.B) {
	s, _ := openFresh(b)
	ctx := context.Background()
	tok, err := s.CreateToken(ctx, "bench", 0, acl.HashSecret([]byte("bench")))
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range []string{"a/#", "b/+/c", "d", "e/f/#", "g/+"} {
		tag, err := s.CreateTag(ctx, p)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.SetPermission(ctx, tok.ID, tag.ID, acl.PermReadWrite); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		gs, err := s.ListGrants(ctx, tok.ID)
		if err != nil || len(gs) != 5 {
			b.Fatal(len(gs), err)
		}
	}
}

// TestStoreSuite runs the one conformance suite every acl.Store passes, each
// subtest on a fresh database of the shared throwaway server.
func TestStoreSuite(t *testing.T) {
	acltest.RunStoreSuite(t, func(t *testing.T) acl.Store {
		s, _ := openFresh(t)
		return s
	})
}

func TestMetrics(t *testing.T) {
	acltest.RunMetricsSuite(t, "postgres", func(t *testing.T, reg prometheus.Registerer) acl.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := Open(ctx, testserver.PostgresDB(t), WithRegisterer(reg))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestMetricsMigrateFailure: an Open whose migration fails (here: a
// database newer than this build) counts a migrate error; a second store
// on the same registry shares the series.
func TestMetricsMigrateFailure(t *testing.T) {
	s, dsn := openFresh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	ok, err := Open(ctx, dsn, WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	if _, err := s.pool.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(ctx, dsn, WithRegisterer(reg)); err == nil {
		s2.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
	if calls, errs := acltest.StoreMetric(t, reg, "postgres", "migrate"); calls != 2 || errs != 1 {
		t.Fatalf("migrate: %d calls, %v errors; want 2 calls, 1 error", calls, errs)
	}
}

// A database at schema version 3 (before rights versions) is migrated in
// place: each existing token gets a distinct version of at least 1 and at
// most RightsVersion, and the next write gives a higher one.
func TestMigrateRightsVersion(t *testing.T) {
	dsn := testserver.PostgresDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:3] {
		if _, err := conn.Exec(ctx, m.sql); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			t.Fatal(err)
		}
	}
	for _, secret := range []string{"one", "two", "three"} {
		h := acl.HashSecret([]byte(secret))
		if _, err := conn.Exec(ctx, "INSERT INTO tokens (name, hash) VALUES ($1, $2)", secret, h[:]); err != nil {
			t.Fatal(err)
		}
	}

	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rv, err := s.RightsVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := s.ListTokens(ctx)
	if err != nil || len(ts) != 3 {
		t.Fatalf("ListTokens after migration = %+v, %v", ts, err)
	}
	seen := map[int64]bool{}
	for _, tok := range ts {
		if tok.Version < 1 || tok.Version > rv || seen[tok.Version] {
			t.Errorf("migrated token %d has version %d; RightsVersion %d; seen %v", tok.ID, tok.Version, rv, seen)
		}
		seen[tok.Version] = true
	}
	name := "renamed"
	got, err := s.UpdateToken(ctx, ts[0].ID, acl.TokenUpdate{Name: &name})
	if err != nil || got.Version <= rv {
		t.Fatalf("UpdateToken after migration = version %d, %v; want above %d", got.Version, err, rv)
	}
	// A row inserted by hand gets a version from the column's default.
	h := acl.HashSecret([]byte("by hand"))
	if _, err := conn.Exec(ctx, "INSERT INTO tokens (name, hash) VALUES ('hand', $1)", h[:]); err != nil {
		t.Fatal(err)
	}
	if hand, err := s.GetTokenByHash(ctx, h); err != nil || hand.Version <= got.Version {
		t.Fatalf("hand-inserted token = version %d, %v; want above %d", hand.Version, err, got.Version)
	}
}
