package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/admin"
	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/cluster"
)

// clusterNode is what a node runs in cluster mode (--redis): the rights
// bus, connection leases, the node registry and cross-node routing, all on
// one Redis client, plus the heartbeat loop that keeps leases and the
// registry entry alive.
//
// The broker is created after these (it takes them as hooks) and set with
// attach before any callback can reach it: Rights and Routes only call back
// for tokens watched and routes added by that broker.
type clusterNode struct {
	id        string
	log       *slog.Logger
	rights    *cluster.Rights
	projected *projectedRights // the broker's RightsSource
	leases    *cluster.Leases
	registry  *cluster.Registry
	routes    *cluster.Routes
	barrier   *cluster.Barrier
	writeLock *writeLock // admin writes of every node, serialized in Postgres
	metrics   *clusterMetrics
	wait      time.Duration // --revocation-wait
	reconcile time.Duration // --reconcile-interval
	ttl       time.Duration
	started   time.Time

	// Redis link health: lastOK is when Redis last answered (unix ns).
	// Past staleness without an answer the node can no longer hear
	// revocations, so it admits nobody (and, with closeOnLoss, closes
	// everyone) until Redis answers again.
	staleness   time.Duration
	closeOnLoss bool
	lastOK      atomic.Int64
	stale       atomic.Bool

	mu     sync.Mutex
	broker *broker.Broker
	info   cluster.NodeInfo
	seen   map[string]bool // live nodes at the last heartbeat, to purge the routes of those gone

	stop      chan struct{}
	done      chan struct{}
	probeDone chan struct{}
}

// available reports whether Redis answered within the staleness bound:
// broker admission asks it before every connect.
func (c *clusterNode) available() bool {
	return time.Now().UnixNano()-c.lastOK.Load() <= int64(c.staleness)
}

// probe pings Redis several times per staleness period, so a lost link is
// noticed within the bound, and handles the transitions.
func (c *clusterNode) probe() {
	defer close(c.probeDone)
	every := min(c.staleness/5, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	var lastPoll time.Time
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		client := c.rights.Client()
		ctx, cancel := context.WithTimeout(context.Background(), every)
		err := client.Do(ctx, client.B().Ping().Build()).Error()
		cancel()
		if err == nil {
			c.lastOK.Store(time.Now().UnixNano())
			if c.stale.CompareAndSwap(true, false) {
				c.log.Warn("Redis answers again; re-validating every cached token")
				c.onReset()
			}
			continue
		}
		if c.available() {
			continue
		}
		if c.stale.CompareAndSwap(false, true) {
			c.log.Error("Redis unreachable past --revocation-staleness: refusing new connections", "staleness", c.staleness, "err", err)
			if b := c.currentBroker(); b != nil && c.closeOnLoss {
				n := b.CloseAll(broker.CauseTryAgain, "node lost its cluster link, reconnect")
				c.log.Error("closed every session (--on-redis-loss=close)", "sessions", n)
			}
		}
		// Deaf to the rights bus, the node polls the store of record
		// instead, once per staleness period: a revoke written while Redis
		// is away is enforced here within the bound even though no signal
		// can reach this node.
		if time.Since(lastPoll) >= c.staleness {
			lastPoll = time.Now()
			c.pollStore()
		}
	}
}

// pollStore re-reads every cached token from the store and enforces it,
// bounded by one staleness period (a store that does not answer leaves the
// sessions as they are; the next poll tries again).
func (c *clusterNode) pollStore() {
	b := c.currentBroker()
	if b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.staleness)
	defer cancel()
	if _, err := c.projected.reconcile(ctx, b); err != nil {
		c.log.Warn("re-reading cached tokens while Redis is unreachable failed", "err", err)
	}
}

