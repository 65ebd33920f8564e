package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
)

// Rights is the cluster's rights-change bus and the rights projection,
// both built on Redis client-side caching with tracking invalidation, on
// one rueidis client (so every key this node reads is tracked on the
// connections that deliver its invalidations).
//
// # Change counters (Watch, Changed, OnChange)
//
// Each token has a change counter, gc:{t<id>}:v. A node that caches a token
// first reads that counter through rueidis' client-side cache (Watch): from
// then on Redis tracks the key for this node. A node that changes a token in
// the store of record bumps the counter (Changed); Redis then sends an
// invalidation to every node that watches it, and Rights calls OnChange with
// the token IDs so the node re-reads them and enforces the result.
//
// The counter carries no rights itself: rights are always read from the
// store of record after the invalidation, so a late or reordered Redis write
// can never install stale rights. Correctness rests on one ordering: Watch
// before reading the store (an admin write committed before the watch is
// seen by the read; one committed after it bumps a watched key).
//
// # Projection (PutProjection, Projection, OnProjection)
//
// The projection holds each token's compiled rights under its secret hash,
// gc:r:<hex>, with the token's version in the store of record (see
// projection.go). Writers put what they read from the store of record;
// the script keeps the highest version, so a late or reordered write never
// replaces newer rights with older ones, and a re-put is a no-op. A node
// reads through the client-side cache (Projection): a token seen before is
// a local lookup, a first read is one GET that also makes Redis track the
// key for this node (whether it exists or not). Any later PutProjection of
// that key, by any node including this one, invalidates the local copy,
// and Rights reports the hash to OnProjection. The projection is a cache:
// Postgres stays the store of record, and a missing entry means "read the
// store", never "no rights".
//
// # Resets
//
// When a link to Redis drops, or Redis is flushed, rueidis reports a nil
// invalidation: invalidations may have been lost, so Rights re-arms every
// watched counter and projection key (pipelined) and calls OnReset, and the
// node must re-validate every token it caches. Resets are coalesced: on a
// Redis Cluster every replaced connection (one per master) reports one, so
// the first runs at once and those that follow within ResetWindow are
// merged into one more run at the end of the window.
//
// OnChange, OnProjection and OnReset run on one goroutine owned by Rights,
// in the order events arrived; every method may be called from any
// goroutine, those callbacks included.
type Rights struct {
	c      rueidis.Client
	cfg    RightsConfig
	events chan rightsEvent
	done   chan struct{}
	wg     sync.WaitGroup
	// overflow is set when an event could not be queued: the dispatcher
	// then re-validates everything instead of losing a change.
	overflow atomic.Bool

	reads *projectionReads

	mu          sync.Mutex
	watched     map[int64]struct{}    // re-armed after each invalidation
	projWatched map[[32]byte]struct{} // re-armed after each reset
}

// RightsConfig configures Rights.
type RightsConfig struct {
	// Addrs are the Redis addresses: one for a standalone Redis, several
	// (any masters) for a Redis Cluster.
	Addrs []string
	// OnChange receives IDs of tokens whose rights changed (deduplicated
	// within a batch). Required.
	OnChange func(ids []int64)
	// OnReset is called when invalidations may have been lost, after every
	// watched counter and projection key was re-armed. Required.
	OnReset func()
	// OnProjection receives the hashes of watched projection keys that
	// were written, or expired or deleted in Redis (deduplicated within a
	// batch; a hash ForgetProjection dropped is not reported). This node's
	// own PutProjection is reported too. Redis stops tracking a key once it has
	// sent its invalidation and Rights does not re-read it itself:
	// OnProjection must read every hash it is given through
	// Projection/Projections (which re-arms tracking) or call
	// ForgetProjection. Nil: projection invalidations are ignored (the
	// local cache still drops the stale copy, so Projection stays correct,
	// but nobody is told).
	OnProjection func(hashes [][32]byte)
	// ResetWindow is the coalescing window of resets: a reset runs at
	// once unless one ran less than ResetWindow ago; then it runs at the
	// end of the window, once for all resets that arrived meanwhile.
	// Default 1s.
	ResetWindow time.Duration
	// WatchTTL bounds how long a watched counter or a projection value
	// stays in the local cache; Redis keeps tracking the key after that,
	// and the next read after it is a GET again. Default 1h.
	WatchTTL time.Duration
	Logger   *slog.Logger
	// Registerer, when set, receives gatecast_redis_request_seconds and
	// gatecast_redis_errors_total for every call made through Client(),
	// and gatecast_rights_projection_reads_total{result}.
	Registerer prometheus.Registerer
}

