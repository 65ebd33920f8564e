// Package broker owns sessions: admission (token, subscriptions, connection
// limit), the local router from the topic index to subscriber connections,
// publish authorization, and enforcement of rights changes on live sessions.
//
// It must not know about sockets, WebSocket framing or SQL: it talks to the
// transport through Conn, to the store of record through Store, and encodes
// and decodes payloads with proto.
//
// Concurrency: Connect, RefreshTokens, Kick and Connections may be called
// from any goroutine. A Session's OnMessage is called by its transport
// serially; OnClose once. There is no broker-wide lock: token state is
// guarded by one mutex per token, the token cache and the session table are
// striped, and the topic index is read without locks.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/proto"
	"github.com/gatecast/gatecast/topic"
)

// Conn is the transport side of a session. netpoll.Conn implements it. All
// methods are safe for concurrent use and never block.
type Conn interface {
	// Send queues f and takes ownership of one reference to it, in every case.
	Send(f *proto.Frame) bool
	// Close queues a close frame with code and reason, then drops the link.
	Close(code uint16, reason string)
}

// Store is what the broker reads from the store of record. acl.Store
// implements it.
type Store interface {
	GetToken(ctx context.Context, id int64) (acl.Token, error)
	GetTokenByHash(ctx context.Context, hash acl.Hash) (acl.Token, error)
	ListGrants(ctx context.Context, tokenID int64) ([]acl.Grant, error)
}

// TokenWatcher makes this node hear rights changes made by other nodes (the
// cluster's rights bus; cluster.Rights implements it). The broker watches a
// token before it reads it from the store, so a change committed after that
// read is always heard; whoever implements it calls RefreshTokens for the
// tokens it hears about, and RefreshAll when changes may have been lost.
type TokenWatcher interface {
	Watch(ctx context.Context, tokenID int64) error
	Unwatch(tokenID int64)
}

// ConnectionLimiter counts a token's connections across every node of a
// cluster (cluster.Leases implements it). Acquire takes one slot if fewer
// than max are held cluster-wide, atomically; Release gives one back.
// Adopt takes k slots unconditionally, for open sessions admitted while the
// token had no limit. Trim makes the cluster-wide count at most max and
// returns how many of this node's slots it took away: the node closes that
// many sessions, which must not Release.
type ConnectionLimiter interface {
	Acquire(ctx context.Context, tokenID int64, max int) (bool, error)
	Release(ctx context.Context, tokenID int64) error
	Adopt(ctx context.Context, tokenID int64, k int) error
	Trim(ctx context.Context, tokenID int64, max int) (int, error)
}

// Router carries messages between the nodes of a cluster (cluster.Routes
// implements it). Add returns once every node routes filter here; Forward
// sends an encoded frame once to each other node with a matching route,
// and must not keep frame after it returns.
type Router interface {
	Add(ctx context.Context, filter string) error
	Remove(ctx context.Context, filter string) error
	Forward(ctx context.Context, topic string, frame []byte) error
}

// Config configures a Broker.
type Config struct {
	Store Store
	// Watcher and Limiter are nil on a single node.
	Watcher TokenWatcher
	Limiter ConnectionLimiter
	Router  Router
	// Available, when set, is asked before every admission; false refuses
	// the connection with 1013 (cluster mode: revocations cannot be heard).
	Available  func() bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are not registered
	// StoreTimeout bounds a store read made while admitting a connection.
	StoreTimeout time.Duration
}

// Broker is one node's session manager and router.
type Broker struct {
	store     Store
	watcher   TokenWatcher
	limiter   ConnectionLimiter
	router    Router
	available func() bool
	// background runs the cluster calls of closed sessions (lease release,
	// route removal) so a transport goroutine never waits on Redis.
	background   chan func()
	log          *slog.Logger
	storeTimeout time.Duration
	index        *topic.Index[*Session]
	tokens       tokenCache
	sessions     sessionTable
	nextID       atomic.Uint64
	metrics      *metrics
	scratch      sync.Pool // *matchScratch, reused by publishers
}

