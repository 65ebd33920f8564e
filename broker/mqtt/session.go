package mqtt

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatecast/gatecast/broker"
	packet "github.com/gatecast/gatecast/proto/mqtt"
)

// session is the MQTT session state, which outlives a connection when the
// client asked for a persistent session (3.1.1 Clean Session 0, MQTT 5
// Session Expiry Interval > 0): the broker session (its subscriptions stay
// in the index while the client is away, so QoS 1 and 2 messages queue),
// packet identifiers, the QoS 1/2 deliveries in flight and queued, and the
// client's QoS 2 publishes awaiting PUBREL. It is the broker's endpoint.
//
// mu guards everything mutable; it is held for O(1) work, never across a
// broker call or a transport call that may wait.
//
// A node holds a million of these, so the struct stays in the 80-byte size
// class: the client identifier and the user name share one string, and the
// state only QoS 1/2 flows and persistent sessions need lives behind
// pointers made on first use.
type session struct {
	srv   *Server
	token int64  // the token's ID: with the client identifier, the session's key
	names string // the client identifier, then the CONNECT user name (a label for the admin listing)
	bs    *broker.Session

	mu sync.Mutex
	// conn is the attached connection, nil while the client is away.
	// Written under mu; a QoS 0 Deliver loads it without the lock.
	conn       atomic.Pointer[Conn]
	off        *offlineState // a persistent session's expiry and timers; nil for a clean one
	q          *qosState     // the QoS 1/2 flows; nil until the first one
	idLen      uint16        // names[:idLen] is the client identifier
	persistent bool
	revoked    bool // ended by a rights change: no will
	// ended: the broker ended the session, or it expired: deliver nothing
	// more. Written under mu, loaded by a QoS 0 Deliver without it.
	ended atomic.Bool
}

// qosState is a session's QoS 1 and 2 state, both ways. Guarded by
// session.mu.
type qosState struct {
	inflight map[uint16]*flight  // packet identifier → delivery awaiting acknowledgement
	queued   []queuedMsg         // waiting for an in-flight slot, oldest first
	held     int                 // bytes of the copies in queued and inflight (Server.held counts every session's)
	awaitRel map[uint16]struct{} // the client's QoS 2 publishes awaiting PUBREL
	nextID   uint16
}

func newSession(srv *Server, key clientKey, username string, c *Conn, persistent bool) *session {
	s := &session{srv: srv, token: key.token, names: key.id + username, idLen: uint16(len(key.id)), persistent: persistent}
	s.conn.Store(c)
	return s
}

// id is the client identifier.
func (s *session) id() string { return s.names[:s.idLen] }

// key is the session's key in Server.sessions.
func (s *session) key() clientKey { return clientKey{token: s.token, id: s.id()} }

// qLocked returns the session's QoS state, made on first use.
func (s *session) qLocked() *qosState {
	if s.q == nil {
		s.q = &qosState{}
	}
	return s.q
}

// queuedLen and inflightLen read the QoS state; s.mu must be held.
func (s *session) queuedLen() int {
	if s.q == nil {
		return 0
	}
	return len(s.q.queued)
}

func (s *session) inflightLen() int {
	if s.q == nil {
		return 0
	}
	return len(s.q.inflight)
}

// offlineState is what a persistent session needs to outlive its
// connection.
type offlineState struct {
	expiry    time.Duration // how long the session outlives its connection
	expire    *time.Timer   // running while offline
	willTimer *time.Timer   // a delayed will (MQTT 5 Will Delay Interval), running while offline
	away      uint64        // counts the offline periods: a timer acts only on its own
}

// offlineLocked returns the session's offline state, made on first use.
func (s *session) offlineLocked() *offlineState {
	if s.off == nil {
		s.off = &offlineState{}
	}
	return s.off
}

// flight is a QoS 1/2 delivery awaiting the client's acknowledgement. The
// message is kept for a persistent session, to be sent again (DUP) when the
// client comes back.
type flight struct {
	awaited byte // PUBACK, PUBREC or PUBCOMP
	msg     *queuedMsg
}

// queuedMsg is a copy of a QoS 1/2 delivery.
type queuedMsg struct {
	topic   string
	payload []byte
	props   []byte
	qos     byte
	retain  bool
	subIDs  []uint32
	expires time.Time // zero: never (the Message Expiry Interval, MQTT 5)
}

// size is what a copy holds in memory, roughly.
func (q *queuedMsg) size() int {
	return len(q.topic) + len(q.payload) + len(q.props) + 4*len(q.subIDs) + 96
}

