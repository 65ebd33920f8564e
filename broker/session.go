package broker

import (
	"context"
	"strings"
	"time"
	"unsafe"

	"sync/atomic"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/proto"
	"github.com/gatecast/gatecast/topic"
)

// Session is one admitted client connection.
//
// The transport calls OnMessage serially and OnClose once; every other
// method may be called from any goroutine. Fields set at admission are
// immutable; closed is atomic; membership in the token's session set is
// guarded by the token's mutex.
type Session struct {
	id          uint64
	b           *Broker
	conn        Conn
	token       *tokenState
	filters     []string    // the subscriptions, fixed for the seed protocol
	multi       bool        // several filters: one message may match more than once
	leased      bool        // holds a cluster connection lease, given back on close
	proto       uint8       // index into protocolNames, for the connections gauge
	routed      atomic.Bool // its filters were added to the cluster route table
	remote      string
	protocol    string
	connectedAt time.Time

	closed atomic.Bool
	// subState hands the removal of the session's subscriptions over
	// between Connect, which adds them after registering the session, and
	// whoever closes it (see Broker.subscribe).
	subState atomic.Int32

	// dec is used only by the transport's goroutine inside OnMessage.
	dec proto.SeedDecoder
	// bsend is conn's backpressure-aware send, when the transport has one
	// (netpoll does); set at admission.
	bsend backlogSender
	// stallTimer bounds the producer stalls of this session's publishes;
	// made on the first stall, used only inside OnMessage.
	stallTimer *time.Timer
}

// ID is the session's node-unique identifier.
func (s *Session) ID() uint64 { return s.id }

// OnMessage handles one client message. Binary messages, invalid JSON, a
// missing tag or message, a wildcard or invalid topic (one over
// Config.MaxTopicBytes or MaxTopicLevels included) and a publish the token
// may not make are dropped and counted; the connection stays open, as the
// seed protocol specifies.
//
// payload is only valid during the call: nothing here keeps it. The topic is
// viewed in place (no copy) because the index does not retain it and the
// frame encoder copies it.
func (s *Session) OnMessage(text bool, payload []byte) {
	if s.closed.Load() {
		return
	}
	m := s.b.metrics
	m.bytesIn.Add(float64(len(payload)))
	if !text {
		m.rejected[rejectBinary].Inc()
		return
	}
	tag, msg, err := s.dec.Decode(payload)
	if err != nil {
		m.rejected[rejectInvalid].Inc()
		return
	}
	t := unsafe.String(unsafe.SliceData(tag), len(tag))
	// The configured caps count as topic syntax, as the topic package's own
	// (larger) limits do; the length is checked before anything reads t.
	if len(t) > s.b.maxTopicBytes || strings.Count(t, "/") >= s.b.maxTopicLevels || topic.ValidateTopic(t) != nil {
		m.rejected[rejectTopic].Inc()
		return
	}
	// The grants pointer is swapped by RefreshTokens before it returns, so
	// a downgrade refuses the very next publish.
	if !s.token.grants.Load().CanPublish(t) {
		m.rejected[rejectDenied].Inc()
		return
	}
	m.messagesIn.Inc()
	if _, backlog := s.b.publish(s, t, msg); backlog != nil {
		s.stall(backlog)
	}
}

// OnClose releases the session's connection slot and subscriptions. The
// transport may call it from any of its goroutines, its timer sweeper
// included, so it never waits for the token's lock: when a rights change or
// a cluster lease call holds it, the end is finished on another goroutine.
func (s *Session) OnClose() {
	ts := s.token
	if !ts.mu.TryLock() {
		go s.end(0, "", revokeNone)
		return
	}
	first := s.closeLocked(0, "", revokeNone)
	ts.mu.Unlock()
	if first {
		s.release()
	}
}

// Values of Session.subState.
const (
	subPending   = iota // Connect is adding the subscriptions
	subReady            // all added: the closer removes them
	subAbandoned        // closed while pending: Connect removes them when done
)

