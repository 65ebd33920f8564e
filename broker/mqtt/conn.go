package mqtt

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/bytedance/gopkg/lang/mcache"
	"github.com/gobwas/ws"

	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/proto"
	packet "github.com/gatecast/gatecast/proto/mqtt"
)

// Connection states, event goroutine only.
const (
	stConnecting = iota // waiting for CONNECT
	stConnected
	stClosed // answered and closing: input is ignored
)

// Conn is one MQTT connection: the per-connection protocol state (packet
// reassembly, topic aliases, keep alive) over a session, which may outlive
// it. It is the transport's session (OnMessage, OnClose).
//
// A node holds a million of these, so the struct stays in the 64-byte size
// class: decode scratch lives on the stack or in pools, and the state few
// connections need (a split packet, inbound topic aliases, a will) in a
// connExtra made on first use.
type Conn struct {
	srv *Server
	t   Transport
	s   *session // event goroutine only
	// aliases5 are the server → client topic aliases, when the client
	// allows some (set at CONNECT, before any delivery; see alias.go).
	aliases5 *aliasOut
	x        *connExtra // event goroutine only (OnMessage, OnClose); nil when none is needed

	// Set while handling CONNECT, before the session can receive anything;
	// read-only afterwards (Deliver reads them from other goroutines).
	maxOut  int32  // the client's Maximum Packet Size; 0 none
	window  uint16 // outbound QoS 1/2 in flight, at most
	version byte
	enc     broker.Encoding
	ws      bool // packets travel in WebSocket binary messages (set at creation)

	state    uint8 // event goroutine only
	graceful bool  // the client sent DISCONNECT without will; event goroutine only
}

// connExtra is the part of a connection's state that only some connections
// need, made on first use. Event goroutine only.
type connExtra struct {
	stash   []byte   // a packet split across reads (pooled: see stashAppend); nil when none
	aliases []string // inbound topic aliases (MQTT 5), index = alias; nil until the first
	will    *will
	closed  chan struct{} // made by OnClose, closed when its work is done
}

// extra returns the connection's connExtra, made on first use.
func (c *Conn) extra() *connExtra {
	if c.x == nil {
		c.x = &connExtra{}
	}
	return c.x
}

// trimExtra drops the connExtra once it holds nothing.
func (c *Conn) trimExtra() {
	if x := c.x; x != nil && x.stash == nil && x.aliases == nil && x.will == nil && x.closed == nil {
		c.x = nil
	}
}

// encoders maps each connection variant's shared encoding to its encoder.
var encoders = func() (t [8]func([]byte, *broker.Message) []byte) {
	t[encV3TCP], t[encV3WS], t[encV5TCP], t[encV5WS] = sharedV3TCP, sharedV3WS, sharedV5TCP, sharedV5WS
	return t
}()

// propBufs are scratch buffers for a publish's travelling properties.
var propBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// will is a CONNECT's will message, kept until the connection ends.
type will struct {
	topic   string
	payload []byte
	props   []byte
	qos     byte
	retain  bool
	delay   time.Duration // MQTT 5 Will Delay Interval
}

// OnMessage takes the connection's input: a chunk of the TCP stream, or one
// WebSocket message. Packets may span or share chunks. data is valid only
// during the call.
func (c *Conn) OnMessage(text bool, data []byte) {
	if c.state == stClosed {
		return
	}
	if text && c.ws {
		c.protocolError(packet.ProtocolError, "MQTT over WebSocket uses binary messages")
		return
	}
	c.srv.b.CountInput(len(data))
	var rs readScratch
	if x := c.x; x != nil && len(x.stash) > 0 {
		x.stash = stashAppend(x.stash, data)
		n := c.packets(x.stash, &rs)
		rest := copy(x.stash, x.stash[n:])
		x.stash = x.stash[:rest]
		if rest == 0 || c.state == stClosed {
			// the split packet passed: give its buffer back, so that an
			// idle connection keeps none
			mcache.Free(x.stash)
			x.stash = nil
			c.trimExtra()
		}
		rs.release(c.srv.b)
		return
	}
	n := c.packets(data, &rs)
	if n < len(data) && c.state != stClosed {
		x := c.extra()
		x.stash = stashAppend(nil, data[n:])
	}
	rs.release(c.srv.b)
}

// readScratch is what the packets of one OnMessage call share, on its
// stack (an idle connection keeps no decode scratch): the decoded PUBLISH
// (DecodePublish overwrites it for each) and the Message publishes are
// filled into, taken from the pool at the first publish and reset after
// each (one pool round trip per read, not per publish).
type readScratch struct {
	m   *broker.Message
	pub packet.Publish
	// counts is the read's broker.Publisher, taken at its first publish:
	// the checks of a topic repeated within the read are made once, and
	// the counts reach the metrics once, at the end of the read.
	counts *broker.Publisher
}

