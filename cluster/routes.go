package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/rueidis"

	"github.com/gatecast/gatecast/topic"
)

// Route table keys share the hash tag {routes}: one slot, so every change
// is one atomic script that also announces itself, and a snapshot of the
// whole table is one consistent read.
//
//	gc:{routes}:nodes     SET     IDs of nodes that have routes
//	gc:{routes}:f:<node>  SET     the filters node subscribes to
//	gc:{routes}:v         STRING  change counter, bumped by every change
//	gc:{routes}:c         sharded pub/sub channel of change notes
//
// A node's messages travel on its own sharded channel gc:n:<node>.
const (
	routesNodesKey   = "gc:{routes}:nodes"
	routesFilterPfx  = "gc:{routes}:f:"
	routesVersionKey = "gc:{routes}:v"
	routesChannel    = "gc:{routes}:c"
	nodeChannelPfx   = "gc:n:"

	// routeShards spreads the local refcount table over independent locks
	// so concurrent subscribes of different filters never meet on one.
	routeShards = 64
	// defaultAckTimeout bounds how long Add waits for the other nodes.
	defaultAckTimeout = 2 * time.Second
)

func filterSetKey(node string) string { return routesFilterPfx + node }
func nodeChannel(node string) string  { return nodeChannelPfx + node }

// A change note is "<version> <op> <len(node)> <node><filter>", built by
// the scripts below; op is '+' (route added), '-' (removed) or 'P' (every
// route of the node purged, empty filter).
const (
	routeAddLua = `
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
local v = redis.call('INCR', KEYS[3])
local n = redis.call('SPUBLISH', KEYS[4], string.format('%d + %d ', v, #ARGV[1]) .. ARGV[1] .. ARGV[2])
return {v, n}
`
	routeRemoveLua = `
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('SCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[1], ARGV[1]) end
local v = redis.call('INCR', KEYS[3])
local n = redis.call('SPUBLISH', KEYS[4], string.format('%d - %d ', v, #ARGV[1]) .. ARGV[1] .. ARGV[2])
return {v, n}
`
	routePurgeLua = `
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
local v = redis.call('INCR', KEYS[3])
local n = redis.call('SPUBLISH', KEYS[4], string.format('%d P %d ', v, #ARGV[1]) .. ARGV[1])
return {v, n}
`
	// routeSnapshotLua: KEYS nodes, version; ARGV filter-set key prefix.
	// Returns {version, node, {filters}, node, {filters}, ...}. The filter
	// sets are not in KEYS (their names are only known here) but share the
	// {routes} slot, so this stays a one-slot script on a Redis Cluster.
	routeSnapshotLua = `
local out = {redis.call('GET', KEYS[2]) or '0'}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = n
  out[#out + 1] = redis.call('SMEMBERS', ARGV[1] .. n)
end
return out
`
)

var (
	routeAddScript      = rueidis.NewLuaScriptRetryable(routeAddLua)
	routeRemoveScript   = rueidis.NewLuaScriptRetryable(routeRemoveLua)
	routePurgeScript    = rueidis.NewLuaScriptRetryable(routePurgeLua)
	routeSnapshotScript = rueidis.NewLuaScriptReadOnly(routeSnapshotLua)
)

// ErrUnconfirmed is returned (wrapped) by Add when not every node that
// heard the new route confirmed it within RoutesConfig.AckTimeout. The
// route was rolled back: nothing is counted.
var ErrUnconfirmed = errors.New("cluster: route not confirmed by every node")