// New returns a Broker reading tokens and grants from cfg.Store.
func New(cfg Config) (*Broker, error) {
	if cfg.Store == nil {
		return nil, errors.New("broker: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = 5 * time.Second
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	b := &Broker{
		store:        cfg.Store,
		watcher:      cfg.Watcher,
		limiter:      cfg.Limiter,
		router:       cfg.Router,
		available:    cfg.Available,
		log:          cfg.Logger,
		storeTimeout: cfg.StoreTimeout,
		index:        topic.NewIndex[*Session](),
		metrics:      m,
	}
	b.tokens.init()
	b.sessions.init()
	b.scratch.New = func() any { return &matchScratch{subs: make([]*Session, 0, 64)} }
	m.bindIndex(b.index)
	m.bindTokenCache(&b.tokens)
	if b.limiter != nil || b.router != nil {
		b.background = make(chan func(), 4096)
		go b.runBackground()
	}
	return b, nil
}

// runBackground runs queued cluster calls for the life of the process.
// Their failures are repaired by the cluster layer (lease heartbeat repair,
// route table resync); here they are only logged.
func (b *Broker) runBackground() {
	for fn := range b.background {
		fn()
	}
}

// later queues fn on the background goroutine without ever blocking.
func (b *Broker) later(fn func()) {
	select {
	case b.background <- fn:
	default:
		go func() { b.background <- fn }() // a burst of closes filled the queue
	}
}

// ConnectRequest is what a client presented when it connected.
type ConnectRequest struct {
	Secret     []byte   // token secret; empty = missing
	Tags       []string // requested subscriptions; empty = missing
	RemoteAddr string
	Protocol   string // "seed"
}

// Rejection says why a connection was refused: a WebSocket close code and a
// short reason for the client.
type Rejection struct {
	Code   uint16
	Reason string
}

func (r *Rejection) Error() string { return fmt.Sprintf("rejected %d: %s", r.Code, r.Reason) }

// Connect admits a client: it authenticates the secret, checks every
// requested subscription against the token's grants, takes a connection slot
// and subscribes. On success the returned Session receives c's messages; on
// refusal the error is a *Rejection (or a store error, for which the caller
// closes with 1011) and nothing was kept.
func (b *Broker) Connect(c Conn, req ConnectRequest) (*Session, error) {
	if len(req.Secret) == 0 {
		b.metrics.connects[resultBadRequest].Inc()
		return nil, &Rejection{CloseBadRequest, "missing Authorization header"}
	}
	if len(req.Tags) == 0 {
		b.metrics.connects[resultBadRequest].Inc()
		return nil, &Rejection{CloseBadRequest, "missing Tag header"}
	}
	for _, f := range req.Tags {
		if err := topic.ValidateFilter(f); err != nil {
			b.metrics.connects[resultForbidden].Inc()
			return nil, &Rejection{CloseForbidden, truncateReason("invalid tag " + f)}
		}
	}
	if b.available != nil && !b.available() {
		b.metrics.connects[resultError].Inc()
		return nil, &Rejection{CloseTryAgain, "node cannot verify rights right now, retry"}
	}
	hash := acl.HashSecret(req.Secret)
	for attempt := 0; ; attempt++ {
		ts, err := b.tokens.lookup(b, hash)
		if err != nil {
			if errors.Is(err, acl.ErrNotFound) {
				b.metrics.connects[resultAuth].Inc()
				return nil, &Rejection{CloseForbidden, "invalid token"}
			}
			b.metrics.connects[resultError].Inc()
			return nil, fmt.Errorf("broker: loading token: %w", err)
		}
		s, rej, retry := b.admit(ts, hash, c, req)
		if retry && attempt < 3 {
			continue // the cached token changed under us: read it again
		}
		if rej != nil {
			return nil, rej
		}
		if s == nil {
			b.metrics.connects[resultAuth].Inc()
			return nil, &Rejection{CloseForbidden, "invalid token"}
		}
		if b.router != nil {
			if err := b.route(s); err != nil {
				b.log.Warn("cluster route unavailable; refusing the connection", "err", err)
				return nil, &Rejection{CloseUnavailable, "cluster routing unavailable, retry"}
			}
		}
		return s, nil
	}
}

// admit takes the token's lock and, if everything holds, registers the
// session. retry reports that ts was replaced meanwhile.
func (b *Broker) admit(ts *tokenState, hash acl.Hash, c Conn, req ConnectRequest) (s *Session, rej *Rejection, retry bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.gone {
		return nil, nil, true
	}
	if ts.hash != hash || ts.disabled {
		b.metrics.connects[resultAuth].Inc()
		return nil, &Rejection{CloseForbidden, "invalid token"}, false
	}
	g := ts.grants.Load()
	for _, f := range req.Tags {
		if !g.CanSubscribe(f) {
			b.metrics.connects[resultForbidden].Inc()
			return nil, &Rejection{CloseForbidden, truncateReason("tag not permitted: " + f)}, false
		}
	}
	if ts.maxConns > 0 && len(ts.sessions) >= ts.maxConns {
		b.metrics.connects[resultLimit].Inc()
		return nil, &Rejection{CloseLimit, "connection limit reached"}, false
	}
	leased := false
	if ts.maxConns > 0 && b.limiter != nil {
		// Under ts.mu: this node's connects of one token take their
		// cluster slot one at a time, other tokens are not held up.
		ctx, cancel := context.WithTimeout(context.Background(), b.storeTimeout)
		ok, err := b.limiter.Acquire(ctx, ts.id, ts.maxConns)
		cancel()
		switch {
		case err != nil:
			b.metrics.connects[resultError].Inc()
			b.log.Warn("cluster connection lease unavailable; refusing the connection", "token_id", ts.id, "err", err)
			return nil, &Rejection{CloseUnavailable, "connection limit unavailable, retry"}, false
		case !ok:
			b.metrics.connects[resultLimit].Inc()
			return nil, &Rejection{CloseLimit, "connection limit reached"}, false
		}
		leased = true
	}
	s = &Session{
		id:          b.nextID.Add(1),
		b:           b,
		conn:        c,
		token:       ts,
		filters:     dedupFilters(req.Tags),
		remote:      req.RemoteAddr,
		protocol:    req.Protocol,
		proto:       protocolIndex(req.Protocol),
		connectedAt: time.Now(),
		leased:      leased,
	}
	s.multi = len(s.filters) > 1
	ts.sessions[s] = struct{}{}
	for _, f := range s.filters {
		b.index.Subscribe(f, s)
	}
	b.sessions.put(s)
	b.metrics.connects[resultAccepted].Inc()
	b.metrics.connections[s.proto].Inc()
	b.metrics.subscriptions.Add(float64(len(s.filters)))
	return s, nil, false
}

// route makes s's subscriptions routable from every node before the
// connection is admitted. On failure it undoes what it did and ends s
// without a close frame (the caller answers with the rejection).
func (b *Broker) route(s *Session) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.storeTimeout)
	defer cancel()
	for i, f := range s.filters {
		if err := b.router.Add(ctx, f); err != nil {
			for _, done := range s.filters[:i] {
				if rerr := b.router.Remove(ctx, done); rerr != nil {
					b.log.Warn("removing a route failed", "err", rerr)
				}
			}
			s.end(0, "", revokeNone) // routed is still false: no second removal
			return err
		}
	}
	s.routed.Store(true)
	return nil
}

