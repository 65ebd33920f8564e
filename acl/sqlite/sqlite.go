// Package sqlite is the embedded default acl.Store: tokens, tags and
// permissions in one SQLite file (modernc.org/sqlite, pure Go, no cgo), so a
// single node needs no database server.
//
// It owns the file, its schema and migrations. It must not know about
// connections, sessions or caching: callers (the broker's grant cache, the
// admin API) sit on top of acl.Store.
//
// Concurrency: every method may be called from any goroutine. Reads run in
// parallel on a small connection pool (WAL mode lets readers proceed while a
// write commits); writes are serialised in-process by a one-slot semaphore
// that honours the caller's context, and across processes (a CLI editing the
// same file) by SQLite's own locking with a busy timeout and transactions
// that take the write lock when they begin.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/internal/storemetrics"
)

// busyTimeout is how long a statement waits for another process's write
// lock before failing with SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// maxOpenConns bounds the pool: enough for parallel connect-time lookups,
// few enough that each connection's page cache stays cheap.
const maxOpenConns = 8

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is an acl.Store in a SQLite file. Create it with Open; it is safe
// for concurrent use.
type Store struct {
	db *sql.DB

	// wsem serialises this process's writers (capacity 1). SQLite allows one
	// writer at a time anyway; queueing here instead of in SQLite's busy
	// handler keeps waits fair and cancellable.
	wsem chan struct{}

	// Prepared statements of the calls made on every client connect, and of
	// the one that reads a single changed grant.
	getTokenByHash *sql.Stmt
	getToken       *sql.Stmt
	listGrants     *sql.Stmt
	getGrant       *sql.Stmt

	// Prepared statements of the retained messages (retained.go), which the
	// MQTT adapter writes on every retained publish.
	putRetained    *sql.Stmt
	deleteRetained *sql.Stmt
	expireRetained *sql.Stmt
	loadRetained   *sql.Stmt

	metrics *storemetrics.Metrics // nil: no metrics

	closeOnce sync.Once
	closeErr  error
}

var _ acl.Store = (*Store)(nil)

// Option configures Open.
type Option func(*options)

type options struct {
	reg prometheus.Registerer
}

// WithRegisterer makes the store record the duration and failures of every
// call on reg: gatecast_store_query_seconds{store="sqlite",op} and
// gatecast_store_errors_total{store="sqlite",op}, op being one of
// lookup_token, get_token, load_grants, read, write, migrate, ping (ping is
// never used by this store). Every series exists from Open on. A nil reg,
// like no option, records nothing. Errors are failures other than
// acl.ErrNotFound, ErrConflict, ErrInvalid and a cancellation by the
// caller's context. Opening a second SQLite store on the same reg shares
// the series.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(o *options) { o.reg = reg }
}

// Open opens (creating if needed) the database file at path, creating its
// parent directory (mode 0700) and the file itself (mode 0600) when they do
// not exist, and applies pending schema migrations. The file holds token
// hashes, not secrets, but it is still the authority over who may connect,
// hence the private modes. Close the store when done. opts may add metrics
// (WithRegisterer).
func Open(path string, opts ...Option) (*Store, error) {
	if path == "" {
		return nil, errors.New("acl/sqlite: empty database path")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	metrics, err := storemetrics.New(o.reg, "sqlite")
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: database path %q: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("acl/sqlite: creating the database directory: %w", err)
	}
	// Create the file ourselves so it gets mode 0600; SQLite would use 0644.
	// SQLite gives its -wal and -shm files the mode of the database file.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: opening the database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("acl/sqlite: opening the database file: %w", err)
	}

	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: %w", err)
	}
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxOpenConns)
	s := &Store{db: db, wsem: make(chan struct{}, 1), metrics: metrics}

	ctx, cancel := context.WithTimeout(context.Background(), 2*busyTimeout)
	defer cancel()
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("acl/sqlite: opening %s: %w", abs, err)
	}
	return s, nil
}

// dsn is the driver's URI for the absolute path p. A file: URI with an
// escaped path keeps '?', '#' and '%' in directory names from being read as
// URI syntax. The pragmas apply to every pooled connection as it opens:
// foreign keys for the cascades (off by default in SQLite), WAL so readers
// never wait for the writer, and immediate transactions so a transaction
// takes the write lock at BEGIN rather than failing with SQLITE_BUSY when it
// first writes.
func dsn(p string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(p), RawQuery: q.Encode()}
	return u.String()
}

// init checks the connection settings, migrates the schema and prepares
// the statements of the connect path; it is the "migrate" op of the
// metrics.
func (s *Store) init(ctx context.Context) (err error) {
	defer s.metrics.Track(storemetrics.Migrate, time.Now(), &err)
	var fk int
	if err := s.db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return err
	}
	if fk != 1 {
		return errors.New("foreign keys could not be enabled")
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	if s.getTokenByHash, err = s.db.PrepareContext(ctx, selectToken+" WHERE hash = ?"); err != nil {
		return err
	}
	if s.getToken, err = s.db.PrepareContext(ctx, selectToken+" WHERE id = ?"); err != nil {
		return err
	}
	if s.listGrants, err = s.db.PrepareContext(ctx, listGrantsSQL); err != nil {
		return err
	}
	if s.getGrant, err = s.db.PrepareContext(ctx, getGrantSQL); err != nil {
		return err
	}
	for _, p := range []struct {
		st   **sql.Stmt
		text string
	}{
		{&s.putRetained, putRetainedSQL},
		{&s.deleteRetained, deleteRetainedSQL},
		{&s.expireRetained, expireRetainedSQL},
		{&s.loadRetained, loadRetainedSQL},
	} {
		if *p.st, err = s.db.PrepareContext(ctx, p.text); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the database. Calling it again returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		for _, st := range []*sql.Stmt{s.getTokenByHash, s.getToken, s.listGrants, s.getGrant,
			s.putRetained, s.deleteRetained, s.expireRetained, s.loadRetained} {
			if st != nil {
				st.Close()
			}
		}
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// migration is one embedded schema step, migrations/NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations ordered by version; versions
// must run 1, 2, 3… without gaps.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, name, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(name, ".sql") {
			return nil, fmt.Errorf("migration file %q is not named NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: strings.TrimSuffix(name, ".sql"), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration versions must be 1, 2, 3…; found %d at position %d", m.version, i+1)
		}
	}
	return ms, nil
}

// schemaVersion is the schema version this build migrates databases to.
func schemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrate applies every migration newer than the database's version, each
// in its own transaction together with its schema_migrations row, so a crash
// leaves the database at a whole version. Concurrent openers (two processes)
// are serialised by the immediate transaction and re-read the version
// inside it. A database newer than this build is refused rather than
// misread.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	for _, m := range ms {
		if err := s.applyMigration(ctx, m, len(ms)); err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
	}
	return nil
}

func (s *Store) applyMigration(ctx context.Context, m migration, known int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var cur int
	if err := tx.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&cur); err != nil {
		return err
	}
	if cur > known {
		return fmt.Errorf("database schema version %d is newer than this build knows (%d)", cur, known)
	}
	if cur >= m.version {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
		m.version, m.name, time.Now().Unix()); err != nil {
		return err
	}
	return tx.Commit()
}

// lockWrite takes the writer slot, or fails when ctx ends first.
func (s *Store) lockWrite(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err // a done ctx must not win the race below by chance
	}
	select {
	case s.wsem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) unlockWrite() { <-s.wsem }

// sqliteCode returns the extended result code of a driver error, or 0.
func sqliteCode(err error) int {
	var se *msqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func isUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func isForeignKey(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}