type rightsEvent struct {
	ids    []int64
	hashes [][32]byte
	reset  bool
}

const rightsQueue = 1024

// projectionCacheBytes bounds the client-side cache per Redis connection:
// about 100,000 projections of a token with a few grants.
const projectionCacheBytes = 32 << 20

func changeKey(tokenID int64) string { return leaseKeyPrefix + strconv.FormatInt(tokenID, 10) + "}:v" }

// parseChangeKey returns the token ID of a change counter key.
func parseChangeKey(k string) (int64, bool) {
	if !strings.HasPrefix(k, leaseKeyPrefix) || !strings.HasSuffix(k, "}:v") {
		return 0, false
	}
	id, err := strconv.ParseInt(k[len(leaseKeyPrefix):len(k)-len("}:v")], 10, 64)
	return id, err == nil
}

// OpenRights connects to Redis with client-side caching enabled.
func OpenRights(cfg RightsConfig) (*Rights, error) {
	if len(cfg.Addrs) == 0 || cfg.OnChange == nil || cfg.OnReset == nil {
		return nil, errors.New("cluster: OpenRights: Addrs, OnChange and OnReset are required")
	}
	if cfg.WatchTTL <= 0 {
		cfg.WatchTTL = time.Hour
	}
	if cfg.ResetWindow <= 0 {
		cfg.ResetWindow = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Rights{cfg: cfg, events: make(chan rightsEvent, rightsQueue), done: make(chan struct{}),
		watched: map[int64]struct{}{}, projWatched: map[[32]byte]struct{}{}}
	reads, err := newProjectionReads(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("cluster: projection metrics: %w", err)
	}
	r.reads = reads
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:     cfg.Addrs,
		OnInvalidations: r.onInvalidations,
		// The local cache holds every projection this node read, found or
		// not (a connect with a secret nobody issued reads one too), so it
		// is bounded: LRU past this many bytes per Redis connection. A
		// projection evicted is read from Redis again; nothing is lost.
		CacheSizeEachConn: projectionCacheBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: connecting to Redis: %w", err)
	}
	r.c = c
	if cfg.Registerer != nil {
		m, err := newRedisMetrics(cfg.Registerer)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("cluster: Redis metrics: %w", err)
		}
		r.c = m.wrap(c)
	}
	r.wg.Add(1)
	go r.dispatch()
	return r, nil
}

// Client is the underlying Redis client, for Leases and Registry.
func (r *Rights) Client() rueidis.Client { return r.c }

// onInvalidations runs on rueidis' reading goroutine and must not block:
// it only parses keys and queues an event. A full queue degrades to a
// reset, which re-validates everything rather than losing a change.
func (r *Rights) onInvalidations(msgs []rueidis.RedisMessage) {
	ev := rightsEvent{reset: msgs == nil}
	for i := range msgs {
		k, err := msgs[i].ToString()
		if err != nil {
			continue
		}
		if id, ok := parseChangeKey(k); ok {
			ev.ids = append(ev.ids, id)
		} else if r.cfg.OnProjection != nil {
			if h, ok := parseProjectionKey(k); ok {
				ev.hashes = append(ev.hashes, h)
			}
		}
	}
	if !ev.reset && len(ev.ids) == 0 && len(ev.hashes) == 0 {
		return
	}
	select {
	case r.events <- ev:
	default:
		// The queue is full, so the dispatcher is busy and checks this
		// flag before its next event.
		r.overflow.Store(true)
	}
}

