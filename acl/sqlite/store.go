package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
	if err := r.Scan(&t.ID, &t.Name, &hash, &maxConns, &disabled, &created, &weak, &t.Version); err != nil {
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
	var tok acl.Token
	err = s.writeTx(ctx, "creating token", func(tx *sql.Tx) error {
		var err error
		tok, err = insertToken(ctx, tx, acl.NewToken{Name: name, MaxConnections: maxConnections, Hash: hash})
		return err
	})
	if err != nil {
		return acl.Token{}, err
	}
	return tok, nil
}

const tokenColumns = "id, name, hash, max_connections, disabled, created_at, weak_secret, rights_version"

// writeTx runs fn in one transaction, holding the writer slot, and commits
// it when fn succeeds; fn's error is returned as it is. The transaction is
// immediate (see dsn): it holds SQLite's write lock from its start, so
// writers in other processes are serialised with it too, and so the
// rights-version counter it advances (nextVersion) follows commit order.
func (s *Store) writeTx(ctx context.Context, what string, fn func(tx *sql.Tx) error) error {
	if err := s.lockWrite(ctx); err != nil {
		return err
	}
	defer s.unlockWrite()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("acl/sqlite: %s: %w", what, err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("acl/sqlite: %s: %w", what, err)
	}
	return nil
}

// nextVersion advances the store's rights-version counter in tx and returns
// its new value: greater than every version handed out before, as the
// counter only grows and writers are serialised.
func nextVersion(ctx context.Context, tx *sql.Tx) (int64, error) {
	var v int64
	err := tx.QueryRowContext(ctx, "UPDATE rights_version SET value = value + 1 WHERE id = 1 RETURNING value").Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("acl/sqlite: advancing the rights version: %w", err)
	}
	return v, nil
}

// bumpToken gives token id version v.
func bumpToken(ctx context.Context, tx *sql.Tx, id, v int64) error {
	if _, err := tx.ExecContext(ctx, "UPDATE tokens SET rights_version = ? WHERE id = ?", v, id); err != nil {
		return fmt.Errorf("acl/sqlite: versioning token %d: %w", id, err)
	}
	return nil
}

// bumpTokensOfTag gives every token holding a permission on tag version v
// (through the permissions_by_tag index).
func bumpTokensOfTag(ctx context.Context, tx *sql.Tx, tagID, v int64) error {
	_, err := tx.ExecContext(ctx,
		"UPDATE tokens SET rights_version = ? WHERE id IN (SELECT token_id FROM permissions WHERE tag_id = ?)", v, tagID)
	if err != nil {
		return fmt.Errorf("acl/sqlite: versioning the tokens of tag %d: %w", tagID, err)
	}
	return nil
}