func (rs *readScratch) publisher() *broker.Publisher {
	if rs.counts == nil {
		rs.counts = broker.AcquirePublisher()
	}
	return rs.counts
}

func (rs *readScratch) message() *broker.Message {
	if rs.m == nil {
		rs.m = broker.AcquireMessage()
	}
	return rs.m
}

func (rs *readScratch) release(b *broker.Broker) {
	if rs.counts != nil {
		broker.ReleasePublisher(b, rs.counts)
		rs.counts = nil
	}
	if rs.m != nil {
		broker.ReleaseMessage(rs.m)
		rs.m = nil
	}
}

// stashAppend appends p to a stash buffer taken from a size-class pool
// (mcache), moving it to a larger one when it must grow.
func stashAppend(stash, p []byte) []byte {
	if len(stash)+len(p) <= cap(stash) {
		return append(stash, p...)
	}
	b := mcache.Malloc(len(stash)+len(p), max(2*cap(stash), len(stash)+len(p), 512))
	copy(b[copy(b, stash):], p)
	if stash != nil {
		mcache.Free(stash)
	}
	return b
}

// ByteStream reports that the connection's WebSocket binary messages carry
// a byte stream (netpoll.ByteStreamSession): packets may span or share
// messages (MQTT-6.0.0-2), so the transport may hand several messages of
// one read over in one OnMessage call.
func (c *Conn) ByteStream() bool { return c.ws }

// maxIn is the largest packet the client may send: Config.MaxPacketSize,
// and over WebSocket no more than a message may carry (the transport closes
// a larger message with 1009 before the adapter sees it).
func (c *Conn) maxIn() int {
	if c.ws && c.srv.cfg.MaxWebSocketMessage > 0 {
		return min(c.srv.cfg.MaxPacketSize, c.srv.cfg.MaxWebSocketMessage)
	}
	return c.srv.cfg.MaxPacketSize
}

// packets handles the complete packets at the start of b and returns the
// bytes they took.
func (c *Conn) packets(b []byte, rs *readScratch) int {
	done := 0
	for c.state != stClosed && done < len(b) {
		h, body, n, err := packet.ReadPacket(b[done:], c.maxIn())
		if err == nil {
			done += n
			c.handle(h, body, rs)
			continue
		}
		switch {
		case err == packet.ErrIncomplete || errors.Is(err, packet.ErrIncomplete):
			return done
		case errors.Is(err, packet.ErrPacketTooLarge):
			c.protocolError(packet.PacketTooLarge, "packet larger than the Maximum Packet Size")
			return len(b)
		default:
			c.packetError(err)
			return len(b)
		}
	}
	return len(b)
}

func (c *Conn) handle(h packet.Header, body []byte, rs *readScratch) {
	if c.state == stConnecting {
		if h.Type != packet.CONNECT {
			c.closeNow() // MQTT-3.1.0-1: the first packet must be CONNECT
			return
		}
		c.connect(body)
		return
	}
	if !c.t.AdmitInbound() {
		return // over the inbound rate: dropped and counted by the transport, which closes a client that stays over it
	}
	var err error
	switch h.Type {
	case packet.PUBLISH:
		err = c.publish(h, body, rs)
	case packet.PUBACK, packet.PUBREC, packet.PUBREL, packet.PUBCOMP:
		err = c.acknowledged(h, body)
	case packet.SUBSCRIBE:
		err = c.subscribe(h, body)
	case packet.UNSUBSCRIBE:
		err = c.unsubscribe(h, body)
	case packet.PINGREQ:
		if err = packet.DecodePingreq(body); err == nil {
			f := proto.AcquireFrame()
			f.B = packet.AppendPingresp(f.B)
			c.sendCtl(f)
		}
	case packet.DISCONNECT:
		c.disconnected(body)
	case packet.CONNECT:
		c.protocolError(packet.ProtocolError, "second CONNECT") // MQTT-3.1.0-2
	case packet.AUTH:
		if c.version == packet.Version5 {
			c.protocolError(packet.ProtocolError, "AUTH without an authentication method")
		} else {
			c.closeNow()
		}
	default: // a packet only a server sends
		c.protocolError(packet.ProtocolError, "unexpected "+packet.TypeName(h.Type))
	}
	if err != nil {
		c.packetError(err)
	}
}

// packetError answers a decoding error: MQTT 5 DISCONNECT with its reason
// code, MQTT 3.1.1 a plain close.
func (c *Conn) packetError(err error) {
	var pe *packet.Error
	if errors.As(err, &pe) {
		c.protocolError(pe.Code, pe.Reason)
		return
	}
	c.protocolError(packet.MalformedPacket, "malformed packet")
}