// Routes is cross-node message routing: each node publishes the filters
// its local subscribers use (its route table), keeps the route tables of
// the other nodes in an in-memory topic.Index, and forwards a message only
// to the nodes with a matching filter, once per node, through a bounded
// queue per node.
//
// Guarantees:
//   - Visibility: Add returns nil only after the route is in Redis and
//     every node subscribed to the change channel at that moment (SPUBLISH
//     reports how many) has applied it to its index and confirmed. A
//     Forward that starts on any such node after Add returned routes to
//     this node. A node that joins later loads the table on start (Open
//     returns after that).
//   - Once per node, at most: a message goes into each matching node's
//     queue once, whatever the number of its matching filters, and never
//     to the forwarding node itself (its own routes are not in its index).
//     It is lost, never duplicated, when that queue is full (counted:
//     QueueDropped), when its SPUBLISH fails (counted: SendErrors, Lost)
//     or while a node's link to Redis is down (Redis pub/sub is at most
//     once).
//   - Order: messages forwarded to one node arrive in the order their
//     Forward calls took that node's queue, so one goroutine's messages in
//     the order it forwarded them (one queue and one sender per node, one
//     SPUBLISH at a time, one subscription per node).
//   - Forward never waits on Redis, whether Redis is slow, down or
//     hung; backpressure is the caller's choice, through Backlog.
//
// Goroutines (all owned by Routes, stopped by Close):
//   - the route goroutine applies route changes, in version order, and
//     confirms them; it starts a peer's sender when the peer enters the
//     route table and stops it when the peer leaves (purged, or absent
//     from a reloaded table);
//   - two receive goroutines (rueidis' pub/sub readers) hold the
//     subscriptions to route changes and to this node's channel; the
//     latter calls Deliver, one call at a time, in arrival order, once
//     per message of a batch frame;
//   - one sender per peer waits for its queue to become non-empty, takes
//     the whole queue (swapping buffers under the queue's lock) and sends
//     it in SPUBLISH calls of up to BatchBytes each, one at a time, each
//     with SendTimeout; a failed one is counted and its messages dropped,
//     and the sender goes on;
//   - repair, when needed, rewrites this node's routes after a reload.
//
// Callers: Add, Remove, Forward, Backlog, Purge, Stats and PeerStats may
// be called from any goroutine. Forward takes no lock for the match and
// one short lock per matching peer (its queue).
//
// Buffers: each peer has two byte buffers, reused: Forward appends to the
// pending one (payload is copied; the caller keeps its slice), the sender
// owns the other while it sends it. The frame of each SPUBLISH is built in
// place in the sender's buffer and passed to rueidis as a string aliasing
// it; the buffer is reused only after every SPUBLISH cut from it
// returned, and abandoned to the GC when one was cut short by its
// timeout or Close (rueidis may still be writing it). Buffers grown past
// 1 MiB by a backlog are kept while it lasts and given back to the GC
// when the queue runs empty. Queued bytes (pending plus in flight)
// are bounded by PeerQueueBytes per peer. On the receiving side, Deliver's
// payload aliases the Redis message.
type Routes struct {
	c        rueidis.Client
	cfg      RoutesConfig
	self     string
	selfChan string
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// remote is the index of other nodes' routes (subscriber: the node).
	// Replaced whole on a resync, updated in place by single changes; both
	// only on the route goroutine.
	remote  atomic.Pointer[topic.Index[*peer]]
	scratch sync.Pool // *fwdScratch

	// Owned by the route goroutine.
	peers   map[string]*peer
	applied uint64
	synced  bool

	// Change notes and resync markers, queued by the receive goroutine
	// and the subscription hook (which must not block), drained by the
	// route goroutine. Unbounded on purpose: dropping a note would lose a
	// confirmation.
	qmu   sync.Mutex
	queue []routeEvent
	qsig  chan struct{}

	// Confirmations of this node's changes: acker -> highest version it
	// applied. ackSig is closed and replaced whenever acked grows.
	amu    sync.Mutex
	acked  map[string]uint64
	ackSig chan struct{}

	local  [routeShards]routeShard
	hseed  maphash.Seed
	ready  chan struct{} // closed after the first sync
	nodeOK chan struct{} // closed once the node channel is subscribed
	once   [2]sync.Once

	repairing atomic.Bool

	// Forwarding (forward.go). Limits are fixed at Open.
	hardLimit, softLimit, batchBytes, initCap int
	// senders: peers with a running sender goroutine (for Close and
	// Stats); stopping refuses new ones. Guarded by smu.
	smu      sync.Mutex
	senders  map[*peer]struct{}
	stopping bool
	swg      sync.WaitGroup
	closing  chan struct{} // closed by Close: senders flush and exit
	closeMu  sync.Once
	// Backpressure: overN peers are over their soft limit; blch, made
	// on demand by Backlog, is closed when overN drops to 0. Guarded by
	// blmu (overN is also read without it).
	blmu  sync.Mutex
	overN atomic.Int32
	blch  chan struct{}

	sent, batches, queueDropped, sendErrors, lost atomic.Uint64
	delivered, dropped, unconfirmed, resyncs      atomic.Uint64
}