// resets coalesces reset requests on the dispatcher goroutine (no lock:
// only the dispatcher touches it).
type resets struct {
	window  time.Duration
	last    time.Time        // end of the last run; zero before the first
	timer   *time.Timer      // non-nil while a run is scheduled
	fire    <-chan time.Time // timer.C, nil while no run is scheduled
	merged  int              // requests the scheduled run stands for
	failing bool             // the last run could not re-arm everything
}

func (rs *resets) schedule(d time.Duration) {
	rs.timer = time.NewTimer(d)
	rs.fire = rs.timer.C
}

func (rs *resets) stop() {
	if rs.timer != nil {
		rs.timer.Stop()
	}
}

func (r *Rights) dispatch() {
	defer r.wg.Done()
	rs := &resets{window: r.cfg.ResetWindow}
	defer rs.stop()
	for {
		if r.overflow.Swap(false) {
			r.cfg.Logger.Warn("rights change queue overflowed; re-validating every cached token")
			r.requestReset(rs)
			continue
		}
		select {
		case <-r.done:
			return
		case <-rs.fire:
			rs.timer, rs.fire = nil, nil
			r.runReset(rs)
		case ev := <-r.events:
			select {
			case <-r.done: // closing: the client's own nil invalidations
				return
			default:
			}
			if ev.reset {
				r.requestReset(rs)
				continue
			}
			if len(ev.ids) > 0 {
				ids := dedupIDs(ev.ids)
				r.rearm(ids)
				r.cfg.OnChange(ids)
			}
			if len(ev.hashes) > 0 {
				// Not re-armed here: OnProjection's own read does it.
				if hashes := r.watchedProjections(dedupHashes(ev.hashes)); len(hashes) > 0 {
					r.cfg.OnProjection(hashes)
				}
			}
		}
	}
}

// requestReset runs a reset now, unless one ran less than the window ago
// or one is already scheduled: then the request joins the scheduled run at
// the end of the window. A request that arrives while a run is under way
// is queued behind it and so schedules one more run: none is lost.
func (r *Rights) requestReset(rs *resets) {
	rs.merged++
	if rs.fire != nil {
		return
	}
	if rs.last.IsZero() || time.Since(rs.last) >= rs.window {
		r.runReset(rs)
		return
	}
	rs.schedule(rs.window - time.Since(rs.last))
}

// runReset re-arms every watched key, then calls OnReset. When re-arming
// failed (Redis unreachable), it is retried every window; OnReset runs
// after the first failed attempt (re-validate what can be) and again once
// re-arming succeeds, but not after every failed retry in between.
func (r *Rights) runReset(rs *resets) {
	log := r.cfg.Logger
	if !rs.failing {
		log.Warn("rights invalidations may have been lost; re-validating every cached token", "resets", rs.merged)
	}
	rs.merged = 0
	err := r.rearmAll()
	if err == nil || !rs.failing {
		r.cfg.OnReset()
	}
	switch {
	case err != nil && !rs.failing:
		log.Warn("re-arming watched rights keys failed; retrying", "err", err, "every", rs.window)
	case err != nil:
		log.Debug("re-arming watched rights keys failed again", "err", err)
	case rs.failing:
		log.Info("re-armed watched rights keys after failures; re-validated every cached token")
	}
	rs.failing = err != nil
	rs.last = time.Now()
	if err != nil && rs.fire == nil {
		rs.merged++
		rs.schedule(rs.window)
	}
}

