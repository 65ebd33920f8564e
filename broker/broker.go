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
//
// A token's mutex is what revocation needs, and a token's clients can make
// as many connects and closes as they like, so nothing done under it is
// proportional to what a client sent: admission validates, deduplicates and
// checks the requested filters against the grants before taking it, and
// under it only re-checks that the token and its grants are unchanged,
// checks the limit and registers the session; filters enter the index after
// the lock is released (see Broker.subscribe for why a racing revocation
// cannot leave one behind). Closing a session and enforcing a rights change
// likewise do only O(1) work per session under the lock; checking sessions'
// filters against new grants happens outside it, and removing the filters
// of the sessions a rights change closed happens in the background, so the
// change returns as soon as they are closed however many filters they had.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/proto"
	"github.com/gatecast/gatecast/topic"
)

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
// sends a message's forwarded form (see appendForward) once to each other
// node with a matching route, and must not keep msg after it returns.
type Router interface {
	Add(ctx context.Context, filter string) error
	Remove(ctx context.Context, filter string) error
	Forward(ctx context.Context, topic string, msg []byte) error
}

// Config configures a Broker.
type Config struct {
	Store Store
	// Rights is where token rights are read from (see RightsSource); nil
	// means the store of record, with Watcher's change counters.
	Rights RightsSource
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
	// MaxSubscriptions caps the tags one connection may request, counted
	// as presented (duplicates included: the cap bounds the work an
	// admission does before anything else is looked at); more are refused
	// with 4003. 0 means DefaultMaxSubscriptions.
	MaxSubscriptions int
	// MaxTopicBytes and MaxTopicLevels cap a subscription filter (over:
	// refused with 4003) and a publish topic (over: dropped and counted as
	// a bad topic). 0 means DefaultMaxTopicBytes / DefaultMaxTopicLevels;
	// at most topic.MaxBytes / topic.MaxLevels, the syntax's own limits.
	MaxTopicBytes  int
	MaxTopicLevels int
	// MaxStall bounds how long one publish waits for a backlogged
	// subscriber (or cluster peer queue) to drain before the publisher's
	// next message is read (see stall.go). 0 means DefaultMaxStall;
	// negative turns producer stalls off.
	MaxStall time.Duration
	// MaxOfflineSessions caps the offline (persistent) sessions one token
	// may hold on this node: past it a departing client's session ends
	// instead of persisting, so a token's clients cannot pile up state with
	// fresh client identifiers. 0 means DefaultMaxOfflineSessions.
	MaxOfflineSessions int
	// ForwardSeedFrames makes the node forward seed text frames to other
	// nodes instead of the neutral form, for a rolling upgrade from a
	// version that knows no other (MQTT properties and non-JSON payloads
	// then travel as the seed protocol carries them). Every node reads both.
	ForwardSeedFrames bool
}

// Defaults of the Config caps.
const (
	DefaultMaxSubscriptions   = 100
	DefaultMaxTopicBytes      = 1024
	DefaultMaxTopicLevels     = 32
	DefaultMaxStall           = 50 * time.Millisecond
	DefaultMaxOfflineSessions = 1000
)

