package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/acltest"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "acl.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestStoreSuite(t *testing.T) {
	acltest.RunStoreSuite(t, func(t *testing.T) acl.Store { return openTemp(t) })
}

func TestOpenCreatesPrivateFileAndDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "nested")
	path := filepath.Join(dir, "acl.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("database file mode %o, want 600", m)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := di.Mode().Perm(); m != 0o700 {
		t.Errorf("database directory mode %o, want 700", m)
	}
	// Write something so the WAL exists, then check it is private too.
	if _, err := s.CreateTag(context.Background(), "a/#"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path + "-wal"); err != nil {
		t.Errorf("no WAL file: %v", err)
	} else if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("WAL file mode %o, want 600", m)
	}
}

// Reopening keeps the data and applies no migration twice.
func TestReopenIsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.db")
	ctx := context.Background()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.CreateToken(ctx, "kept", 4, acl.HashSecret([]byte("gc_x")))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s, err = Open(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.GetTokenByHash(ctx, acl.HashSecret([]byte("gc_x")))
		if err != nil || got.ID != tok.ID || got.MaxConnections != 4 || !got.CreatedAt.Equal(tok.CreatedAt) {
			t.Errorf("after reopen: %+v, %v; want %+v", got, err, tok)
		}
		var n, v int
		if err := s.db.QueryRow("SELECT count(*), max(version) FROM schema_migrations").Scan(&n, &v); err != nil {
			t.Fatal(err)
		}
		if n != schemaVersion() || v != schemaVersion() {
			t.Errorf("schema_migrations has %d rows up to version %d, want %d", n, v, schemaVersion())
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A database written by a newer build is refused, not misread.
func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)", schemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
	if !strings.Contains(err.Error(), "newer than this build") {
		t.Errorf("error %q does not say the schema is newer", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
	// A directory where the file should be.
	dir := t.TempDir()
	if s, err := Open(dir); err == nil {
		s.Close()
		t.Error("Open of a directory succeeded")
	}
	// A file that is not a database.
	junk := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not a database\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(junk); err == nil {
		s.Close()
		t.Error("Open of a non-database file succeeded")
	}
}

// Paths with URI syntax in them ('?', '#', '%', spaces) name the file they
// say, not a URI query or fragment.
func TestOpenOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a b?c#d%20e")
	path := filepath.Join(dir, "acl?x=1.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTag(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at %q: %v", path, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "acl?x=1.db") {
			t.Errorf("unexpected file %q in %q", e.Name(), dir)
		}
	}
}

// Two stores on one file (two processes, e.g. the server and the CLI) see
// each other's writes; the foreign keys hold on every pooled connection.
func TestTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.db")
	ctx := context.Background()
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	tok, err := a.CreateToken(ctx, "x", 0, acl.HashSecret([]byte("s")))
	if err != nil {
		t.Fatal(err)
	}
	tag, err := b.CreateTag(ctx, "t/#")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetPermission(ctx, tok.ID, tag.ID, acl.PermRead); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	_, err = a.GetToken(ctx, tok.ID)
	if !errors.Is(err, acl.ErrNotFound) {
		t.Errorf("other store still sees the deleted token: %v", err)
	}
	var n int
	if err := a.db.QueryRow("SELECT count(*) FROM permissions").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d permissions left after the cascade", n)
	}
}

