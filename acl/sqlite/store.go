package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/internal/storemetrics"
)

const selectToken = "SELECT " + tokenColumns + " FROM tokens"

// listGrantsSQL reads the token row and its grants in one statement (one
// snapshot): a token without grants yields one row with NULL grant columns,
// a missing token no row at all.
const listGrantsSQL = `SELECT p.tag_id, g.pattern, p.permission
	FROM tokens t
	LEFT JOIN permissions p ON p.token_id = t.id
	LEFT JOIN tags g ON g.id = p.tag_id
	WHERE t.id = ?
	ORDER BY p.tag_id`

// getGrantSQL reads one permission by the permissions primary key, joined
// with its tag by the tags primary key.
const getGrantSQL = `SELECT g.pattern, p.permission
	FROM permissions p
	JOIN tags g ON g.id = p.tag_id
	WHERE p.token_id = ? AND p.tag_id = ?`

type scanner interface{ Scan(dest ...any) error }

func scanToken(r scanner) (acl.Token, error) {
	var (
		t        acl.Token
		hash     []byte
		maxConns int64
		disabled int64
		created  int64
		weak     int64
	)
	if err := r.Scan(&t.ID, &t.Name, &hash, &maxConns, &disabled, &created, &weak); err != nil {
		return acl.Token{}, err
	}
	if len(hash) != len(t.Hash) {
		return acl.Token{}, fmt.Errorf("acl/sqlite: token %d has a %d-byte hash", t.ID, len(hash))
	}
	copy(t.Hash[:], hash)
	t.MaxConnections = int(maxConns)
	t.Disabled = disabled != 0
	t.WeakSecret = weak != 0
	t.CreatedAt = time.UnixMicro(created).UTC()
	return t, nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func tokenNotFound(id int64) error { return fmt.Errorf("%w: token %d", acl.ErrNotFound, id) }
func tagNotFound(id int64) error   { return fmt.Errorf("%w: tag %d", acl.ErrNotFound, id) }

// CreateToken stores a new token. name, maxConnections and hash are checked
// with acl's Validate functions; a hash already in use is acl.ErrConflict.
func (s *Store) CreateToken(ctx context.Context, name string, maxConnections int, hash acl.Hash) (_ acl.Token, err error) {
	if err := errors.Join(acl.ValidateTokenName(name), acl.ValidateMaxConnections(maxConnections), acl.ValidateHash(hash)); err != nil {
		return acl.Token{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	if err := s.lockWrite(ctx); err != nil {
		return acl.Token{}, err
	}
	defer s.unlockWrite()
	return insertToken(ctx, s.db, acl.NewToken{Name: name, MaxConnections: maxConnections, Hash: hash})
}

const tokenColumns = "id, name, hash, max_connections, disabled, created_at, weak_secret"

// queryRower is the database or a transaction.
type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// insertToken inserts t's token row (not its origin); the caller holds the
// writer slot.
func insertToken(ctx context.Context, db queryRower, t acl.NewToken) (acl.Token, error) {
	created := time.Now().UnixMicro()
	row := db.QueryRowContext(ctx, `INSERT INTO tokens (name, hash, max_connections, disabled, created_at, weak_secret)
		VALUES (?, ?, ?, 0, ?, ?) RETURNING `+tokenColumns, t.Name, t.Hash[:], t.MaxConnections, created, boolInt(t.WeakSecret))
	tok, err := scanToken(row)
	if isUnique(err) {
		return acl.Token{}, fmt.Errorf("%w: a token with this hash exists", acl.ErrConflict)
	}
	if err != nil {
		return acl.Token{}, fmt.Errorf("acl/sqlite: creating token: %w", err)
	}
	return tok, nil
}

// GetToken returns the token with id, or acl.ErrNotFound.
func (s *Store) GetToken(ctx context.Context, id int64) (_ acl.Token, err error) {
	defer s.metrics.Track(storemetrics.GetToken, time.Now(), &err)
	t, err := scanToken(s.getToken.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return acl.Token{}, tokenNotFound(id)
	}
	if err != nil {
		return acl.Token{}, fmt.Errorf("acl/sqlite: reading token %d: %w", id, err)
	}
	return t, nil
}

// GetTokenByHash returns the token whose secret hashes to hash, disabled or
// not, or acl.ErrNotFound. The lookup goes through the unique index on hash.
func (s *Store) GetTokenByHash(ctx context.Context, hash acl.Hash) (_ acl.Token, err error) {
	defer s.metrics.Track(storemetrics.LookupToken, time.Now(), &err)
	t, err := scanToken(s.getTokenByHash.QueryRowContext(ctx, hash[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return acl.Token{}, fmt.Errorf("%w: no token with this hash", acl.ErrNotFound)
	}
	if err != nil {
		return acl.Token{}, fmt.Errorf("acl/sqlite: reading token by hash: %w", err)
	}
	return t, nil
}

// ListTokens returns every token ordered by ID.
func (s *Store) ListTokens(ctx context.Context) (_ []acl.Token, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	rows, err := s.db.QueryContext(ctx, selectToken+" ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: listing tokens: %w", err)
	}
	defer rows.Close()
	ts := []acl.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("acl/sqlite: listing tokens: %w", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("acl/sqlite: listing tokens: %w", err)
	}
	return ts, nil
}

// UpdateToken changes the non-nil fields of u and returns the token as it
// is afterwards. With no field set it returns the token unchanged.
func (s *Store) UpdateToken(ctx context.Context, id int64, u acl.TokenUpdate) (_ acl.Token, err error) {
	var name, maxConns, disabled any // nil leaves the column unchanged
	var errs []error
	if u.Name != nil {
		errs = append(errs, acl.ValidateTokenName(*u.Name))
		name = *u.Name
	}
	if u.MaxConnections != nil {
		errs = append(errs, acl.ValidateMaxConnections(*u.MaxConnections))
		maxConns = *u.MaxConnections
	}
	if u.Disabled != nil {
		disabled = boolInt(*u.Disabled)
	}
	if err := errors.Join(errs...); err != nil {
		return acl.Token{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	if err := s.lockWrite(ctx); err != nil {
		return acl.Token{}, err
	}
	defer s.unlockWrite()
	row := s.db.QueryRowContext(ctx, `UPDATE tokens SET
			name = coalesce(?, name),
			max_connections = coalesce(?, max_connections),
			disabled = coalesce(?, disabled)
		WHERE id = ? RETURNING `+tokenColumns, name, maxConns, disabled, id)
	t, err := scanToken(row)
	if errors.Is(err, sql.ErrNoRows) {
		return acl.Token{}, tokenNotFound(id)
	}
	if err != nil {
		return acl.Token{}, fmt.Errorf("acl/sqlite: updating token %d: %w", id, err)
	}
	return t, nil
}

// SetTokenHash replaces the token's hash (secret rotation): from now on the
// old secret finds nothing. A hash held by another token is acl.ErrConflict.
func (s *Store) SetTokenHash(ctx context.Context, id int64, hash acl.Hash) (_ acl.Token, err error) {
	if err := acl.ValidateHash(hash); err != nil {
		return acl.Token{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	if err := s.lockWrite(ctx); err != nil {
		return acl.Token{}, err
	}
	defer s.unlockWrite()
	row := s.db.QueryRowContext(ctx, "UPDATE tokens SET hash = ?, weak_secret = 0 WHERE id = ? RETURNING "+tokenColumns, hash[:], id)
	t, err := scanToken(row)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return acl.Token{}, tokenNotFound(id)
	case isUnique(err):
		return acl.Token{}, fmt.Errorf("%w: a token with this hash exists", acl.ErrConflict)
	case err != nil:
		return acl.Token{}, fmt.Errorf("acl/sqlite: rotating token %d: %w", id, err)
	}
	return t, nil
}

// DeleteToken deletes the token and, by cascade, its permissions.
func (s *Store) DeleteToken(ctx context.Context, id int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.deleteRow(ctx, "DELETE FROM tokens WHERE id = ?", tokenNotFound(id), id)
}

// CreateTag stores a new tag. The pattern must pass acl.ValidatePattern; a
// pattern already stored is acl.ErrConflict (overlapping ones are fine).
func (s *Store) CreateTag(ctx context.Context, pattern string) (_ acl.Tag, err error) {
	if err := acl.ValidatePattern(pattern); err != nil {
		return acl.Tag{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	if err := s.lockWrite(ctx); err != nil {
		return acl.Tag{}, err
	}
	defer s.unlockWrite()
	t := acl.Tag{Pattern: pattern}
	err = s.db.QueryRowContext(ctx, "INSERT INTO tags (pattern) VALUES (?) RETURNING id", pattern).Scan(&t.ID)
	if isUnique(err) {
		return acl.Tag{}, fmt.Errorf("%w: tag pattern %q exists", acl.ErrConflict, pattern)
	}
	if err != nil {
		return acl.Tag{}, fmt.Errorf("acl/sqlite: creating tag: %w", err)
	}
	return t, nil
}

// GetTag returns the tag with id, or acl.ErrNotFound.
func (s *Store) GetTag(ctx context.Context, id int64) (_ acl.Tag, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	t := acl.Tag{ID: id}
	err = s.db.QueryRowContext(ctx, "SELECT pattern FROM tags WHERE id = ?", id).Scan(&t.Pattern)
	if errors.Is(err, sql.ErrNoRows) {
		return acl.Tag{}, tagNotFound(id)
	}
	if err != nil {
		return acl.Tag{}, fmt.Errorf("acl/sqlite: reading tag %d: %w", id, err)
	}
	return t, nil
}

// ListTags returns every tag ordered by ID.
func (s *Store) ListTags(ctx context.Context) (_ []acl.Tag, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	rows, err := s.db.QueryContext(ctx, "SELECT id, pattern FROM tags ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: listing tags: %w", err)
	}
	defer rows.Close()
	ts := []acl.Tag{}
	for rows.Next() {
		var t acl.Tag
		if err := rows.Scan(&t.ID, &t.Pattern); err != nil {
			return nil, fmt.Errorf("acl/sqlite: listing tags: %w", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("acl/sqlite: listing tags: %w", err)
	}
	return ts, nil
}

// UpdateTag changes the tag's pattern; the permissions on the tag now apply
// to the new pattern.
func (s *Store) UpdateTag(ctx context.Context, id int64, pattern string) (_ acl.Tag, err error) {
	if err := acl.ValidatePattern(pattern); err != nil {
		return acl.Tag{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	if err := s.lockWrite(ctx); err != nil {
		return acl.Tag{}, err
	}
	defer s.unlockWrite()
	t := acl.Tag{Pattern: pattern}
	err = s.db.QueryRowContext(ctx, "UPDATE tags SET pattern = ? WHERE id = ? RETURNING id", pattern, id).Scan(&t.ID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return acl.Tag{}, tagNotFound(id)
	case isUnique(err):
		return acl.Tag{}, fmt.Errorf("%w: tag pattern %q exists", acl.ErrConflict, pattern)
	case err != nil:
		return acl.Tag{}, fmt.Errorf("acl/sqlite: updating tag %d: %w", id, err)
	}
	return t, nil
}

// DeleteTag deletes the tag and, by cascade, every permission on it.
func (s *Store) DeleteTag(ctx context.Context, id int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.deleteRow(ctx, "DELETE FROM tags WHERE id = ?", tagNotFound(id), id)
}

// SetPermission creates or replaces the permission of token on tag. A
// missing token or tag is acl.ErrNotFound.
func (s *Store) SetPermission(ctx context.Context, tokenID, tagID int64, p acl.Permission) (err error) {
	if err := acl.ValidatePermission(p); err != nil {
		return err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	if err := s.lockWrite(ctx); err != nil {
		return err
	}
	defer s.unlockWrite()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("acl/sqlite: setting permission: %w", err)
	}
	defer tx.Rollback()
	var hasToken, hasTag bool
	if err := tx.QueryRowContext(ctx,
		"SELECT EXISTS (SELECT 1 FROM tokens WHERE id = ?), EXISTS (SELECT 1 FROM tags WHERE id = ?)",
		tokenID, tagID).Scan(&hasToken, &hasTag); err != nil {
		return fmt.Errorf("acl/sqlite: setting permission: %w", err)
	}
	if !hasToken {
		return tokenNotFound(tokenID)
	}
	if !hasTag {
		return tagNotFound(tagID)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO permissions (token_id, tag_id, permission) VALUES (?, ?, ?)
		ON CONFLICT (token_id, tag_id) DO UPDATE SET permission = excluded.permission`,
		tokenID, tagID, p.String())
	if isForeignKey(err) { // unreachable while the EXISTS check holds; kept as the schema's own word
		return fmt.Errorf("%w: token %d or tag %d", acl.ErrNotFound, tokenID, tagID)
	}
	if err != nil {
		return fmt.Errorf("acl/sqlite: setting permission: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("acl/sqlite: setting permission: %w", err)
	}
	return nil
}

// DeletePermission removes the permission of token on tag, or returns
// acl.ErrNotFound when there is none.
func (s *Store) DeletePermission(ctx context.Context, tokenID, tagID int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.deleteRow(ctx, "DELETE FROM permissions WHERE token_id = ? AND tag_id = ?",
		fmt.Errorf("%w: no permission of token %d on tag %d", acl.ErrNotFound, tokenID, tagID), tokenID, tagID)
}

// ListGrants returns the token's permissions joined with tag patterns,
// ordered by tag ID; acl.ErrNotFound when the token does not exist (a token
// without permissions gives an empty slice).
func (s *Store) ListGrants(ctx context.Context, tokenID int64) (_ []acl.Grant, err error) {
	defer s.metrics.Track(storemetrics.LoadGrants, time.Now(), &err)
	rows, err := s.listGrants.QueryContext(ctx, tokenID)
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: listing grants of token %d: %w", tokenID, err)
	}
	defer rows.Close()
	gs := []acl.Grant{}
	found := false
	for rows.Next() {
		found = true
		var (
			tagID   sql.NullInt64
			pattern sql.NullString
			perm    sql.NullString
		)
		if err := rows.Scan(&tagID, &pattern, &perm); err != nil {
			return nil, fmt.Errorf("acl/sqlite: listing grants of token %d: %w", tokenID, err)
		}
		if !tagID.Valid {
			continue // the token exists and has no permissions
		}
		p, err := acl.ParsePermission(perm.String)
		if err != nil {
			return nil, fmt.Errorf("acl/sqlite: token %d, tag %d: stored permission %q: %w", tokenID, tagID.Int64, perm.String, err)
		}
		gs = append(gs, acl.Grant{TagID: tagID.Int64, Pattern: pattern.String, Permission: p})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("acl/sqlite: listing grants of token %d: %w", tokenID, err)
	}
	if !found {
		return nil, tokenNotFound(tokenID)
	}
	return gs, nil
}

// GetGrant returns the token's permission on tag with the tag's pattern,
// through the permissions primary key and the tags primary key; it is
// acl.ErrNotFound when there is no such permission.
func (s *Store) GetGrant(ctx context.Context, tokenID, tagID int64) (_ acl.Grant, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	g := acl.Grant{TagID: tagID}
	var perm string
	err = s.getGrant.QueryRowContext(ctx, tokenID, tagID).Scan(&g.Pattern, &perm)
	if errors.Is(err, sql.ErrNoRows) {
		return acl.Grant{}, fmt.Errorf("%w: no permission of token %d on tag %d", acl.ErrNotFound, tokenID, tagID)
	}
	if err != nil {
		return acl.Grant{}, fmt.Errorf("acl/sqlite: reading the permission of token %d on tag %d: %w", tokenID, tagID, err)
	}
	if g.Permission, err = acl.ParsePermission(perm); err != nil {
		return acl.Grant{}, fmt.Errorf("acl/sqlite: token %d, tag %d: stored permission %q: %w", tokenID, tagID, perm, err)
	}
	return g, nil
}

// TokensWithTag returns the IDs, ascending, of the tokens holding a
// permission on the tag; acl.ErrNotFound when the tag does not exist.
func (s *Store) TokensWithTag(ctx context.Context, tagID int64) (_ []int64, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	rows, err := s.db.QueryContext(ctx, `SELECT p.token_id FROM tags g
		LEFT JOIN permissions p ON p.tag_id = g.id
		WHERE g.id = ? ORDER BY p.token_id`, tagID)
	if err != nil {
		return nil, fmt.Errorf("acl/sqlite: tokens with tag %d: %w", tagID, err)
	}
	defer rows.Close()
	ids := []int64{}
	found := false
	for rows.Next() {
		found = true
		var id sql.NullInt64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("acl/sqlite: tokens with tag %d: %w", tagID, err)
		}
		if id.Valid {
			ids = append(ids, id.Int64)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("acl/sqlite: tokens with tag %d: %w", tagID, err)
	}
	if !found {
		return nil, tagNotFound(tagID)
	}
	return ids, nil
}

// deleteRow runs a single-row DELETE and returns notFound when it removed
// nothing.
func (s *Store) deleteRow(ctx context.Context, query string, notFound error, args ...any) error {
	if err := s.lockWrite(ctx); err != nil {
		return err
	}
	defer s.unlockWrite()
	res, err := s.db.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("acl/sqlite: deleting: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("acl/sqlite: deleting: %w", err)
	}
	if n == 0 {
		return notFound
	}
	return nil
}
