package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/cluster"
)

// projectedRights is a cluster node's broker.RightsSource: token rights read
// from their versioned projection in Redis (cluster.Rights: client-side
// cached, so a token seen before is a local lookup and a first sight one
// Redis read, and tracked, so a change is heard), with the store of record
// behind it. The store is read only when the projection is missing, older
// than the version asked for, unreadable or Redis does not answer; what the
// store answers is then written back to the projection (backfill), with its
// version, so the next node finds it. A write never replaces a newer
// version (the script in cluster.Rights), so a late backfill racing an
// admin write cannot install stale rights.
//
// The admin node's writer (projectTokens, retire) puts every change in the
// projection after the store commit and before announcing it.
type projectedRights struct {
	rights    *cluster.Rights
	store     acl.Store
	available func() bool // Redis answered within the staleness bound
	log       *slog.Logger
	tombTTL   time.Duration
	fallbacks *prometheus.CounterVec // gatecast_rights_store_reads_total{reason}
	badLog    broker.LogSampler
	rebuildMu sync.Mutex // one rebuild at a time
}

// tombstoneTTL is how long a retired secret's tombstone stays in Redis: far
// longer than any read that could race it (a backfill read from the store
// before the retiring write), short enough that retired secrets do not
// pile up.
const tombstoneTTL = 24 * time.Hour

// Reasons the store of record was read instead of the projection.
const (
	fallbackMissing = "missing"     // no projection in Redis
	fallbackStale   = "stale"       // older than the version asked for
	fallbackRedis   = "redis_error" // Redis did not answer
	fallbackCorrupt = "corrupt"     // the projection did not parse
)

