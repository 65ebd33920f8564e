package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/internal/storemetrics"
)

// CreateTokenWith stores a new token with its weak-secret flag and, when
// t.Origin is set, its import record, in one transaction. A hash or an
// origin already stored is acl.ErrConflict (a concurrent import of the same
// origin waits for the first and then conflicts).
func (s *Store) CreateTokenWith(ctx context.Context, t acl.NewToken) (_ acl.Token, err error) {
	if err := acl.ValidateNewToken(t); err != nil {
		return acl.Token{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	var tok acl.Token
	err = s.rightsWrite(ctx, func(b *pgx.Batch) {
		// rights_version defaults to nextval.
		b.Queue(`INSERT INTO tokens (name, hash, max_connections, weak_secret)
			VALUES ($1, $2, $3, $4) RETURNING `+tokenColumns, t.Name, t.Hash[:], int64(t.MaxConnections), t.WeakSecret)
		if t.Origin != nil {
			// The token row inserted just before, in the same transaction.
			b.Queue(`INSERT INTO token_origins (source, source_id, token_id, imported_at)
				SELECT $1::text, $2::bigint, id, created_at FROM tokens WHERE hash = $3`, t.Origin.Source, t.Origin.ID, t.Hash[:])
		}
	}, func(br pgx.BatchResults) error {
		var err error
		if tok, err = scanToken(br.QueryRow()); err != nil || t.Origin == nil {
			return err
		}
		_, err = br.Exec()
		return err
	})
	if code, constraint := pgCode(err); code == uniqueViolation {
		if constraint == "token_origins_pkey" {
			return acl.Token{}, fmt.Errorf("%w: %s token %d was imported before", acl.ErrConflict, t.Origin.Source, t.Origin.ID)
		}
		return acl.Token{}, errHashExists
	}
	if err != nil {
		return acl.Token{}, dbErr(ctx, "creating token", err)
	}
	return tok, nil
}

// ListImported returns the import records of source ordered by source ID.
func (s *Store) ListImported(ctx context.Context, source string) (_ []acl.Imported, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	rows, err := s.pool.Query(ctx,
		"SELECT source_id, token_id, imported_at FROM token_origins WHERE source = $1 ORDER BY source_id", source)
	if err != nil {
		return nil, dbErr(ctx, "listing imports", err)
	}
	defer rows.Close()
	out := []acl.Imported{}
	for rows.Next() {
		im := acl.Imported{Origin: acl.Origin{Source: source}}
		if err := rows.Scan(&im.ID, &im.TokenID, &im.ImportedAt); err != nil {
			return nil, dbErr(ctx, "listing imports", err)
		}
		im.ImportedAt = im.ImportedAt.UTC()
		out = append(out, im)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(ctx, "listing imports", err)
	}
	return out, nil
}

// CountWeakSecrets counts the tokens flagged with a weak secret (through a
// partial index of them).
func (s *Store) CountWeakSecrets(ctx context.Context) (n int, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM tokens WHERE weak_secret").Scan(&n); err != nil {
		return 0, dbErr(ctx, "counting weak secrets", err)
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
	err = s.pool.QueryRow(ctx, `INSERT INTO audit_log (at, actor, source, client, remote, node, action, token_id, tag_id, target, status, enforcement, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id`,
		e.At, e.Actor, e.Source, e.Client, e.Remote, e.Node, e.Action, nullID(e.TokenID), nullID(e.TagID),
		e.Target, e.Status, e.Enforcement, e.Detail).Scan(&e.ID)
	if err != nil {
		return acl.AuditEntry{}, dbErr(ctx, "appending to the audit log", err)
	}
	return e, nil
}

func nullID(id int64) *int64 {
	if id == 0 {
		return nil
	}
	return &id
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
		args = append(args, arg)
		where = append(where, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if q.BeforeID > 0 {
		add("id < $?", q.BeforeID)
	}
	if q.Actor != "" {
		add("actor = $?", q.Actor)
	}
	if q.Source != "" {
		add("source = $?", q.Source)
	}
	if q.Action != "" {
		if acl.ActionPrefix(q.Action) {
			// starts_with, not LIKE: an action may hold '%' or '_'.
			add("starts_with(action, $?)", q.Action)
		} else {
			add("action = $?", q.Action)
		}
	}
	if q.TokenID > 0 {
		add("token_id = $?", q.TokenID)
	}
	if q.TagID > 0 {
		add("tag_id = $?", q.TagID)
	}
	if !q.Since.IsZero() {
		add("at >= $?", q.Since)
	}
	if !q.Until.IsZero() {
		add("at < $?", q.Until)
	}
	query := "SELECT " + auditColumns + " FROM audit_log"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, q.Limit)
	query += " ORDER BY id DESC LIMIT $" + strconv.Itoa(len(args))
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, dbErr(ctx, "listing the audit log", err)
	}
	defer rows.Close()
	out := []acl.AuditEntry{}
	for rows.Next() {
		var (
			e            acl.AuditEntry
			token, tagID *int64
		)
		if err := rows.Scan(&e.ID, &e.At, &e.Actor, &e.Source, &e.Client, &e.Remote, &e.Node, &e.Action,
			&token, &tagID, &e.Target, &e.Status, &e.Enforcement, &e.Detail); err != nil {
			return nil, dbErr(ctx, "listing the audit log", err)
		}
		e.At = e.At.UTC()
		if token != nil {
			e.TokenID = *token
		}
		if tagID != nil {
			e.TagID = *tagID
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(ctx, "listing the audit log", err)
	}
	return out, nil
}
