package broker

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/topic"
)

// Endpoint is a protocol adapter's side of a session: how the core hands it
// messages and ends it. The seed adapter (SeedSession) and the MQTT adapter
// implement it.
type Endpoint interface {
	// Deliver hands the endpoint a message matched by its subscriptions.
	// It is called on publishers' goroutines, concurrently, and must not
	// block; m is valid only during the call (take shared bytes with
	// m.Frame, copy anything else). It returns the bytes queued (0 when
	// dropped), whether the message was queued, and a backlog channel
	// when the endpoint's transport is past its soft output limit (the
	// publisher then stalls; see stall.go).
	Deliver(m *Message, d Delivery) (n int, ok bool, backlog <-chan struct{})
	// End is called at most once, when the core ends the session for
	// cause (a rights change, a kick, a limit, a takeover): the endpoint
	// answers in its protocol and closes its transport. It is called under
	// the token's lock, so it must be O(1) and must not call back into
	// the session. It is not called when the client ended the session
	// (Session.Close).
	End(cause Cause, reason string)
}

// Describer is an Endpoint that names its client for the admin listing
// (an MQTT client identifier and user name), so the core keeps no copy.
type Describer interface {
	Describe() (clientID, username string)
}

// RevokePolicy says what enforcement does to a live session whose
// subscription a rights change no longer covers.
type RevokePolicy uint8

const (
	// RevokeClose ends the session with CauseNotAuthorized (seed 4003,
	// MQTT DISCONNECT 0x87): the default.
	RevokeClose RevokePolicy = iota
	// RevokeUnsubscribe drops only the uncovered subscriptions and keeps
	// the session (MQTT --mqtt-on-revoke=unsubscribe).
	RevokeUnsubscribe
)

// SubOptions are one subscription's options.
type SubOptions struct {
	QoS               byte // the granted maximum QoS
	NoLocal           bool // never deliver the session's own publishes
	RetainAsPublished bool
	RetainHandling    byte   // MQTT 5: 0 send retained, 1 only if new, 2 never
	ID                uint32 // MQTT 5 subscription identifier; 0 none
}

// Subscription is one (session, filter) entry of the topic index, or a
// shared subscription group's entry (group set, s nil).
type Subscription struct {
	s      *Session
	filter string    // as subscribed ("$share/g/f" for a shared one)
	shared *shareRef // nil unless shared
	opts   SubOptions
}

// shareRef is what a shared subscription (or its group's index entry) adds.
type shareRef struct {
	group string      // the group's name
	match string      // the filter in the index: f of "$share/g/f"
	g     *shareGroup // set on the group's index entry only
}

// match is the filter the subscription has in the index (and that grants judge).
func (sub *Subscription) match() string {
	if sub.shared != nil {
		return sub.shared.match
	}
	return sub.filter
}

// Filter is the subscription's topic filter.
func (sub *Subscription) Filter() string { return sub.filter }

// Options are the subscription's options.
func (sub *Subscription) Options() SubOptions { return sub.opts }

func (sub *Subscription) subIDs() []uint32 {
	if sub.opts.ID == 0 {
		return nil
	}
	return unsafe.Slice(&sub.opts.ID, 1)
}

func newSubscription(s *Session, filter string, opts SubOptions) *Subscription {
	sub := &Subscription{s: s, filter: filter, opts: opts}
	if group, f, ok := ParseShared(filter); ok {
		sub.shared = &shareRef{group: group, match: f}
	}
	return sub
}