// holdLocked charges a copy of n bytes to the session and the process, if
// both bounds allow it (Config.MaxQueuedBytes, Config.MaxQueuedTotal).
func (s *session) holdLocked(n int) bool {
	q := s.qLocked()
	if q.held+n > s.srv.cfg.MaxQueuedBytes {
		return false
	}
	if s.srv.held.Add(int64(n)) > int64(s.srv.cfg.MaxQueuedTotal) {
		s.srv.held.Add(-int64(n))
		return false
	}
	q.held += n
	return true
}

func (s *session) unholdLocked(n int) {
	s.q.held -= n
	s.srv.held.Add(-int64(n))
}

func copyMsg(m *broker.Message, d broker.Delivery, retain bool) queuedMsg {
	props := append([]byte(nil), m.Props...)
	return queuedMsg{
		expires: expiresAt(props, time.Now()),
		topic:   strings.Clone(m.Topic),
		payload: append([]byte(nil), m.Payload...),
		props:   props,
		qos:     d.QoS,
		retain:  retain,
		subIDs:  append([]uint32(nil), d.SubIDs...),
	}
}

// Describe names the client for the admin listing (broker.Describer).
func (s *session) Describe() (clientID, username string) { return s.id(), s.names[s.idLen:] }

// Deliver queues one message for the client (broker.Endpoint). QoS 0
// without per-subscriber parts shares one encoding per protocol variant and
// is dropped while the client is away; QoS 1 and 2 take a packet identifier
// and an in-flight slot, or wait in a bounded queue.
func (s *session) Deliver(m *broker.Message, d broker.Delivery) (int, bool, <-chan struct{}) {
	retain := d.RetainAsPublished && m.Retain
	if d.QoS == 0 {
		// No lock: conn and ended are atomics (a delivery racing a detach
		// or an end is refused by the closing transport, as it would be
		// after the lock was released).
		c := s.conn.Load()
		if c == nil || s.ended.Load() {
			return 0, false, nil
		}
		if len(d.SubIDs) != 0 || retain {
			n, ok, _, backlog := c.sendOwn(m, 0, 0, retain, false, d.SubIDs)
			return n, ok, backlog
		}
		if m.Claim() {
			// the message's first recipient takes the packet by copy (no
			// Frame: a fan-in never makes one); the others share one
			// encoding per protocol variant
			n, ok, _, backlog := c.sendPacket(m.Encode(rawEncoding(c.version), encoders[rawEncoding(c.version)]))
			return n, ok, backlog
		}
		f := m.Frame(c.enc, encoders[c.enc])
		f.Retain() // the transport's reference
		return c.sendDelivery(f)
	}
	s.mu.Lock()
	c := s.conn.Load()
	if s.ended.Load() {
		s.mu.Unlock()
		return 0, false, nil
	}
	if c != nil && s.queuedLen() == 0 && s.inflightLen() < int(c.window) {
		fl := &flight{}
		if s.persistent {
			// kept for a redelivery after a reconnect, within the byte
			// bounds (past them, this one would not be sent again)
			if q := copyMsg(m, d, retain); s.holdLocked(q.size()) {
				fl.msg = &q
			}
		}
		id := s.takeIDLocked(d.QoS, fl)
		s.mu.Unlock()
		n, ok, tooLarge, backlog := c.sendOwn(m, d.QoS, id, retain, false, d.SubIDs)
		if !ok {
			s.undelivered(id, tooLarge)
		}
		return n, ok, backlog
	}
	// Queue a copy, dropping the oldest while the count or either byte
	// bound says no: the session's (MaxQueuedBytes) or the process's
	// (MaxQueuedTotal), so away or slow clients cannot exhaust memory.
	q := copyMsg(m, d, retain)
	n := q.size()
	qs := s.qLocked()
	for !(len(qs.queued) < s.srv.cfg.MaxQueued && s.holdLocked(n)) {
		s.srv.metrics.dropped[dropQueueFull].Inc()
		if len(qs.queued) == 0 { // this one alone is over a bound
			s.mu.Unlock()
			return 0, false, nil
		}
		s.unholdLocked(qs.queued[0].size())
		qs.queued[0] = queuedMsg{}
		qs.queued = qs.queued[1:]
	}
	qs.queued = append(qs.queued, q)
	s.mu.Unlock()
	return 0, true, nil
}