// RoutesConfig configures OpenRoutes.
type RoutesConfig struct {
	// Client is the Redis client (standalone or cluster, Redis >= 7 for
	// sharded pub/sub). Routes subscribes on it; it is not closed by Close.
	Client rueidis.Client
	// NodeID names this node; its messages arrive on gc:n:<NodeID>.
	NodeID string
	// Deliver receives each message forwarded to this node, once (each
	// message of a batch frame in turn). It runs on one goroutine, one
	// call at a time; it must not wait on Redis
	// (it runs on a pub/sub reader: hand the message to local queues).
	// payload aliases an immutable string: read it, keep it if needed,
	// never modify it.
	Deliver func(topic string, payload []byte)
	// AckTimeout bounds how long Add waits for the other nodes to confirm
	// a new route. Default 2s.
	AckTimeout time.Duration
	// PeerQueueBytes bounds the bytes of messages queued or in flight to
	// one other node (each message counts its topic, payload and a few
	// bytes of framing). Over half of it, Backlog reports backpressure;
	// at it, Forward drops the message for that node and counts it.
	// Default DefaultPeerQueueBytes (8 MiB).
	PeerQueueBytes int
	// BatchBytes bounds the messages one SPUBLISH carries (a message
	// larger than it goes alone). Default DefaultBatchBytes (64 KiB).
	// Negative: one message per SPUBLISH, always in the single-message
	// frame that nodes older than batch frames decode (for a rolling
	// upgrade from such a version).
	BatchBytes int
	// SendTimeout bounds one SPUBLISH of a peer's sender; past it the
	// messages are dropped and counted. Default DefaultSendTimeout (5s).
	SendTimeout time.Duration
	Logger      *slog.Logger

	// sendHook, when set (tests), runs on a peer's sender before each
	// SPUBLISH, with the peer's node ID.
	sendHook func(node string)
}

// RoutesStats are monotonic counters, for metrics, and two gauges
// (QueueBytes, Backlogged).
type RoutesStats struct {
	Sent         uint64 // messages sent to other nodes (one per node per Forward), SPUBLISH succeeded
	Batches      uint64 // successful SPUBLISH calls carrying messages (Sent/Batches: messages per call)
	QueueDropped uint64 // messages not forwarded to a node because its queue was full
	SendErrors   uint64 // failed SPUBLISH calls of the senders
	Lost         uint64 // messages in failed (or abandoned) SPUBLISH calls
	Delivered    uint64 // messages received and passed to Deliver
	Dropped      uint64 // undecodable frames received on the node channel
	Unconfirmed  uint64 // Add calls that timed out waiting for confirmations
	Resyncs      uint64 // full reloads of the route table
	QueueBytes   int64  // gauge: bytes queued or in flight to all other nodes
	Backlogged   int    // gauge: nodes whose queue is over its soft limit
}

// peer is another node with routes. The route fields belong to the route
// goroutine; the queue is shared by Forward (any goroutine, appends) and
// the peer's sender goroutine (drains).
type peer struct {
	id      string
	channel string
	filters map[string]struct{} // route goroutine only

	wake chan struct{} // cap 1: the queue went from empty to non-empty
	stop chan struct{} // closed when the peer leaves the route table

	mu     sync.Mutex
	buf    []byte // pending entries after one reserved byte; nil until used
	bytes  int    // pending + in flight, against the limits
	over   bool   // bytes >= soft limit (counted in Routes.overN)
	closed bool   // no more messages: the sender exited or is exiting

	queued     atomic.Int64 // mirror of bytes, for Stats
	backlogged atomic.Bool  // mirror of over, for PeerStats

	sent, batches, dropped, sendErrors, lost atomic.Uint64
	lastErrLog                               time.Time // sender only
}

type routeEvent struct {
	resync bool
	note   string
}

type routeShard struct {
	mu sync.Mutex
	m  map[string]*localRoute
}

// localRoute counts this node's subscribers of one filter. mu is held
// across the Redis write of a 0->1 or 1->0 transition so that concurrent
// Add and Remove of the same filter reach Redis in order.
type localRoute struct {
	mu   sync.Mutex
	n    int // local subscribers (guarded by mu)
	pins int // callers holding the entry (guarded by the shard's mu)
}

type fwdScratch struct {
	peers []*peer
}