// Session is one admitted client connection, in protocol-neutral terms: its
// token, its subscriptions, and the endpoint its protocol adapter provides.
//
// Concurrency: Publish is called by the adapter serially (its transport's
// goroutine); Subscribe, Unsubscribe and Close may be called from any
// goroutine. Fields set at admission are immutable; closed is atomic;
// membership in the token's session set is guarded by the token's mutex;
// the subscription list by subMu, the cluster routes by routeState.mu.
type Session struct {
	id      uint64
	b       *Broker
	ep      Endpoint
	token   *tokenState
	leased  bool  // holds a cluster connection lease, given back on close; guarded by token.mu
	offline bool  // detached (offline.go); guarded by token.mu
	proto   uint8 // index into protocolNames
	policy  RevokePolicy
	// closed is set once, when the session ends. (Fields are ordered so
	// that the struct has no padding: one per connection.)
	closed      atomic.Bool
	remote      string // set at admission
	connectedAt int64  // Unix ns, set at admission
	// ext holds what only some sessions have (an MQTT client identifier
	// and user name) and the connection of a reattached session; nil for
	// a seed session, so an idle one pays nothing for it.
	ext atomic.Pointer[sessionExt]

	// away mirrors offline for shared-subscription dispatch (read without
	// the token's lock).
	away atomic.Bool
	// multi is set, before its second subscription enters the index, on a
	// session that ever had more than one: a message may then match it
	// more than once, and dispatch merges its matches.
	multi atomic.Bool

	// subMu guards subs, inIndex and subsDone. Enforcement takes it to
	// judge a session's subscriptions, so it is held for O(1) index work
	// at a time, never across a store or cluster call.
	subMu    sync.Mutex
	inIndex  int32 // subs[:inIndex] are in the index (admission inserts them one by one)
	subsDone bool  // released: nothing may be added
	// readEnds: the transport reports the end of each read
	// (ConnectRequest.ReadEnds), so publishes may be held in a run until
	// then (run.go). Set at admission; not guarded by subMu (it is here to
	// fill padding).
	readEnds bool
	subs     []*Subscription

	// routes are the session's cluster routes, allocated on first use
	// (cluster mode only).
	routes atomic.Pointer[routeState]

	// stallTimer bounds the producer stalls of this session's publishes;
	// made on the first stall, used only by Publish's caller.
	stallTimer *time.Timer
}

// Publisher is what one publishing connection keeps between its
// publishes. The adapter that owns it (one per connection, or one per read,
// used only by that connection's goroutine) hands it to Publish with the
// message (Message.SetPublisher) and adds its counts to the metrics with
// Flush, once per read.
//
// It remembers the last topic that passed the topic checks and the grant
// check, and the token's grants then. A device publishes to the same topic
// again and again; while the token's grants are the same object
// (RefreshTokens installs a new one on every rights change, before it
// returns), the same topic passes both again, so they are not repeated.
// Only the pair (topic, grants object) decides, so a Publisher reused for
// another connection (a pooled or per-read one) cannot carry one token's
// rights to another. The topic is copied (bounded by maxTopicBytes) unless
// Borrow is set.
//
// The counts are the connection's publishes not yet added to the metrics:
// added once per read instead of four shared atomic counters per message.
//
// It also keeps a match memo (dispatch): the subscriptions the remembered
// topic matched and the index generation (topic.Index.Generation) loaded
// before that Match. While the topic and the generation are the same, the
// next publish to it reuses them instead of matching again; every
// subscribe and unsubscribe changes the generation, and everything decided
// per message (a shared group's member, closed sessions, No Local, the
// merge of a session's several matches) is still decided per message. The
// memo lives for one read: flush (the end of a read: OnReadEnd, close,
// ReleasePublisher) forgets it, so neither a read buffer nor a subscriber
// is kept reachable by an idle or pooled Publisher. It holds at most
// maxMemoSubs subscriptions: a topic matching more is matched every time
// (one Match per message is nothing next to its deliveries).
type Publisher struct {
	topic  string
	buf    []byte // the copy topic views, unless Borrow
	grants *acl.Grants

	// The match memo: memoSubs are what topic matched at generation
	// memoGen, when memoOK. Entries past len(memoSubs) are nil.
	memoSubs []*Subscription
	memoGen  uint64
	// scratch is dispatch's match scratch, taken from the broker's pool on
	// the read's first publish and kept until the read ends (flush), so a
	// read of many publishes makes one pool round trip, not one each.
	// dispatch holds it out of the Publisher while it uses it.
	scratch *matchScratch
	// run holds the publishes of one read waiting to be dispatched
	// together (see run.go); taken from a pool on the read's first held
	// publish, given back when the read ends.
	run *runBuf

	// The counts of one read (bounded by a read's size, and for deliveries
	// by that times the subscribers).
	bytesOut            uint64
	bytesIn             uint32
	messagesIn          [len(protocolNames)]uint32
	deliveries, dropped [len(protocolNames)]uint32

	// msg is the seed connection's Message for the publishes of one read
	// (SeedSession.OnMessage; given back at OnReadEnd).
	msg *Message

	// Borrow: the topics published through this Publisher stay valid for
	// as long as it is used (it lives for one read, whose buffer holds
	// them), so the last one is remembered by reference, not copied.
	Borrow bool
	memoOK bool
}