// protocolError closes the connection for a violation: with DISCONNECT and
// a reason (MQTT 5 after CONNECT), else without a word, as 3.1.1 says.
func (c *Conn) protocolError(code byte, reason string) {
	if c.state == stClosed {
		return
	}
	c.srv.metrics.protoError.Inc()
	if c.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		c.srv.log.Debug("mqtt connection closed for a protocol error", "remote", c.t.RemoteAddr(), "code", code, "reason", reason)
	}
	if c.state == stConnected && c.version == packet.Version5 {
		c.state = stClosed
		c.t.CloseAfter(c.disconnectFrame(code, reason), 1002, "")
		return
	}
	c.closeNow()
}

func (c *Conn) closeNow() {
	c.state = stClosed
	c.t.CloseAfter(nil, 1002, "")
}

// framed puts the packet in f.B in a WebSocket binary frame when the
// connection has that framing, and returns f.
func (c *Conn) framed(f *proto.Frame) *proto.Frame {
	if c.ws {
		n := len(f.B)
		h := proto.FrameHeaderLen(n)
		f.B = append(f.B, make([]byte, h)...)
		copy(f.B[h:], f.B[:n])
		proto.AppendFrameHeader(f.B[:0], ws.OpBinary, n)
	}
	return f
}

// sendCtl queues one control packet, encoded in f.B (raw, in a pooled
// frame used as scratch: the transport copies the bytes).
func (c *Conn) sendCtl(f *proto.Frame) {
	c.t.SendBytes(f.B)
	f.Release()
}

// sendAck queues a PUBACK, PUBREC, PUBREL or PUBCOMP.
func (c *Conn) sendAck(typ byte, id uint16, code byte) {
	f := proto.AcquireFrame()
	f.B = packet.AppendAck(f.B, typ, c.version, id, code, nil)
	c.sendCtl(f)
}

func (c *Conn) disconnectFrame(code byte, reason string) *proto.Frame {
	var props packet.Properties
	if reason != "" {
		props.ReasonString = []byte(broker.SafeReason(reason))
		props.Set(packet.PropReasonString)
	}
	f := proto.AcquireFrame()
	f.B = packet.AppendDisconnect(f.B, packet.Version5, code, &props)
	return c.framed(f)
}

// connect handles CONNECT: authentication through the broker, client
// identifier rules and takeover, keep alive, CONNACK.
func (c *Conn) connect(body []byte) {
	var p packet.Connect
	err := packet.DecodeConnect(body, &p)
	c.version = p.ProtocolLevel
	if c.version != packet.Version5 {
		c.version = packet.Version311
	}
	if err != nil {
		var pe *packet.Error
		code := packet.MalformedPacket
		if errors.As(err, &pe) {
			code = pe.Code
		}
		switch code {
		case packet.UnsupportedProtocolVersion:
			c.srv.metrics.connects[connUnsupportedVersion].Inc()
			if p.ProtocolLevel == packet.Version5 {
				c.refuse(packet.Version5, packet.UnsupportedProtocolVersion, "unsupported protocol version")
			} else {
				c.refuse(packet.Version311, packet.ConnRefusedProtocolVersion, "")
			}
		case packet.ClientIdentifierNotValid:
			c.srv.metrics.connects[connProtocolError].Inc()
			c.refuseV(packet.ClientIdentifierNotValid, packet.ConnRefusedIdentifierRejected, "client identifier not valid")
		default:
			c.srv.metrics.connects[connProtocolError].Inc()
			if c.version == packet.Version5 && p.ProtocolLevel == packet.Version5 {
				c.refuse(packet.Version5, code, errReason(err))
			} else {
				c.closeNow()
			}
		}
		return
	}
	if c.version == packet.Version5 && p.Props.Has(packet.PropAuthenticationMethod) {
		c.srv.metrics.connects[connProtocolError].Inc()
		c.refuse(packet.Version5, packet.BadAuthenticationMethod, "enhanced authentication is not supported; send the token as the password")
		return
	}
	if !p.PasswordFlag || len(p.Password) == 0 {
		c.srv.metrics.connects[connBadCredentials].Inc()
		c.refuseV(packet.BadUserNameOrPassword, packet.ConnRefusedBadUsernamePassword, "the token secret is the password")
		return
	}
	clientID := string(p.ClientID)
	assigned := false
	if clientID == "" {
		// MQTT 5 always, 3.1.1 with Clean Session (the codec refused the
		// rest): the server assigns one.
		clientID, assigned = assignedID(), true
	}
	if c.version == packet.Version5 {
		c.maxOut = int32(min(p.Props.MaximumPacketSize, 1<<30))
		if n := min(p.Props.TopicAliasMaximum, uint16(c.srv.cfg.ServerTopicAliases)); n > 0 {
			c.aliases5 = &aliasOut{max: n}
		}
		c.window = uint16(c.srv.cfg.MaxInflight)
		if p.Props.Has(packet.PropReceiveMaximum) {
			c.window = min(c.window, p.Props.ReceiveMaximum)
		}
	} else {
		c.window = uint16(c.srv.cfg.MaxInflight)
	}
	c.enc = sharedEncoding(c.version, c.ws)
	if p.WillFlag {
		w := &will{topic: string(p.WillTopic), payload: append([]byte(nil), p.WillPayload...), qos: p.WillQoS, retain: p.WillRetain}
		if c.version == packet.Version5 {
			if props, ok := appendTravelling(nil, &p.WillProps); ok {
				w.props = props
			}
			w.delay = time.Duration(p.WillProps.WillDelayInterval) * time.Second
		}
		c.extra().will = w
	}
	present, ok := c.openSession(&p, clientID)
	if !ok {
		if c.x != nil {
			c.x.will = nil
			c.trimExtra()
		}
		return
	}
	keepAlive := int(p.KeepAlive)
	var props packet.Properties
	if c.version == packet.Version5 {
		if keepAlive == 0 {
			keepAlive = c.srv.cfg.DefaultKeepAlive
			props.ServerKeepAlive = uint16(keepAlive)
			props.Set(packet.PropServerKeepAlive)
		}
		if assigned {
			props.AssignedClientIdentifier = []byte(clientID)
			props.Set(packet.PropAssignedClientIdentifier)
		}
		props.ReceiveMaximum = uint16(c.srv.cfg.ReceiveMaximum)
		props.Set(packet.PropReceiveMaximum)
		props.MaximumPacketSize = uint32(c.maxIn())
		props.Set(packet.PropMaximumPacketSize)
		props.TopicAliasMaximum = uint16(c.srv.cfg.TopicAliasMaximum)
		props.Set(packet.PropTopicAliasMaximum)
	}
	if keepAlive > 0 {
		c.t.SetIdleTimeout(time.Duration(keepAlive) * 1500 * time.Millisecond) // MQTT-3.1.2-24: one and a half times
	} else {
		c.t.SetIdleTimeout(24 * time.Hour) // 3.1.1 keep alive 0: the client asked for no timeout
	}
	c.state = stConnected
	c.t.Established()
	c.srv.metrics.connects[connAccepted].Inc()
	f := proto.AcquireFrame()
	f.B = packet.AppendConnack(f.B, c.version, present, packet.Success, &props)
	c.sendCtl(f)
	if present {
		c.srv.metrics.resumed.Inc()
		c.s.resend(c)
		c.s.pump(c)
	}
}

