package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/internal/storemetrics"
)

const tokenColumns = "id, name, hash, max_connections, disabled, created_at, weak_secret, rights_version"

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
	if err := r.Scan(&t.ID, &t.Name, &hash, &maxConns, &t.Disabled, &t.CreatedAt, &t.WeakSecret, &t.Version); err != nil {
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

// rightsLockKey is the pg_advisory_xact_lock key that serialises, across
// every node, the writes that hand out rights versions: "gcrights" in
// ASCII.
const rightsLockKey int64 = 0x6763726967687473

// nextVersion is the SQL expression of a new rights version.
const nextVersion = "nextval('gc_rights_version')"

// rightsWrite runs a write that hands out rights versions: the statements
// queue adds, after one that takes the advisory lock rightsLockKey, sent as
// one batch — one round trip, one implicit transaction (pgx ends a batch
// with a single Sync), committed when every statement succeeded. read
// reads the results of queue's statements in order. Holding the lock, the
// write draws its nextval values after every earlier such write committed
// and before any later one starts, so versions follow commit order, and
// the statements after the lock see every earlier such write (each takes
// its own snapshot, read committed) — a permission being set while its tag
// is updated, say, cannot slip between the tag change and the versioning
// of its holders. The lock is released by the commit or rollback, also
// when the connection dies.
func (s *Store) rightsWrite(ctx context.Context, queue func(b *pgx.Batch), read func(br pgx.BatchResults) error) error {
	b := &pgx.Batch{}
	b.Queue("SELECT pg_advisory_xact_lock($1)", rightsLockKey)
	queue(b)
	br := s.pool.SendBatch(ctx, b)
	_, err := br.Exec()
	if err == nil {
		err = read(br)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// rightsRow runs one statement returning one row as a rights write (see
// rightsWrite) and scans it with scan.
func (s *Store) rightsRow(ctx context.Context, scan func(pgx.Row) error, sql string, args ...any) error {
	return s.rightsWrite(ctx, func(b *pgx.Batch) { b.Queue(sql, args...) },
		func(br pgx.BatchResults) error { return scan(br.QueryRow()) })
}

// CreateToken stores a new token. name, maxConnections and hash are checked
// with acl's Validate functions; a hash already in use is acl.ErrConflict.
func (s *Store) CreateToken(ctx context.Context, name string, maxConnections int, hash acl.Hash) (_ acl.Token, err error) {
	if err := errors.Join(acl.ValidateTokenName(name), acl.ValidateMaxConnections(maxConnections), acl.ValidateHash(hash)); err != nil {
		return acl.Token{}, err
	}
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	var t acl.Token
	err = s.rightsRow(ctx, func(r pgx.Row) (err error) { t, err = scanToken(r); return err },
		// rights_version defaults to nextval.
		`INSERT INTO tokens (name, hash, max_connections)
		VALUES ($1, $2, $3) RETURNING `+tokenColumns, name, hash[:], int64(maxConnections))
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
	var t acl.Token
	if u.Name == nil && u.MaxConnections == nil && u.Disabled == nil {
		// Nothing to change, the version neither: the token as it is.
		t, err = scanToken(s.pool.QueryRow(ctx, selectToken+" WHERE id = $1", id))
	} else {
		err = s.rightsRow(ctx, func(r pgx.Row) (err error) { t, err = scanToken(r); return err },
			`UPDATE tokens SET
				name = coalesce($1, name),
				max_connections = coalesce($2, max_connections),
				disabled = coalesce($3, disabled),
				rights_version = `+nextVersion+`
			WHERE id = $4 RETURNING `+tokenColumns, u.Name, maxConns, u.Disabled, id)
	}
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
	var t acl.Token
	err = s.rightsRow(ctx, func(r pgx.Row) (err error) { t, err = scanToken(r); return err },
		"UPDATE tokens SET hash = $1, weak_secret = false, rights_version = "+nextVersion+
			" WHERE id = $2 RETURNING "+tokenColumns, hash[:], id)
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

// DeleteToken deletes the token and, by cascade, its permissions, and
// advances the rights-version sequence (see acl.Store.RightsVersion).
func (s *Store) DeleteToken(ctx context.Context, id int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.deleteVersioned(ctx, "", "WITH d AS (DELETE FROM tokens WHERE id = $1 RETURNING id) SELECT "+nextVersion+" FROM d",
		tokenNotFound(id), id)
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
	err = s.rightsWrite(ctx, func(b *pgx.Batch) {
		b.Queue("UPDATE tags SET pattern = $1 WHERE id = $2 RETURNING id", pattern, id)
		// Then the holders, in a statement of its own: its snapshot has
		// every permission committed before the lock was taken.
		b.Queue(bumpTagHolders, id)
	}, func(br pgx.BatchResults) error {
		if err := br.QueryRow().Scan(&t.ID); err != nil {
			return err
		}
		_, err := br.Exec()
		return err
	})
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

// bumpTagHolders gives every token holding a permission on tag $1 a new
// rights version (through the permissions_by_tag index).
const bumpTagHolders = "UPDATE tokens SET rights_version = " + nextVersion +
	" WHERE id IN (SELECT token_id FROM permissions WHERE tag_id = $1)"

// DeleteTag deletes the tag and, by cascade, every permission on it, giving
// the tokens that held one a new rights version first, and advances the
// rights-version sequence.
func (s *Store) DeleteTag(ctx context.Context, id int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	// The holders first, while the cascade has not yet taken their
	// permissions.
	return s.deleteVersioned(ctx, bumpTagHolders,
		"WITH d AS (DELETE FROM tags WHERE id = $1 RETURNING id) SELECT "+nextVersion+" FROM d",
		tagNotFound(id), id)
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
	err = s.rightsWrite(ctx, func(b *pgx.Batch) {
		b.Queue(`INSERT INTO permissions (token_id, tag_id, permission) VALUES ($1, $2, $3)
			ON CONFLICT (token_id, tag_id) DO UPDATE SET permission = excluded.permission`,
			tokenID, tagID, p.String())
		b.Queue("UPDATE tokens SET rights_version = "+nextVersion+" WHERE id = $1", tokenID)
	}, func(br pgx.BatchResults) error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		_, err := br.Exec()
		return err
	})
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

// DeletePermission removes the permission of token on tag, giving the token
// a new rights version, or returns acl.ErrNotFound when there is none.
func (s *Store) DeletePermission(ctx context.Context, tokenID, tagID int64) (err error) {
	defer s.metrics.Track(storemetrics.Write, time.Now(), &err)
	return s.deleteVersioned(ctx, "", `WITH d AS (DELETE FROM permissions WHERE token_id = $1 AND tag_id = $2 RETURNING token_id)
		UPDATE tokens SET rights_version = `+nextVersion+` WHERE id IN (SELECT token_id FROM d) RETURNING rights_version`,
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

// deleteVersioned runs a delete as a rights write (see rightsWrite): first
// the statement before, when not empty, then query, which deletes one row
// and returns one row holding the new version it drew, or none when there
// was nothing to delete (notFound). Both take args.
func (s *Store) deleteVersioned(ctx context.Context, before, query string, notFound error, args ...any) error {
	var v int64
	err := s.rightsWrite(ctx, func(b *pgx.Batch) {
		if before != "" {
			b.Queue(before, args...)
		}
		b.Queue(query, args...)
	}, func(br pgx.BatchResults) error {
		if before != "" {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return br.QueryRow().Scan(&v)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound
	}
	if err != nil {
		return dbErr(ctx, "deleting", err)
	}
	return nil
}

// RightsVersion returns the rights-version sequence's last value (0 before
// the first nextval). A sequence is not transactional: the value may be one
// drawn by a write not yet committed, which is never less than any Version
// committed before.
func (s *Store) RightsVersion(ctx context.Context) (v int64, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	err = s.pool.QueryRow(ctx,
		"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM gc_rights_version").Scan(&v)
	if err != nil {
		return 0, dbErr(ctx, "reading the rights version", err)
	}
	return v, nil
}

// TokenVersions returns the rights version of each token of ids that
// exists, reading acl.MaxVersionBatch IDs per query (id = ANY of an array
// parameter, through the primary key).
func (s *Store) TokenVersions(ctx context.Context, ids []int64) (_ map[int64]int64, err error) {
	defer s.metrics.Track(storemetrics.Read, time.Now(), &err)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make(map[int64]int64, len(ids))
	for chunk := range slices.Chunk(ids, acl.MaxVersionBatch) {
		if err := s.readVersions(ctx, chunk, out); err != nil {
			return nil, dbErr(ctx, "reading token versions", err)
		}
	}
	return out, nil
}

func (s *Store) readVersions(ctx context.Context, ids []int64, out map[int64]int64) error {
	rows, err := s.pool.Query(ctx, "SELECT id, rights_version FROM tokens WHERE id = ANY($1)", ids)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, v int64
		if err := rows.Scan(&id, &v); err != nil {
			return err
		}
		out[id] = v
	}
	return rows.Err()
}
