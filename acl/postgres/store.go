package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/internal/storemetrics"
)

const tokenColumns = "id, name, hash, max_connections, disabled, created_at, weak_secret"

const selectToken = "SELECT " + tokenColumns + " FROM tokens"

// listGrantsSQL reads the token row and its grants in one statement (one
// snapshot, one round trip on the connect path): a token without grants
// yields one row with NULL grant columns, a missing token no row at all.
const listGrantsSQL = `SELECT p.tag_id, g.pattern, p.permission
	FROM tokens t
	LEFT JOIN permissions p ON p.token_id = t.id
	LEFT JOIN tags g ON g.id = p.tag_id
	WHERE t.id = $1
	ORDER BY p.tag_id`

func scanToken(r pgx.Row) (acl.Token, error) {
	var (
		t        acl.Token
		hash     []byte
		maxConns int64
	)
	if err := r.Scan(&t.ID, &t.Name, &hash, &maxConns, &t.Disabled, &t.CreatedAt, &t.WeakSecret); err != nil {
		return acl.Token{}, err
	}
	if len(hash) != len(t.Hash) {
		return acl.Token{}, fmt.Errorf("acl/postgres: token %d has a %d-byte hash", t.ID, len(hash))
	}
	copy(t.Hash[:], hash)
	t.MaxConnections = int(maxConns)
	// timestamptz has microsecond precision; UTC so that every read of the
	// same row yields an identical value whatever the process's time zone.
	t.CreatedAt = t.CreatedAt.UTC()
	return t, nil
}

func tokenNotFound(id int64) error { return fmt.Errorf("%w: token %d", acl.ErrNotFound, id) }
func tagNotFound(id int64) error   { return fmt.Errorf("%w: tag %d", acl.ErrNotFound, id) }

var errHashExists = fmt.Errorf("%w: a token with this hash exists", acl.ErrConflict)