// openSession finds or makes the client's session: a persistent session
// of the same token and client identifier is resumed (Clean Start 0),
// taken over from another connection if it has one; anything else starts
// afresh, ending (and taking over) what the identifier had. It answers
// CONNACK itself on refusal.
func (c *Conn) openSession(p *packet.Connect, clientID string) (present, ok bool) {
	b := c.srv.b
	persistent := !p.CleanStart
	expiry := c.srv.cfg.MaxSessionExpiry
	if c.version == packet.Version5 {
		e := p.Props.SessionExpiryInterval // absent: 0, the session ends with the connection
		persistent = e > 0
		if e != 0xFFFFFFFF {
			expiry = min(expiry, time.Duration(e)*time.Second)
		}
	}
	tokenID, err := b.TokenOf(p.Password)
	if err != nil {
		c.refused(err)
		return false, false
	}
	key := clientKey{token: tokenID, id: clientID}
	if old := c.srv.sessions.get(key); old != nil {
		if !p.CleanStart && c.resume(old, p.Password, persistent, expiry) {
			return true, true
		}
		if c.state == stClosed {
			return false, false // refused while resuming
		}
		c.srv.metrics.takeovers.Inc()
		old.bs.End(broker.CauseTakenOver, "session taken over")
	}
	protocol := "mqtt3"
	if c.version == packet.Version5 {
		protocol = "mqtt5"
	}
	s := newSession(c.srv, key, string(p.Username), c, persistent)
	if persistent {
		s.offlineLocked().expiry = expiry // not shared yet: no lock needed
	}
	bs, err := b.Open(s, broker.ConnectRequest{
		Secret:     p.Password,
		RemoteAddr: c.t.RemoteAddr(),
		Protocol:   protocol,
		OnRevoke:   c.srv.cfg.OnRevoke,
	})
	if err != nil {
		c.refused(err)
		return false, false
	}
	s.bs = bs
	c.s = s
	if prev := c.srv.sessions.put(key, s); prev != nil && prev != s {
		// another connection with this identifier got in meanwhile
		c.srv.metrics.takeovers.Inc()
		prev.bs.End(broker.CauseTakenOver, "session taken over")
	}
	return false, true
}

