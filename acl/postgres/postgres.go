// Package postgres is the acl.Store for clusters: tokens, tags and
// permissions in PostgreSQL through a pgx/v5 connection pool, so that every
// node of a cluster reads and writes one store of record.
//
// It owns the schema and its embedded migrations, which Open applies under a
// transaction-scoped advisory lock, so any number of nodes may start at the
// same time. It must not know about connections, sessions, caching or Redis:
// the grant cache and the admin API sit on top of acl.Store.
//
// Semantics are those of acl.Store and identical to acl/sqlite (both pass
// acl/acltest.RunStoreSuite): values are checked with acl's Validate
// functions before anything is sent, a duplicate hash or pattern is
// acl.ErrConflict (SQLSTATE 23505), a missing row — including the token or
// tag a permission refers to (SQLSTATE 23503) — is acl.ErrNotFound, and
// every failure caused by the caller's context wraps ctx.Err(). Errors never
// contain a DSN password or a token hash.
//
// Concurrency: every method may be called from any goroutine; each call
// borrows a pooled connection for its duration. Each write is one round
// trip and one transaction. The writes that hand out rights versions
// (acl.Token.Version: every write of tokens and permissions, and UpdateTag
// and DeleteTag) are one batch that first takes a transaction-scoped
// advisory lock, so they are serialised across every node and versions
// follow commit order; the other writes are single statements, ordered by
// Postgres's own row locking.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/internal/storemetrics"
)

// migrationLockKey is the pg_advisory_xact_lock key that serialises schema
// migrations across nodes: "gatecast" in ASCII.
const migrationLockKey int64 = 0x6761746563617374

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is an acl.Store in PostgreSQL. Create it with Open; it is safe for
// concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	metrics *storemetrics.Metrics // nil: no metrics

	closeOnce sync.Once
}

var _ acl.Store = (*Store)(nil)

// Option configures Open.
type Option func(*options)

type options struct {
	reg prometheus.Registerer
}

// WithRegisterer makes the store record the duration and failures of every
// call on reg: gatecast_store_query_seconds{store="postgres",op} and
// gatecast_store_errors_total{store="postgres",op}, op being one of
// lookup_token, get_token, load_grants, read, write, migrate, ping. Every
// series exists from Open on. A nil reg, like no option, records nothing.
// Errors are failures other than acl.ErrNotFound, ErrConflict, ErrInvalid
// and a cancellation by the caller's context: an unreachable server, a
// statement past its deadline, a broken connection. Opening a second
// Postgres store on the same reg shares the series.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(o *options) { o.reg = reg }
}

// Open connects to the database named by dsn (a postgres:// URL or a
// key=value string, as pgx accepts; pool settings such as pool_max_conns
// may be given there too), applies pending schema migrations and returns the
// store. ctx bounds the connection and the migration, including the wait
// for another node's migration to finish. Close the store when done. opts
// may add metrics (WithRegisterer).
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	metrics, err := storemetrics.New(o.reg, "postgres")
	if err != nil {
		return nil, fmt.Errorf("acl/postgres: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors redact the password.
		return nil, fmt.Errorf("acl/postgres: %w", err)
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "gatecast"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("acl/postgres: %w", err)
	}
	s := &Store{pool: pool, metrics: metrics}
	start := time.Now()
	err = s.migrate(ctx)
	if err != nil {
		err = dbErr(ctx, "migrating the schema", err)
	}
	s.metrics.Track(storemetrics.Migrate, start, &err)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the pool, waiting for borrowed connections to be returned.
// Calling it again does nothing.
func (s *Store) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}

// Ping checks that the database answers; for health checks.
func (s *Store) Ping(ctx context.Context) (err error) {
	defer s.metrics.Track(storemetrics.Ping, time.Now(), &err)
	if err := s.pool.Ping(ctx); err != nil {
		return dbErr(ctx, "ping", err)
	}
	return nil
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

// SchemaVersion is the schema version this build migrates databases to.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrate applies every migration newer than the database's version in ONE
// transaction that first takes pg_advisory_xact_lock(migrationLockKey):
// nodes starting together queue on the lock, and each re-reads the version
// once it holds it, so every migration runs exactly once. DDL is
// transactional in Postgres, so a failure leaves the schema as it was. The
// lock is released by the commit or rollback, also when the connection dies.
// A database newer than this build is refused rather than misread.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
			return fmt.Errorf("taking the migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		var cur int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&cur); err != nil {
			return err
		}
		if cur > len(ms) {
			return fmt.Errorf("database schema version %d is newer than this build knows (%d)", cur, len(ms))
		}
		for _, m := range ms[cur:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
				m.version, m.name); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
		}
		return nil
	})
}

// SQLSTATE codes the store maps to acl errors.
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

// pgCode returns the SQLSTATE of a server error, or "".
func pgCode(err error) (code, constraint string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.ConstraintName
	}
	return "", ""
}

func isUnique(err error) bool {
	c, _ := pgCode(err)
	return c == uniqueViolation
}

// dbErr wraps a database failure with what was being done. When the
// caller's context has ended, the result also wraps ctx.Err(), whatever form
// pgx reported the interruption in (a cancelled statement, a closed
// connection).
func dbErr(ctx context.Context, what string, err error) error {
	if ce := ctx.Err(); ce != nil && !errors.Is(err, ce) {
		return fmt.Errorf("acl/postgres: %s: %w (%w)", what, ce, err)
	}
	return fmt.Errorf("acl/postgres: %s: %w", what, err)
}
