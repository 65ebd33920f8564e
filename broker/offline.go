package broker

import (
	"context"
	"errors"
	"time"

	"github.com/gatecast/gatecast/acl"
)

// Offline sessions: a protocol with persistent sessions (MQTT clean session
// 0, session expiry) keeps a session whose client went away. Detach frees
// its connection slot (and cluster lease) but keeps it open, its
// subscriptions in the index, so its endpoint goes on receiving — and
// queueing — messages; Reattach gives it a connection again. Enforcement
// judges offline sessions like live ones: a token deleted, disabled or
// rotated ends them (End is called; the endpoint discards its state), and a
// grant that no longer covers a subscription removes that subscription
// (whatever the session's RevokePolicy: there is nobody to disconnect).

// errNotOffline: Reattach of a session that is not detached.
var errNotOffline = errors.New("broker: session is not offline")

// Detach marks the session offline: its client went away but the session
// persists. It reports false when the session has ended, was offline
// already, or its token holds Config.MaxOfflineSessions offline sessions:
// the caller then ends it.
func (s *Session) Detach() bool {
	ts := s.token
	ts.mu.Lock()
	if s.closed.Load() || s.offline || len(ts.offline) >= s.b.maxOffline {
		ts.mu.Unlock()
		return false
	}
	delete(ts.sessions, s)
	if ts.offline == nil {
		ts.offline = make(map[*Session]struct{})
	}
	ts.offline[s] = struct{}{}
	s.offline = true
	s.away.Store(true)
	leased := s.leased
	s.leased = false
	s.b.sessions.del(s.id)
	s.b.metrics.connections[s.proto].Dec()
	s.b.metrics.offline.Inc()
	ts.mu.Unlock()
	if leased {
		s.b.releaseLease(ts.id)
	}
	return true
}

// Reattach gives an offline session a connection again: secret must be the
// token's current one, and the connection counts against max_connections
// (and takes a cluster lease) as a new connection does. remote is the new
// connection's address. On refusal the error is a *Rejection and the session
// stays offline.
func (b *Broker) Reattach(s *Session, secret []byte, remote string) error {
	if b.available != nil && !b.available() {
		return reject(CauseTryAgain, "node cannot verify rights right now, retry")
	}
	ts := s.token
	hash := acl.HashSecret(secret)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	switch {
	case s.closed.Load():
		return reject(CauseBadCredentials, "session ended")
	case !s.offline:
		return errNotOffline
	case ts.gone || ts.disabled || ts.hash != hash:
		b.metrics.connects[resultAuth].Inc()
		return reject(CauseBadCredentials, "invalid token")
	case ts.maxConns > 0 && len(ts.sessions) >= ts.maxConns:
		b.metrics.connects[resultLimit].Inc()
		return reject(CauseLimit, "connection limit reached")
	}
	if ts.maxConns > 0 && b.limiter != nil {
		ctx, cancel := context.WithTimeout(context.Background(), b.storeTimeout)
		ok, err := b.limiter.Acquire(ctx, ts.id, ts.maxConns)
		cancel()
		switch {
		case err != nil:
			b.metrics.connects[resultError].Inc()
			return reject(CauseUnavailable, "connection limit unavailable, retry")
		case !ok:
			b.metrics.connects[resultLimit].Inc()
			return reject(CauseLimit, "connection limit reached")
		}
		s.leased = true
	}
	delete(ts.offline, s)
	ts.sessions[s] = struct{}{}
	s.offline = false
	s.away.Store(false)
	e := &sessionExt{remote: remote, at: time.Now().UnixNano()}
	if old := s.ext.Load(); old != nil {
		e.clientID, e.username = old.clientID, old.username
	}
	s.ext.Store(e)
	b.sessions.put(s)
	b.metrics.connects[resultAccepted].Inc()
	b.metrics.connections[s.proto].Inc()
	b.metrics.offline.Dec()
	return nil
}

// TokenOf returns the ID of the token whose secret this is, from the token
// cache (the store on a miss), so an adapter can find a client's offline
// session before it reattaches it. Disabled and unknown tokens are a
// *Rejection with CauseBadCredentials.
func (b *Broker) TokenOf(secret []byte) (int64, error) {
	ts, err := b.tokens.lookup(b, acl.HashSecret(secret))
	if err != nil {
		if errors.Is(err, acl.ErrNotFound) {
			return 0, reject(CauseBadCredentials, "invalid token")
		}
		return 0, err
	}
	ts.mu.Lock()
	dead := ts.gone || ts.disabled
	ts.mu.Unlock()
	if dead {
		return 0, reject(CauseBadCredentials, "invalid token")
	}
	return ts.id, nil
}

// MayRead reports whether the session's token may read topic now: what an
// endpoint checks before it hands over a message it queued earlier, so that
// a revoked right never delivers one.
func (s *Session) MayRead(topic string) bool {
	return s.token.grants.Load().CanSubscribe(topic)
}