// CreateToken stores a new token. name, maxConnections and hash are checked
// with acl's Validate functions; a hash already in use is acl.ErrConflict.
func (s *Store) CreateToken(ctx context.Context, name string, maxConnections int, hash acl.Hash) (_ acl.Token, err error) {
	if err := errors.Join(acl.ValidateTokenName(name), acl.ValidateMaxConnections(maxConnections), acl.ValidateHash(hash)); err != nil {
		return acl.Token{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	t, err := scanToken(s.pool.QueryRow(ctx, `INSERT INTO tokens (name, hash, max_connections)
		VALUES ($1, $2, $3) RETURNING `+tokenColumns, name, hash[:], int64(maxConnections)))
	if isUnique(err) {
		return acl.Token{}, errHashExists
	}
	if err != nil {
		return acl.Token{}, dbErr(ctx, "creating token", err)
	}
	return t, nil
}

// GetToken returns the token with id, or acl.ErrNotFound.
func (s *Store) GetToken(ctx context.Context, id int64) (_ acl.Token, err error) {
	defer s.metrics.Track(storemetrics.GetToken, time.Now(), &err)
	t, err := scanToken(s.pool.QueryRow(ctx, selectToken+" WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return acl.Token{}, tokenNotFound(id)
	}
	if err != nil {
		return acl.Token{}, dbErr(ctx, fmt.Sprintf("reading token %d", id), err)
	}
	return t, nil
}

// GetTokenByHash returns the token whose secret hashes to hash, disabled or
// not, or acl.ErrNotFound. The lookup goes through the unique index on hash.
func (s *Store) GetTokenByHash(ctx context.Context, hash acl.Hash) (_ acl.Token, err error) {
	defer s.metrics.Track(storemetrics.LookupToken, time.Now(), &err)
	t, err := scanToken(s.pool.QueryRow(ctx, selectToken+" WHERE hash = $1", hash[:]))
	if errors.Is(err, pgx.ErrNoRows) {
		return acl.Token{}, fmt.Errorf("%w: no token with this hash", acl.ErrNotFound)
	}
	if err != nil {
		return acl.Token{}, dbErr(ctx, "reading token by hash", err)
	}
	return t, nil
}

// ListTokens returns every token ordered by ID.
func (s *Store) ListTokens(ctx context.Context) (_ []acl.Token, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	rows, err := s.pool.Query(ctx, selectToken+" ORDER BY id")
	if err != nil {
		return nil, dbErr(ctx, "listing tokens", err)
	}
	defer rows.Close()
	ts := []acl.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, dbErr(ctx, "listing tokens", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(ctx, "listing tokens", err)
	}
	return ts, nil
}

// UpdateToken changes the non-nil fields of u and returns the token as it
// is afterwards. With no field set it returns the token unchanged.
func (s *Store) UpdateToken(ctx context.Context, id int64, u acl.TokenUpdate) (_ acl.Token, err error) {
	var errs []error
	if u.Name != nil {
		errs = append(errs, acl.ValidateTokenName(*u.Name))
	}
	if u.MaxConnections != nil {
		errs = append(errs, acl.ValidateMaxConnections(*u.MaxConnections))
	}
	if err := errors.Join(errs...); err != nil {
		return acl.Token{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	var maxConns *int64 // nil leaves the column unchanged
	if u.MaxConnections != nil {
		m := int64(*u.MaxConnections)
		maxConns = &m
	}
	t, err := scanToken(s.pool.QueryRow(ctx, `UPDATE tokens SET
			name = coalesce($1, name),
			max_connections = coalesce($2, max_connections),
			disabled = coalesce($3, disabled)
		WHERE id = $4 RETURNING `+tokenColumns, u.Name, maxConns, u.Disabled, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return acl.Token{}, tokenNotFound(id)
	}
	if err != nil {
		return acl.Token{}, dbErr(ctx, fmt.Sprintf("updating token %d", id), err)
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
	t, err := scanToken(s.pool.QueryRow(ctx,
		"UPDATE tokens SET hash = $1, weak_secret = false WHERE id = $2 RETURNING "+tokenColumns, hash[:], id))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return acl.Token{}, tokenNotFound(id)
	case isUnique(err):
		return acl.Token{}, errHashExists
	case err != nil:
		return acl.Token{}, dbErr(ctx, fmt.Sprintf("rotating token %d", id), err)
	}
	return t, nil
}

// DeleteToken deletes the token and, by cascade, its permissions.
func (s *Store) DeleteToken(ctx context.Context, id int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.deleteRow(ctx, "DELETE FROM tokens WHERE id = $1", tokenNotFound(id), id)
}

// CreateTag stores a new tag. The pattern must pass acl.ValidatePattern; a
// pattern already stored is acl.ErrConflict (overlapping ones are fine).
func (s *Store) CreateTag(ctx context.Context, pattern string) (_ acl.Tag, err error) {
	if err := acl.ValidatePattern(pattern); err != nil {
		return acl.Tag{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	t := acl.Tag{Pattern: pattern}
	err = s.pool.QueryRow(ctx, "INSERT INTO tags (pattern) VALUES ($1) RETURNING id", pattern).Scan(&t.ID)
	if isUnique(err) {
		return acl.Tag{}, fmt.Errorf("%w: tag pattern %q exists", acl.ErrConflict, pattern)
	}
	if err != nil {
		return acl.Tag{}, dbErr(ctx, "creating tag", err)
	}
	return t, nil
}

// GetTag returns the tag with id, or acl.ErrNotFound.
func (s *Store) GetTag(ctx context.Context, id int64) (_ acl.Tag, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	t := acl.Tag{ID: id}
	err = s.pool.QueryRow(ctx, "SELECT pattern FROM tags WHERE id = $1", id).Scan(&t.Pattern)
	if errors.Is(err, pgx.ErrNoRows) {
		return acl.Tag{}, tagNotFound(id)
	}
	if err != nil {
		return acl.Tag{}, dbErr(ctx, fmt.Sprintf("reading tag %d", id), err)
	}
	return t, nil
}

// ListTags returns every tag ordered by ID.
func (s *Store) ListTags(ctx context.Context) (_ []acl.Tag, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	rows, err := s.pool.Query(ctx, "SELECT id, pattern FROM tags ORDER BY id")
	if err != nil {
		return nil, dbErr(ctx, "listing tags", err)
	}
	defer rows.Close()
	ts := []acl.Tag{}
	for rows.Next() {
		var t acl.Tag
		if err := rows.Scan(&t.ID, &t.Pattern); err != nil {
			return nil, dbErr(ctx, "listing tags", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(ctx, "listing tags", err)
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
	t := acl.Tag{Pattern: pattern}
	err = s.pool.QueryRow(ctx, "UPDATE tags SET pattern = $1 WHERE id = $2 RETURNING id", pattern, id).Scan(&t.ID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return acl.Tag{}, tagNotFound(id)
	case isUnique(err):
		return acl.Tag{}, fmt.Errorf("%w: tag pattern %q exists", acl.ErrConflict, pattern)
	case err != nil:
		return acl.Tag{}, dbErr(ctx, fmt.Sprintf("updating tag %d", id), err)
	}
	return t, nil
}

// DeleteTag deletes the tag and, by cascade, every permission on it.
func (s *Store) DeleteTag(ctx context.Context, id int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.deleteRow(ctx, "DELETE FROM tags WHERE id = $1", tagNotFound(id), id)
}

// SetPermission creates or replaces the permission of token on tag. A
// missing token or tag is acl.ErrNotFound, told apart by which foreign key
// the single INSERT violated (the token's is checked first, as in
// acl/sqlite, when both are missing).
func (s *Store) SetPermission(ctx context.Context, tokenID, tagID int64, p acl.Permission) (err error) {
	if err := acl.ValidatePermission(p); err != nil {
		return err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	_, err = s.pool.Exec(ctx, `INSERT INTO permissions (token_id, tag_id, permission) VALUES ($1, $2, $3)
		ON CONFLICT (token_id, tag_id) DO UPDATE SET permission = excluded.permission`,
		tokenID, tagID, p.String())
	if code, constraint := pgCode(err); code == foreignKeyViolation {
		if constraint == "permissions_tag_fk" {
			return tagNotFound(tagID)
		}
		return tokenNotFound(tokenID)
	}
	if err != nil {
		return dbErr(ctx, "setting permission", err)
	}
	return nil
}

// DeletePermission removes the permission of token on tag, or returns
// acl.ErrNotFound when there is none.
func (s *Store) DeletePermission(ctx context.Context, tokenID, tagID int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.deleteRow(ctx, "DELETE FROM permissions WHERE token_id = $1 AND tag_id = $2",
		fmt.Errorf("%w: no permission of token %d on tag %d", acl.ErrNotFound, tokenID, tagID), tokenID, tagID)
}

// ListGrants returns the token's permissions joined with tag patterns,
// ordered by tag ID; acl.ErrNotFound when the token does not exist (a token
// without permissions gives an empty slice).
func (s *Store) ListGrants(ctx context.Context, tokenID int64) (_ []acl.Grant, err error) {
	defer s.metrics.Track(storemetrics.LoadGrants, time.Now(), &err)
	rows, err := s.pool.Query(ctx, listGrantsSQL, tokenID)
	if err != nil {
		return nil, dbErr(ctx, fmt.Sprintf("listing grants of token %d", tokenID), err)
	}
	defer rows.Close()
	gs := []acl.Grant{}
	found := false
	for rows.Next() {
		found = true
		var (
			tagID   *int64
			pattern *string
			perm    *string
		)
		if err := rows.Scan(&tagID, &pattern, &perm); err != nil {
			return nil, dbErr(ctx, fmt.Sprintf("listing grants of token %d", tokenID), err)
		}
		if tagID == nil || pattern == nil || perm == nil {
			continue // the token exists and has no permissions
		}
		p, err := acl.ParsePermission(*perm)
		if err != nil {
			return nil, fmt.Errorf("acl/postgres: token %d, tag %d: stored permission %q: %w", tokenID, *tagID, *perm, err)
		}
		gs = append(gs, acl.Grant{TagID: *tagID, Pattern: *pattern, Permission: p})
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(ctx, fmt.Sprintf("listing grants of token %d", tokenID), err)
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
	err = s.pool.QueryRow(ctx, `SELECT g.pattern, p.permission
		FROM permissions p
		JOIN tags g ON g.id = p.tag_id
		WHERE p.token_id = $1 AND p.tag_id = $2`, tokenID, tagID).Scan(&g.Pattern, &perm)
	if errors.Is(err, pgx.ErrNoRows) {
		return acl.Grant{}, fmt.Errorf("%w: no permission of token %d on tag %d", acl.ErrNotFound, tokenID, tagID)
	}
	if err != nil {
		return acl.Grant{}, dbErr(ctx, fmt.Sprintf("reading the permission of token %d on tag %d", tokenID, tagID), err)
	}
	if g.Permission, err = acl.ParsePermission(perm); err != nil {
		return acl.Grant{}, fmt.Errorf("acl/postgres: token %d, tag %d: stored permission %q: %w", tokenID, tagID, perm, err)
	}
	return g, nil
}

// TokensWithTag returns the IDs, ascending, of the tokens holding a
// permission on the tag; acl.ErrNotFound when the tag does not exist.
func (s *Store) TokensWithTag(ctx context.Context, tagID int64) (_ []int64, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	rows, err := s.pool.Query(ctx, `SELECT p.token_id FROM tags g
		LEFT JOIN permissions p ON p.tag_id = g.id
		WHERE g.id = $1 ORDER BY p.token_id`, tagID)
	if err != nil {
		return nil, dbErr(ctx, fmt.Sprintf("tokens with tag %d", tagID), err)
	}
	defer rows.Close()
	ids := []int64{}
	found := false
	for rows.Next() {
		found = true
		var id *int64
		if err := rows.Scan(&id); err != nil {
			return nil, dbErr(ctx, fmt.Sprintf("tokens with tag %d", tagID), err)
		}
		if id != nil {
			ids = append(ids, *id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(ctx, fmt.Sprintf("tokens with tag %d", tagID), err)
	}
	if !found {
		return nil, tagNotFound(tagID)
	}
	return ids, nil
}

// deleteRow runs a single-row DELETE and returns notFound when it removed
// nothing.
func (s *Store) deleteRow(ctx context.Context, query string, notFound error, args ...any) error {
	tag, err := s.pool.Exec(ctx, query, args...)
	if err != nil {
		return dbErr(ctx, "deleting", err)
	}
	if tag.RowsAffected() == 0 {
		return notFound
	}
	return nil
}