// Broker is one node's session manager and router.
type Broker struct {
	store     Store
	rights    RightsSource
	limiter   ConnectionLimiter
	router    Router
	available func() bool
	// background runs the cluster calls of closed sessions (lease release,
	// route removal) so a transport goroutine never waits on Redis.
	background   chan func()
	cleanupHold  atomic.Int64 // monotonicNow before which the background goroutine does no cleanup (holdCleanup)
	closes       closeWatch   // sessions the running rights changes ended (delivered.go)
	log          *slog.Logger
	storeTimeout time.Duration
	index        *topic.Index[*Subscription]
	tokens       tokenCache
	sessions     sessionTable
	groups       shareGroups
	nextID       atomic.Uint64
	metrics      *metrics
	scratch      sync.Pool // *matchScratch, reused by publishers

	maxSubs, maxTopicBytes, maxTopicLevels int
	capLog                                 LogSampler // refusals over the caps
	maxStall                               time.Duration
	maxOffline                             int
	forwardSeed                            bool
	routerBacklog                          backlogger // b.router's, when it has one

	// Test hooks, nil outside tests: they let a test act at the exact
	// points where an admission races a rights change or a close.
	hookChecked     func()                  // grants checked, token lock not taken yet
	hookSubscribing func(s *Session, i int) // before admission's filter i enters the index; i == len: all in
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
	for _, c := range []struct {
		v         *int
		def, max  int
		name, why string
	}{
		{&cfg.MaxSubscriptions, DefaultMaxSubscriptions, 1 << 20, "MaxSubscriptions", ""},
		{&cfg.MaxTopicBytes, DefaultMaxTopicBytes, topic.MaxBytes, "MaxTopicBytes", " (topic.MaxBytes)"},
		{&cfg.MaxTopicLevels, DefaultMaxTopicLevels, topic.MaxLevels, "MaxTopicLevels", " (topic.MaxLevels)"},
	} {
		if *c.v == 0 {
			*c.v = c.def
		}
		if *c.v < 0 || *c.v > c.max {
			return nil, fmt.Errorf("broker: Config.%s %d: want 1 to %d%s", c.name, *c.v, c.max, c.why)
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	b := &Broker{
		store:        cfg.Store,
		rights:       cfg.Rights,
		limiter:      cfg.Limiter,
		router:       cfg.Router,
		available:    cfg.Available,
		log:          cfg.Logger,
		storeTimeout: cfg.StoreTimeout,
		index:        topic.NewIndex[*Subscription](),
		metrics:      m,

		maxSubs:        cfg.MaxSubscriptions,
		maxTopicBytes:  cfg.MaxTopicBytes,
		maxTopicLevels: cfg.MaxTopicLevels,
		capLog:         LogSampler{Every: 10 * time.Second},
		maxStall:       cfg.MaxStall,
	}
	if b.maxStall == 0 {
		b.maxStall = DefaultMaxStall
	}
	b.forwardSeed = cfg.ForwardSeedFrames
	b.maxOffline = cfg.MaxOfflineSessions
	if b.maxOffline <= 0 {
		b.maxOffline = DefaultMaxOfflineSessions
	}
	if b.rights == nil {
		b.rights = storeRights{store: cfg.Store, watcher: cfg.Watcher}
	}
	b.routerBacklog, _ = cfg.Router.(backlogger)
	b.tokens.init()
	b.sessions.init()
	b.scratch.New = func() any { return &matchScratch{subs: make([]*Subscription, 0, 64)} }
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
	var waited int64
	for fn := range b.background {
		if hold := b.cleanupHold.Load(); hold > waited {
			waited = hold
			if d := time.Duration(hold - monotonicNow()); d > 0 {
				time.Sleep(d)
			}
		}
		fn()
	}
}

// cleanupDelay is how long the cluster cleanup of sessions a rights change
// closed (their lease releases and route withdrawals, a Redis round trip
// each, and for a route a note every peer applies and confirms) waits
// after the last such close. A profile of 2,000 sessions revoked over 3
// nodes on 2 cores found that cleanup taking as much CPU, on every node and
// in Redis, as writing the close frames it ran beside: the clients got
// their closes later. Meanwhile the closed sessions' routes may bring a
// message or two that no local session wants (dropped), and their leases
// count against tokens whose sessions were revoked. A session a client
// closed is cleaned up at once, so that its reconnect finds its slot free.
const cleanupDelay = 100 * time.Millisecond

// holdCleanup makes the background goroutine wait cleanupDelay from now
// before its next cleanup (closeLocked, for a revocation).
func (b *Broker) holdCleanup() {
	if b.router == nil && b.limiter == nil {
		return
	}
	b.cleanupHold.Store(monotonicNow() + int64(cleanupDelay))
}

// monotonicNow is nanoseconds on the monotonic clock since the process
// started.
func monotonicNow() int64 { return int64(time.Since(processStart)) }

var processStart = time.Now()

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
	Tags       []string // subscriptions requested at connect (seed: the Tag header); may be empty for Open
	RemoteAddr string
	Protocol   string // "seed", "mqtt3", "mqtt5": the connections gauge's label and the admin listing
	ClientID   string // MQTT client identifier, shown by the admin API
	Username   string // MQTT user name: a free label, shown by the admin API
	// NoLocal applies to the subscriptions requested at connect.
	NoLocal bool
	// OnRevoke is what enforcement does when a rights change uncovers one
	// of the session's subscriptions.
	OnRevoke RevokePolicy
	// ReadEnds: the transport reports the end of each read's messages
	// (OnReadEnd, as netpoll does), so a seed session may hold a run of
	// publishes to one topic until then (run.go).
	ReadEnds bool

	seed bool // the seed protocol's tag rule applies to Tags
}

// Open admits a client of any protocol through its adapter's endpoint: it
// authenticates the secret, checks the subscriptions requested at connect
// (if any) against the token's grants, takes a connection slot and
// subscribes. On refusal the error is a *Rejection (or a store error, for
// which the adapter answers "unavailable") and nothing was kept. More
// subscriptions come with Session.Subscribe.
func (b *Broker) Open(ep Endpoint, req ConnectRequest) (*Session, error) {
	s := &Session{}
	if err := b.open(s, ep, req); err != nil {
		return nil, err
	}
	return s, nil
}

// open admits into s, which the adapter allocated (the seed adapter embeds
// it). Everything proportional to the request (validation, deduplication,
// the grant checks, subscribing) happens outside the token's mutex; see the
// package documentation.
func (b *Broker) open(s *Session, ep Endpoint, req ConnectRequest) error {
	if len(req.Secret) == 0 {
		b.metrics.connects[resultAuth].Inc()
		return reject(CauseBadCredentials, "missing token")
	}
	// The cap comes first, before any per-tag work: whatever the request,
	// a refusal costs O(1).
	if len(req.Tags) > b.maxSubs {
		return b.refuseCap(req, "too many tags: "+strconv.Itoa(len(req.Tags))+" > "+strconv.Itoa(b.maxSubs))
	}
	for _, f := range req.Tags {
		if reason, overCap := b.checkFilter(f, req.seed); reason != "" {
			if overCap {
				return b.refuseCap(req, reason)
			}
			b.metrics.connects[resultForbidden].Inc()
			return reject(CauseInvalid, reason)
		}
	}
	filters := dedupFilters(req.Tags)
	if b.available != nil && !b.available() {
		b.metrics.connects[resultError].Inc()
		return reject(CauseTryAgain, "node cannot verify rights right now, retry")
	}
	hash := acl.HashSecret(req.Secret)
	for attempt := 0; ; attempt++ {
		ts, err := b.tokens.lookup(b, hash)
		if err != nil {
			if errors.Is(err, acl.ErrNotFound) {
				b.metrics.connects[resultAuth].Inc()
				return reject(CauseBadCredentials, "invalid token")
			}
			b.metrics.connects[resultError].Inc()
			if errors.Is(err, errTokenChanging) {
				return reject(CauseTryAgain, "rights are being changed, retry")
			}
			return fmt.Errorf("broker: loading token: %w", err)
		}
		ok, rej, retry := b.admit(s, ep, ts, hash, req, filters)
		if retry && attempt < 3 {
			continue // the cached token changed under us: read it again
		}
		if rej != nil {
			return rej
		}
		if !ok {
			b.metrics.connects[resultAuth].Inc()
			return reject(CauseBadCredentials, "invalid token")
		}
		if err := b.subscribe(s); err != nil {
			b.log.Warn("cluster route unavailable; refusing the connection", "err", err)
			return reject(CauseUnavailable, "cluster routing unavailable, retry")
		}
		return nil
	}
}

// checkFilter judges one requested filter, cheapest rules first: its
// length (O(1)) before anything that reads it. It returns why f is refused
// ("" if it is not), and whether that is for exceeding a configured cap.
func (b *Broker) checkFilter(f string, seed bool) (reason string, overCap bool) {
	const shown = 40 // bytes of a tag refused for its size shown in the reason
	if len(f) > b.maxTopicBytes {
		return tagReasonShown("tag ", f, " is too long: "+strconv.Itoa(len(f))+" > "+strconv.Itoa(b.maxTopicBytes)+" bytes", shown), true
	}
	if n := strings.Count(f, "/") + 1; n > b.maxTopicLevels {
		return tagReasonShown("tag ", f, " has too many levels: "+strconv.Itoa(n)+" > "+strconv.Itoa(b.maxTopicLevels), shown), true
	}
	if seed {
		// The seed protocol's own rule (proto owns it): the likeliest
		// mistake behind a space is an unencoded '+' in a query string.
		if proto.ValidateSeedTag(f) != nil {
			return tagReason("invalid tag ", f, ": spaces and control characters are not allowed (encode '+' as %2B)"), false
		}
	}
	if err := topic.ValidateFilter(f); err != nil {
		// topic's messages are safe for clients; drop the package prefix
		return tagReason("invalid tag ", f, ": "+strings.TrimPrefix(err.Error(), "topic: ")), false
	}
	return "", false
}

// refuseCap counts and logs (sampled: clients trigger it at will) a
// connect refused for exceeding a cap, and returns its rejection.
func (b *Broker) refuseCap(req ConnectRequest, reason string) *Rejection {
	b.metrics.connects[resultForbidden].Inc()
	reason = closeReason(reason)
	b.capLog.Log(b.log, slog.LevelWarn, "connection refused: over a subscription cap (--max-subscriptions, --max-topic-bytes, --max-topic-levels)",
		"remote", req.RemoteAddr, "reason", reason)
	return reject(CauseInvalid, reason)
}

// admitAttempts bounds how often admission re-checks grants that changed
// while it was checking them (only admin writes change them).
const admitAttempts = 8

// admit checks filters against the token's grants, then takes the token's
// lock only to re-check that the token and its grants are the ones checked,
// check the limit and register the session. retry reports that ts was
// replaced meanwhile. The session's filters are not in the index yet: the
// caller subscribes it.
func (b *Broker) admit(s *Session, ep Endpoint, ts *tokenState, hash acl.Hash, req ConnectRequest, filters []string) (ok bool, rej *Rejection, retry bool) {
	*s = Session{
		id:          b.nextID.Add(1),
		b:           b,
		ep:          ep,
		token:       ts,
		remote:      req.RemoteAddr,
		connectedAt: time.Now().UnixNano(),
		proto:       protocolIndex(req.Protocol),
		policy:      req.OnRevoke,
		readEnds:    req.ReadEnds,
	}
	if req.ClientID != "" || req.Username != "" {
		s.ext.Store(&sessionExt{clientID: req.ClientID, username: req.Username, remote: s.remote, at: s.connectedAt})
	}
	if len(filters) > 0 {
		// Visible to enforcement from registration on, before they enter
		// the index (see subscribe).
		s.subs = make([]*Subscription, len(filters))
		for i, f := range filters {
			s.subs[i] = newSubscription(s, f, SubOptions{NoLocal: req.NoLocal})
		}
		if len(filters) > 1 {
			s.multi.Store(true)
		}
	}
	g := ts.grants.Load()
	for attempt := 1; ; attempt++ {
		denied, uncovered := firstUncovered(g, filters)
		if b.hookChecked != nil {
			b.hookChecked()
		}
		ts.mu.Lock()
		if ts.gone {
			ts.mu.Unlock()
			return false, nil, true
		}
		if ts.hash != hash || ts.disabled {
			ts.mu.Unlock()
			b.metrics.connects[resultAuth].Inc()
			return false, reject(CauseBadCredentials, "invalid token"), false
		}
		if cur := ts.grants.Load(); cur != g {
			// RefreshTokens swapped the grants while we checked: check the
			// new ones (outside the lock again). Anything admitted from
			// here on was checked against the grants in place, which is
			// what lets RefreshTokens judge sessions outside the lock.
			ts.mu.Unlock()
			if attempt == admitAttempts {
				b.metrics.connects[resultError].Inc()
				return false, reject(CauseTryAgain, "rights are being changed, retry"), false
			}
			g = cur
			continue
		}
		if uncovered {
			ts.mu.Unlock()
			b.metrics.connects[resultForbidden].Inc()
			return false, reject(CauseNotAuthorized, tagReason("tag not permitted: ", denied, "")), false
		}
		break
	}
	defer ts.mu.Unlock()
	if ts.maxConns > 0 && len(ts.sessions) >= ts.maxConns {
		b.metrics.connects[resultLimit].Inc()
		return false, reject(CauseLimit, "connection limit reached"), false
	}
	if ts.maxConns > 0 && b.limiter != nil {
		// Under ts.mu: this node's connects of one token take their
		// cluster slot one at a time, other tokens are not held up. It is
		// one round trip per connect (not proportional to the request), and
		// taking the slot outside would let a Trim count a slot whose
		// session it cannot see yet.
		ctx, cancel := context.WithTimeout(context.Background(), b.storeTimeout)
		ok, err := b.limiter.Acquire(ctx, ts.id, ts.maxConns)
		cancel()
		switch {
		case err != nil:
			b.metrics.connects[resultError].Inc()
			b.log.Warn("cluster connection lease unavailable; refusing the connection", "token_id", ts.id, "err", err)
			return false, reject(CauseUnavailable, "connection limit unavailable, retry"), false
		case !ok:
			b.metrics.connects[resultLimit].Inc()
			return false, reject(CauseLimit, "connection limit reached"), false
		}
		s.leased = true
	}
	ts.sessions[s] = struct{}{}
	b.sessions.put(s)
	b.metrics.connects[resultAccepted].Inc()
	b.metrics.connections[s.proto].Inc()
	return true, nil, false
}

// firstUncovered returns a filter g does not allow.
func firstUncovered(g *acl.Grants, filters []string) (string, bool) {
	for _, f := range filters {
		if !g.CanSubscribe(f) {
			return f, true
		}
	}
	return "", false
}

// subscribe puts the filters admission registered with s in the index, one
// at a time under s.subMu, then (cluster mode) makes them routable from
// every node, outside every lock.
//
// A revocation (or a kick) may close s meanwhile. The filters were visible
// to enforcement from registration on (s.subs), so a rights change judged
// them; whoever closes s removes from the index what was inserted so far
// (subs[:inIndex]) and marks the list done, which stops the insertion here:
// nothing is left behind and nothing is removed twice. Until then dispatch
// already skips s, since closed is set before the closer gets there.
func (b *Broker) subscribe(s *Session) error {
	n := len(s.subs)
	for i := 0; i < n; i++ {
		if b.hookSubscribing != nil {
			b.hookSubscribing(s, i)
		}
		s.subMu.Lock()
		if s.subsDone {
			s.subMu.Unlock()
			return nil
		}
		b.indexAdd(s.subs[i])
		s.inIndex++
		b.metrics.subscriptions.Inc() // under subMu: see unsubscribeAll
		s.subMu.Unlock()
	}
	if b.hookSubscribing != nil {
		b.hookSubscribing(s, n)
	}
	var err error
	if b.router != nil && n > 0 {
		err = b.route(s)
	}
	if s.closed.Load() {
		// Closed meanwhile: its closer's cleanup may still be queued; do
		// it now (the first call does it), so an admission that returns
		// leaves nothing of a closed session in the index.
		s.unsubscribeAll()
	}
	return err
}

// route makes s's connect-time subscriptions routable from every node
// before the connection is admitted. On failure it ends s without a close
// frame (the caller answers with the rejection); ending it gives back the
// routes taken so far.
func (b *Broker) route(s *Session) error {
	s.subMu.Lock()
	filters := make([]string, s.inIndex)
	for i, sub := range s.subs[:s.inIndex] {
		filters[i] = sub.match()
	}
	s.subMu.Unlock()
	for _, f := range filters {
		if err := s.addRoute(f); err != nil {
			s.end(CauseNone, "", revokeNone)
			return err
		}
	}
	return nil
}

// dedupFilters returns tags without repeats, in the order given, in O(n):
// a short list (the usual case) is compared pairwise, at most
// dedupLinear²/2 comparisons and no map; a longer one goes through a set.
func dedupFilters(tags []string) []string {
	const dedupLinear = 16
	out := make([]string, 0, len(tags))
	if len(tags) <= dedupLinear {
		for _, t := range tags {
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
		return out
	}
	seen := make(map[string]struct{}, len(tags))
	for _, t := range tags {
		if _, dup := seen[t]; !dup {
			seen[t] = struct{}{}
			out = append(out, t)
		}
	}
	return out
}

// matchScratch is a publisher's reusable buffer for index results.
type matchScratch struct {
	subs  []*Subscription
	multi []*Subscription
	ids   []uint32 // merged subscription identifiers
	fwd   []byte   // the forwarded form of the message
	// one holds dispatch's message, so that one message and a run take
	// the same path (dispatchMessages) with nothing allocated.
	one [1]*Message
	// parts is the first seed recipient's view of a run, and runFrame the
	// run's seed frames in one shared Frame for the others
	// (SeedSession.deliverRun); the dispatch releases runFrame.
	parts    [][]byte
	runFrame *proto.Frame
}

// takeScratch returns a match scratch for one dispatch: the one the
// publishing connection's read holds (p.scratch), else one from the pool.
// It is taken out of p while in use, so a dispatch nested in a delivery
// (none today) would get a scratch of its own.
func (b *Broker) takeScratch(p *Publisher) *matchScratch {
	if p != nil && p.scratch != nil {
		sc := p.scratch
		p.scratch = nil
		return sc
	}
	return b.scratch.Get().(*matchScratch)
}

// DeliverRemote hands a message another node forwarded (its forwarded
// form, see appendForward) to the local subscribers of topic t. It is what
// the cluster router calls; msg is only read during the call.
func (b *Broker) DeliverRemote(t string, msg []byte) {
	m := AcquireMessage()
	var dec proto.SeedDecoder
	if !parseForward(msg, m, &dec) {
		ReleaseMessage(m)
		b.metrics.forwardErrors.Inc()
		return
	}
	m.Topic = t
	b.dispatch(m, false)
	ReleaseMessage(m)
}

// match returns the subscription records m's topic matches: the index's
// answer, or, for a message with a Publisher, that Publisher's match memo
// when it holds the topic at the index's current generation (see
// Publisher). The generation is loaded before Match, so a memo made now is
// dropped by the first change that completes after that load. The result
// is read only: it is the scratch's slice or the memo's.
func (b *Broker) match(m *Message, sc *matchScratch) []*Subscription {
	p := m.pub
	if p == nil {
		sc.subs = b.index.Match(m.Topic, sc.subs[:0])
		return sc.subs
	}
	g := b.index.Generation()
	if subs, ok := p.memoized(m.Topic, g); ok {
		return subs
	}
	sc.subs = b.index.Match(m.Topic, sc.subs[:0])
	p.memoize(m.Topic, g, sc.subs)
	return sc.subs
}

// dispatch delivers m to every local subscription matching its topic (the
// publisher's own only where the subscription allows it: seed never, MQTT
// unless No Local), once per session, then, when forward is set (the
// message was published on this node), to the other nodes that route it.
// Each protocol's encoding is made once, on first use, and shared.
func (b *Broker) dispatch(m *Message, forward bool) (delivered int, backlog <-chan struct{}) {
	sc := b.takeScratch(m.pub)
	sc.one[0] = m
	return b.dispatchMessages(sc, sc.one[:], forward)
}

// dispatchRun is dispatch for a run: messages of one publisher (the same
// session and Publisher) to one topic, with the same QoS and retain flag,
// in publish order (Publisher.hold). The topic is matched once, and each
// subscriber whose endpoint takes runs (runEndpoint) gets them all in one
// call: one lock and one first touch of its session and outbox per run,
// not per message. Everything decided per message still is: a shared
// group's member is picked for each message. Each subscriber gets the run's
// messages in order, as it would one dispatch at a time.
func (b *Broker) dispatchRun(ms []*Message, forward bool) (delivered int, backlog <-chan struct{}) {
	return b.dispatchMessages(b.takeScratch(ms[0].pub), ms, forward)
}

// dispatchMessages is dispatch and dispatchRun: ms are one message, or a
// run (same publisher, topic, QoS and retain flag), delivered with the
// match scratch sc, which it gives back.
func (b *Broker) dispatchMessages(sc *matchScratch, ms []*Message, forward bool) (delivered int, backlog <-chan struct{}) {
	m := ms[0] // what the run's messages share: topic, publisher, QoS
	subs := b.match(m, sc)
	sc.multi = sc.multi[:0]
	var c dispatchCounts // added to the metrics (or the Publisher) once
	for _, sub := range subs {
		if sub.s == nil {
			// a shared subscription group's entry: one member gets each
			// message (No Local does not apply to shared subscriptions)
			for _, m := range ms {
				s := sub.shared.g.pick()
				if s == nil {
					break
				}
				n, ok, bl := s.s.ep.Deliver(m, Delivery{QoS: min(m.QoS, s.opts.QoS), SubIDs: s.subIDs()})
				c.add(s.s.proto, n, ok)
				if backlog == nil {
					backlog = bl
				}
			}
			continue
		}
		s := sub.s
		if s.closed.Load() || (s == m.from && sub.opts.NoLocal) {
			continue
		}
		if s.multi.Load() {
			// a session with several subscriptions may match more than
			// once: deliver those after merging their matches.
			sc.multi = append(sc.multi, sub)
			continue
		}
		d := Delivery{QoS: min(m.QoS, sub.opts.QoS), RetainAsPublished: sub.opts.RetainAsPublished, SubIDs: sub.subIDs()}
		if bl := deliverTo(s, ms, d, sc, &c); backlog == nil {
			backlog = bl
		}
	}
	if len(sc.multi) > 0 {
		if len(sc.multi) > 1 {
			slices.SortFunc(sc.multi, compareSubscriptions)
		}
		for i := 0; i < len(sc.multi); {
			s := sc.multi[i].s
			d := Delivery{}
			sc.ids = sc.ids[:0]
			for ; i < len(sc.multi) && sc.multi[i].s == s; i++ {
				o := sc.multi[i].opts
				d.QoS = max(d.QoS, min(m.QoS, o.QoS))
				d.RetainAsPublished = d.RetainAsPublished || o.RetainAsPublished
				if o.ID != 0 {
					sc.ids = append(sc.ids, o.ID)
				}
			}
			d.SubIDs = sc.ids
			if bl := deliverTo(s, ms, d, sc, &c); backlog == nil {
				backlog = bl
			}
		}
	}
	if forward && b.router != nil {
		for _, m := range ms {
			if b.forwardSeed {
				sc.fwd = append(sc.fwd[:0], m.Frame(EncodingSeed, appendSeed).B...)
			} else {
				sc.fwd = appendForward(sc.fwd[:0], m)
			}
			if err := b.router.Forward(context.Background(), m.Topic, sc.fwd); err != nil {
				b.metrics.forwardErrors.Inc()
			}
		}
		if backlog == nil && b.routerBacklog != nil {
			backlog = b.routerBacklog.Backlog()
		}
	}
	for _, m := range ms {
		m.releaseFrames()
	}
	if sc.runFrame != nil {
		sc.runFrame.Release()
		sc.runFrame = nil
	}
	sc.one[0] = nil
	clear(sc.subs) // do not keep sessions reachable from the pool
	sc.subs = sc.subs[:0]
	clear(sc.multi)
	if cap(sc.fwd) > 64<<10 {
		sc.fwd = nil
	}
	if p := m.pub; p != nil {
		p.scratch = sc // kept for the read's next publish (flush gives it back)
		// the publishing connection adds the counts once per read
		for seen := c.seen; seen != 0; seen &= seen - 1 {
			i := bits.TrailingZeros8(seen)
			p.deliveries[i] += uint32(c.delivered[i])
			p.dropped[i] += uint32(c.dropped[i])
		}
		p.bytesOut += uint64(c.bytes)
		return c.total, backlog
	}
	b.scratch.Put(sc)
	for seen := c.seen; seen != 0; seen &= seen - 1 {
		i := bits.TrailingZeros8(seen)
		if n := c.delivered[i]; n > 0 {
			b.metrics.deliveries[i].Add(float64(n))
		}
		if n := c.dropped[i]; n > 0 {
			b.metrics.dropped[i].Add(float64(n))
		}
	}
	if c.bytes > 0 {
		b.metrics.bytesOut.Add(float64(c.bytes))
	}
	return c.total, backlog
}

// deliverTo hands s the messages ms (one, or a run) with what it is owed,
// d, and counts the outcome in c: a run in one call when s's endpoint takes
// runs, else one Deliver per message. It returns the first backlog
// reported.
func deliverTo(s *Session, ms []*Message, d Delivery, sc *matchScratch, c *dispatchCounts) (backlog <-chan struct{}) {
	if len(ms) == 1 { // one message: the usual case, with no call besides Deliver
		n, ok, bl := s.ep.Deliver(ms[0], d)
		c.add(s.proto, n, ok)
		return bl
	}
	if re, ok := s.ep.(runEndpoint); ok {
		n, queued, bl := re.deliverRun(ms, d, sc)
		c.addRun(s.proto, n, queued, len(ms)-queued)
		return bl
	}
	n, queued, backlog := deliverEach(s.ep, ms, d)
	c.addRun(s.proto, n, queued, len(ms)-queued)
	return backlog
}

// deliverEach hands ep the messages ms one Deliver each. It returns the
// bytes queued, how many were queued and the first backlog reported.
func deliverEach(ep Endpoint, ms []*Message, d Delivery) (n, queued int, backlog <-chan struct{}) {
	for _, m := range ms {
		k, ok, bl := ep.Deliver(m, d)
		if ok {
			n += k
			queued++
		}
		if backlog == nil {
			backlog = bl
		}
	}
	return n, queued, backlog
}

// dispatchCounts are one dispatch's deliveries and drops per subscriber
// protocol; seen marks the protocols with a count, so that adding them up
// costs one step per protocol that had a subscriber, not one per protocol.
type dispatchCounts struct {
	delivered, dropped [len(protocolNames)]int
	total, bytes       int // deliveries of every protocol; their bytes
	seen               uint8
}

// seen has a bit per protocol: this fails to compile past 8 of them.
var _ [8 - len(protocolNames)]struct{}

// add counts one Deliver to a subscriber of protocol proto: n bytes when
// ok, a drop otherwise.
func (c *dispatchCounts) add(proto uint8, n int, ok bool) {
	c.seen |= 1 << proto
	if ok {
		c.delivered[proto]++
		c.total++
		c.bytes += n
	} else {
		c.dropped[proto]++
	}
}

// addRun counts a run delivered to a subscriber of protocol proto: queued
// messages of n bytes in all, dropped refused.
func (c *dispatchCounts) addRun(proto uint8, n, queued, dropped int) {
	c.seen |= 1 << proto
	c.delivered[proto] += queued
	c.dropped[proto] += dropped
	c.total += queued
	c.bytes += n
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

func compareSubscriptions(a, b *Subscription) int { return compareSessions(a.s, b.s) }

// Publish delivers a message to every matching session, on every node, as
// if published by no client (server-side publishers). The topic must be a
// valid publish topic; message is embedded as JSON for seed subscribers
// when it is JSON text, as a JSON string otherwise.
func (b *Broker) Publish(t string, message []byte) (int, error) {
	if err := topic.ValidateTopic(t); err != nil {
		return 0, err
	}
	m := AcquireMessage()
	m.Topic = t
	m.Payload = message
	n, _ := b.dispatch(m, true)
	ReleaseMessage(m)
	return n, nil
}

// Connections lists live sessions, all of them or those of one token.
func (b *Broker) Connections(tokenID int64) []ConnectionInfo {
	// Collect under the session table's shard locks (closing a session
	// needs them, under its token's lock), describe outside: copying each
	// session's filters is proportional to what its client asked for.
	var sessions []*Session
	b.sessions.each(func(s *Session) {
		if tokenID == 0 || s.token.id == tokenID {
			sessions = append(sessions, s)
		}
	})
	out := make([]ConnectionInfo, 0, len(sessions))
	for _, s := range sessions {
		out = append(out, s.info())
	}
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
func (b *Broker) CloseAll(cause Cause, reason string) int {
	var all []*Session
	b.sessions.each(func(s *Session) { all = append(all, s) })
	n := 0
	for _, s := range all {
		if s.end(cause, reason, revokeNone) {
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
	return s.end(CauseKicked, "closed by administrator", revokeKick)
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
	defer func() {
		b.metrics.enforce.Observe(time.Since(start).Seconds())
		b.deliveredAfter(start)
	}()
	var errs []error
	for _, id := range ids {
		if err := b.refreshToken(ctx, id, 0); err != nil {
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
		if s.closeLocked(CauseLimit, reasonLimitLowered, revokeLimit) {
			unsub = append(unsub, s)
		}
	}
	return unsub
}

// refreshToken enforces token id's rights at version minVersion or later
// (0: whatever the source reads now) on its sessions.
func (b *Broker) refreshToken(ctx context.Context, id, minVersion int64) error {
	ts := b.tokens.byIDGet(id)
	if ts == nil {
		return nil // not cached: no live session, and the next connect reads the store
	}
	// One refresh of a token at a time: the last read is the last
	// installed (two refreshes racing could otherwise install an older read
	// over a newer one), and the two locked phases below never interleave
	// with another refresh's. Connects and closes do not take refreshMu.
	ts.refreshMu.Lock()
	defer ts.refreshMu.Unlock()
	r, err := b.rights.Current(ctx, id, ts.hash, minVersion)
	gone := errors.Is(err, acl.ErrNotFound)
	if err != nil && !gone {
		return err
	}
	if !gone {
		gone = r.Gone != acl.NotGone
		if !gone && r.ID != id {
			return fmt.Errorf("rights source answered token %d for token %d", r.ID, id)
		}
		if !gone && r.Version != 0 && r.Version <= ts.version.Load() {
			// What is in force is this version or a newer one: an older
			// copy (a reordered or late read) never replaces it, and the
			// same version was enforced when it was installed.
			return nil
		}
	}
	var g *acl.Grants
	if !gone && !r.Disabled {
		g = acl.CompileGrants(r.Grants) // outside the lock: O(grants)
	}
	tok := r.Token()
	rotated := !gone && tok.Hash != ts.hash || r.Gone == acl.GoneRotated

	var unsub []*Session
	ts.mu.Lock()
	if g == nil || rotated {
		reason := reasonTokenRotated
		switch {
		case rotated:
		case gone:
			reason = reasonTokenDeleted
		case tok.Disabled:
			reason = reasonTokenDisabled
		}
		ts.gone = true
		b.tokens.remove(ts)
		b.rights.Forget(ts.id, ts.hash)
		for s := range ts.sessions {
			if s.closeLocked(CauseTokenChanged, reason, revokeToken) {
				unsub = append(unsub, s)
			}
		}
		for s := range ts.offline { // persistent sessions are discarded too
			if s.closeLocked(CauseTokenChanged, reason, revokeToken) {
				unsub = append(unsub, s)
			}
		}
		ts.mu.Unlock()
		b.released(id, unsub)
		return nil
	}
	// A disabled token seen by a refused connect is cached disabled;
	// re-enabling it lands here.
	ts.disabled = false
	ts.name = tok.Name
	ts.maxConns = tok.MaxConnections
	ts.version.Store(r.Version)
	ts.grants.Store(g) // from here on every publish and every admission is judged by g
	open := make([]*Session, 0, len(ts.sessions))
	for s := range ts.sessions {
		open = append(open, s)
	}
	offline := offlineOf(ts)
	ts.mu.Unlock()
	for _, s := range offline {
		b.dropRevoked(s, g) // nobody to disconnect: the uncovered subscriptions go
	}

	// Which sessions does g no longer cover? Outside the lock: it reads
	// every filter of every session. Sessions admitted from here on were
	// checked against g already (admission re-checks the grants pointer
	// under the lock); those closed meanwhile need nothing.
	type cut struct {
		s      *Session
		reason string
	}
	var uncovered []cut
	for _, s := range open {
		if s.closed.Load() {
			continue
		}
		if s.policy == RevokeUnsubscribe {
			b.dropRevoked(s, g)
			continue
		}
		if f, ok := s.uncovered(g); ok {
			uncovered = append(uncovered, cut{s, tagReason("tag no longer permitted: ", f, "")})
		}
	}

	ts.mu.Lock()
	// Uncovered sessions go first, then the limit applies to what is left,
	// so a session closed for its subscriptions does not count against it.
	for _, u := range uncovered {
		if u.s.closeLocked(CauseNotAuthorized, u.reason, revokeSubscription) {
			unsub = append(unsub, u.s)
		}
	}
	if ts.maxConns > 0 && b.limiter != nil {
		unsub = b.trimClusterLocked(ctx, ts, unsub)
	}
	if over := len(ts.sessions) - ts.maxConns; ts.maxConns > 0 && over > 0 {
		for _, s := range newestFirst(ts)[:over] {
			if s.closeLocked(CauseLimit, reasonLimitLowered, revokeLimit) {
				unsub = append(unsub, s)
			}
		}
	}
	ts.mu.Unlock()
	b.released(id, unsub)
	return nil
}

// GrantReader is the store read RefreshGrant needs (acl.Store implements
// it): one grant, acl.ErrNotFound when the token holds none on that tag.
type GrantReader interface {
	GetGrant(ctx context.Context, tokenID, tagID int64) (acl.Grant, error)
}

// RefreshGrant enforces a change of one grant — the token's permission on
// one tag set, changed or removed — in O(levels × log grants): it reads that
// grant alone and derives the token's new grants from the ones it holds
// (acl.Grants.With / Without) instead of re-reading and recompiling every
// grant, which makes building a token with 10,000 grants linear rather than
// quadratic. Only a removed or re-patterned tag can uncover a subscription;
// those sessions are closed with 4003 as RefreshTokens does. A store
// without GetGrant, or a token whose cached grants cannot be derived, falls
// back to RefreshTokens. Callers serialize writes to one token (the admin
// API's write lock), so the grant read here is the latest.
func (b *Broker) RefreshGrant(ctx context.Context, tokenID, tagID int64) error {
	gr, ok := b.store.(GrantReader)
	if !ok {
		return b.RefreshTokens(ctx, tokenID)
	}
	b.tokens.gen.Add(1) // as RefreshTokens: a token load in flight must not be cached
	start := time.Now()
	defer func() {
		b.metrics.enforce.Observe(time.Since(start).Seconds())
		b.deliveredAfter(start)
	}()
	ts := b.tokens.byIDGet(tokenID)
	if ts == nil {
		return nil // not cached: no live session, and the next connect reads the store
	}
	ts.refreshMu.Lock()
	defer ts.refreshMu.Unlock()
	grant, err := gr.GetGrant(ctx, tokenID, tagID)
	removed := errors.Is(err, acl.ErrNotFound)
	if err != nil && !removed {
		return err
	}
	ts.mu.Lock()
	if ts.gone || ts.disabled {
		ts.mu.Unlock()
		return nil // no session is live under a disabled token; a gone one was replaced
	}
	old := ts.grants.Load()
	g := old
	if removed {
		g = old.Without(tagID)
	} else {
		g = old.With(grant)
	}
	if g == old {
		ts.mu.Unlock()
		return nil
	}
	prev, had := old.Grant(tagID)
	// The grants in force are now newer than any version seen: unknown,
	// so that the next refresh applies whatever it reads.
	ts.version.Store(0)
	ts.grants.Store(g) // from here on every publish and every admission is judged by g
	narrowed := had && (removed || prev.Pattern != grant.Pattern)
	var open, offline []*Session
	if narrowed {
		open = make([]*Session, 0, len(ts.sessions))
		for s := range ts.sessions {
			open = append(open, s)
		}
		offline = offlineOf(ts)
	}
	ts.mu.Unlock()
	if !narrowed {
		return nil // a grant added, widened or downgraded: nothing to close
	}
	for _, s := range offline {
		b.dropRevoked(s, g)
	}
	var unsub []*Session
	var closing []*Session
	var reasons []string
	for _, s := range open {
		if s.closed.Load() {
			continue
		}
		if s.policy == RevokeUnsubscribe {
			b.dropRevoked(s, g)
			continue
		}
		if f, ok := s.uncovered(g); ok {
			closing = append(closing, s)
			reasons = append(reasons, tagReason("tag no longer permitted: ", f, ""))
		}
	}
	if len(closing) == 0 {
		return nil
	}
	ts.mu.Lock()
	for i, s := range closing {
		if s.closeLocked(CauseNotAuthorized, reasons[i], revokeSubscription) {
			unsub = append(unsub, s)
		}
	}
	ts.mu.Unlock()
	b.released(tokenID, unsub)
	return nil
}

// released finishes, outside the token's lock, the sessions a rights change
// closed. They are closed already - their slots are free, their close frames
// queued, publishes skip them - so what is left is cleanup, and it does not
// hold up the rights change: removing their subscriptions from the index is
// O(sessions × filters), which a token's clients choose (thousands of
// half-closed sessions with a thousand tags each, say), so it runs on its
// own goroutine. The lease release is O(1) and stays here.
func (b *Broker) released(id int64, closed []*Session) {
	for _, s := range closed {
		s.releaseSlot()
	}
	if len(closed) > 0 {
		go func() {
			for _, s := range closed {
				s.unsubscribeAll()
			}
		}()
		b.log.Info("rights change enforced", "token_id", id, "sessions_closed", len(closed))
	}
}

// dropRevoked removes the subscriptions of a RevokeUnsubscribe session that
// g no longer covers; the session stays.
func (b *Broker) dropRevoked(s *Session, g *acl.Grants) {
	if n := s.dropUncovered(g); n > 0 {
		b.metrics.revocations[revokeSubscription].Add(float64(n))
	}
}

// offlineOf copies the token's offline sessions. Caller holds ts.mu.
func offlineOf(ts *tokenState) []*Session {
	if len(ts.offline) == 0 {
		return nil
	}
	out := make([]*Session, 0, len(ts.offline))
	for s := range ts.offline {
		out = append(out, s)
	}
	return out
}