func openCluster(cfg Config, store acl.Store, log *slog.Logger, reg prometheus.Registerer) (*clusterNode, error) {
	c := &clusterNode{id: cfg.NodeID, log: log, ttl: cfg.LeaseTTL, started: time.Now().UTC(),
		staleness: cfg.Staleness, closeOnLoss: cfg.OnRedisLoss == "close", wait: cfg.RevocationWait, reconcile: cfg.Reconcile,
		seen: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{}),
		probeDone: make(chan struct{})}
	c.lastOK.Store(time.Now().UnixNano())
	if c.id == "" {
		c.id = cluster.NewNodeID()
	}
	var err error
	if c.writeLock, err = openWriteLock(cfg.Store); err != nil {
		return nil, err
	}
	c.rights, err = cluster.OpenRights(cluster.RightsConfig{
		Addrs:        redisAddrs(cfg.Redis),
		OnChange:     c.onChange,
		OnProjection: c.onProjection,
		OnReset:      c.onReset,
		Logger:       log,
		Registerer:   reg,
	})
	if err != nil {
		c.writeLock.close()
		return nil, err
	}
	if c.projected, err = newProjectedRights(c.rights, store, c.available, log, reg); err != nil {
		c.rights.Close()
		c.writeLock.close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := c.rights.Client()
	c.leases = cluster.NewLeases(client, c.id, cfg.LeaseTTL)
	// A node started again under the same --node-id drops what its previous
	// life held; before serving, as Reset requires.
	if err := c.leases.Reset(ctx); err != nil {
		c.rights.Close()
		c.writeLock.close()
		return nil, err
	}
	c.registry = cluster.NewRegistry(client, cfg.LeaseTTL)
	batch := int(cfg.ForwardBatch)
	if batch == 0 {
		batch = -1 // RoutesConfig: negative = unbatched frames
	}
	c.routes, err = cluster.OpenRoutes(ctx, cluster.RoutesConfig{
		Client:         client,
		NodeID:         c.id,
		Deliver:        c.deliver,
		Logger:         log,
		BatchBytes:     batch,
		PeerQueueBytes: int(cfg.ForwardQueue),
	})
	if err != nil {
		c.rights.Close()
		c.writeLock.close()
		return nil, err
	}
	c.barrier, err = cluster.OpenBarrier(ctx, cluster.BarrierConfig{
		Client: client,
		NodeID: c.id,
		ApplyVersions: func(ctx context.Context, tokens []cluster.TokenVersion) error {
			if b := c.currentBroker(); b != nil {
				tvs := make([]broker.TokenVersion, len(tokens))
				for i, t := range tokens {
					tvs[i] = broker.TokenVersion{ID: t.ID, Version: t.Version}
					if t.Version == 0 {
						// Announced without a version: by a node of the
						// previous version, which wrote the store only.
						tvs[i].Version = broker.ReadStore
					}
				}
				return b.RefreshVersions(ctx, tvs)
			}
			return nil
		},
		Logger: log,
	})
	if err != nil {
		c.routes.Close()
		c.rights.Close()
		c.writeLock.close()
		return nil, err
	}
	return c, nil
}

// attach hands the broker to the callbacks and starts heartbeating.
func (c *clusterNode) attach(b *broker.Broker, info cluster.NodeInfo) error {
	c.mu.Lock()
	c.broker = b
	info.ID, info.StartedAt = c.id, c.started
	c.info = info
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.heartbeat(ctx); err != nil {
		return err
	}
	go c.loop()
	go c.probe()
	go c.rebuildProjection("start-up")
	return nil
}

// projectionBuiltKey marks a Redis whose rights projection was rebuilt from
// the store of record: a Redis that lost its data (restarted empty,
// flushed) has no marker, and the next node to start or to re-validate
// after the loss rebuilds it.
const projectionBuiltKey = "gc:r:built"

// rebuildProjection rebuilds the rights projection in the background when
// Redis has no marker of a previous rebuild (see projectedRights.rebuild).
func (c *clusterNode) rebuildProjection(why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	client := c.rights.Client()
	n, err := client.Do(ctx, client.B().Exists().Key(projectionBuiltKey).Build()).AsInt64()
	if err != nil || n > 0 {
		return
	}
	start := time.Now()
	written, err := c.projected.rebuild(ctx)
	if err != nil {
		c.log.Warn("rebuilding the rights projection in Redis failed; tokens are read from the store of record until their first read backfills them", "why", why, "written", written, "err", err)
		return
	}
	if err := client.Do(ctx, client.B().Set().Key(projectionBuiltKey).Value(c.id+" "+time.Now().UTC().Format(time.RFC3339)).Build()).Error(); err != nil {
		c.log.Warn("marking the rights projection rebuilt failed", "err", err)
	}
	c.log.Info("rights projection rebuilt from the store of record", "why", why, "tokens_written", written, "took", time.Since(start).Round(time.Millisecond))
}

