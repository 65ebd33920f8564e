package broker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gatecast/gatecast/acl"
)

// RightsSource is where the broker reads a token's rights: the store of
// record on a single node (the default, built from Config.Store and
// Config.Watcher), or, in a cluster, the versioned projection of the rights
// that the nodes share in Redis, with the store behind it (server wires
// it). Every rights value carries the version the store of record gave it
// (acl.Token.Version): the broker never replaces what it enforces with an
// older version.
//
// The broker calls ByHash on a connect of a token it does not cache, and
// Current when a rights change is to be enforced, from any goroutine; a
// source that hears changes (a projection tracked by Redis) must start
// hearing about a token no later than it reads it, so that a change
// committed after the read is always heard. Forget tells it the broker no
// longer caches the token.
type RightsSource interface {
	// ByHash returns the rights of the token whose secret hashes to hash,
	// disabled tokens included. acl.ErrNotFound: no token has that secret
	// (deleted, rotated away, never existed).
	ByHash(ctx context.Context, hash acl.Hash) (acl.Rights, error)
	// Current returns the rights of token id, which the broker caches
	// under hash, at version minVersion or later when minVersion > 0 (a
	// source holding an older copy must look further, up to the store of
	// record). A token deleted or no longer accepting hash is either
	// acl.ErrNotFound or a value with Gone set.
	Current(ctx context.Context, id int64, hash acl.Hash, minVersion int64) (acl.Rights, error)
	// Forget: the broker caches token id under hash no longer.
	Forget(id int64, hash acl.Hash)
}

// TokenVersion names one version of a token's rights: what a rights change
// announced to other nodes asks them to reach (see RefreshVersions).
type TokenVersion struct {
	ID      int64
	Version int64 // 0: unknown, any version read now will do
}

// ReadStore is the Version of a TokenVersion that no copy of a token's
// rights can satisfy, so the source reads the store of record: for a token
// known to be deleted, and for a change announced without a version (by a
// node of the previous version, which writes no projection).
const ReadStore = math.MaxInt64

// storeRights is the single-node RightsSource: the store of record, and the
// cluster's per-token change counters when a TokenWatcher is configured
// (nodes without the projection).
type storeRights struct {
	store   Store
	watcher TokenWatcher
}

func (r storeRights) ByHash(ctx context.Context, hash acl.Hash) (acl.Rights, error) {
	tok, err := r.store.GetTokenByHash(ctx, hash)
	if err == nil && r.watcher != nil {
		// Watch, then read again: a change committed before the watch is
		// in the second read, one committed after it is heard.
		if err = r.watcher.Watch(ctx, tok.ID); err == nil {
			tok, err = r.store.GetToken(ctx, tok.ID)
		}
	}
	if err != nil {
		return acl.Rights{}, err
	}
	if tok.Hash != hash {
		return acl.Rights{}, acl.ErrNotFound // rotated between the two reads
	}
	grants, err := r.store.ListGrants(ctx, tok.ID)
	if err != nil {
		return acl.Rights{}, err // acl.ErrNotFound: deleted between the reads
	}
	return acl.RightsOf(tok, grants), nil
}

func (r storeRights) Current(ctx context.Context, id int64, hash acl.Hash, _ int64) (acl.Rights, error) {
	return CurrentFromStore(ctx, r.store, id, hash)
}

func (r storeRights) Forget(id int64, _ acl.Hash) {
	if r.watcher != nil {
		r.watcher.Unwatch(id)
	}
}

// CurrentFromStore reads token id's rights from the store of record as
// RightsSource.Current returns them: a deleted token is a tombstone with
// GoneDeleted, one whose secret no longer hashes to hash a tombstone with
// GoneRotated (its current hash and version in it).
func CurrentFromStore(ctx context.Context, s Store, id int64, hash acl.Hash) (acl.Rights, error) {
	tok, err := s.GetToken(ctx, id)
	if errors.Is(err, acl.ErrNotFound) {
		return acl.Rights{ID: id, Hash: hash, Gone: acl.GoneDeleted}, nil
	}
	if err != nil {
		return acl.Rights{}, err
	}
	if tok.Hash != hash {
		return acl.Rights{ID: id, Version: tok.Version, Hash: hash, Gone: acl.GoneRotated}, nil
	}
	grants, err := s.ListGrants(ctx, id)
	if errors.Is(err, acl.ErrNotFound) {
		return acl.Rights{ID: id, Hash: hash, Gone: acl.GoneDeleted}, nil // deleted between the reads
	}
	if err != nil {
		return acl.Rights{}, err
	}
	return acl.RightsOf(tok, grants), nil
}

// RefreshVersions is RefreshTokens for a change announced with versions
// (the cluster's revocation barrier): each token is enforced at the given
// version or a later one, read further than a local copy (up to the store
// of record) when the nearest copy is older. Tokens this node does not
// cache need nothing.
func (b *Broker) RefreshVersions(ctx context.Context, tokens []TokenVersion) error {
	b.tokens.gen.Add(1) // as RefreshTokens: a token load in flight must not be cached
	return b.refreshVersions(ctx, tokens)
}

// refreshVersions is RefreshVersions after the generation bump: the
// caller bumped the store-wide gen, or (RefreshHashes) the gens of the
// hash shards concerned.
func (b *Broker) refreshVersions(ctx context.Context, tokens []TokenVersion) error {
	start := time.Now()
	defer func() {
		b.metrics.enforce.Observe(time.Since(start).Seconds())
		b.deliveredAfter(start)
	}()
	var errs []error
	for _, tv := range tokens {
		if err := b.refreshToken(ctx, tv.ID, tv.Version); err != nil {
			errs = append(errs, fmt.Errorf("token %d: %w", tv.ID, err))
		}
	}
	return errors.Join(errs...)
}

// RefreshHashes enforces the current rights of the tokens cached under
// these secret hashes (the cluster's projection told this node they
// changed). A hash no cached token has is forgotten at the source.
func (b *Broker) RefreshHashes(ctx context.Context, hashes []acl.Hash) error {
	var ids []TokenVersion
	for _, h := range hashes {
		hs := &b.tokens.byHash[hashShard(h)]
		hs.gen.Add(1) // before the lock: a load of h in flight must not be cached (tokenCache.install)
		hs.Lock()
		ts := hs.m[h]
		hs.Unlock()
		if ts == nil {
			b.rights.Forget(0, h)
			continue
		}
		ids = append(ids, TokenVersion{ID: ts.id})
	}
	if len(ids) == 0 {
		return nil
	}
	return b.refreshVersions(ctx, ids)
}

// CachedVersions lists the tokens this node caches, each with the version
// of the rights it enforces (0 when unknown: the next refresh applies
// whatever it reads), for a reconciler that compares them with the store of
// record in bulk.
func (b *Broker) CachedVersions() []TokenVersion {
	var out []TokenVersion
	for i := range b.tokens.byID {
		is := &b.tokens.byID[i]
		is.Lock()
		for id, ts := range is.m {
			out = append(out, TokenVersion{ID: id, Version: ts.version.Load()})
		}
		is.Unlock()
	}
	return out
}

// CachedHash returns the secret hash this node caches token id under.
func (b *Broker) CachedHash(id int64) (acl.Hash, bool) {
	ts := b.tokens.byIDGet(id)
	if ts == nil {
		return acl.Hash{}, false
	}
	return ts.hash, true // set before the state is published, never changed
}