// resume attaches c to the client's existing session, if it is persistent
// and still there: an offline one takes a connection slot again (refused:
// CONNACK, and the session stays offline); a live one is taken over from
// its connection (DISCONNECT 0x8E). It reports false when there is nothing
// to resume.
func (c *Conn) resume(s *session, secret []byte, persistent bool, expiry time.Duration) bool {
	s.mu.Lock()
	if s.ended.Load() || !s.persistent {
		s.mu.Unlock()
		return false
	}
	prev := s.conn.Load()
	s.mu.Unlock()
	if prev == nil {
		if err := c.srv.b.Reattach(s.bs, secret, c.t.RemoteAddr()); err != nil {
			c.refused(err)
			return false
		}
	}
	s.mu.Lock()
	if s.ended.Load() {
		s.mu.Unlock()
		return false
	}
	prev = s.conn.Load()
	s.conn.Store(c)
	s.persistent = persistent
	o := s.offlineLocked()
	o.expiry = expiry
	if o.expire != nil {
		o.expire.Stop()
	}
	if o.willTimer != nil {
		o.willTimer.Stop() // the client is back in time: no will (MQTT-3.1.3-9)
	}
	s.mu.Unlock()
	c.s = s
	if prev != nil {
		c.srv.metrics.takeovers.Inc()
		prev.ended(broker.CauseTakenOver, "session taken over")
	}
	return true
}

// refused answers a broker refusal with CONNACK.
func (c *Conn) refused(err error) {
	var rej *broker.Rejection
	if !errors.As(err, &rej) {
		c.srv.log.Error("mqtt connect failed", "remote", c.t.RemoteAddr(), "err", err)
		c.srv.metrics.connects[connUnavailable].Inc()
		c.refuseV(packet.ServerUnavailable, packet.ConnRefusedServerUnavailable, "store unavailable, retry")
		return
	}
	logRefusal(c.srv.log, c.t.RemoteAddr(), rej) // info, sampled per cause (lograte.go)
	switch rej.Cause {
	case broker.CauseBadCredentials:
		c.srv.metrics.connects[connBadCredentials].Inc()
		c.refuseV(packet.BadUserNameOrPassword, packet.ConnRefusedBadUsernamePassword, rej.Reason)
	case broker.CauseLimit:
		c.srv.metrics.connects[connLimit].Inc()
		c.refuseV(packet.QuotaExceeded, packet.ConnRefusedServerUnavailable, rej.Reason)
	case broker.CauseNotAuthorized, broker.CauseInvalid:
		c.srv.metrics.connects[connNotAuthorized].Inc()
		c.refuseV(packet.NotAuthorized, packet.ConnRefusedNotAuthorized, rej.Reason)
	default:
		c.srv.metrics.connects[connUnavailable].Inc()
		c.refuseV(packet.ServerUnavailable, packet.ConnRefusedServerUnavailable, rej.Reason)
	}
}

// refuseV refuses in the client's version: code5 for MQTT 5, code3 for 3.1.1.
func (c *Conn) refuseV(code5, code3 byte, reason string) {
	if c.version == packet.Version5 {
		c.refuse(packet.Version5, code5, reason)
	} else {
		c.refuse(packet.Version311, code3, "")
	}
}

// refuse sends CONNACK with a failure code and closes.
func (c *Conn) refuse(version, code byte, reason string) {
	var props packet.Properties
	if version == packet.Version5 && reason != "" {
		props.ReasonString = []byte(broker.SafeReason(reason))
		props.Set(packet.PropReasonString)
	}
	c.state = stClosed
	f := proto.AcquireFrame()
	f.B = packet.AppendConnack(f.B, version, false, code, &props)
	c.t.CloseAfter(c.framed(f), 1000, "")
}

func errReason(err error) string {
	var pe *packet.Error
	if errors.As(err, &pe) && pe.Reason != "" {
		return pe.Reason
	}
	return "malformed CONNECT"
}