func (c *clusterNode) currentBroker() *broker.Broker {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broker
}

func (c *clusterNode) onChange(ids []int64) {
	if b := c.currentBroker(); b != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.RefreshTokens(ctx, ids...); err != nil {
			c.log.Error("enforcing a rights change from another node failed", "err", err)
		}
	}
}

// onProjection enforces the tokens whose projection another node (or this
// one) rewrote: the cluster's tracking invalidation.
func (c *clusterNode) onProjection(hashes [][32]byte) {
	b := c.currentBroker()
	if b == nil {
		for _, h := range hashes {
			c.rights.ForgetProjection(h)
		}
		return
	}
	hs := make([]acl.Hash, len(hashes))
	for i, h := range hashes {
		hs[i] = h
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.RefreshHashes(ctx, hs); err != nil {
		c.log.Error("enforcing a rights change heard from Redis failed", "err", err)
	}
}

// onReset runs when rights changes may have been missed (the link to Redis
// dropped, Redis was flushed): every cached token is compared with the
// store of record by version, and the changed ones enforced; the
// projection is rebuilt if Redis lost it.
func (c *clusterNode) onReset() {
	if b := c.currentBroker(); b != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if n, err := c.projected.reconcile(ctx, b); err != nil {
			c.log.Error("re-validating cached tokens failed", "err", err)
		} else if n > 0 {
			c.log.Info("re-validation found tokens changed without this node hearing it", "tokens", n)
		}
		go c.rebuildProjection("re-validation")
	}
}

func (c *clusterNode) deliver(topic string, frame []byte) {
	if b := c.currentBroker(); b != nil {
		b.DeliverRemote(topic, frame)
	}
}

func (c *clusterNode) loop() {
	defer close(c.done)
	t := time.NewTicker(c.ttl / 3)
	defer t.Stop()
	// The reconciler: the store of record is the truth and Redis carries
	// its projection; if a change was lost on the way without the link
	// dropping (which already triggers a re-validation) - a writer that
	// died between its commit and its Redis write, say - comparing every
	// cached token's version with the store's on a timer bounds how long a
	// stale right can survive, at one bulk query per thousand tokens.
	r := time.NewTicker(c.reconcile)
	defer r.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.ttl/3)
			if err := c.heartbeat(ctx); err != nil {
				c.log.Warn("cluster heartbeat failed", "err", err)
			}
			cancel()
		case <-r.C:
			c.onReset()
		}
	}
}