// takeIDLocked assigns a free packet identifier to a new QoS 1/2 delivery.
func (s *session) takeIDLocked(qos byte, fl *flight) uint16 {
	q := s.qLocked()
	if q.inflight == nil {
		q.inflight = make(map[uint16]*flight)
	}
	for {
		q.nextID++
		if q.nextID == 0 {
			continue
		}
		if _, used := q.inflight[q.nextID]; !used {
			break
		}
	}
	fl.awaited = packet.PUBACK
	if qos == 2 {
		fl.awaited = packet.PUBREC
	}
	q.inflight[q.nextID] = fl
	return q.nextID
}

// acked ends (or advances) an outbound flow. It reports whether the
// identifier was awaiting that acknowledgement.
func (s *session) acked(typ byte, id uint16, failed bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.q == nil {
		return false
	}
	fl, ok := s.q.inflight[id]
	if !ok || fl.awaited != typ {
		return false
	}
	if fl.msg != nil {
		s.unholdLocked(fl.msg.size())
	}
	if typ == packet.PUBREC && !failed {
		fl.awaited = packet.PUBCOMP
		fl.msg = nil // from here on only PUBREL is resent
		return true
	}
	delete(s.q.inflight, id)
	return true
}

// pump sends queued deliveries while in-flight slots are free, skipping
// those the token may no longer read (a revoked right never delivers a
// queued message). Event goroutine.
func (s *session) pump(c *Conn) {
	for {
		s.mu.Lock()
		if s.ended.Load() || s.conn.Load() != c || s.queuedLen() == 0 || s.inflightLen() >= int(c.window) {
			s.mu.Unlock()
			return
		}
		qs := s.q
		q := qs.queued[0]
		qs.queued[0] = queuedMsg{}
		qs.queued = qs.queued[1:]
		if !s.bs.MayRead(q.topic) || !refreshExpiry(&q, time.Now()) {
			// revoked meanwhile, or expired while it waited: never sent
			s.unholdLocked(q.size())
			s.mu.Unlock()
			continue
		}
		fl := &flight{}
		if s.persistent {
			fl.msg = &q // its bytes stay held, now for the redelivery copy
		} else {
			s.unholdLocked(q.size())
		}
		id := s.takeIDLocked(q.qos, fl)
		s.mu.Unlock()
		if ok, tooLarge := c.sendQueued(&q, id, false); !ok {
			s.undelivered(id, tooLarge)
			return // the transport refuses: the next acknowledgement pumps again
		}
	}
}

// undelivered frees the packet identifier of a QoS 1/2 delivery the
// transport refused, so a refusal never holds an in-flight slot for ever.
// A persistent session's copy goes back to the head of the queue (sent
// again after a reconnect, or the next acknowledgement), unless it can
// never fit the client's Maximum Packet Size.
func (s *session) undelivered(id uint16, tooLarge bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.q == nil {
		return
	}
	fl, ok := s.q.inflight[id]
	if !ok {
		return
	}
	delete(s.q.inflight, id)
	if fl.msg == nil {
		return
	}
	if tooLarge || s.ended.Load() {
		s.unholdLocked(fl.msg.size())
		return
	}
	s.q.queued = append([]queuedMsg{*fl.msg}, s.q.queued...) // its bytes stay held
}

// resend sends again, after a reconnect, what was in flight: PUBLISH with
// DUP for deliveries awaiting PUBACK or PUBREC, PUBREL for those awaiting
// PUBCOMP (MQTT-4.4.0-1), in the order they were first sent.
func (s *session) resend(c *Conn) {
	s.mu.Lock()
	type re struct {
		id uint16
		fl flight
	}
	var out []re
	var next uint16
	if s.q != nil {
		for id, fl := range s.q.inflight {
			out = append(out, re{id, *fl})
		}
		next = s.q.nextID
	}
	s.mu.Unlock()
	// identifiers were assigned in order; sort by distance from the next
	// one, which handles the wrap at 65535
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].id-next-1 < out[j-1].id-next-1; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	for _, r := range out {
		switch {
		case r.fl.awaited == packet.PUBCOMP:
			c.sendAck(packet.PUBREL, r.id, packet.Success)
		case r.fl.msg != nil && s.bs.MayRead(r.fl.msg.topic) && refreshExpiry(r.fl.msg, time.Now()):
			c.sendQueued(r.fl.msg, r.id, true)
		default: // revoked meanwhile: the flow ends here
			s.mu.Lock()
			if fl, ok := s.q.inflight[r.id]; ok {
				if fl.msg != nil {
					s.unholdLocked(fl.msg.size())
				}
				delete(s.q.inflight, r.id)
			}
			s.mu.Unlock()
		}
	}
}

