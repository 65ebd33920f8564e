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
// to the nodes with a matching filter, once per node.
//
// Guarantees:
//   - Visibility: Add returns nil only after the route is in Redis and
//     every node subscribed to the change channel at that moment (SPUBLISH
//     reports how many) has applied it to its index and confirmed. A
//     Forward that starts on any such node after Add returned routes to
//     this node. A node that joins later loads the table on start (Open
//     returns after that).
//   - Exactly once per node: a message goes to each matching node in one
//     SPUBLISH, whatever the number of its matching filters, and never to
//     the forwarding node itself (its own routes are not in its index).
//     Redis pub/sub is at most once: a message in flight while a node's
//     link to Redis is down is lost, never duplicated.
//   - Order: messages one goroutine forwards to one node arrive in that
//     order (one connection per Redis server, one subscription per node).
//
// Concurrency: Add, Remove, Forward, Purge and Stats may be called from any
// goroutine. Forward takes no lock. Deliver runs on one goroutine owned by
// Routes, one call at a time, in arrival order.
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

	sent, delivered, dropped, unconfirmed, resyncs atomic.Uint64
}

// RoutesConfig configures OpenRoutes.
type RoutesConfig struct {
	// Client is the Redis client (standalone or cluster, Redis >= 7 for
	// sharded pub/sub). Routes subscribes on it; it is not closed by Close.
	Client rueidis.Client
	// NodeID names this node; its messages arrive on gc:n:<NodeID>.
	NodeID string
	// Deliver receives each message forwarded to this node, once. It runs
	// on one goroutine, one call at a time; it must not wait on Redis
	// (it runs on a pub/sub reader: hand the message to local queues).
	// payload aliases an immutable string: read it, keep it if needed,
	// never modify it.
	Deliver func(topic string, payload []byte)
	// AckTimeout bounds how long Add waits for the other nodes to confirm
	// a new route. Default 2s.
	AckTimeout time.Duration
	Logger     *slog.Logger
}

// RoutesStats are monotonic counters, for metrics.
type RoutesStats struct {
	Sent        uint64 // messages sent to other nodes (one per node per Forward)
	Delivered   uint64 // messages received and passed to Deliver
	Dropped     uint64 // undecodable messages received on the node channel
	Unconfirmed uint64 // Add calls that timed out waiting for confirmations
	Resyncs     uint64 // full reloads of the route table
}

type peer struct {
	id      string
	channel string
	filters map[string]struct{} // route goroutine only
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
	cmds  rueidis.Commands
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

// Close stops receiving. It does not remove this node's routes: a node
// leaving gracefully calls Purge(ctx, its own ID) first; a crashed node's
// routes are purged by whoever sees it leave the Registry.
func (r *Routes) Close() {
	r.cancel()
	r.wg.Wait()
}

// NodeID returns this node's ID.
func (r *Routes) NodeID() string { return r.self }

// Stats returns the counters. Any goroutine.
func (r *Routes) Stats() RoutesStats {
	return RoutesStats{
		Sent: r.sent.Load(), Delivered: r.delivered.Load(), Dropped: r.dropped.Load(),
		Unconfirmed: r.unconfirmed.Load(), Resyncs: r.resyncs.Load(),
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

// Forward sends topic and payload to every other node with a matching
// route: one SPUBLISH per node, pipelined; none when no node matches.
// payload is copied before Forward returns. The match itself takes no
// lock and allocates nothing in steady state; the one allocation is the
// message rueidis sends.
func (r *Routes) Forward(ctx context.Context, t string, payload []byte) error {
	if err := topic.ValidateTopic(t); err != nil {
		return fmt.Errorf("cluster: forwarding to %q: %w", t, err)
	}
	s := r.scratch.Get().(*fwdScratch)
	defer r.scratch.Put(s)
	s.peers = r.targets(t, s.peers[:0])
	if len(s.peers) == 0 {
		return nil
	}
	// Never reused after this, so the string may alias it: rueidis may
	// still be writing it after a cancelled Do returns.
	b := appendMessage(make([]byte, 0, 1+binary.MaxVarintLen64+len(t)+len(payload)), t, payload)
	msg := unsafe.String(unsafe.SliceData(b), len(b))
	if len(s.peers) == 1 { // the common case: no pipeline bookkeeping
		p := s.peers[0]
		clear(s.peers)
		if err := r.c.Do(ctx, r.c.B().Spublish().Channel(p.channel).Message(msg).Build()).Error(); err != nil {
			return fmt.Errorf("cluster: forwarding to %q: node %q: %w", t, p.id, err)
		}
		r.sent.Add(1)
		return nil
	}
	s.cmds = s.cmds[:0]
	for _, p := range s.peers {
		s.cmds = append(s.cmds, r.c.B().Spublish().Channel(p.channel).Message(msg).Build())
	}
	var errs []error
	for i, res := range r.c.DoMulti(ctx, s.cmds...) {
		if err := res.Error(); err != nil {
			errs = append(errs, fmt.Errorf("node %q: %w", s.peers[i].id, err))
		} else {
			r.sent.Add(1)
		}
	}
	clear(s.cmds)
	clear(s.peers)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: forwarding to %q: %w", t, err)
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
	if f.ack {
		r.noteAck(f.acker, f.version)
		return
	}
	r.delivered.Add(1)
	r.cfg.Deliver(f.topic, unsafe.Slice(unsafe.StringData(f.payload), len(f.payload)))
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
	p := r.peer(n.node)
	idx := r.remote.Load()
	switch n.op {
	case '+':
		if _, ok := p.filters[n.filter]; !ok {
			p.filters[n.filter] = struct{}{}
			idx.Subscribe(n.filter, p)
		}
	case '-':
		if _, ok := p.filters[n.filter]; ok {
			delete(p.filters, n.filter)
			idx.Unsubscribe(n.filter, p)
		}
	case 'P':
		for f := range p.filters {
			idx.Unsubscribe(f, p)
		}
		clear(p.filters)
	}
}

func (r *Routes) peer(id string) *peer {
	p := r.peers[id]
	if p == nil {
		p = &peer{id: id, channel: nodeChannel(id), filters: map[string]struct{}{}}
		r.peers[id] = p
	}
	return p
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
	for id, p := range r.peers {
		if !seen[id] {
			clear(p.filters)
			delete(r.peers, id)
		}
	}
	r.remote.Store(idx)
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

// Frames on a node channel:
//
//	'm' uvarint(len(topic)) topic payload    a forwarded message
//	'a' uvarint(version) acker               a route confirmation
const (
	frameMessage = 'm'
	frameAck     = 'a'
)

type frame struct {
	ack     bool
	topic   string
	payload string
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
// views of s.
func decodeFrame(s string) (frame, error) {
	var f frame
	if len(s) == 0 {
		return f, errors.New("frame: empty")
	}
	kind, rest := s[0], s[1:]
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