// publish handles a client's PUBLISH: topic alias, authorization by the
// broker, the QoS 1/2 acknowledgements.
func (c *Conn) publish(h packet.Header, body []byte, rs *readScratch) error {
	p := &rs.pub
	if err := packet.DecodePublish(h, body, c.version, p); err != nil {
		return err
	}
	topic := unsafe.String(unsafe.SliceData(p.Topic), len(p.Topic))
	if c.version == packet.Version5 && p.Props.Has(packet.PropTopicAlias) {
		a := int(p.Props.TopicAlias)
		if a == 0 || a > c.srv.cfg.TopicAliasMaximum {
			c.protocolError(packet.TopicAliasInvalid, "topic alias out of range")
			return nil
		}
		x := c.extra()
		if x.aliases == nil {
			x.aliases = make([]string, c.srv.cfg.TopicAliasMaximum+1)
		}
		aliases := x.aliases
		if topic == "" {
			if topic = aliases[a]; topic == "" {
				c.protocolError(packet.ProtocolError, "unknown topic alias")
				return nil
			}
		} else {
			aliases[a] = strings.Clone(topic)
		}
	}
	if p.QoS == 2 {
		s := c.s
		s.mu.Lock()
		var dup bool
		n := 0
		if s.q != nil {
			_, dup = s.q.awaitRel[p.PacketID]
			n = len(s.q.awaitRel)
		}
		s.mu.Unlock()
		if dup {
			// A retransmission of a publish we already took: acknowledge,
			// do not deliver twice (MQTT-4.3.3-9).
			c.sendAck(packet.PUBREC, p.PacketID, packet.Success)
			return nil
		}
		if n >= c.srv.cfg.ReceiveMaximum {
			c.protocolError(packet.ReceiveMaximumExceeded, "too many QoS 2 publishes awaiting PUBREL")
			return nil
		}
	}
	code := packet.Success
	var retain *Retained
	if p.Retain {
		retain = &Retained{Topic: topic, QoS: p.QoS}
		if c.version == packet.Version5 {
			retain.Props, _ = appendTravellingExcept(nil, &p.Props, packet.PropMessageExpiryInterval)
			if p.Props.Has(packet.PropMessageExpiryInterval) {
				retain.ExpiresAt = time.Now().Add(time.Duration(p.Props.MessageExpiryInterval) * time.Second)
			}
		}
		if len(p.Payload) > 0 && !c.srv.retained.fits(topic, len(topic)+len(p.Payload)+len(retain.Props)+64) {
			c.srv.metrics.refused[refusedRetain].Inc()
			code = packet.QuotaExceeded // --retained-max, --retained-max-bytes
			retain = nil
		}
	}
	if code == packet.Success {
		m := rs.message()
		m.Topic = topic
		m.Payload = p.Payload
		m.QoS = p.QoS
		m.Retain = p.Retain
		m.SetPublisher(rs.publisher())
		var bp *[]byte
		if c.version == packet.Version5 && !p.Props.Empty() {
			bp = propBufs.Get().(*[]byte)
			var ok bool
			if *bp, ok = appendTravelling((*bp)[:0], &p.Props); ok {
				m.Props = *bp
			}
		}
		switch c.s.bs.Publish(m) {
		case broker.Published:
			if retain != nil {
				retain.Topic = strings.Clone(topic)
				retain.Payload = append([]byte(nil), p.Payload...)
				c.srv.retained.set(retain)
			}
		case broker.PublishNotAuthorized:
			c.srv.metrics.refused[refusedNotAuthorized].Inc()
			code = packet.NotAuthorized
		case broker.PublishInvalidTopic:
			c.srv.metrics.refused[refusedInvalidTopic].Inc()
			code = packet.TopicNameInvalid
		}
		m.Reset() // for the next publish of this read
		if bp != nil && cap(*bp) <= 64<<10 {
			propBufs.Put(bp)
		}
	}
	if c.version != packet.Version5 {
		code = packet.Success // 3.1.1: acknowledged and dropped
	}
	switch p.QoS {
	case 1:
		c.sendAck(packet.PUBACK, p.PacketID, code)
	case 2:
		if code < 0x80 {
			s := c.s
			s.mu.Lock()
			q := s.qLocked()
			if q.awaitRel == nil {
				q.awaitRel = make(map[uint16]struct{})
			}
			q.awaitRel[p.PacketID] = struct{}{}
			s.mu.Unlock()
		}
		c.sendAck(packet.PUBREC, p.PacketID, code)
	}
	return nil
}

// acknowledged handles PUBACK, PUBREC, PUBREL and PUBCOMP.
func (c *Conn) acknowledged(h packet.Header, body []byte) error {
	var ack packet.Ack
	a := &ack
	if err := packet.DecodeAck(h, body, c.version, a); err != nil {
		return err
	}
	s := c.s
	switch h.Type {
	case packet.PUBREL: // inbound QoS 2, step 2
		code := packet.Success
		ok := false
		s.mu.Lock()
		if s.q != nil {
			_, ok = s.q.awaitRel[a.PacketID]
			delete(s.q.awaitRel, a.PacketID)
		}
		s.mu.Unlock()
		if !ok && c.version == packet.Version5 {
			code = packet.PacketIdentifierNotFound
		}
		c.sendAck(packet.PUBCOMP, a.PacketID, code)
		return nil
	case packet.PUBREC: // outbound QoS 2, step 1
		failed := c.version == packet.Version5 && a.Code >= 0x80
		switch {
		case s.acked(packet.PUBREC, a.PacketID, failed):
			if !failed {
				c.sendAck(packet.PUBREL, a.PacketID, packet.Success)
			}
		case c.version == packet.Version5:
			c.sendAck(packet.PUBREL, a.PacketID, packet.PacketIdentifierNotFound)
		}
	case packet.PUBACK, packet.PUBCOMP:
		s.acked(h.Type, a.PacketID, false)
	}
	s.pump(c)
	return nil
}

