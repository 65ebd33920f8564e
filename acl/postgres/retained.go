package postgres

import (
	"context"
	"time"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/internal/storemetrics"
)

// loadRetainedSQL deletes the expired retained messages and returns the
// others in one statement: the DELETE and the SELECT see the same snapshot,
// hence the SELECT's own filter. $1 is the caller's clock, as the MQTT
// adapter judges expiry by it: a message expires once now is past it.
const loadRetainedSQL = `WITH expired AS (DELETE FROM retained WHERE expires_at < $1)
	SELECT topic, payload, props, qos, expires_at FROM retained
	WHERE expires_at IS NULL OR expires_at >= $1`

// PutRetained inserts or replaces the retained message of r.Topic; r must
// pass acl.ValidateRetained. Nodes writing the same topic at once are
// ordered by Postgres's row lock: the last write wins.
func (s *Store) PutRetained(ctx context.Context, r acl.Retained) (err error) {
	if err := acl.ValidateRetained(r); err != nil {
		return err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	var props []byte // nil: NULL
	if len(r.Props) > 0 {
		props = r.Props
	}
	var expires *time.Time // nil: NULL
	if !r.ExpiresAt.IsZero() {
		e := r.ExpiresAt.UTC().Truncate(time.Millisecond)
		expires = &e
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO retained (topic, payload, props, qos, expires_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, props = excluded.props,
			qos = excluded.qos, expires_at = excluded.expires_at`,
		r.Topic, r.Payload, props, int16(r.QoS), expires)
	if err != nil {
		return dbErr(ctx, "storing a retained message", err)
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
	if _, err := s.pool.Exec(ctx, "DELETE FROM retained WHERE topic = $1", topic); err != nil {
		return dbErr(ctx, "deleting a retained message", err)
	}
	return nil
}

// LoadRetained deletes the expired retained messages and returns all the
// others, in one statement. It is the MQTT adapter's start-up read,
// counted as a read in the metrics.
func (s *Store) LoadRetained(ctx context.Context) (_ []acl.Retained, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	now := time.Now().UTC()
	rows, err := s.pool.Query(ctx, loadRetainedSQL, now)
	if err != nil {
		return nil, dbErr(ctx, "loading retained messages", err)
	}
	defer rows.Close()
	out := []acl.Retained{}
	for rows.Next() {
		var (
			r       acl.Retained
			qos     int16
			expires *time.Time
		)
		if err := rows.Scan(&r.Topic, &r.Payload, &r.Props, &qos, &expires); err != nil {
			return nil, dbErr(ctx, "loading retained messages", err)
		}
		if len(r.Props) == 0 {
			r.Props = nil
		}
		r.QoS = byte(qos)
		if expires != nil {
			r.ExpiresAt = expires.UTC()
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(ctx, "loading retained messages", err)
	}
	return out, nil
}