// rearm watches ids again (Redis stops tracking a key once it has sent its
// invalidation), before OnChange reads the store.
func (r *Rights) rearm(ids []int64) {
	r.mu.Lock()
	keys := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, ok := r.watched[id]; ok {
			keys = append(keys, changeKey(id))
		}
	}
	r.mu.Unlock()
	if err := r.armKeys(keys); err != nil {
		r.cfg.Logger.Warn("re-watching tokens failed", "err", err)
	}
}

// rearmAll re-arms every watched counter and projection key in pipelined
// batches.
func (r *Rights) rearmAll() error {
	r.mu.Lock()
	keys := make([]string, 0, len(r.watched)+len(r.projWatched))
	for id := range r.watched {
		keys = append(keys, changeKey(id))
	}
	for h := range r.projWatched {
		keys = append(keys, projectionKey(h))
	}
	r.mu.Unlock()
	return r.armKeys(keys)
}

// armKeys reads keys through the client-side cache, so Redis tracks them
// for this node: a key still cached locally costs nothing (its connection
// still tracks it), the rest one pipelined round trip per node and chunk.
func (r *Rights) armKeys(keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for start := 0; start < len(keys); start += execChunk {
		chunk := keys[start:min(start+execChunk, len(keys))]
		cmds := make([]rueidis.CacheableTTL, len(chunk))
		for i, k := range chunk {
			cmds[i] = rueidis.CT(r.c.B().Get().Key(k).Cache(), r.cfg.WatchTTL)
		}
		for i, res := range r.c.DoMultiCache(ctx, cmds...) {
			if err := res.Error(); err != nil && !rueidis.IsRedisNil(err) {
				errs = append(errs, fmt.Errorf("%s: %w", chunk[i], err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d keys: %w", len(errs), len(keys), errs[0])
	}
	return nil
}

func (r *Rights) arm(ctx context.Context, id int64) error {
	err := r.c.DoCache(ctx, r.c.B().Get().Key(changeKey(id)).Cache(), r.cfg.WatchTTL).Error()
	if err != nil && !rueidis.IsRedisNil(err) {
		return err
	}
	return nil
}

// Watch makes this node hear every later change of tokenID. Call it before
// reading the token from the store of record.
func (r *Rights) Watch(ctx context.Context, tokenID int64) error {
	if err := r.arm(ctx, tokenID); err != nil {
		return fmt.Errorf("cluster: watching token %d: %w", tokenID, err)
	}
	r.mu.Lock()
	r.watched[tokenID] = struct{}{}
	r.mu.Unlock()
	return nil
}

// Unwatch stops re-arming tokenID (the node no longer caches it). Redis
// stops tracking it after its next change.
func (r *Rights) Unwatch(tokenID int64) {
	r.mu.Lock()
	delete(r.watched, tokenID)
	r.mu.Unlock()
}

// Changed announces that the rights of ids changed in the store of record:
// every node watching one of them hears it. Call it after the store write
// has committed. One INCR per token, pipelined.
func (r *Rights) Changed(ctx context.Context, ids ...int64) error {
	if len(ids) == 0 {
		return nil
	}
	cmds := make(rueidis.Commands, 0, len(ids))
	for _, id := range ids {
		cmds = append(cmds, r.c.B().Incr().Key(changeKey(id)).Build())
	}
	var errs []error
	for i, res := range r.c.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			errs = append(errs, fmt.Errorf("token %d: %w", ids[i], err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: announcing a rights change: %w", err)
	}
	return nil
}

// Close stops the dispatcher and closes the Redis client.
func (r *Rights) Close() {
	close(r.done)
	r.c.Close()
	r.wg.Wait()
}

func dedupIDs(ids []int64) []int64 {
	out := ids[:0]
	seen := make(map[int64]struct{}, len(ids))
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

func dedupHashes(hs [][32]byte) [][32]byte {
	out := hs[:0]
	seen := make(map[[32]byte]struct{}, len(hs))
	for _, h := range hs {
		if _, ok := seen[h]; !ok {
			seen[h] = struct{}{}
			out = append(out, h)
		}
	}
	return out
}
