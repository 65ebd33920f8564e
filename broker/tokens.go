package broker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/gatecast/gatecast/acl"
)

// tokenState is the live view of one token: what admission and publish
// checks read, and the set of its sessions that enforcement walks.
type tokenState struct {
	id int64
	// grants is read without locks on every publish and swapped whole by
	// RefreshTokens.
	grants atomic.Pointer[acl.Grants]

	// refreshMu serializes RefreshTokens runs for this token (store reads
	// included); only they take it, never a connect or a close.
	refreshMu sync.Mutex
	// version is the version of the rights in force (acl.Rights.Version;
	// 0: unknown). Written under refreshMu (and before the state is
	// published), read by CachedVersions without it.
	version atomic.Int64

	// mu guards everything below. Revocation needs it, so nothing held
	// under it is proportional to a client's request (see the package
	// documentation).
	mu       sync.Mutex
	hash     acl.Hash
	name     string
	maxConns int
	disabled bool
	gone     bool // removed from the cache: admission must look the token up again
	sessions map[*Session]struct{}
	// offline holds the detached sessions (see offline.go): they count
	// against no limit, and enforcement judges them too. Nil until the
	// first Detach.
	offline map[*Session]struct{}
}

const cacheShards = 64 // power of two

// tokenCache maps secrets' hashes and token IDs to live token state. It is
// filled lazily on connect and kept coherent by RefreshTokens.
type tokenCache struct {
	// gen is bumped by RefreshTokens before it looks tokens up; a load that
	// began under an older generation is discarded rather than cached, so
	// a stale read racing an admin write can never be installed.
	gen    atomic.Uint64
	byHash [cacheShards]struct {
		sync.Mutex
		m map[acl.Hash]*tokenState
		// hits and misses count lookups answered from m and lookups that
		// went to the store (gatecast_grant_cache_*_total). Counted right
		// after taking this shard's lock, whose line the core then holds,
		// so they add no cache-line traffic of their own.
		hits, misses atomic.Uint64
		// gen is this shard's generation: bumped by a refresh of the
		// tokens cached under hashes of this shard (RefreshHashes, the
		// projection's invalidations), before it takes the lock. A load
		// under a hash of this shard that began before the bump is
		// discarded, as for the store-wide gen; a refresh of other
		// hashes leaves it alone, so that in a reconnect storm the
		// invalidations of other tokens' backfills do not make every
		// first connect read again.
		gen atomic.Uint64
		_   [24]byte // one shard per 64-byte line
	}
	byID [cacheShards]struct {
		sync.Mutex
		m map[int64]*tokenState
	}
}

func (c *tokenCache) init() {
	for i := range c.byHash {
		c.byHash[i].m = make(map[acl.Hash]*tokenState)
		c.byID[i].m = make(map[int64]*tokenState)
	}
}

func hashShard(h acl.Hash) int { return int(h[0]) & (cacheShards - 1) }
func idShard(id int64) int     { return int(uint64(id) & (cacheShards - 1)) }

// lookup returns the cached state for hash, loading it from the rights
// source on a miss. acl.ErrNotFound means no such token.
func (c *tokenCache) lookup(b *Broker, hash acl.Hash) (*tokenState, error) {
	hs := &c.byHash[hashShard(hash)]
	hs.Lock()
	ts := hs.m[hash]
	if ts != nil {
		hs.hits.Add(1)
	} else {
		hs.misses.Add(1)
	}
	hs.Unlock()
	if ts != nil {
		return ts, nil
	}
	for attempt := 0; attempt < 8; attempt++ {
		gen, hgen := c.gen.Load(), hs.gen.Load()
		ctx, cancel := context.WithTimeout(context.Background(), b.storeTimeout)
		r, err := b.rights.ByHash(ctx, hash)
		cancel()
		if err != nil {
			return nil, err
		}
		if r.Gone != acl.NotGone || r.Hash != hash {
			return nil, acl.ErrNotFound
		}
		fresh := &tokenState{
			id:       r.ID,
			hash:     r.Hash,
			name:     r.Name,
			maxConns: r.MaxConnections,
			disabled: r.Disabled,
			sessions: make(map[*Session]struct{}),
		}
		fresh.version.Store(r.Version)
		fresh.grants.Store(acl.CompileGrants(r.Grants))
		if ts, ok := c.install(fresh, gen, hgen); ok {
			return ts, nil
		}
	}
	return nil, errTokenChanging
}