// OpenRoutes subscribes to this node's channel and to route changes, loads
// the route table, and returns once all three are done (or ctx ends).
func OpenRoutes(ctx context.Context, cfg RoutesConfig) (*Routes, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("cluster: OpenRoutes: nil Redis client")
	case cfg.NodeID == "":
		return nil, errors.New("cluster: OpenRoutes: empty node ID")
	case cfg.Deliver == nil:
		return nil, errors.New("cluster: OpenRoutes: Deliver is required")
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = defaultAckTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PeerQueueBytes <= 0 {
		cfg.PeerQueueBytes = DefaultPeerQueueBytes
	}
	if cfg.BatchBytes == 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = DefaultSendTimeout
	}
	r := &Routes{
		c:        cfg.Client,
		cfg:      cfg,
		self:     cfg.NodeID,
		selfChan: nodeChannel(cfg.NodeID),
		peers:    map[string]*peer{},
		qsig:     make(chan struct{}, 1),
		acked:    map[string]uint64{},
		ackSig:   make(chan struct{}),
		hseed:    maphash.MakeSeed(),
		ready:    make(chan struct{}),
		nodeOK:   make(chan struct{}),

		hardLimit:  cfg.PeerQueueBytes,
		softLimit:  cfg.PeerQueueBytes / 2,
		batchBytes: cfg.BatchBytes,
		initCap:    min(DefaultBatchBytes, cfg.PeerQueueBytes+1),
		senders:    map[*peer]struct{}{},
		closing:    make(chan struct{}),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.remote.Store(topic.NewIndex[*peer]())
	r.scratch.New = func() any { return &fwdScratch{} }
	for i := range r.local {
		r.local[i].m = map[string]*localRoute{}
	}
	r.wg.Add(3)
	go r.routeLoop()
	go r.receiveLoop(routesChannel, r.onNote, func() { r.push(routeEvent{resync: true}) })
	go r.receiveLoop(r.selfChan, r.onFrame, func() { r.once[1].Do(func() { close(r.nodeOK) }) })
	for _, ch := range []chan struct{}{r.ready, r.nodeOK} {
		select {
		case <-ch:
		case <-ctx.Done():
			r.Close()
			return nil, fmt.Errorf("cluster: OpenRoutes: %w", ctx.Err())
		}
	}
	return r, nil
}

// Close stops forwarding and receiving. Messages already queued for other
// nodes are sent first, for at most 2 s; later Forwards send nothing. It
// does not remove this node's routes: a node leaving gracefully calls
// Purge(ctx, its own ID) first; a crashed node's routes are purged by
// whoever sees it leave the Registry. Idempotent.
func (r *Routes) Close() {
	r.closeMu.Do(func() {
		r.smu.Lock()
		r.stopping = true
		r.smu.Unlock()
		close(r.closing)
		flushed := make(chan struct{})
		go func() { r.swg.Wait(); close(flushed) }()
		t := time.NewTimer(closeFlushTimeout)
		select {
		case <-flushed:
		case <-t.C:
		}
		t.Stop()
		r.cancel()
		<-flushed
		r.wg.Wait()
	})
}

// NodeID returns this node's ID.
func (r *Routes) NodeID() string { return r.self }

// Stats returns the counters. Any goroutine.
func (r *Routes) Stats() RoutesStats {
	return RoutesStats{
		Sent: r.sent.Load(), Batches: r.batches.Load(), QueueDropped: r.queueDropped.Load(),
		SendErrors: r.sendErrors.Load(), Lost: r.lost.Load(),
		Delivered: r.delivered.Load(), Dropped: r.dropped.Load(),
		Unconfirmed: r.unconfirmed.Load(), Resyncs: r.resyncs.Load(),
		QueueBytes: r.queueBytes(), Backlogged: int(r.overN.Load()),
	}
}

// Add records one more local subscriber of filter. The first one writes
// the route to Redis, announces it and waits until every node that heard
// the announcement confirmed it (see Routes). One EVALSHA, then one
// SPUBLISH from each other node back to this one. Later ones are local.
// On error nothing is counted.
func (r *Routes) Add(ctx context.Context, filter string) error {
	if err := topic.ValidateFilter(filter); err != nil {
		return fmt.Errorf("cluster: route %q: %w", filter, err)
	}
	sh, e := r.pin(filter)
	defer r.unpin(sh, filter, e)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n > 0 {
		e.n++
		return nil
	}
	v, n, err := r.change(ctx, routeAddScript, filter)
	if err != nil {
		return fmt.Errorf("cluster: adding route %q: %w", filter, err)
	}
	if err := r.waitAcks(ctx, v, n); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, _, rerr := r.change(rctx, routeRemoveScript, filter); rerr != nil {
			// A stale route only costs traffic: the node drops messages
			// nobody local subscribes to.
			r.cfg.Logger.Warn("rolling back an unconfirmed route failed", "filter", filter, "err", rerr)
		}
		return fmt.Errorf("cluster: adding route %q: %w", filter, err)
	}
	e.n = 1
	return nil
}

