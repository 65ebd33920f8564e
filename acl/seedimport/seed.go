// Package seedimport imports the database of the seed (the Django Channels
// broker Gatecast replaces) into a Gatecast acl.Store: its tokens, with
// their secrets hashed on the way in, its tags and its permissions.
//
// It reads the seed's Django tables (brocker_brokertokens: id, name, token,
// max_connections; brocker_brokertags: id, prefix;
// brocker_brokerpermission: broker_id, tag_id, permission) from a SQLite
// file or a Postgres database, read-only and in one snapshot, and creates
// what the Gatecast store does not have yet. It is idempotent: every
// imported token is recorded with its seed ID (acl.Origin), so a second run
// creates nothing — not even a token deleted or rotated in Gatecast since
// the first. A token whose secret is weak (acl.IsWeakSecret) is imported
// all the same, since devices in the field present it, and flagged.
//
// It owns the reading of the seed's schema and the import's rules; it
// must not know about connections, the admin API or the network. It writes
// through acl.Store only, and records its writes in the store's audit log
// (actor "import").
//
// Secrets: a seed secret is held in memory from the read to its hash
// (acl.HashSecret); it is never printed, logged, stored or put in an
// error. Secret's String hides it from fmt.
package seedimport

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// Secret is a seed token's plain-text secret. Its String, GoString and
// MarshalText methods give "[secret]" so that fmt, logs and JSON never show
// it; only the importer reads it, as string(s), to hash it.
type Secret string

func (Secret) String() string   { return "[secret]" }
func (Secret) GoString() string { return "[secret]" }

// MarshalText keeps the secret out of JSON and other text encodings too.
func (Secret) MarshalText() ([]byte, error) { return []byte("[secret]"), nil }

// Token is a row of brocker_brokertokens.
type Token struct {
	ID             int64
	Name           string // "" for NULL
	Secret         Secret
	MaxConnections int64
}

// Tag is a row of brocker_brokertags.
type Tag struct {
	ID     int64
	Prefix string // the pattern
}

// Permission is a row of brocker_brokerpermission.
type Permission struct {
	TokenID    int64 // broker_id
	TagID      int64
	Permission string // "read" or "readwrite" (anything else is skipped)
}

// Seed is the seed's data, as read in one snapshot.
type Seed struct {
	Tokens      []Token
	Tags        []Tag
	Permissions []Permission
}

// The queries read exactly the columns the seed's models define (see
// brocker/models.py and its migrations 0001–0004), ordered so that a
// report lists them as the seed's admin does.
const (
	queryTokens      = `SELECT id, name, token, max_connections FROM brocker_brokertokens ORDER BY id`
	queryTags        = `SELECT id, prefix FROM brocker_brokertags ORDER BY id`
	queryPermissions = `SELECT broker_id, tag_id, permission FROM brocker_brokerpermission ORDER BY broker_id, tag_id`
)

// Read reads the seed database named by from: "sqlite:PATH" (the seed's
// db.sqlite3, opened read-only) or a postgres:// or postgresql:// URL. It
// reads the three tables in one read-only transaction, so the result is
// one consistent snapshot even while the seed keeps running.
func Read(ctx context.Context, from string) (*Seed, error) {
	switch {
	case strings.HasPrefix(from, "sqlite:"):
		return readSQLite(ctx, strings.TrimPrefix(from, "sqlite:"))
	case strings.HasPrefix(from, "postgres://"), strings.HasPrefix(from, "postgresql://"):
		return readPostgres(ctx, from)
	}
	return nil, fmt.Errorf("--from %q: give sqlite:PATH or a postgres:// URL", Redact(from))
}