func newProjectedRights(r *cluster.Rights, store acl.Store, available func() bool, log *slog.Logger, reg prometheus.Registerer) (*projectedRights, error) {
	p := &projectedRights{rights: r, store: store, available: available, log: log, tombTTL: tombstoneTTL,
		badLog: broker.LogSampler{Every: 10 * time.Second},
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatecast_rights_store_reads_total",
			Help: "Token rights read from the store of record instead of their projection in Redis, by reason (missing, stale, redis_error, corrupt). 0 in steady state: connects and enforcement read Redis.",
		}, []string{"reason"})}
	for _, reason := range []string{fallbackMissing, fallbackStale, fallbackRedis, fallbackCorrupt} {
		p.fallbacks.WithLabelValues(reason)
	}
	if reg != nil {
		if err := reg.Register(p.fallbacks); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// parse decodes a projection value read for hash; ok is false when it is
// unusable (counted and logged, and the store is read instead).
func (p *projectedRights) parse(v cluster.ProjectionValue, hash acl.Hash) (acl.Rights, bool) {
	r, err := acl.ParseRights(v.Payload)
	if err == nil && (r.Hash != hash || r.Version != v.Version) {
		err = fmt.Errorf("projection holds hash %x version %d under hash %x version %d", r.Hash[:4], r.Version, hash[:4], v.Version)
	}
	if err != nil {
		p.fallbacks.WithLabelValues(fallbackCorrupt).Inc()
		p.badLog.Log(p.log, slog.LevelWarn, "unreadable rights projection in Redis; reading the store of record", "err", err)
		return acl.Rights{}, false
	}
	return r, true
}

func (p *projectedRights) ByHash(ctx context.Context, hash acl.Hash) (acl.Rights, error) {
	if p.available() {
		// This read also makes Redis track the key for this node, found or
		// not: a change committed after it is heard (OnProjection), which
		// is what lets a store read that follows be cached.
		v, err := p.rights.Projection(ctx, hash)
		switch {
		case err != nil:
			p.fallbacks.WithLabelValues(fallbackRedis).Inc()
		case !v.Found:
			p.fallbacks.WithLabelValues(fallbackMissing).Inc()
		default:
			if r, ok := p.parse(v, hash); ok {
				if r.Gone != acl.NotGone {
					return acl.Rights{}, acl.ErrNotFound
				}
				return r, nil
			}
		}
	} else {
		p.fallbacks.WithLabelValues(fallbackRedis).Inc()
	}
	tok, err := p.store.GetTokenByHash(ctx, hash)
	if errors.Is(err, acl.ErrNotFound) {
		p.rights.ForgetProjection(hash)
		return acl.Rights{}, err
	}
	if err != nil {
		return acl.Rights{}, err
	}
	grants, err := p.store.ListGrants(ctx, tok.ID)
	if err != nil {
		return acl.Rights{}, err // acl.ErrNotFound: deleted meanwhile
	}
	r := acl.RightsOf(tok, grants)
	p.backfill(ctx, r)
	return r, nil
}

func (p *projectedRights) Current(ctx context.Context, id int64, hash acl.Hash, minVersion int64) (acl.Rights, error) {
	if p.available() {
		v, err := p.rights.Projection(ctx, hash)
		if err == nil && v.Found && v.Version < minVersion && minVersion != broker.ReadStore {
			// The local copy may predate an invalidation still on its way:
			// ask Redis itself before going to the store.
			v, err = p.rights.ProjectionFresh(ctx, hash)
		}
		switch {
		case err != nil:
			p.fallbacks.WithLabelValues(fallbackRedis).Inc()
		case !v.Found:
			p.fallbacks.WithLabelValues(fallbackMissing).Inc()
		case v.Version < minVersion:
			p.fallbacks.WithLabelValues(fallbackStale).Inc()
		default:
			if r, ok := p.parse(v, hash); ok {
				if r.ID == id {
					return r, nil
				}
				// The secret now belongs to another token (a tombstone
				// replaced by a newer token with the same secret): what
				// became of token id is the store's to say.
			}
		}
	} else {
		p.fallbacks.WithLabelValues(fallbackRedis).Inc()
	}
	r, err := broker.CurrentFromStore(ctx, p.store, id, hash)
	if err != nil {
		return r, err
	}
	if r.Gone == acl.NotGone {
		p.backfill(ctx, r)
	}
	return r, nil
}

func (p *projectedRights) Forget(_ int64, hash acl.Hash) { p.rights.ForgetProjection(hash) }

// backfill writes r, just read from the store of record, to the projection;
// a failure only costs the next node a store read.
func (p *projectedRights) backfill(ctx context.Context, r acl.Rights) {
	if !p.available() || r.Version <= 0 {
		return
	}
	if _, err := p.rights.PutProjection(ctx, cluster.ProjectionEntry{Hash: r.Hash, Version: r.Version, Payload: acl.AppendRights(nil, r)}); err != nil {
		p.log.Debug("writing a rights projection back to Redis failed", "token_id", r.ID, "err", err)
	}
}

// project reads tokens from the store of record (just after an admin write
// committed them) and puts their rights in the projection, returning the
// version each must be enforced at. A token no longer in the store is
// returned as broker.ReadStore: its secret was retired by retire (or, on a
// retry, is retired from this node's cache here).
func (p *projectedRights) project(ctx context.Context, b *broker.Broker, ids []int64) ([]broker.TokenVersion, error) {
	out := make([]broker.TokenVersion, 0, len(ids))
	entries := make([]cluster.ProjectionEntry, 0, len(ids))
	var deleted []acl.Token
	for _, id := range ids {
		tok, err := p.store.GetToken(ctx, id)
		if errors.Is(err, acl.ErrNotFound) {
			out = append(out, broker.TokenVersion{ID: id, Version: broker.ReadStore})
			if h, ok := b.CachedHash(id); ok {
				deleted = append(deleted, acl.Token{ID: id, Hash: h})
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		grants, err := p.store.ListGrants(ctx, id)
		if errors.Is(err, acl.ErrNotFound) {
			out = append(out, broker.TokenVersion{ID: id, Version: broker.ReadStore})
			continue
		}
		if err != nil {
			return nil, err
		}
		r := acl.RightsOf(tok, grants)
		entries = append(entries, cluster.ProjectionEntry{Hash: r.Hash, Version: r.Version, Payload: acl.AppendRights(nil, r)})
		out = append(out, broker.TokenVersion{ID: id, Version: r.Version})
		if h, ok := b.CachedHash(id); ok && h != r.Hash {
			// Rotated, and this node caches the old secret: retire it too
			// (retire did, when the admin API could read the token first).
			deleted = append(deleted, acl.Token{ID: id, Hash: h})
		}
	}
	if len(entries) > 0 {
		if _, err := p.rights.PutProjection(ctx, entries...); err != nil {
			return nil, fmt.Errorf("writing rights to Redis: %w", err)
		}
	}
	for _, t := range deleted {
		if err := p.retire(ctx, t, acl.GoneDeleted); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// retire replaces the projection of a secret that token prev no longer
// accepts with a tombstone that outranks every copy of it: its version is
// the store's rights version read after the retiring write, greater than
// any version the token had.
func (p *projectedRights) retire(ctx context.Context, prev acl.Token, reason acl.GoneReason) error {
	v, err := p.store.RightsVersion(ctx)
	if err != nil {
		return err
	}
	r := acl.Rights{ID: prev.ID, Version: v, Hash: prev.Hash, Gone: reason}
	if cur, err := p.store.GetToken(ctx, prev.ID); err == nil && cur.Hash == prev.Hash {
		return nil // not retired after all (the write did not happen)
	}
	if _, err := p.rights.PutProjection(ctx, cluster.ProjectionEntry{Hash: prev.Hash, Version: v, Payload: acl.AppendRights(nil, r), TTL: p.tombTTL}); err != nil {
		return fmt.Errorf("retiring a secret in Redis: %w", err)
	}
	return nil
}

// reconcile compares the versions this node enforces with the store of
// record's, in bulk (one query per thousand tokens), and enforces, at the
// store's version, every token that changed or went without this node
// hearing it: what a node runs on a timer (--reconcile-interval) and after
// invalidations may have been lost. Tokens that did not change cost no
// read at all.
func (p *projectedRights) reconcile(ctx context.Context, b *broker.Broker) (changed int, err error) {
	cached := b.CachedVersions()
	if len(cached) == 0 {
		return 0, nil
	}
	ids := make([]int64, len(cached))
	for i, c := range cached {
		ids[i] = c.ID
	}
	current, err := p.store.TokenVersions(ctx, ids)
	if err != nil {
		return 0, err
	}
	var stale []broker.TokenVersion
	for _, c := range cached {
		v, ok := current[c.ID]
		switch {
		case !ok:
			stale = append(stale, broker.TokenVersion{ID: c.ID, Version: broker.ReadStore})
		case c.Version == 0 || v > c.Version:
			stale = append(stale, broker.TokenVersion{ID: c.ID, Version: v})
		}
	}
	if len(stale) == 0 {
		return 0, nil
	}
	return len(stale), b.RefreshVersions(ctx, stale)
}

// rebuild writes the projection of every token of the store of record that
// Redis lacks or holds older: run in the background at start-up and after
// Redis may have lost its data. Versioned writes make it safe to run
// alongside admin writes and on several nodes at once; it costs Redis one
// write per token and the store one read per token, off every connect path.
func (p *projectedRights) rebuild(ctx context.Context) (written int, err error) {
	p.rebuildMu.Lock()
	defer p.rebuildMu.Unlock()
	toks, err := p.store.ListTokens(ctx)
	if err != nil {
		return 0, err
	}
	const batch = 256
	for i := 0; i < len(toks); i += batch {
		part := toks[i:min(i+batch, len(toks))]
		hashes := make([][32]byte, len(part))
		for j, t := range part {
			hashes[j] = t.Hash
		}
		have, err := p.rights.ProjectionsFresh(ctx, hashes)
		if err != nil {
			return written, err
		}
		var entries []cluster.ProjectionEntry
		for j, t := range part {
			if have[j].Found && have[j].Version >= t.Version {
				continue
			}
			grants, err := p.store.ListGrants(ctx, t.ID)
			if errors.Is(err, acl.ErrNotFound) {
				continue // deleted since the listing
			}
			if err != nil {
				return written, err
			}
			entries = append(entries, cluster.ProjectionEntry{Hash: t.Hash, Version: t.Version, Payload: acl.AppendRights(nil, acl.RightsOf(t, grants))})
		}
		if len(entries) == 0 {
			continue
		}
		ok, err := p.rights.PutProjection(ctx, entries...)
		if err != nil {
			return written, err
		}
		for _, w := range ok {
			if w {
				written++
			}
		}
	}
	return written, nil
}