// heartbeat renews this node's leases and registry entry, and purges the
// routes of nodes that left the registry since the last beat.
func (c *clusterNode) heartbeat(ctx context.Context) error {
	c.mu.Lock()
	info := c.info
	b := c.broker
	c.mu.Unlock()
	if b != nil {
		info.Connections = b.SessionCount()
	}
	errs := []error{c.leases.Heartbeat(ctx), c.registry.Heartbeat(ctx, info)}
	nodes, err := c.registry.Nodes(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	live := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		live[n.ID] = true
	}
	c.mu.Lock()
	var gone []string
	for id := range c.seen {
		if !live[id] {
			gone = append(gone, id)
		}
	}
	c.seen = live
	c.mu.Unlock()
	for _, id := range gone {
		if err := c.routes.Purge(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("purging the routes of node %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// peers lists the live nodes' admin addresses, for cluster-wide
// connection listing and kicks.
func (c *clusterNode) peers(ctx context.Context) ([]admin.Peer, error) {
	nodes, err := c.registry.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]admin.Peer, 0, len(nodes))
	for _, n := range nodes {
		if n.AdminAddr != "" {
			out = append(out, admin.Peer{ID: n.ID, AdminAddr: n.AdminAddr})
		}
	}
	return out, nil
}

// nodes lists the live nodes for the admin API.
func (c *clusterNode) nodes(ctx context.Context) (any, error) {
	return c.registry.Nodes(ctx)
}

// close leaves the cluster: after the broker's sessions are closed, it
// stops heartbeating, withdraws this node's routes and registry entry, and
// closes the Redis client. Leases still held expire with the TTL.
func (c *clusterNode) close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	c.mu.Lock()
	attached := c.broker != nil
	c.mu.Unlock()
	if attached {
		<-c.done
		<-c.probeDone
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.routes.Purge(ctx, c.id); err != nil {
		c.log.Warn("withdrawing this node's routes failed", "err", err)
	}
	if err := c.registry.Leave(ctx, c.id); err != nil {
		c.log.Warn("leaving the node registry failed", "err", err)
	}
	c.barrier.Close()
	c.routes.Close()
	c.rights.Close()
	c.writeLock.close()
}

// clusterEnforcer is the admin API's view of a cluster node: a rights
// change is enforced here, announced on the rights bus (tracking
// invalidation: heard by nodes caching the token, and by any node after it
// reconnects), then broadcast through the revocation barrier, which waits
// up to --revocation-wait for every live node to confirm it has applied it.
type clusterEnforcer struct {
	*broker.Broker
	node *clusterNode
}

// RefreshGrant shadows broker.Broker's single-node shortcut: in a cluster a
// grant change must be announced and confirmed like any other, so it is a
// full RefreshTokens of the token here.
func (e clusterEnforcer) RefreshGrant(ctx context.Context, tokenID, _ int64) error {
	return e.RefreshTokens(ctx, tokenID)
}

// ProjectTokens writes new tokens' rights to the projection
// (admin.Projector): their first connect on any node is then one Redis read.
func (e clusterEnforcer) ProjectTokens(ctx context.Context, ids ...int64) error {
	_, err := e.node.projected.project(ctx, e.Broker, ids)
	return err
}

// RetireSecret puts a tombstone over the projection of the secret a
// rotated or deleted token no longer accepts (admin.SecretRetirer).
func (e clusterEnforcer) RetireSecret(ctx context.Context, prev acl.Token, reason acl.GoneReason) error {
	return e.node.projected.retire(ctx, prev, reason)
}

// RefreshTokens writes the tokens' rights, as just committed, to the
// projection in Redis (which invalidates every node's cached copy: the
// nodes holding the token start enforcing from there), then enforces them
// here while the barrier asks every live node to confirm that version, and
// waits for both. The change counters, which only nodes of the previous
// version watch, are bumped only while such a node is live.
//
// The local enforcement and the barrier run at once because nothing orders
// them: a node's confirmation says it enforces the version, whoever told it
// first, and this node's own confirmation (it hears its own broadcast) waits
// on the same refreshMu as the local enforcement. Run one after the other,
// the other nodes heard the barrier only after this node had queued its own
// closes (on the shared cores of a small machine, after it wrote them).
func (e clusterEnforcer) RefreshTokens(ctx context.Context, ids ...int64) error {
	versions, err := e.node.projected.project(ctx, e.Broker, ids)
	if err != nil {
		return err
	}
	nodes, err := e.node.registry.Nodes(ctx)
	if err != nil {
		return err
	}
	expect := make([]string, 0, len(nodes))
	versioned := true
	for _, n := range nodes {
		expect = append(expect, n.ID)
		versioned = versioned && n.HasFeature(cluster.FeatureBarrierVersions)
	}
	if !versioned {
		if err := e.node.rights.Changed(ctx, ids...); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, e.node.wait)
	defer cancel()
	start := time.Now()
	// Versions only once every live node understands them: a node of the
	// previous version would drop the message and never confirm (it hears
	// the change through its change counter, and reads the store).
	tvs := make([]cluster.TokenVersion, len(versions))
	for i, v := range versions {
		tvs[i] = cluster.TokenVersion{ID: v.ID}
		if versioned {
			tvs[i].Version = v.Version
		}
	}
	type barrierResult struct {
		left []string
		err  error
	}
	done := make(chan barrierResult, 1)
	go func() {
		left, err := e.node.barrier.EnforceVersions(wctx, tvs, expect)
		done <- barrierResult{left, err}
	}()
	localErr := e.Broker.RefreshVersions(ctx, versions)
	br := <-done
	if localErr != nil {
		return localErr
	}
	if br.err != nil {
		return br.err
	}
	e.node.metrics.observeBarrier(start, len(br.left) > 0)
	if len(br.left) > 0 {
		return &admin.PendingError{Nodes: br.left}
	}
	return nil
}