// maxMemoSubs bounds the match memo: a larger result is not kept (the
// fan-out case), so a Publisher pins at most this many pointers' worth.
const maxMemoSubs = 64

var publisherPool = sync.Pool{New: func() any { return &Publisher{Borrow: true} }}

// AcquirePublisher returns a Publisher for the publishes of one read
// (Borrow set: the read's buffer holds their topics), from a pool: an
// adapter that has no per-connection place for one (MQTT) takes one per
// read, at its first publish.
func AcquirePublisher() *Publisher { return publisherPool.Get().(*Publisher) }

// ReleasePublisher adds p's counts to b's metrics and returns it to the pool.
func ReleasePublisher(b *Broker, p *Publisher) {
	p.flush(b)
	p.topic, p.grants = "", nil
	publisherPool.Put(p)
}

// remember records t as passed against grants. The match memo was the
// previous topic's: it no longer applies.
func (p *Publisher) remember(t string, grants *acl.Grants) {
	p.memoOK = false
	if p.Borrow {
		p.topic = t
	} else {
		p.buf = append(p.buf[:0], t...)
		p.topic = unsafe.String(unsafe.SliceData(p.buf), len(p.buf))
	}
	p.grants = grants
}

// memoized returns the memo's subscriptions for topic t at index
// generation g, if it holds them.
func (p *Publisher) memoized(t string, g uint64) ([]*Subscription, bool) {
	if p.memoOK && p.memoGen == g && p.topic == t {
		return p.memoSubs, true
	}
	return nil, false
}

// memoize keeps subs, what Match answered for t after the generation g was
// loaded, when t is the remembered topic and subs are few enough.
func (p *Publisher) memoize(t string, g uint64, subs []*Subscription) {
	if len(subs) > maxMemoSubs || p.topic != t {
		p.forgetMatch()
		return
	}
	if n := len(p.memoSubs); n > len(subs) {
		clear(p.memoSubs[len(subs):n]) // keep the tail nil
	}
	p.memoSubs = append(p.memoSubs[:0], subs...)
	p.memoGen, p.memoOK = g, true
}

// forgetMatch drops the match memo: its subscriptions become unreachable
// from p, and a capacity over the bound is let go.
func (p *Publisher) forgetMatch() {
	p.memoOK = false
	clear(p.memoSubs)
	p.memoSubs = p.memoSubs[:0]
	if cap(p.memoSubs) > maxMemoSubs {
		p.memoSubs = nil
	}
}

// CountInput counts n bytes a client sent (gatecast_message_bytes_in_total),
// added at the next Flush.
func (p *Publisher) CountInput(n int) { p.bytesIn += uint32(n) }

// Flush ends a read: it adds the pending counts to b's metrics and clears
// them, and forgets the match memo.
func (p *Publisher) Flush(b *Broker) { p.flush(b) }

// flush ends a read (Flush, SeedSession.OnReadEnd, ReleasePublisher): it
// adds the pending counts to the metrics (m), clears them, and forgets the
// match memo, which must not outlive the read (with Borrow its topic views
// the read's buffer; and an idle connection keeps no subscriber reachable).
func (p *Publisher) flush(b *Broker) {
	p.forgetMatch()
	if p.scratch != nil {
		b.scratch.Put(p.scratch)
		p.scratch = nil
	}
	m := b.metrics
	if p.bytesIn > 0 {
		m.bytesIn.Add(float64(p.bytesIn))
		p.bytesIn = 0
	}
	if p.bytesOut > 0 {
		m.bytesOut.Add(float64(p.bytesOut))
		p.bytesOut = 0
	}
	for i, n := range p.deliveries {
		if in := p.messagesIn[i]; in > 0 {
			m.messagesIn[i].Add(float64(in))
			p.messagesIn[i] = 0
		}
		if n > 0 {
			m.deliveries[i].Add(float64(n))
			p.deliveries[i] = 0
		}
		if d := p.dropped[i]; d > 0 {
			m.dropped[i].Add(float64(d))
			p.dropped[i] = 0
		}
	}
}

