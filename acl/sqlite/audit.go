package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/internal/storemetrics"
)

// CreateTokenWith stores a new token with its weak-secret flag and, when
// t.Origin is set, its import record, in one transaction. A hash or an
// origin already stored is acl.ErrConflict.
func (s *Store) CreateTokenWith(ctx context.Context, t acl.NewToken) (_ acl.Token, err error) {
	if err := acl.ValidateNewToken(t); err != nil {
		return acl.Token{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	var tok acl.Token
	err = s.writeTx(ctx, "creating token", func(tx *sql.Tx) error {
		if t.Origin != nil {
			var exists bool
			if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM token_origins WHERE source = ? AND source_id = ?)",
				t.Origin.Source, t.Origin.ID).Scan(&exists); err != nil {
				return fmt.Errorf("acl/sqlite: creating token: %w", err)
			}
			if exists {
				return fmt.Errorf("%w: %s token %d was imported before", acl.ErrConflict, t.Origin.Source, t.Origin.ID)
			}
		}
		var err error
		if tok, err = insertToken(ctx, tx, t); err != nil || t.Origin == nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO token_origins (source, source_id, token_id, imported_at) VALUES (?, ?, ?, ?)",
			t.Origin.Source, t.Origin.ID, tok.ID, tok.CreatedAt.UnixMicro()); err != nil {
			return fmt.Errorf("acl/sqlite: recording the token's origin: %w", err)
		}
		return nil
	})
	if err != nil {
		return acl.Token{}, err
	}
	return tok, nil
}

// ListImported returns the import records of source ordered by source ID.
func (s *Store) ListImported(ctx context.Context, source string) (_ []acl.Imported, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	rows, err := s.db.QueryContext(ctx,
		"SELECT source_id, token_id, imported_at FROM token_origins WHERE source = ? ORDER BY source_id", source)
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: listing imports: %w", err)
	}
	defer rows.Close()
	out := []acl.Imported{}
	for rows.Next() {
		im := acl.Imported{Origin: acl.Origin{Source: source}}
		var at int64
		if err := rows.Scan(&im.ID, &im.TokenID, &at); err != nil {
			return nil, fmt.Errorf("acl/sqlite: listing imports: %w", err)
		}
		im.ImportedAt = time.UnixMicro(at).UTC()
		out = append(out, im)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("acl/sqlite: listing imports: %w", err)
	}
	return out, nil
}

// CountWeakSecrets counts the tokens flagged with a weak secret (through a
// partial index of them).
func (s *Store) CountWeakSecrets(ctx context.Context) (n int, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM tokens WHERE weak_secret = 1").Scan(&n); err != nil {
		return 0, fmt.Errorf("acl/sqlite: counting weak secrets: %w", err)
	}
	return n, nil
}

const auditColumns = "id, at, actor, source, client, remote, node, action, token_id, tag_id, target, status, enforcement, detail"

// AppendAudit stores an audit entry; a zero At is now.
func (s *Store) AppendAudit(ctx context.Context, e acl.AuditEntry) (_ acl.AuditEntry, err error) {
	if err := acl.ValidateAuditEntry(e); err != nil {
		return acl.AuditEntry{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	if e.At.IsZero() {
		e.At = time.Now()
	}
	e.At = e.At.UTC().Truncate(time.Microsecond)
	if err := s.lockWrite(ctx); err != nil {
		return acl.AuditEntry{}, err
	}
	defer s.unlockWrite()
	err = s.db.QueryRowContext(ctx, `INSERT INTO audit_log (at, actor, source, client, remote, node, action, token_id, tag_id, target, status, enforcement, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		e.At.UnixMicro(), e.Actor, e.Source, e.Client, e.Remote, e.Node, e.Action, nullID(e.TokenID), nullID(e.TagID),
		e.Target, e.Status, e.Enforcement, e.Detail).Scan(&e.ID)
	if err != nil {
		return acl.AuditEntry{}, fmt.Errorf("acl/sqlite: appending to the audit log: %w", err)
	}
	return e, nil
}

func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// ListAudit returns the entries q selects, newest first.
func (s *Store) ListAudit(ctx context.Context, q acl.AuditQuery) (_ []acl.AuditEntry, err error) {
	if err := acl.ValidateAuditQuery(q); err != nil {
		return nil, err
	}
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	var where []string
	var args []any
	add := func(cond string, arg any) {
		where = append(where, cond)
		args = append(args, arg)
	}
	if q.BeforeID > 0 {
		add("id < ?", q.BeforeID)
	}
	if q.Actor != "" {
		add("actor = ?", q.Actor)
	}
	if q.Source != "" {
		add("source = ?", q.Source)
	}
	if q.Action != "" {
		if acl.ActionPrefix(q.Action) {
			// substr, not LIKE: an action may hold '%' or '_'.
			where = append(where, "substr(action, 1, length(?)) = ?")
			args = append(args, q.Action, q.Action)
		} else {
			add("action = ?", q.Action)
		}
	}
	if q.TokenID > 0 {
		add("token_id = ?", q.TokenID)
	}
	if q.TagID > 0 {
		add("tag_id = ?", q.TagID)
	}
	if !q.Since.IsZero() {
		add("at >= ?", q.Since.UnixMicro())
	}
	if !q.Until.IsZero() {
		add("at < ?", q.Until.UnixMicro())
	}
	query := "SELECT " + auditColumns + " FROM audit_log"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY id DESC LIMIT ?"
	args = append(args, q.Limit)
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: listing the audit log: %w", err)
	}
	defer rows.Close()
	out := []acl.AuditEntry{}
	for rows.Next() {
		var (
			e            acl.AuditEntry
			at           int64
			token, tagID sql.NullInt64
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Source, &e.Client, &e.Remote, &e.Node, &e.Action,
			&token, &tagID, &e.Target, &e.Status, &e.Enforcement, &e.Detail); err != nil {
			return nil, fmt.Errorf("acl/sqlite: listing the audit log: %w", err)
		}
		e.At = time.UnixMicro(at).UTC()
		e.TokenID, e.TagID = token.Int64, tagID.Int64
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("acl/sqlite: listing the audit log: %w", err)
	}
	return out, nil
}