// subscribe handles SUBSCRIBE: each filter judged by the broker.
func (c *Conn) subscribe(h packet.Header, body []byte) error {
	var s packet.Subscribe
	if err := packet.DecodeSubscribe(h, body, c.version, &s); err != nil {
		return err
	}
	subID := uint32(0)
	if c.version == packet.Version5 {
		subID = s.Props.SubscriptionIdentifier()
	}
	codes := make([]byte, 0, s.Count)
	var retained []retainedFor
	for f := range s.Filters {
		if f.NoLocal && strings.HasPrefix(string(f.Filter), broker.SharePrefix) {
			c.protocolError(packet.ProtocolError, "No Local on a shared subscription") // MQTT-3.8.3-4
			return nil
		}
		code, fresh := c.subscribeOne(f, subID)
		codes = append(codes, code)
		_, _, shared := broker.ParseShared(string(f.Filter))
		if code < 0x80 && !shared && (f.RetainHandling == 0 || f.RetainHandling == 1 && fresh) {
			retained = append(retained, retainedFor{string(f.Filter), code, subID})
		}
	}
	f := proto.AcquireFrame()
	f.B = packet.AppendSuback(f.B, c.version, s.PacketID, nil, codes)
	c.sendCtl(f)
	// Retained messages follow the SUBACK (MQTT-3.3.1-9), each judged by
	// the token's grants now.
	for _, r := range retained {
		c.sendRetained(r)
	}
	return nil
}

// retainedFor is a granted subscription owed the retained messages it matches.
type retainedFor struct {
	filter string
	qos    byte
	subID  uint32
}

// sendRetained delivers the retained messages matching a new subscription,
// with RETAIN set, at min(their QoS, the granted QoS).
func (c *Conn) sendRetained(r retainedFor) {
	now := time.Now()
	var ids []uint32
	if r.subID != 0 {
		ids = []uint32{r.subID}
	}
	c.srv.retained.match(r.filter, now, func(rm *Retained) {
		if !c.s.bs.MayRead(rm.Topic) {
			return
		}
		m := broker.AcquireMessage()
		m.Topic, m.Payload, m.QoS, m.Retain = rm.Topic, rm.Payload, rm.QoS, true
		m.Props = rm.Props
		if !rm.ExpiresAt.IsZero() {
			// the remaining lifetime, as MQTT-3.3.2-6 requires
			left := uint32(rm.ExpiresAt.Sub(now)/time.Second) + 1
			m.Props = append(append(append([]byte(nil), rm.Props...), packet.PropMessageExpiryInterval), byte(left>>24), byte(left>>16), byte(left>>8), byte(left))
		}
		c.s.Deliver(m, broker.Delivery{QoS: min(rm.QoS, r.qos), RetainAsPublished: true, SubIDs: ids})
		broker.ReleaseMessage(m)
	})
}

// subscribeOne subscribes one filter and returns its SUBACK code, and
// whether the subscription is new (not a replacement).
func (c *Conn) subscribeOne(f packet.SubscribeFilter, subID uint32) (byte, bool) {
	filter := unsafe.String(unsafe.SliceData(f.Filter), len(f.Filter))
	v5 := c.version == packet.Version5
	fail := func(code5 byte) (byte, bool) {
		if v5 {
			return code5, false
		}
		return packet.SubackFailure, false
	}
	qos := min(f.QoS, 2)
	opts := broker.SubOptions{QoS: qos, ID: subID}
	if v5 {
		opts.NoLocal = f.NoLocal
		opts.RetainAsPublished = f.RetainAsPublished
		opts.RetainHandling = f.RetainHandling
	}
	switch c.s.bs.Subscribe(filter, opts) {
	case broker.SubGranted:
		return qos, true
	case broker.SubReplaced:
		return qos, false
	case broker.SubNotAuthorized:
		return fail(packet.NotAuthorized)
	case broker.SubInvalid:
		return fail(packet.TopicFilterInvalid)
	case broker.SubQuota:
		return fail(packet.QuotaExceeded)
	}
	return fail(packet.UnspecifiedError)
}

// unsubscribe handles UNSUBSCRIBE.
func (c *Conn) unsubscribe(h packet.Header, body []byte) error {
	var u packet.Unsubscribe
	if err := packet.DecodeUnsubscribe(h, body, c.version, &u); err != nil {
		return err
	}
	codes := make([]byte, 0, u.Count)
	for f := range u.Filters {
		code := packet.Success
		if !c.s.bs.Unsubscribe(string(f)) {
			code = packet.NoSubscriptionExisted
		}
		codes = append(codes, code)
	}
	if c.version != packet.Version5 {
		codes = nil
	}
	f := proto.AcquireFrame()
	f.B = packet.AppendUnsuback(f.B, c.version, u.PacketID, nil, codes)
	c.sendCtl(f)
	return nil
}