// sessionExt: see Session.ext.
type sessionExt struct {
	clientID, username string
	remote             string
	at                 int64
}

// routeState is a session's cluster routes. mu serializes its route
// changes (Router calls, one round trip each); enforcement never takes it.
type routeState struct {
	mu     sync.Mutex
	routed []string // filters added to the cluster route table
	done   bool
}

func (s *Session) routeState() *routeState {
	if r := s.routes.Load(); r != nil {
		return r
	}
	s.routes.CompareAndSwap(nil, &routeState{})
	return s.routes.Load()
}

// ID is the session's node-unique identifier.
func (s *Session) ID() uint64 { return s.id }

// TokenID is the ID of the token the session authenticated with.
func (s *Session) TokenID() int64 { return s.token.id }

// CountInput adds n bytes a client sent to gatecast_message_bytes_in_total
// (adapters call it with what they read; the seed adapter counts message
// payloads).
func (b *Broker) CountInput(n int) { b.metrics.bytesIn.Add(float64(n)) }

// Closed reports whether the session has ended.
func (s *Session) Closed() bool { return s.closed.Load() }

// PublishResult is the outcome of Session.Publish.
type PublishResult uint8

const (
	Published            PublishResult = iota
	PublishNotAuthorized               // the token may not publish to the topic
	PublishInvalidTopic                // malformed, a wildcard, or over a cap
	PublishClosed                      // the session has ended
)

// Publish authorizes m (filled by the adapter; Topic must be set) and
// routes it to every matching subscription, on this node and, in cluster
// mode, on the others. Rejections are counted. When a subscriber was
// backlogged it then stalls, at most Config.MaxStall, so the caller (the
// publisher's transport goroutine) reads its next message later.
// Allocation-free in steady state.
func (s *Session) Publish(m *Message) PublishResult {
	if s.closed.Load() {
		return PublishClosed
	}
	return s.publish(m, true)
}

// PublishFinal publishes the last message of a session that has ended (an
// MQTT will): authorized by the token's grants as they are now, exactly as
// Publish would, but not refused because the session is closed, and
// refused when the token is gone or disabled. It never stalls.
func (s *Session) PublishFinal(m *Message) PublishResult {
	ts := s.token
	ts.mu.Lock()
	dead := ts.gone || ts.disabled
	ts.mu.Unlock()
	if dead {
		s.b.metrics.rejected[rejectDenied].Inc()
		return PublishNotAuthorized
	}
	return s.publish(m, false)
}

func (s *Session) publish(m *Message, stall bool) PublishResult {
	if r := s.authorize(m); r != Published {
		return r
	}
	if _, backlog := s.b.dispatch(m, true); backlog != nil && stall {
		s.stall(backlog)
	}
	return Published
}

// authorize is a publish but its dispatch: the topic and grant checks
// (spared for the topic the Publisher last passed under the same grants),
// the rejection and input counts, and the publisher recorded in m.
func (s *Session) authorize(m *Message) PublishResult {
	b := s.b
	t := m.Topic
	// The grants pointer is swapped by RefreshTokens before it returns, so
	// a downgrade refuses the very next publish: the repeat below holds
	// only while the grants are the very ones the topic passed.
	grants := s.token.grants.Load()
	if c := m.pub; c == nil || c.grants != grants || c.topic != t {
		// The configured caps count as topic syntax, as the topic
		// package's own (larger) limits do; the length is checked before
		// anything reads t.
		if len(t) > b.maxTopicBytes {
			b.metrics.rejected[rejectTopic].Inc()
			return PublishInvalidTopic
		}
		if levels, err := topic.TopicLevels(t); err != nil || levels > b.maxTopicLevels {
			b.metrics.rejected[rejectTopic].Inc()
			return PublishInvalidTopic
		}
		if !grants.CanPublish(t) {
			b.metrics.rejected[rejectDenied].Inc()
			return PublishNotAuthorized
		}
		if c != nil {
			c.remember(t, grants)
		}
	}
	if m.pub != nil {
		m.pub.messagesIn[s.proto]++
	} else {
		b.metrics.messagesIn[s.proto].Inc()
	}
	m.from = s
	return Published
}