// Remove drops one local subscriber of filter. The last one removes the
// route from Redis (one EVALSHA); other nodes stop forwarding as soon as
// they apply the change, without confirmation (a late message is dropped
// by the local router). The local count drops even when Redis fails.
func (r *Routes) Remove(ctx context.Context, filter string) error {
	if err := topic.ValidateFilter(filter); err != nil {
		return fmt.Errorf("cluster: route %q: %w", filter, err)
	}
	sh, e := r.pin(filter)
	defer r.unpin(sh, filter, e)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == 0 {
		return fmt.Errorf("cluster: removing route %q: not added", filter)
	}
	e.n--
	if e.n > 0 {
		return nil
	}
	if _, _, err := r.change(ctx, routeRemoveScript, filter); err != nil {
		return fmt.Errorf("cluster: removing route %q: %w", filter, err)
	}
	return nil
}

// Purge removes every route of node (a node that left the Registry, or
// this node on graceful shutdown). One EVALSHA.
func (r *Routes) Purge(ctx context.Context, node string) error {
	if node == "" {
		return errors.New("cluster: Purge: empty node ID")
	}
	keys := []string{routesNodesKey, filterSetKey(node), routesVersionKey, routesChannel}
	if err := routePurgeScript.Exec(ctx, r.c, keys, []string{node}).Error(); err != nil {
		return fmt.Errorf("cluster: purging routes of %q: %w", node, err)
	}
	return nil
}

// targets appends to dst each other node with a route matching t, once.
// No lock, no allocation when dst has room.
func (r *Routes) targets(t string, dst []*peer) []*peer {
	base := len(dst)
	dst = r.remote.Load().Match(t, dst)
	// A node with several matching filters appears once per filter:
	// keep the first. Matches are per filter, distinct nodes few.
	out := dst[:base]
	for _, p := range dst[base:] {
		dup := false
		for _, q := range out[base:] {
			if q == p {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, p)
		}
	}
	return out
}

// change runs one route script for this node and returns the version of
// the change and how many subscribers heard its note.
func (r *Routes) change(ctx context.Context, s *rueidis.Lua, filter string) (version uint64, heard int, err error) {
	keys := []string{routesNodesKey, filterSetKey(r.self), routesVersionKey, routesChannel}
	vals, err := s.Exec(ctx, r.c, keys, []string{r.self, filter}).ToArray()
	if err != nil {
		return 0, 0, err
	}
	if len(vals) != 2 {
		return 0, 0, fmt.Errorf("route script returned %d values", len(vals))
	}
	v, err1 := vals[0].AsInt64()
	n, err2 := vals[1].AsInt64()
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return uint64(v), int(n), nil
}

// waitAcks waits until n distinct nodes (this one included) applied
// version v or later.
func (r *Routes) waitAcks(ctx context.Context, v uint64, n int) error {
	timer := time.NewTimer(r.cfg.AckTimeout)
	defer timer.Stop()
	for {
		r.amu.Lock()
		got := 0
		for _, a := range r.acked {
			if a >= v {
				got++
			}
		}
		sig := r.ackSig
		r.amu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-sig:
		case <-timer.C:
			r.unconfirmed.Add(1)
			return fmt.Errorf("%w: %d of %d within %v", ErrUnconfirmed, got, n, r.cfg.AckTimeout)
		case <-ctx.Done():
			return ctx.Err()
		case <-r.ctx.Done():
			return errors.New("cluster: routes closed")
		}
	}
}

func (r *Routes) noteAck(acker string, v uint64) {
	r.amu.Lock()
	if v > r.acked[acker] {
		r.acked[acker] = v
		close(r.ackSig)
		r.ackSig = make(chan struct{})
	}
	r.amu.Unlock()
}

func (r *Routes) pin(filter string) (*routeShard, *localRoute) {
	sh := &r.local[maphash.String(r.hseed, filter)%routeShards]
	sh.mu.Lock()
	e := sh.m[filter]
	if e == nil {
		e = &localRoute{}
		sh.m[filter] = e
	}
	e.pins++
	sh.mu.Unlock()
	return sh, e
}

