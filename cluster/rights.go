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

// Rights is the cluster's rights-change bus, built on Redis client-side
// caching with tracking invalidation.
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
// When the link to Redis drops, or Redis is flushed, rueidis reports a nil
// invalidation: invalidations may have been lost, so Rights calls OnReset and
// the node must re-validate every token it caches.
//
// OnChange and OnReset run on one goroutine owned by Rights, in the order
// events arrived; Watch and Changed may be called from any goroutine.
type Rights struct {
	c      rueidis.Client
	cfg    RightsConfig
	events chan rightsEvent
	done   chan struct{}
	wg     sync.WaitGroup
	// overflow is set when an event could not be queued: the dispatcher
	// then re-validates everything instead of losing a change.
	overflow atomic.Bool

	mu      sync.Mutex
	watched map[int64]struct{} // re-armed after each invalidation
}

// RightsConfig configures Rights.
type RightsConfig struct {
	// Addrs are the Redis addresses: one for a standalone Redis, several
	// (any masters) for a Redis Cluster.
	Addrs []string
	// OnChange receives IDs of tokens whose rights changed (deduplicated
	// within a batch). Required.
	OnChange func(ids []int64)
	// OnReset is called when invalidations may have been lost. Required.
	OnReset func()
	// WatchTTL bounds how long a watched counter stays in the local cache;
	// Redis keeps tracking the key after that. Default 1h.
	WatchTTL time.Duration
	Logger   *slog.Logger
	// Registerer, when set, receives gatecast_redis_request_seconds and
	// gatecast_redis_errors_total for every call made through Client().
	Registerer prometheus.Registerer
}

type rightsEvent struct {
	ids   []int64
	reset bool
}

const rightsQueue = 1024

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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Rights{cfg: cfg, events: make(chan rightsEvent, rightsQueue), done: make(chan struct{}), watched: map[int64]struct{}{}}
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:     cfg.Addrs,
		OnInvalidations: r.onInvalidations,
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
		}
	}
	if !ev.reset && len(ev.ids) == 0 {
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

func (r *Rights) dispatch() {
	defer r.wg.Done()
	for {
		if r.overflow.Swap(false) {
			r.cfg.Logger.Warn("rights change queue overflowed; re-validating every cached token")
			r.rearmAll()
			r.cfg.OnReset()
			continue
		}
		select {
		case <-r.done:
			return
		case ev := <-r.events:
			if ev.reset {
				r.cfg.Logger.Warn("rights invalidations may have been lost; re-validating every cached token")
				r.rearmAll()
				r.cfg.OnReset()
				continue
			}
			ids := dedupIDs(ev.ids)
			r.rearm(ids)
			r.cfg.OnChange(ids)
		}
	}
}

// rearm watches ids again (Redis stops tracking a key once it has sent its
// invalidation), before OnChange reads the store.
func (r *Rights) rearm(ids []int64) {
	r.mu.Lock()
	var again []int64
	for _, id := range ids {
		if _, ok := r.watched[id]; ok {
			again = append(again, id)
		}
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, id := range again {
		if err := r.arm(ctx, id); err != nil {
			r.cfg.Logger.Warn("re-watching a token failed", "token_id", id, "err", err)
		}
	}
}

func (r *Rights) rearmAll() {
	r.mu.Lock()
	ids := make([]int64, 0, len(r.watched))
	for id := range r.watched {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	r.rearm(ids)
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
