package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/internal/storemetrics"
)

const (
	putRetainedSQL = `INSERT INTO retained (topic, payload, props, qos, expires_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, props = excluded.props,
			qos = excluded.qos, expires_at = excluded.expires_at`
	deleteRetainedSQL = "DELETE FROM retained WHERE topic = ?"
	// expireRetainedSQL and loadRetainedSQL take the same "now" (Unix ms):
	// a message expires once now is past its expiry, as in the MQTT adapter.
	expireRetainedSQL = "DELETE FROM retained WHERE expires_at < ?"
	loadRetainedSQL   = "SELECT topic, payload, props, qos, expires_at FROM retained WHERE expires_at IS NULL OR expires_at >= ?"
)

// PutRetained inserts or replaces the retained message of r.Topic; r must
// pass acl.ValidateRetained. It takes the writer slot like every write.
func (s *Store) PutRetained(ctx context.Context, r acl.Retained) (err error) {
	if err := acl.ValidateRetained(r); err != nil {
		return err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	var props, expires any // nil: NULL
	if len(r.Props) > 0 {
		props = r.Props
	}
	if !r.ExpiresAt.IsZero() {
		expires = r.ExpiresAt.UnixMilli()
	}
	if err := s.lockWrite(ctx); err != nil {
		return err
	}
	defer s.unlockWrite()
	if _, err := s.putRetained.ExecContext(ctx, r.Topic, r.Payload, props, int64(r.QoS), expires); err != nil {
		return fmt.Errorf("acl/sqlite: storing a retained message: %w", err)
	}
	return nil
}

// DeleteRetained removes the retained message of topic; there being none
// is not an error.
func (s *Store) DeleteRetained(ctx context.Context, topic string) (err error) {
	if err := acl.ValidateRetainedTopic(topic); err != nil {
		return err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	if err := s.lockWrite(ctx); err != nil {
		return err
	}
	defer s.unlockWrite()
	if _, err := s.deleteRetained.ExecContext(ctx, topic); err != nil {
		return fmt.Errorf("acl/sqlite: deleting a retained message: %w", err)
	}
	return nil
}

// LoadRetained deletes the expired retained messages (under the writer
// slot, which it then releases) and returns all the others. It is the
// adapter's start-up read, counted as a read in the metrics.
func (s *Store) LoadRetained(ctx context.Context) (_ []acl.Retained, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	now := time.Now().UnixMilli()
	if err := s.lockWrite(ctx); err != nil {
		return nil, err
	}
	_, err = s.expireRetained.ExecContext(ctx, now)
	s.unlockWrite()
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: deleting expired retained messages: %w", err)
	}
	rows, err := s.loadRetained.QueryContext(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: loading retained messages: %w", err)
	}
	defer rows.Close()
	out := []acl.Retained{}
	for rows.Next() {
		var (
			r       acl.Retained
			qos     int64
			expires sql.NullInt64
		)
		if err := rows.Scan(&r.Topic, &r.Payload, &r.Props, &qos, &expires); err != nil {
			return nil, fmt.Errorf("acl/sqlite: loading retained messages: %w", err)
		}
		if len(r.Props) == 0 {
			r.Props = nil
		}
		r.QoS = byte(qos)
		if expires.Valid {
			r.ExpiresAt = time.UnixMilli(expires.Int64).UTC()
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("acl/sqlite: loading retained messages: %w", err)
	}
	return out, nil
}