func dedupFilters(tags []string) []string {
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// reasons travel in a close frame whose payload is capped at 125 bytes.
func truncateReason(s string) string {
	const max = 123
	if len(s) <= max {
		return s
	}
	// do not cut a UTF-8 sequence in half
	i := max
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}

// matchScratch is a publisher's reusable buffer for index results.
type matchScratch struct {
	subs  []*Session
	multi []*Session
}

// publish routes one message from `from` (nil: from no session) to every
// other session subscribed to a filter matching t. The message is encoded
// once; every recipient shares the same frame. Allocation-free in steady state.
func (b *Broker) publish(from *Session, t string, message []byte) (delivered int) {
	f := proto.AcquireFrame()
	f.B = proto.AppendSeedFrame(f.B, t, message)
	return b.dispatch(from, t, f, true)
}

// DeliverRemote hands a frame another node forwarded to the local
// subscribers of topic t. It is what the cluster router calls; frame is
// copied once into a shared frame.
func (b *Broker) DeliverRemote(t string, frame []byte) {
	f := proto.AcquireFrame()
	f.B = append(f.B[:0], frame...)
	b.dispatch(nil, t, f, false)
}

// dispatch delivers f (and releases the caller's reference) to every local
// session subscribed to t except from, then, when forward is set (the
// message was published on this node), to the other nodes that route t.
func (b *Broker) dispatch(from *Session, t string, f *proto.Frame, forward bool) (delivered int) {
	sc := b.scratch.Get().(*matchScratch)
	sc.subs = b.index.Match(t, sc.subs[:0])
	sc.multi = sc.multi[:0]
	dropped := 0
	for _, s := range sc.subs {
		if s == from || s.closed.Load() {
			continue
		}
		if s.multi {
			// a session with several filters may match more than once:
			// deliver those after removing duplicates.
			sc.multi = append(sc.multi, s)
			continue
		}
		if s.deliver(f) {
			delivered++
		} else {
			dropped++
		}
	}
	if len(sc.multi) > 0 {
		if len(sc.multi) > 1 {
			slices.SortFunc(sc.multi, compareSessions)
		}
		var prev *Session
		for _, s := range sc.multi {
			if s == prev {
				continue
			}
			prev = s
			if s.deliver(f) {
				delivered++
			} else {
				dropped++
			}
		}
	}
	n := len(f.B)
	if forward && b.router != nil {
		if err := b.router.Forward(context.Background(), t, f.B); err != nil {
			b.metrics.forwardErrors.Inc()
		}
	}
	f.Release()
	clear(sc.subs) // do not keep sessions reachable from the pool
	clear(sc.multi)
	b.scratch.Put(sc)
	b.metrics.deliveries.Add(float64(delivered))
	b.metrics.bytesOut.Add(float64(delivered * n))
	if dropped > 0 {
		b.metrics.dropped.Add(float64(dropped))
	}
	return delivered
}

func compareSessions(a, b *Session) int {
	switch {
	case a.id < b.id:
		return -1
	case a.id > b.id:
		return 1
	}
	return 0
}

// Publish delivers a message to every matching session, as if published by
// no client (used by tests and server-side publishers). The topic must be a
// valid publish topic and message valid JSON.
func (b *Broker) Publish(t string, message []byte) (int, error) {
	if err := topic.ValidateTopic(t); err != nil {
		return 0, err
	}
	return b.publish(nil, t, message), nil
}

// Connections lists live sessions, all of them or those of one token.
func (b *Broker) Connections(tokenID int64) []ConnectionInfo {
	var out []ConnectionInfo
	b.sessions.each(func(s *Session) {
		if tokenID != 0 && s.token.id != tokenID {
			return
		}
		out = append(out, s.info())
	})
	slices.SortFunc(out, func(a, b ConnectionInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// CloseAll closes every live session with code and reason (cluster mode,
// --on-redis-loss=close) and returns how many it closed.
func (b *Broker) CloseAll(code uint16, reason string) int {
	var all []*Session
	b.sessions.each(func(s *Session) { all = append(all, s) })
	n := 0
	for _, s := range all {
		if s.end(code, reason, revokeNone) {
			n++
		}
	}
	return n
}

// Kick closes a session with 4005. It reports whether the session existed.
func (b *Broker) Kick(id uint64) bool {
	s := b.sessions.get(id)
	if s == nil {
		return false
	}
	return s.end(CloseKicked, "closed by administrator", revokeKick)
}

// SessionCount is the number of live sessions.
func (b *Broker) SessionCount() int { return b.sessions.count() }

// Close frames, one per rule of live revocation.
const (
	reasonTokenDeleted  = "token deleted"
	reasonTokenDisabled = "token disabled"
	reasonTokenRotated  = "token rotated"
	reasonLimitLowered  = "connection limit lowered"
)

// RefreshTokens re-reads the given tokens from the store and enforces the
// result on their live sessions before it returns: a deleted, disabled or
// rotated token closes its sessions with 4002; a subscription no longer
// covered by a grant closes its session with 4003; lost write access refuses
// the next publish; a lowered limit closes the newest sessions with 4004.
// Only the sessions of these tokens are examined.
func (b *Broker) RefreshTokens(ctx context.Context, ids ...int64) error {
	// Any load of a token that started before this point must not be
	// cached: it may predate the write being enforced.
	b.tokens.gen.Add(1)
	start := time.Now()
	defer func() { b.metrics.enforce.Observe(time.Since(start).Seconds()) }()
	var errs []error
	for _, id := range ids {
		if err := b.refreshToken(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("token %d: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// RefreshAll re-reads every token this node caches and enforces the result,
// as RefreshTokens does: what a node runs when rights changes may have been
// missed (its link to the cluster's rights bus was lost).
func (b *Broker) RefreshAll(ctx context.Context) error {
	return b.RefreshTokens(ctx, b.tokens.ids()...)
}

// newestFirst lists the token's open sessions, newest first. Caller holds ts.mu.
func newestFirst(ts *tokenState) []*Session {
	newest := make([]*Session, 0, len(ts.sessions))
	for s := range ts.sessions {
		newest = append(newest, s)
	}
	slices.SortFunc(newest, func(a, b *Session) int { return compareSessions(b, a) })
	return newest
}

// trimClusterLocked enforces ts.maxConns across the cluster: sessions
// admitted while the token had no limit take their slots (Adopt), then the
// limiter trims the cluster-wide count and this node closes, newest first,
// as many leased sessions as their slots were taken. The local rule that
// follows in refreshToken still applies on top (and alone when Redis does
// not answer). Caller holds ts.mu: the token's connects wait, as for
// Acquire.
func (b *Broker) trimClusterLocked(ctx context.Context, ts *tokenState, unsub []*Session) []*Session {
	var unleased []*Session
	for s := range ts.sessions {
		if !s.leased {
			unleased = append(unleased, s)
		}
	}
	if len(unleased) > 0 {
		if err := b.limiter.Adopt(ctx, ts.id, len(unleased)); err != nil {
			b.log.Warn("cluster connection limit: counting open sessions failed; enforcing the limit on this node's count only", "token_id", ts.id, "err", err)
			return unsub
		}
		for _, s := range unleased {
			s.leased = true
		}
	}
	cut, err := b.limiter.Trim(ctx, ts.id, ts.maxConns)
	if err != nil {
		b.log.Warn("cluster connection limit: trim failed; enforcing the limit on this node's count only", "token_id", ts.id, "err", err)
		return unsub
	}
	for _, s := range newestFirst(ts) {
		if cut == 0 {
			break
		}
		if !s.leased {
			continue
		}
		s.leased = false // the trim took its slot already
		cut--
		if s.closeLocked(CloseLimit, reasonLimitLowered, revokeLimit) {
			unsub = append(unsub, s)
		}
	}
	return unsub
}

func (b *Broker) refreshToken(ctx context.Context, id int64) error {
	ts := b.tokens.byIDGet(id)
	if ts == nil {
		return nil // not cached: no live session, and the next connect reads the store
	}
	tok, err := b.store.GetToken(ctx, id)
	gone := errors.Is(err, acl.ErrNotFound)
	if err != nil && !gone {
		return err
	}
	var grants []acl.Grant
	if !gone {
		grants, err = b.store.ListGrants(ctx, id)
		switch {
		case errors.Is(err, acl.ErrNotFound):
			gone = true // deleted between the two reads
		case err != nil:
			return err
		}
	}

	var unsub []*Session
	ts.mu.Lock()
	switch {
	case gone || tok.Disabled || tok.Hash != ts.hash:
		reason := reasonTokenRotated
		if gone {
			reason = reasonTokenDeleted
		} else if tok.Disabled {
			reason = reasonTokenDisabled
		}
		ts.gone = true
		b.tokens.remove(ts)
		if b.watcher != nil {
			b.watcher.Unwatch(ts.id)
		}
		for s := range ts.sessions {
			if s.closeLocked(CloseTokenChanged, reason, revokeToken) {
				unsub = append(unsub, s)
			}
		}
	default:
		// A disabled token seen by a refused connect is cached disabled;
		// re-enabling it lands here.
		ts.disabled = false
		ts.name = tok.Name
		ts.maxConns = tok.MaxConnections
		g := acl.CompileGrants(grants)
		ts.grants.Store(g) // from here on every publish is judged by g
		for s := range ts.sessions {
			if f, ok := s.uncovered(g); ok {
				if s.closeLocked(CloseForbidden, truncateReason("tag no longer permitted: "+f), revokeSubscription) {
					unsub = append(unsub, s)
				}
			}
		}
		if ts.maxConns > 0 && b.limiter != nil {
			unsub = b.trimClusterLocked(ctx, ts, unsub)
		}
		if over := len(ts.sessions) - ts.maxConns; ts.maxConns > 0 && over > 0 {
			for _, s := range newestFirst(ts)[:over] {
				if s.closeLocked(CloseLimit, reasonLimitLowered, revokeLimit) {
					unsub = append(unsub, s)
				}
			}
		}
	}
	ts.mu.Unlock()
	for _, s := range unsub {
		s.unsubscribeAll()
	}
	if len(unsub) > 0 {
		b.log.Info("rights change enforced", "token_id", id, "sessions_closed", len(unsub))
	}
	return nil
}