// insertToken inserts t's token row (not its origin) with a new rights
// version, in tx.
func insertToken(ctx context.Context, tx *sql.Tx, t acl.NewToken) (acl.Token, error) {
	v, err := nextVersion(ctx, tx)
	if err != nil {
		return acl.Token{}, err
	}
	created := time.Now().UnixMicro()
	row := tx.QueryRowContext(ctx, `INSERT INTO tokens (name, hash, max_connections, disabled, created_at, weak_secret, rights_version)
		VALUES (?, ?, ?, 0, ?, ?, ?) RETURNING `+tokenColumns, t.Name, t.Hash[:], t.MaxConnections, created, boolInt(t.WeakSecret), v)
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
	if u.Name == nil && u.MaxConnections == nil && u.Disabled == nil {
		// Nothing to change, the version neither: the token as it is.
		t, err := scanToken(s.getToken.QueryRowContext(ctx, id))
		if errors.Is(err, sql.ErrNoRows) {
			return acl.Token{}, tokenNotFound(id)
		}
		if err != nil {
			return acl.Token{}, fmt.Errorf("acl/sqlite: updating token %d: %w", id, err)
		}
		return t, nil
	}
	var t acl.Token
	err = s.writeTx(ctx, fmt.Sprintf("updating token %d", id), func(tx *sql.Tx) error {
		v, err := nextVersion(ctx, tx)
		if err != nil {
			return err
		}
		row := tx.QueryRowContext(ctx, `UPDATE tokens SET
				name = coalesce(?, name),
				max_connections = coalesce(?, max_connections),
				disabled = coalesce(?, disabled),
				rights_version = ?
			WHERE id = ? RETURNING `+tokenColumns, name, maxConns, disabled, v, id)
		t, err = scanToken(row)
		if errors.Is(err, sql.ErrNoRows) {
			return tokenNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("acl/sqlite: updating token %d: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return acl.Token{}, err
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
	var t acl.Token
	err = s.writeTx(ctx, fmt.Sprintf("rotating token %d", id), func(tx *sql.Tx) error {
		v, err := nextVersion(ctx, tx)
		if err != nil {
			return err
		}
		row := tx.QueryRowContext(ctx, "UPDATE tokens SET hash = ?, weak_secret = 0, rights_version = ? WHERE id = ? RETURNING "+tokenColumns, hash[:], v, id)
		t, err = scanToken(row)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return tokenNotFound(id)
		case isUnique(err):
			return fmt.Errorf("%w: a token with this hash exists", acl.ErrConflict)
		case err != nil:
			return fmt.Errorf("acl/sqlite: rotating token %d: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return acl.Token{}, err
	}
	return t, nil
}

// DeleteToken deletes the token and, by cascade, its permissions, and
// advances the rights-version counter (see acl.Store.RightsVersion).
func (s *Store) DeleteToken(ctx context.Context, id int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.writeTx(ctx, fmt.Sprintf("deleting token %d", id), func(tx *sql.Tx) error {
		if err := deleteRow(ctx, tx, "DELETE FROM tokens WHERE id = ?", tokenNotFound(id), id); err != nil {
			return err
		}
		_, err := nextVersion(ctx, tx)
		return err
	})
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
	t := acl.Tag{Pattern: pattern}
	err = s.writeTx(ctx, fmt.Sprintf("updating tag %d", id), func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, "UPDATE tags SET pattern = ? WHERE id = ? RETURNING id", pattern, id).Scan(&t.ID)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return tagNotFound(id)
		case isUnique(err):
			return fmt.Errorf("%w: tag pattern %q exists", acl.ErrConflict, pattern)
		case err != nil:
			return fmt.Errorf("acl/sqlite: updating tag %d: %w", id, err)
		}
		v, err := nextVersion(ctx, tx)
		if err != nil {
			return err
		}
		return bumpTokensOfTag(ctx, tx, id, v)
	})
	if err != nil {
		return acl.Tag{}, err
	}
	return t, nil
}

// DeleteTag deletes the tag and, by cascade, every permission on it, giving
// the tokens that held one a new rights version first.
func (s *Store) DeleteTag(ctx context.Context, id int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.writeTx(ctx, fmt.Sprintf("deleting tag %d", id), func(tx *sql.Tx) error {
		v, err := nextVersion(ctx, tx)
		if err != nil {
			return err
		}
		if err := bumpTokensOfTag(ctx, tx, id, v); err != nil { // before the cascade takes the permissions
			return err
		}
		return deleteRow(ctx, tx, "DELETE FROM tags WHERE id = ?", tagNotFound(id), id)
	})
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
	v, err := nextVersion(ctx, tx)
	if err != nil {
		return err
	}
	if err := bumpToken(ctx, tx, tokenID, v); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("acl/sqlite: setting permission: %w", err)
	}
	return nil
}

// DeletePermission removes the permission of token on tag, giving the token
// a new rights version, or returns acl.ErrNotFound when there is none.
func (s *Store) DeletePermission(ctx context.Context, tokenID, tagID int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.writeTx(ctx, "deleting permission", func(tx *sql.Tx) error {
		if err := deleteRow(ctx, tx, "DELETE FROM permissions WHERE token_id = ? AND tag_id = ?",
			fmt.Errorf("%w: no permission of token %d on tag %d", acl.ErrNotFound, tokenID, tagID), tokenID, tagID); err != nil {
			return err
		}
		v, err := nextVersion(ctx, tx)
		if err != nil {
			return err
		}
		return bumpToken(ctx, tx, tokenID, v)
	})
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

// RightsVersion returns the rights-version counter: the last version
// handed out (0 before the first).
func (s *Store) RightsVersion(ctx context.Context) (v int64, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	if err := s.db.QueryRowContext(ctx, "SELECT value FROM rights_version WHERE id = 1").Scan(&v); err != nil {
		return 0, fmt.Errorf("acl/sqlite: reading the rights version: %w", err)
	}
	return v, nil
}

// TokenVersions returns the rights version of each token of ids that
// exists, reading acl.MaxVersionBatch IDs per query: the IDs travel as one
// JSON array parameter, each looked up by primary key.
func (s *Store) TokenVersions(ctx context.Context, ids []int64) (_ map[int64]int64, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make(map[int64]int64, len(ids))
	var list []byte
	for chunk := range slices.Chunk(ids, acl.MaxVersionBatch) {
		list = append(list[:0], '[')
		for i, id := range chunk {
			if i > 0 {
				list = append(list, ',')
			}
			list = strconv.AppendInt(list, id, 10)
		}
		list = append(list, ']')
		if err := s.readVersions(ctx, string(list), out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Store) readVersions(ctx context.Context, list string, out map[int64]int64) error {
	rows, err := s.db.QueryContext(ctx,
		"SELECT id, rights_version FROM tokens WHERE id IN (SELECT value FROM json_each(?))", list)
	if err != nil {
		return fmt.Errorf("acl/sqlite: reading token versions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, v int64
		if err := rows.Scan(&id, &v); err != nil {
			return fmt.Errorf("acl/sqlite: reading token versions: %w", err)
		}
		out[id] = v
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("acl/sqlite: reading token versions: %w", err)
	}
	return nil
}

// deleteRow runs a single-row DELETE in tx and returns notFound when it
// removed nothing.
func deleteRow(ctx context.Context, tx *sql.Tx, query string, notFound error, args ...any) error {
	res, err := tx.ExecContext(ctx, query, args...)
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