// SubResult is the outcome of Session.Subscribe.
type SubResult uint8

const (
	SubGranted       SubResult = iota
	SubReplaced                // granted: the session held the filter, whose options were replaced
	SubNotAuthorized           // no read grant covers the filter
	SubInvalid                 // malformed filter, or over the byte or level cap
	SubQuota                   // the session holds Config.MaxSubscriptions already
	SubUnavailable             // cluster routing did not answer; nothing was kept
	SubClosed                  // the session has ended
)

// Subscribe adds (or, for a filter the session holds, replaces the options
// of) one subscription, if a read grant of the token covers filter.
//
// A rights change racing it cannot leave an uncovered subscription behind:
// the filter is checked against the grants outside every lock, then, under
// subMu, added only if the grants are still the ones checked. Enforcement
// installs new grants before it takes subMu to judge the session, so it
// either sees the subscription or makes this call check again.
func (s *Session) Subscribe(filter string, opts SubOptions) SubResult {
	if s.closed.Load() {
		return SubClosed
	}
	b := s.b
	match := filter
	if group, f, ok := ParseShared(filter); ok {
		if group == "" {
			return SubInvalid
		}
		match = f
	}
	if reason, _ := b.checkFilter(match, false); reason != "" || len(filter) > b.maxTopicBytes {
		return SubInvalid
	}
	ts := s.token
	g := ts.grants.Load()
	for attempt := 1; ; attempt++ {
		if !g.CanSubscribe(match) {
			return SubNotAuthorized
		}
		s.subMu.Lock()
		if cur := ts.grants.Load(); cur != g {
			s.subMu.Unlock()
			if attempt == admitAttempts {
				return SubUnavailable
			}
			g = cur
			continue
		}
		break
	}
	// s.subMu held
	if s.subsDone {
		s.subMu.Unlock()
		return SubClosed
	}
	i := slices.IndexFunc(s.subs[:s.inIndex], func(sub *Subscription) bool { return sub.filter == filter })
	if i < 0 && int(s.inIndex) >= b.maxSubs {
		s.subMu.Unlock()
		return SubQuota
	}
	if i < 0 && s.inIndex > 0 {
		s.multi.Store(true)
	}
	sub := newSubscription(s, strings.Clone(filter), opts)
	if i >= 0 {
		// Replace: the new entry goes in before the old one leaves, so no
		// message falls between; multi makes dispatch merge the two.
		s.multi.Store(true)
		old := s.subs[i]
		b.indexAdd(sub)
		b.indexRemove(old)
		s.subs[i] = sub
		s.subMu.Unlock()
		return SubReplaced
	}
	b.indexAdd(sub)
	s.subs = slices.Insert(s.subs, int(s.inIndex), sub)
	s.inIndex++
	b.metrics.subscriptions.Inc() // under subMu: see unsubscribeAll
	s.subMu.Unlock()
	if b.router != nil {
		if err := s.addRoute(sub.match()); err != nil {
			b.log.Warn("cluster route unavailable; subscription refused", "err", err)
			s.Unsubscribe(filter)
			return SubUnavailable
		}
	}
	return SubGranted
}

// Unsubscribe removes the session's subscription to filter and reports
// whether it had one.
func (s *Session) Unsubscribe(filter string) bool {
	s.subMu.Lock()
	i := slices.IndexFunc(s.subs[:s.inIndex], func(sub *Subscription) bool { return sub.filter == filter })
	if i < 0 || s.subsDone {
		s.subMu.Unlock()
		return false
	}
	sub := s.subs[i]
	s.b.indexRemove(sub)
	s.subs = slices.Delete(s.subs, i, i+1)
	s.inIndex--
	s.b.metrics.subscriptions.Dec() // under subMu: see unsubscribeAll
	s.subMu.Unlock()
	if s.b.router != nil {
		s.removeRoute(sub.match())
	}
	return true
}