// stats sums the shards' hit and miss counters (for metric scrapes).
func (c *tokenCache) stats() (hits, misses uint64) {
	for i := range c.byHash {
		hits += c.byHash[i].hits.Load()
		misses += c.byHash[i].misses.Load()
	}
	return hits, misses
}

// errTokenChanging reports a token that kept changing while it was read.
// Connect answers it as CauseTryAgain.
var errTokenChanging = errors.New("broker: token is being changed, try again")

// install caches fresh unless a refresh started after it was read, in which
// case ok is false and the caller reads again. If another connect cached the
// token first, that state is returned instead.
func (c *tokenCache) install(fresh *tokenState, gen, hgen uint64) (*tokenState, bool) {
	hs := &c.byHash[hashShard(fresh.hash)]
	is := &c.byID[idShard(fresh.id)]
	hs.Lock()
	defer hs.Unlock()
	if ts := hs.m[fresh.hash]; ts != nil {
		return ts, true
	}
	is.Lock()
	defer is.Unlock()
	// Checked under the ID shard's lock, which RefreshTokens takes after
	// bumping gen: either it sees this entry or we see its bump. The same
	// holds for the hash shard's gen and lock (RefreshHashes).
	if c.gen.Load() != gen || hs.gen.Load() != hgen {
		return nil, false
	}
	if is.m[fresh.id] != nil {
		// The same token cached under another hash: it was rotated and the
		// refresh that retires the old state (and closes its sessions) has
		// not run yet. Read again rather than orphan those sessions.
		return nil, false
	}
	hs.m[fresh.hash] = fresh
	is.m[fresh.id] = fresh
	return fresh, true
}

// ids lists the IDs of every cached token.
func (c *tokenCache) ids() []int64 {
	var out []int64
	for i := range c.byID {
		is := &c.byID[i]
		is.Lock()
		for id := range is.m {
			out = append(out, id)
		}
		is.Unlock()
	}
	return out
}

func (c *tokenCache) byIDGet(id int64) *tokenState {
	is := &c.byID[idShard(id)]
	is.Lock()
	defer is.Unlock()
	return is.m[id]
}

// remove drops ts from the cache; ts.mu is held by the caller.
func (c *tokenCache) remove(ts *tokenState) {
	hs := &c.byHash[hashShard(ts.hash)]
	hs.Lock()
	if hs.m[ts.hash] == ts {
		delete(hs.m, ts.hash)
	}
	hs.Unlock()
	is := &c.byID[idShard(ts.id)]
	is.Lock()
	if is.m[ts.id] == ts {
		delete(is.m, ts.id)
	}
	is.Unlock()
}

const sessionShards = 64

// sessionTable indexes live sessions by ID for the admin API.
type sessionTable struct {
	shards [sessionShards]struct {
		sync.RWMutex
		m map[uint64]*Session
	}
	n atomic.Int64
}

func (t *sessionTable) init() {
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]*Session)
	}
}

func (t *sessionTable) put(s *Session) {
	sh := &t.shards[s.id&(sessionShards-1)]
	sh.Lock()
	sh.m[s.id] = s
	sh.Unlock()
	t.n.Add(1)
}

func (t *sessionTable) del(id uint64) {
	sh := &t.shards[id&(sessionShards-1)]
	sh.Lock()
	if _, ok := sh.m[id]; ok {
		delete(sh.m, id)
		t.n.Add(-1)
	}
	sh.Unlock()
}

func (t *sessionTable) get(id uint64) *Session {
	sh := &t.shards[id&(sessionShards-1)]
	sh.RLock()
	defer sh.RUnlock()
	return sh.m[id]
}

func (t *sessionTable) each(fn func(*Session)) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.RLock()
		for _, s := range sh.m {
			fn(s)
		}
		sh.RUnlock()
	}
}

func (t *sessionTable) count() int { return int(t.n.Load()) }