// CloseWritten implements broker.CloseWriter: the DISCONNECT (or the close)
// End queued has reached the socket, or the connection is gone.
func (s *session) CloseWritten() bool {
	c := s.conn.Load()
	if c == nil {
		return true
	}
	cw, ok := c.t.(broker.CloseWriter)
	return !ok || cw.CloseWritten()
}

// End is the broker ending the session (a rights change, a kick, a limit,
// a takeover): the attached client gets DISCONNECT (MQTT 5) or a close
// (3.1.1), and the session's state is discarded. Called under the token's
// lock: O(1).
func (s *session) End(cause broker.Cause, reason string) {
	s.mu.Lock()
	s.ended.Store(true)
	s.revoked = cause == broker.CauseTokenChanged || cause == broker.CauseNotAuthorized
	c := s.conn.Load()
	s.discardLocked()
	s.mu.Unlock()
	s.srv.sessions.drop(s.key(), s)
	if c != nil {
		c.ended(cause, reason)
	}
}

// discardLocked drops the queued state and stops the timers.
func (s *session) discardLocked() {
	if q := s.q; q != nil {
		q.queued = nil
		q.inflight = nil
		if q.held != 0 {
			s.unholdLocked(q.held)
		}
	}
	if o := s.off; o != nil {
		if o.expire != nil {
			o.expire.Stop()
		}
		if o.willTimer != nil {
			o.willTimer.Stop()
		}
	}
}

// detached is called when the session's connection c is gone: a persistent
// session stays, offline, until it expires; any other session ends. The
// will is published now, or after its delay while the session is offline.
func (s *session) detached(c *Conn, w *will, graceful bool) {
	s.mu.Lock()
	if s.conn.Load() != c {
		s.mu.Unlock()
		return // taken over: the new connection owns the session
	}
	s.conn.Store(nil)
	keep := s.persistent && !s.ended.Load()
	revoked := s.revoked
	s.mu.Unlock()
	publishWill := w != nil && !graceful && !revoked
	if keep && s.bs.Detach() {
		s.mu.Lock()
		o := s.offlineLocked()
		o.away++
		gen := o.away
		o.expire = time.AfterFunc(o.expiry, func() { s.expired(gen) })
		if publishWill && w.delay > 0 {
			// at the end of the delay, or of the session if that comes first
			// (MQTT-3.1.3-9)
			o.willTimer = time.AfterFunc(min(w.delay, o.expiry), func() { s.delayedWill(w, gen) })
			publishWill = false
		}
		s.mu.Unlock()
		if publishWill {
			s.publishWill(w)
		}
		return
	}
	if publishWill {
		s.publishWill(w)
	}
	s.mu.Lock()
	s.ended.Store(true)
	s.discardLocked()
	s.mu.Unlock()
	s.srv.sessions.drop(s.key(), s)
	s.bs.Close()
}

// publishWill publishes a will through the broker, which judges it by the
// token's grants as they are now (a revoked device leaves no will).
func (s *session) publishWill(w *will) {
	m := broker.AcquireMessage()
	m.Topic = w.topic
	m.Payload = w.payload
	m.QoS = w.qos
	m.Retain = w.retain
	m.Props = w.props
	published := s.bs.PublishFinal(m) == broker.Published
	broker.ReleaseMessage(m)
	if published && w.retain {
		// Will Retain: the will becomes the topic's retained message
		// (within the same bounds as any retained publish)
		r := &Retained{Topic: w.topic, Payload: w.payload, Props: w.props, QoS: w.qos}
		if len(r.Payload) == 0 || s.srv.retained.fits(r.Topic, size(r)) {
			s.srv.retained.set(r)
		}
	}
}

// delayedWill publishes the will once its delay passed, if the client did
// not come back meanwhile.
func (s *session) delayedWill(w *will, gen uint64) {
	s.mu.Lock()
	live := s.conn.Load() != nil || s.off.away != gen
	s.mu.Unlock()
	if !live {
		s.publishWill(w)
	}
}

// expired ends an offline session whose expiry passed.
func (s *session) expired(gen uint64) {
	s.mu.Lock()
	if s.conn.Load() != nil || s.ended.Load() || s.off.away != gen {
		s.mu.Unlock()
		return
	}
	s.ended.Store(true)
	s.discardLocked()
	s.mu.Unlock()
	s.srv.metrics.expired.Inc()
	s.srv.sessions.drop(s.key(), s)
	s.bs.Close()
}