// Subscriptions returns a copy of the session's subscriptions' filters.
func (s *Session) Subscriptions() []string {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	out := make([]string, len(s.subs))
	for i, sub := range s.subs {
		out[i] = sub.filter
	}
	return out
}

// addRoute makes filter routable to this node from every node, unless the
// session already routes it or has ended.
func (s *Session) addRoute(filter string) error {
	r := s.routeState()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return nil
	}
	// One route per subscription (the cluster counts them per filter), so
	// that a session holding "a/#" and "$share/g/a/#" keeps its route
	// until both are gone.
	ctx, cancel := context.WithTimeout(context.Background(), s.b.storeTimeout)
	defer cancel()
	if err := s.b.router.Add(ctx, filter); err != nil {
		return err
	}
	r.routed = append(r.routed, filter)
	return nil
}

// removeRoute gives back the session's route for filter.
func (s *Session) removeRoute(filter string) {
	r := s.routeState()
	r.mu.Lock()
	defer r.mu.Unlock()
	i := slices.Index(r.routed, filter)
	if i < 0 {
		return
	}
	r.routed = slices.Delete(r.routed, i, i+1)
	ctx, cancel := context.WithTimeout(context.Background(), s.b.storeTimeout)
	defer cancel()
	if err := s.b.router.Remove(ctx, filter); err != nil {
		s.b.log.Warn("removing a cluster route failed", "err", err)
	}
}

// Close ends the session from the client's side (its connection is gone):
// it releases the connection slot and subscriptions, without calling the
// endpoint's End. The transport may call it from any of its goroutines, its
// timer sweeper included, so it never waits for the token's lock: when a
// rights change or a cluster lease call holds it, the end is finished on
// another goroutine.
func (s *Session) Close() {
	ts := s.token
	if !ts.mu.TryLock() {
		go s.end(CauseNone, "", revokeNone)
		return
	}
	first := s.closeLocked(CauseNone, "", revokeNone)
	ts.mu.Unlock()
	if first {
		s.release()
	}
}

// End ends the session for cause, as enforcement does: the endpoint's End
// answers the client. It reports whether this call ended it. Adapters use
// it for a session another connection took over.
func (s *Session) End(cause Cause, reason string) bool {
	return s.end(cause, reason, revokeNone)
}

// end closes the session under its token's lock (see closeLocked) and, if
// this call closed it, removes its subscriptions outside the lock.
func (s *Session) end(cause Cause, reason string, why revokeKind) bool {
	ts := s.token
	ts.mu.Lock()
	first := s.closeLocked(cause, reason, why)
	ts.mu.Unlock()
	if first {
		s.release()
	}
	return first
}

// closeLocked ends the session once: it frees the connection slot at once
// (so a reconnect is not refused while the close handshake runs) and, when
// cause is not CauseNone, asks the endpoint to answer and close. The token's
// mutex must be held; the work is O(1) (the subscriptions are removed
// afterwards by release, outside the lock). It reports whether this call
// was the one that closed.
func (s *Session) closeLocked(cause Cause, reason string, why revokeKind) bool {
	if !s.closed.CompareAndSwap(false, true) {
		return false
	}
	m := s.b.metrics
	if s.offline {
		delete(s.token.offline, s)
		m.offline.Dec()
	} else {
		delete(s.token.sessions, s)
		s.b.sessions.del(s.id)
		m.connections[s.proto].Dec()
	}
	if why != revokeNone {
		m.revocations[why].Inc()
		s.b.holdCleanup()
	}
	if cause != CauseNone {
		s.ep.End(cause, reason)
		if why != revokeNone {
			s.b.watchClose(s.ep)
		}
	}
	return true
}

// release runs once, outside the token's lock, after closeLocked closed the
// session: it gives the cluster slot back and removes the subscriptions.
// Publishers skip a closed session, so the index may lag behind the close.
func (s *Session) release() {
	s.releaseSlot()
	s.unsubscribeAll()
}

// releaseSlot gives the cluster connection slot back (on the broker's
// background goroutine: it is a Redis call).
func (s *Session) releaseSlot() {
	if s.leased {
		s.b.releaseLease(s.token.id)
	}
}