// end closes the session under its token's lock (see closeLocked) and, if
// this call closed it, removes its subscriptions outside the lock.
func (s *Session) end(code uint16, reason string, why revokeKind) bool {
	ts := s.token
	ts.mu.Lock()
	first := s.closeLocked(code, reason, why)
	ts.mu.Unlock()
	if first {
		s.release()
	}
	return first
}

// deliver hands a shared frame to the session's connection. backlog is
// non-nil when the connection is backlogged (see stall.go).
func (s *Session) deliver(f *proto.Frame) (ok bool, backlog <-chan struct{}) {
	f.Retain() // the connection's reference, released by it in every case
	if s.bsend != nil {
		return s.bsend.SendBacklog(f)
	}
	return s.conn.Send(f), nil
}

// closeLocked ends the session once: it frees the connection slot at once
// (so a reconnect is not refused while the close handshake runs) and, when
// code is not 0, asks the transport to close with it. The token's mutex must
// be held; the work is O(1) (the subscriptions are removed afterwards by
// release, outside the lock). It reports whether this call was the one that
// closed.
func (s *Session) closeLocked(code uint16, reason string, why revokeKind) bool {
	if !s.closed.CompareAndSwap(false, true) {
		return false
	}
	delete(s.token.sessions, s)
	s.b.sessions.del(s.id)
	m := s.b.metrics
	m.connections[s.proto].Dec()
	m.subscriptions.Sub(float64(len(s.filters)))
	if why != revokeNone {
		m.revocations[why].Inc()
	}
	if code != 0 {
		s.conn.Close(code, closeReason(reason))
	}
	return true
}

// release runs once, outside the token's lock, after closeLocked closed the
// session: it removes the subscriptions (or, if Connect is still adding
// them, leaves that to Connect) and gives the cluster slot back. Publishers
// skip a closed session, so the index may lag behind the close.
func (s *Session) release() {
	if s.releaseSlot() {
		s.unsubscribe()
	}
}

// releaseSlot is release without the removal from the index, which it
// reports is the caller's to do (false: Connect is still subscribing and
// will remove everything itself). It gives the cluster slot back.
func (s *Session) releaseSlot() (unsubscribe bool) {
	unsubscribe = !s.subState.CompareAndSwap(subPending, subAbandoned)
	if s.leased {
		id := s.token.id
		s.b.later(func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.b.storeTimeout)
			defer cancel()
			if err := s.b.limiter.Release(ctx, id); err != nil {
				s.b.log.Warn("releasing a connection lease failed; the next heartbeat repairs it", "token_id", id, "err", err)
			}
		})
	}
	return unsubscribe
}

// unsubscribe removes the session's filters from the index and, if they
// were routed, from the cluster's route table. Exactly one of Connect and
// the session's closer calls it (see Broker.subscribe).
func (s *Session) unsubscribe() {
	for _, f := range s.filters {
		s.b.index.Unsubscribe(f, s)
	}
	if s.routed.Load() {
		filters := s.filters
		s.b.later(func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.b.storeTimeout)
			defer cancel()
			for _, f := range filters {
				if err := s.b.router.Remove(ctx, f); err != nil {
					s.b.log.Warn("removing a cluster route failed", "err", err)
				}
			}
		})
	}
}

// uncovered returns a subscription that g no longer allows.
func (s *Session) uncovered(g *acl.Grants) (string, bool) {
	for _, f := range s.filters {
		if !g.CanSubscribe(f) {
			return f, true
		}
	}
	return "", false
}

func (s *Session) info() ConnectionInfo {
	return ConnectionInfo{
		ID:            s.id,
		TokenID:       s.token.id,
		RemoteAddr:    s.remote,
		Protocol:      s.protocol,
		Subscriptions: append([]string(nil), s.filters...),
		ConnectedAt:   s.connectedAt,
	}
}