// unpin drops the caller's pin after it released e.mu (defer order) and
// deletes an unused entry. Every holder of e.mu holds a pin, so when the
// last pin drops nobody holds e.mu: taking it here never waits.
func (r *Routes) unpin(sh *routeShard, filter string, e *localRoute) {
	sh.mu.Lock()
	e.pins--
	if e.pins == 0 {
		e.mu.Lock()
		if e.n == 0 {
			delete(sh.m, filter)
		}
		e.mu.Unlock()
	}
	sh.mu.Unlock()
}

// localFilters lists the filters with a local entry: subscribers, or an
// Add or Remove in flight (callers check the count under the entry lock).
func (r *Routes) localFilters() []string {
	var out []string
	for i := range r.local {
		sh := &r.local[i]
		sh.mu.Lock()
		for f := range sh.m {
			out = append(out, f)
		}
		sh.mu.Unlock()
	}
	return out
}

// receiveLoop keeps one SSUBSCRIBE on ch until Close.
func (r *Routes) receiveLoop(ch string, onMsg func(string), onSub func()) {
	defer r.wg.Done()
	keepSubscribed(r.ctx, r.c, true, ch, onMsg, onSub, r.cfg.Logger)
}

func (r *Routes) onNote(s string) { r.push(routeEvent{note: s}) }

func (r *Routes) push(ev routeEvent) {
	r.qmu.Lock()
	r.queue = append(r.queue, ev)
	r.qmu.Unlock()
	select {
	case r.qsig <- struct{}{}:
	default:
	}
}

// onFrame handles one message on this node's channel (receive goroutine).
func (r *Routes) onFrame(s string) {
	f, err := decodeFrame(s)
	if err != nil {
		r.dropped.Add(1)
		r.cfg.Logger.Warn("dropping an undecodable cross-node message", "err", err)
		return
	}
	switch {
	case f.ack:
		r.noteAck(f.acker, f.version)
	case f.count > 0: // a batch, validated whole by decodeFrame
		for rest := f.batch; rest != ""; {
			var t, payload string
			t, payload, rest, _ = nextEntry(rest)
			r.delivered.Add(1)
			r.cfg.Deliver(t, unsafe.Slice(unsafe.StringData(payload), len(payload)))
		}
	default:
		r.delivered.Add(1)
		r.cfg.Deliver(f.topic, unsafe.Slice(unsafe.StringData(f.payload), len(f.payload)))
	}
}

// routeLoop applies route changes in version order and confirms them.
func (r *Routes) routeLoop() {
	defer r.wg.Done()
	var batch []routeEvent
	origins := map[string]struct{}{}
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.qsig:
		}
		r.qmu.Lock()
		batch, r.queue = r.queue, batch[:0]
		r.qmu.Unlock()
		for _, ev := range batch {
			if ev.resync {
				r.resync()
				continue
			}
			n, err := parseNote(ev.note)
			if err != nil {
				r.cfg.Logger.Warn("undecodable route change; reloading the route table", "err", err)
				r.resync()
				continue
			}
			origins[n.node] = struct{}{}
			switch {
			case r.synced && n.version <= r.applied:
				// Already in the snapshot.
			case r.synced && n.version == r.applied+1:
				r.apply(n)
				r.applied = n.version
			default:
				r.resync() // a gap: notes were lost
			}
		}
		clear(batch)
		if r.synced {
			r.confirm(origins)
		}
		clear(origins)
	}
}

func (r *Routes) apply(n note) {
	if n.node == r.self {
		return
	}
	idx := r.remote.Load()
	if n.op == 'P' {
		if p := r.peers[n.node]; p != nil {
			for f := range p.filters {
				idx.Unsubscribe(f, p)
			}
			r.dropPeer(p)
		}
		return
	}
	switch n.op {
	case '+':
		p := r.peer(n.node)
		if _, ok := p.filters[n.filter]; !ok {
			p.filters[n.filter] = struct{}{}
			idx.Subscribe(n.filter, p)
		}
	case '-':
		// A peer left without filters keeps its sender (idle) until the
		// next reload: stopping and restarting it around a quick
		// remove/add could reorder its messages.
		if p := r.peers[n.node]; p != nil {
			if _, ok := p.filters[n.filter]; !ok {
				break
			}
			delete(p.filters, n.filter)
			idx.Unsubscribe(n.filter, p)
		}
	}
}

// peer returns the peer id, creating it and starting its sender when it
// enters the route table (route goroutine).
func (r *Routes) peer(id string) *peer {
	p := r.peers[id]
	if p == nil {
		p = newPeer(id)
		r.peers[id] = p
		r.startSender(p)
	}
	return p
}