func readSQLite(ctx context.Context, path string) (*Seed, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty path")
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("seed database path: %w", err)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("the seed database: %w", err)
	}
	// mode=ro opens without creating: a mistyped path is an error, not a
	// new empty database. query_only refuses writes on this connection.
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: "mode=ro&_pragma=query_only(1)&_pragma=busy_timeout(5000)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("opening the seed database %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("opening the seed database %s: %w", path, err)
	}
	defer tx.Rollback()
	var s Seed
	if err := readAll(ctx, sqlRows{tx}, &s); err != nil {
		return nil, fmt.Errorf("reading the seed database %s: %w", path, err)
	}
	return &s, nil
}

func readPostgres(ctx context.Context, dsn string) (*Seed, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		// pgx's errors redact the password
		return nil, fmt.Errorf("connecting to the seed database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var s Seed
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		return readAll(ctx, pgRows{tx}, &s)
	})
	if err != nil {
		return nil, fmt.Errorf("reading the seed database %s: %w", Redact(dsn), err)
	}
	return &s, nil
}

// rowsOf is one query's rows, as both drivers give them.
type rowsOf interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

type querier interface {
	query(ctx context.Context, q string) (rowsOf, error)
}

type sqlRows struct{ tx *sql.Tx }

type sqlRowsAdapter struct{ *sql.Rows }

func (r sqlRowsAdapter) Close() { r.Rows.Close() }

func (q sqlRows) query(ctx context.Context, s string) (rowsOf, error) {
	rows, err := q.tx.QueryContext(ctx, s)
	if err != nil {
		return nil, err
	}
	return sqlRowsAdapter{rows}, nil
}

type pgRows struct{ tx pgx.Tx }

func (q pgRows) query(ctx context.Context, s string) (rowsOf, error) {
	rows, err := q.tx.Query(ctx, s)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func readAll(ctx context.Context, q querier, s *Seed) error {
	if err := each(ctx, q, queryTokens, "brocker_brokertokens", func(r rowsOf) error {
		var (
			t    Token
			name sql.NullString
			sec  string
		)
		if err := r.Scan(&t.ID, &name, &sec, &t.MaxConnections); err != nil {
			return err
		}
		t.Name, t.Secret = name.String, Secret(sec)
		s.Tokens = append(s.Tokens, t)
		return nil
	}); err != nil {
		return err
	}
	if err := each(ctx, q, queryTags, "brocker_brokertags", func(r rowsOf) error {
		var t Tag
		if err := r.Scan(&t.ID, &t.Prefix); err != nil {
			return err
		}
		s.Tags = append(s.Tags, t)
		return nil
	}); err != nil {
		return err
	}
	return each(ctx, q, queryPermissions, "brocker_brokerpermission", func(r rowsOf) error {
		var p Permission
		if err := r.Scan(&p.TokenID, &p.TagID, &p.Permission); err != nil {
			return err
		}
		s.Permissions = append(s.Permissions, p)
		return nil
	})
}

// each runs one query and calls row for each row. A scan error never
// quotes the value (a secret, for the tokens table).
func each(ctx context.Context, q querier, query, table string, row func(rowsOf) error) error {
	rows, err := q.query(ctx, query)
	if err != nil {
		if missingTable(err) {
			return fmt.Errorf("no table %s: is this the seed's database (Django app \"brocker\", migrated)?", table)
		}
		return fmt.Errorf("%s: %w", table, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows); err != nil {
			return fmt.Errorf("%s: a row does not have the seed's column types", table)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: %w", table, err)
	}
	return nil
}

func missingTable(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "no such table") || strings.Contains(msg, "42P01") || strings.Contains(msg, "does not exist")
}

// Redact returns a database address fit for output: the password of a URL
// (postgres://user:pass@host/db) and of a key=value DSN (password=…)
// replaced by "xxxxx".
func Redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" && !strings.Contains(dsn, " ") {
		if u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
			}
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	fields := strings.Fields(dsn)
	for i, f := range fields {
		if strings.HasPrefix(strings.ToLower(f), "password=") {
			fields[i] = "password=xxxxx"
		}
	}
	return strings.Join(fields, " ")
}