// disconnected handles the client's DISCONNECT: a normal one discards the
// will (MQTT-3.14.4-3); MQTT 5 reason 0x04 keeps it.
func (c *Conn) disconnected(body []byte) {
	var d packet.Disconnect
	if err := packet.DecodeDisconnect(body, c.version, &d); err != nil {
		c.packetError(err)
		return
	}
	if d.Code != packet.DisconnectWithWill {
		c.graceful = true
	}
	c.state = stClosed
	c.t.CloseAfter(nil, 1000, "")
}

// OnClose is the transport's report that the connection is gone. The
// session stays if it is persistent; the will, if any, is published unless
// the client disconnected normally or a rights change ended the session,
// and only if the token may still publish to its topic (the broker judges
// it, as any publish).
//
// The transport may call it from its sweeper, so the work (which takes the
// token's lock, and may publish a will) runs on its own goroutine; closed
// is closed when it is done.
func (c *Conn) OnClose() {
	c.state = stClosed
	x := c.extra()
	if x.stash != nil {
		mcache.Free(x.stash)
		x.stash = nil
	}
	x.aliases = nil
	done := make(chan struct{})
	x.closed = done
	if c.s == nil {
		close(done)
		return
	}
	s, w, graceful := c.s, x.will, c.graceful
	go func() {
		s.detached(c, w, graceful)
		close(done)
	}()
}

// causeCodes maps the core's causes to MQTT 5 DISCONNECT reason codes.
var causeCodes = map[broker.Cause]byte{
	broker.CauseTokenChanged:  packet.NotAuthorized,
	broker.CauseNotAuthorized: packet.NotAuthorized,
	broker.CauseLimit:         packet.QuotaExceeded,
	broker.CauseKicked:        packet.AdministrativeAction,
	broker.CauseTakenOver:     packet.SessionTakenOver,
	broker.CauseShutdown:      packet.ServerShuttingDown,
	broker.CauseTryAgain:      packet.ServerBusy,
	broker.CauseUnavailable:   packet.ServerBusy,
}

// ended closes the connection for a cause the broker (or a takeover) gave:
// MQTT 5 gets DISCONNECT with the reason code and a reason string, 3.1.1
// (whose server never sends DISCONNECT) a close. O(1); any goroutine.
func (c *Conn) ended(cause broker.Cause, reason string) {
	if c.version == packet.Version5 {
		code, ok := causeCodes[cause]
		if !ok {
			code = packet.UnspecifiedError
		}
		c.t.CloseAfter(c.disconnectFrame(code, reason), 1000, "")
		return
	}
	c.t.CloseAfter(nil, 1000, "")
}

// sendQueued encodes and queues a queued (or in-flight, dup) delivery.
func (c *Conn) sendQueued(q *queuedMsg, id uint16, dup bool) (ok, tooLarge bool) {
	m := broker.AcquireMessage()
	m.Topic, m.Payload, m.Props = q.topic, q.payload, q.props
	_, ok, tooLarge, _ = c.sendOwn(m, q.qos, id, q.retain, dup, q.subIDs)
	broker.ReleaseMessage(m)
	return ok, tooLarge
}

// sendDelivery hands a shared PUBLISH frame to the transport, unless it
// exceeds the client's Maximum Packet Size (MQTT-3.1.2-25: discarded).
func (c *Conn) sendDelivery(f *proto.Frame) (n int, ok bool, backlog <-chan struct{}) {
	if c.maxOut > 0 {
		n := len(f.B)
		if c.ws {
			for _, h := range [...]int{2, 4, 10} {
				if proto.FrameHeaderLen(n-h) == h {
					n -= h
					break
				}
			}
		}
		if n > int(c.maxOut) {
			f.Release()
			c.srv.metrics.dropped[dropTooLarge].Inc()
			return 0, false, nil
		}
	}
	n = len(f.B)
	ok, backlog = c.t.SendBacklog(f)
	if !ok {
		c.srv.metrics.dropped[dropTransport].Inc()
		return 0, false, backlog
	}
	return n, true, backlog
}

// sendPacket hands the bytes of one PUBLISH packet to the transport (a
// copy), unless it exceeds the client's Maximum Packet Size (it is then
// discarded, MQTT-3.1.2-25, and tooLarge says it never will fit).
func (c *Conn) sendPacket(pkt []byte) (n int, ok, tooLarge bool, backlog <-chan struct{}) {
	if c.maxOut > 0 && len(pkt) > int(c.maxOut) {
		c.srv.metrics.dropped[dropTooLarge].Inc()
		return 0, false, true, nil
	}
	ok, backlog = c.t.SendBytes(pkt)
	if !ok {
		c.srv.metrics.dropped[dropTransport].Inc()
		return 0, false, false, backlog
	}
	return len(pkt), true, false, backlog
}