// releaseLease gives one cluster connection slot of token id back.
func (b *Broker) releaseLease(id int64) {
	b.later(func() {
		ctx, cancel := context.WithTimeout(context.Background(), b.storeTimeout)
		defer cancel()
		if err := b.limiter.Release(ctx, id); err != nil {
			b.log.Warn("releasing a connection lease failed; the next heartbeat repairs it", "token_id", id, "err", err)
		}
	})
}

// unsubscribeAll removes every subscription from the index and gives the
// cluster routes back (in the background), once: the first call does it.
// After it nothing can be added: an admission still inserting its filters
// stops, and what it inserted is removed here.
func (s *Session) unsubscribeAll() {
	s.subMu.Lock()
	if s.subsDone {
		s.subMu.Unlock()
		return // done by the closer or by the admission that saw the close
	}
	s.subsDone = true
	// Under subMu, so that a second caller returns only once the entries
	// are gone. The session is closed: enforcement no longer judges it, so
	// holding its lock for O(filters) delays no rights change.
	// The gauge too: a caller that returns because the list is done (the
	// admission that saw the close) finds the gauge already down, so
	// gatecast_subscriptions never counts a closed session's filters once
	// its Connect has returned. Every change of the gauge is made under
	// subMu with the change it counts.
	in := s.subs[:s.inIndex]
	for _, sub := range in {
		s.b.indexRemove(sub)
	}
	if len(in) > 0 {
		s.b.metrics.subscriptions.Sub(float64(len(in)))
	}
	s.subMu.Unlock()
	if s.b.router == nil {
		return
	}
	s.b.later(func() {
		r := s.routeState()
		r.mu.Lock()
		if r.done {
			r.mu.Unlock()
			return
		}
		r.done = true
		routed := r.routed
		r.routed = nil
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), s.b.storeTimeout)
		defer cancel()
		for _, f := range routed {
			if err := s.b.router.Remove(ctx, f); err != nil {
				s.b.log.Warn("removing a cluster route failed", "err", err)
			}
		}
	})
}

// uncovered returns a subscription that g no longer allows.
func (s *Session) uncovered(g *acl.Grants) (string, bool) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for _, sub := range s.subs {
		if !g.CanSubscribe(sub.match()) {
			return sub.filter, true
		}
	}
	return "", false
}

// dropUncovered removes the subscriptions g no longer allows (RevokeUnsubscribe)
// and returns how many it removed.
func (s *Session) dropUncovered(g *acl.Grants) int {
	var dropped []string
	s.subMu.Lock()
	if s.subsDone {
		s.subMu.Unlock()
		return 0
	}
	for i := 0; i < int(s.inIndex); {
		sub := s.subs[i]
		if g.CanSubscribe(sub.match()) {
			i++
			continue
		}
		s.b.indexRemove(sub)
		s.subs = slices.Delete(s.subs, i, i+1)
		s.inIndex--
		dropped = append(dropped, sub.match())
	}
	if len(dropped) > 0 {
		s.b.metrics.subscriptions.Sub(float64(len(dropped))) // under subMu: see unsubscribeAll
	}
	s.subMu.Unlock()
	if len(dropped) == 0 {
		return 0
	}
	if s.b.router != nil {
		s.b.later(func() {
			for _, f := range dropped {
				s.removeRoute(f)
			}
		})
	}
	return len(dropped)
}

func (s *Session) info() ConnectionInfo {
	ci := ConnectionInfo{
		ID:            s.id,
		TokenID:       s.token.id,
		RemoteAddr:    s.remote,
		Protocol:      protocolNames[s.proto],
		Subscriptions: s.Subscriptions(),
		ConnectedAt:   time.Unix(0, s.connectedAt),
	}
	if e := s.ext.Load(); e != nil {
		ci.ClientID, ci.Username = e.clientID, e.username
		ci.RemoteAddr, ci.ConnectedAt = e.remote, time.Unix(0, e.at)
	}
	if d, ok := s.ep.(Describer); ok {
		ci.ClientID, ci.Username = d.Describe()
	}
	return ci
}
