package server

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// adminLockKey is the Postgres advisory lock every node's admin API takes
// around a rights change ("gatecast" in ASCII).
const adminLockKey int64 = 0x6761746563617374

// writeLock is the cluster-wide admin write lock: a Postgres session-level
// advisory lock, held on a connection of its own for the whole "read the
// affected tokens, write, enforce" sequence. It lives in the store of
// record, so it needs nothing Postgres does not already need, and a node
// that dies while holding it frees it with its connection.
//
// Safe for concurrent use; the admin handler calls it under its own mutex,
// so a node uses one connection of the pool at a time.
type writeLock struct {
	pool *pgxpool.Pool
}

func openWriteLock(dsn string) (*writeLock, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("admin write lock: %s: %w", redactURL(dsn), err)
	}
	pc.MaxConns = 2
	pc.MinConns = 0
	pool, err := pgxpool.NewWithConfig(context.Background(), pc) // connects lazily
	if err != nil {
		return nil, fmt.Errorf("admin write lock: %w", err)
	}
	return &writeLock{pool: pool}, nil
}

// take blocks until this node holds the lock (or ctx ends) and returns its
// release. A release that cannot unlock closes the connection instead,
// which frees the lock just the same.
func (l *writeLock) take(ctx context.Context) (func(), error) {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin write lock: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", adminLockKey); err != nil {
		conn.Release()
		return nil, fmt.Errorf("admin write lock: %w", err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", adminLockKey); err != nil {
			conn.Conn().Close(ctx)
		}
		conn.Release()
	}, nil
}

func (l *writeLock) close() { l.pool.Close() }