func newPeer(id string) *peer {
	return &peer{
		id: id, channel: nodeChannel(id), filters: map[string]struct{}{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}),
	}
}

// dropPeer removes a peer that left the route table (purged, or absent
// from a snapshot) and stops its sender (route goroutine). Its filters
// must be out of the index already; a Forward still holding the old index
// finds its queue closed.
func (r *Routes) dropPeer(p *peer) {
	clear(p.filters)
	delete(r.peers, p.id)
	r.stopSender(p)
}

// confirm tells the origin of every note just covered that this node has
// applied everything up to r.applied.
func (r *Routes) confirm(origins map[string]struct{}) {
	var cmds rueidis.Commands
	var msg string
	for o := range origins {
		if o == r.self {
			r.noteAck(r.self, r.applied)
			continue
		}
		if msg == "" {
			msg = string(appendAck(nil, r.applied, r.self))
		}
		cmds = append(cmds, r.c.B().Spublish().Channel(nodeChannel(o)).Message(msg).Build())
	}
	if len(cmds) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	for _, res := range r.c.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil && r.ctx.Err() == nil {
			r.cfg.Logger.Warn("confirming a route change failed", "err", err)
		}
	}
}

// resync reloads the whole route table, retrying until it succeeds or
// Routes closes, and swaps in a fresh index.
func (r *Routes) resync() {
	for {
		err := r.loadSnapshot()
		if err == nil {
			r.resyncs.Add(1)
			r.once[0].Do(func() { close(r.ready) })
			return
		}
		if r.ctx.Err() != nil {
			return
		}
		r.cfg.Logger.Warn("loading the route table failed; retrying", "err", err)
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (r *Routes) loadSnapshot() error {
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	vals, err := routeSnapshotScript.Exec(ctx, r.c, []string{routesNodesKey, routesVersionKey}, []string{routesFilterPfx}).ToArray()
	if err != nil {
		return err
	}
	if len(vals)%2 != 1 {
		return fmt.Errorf("route snapshot has %d values", len(vals))
	}
	vs, err := vals[0].ToString()
	if err != nil {
		return err
	}
	version, err := strconv.ParseUint(vs, 10, 64)
	if err != nil {
		return fmt.Errorf("route version %q: %w", vs, err)
	}
	idx := topic.NewIndex[*peer]()
	seen := map[string]bool{}
	var own map[string]struct{}
	for k := 1; k+1 < len(vals); k += 2 {
		id, err1 := vals[k].ToString()
		filters, err2 := vals[k+1].AsStrSlice()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		if id == r.self {
			own = make(map[string]struct{}, len(filters))
			for _, f := range filters {
				own[f] = struct{}{}
			}
			continue
		}
		p := r.peer(id)
		seen[id] = true
		clear(p.filters)
		for _, f := range filters {
			p.filters[f] = struct{}{}
			idx.Subscribe(f, p)
		}
	}
	r.remote.Store(idx)
	for id, p := range r.peers {
		if !seen[id] {
			r.dropPeer(p)
		}
	}
	if r.synced && version < r.applied {
		// The counter went back: Redis lost its data. Confirmations of
		// the previous life say nothing about this one.
		r.amu.Lock()
		clear(r.acked)
		r.amu.Unlock()
	}
	r.applied, r.synced = version, true
	r.repair(own)
	return nil
}

// repair makes this node's route set in Redis match its local
// subscribers: it re-writes routes missing from Redis (Redis restarted
// empty, or a write failed) and removes leftovers (a failed Remove or
// rollback). It runs off the route goroutine, because Add holds a route's
// lock while it waits for that goroutine; under the route's lock the local
// count is final, so a change racing with the snapshot is never undone.
func (r *Routes) repair(own map[string]struct{}) {
	type fix struct {
		filter string
		add    bool
	}
	var fixes []fix
	local := r.localFilters()
	for _, f := range local {
		if _, ok := own[f]; !ok {
			fixes = append(fixes, fix{f, true})
		}
		delete(own, f)
	}
	for f := range own {
		fixes = append(fixes, fix{f, false})
	}
	if len(fixes) == 0 || !r.repairing.CompareAndSwap(false, true) {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.repairing.Store(false)
		for _, x := range fixes {
			sh, e := r.pin(x.filter)
			e.mu.Lock()
			s := routeRemoveScript
			if x.add {
				s = routeAddScript
			}
			if (e.n > 0) == x.add {
				ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
				if _, _, err := r.change(ctx, s, x.filter); err != nil && r.ctx.Err() == nil {
					r.cfg.Logger.Warn("repairing a route failed", "filter", x.filter, "add", x.add, "err", err)
				}
				cancel()
			}
			e.mu.Unlock()
			r.unpin(sh, x.filter, e)
		}
	}()
}

// Wire formats.

// note is one decoded route change.
type note struct {
	version uint64
	op      byte
	node    string
	filter  string
}

// parseNote decodes "<version> <op> <len(node)> <node><filter>".
func parseNote(s string) (note, error) {
	var n note
	sp := strings.IndexByte(s, ' ')
	if sp <= 0 {
		return n, errors.New("route note: no version")
	}
	v, err := strconv.ParseUint(s[:sp], 10, 64)
	if err != nil {
		return n, fmt.Errorf("route note: version: %w", err)
	}
	s = s[sp+1:]
	if len(s) < 2 || s[1] != ' ' || (s[0] != '+' && s[0] != '-' && s[0] != 'P') {
		return n, errors.New("route note: bad op")
	}
	n.version, n.op = v, s[0]
	s = s[2:]
	sp = strings.IndexByte(s, ' ')
	if sp <= 0 {
		return n, errors.New("route note: no node length")
	}
	l, err := strconv.ParseUint(s[:sp], 10, 32)
	if err != nil {
		return n, fmt.Errorf("route note: node length: %w", err)
	}
	s = s[sp+1:]
	if l == 0 || l > uint64(len(s)) {
		return n, errors.New("route note: node length out of range")
	}
	n.node, n.filter = s[:l], s[l:]
	if n.op == 'P' {
		if n.filter != "" {
			return n, errors.New("route note: purge with a filter")
		}
	} else if err := topic.ValidateFilter(n.filter); err != nil {
		return n, fmt.Errorf("route note: filter: %w", err)
	}
	return n, nil
}

// Frames on a node channel (one Redis pub/sub message each):
//
//	'm' uvarint(len(topic)) topic payload    one forwarded message
//	'b' entry entry ...                      several forwarded messages, in order
//	'a' uvarint(version) acker               a route confirmation
//
// where entry = uvarint(len(payload)) uvarint(len(topic)) topic payload
// (at least one). A sender sends a lone message as 'm', so a node that
// predates batch frames still decodes it; a batch is dropped (as
// undecodable) by such a node: RoutesConfig.BatchBytes < 0 turns batches
// off during a rolling upgrade.
const (
	frameMessage = 'm'
	frameBatch   = 'b'
	frameAck     = 'a'
)

type frame struct {
	ack     bool
	topic   string // 'm'
	payload string // 'm'
	batch   string // 'b': the entries, every one valid
	count   int    // 'b': how many
	version uint64
	acker   string
}

func appendMessage(b []byte, t string, payload []byte) []byte {
	b = append(b, frameMessage)
	b = binary.AppendUvarint(b, uint64(len(t)))
	b = append(b, t...)
	return append(b, payload...)
}

func appendAck(b []byte, version uint64, acker string) []byte {
	b = append(b, frameAck)
	b = binary.AppendUvarint(b, version)
	return append(b, acker...)
}

// decodeFrame parses a node-channel frame. The strings it returns are
// views of s. A batch is checked whole: a frame with one bad entry is
// rejected, none of its messages delivered.
func decodeFrame(s string) (frame, error) {
	var f frame
	if len(s) == 0 {
		return f, errors.New("frame: empty")
	}
	kind, rest := s[0], s[1:]
	if kind == frameBatch {
		n, err := validateBatch(rest)
		if err != nil {
			return f, err
		}
		f.batch, f.count = rest, n
		return f, nil
	}
	// binary.Uvarint wants a []byte; the view is read-only.
	x, n := binary.Uvarint(unsafe.Slice(unsafe.StringData(rest), len(rest)))
	if n <= 0 {
		return f, errors.New("frame: bad varint")
	}
	rest = rest[n:]
	switch kind {
	case frameMessage:
		if x > uint64(len(rest)) {
			return f, errors.New("frame: topic length out of range")
		}
		f.topic, f.payload = rest[:x], rest[x:]
		if err := topic.ValidateTopic(f.topic); err != nil {
			return f, fmt.Errorf("frame: topic: %w", err)
		}
	case frameAck:
		if rest == "" {
			return f, errors.New("frame: ack without node")
		}
		f.ack, f.version, f.acker = true, x, rest
	default:
		return f, fmt.Errorf("frame: unknown kind %q", kind)
	}
	return f, nil
}