// The schema itself refuses what the Go checks refuse, so a row written by
// hand (sqlite3 CLI) cannot smuggle in a bad value.
func TestSchemaConstraints(t *testing.T) {
	s := openTemp(t)
	bad := []string{
		"INSERT INTO tokens (name, hash, max_connections, created_at) VALUES ('x', x'00', 0, 0)",
		"INSERT INTO tokens (name, hash, max_connections, created_at) VALUES ('x', zeroblob(32), -1, 0)",
		"INSERT INTO permissions (token_id, tag_id, permission) VALUES (1, 1, 'read')",
	}
	for _, q := range bad {
		if _, err := s.db.Exec(q); err == nil {
			t.Errorf("schema accepted: %s", q)
		}
	}
	if _, err := s.db.Exec("INSERT INTO tokens (name, hash, created_at) VALUES ('x', zeroblob(32), 0)"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec("INSERT INTO tags (pattern) VALUES ('a')"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec("INSERT INTO permissions (token_id, tag_id, permission) VALUES (1, 1, 'write')"); err == nil {
		t.Error("schema accepted permission 'write'")
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "acl.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, err = s.GetToken(context.Background(), 1)
	if err == nil || errors.Is(err, acl.ErrNotFound) {
		t.Errorf("GetToken on a closed store: %v, want a closed-store error", err)
	}
	_, err = s.CreateTag(context.Background(), "a")
	if !errors.Is(err, sql.ErrConnDone) && (err == nil || !strings.Contains(err.Error(), "closed")) {
		t.Errorf("CreateTag on a closed store: %v, want a closed-store error", err)
	}
}

func TestMigrationsWellFormed(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || schemaVersion() != len(ms) {
		t.Fatalf("%d migrations, schemaVersion %d", len(ms), schemaVersion())
	}
}

func BenchmarkGetTokenByHash(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "acl.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	h := acl.HashSecret([]byte("bench"))
	if _, err := s.CreateToken(ctx, "bench", 0, h); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.GetTokenByHash(ctx, h); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkListGrants(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "acl.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	tok, err := s.CreateToken(ctx, "bench", 0, acl.HashSecret([]byte("bench")))
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range []string{"a/#", "b/+/c", "d/e/f", "g/#", "h/+"} {
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
		if _, err := s.ListGrants(ctx, tok.ID); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMetrics(t *testing.T) {
	acltest.RunMetricsSuite(t, "sqlite", func(t *testing.T, reg prometheus.Registerer) acl.Store {
		s, err := Open(filepath.Join(t.TempDir(), "acl.db"), WithRegisterer(reg))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestMetricsStoreFailures: calls that fail in the database (a closed
// store, a migration refused) count as errors of their op; a second store
// on the same registry shares the series.
func TestMetricsStoreFailures(t *testing.T) {
	reg := prometheus.NewRegistry()
	path := filepath.Join(t.TempDir(), "acl.db")
	s, err := Open(path, WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.GetTokenByHash(ctx, acl.HashSecret([]byte("x"))); err == nil {
		t.Fatal("GetTokenByHash on a closed store succeeded")
	}
	if _, err := s.ListGrants(ctx, 1); err == nil {
		t.Fatal("ListGrants on a closed store succeeded")
	}
	if _, err := s.CreateTag(ctx, "a/b"); err == nil {
		t.Fatal("CreateTag on a closed store succeeded")
	}
	for op, want := range map[string]float64{"lookup_token": 1, "load_grants": 1, "write": 1, "migrate": 0, "get_token": 0} {
		if calls, errs := acltest.StoreMetric(t, reg, "sqlite", op); errs != want || calls < uint64(want) {
			t.Errorf("closed store: op %s: %d calls, %v errors; want %v errors", op, calls, errs, want)
		}
	}

	// A newer schema: the migration fails, counted on the shared series.
	raw, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.db.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)", schemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if s2, err := Open(path, WithRegisterer(reg)); err == nil {
		s2.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
	if calls, errs := acltest.StoreMetric(t, reg, "sqlite", "migrate"); calls != 2 || errs != 1 {
		t.Fatalf("migrate: %d calls, %v errors; want 2 calls (both Opens), 1 error", calls, errs)
	}
}

// A database at schema version 1 (before weak secrets, imports and the
// audit log) is migrated in place: its tokens keep working, not weak.
func TestMigrateFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.db")
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	v1, err := migrationFiles.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	h := acl.HashSecret([]byte("abc"))
	for _, q := range []string{
		string(v1),
		"CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT",
		"INSERT INTO schema_migrations VALUES (1, 'init', 0)",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec("INSERT INTO tokens (name, hash, max_connections, created_at) VALUES ('old', ?, 2, 1)", h[:]); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetTokenByHash(context.Background(), h)
	if err != nil || got.Name != "old" || got.MaxConnections != 2 || got.WeakSecret {
		t.Fatalf("token after migration = %+v, %v", got, err)
	}
	if _, err := s.AppendAudit(context.Background(), acl.AuditEntry{Action: "x"}); err != nil {
		t.Fatal(err)
	}
}

// A database at schema version 3 (before rights versions) is migrated in
// place: each existing token gets a version of at least 1 and at most
// RightsVersion, and the next write gives a higher one.
func TestMigrateRightsVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.db")
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT"); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:3] {
		if _, err := db.Exec(m.sql); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec("INSERT INTO schema_migrations VALUES (?, ?, 0)", m.version, m.name); err != nil {
			t.Fatal(err)
		}
	}
	for i, secret := range []string{"one", "two", "three"} {
		h := acl.HashSecret([]byte(secret))
		if _, err := db.Exec("INSERT INTO tokens (name, hash, created_at) VALUES (?, ?, ?)", secret, h[:], i); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec("DELETE FROM tokens WHERE name = 'two'"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	rv, err := s.RightsVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := s.ListTokens(ctx)
	if err != nil || len(ts) != 2 {
		t.Fatalf("ListTokens after migration = %+v, %v", ts, err)
	}
	for _, tok := range ts {
		if tok.Version < 1 || tok.Version > rv {
			t.Errorf("migrated token %d has version %d; RightsVersion %d", tok.ID, tok.Version, rv)
		}
	}
	name := "renamed"
	got, err := s.UpdateToken(ctx, ts[0].ID, acl.TokenUpdate{Name: &name})
	if err != nil || got.Version <= rv {
		t.Fatalf("UpdateToken after migration = version %d, %v; want above %d", got.Version, err, rv)
	}
}
