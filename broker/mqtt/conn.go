package mqtt

import (
	"errors"
	"strings"
	"sync"
	"time"
	"unsafe"

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

// Conn is one MQTT connection: the per-connection protocol state over a
// broker session. It is the transport's session (OnMessage, OnClose) and
// the broker's endpoint (Deliver, End).
type Conn struct {
	srv    *Server
	t      Transport
	ws     bool // packets travel in WebSocket binary messages
	remote string

	// Event goroutine only (OnMessage, OnClose).
	state      uint8
	sess       *broker.Session
	key        clientKey
	registered bool
	stash      []byte              // a packet split across reads
	aliases    []string            // inbound topic aliases (MQTT 5), index = alias
	awaitRel   map[uint16]struct{} // inbound QoS 2 packet identifiers awaiting PUBREL
	ctl        []byte              // scratch for control packets
	propBuf    []byte              // scratch for a publish's travelling properties
	pub        packet.Publish
	ack        packet.Ack
	will       *will
	graceful   bool // the client sent DISCONNECT without will

	// Set while handling CONNECT, before the session can receive anything;
	// read-only afterwards (Deliver reads them from other goroutines).
	version byte
	enc     broker.Encoding
	encFn   func([]byte, *broker.Message) []byte
	maxOut  int // the client's Maximum Packet Size; 0 none
	window  int // outbound QoS 1/2 in flight, at most

	// mu guards the outbound QoS 1 and 2 state, shared by the publishers'
	// Deliver calls and the event goroutine's acknowledgements. Held for
	// O(1) work, never across a broker or transport call that may wait.
	mu       sync.Mutex
	nextID   uint16
	inflight map[uint16]byte // packet identifier → the acknowledgement awaited (PUBACK, PUBREC or PUBCOMP)
	queued   []queuedMsg     // waiting for an in-flight slot, oldest first
	ended    bool            // End was called: deliver nothing more
	revoked  bool            // ended by a rights change: no will
}

// will is a CONNECT's will message, kept until the session ends.
type will struct {
	topic   string
	payload []byte
	props   []byte
	qos     byte
	retain  bool
}

// queuedMsg is a copy of a QoS 1/2 delivery waiting for an in-flight slot.
type queuedMsg struct {
	topic   string
	payload []byte
	props   []byte
	qos     byte
	retain  bool
	subIDs  []uint32
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
	if len(c.stash) > 0 {
		c.stash = append(c.stash, data...)
		n := c.packets(c.stash)
		rest := copy(c.stash, c.stash[n:])
		c.stash = c.stash[:rest]
		if rest == 0 && cap(c.stash) > 64<<10 {
			c.stash = nil // a large packet passed: do not keep its buffer
		}
		return
	}
	n := c.packets(data)
	if n < len(data) && c.state != stClosed {
		c.stash = append(c.stash[:0], data[n:]...)
	}
}

// packets handles the complete packets at the start of b and returns the
// bytes they took.
func (c *Conn) packets(b []byte) int {
	done := 0
	for c.state != stClosed {
		h, body, n, err := packet.ReadPacket(b[done:], c.srv.cfg.MaxPacketSize)
		switch {
		case errors.Is(err, packet.ErrIncomplete):
			return done
		case errors.Is(err, packet.ErrPacketTooLarge):
			c.protocolError(packet.PacketTooLarge, "packet larger than the Maximum Packet Size")
			return len(b)
		case err != nil:
			c.packetError(err)
			return len(b)
		}
		done += n
		c.handle(h, body)
	}
	return len(b)
}

func (c *Conn) handle(h packet.Header, body []byte) {
	if c.state == stConnecting {
		if h.Type != packet.CONNECT {
			c.closeNow() // MQTT-3.1.0-1: the first packet must be CONNECT
			return
		}
		c.connect(body)
		return
	}
	var err error
	switch h.Type {
	case packet.PUBLISH:
		err = c.publish(h, body)
	case packet.PUBACK, packet.PUBREC, packet.PUBREL, packet.PUBCOMP:
		err = c.acknowledged(h, body)
	case packet.SUBSCRIBE:
		err = c.subscribe(h, body)
	case packet.UNSUBSCRIBE:
		err = c.unsubscribe(h, body)
	case packet.PINGREQ:
		if err = packet.DecodePingreq(body); err == nil {
			c.send(packet.AppendPingresp(c.ctl[:0]))
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
	c.srv.log.Debug("mqtt connection closed for a protocol error", "remote", c.remote, "code", code, "reason", reason)
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

// frame wraps one control packet for the transport.
func (c *Conn) frame(pkt []byte) *proto.Frame {
	f := proto.AcquireFrame()
	f.B = appendFramed(f.B, c.ws, pkt)
	return f
}

// send queues one control packet.
func (c *Conn) send(pkt []byte) {
	c.ctl = pkt[:0]
	c.t.SendBacklog(c.frame(pkt))
}

func (c *Conn) disconnectFrame(code byte, reason string) *proto.Frame {
	var props packet.Properties
	if reason != "" {
		props.ReasonString = []byte(broker.SafeReason(reason))
		props.Set(packet.PropReasonString)
	}
	return c.frame(packet.AppendDisconnect(nil, packet.Version5, code, &props))
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
		c.maxOut = int(p.Props.MaximumPacketSize)
		c.window = c.srv.cfg.MaxInflight
		if p.Props.Has(packet.PropReceiveMaximum) {
			c.window = min(c.window, int(p.Props.ReceiveMaximum))
		}
	} else {
		c.window = c.srv.cfg.MaxInflight
	}
	c.enc, c.encFn = sharedEncoding(c.version, c.ws)
	if p.WillFlag {
		w := &will{topic: string(p.WillTopic), payload: append([]byte(nil), p.WillPayload...), qos: p.WillQoS, retain: p.WillRetain}
		if c.version == packet.Version5 {
			if props, ok := appendTravelling(nil, &p.WillProps); ok {
				w.props = props
			}
		}
		c.will = w
	}
	protocol := "mqtt3"
	if c.version == packet.Version5 {
		protocol = "mqtt5"
	}
	sess, err := c.srv.b.Open(c, broker.ConnectRequest{
		Secret:     p.Password,
		RemoteAddr: c.remote,
		Protocol:   protocol,
		ClientID:   clientID,
		Username:   string(p.Username),
		OnRevoke:   c.srv.cfg.OnRevoke,
	})
	if err != nil {
		c.will = nil
		c.refused(err)
		return
	}
	c.sess = sess
	c.key = clientKey{token: sess.TokenID(), id: clientID}
	if old := c.srv.clients.claim(c.key, c); old != nil {
		c.srv.metrics.takeovers.Inc()
		old.takenOver()
	}
	c.registered = true
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
		props.MaximumPacketSize = uint32(c.srv.cfg.MaxPacketSize)
		props.Set(packet.PropMaximumPacketSize)
		props.TopicAliasMaximum = uint16(c.srv.cfg.TopicAliasMaximum)
		props.Set(packet.PropTopicAliasMaximum)
		props.RetainAvailable = 0 // retained messages: not yet (docs/protocol-mqtt.md)
		props.Set(packet.PropRetainAvailable)
		props.SharedSubscriptionAvailable = 0
		props.Set(packet.PropSharedSubscriptionAvailable)
	}
	if keepAlive > 0 {
		c.t.SetIdleTimeout(time.Duration(keepAlive) * 1500 * time.Millisecond) // MQTT-3.1.2-24: one and a half times
	} else {
		c.t.SetIdleTimeout(24 * time.Hour) // 3.1.1 keep alive 0: the client asked for no timeout
	}
	c.state = stConnected
	c.t.Established()
	c.srv.metrics.connects[connAccepted].Inc()
	c.send(packet.AppendConnack(c.ctl[:0], c.version, false, packet.Success, &props))
}

// refused answers a broker refusal with CONNACK.
func (c *Conn) refused(err error) {
	var rej *broker.Rejection
	if !errors.As(err, &rej) {
		c.srv.log.Error("mqtt connect failed", "remote", c.remote, "err", err)
		c.srv.metrics.connects[connUnavailable].Inc()
		c.refuseV(packet.ServerUnavailable, packet.ConnRefusedServerUnavailable, "store unavailable, retry")
		return
	}
	c.srv.log.Debug("mqtt connection refused", "remote", c.remote, "cause", rej.Cause, "reason", rej.Reason)
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
	c.t.CloseAfter(c.frame(packet.AppendConnack(nil, version, false, code, &props)), 1000, "")
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
func (c *Conn) publish(h packet.Header, body []byte) error {
	p := &c.pub
	if err := packet.DecodePublish(h, body, c.version, p); err != nil {
		return err
	}
	if !c.t.AdmitInbound() {
		return nil // over the inbound rate: dropped and counted by the transport
	}
	topic := unsafe.String(unsafe.SliceData(p.Topic), len(p.Topic))
	if c.version == packet.Version5 && p.Props.Has(packet.PropTopicAlias) {
		a := int(p.Props.TopicAlias)
		if a == 0 || a > c.srv.cfg.TopicAliasMaximum {
			c.protocolError(packet.TopicAliasInvalid, "topic alias out of range")
			return nil
		}
		if c.aliases == nil {
			c.aliases = make([]string, c.srv.cfg.TopicAliasMaximum+1)
		}
		if topic == "" {
			if topic = c.aliases[a]; topic == "" {
				c.protocolError(packet.ProtocolError, "unknown topic alias")
				return nil
			}
		} else {
			c.aliases[a] = strings.Clone(topic)
		}
	}
	if p.QoS == 2 {
		if _, dup := c.awaitRel[p.PacketID]; dup {
			// A retransmission of a publish we already took: acknowledge,
			// do not deliver twice (MQTT-4.3.3-9).
			c.send(packet.AppendAck(c.ctl[:0], packet.PUBREC, c.version, p.PacketID, packet.Success, nil))
			return nil
		}
		if len(c.awaitRel) >= c.srv.cfg.ReceiveMaximum {
			c.protocolError(packet.ReceiveMaximumExceeded, "too many QoS 2 publishes awaiting PUBREL")
			return nil
		}
	}
	code := packet.Success
	if p.Retain && c.version == packet.Version5 {
		// CONNACK said Retain Available 0 (MQTT-3.2.2-14).
		c.srv.metrics.refused[refusedRetain].Inc()
		c.protocolError(packet.RetainNotSupported, "retained messages are not supported yet")
		return nil
	}
	m := broker.AcquireMessage()
	m.Topic = topic
	m.Payload = p.Payload
	m.QoS = p.QoS
	if c.version == packet.Version5 {
		var ok bool
		if c.propBuf, ok = appendTravelling(c.propBuf[:0], &p.Props); ok {
			m.Props = c.propBuf
		}
	}
	switch c.sess.Publish(m) {
	case broker.PublishNotAuthorized:
		c.srv.metrics.refused[refusedNotAuthorized].Inc()
		code = packet.NotAuthorized
	case broker.PublishInvalidTopic:
		c.srv.metrics.refused[refusedInvalidTopic].Inc()
		code = packet.TopicNameInvalid
	}
	broker.ReleaseMessage(m)
	if c.version != packet.Version5 {
		code = packet.Success // 3.1.1: acknowledged and dropped
	}
	switch p.QoS {
	case 1:
		c.send(packet.AppendAck(c.ctl[:0], packet.PUBACK, c.version, p.PacketID, code, nil))
	case 2:
		if code < 0x80 {
			if c.awaitRel == nil {
				c.awaitRel = make(map[uint16]struct{})
			}
			c.awaitRel[p.PacketID] = struct{}{}
		}
		c.send(packet.AppendAck(c.ctl[:0], packet.PUBREC, c.version, p.PacketID, code, nil))
	}
	return nil
}

// acknowledged handles PUBACK, PUBREC, PUBREL and PUBCOMP.
func (c *Conn) acknowledged(h packet.Header, body []byte) error {
	a := &c.ack
	if err := packet.DecodeAck(h, body, c.version, a); err != nil {
		return err
	}
	switch h.Type {
	case packet.PUBREL: // inbound QoS 2, step 2
		code := packet.Success
		if _, ok := c.awaitRel[a.PacketID]; ok {
			delete(c.awaitRel, a.PacketID)
		} else if c.version == packet.Version5 {
			code = packet.PacketIdentifierNotFound
		}
		c.send(packet.AppendAck(c.ctl[:0], packet.PUBCOMP, c.version, a.PacketID, code, nil))
		return nil
	case packet.PUBREC: // outbound QoS 2, step 1
		c.mu.Lock()
		st, ok := c.inflight[a.PacketID]
		if ok && st == packet.PUBREC {
			if a.Code >= 0x80 {
				delete(c.inflight, a.PacketID) // the client refused it: the flow ends
			} else {
				c.inflight[a.PacketID] = packet.PUBCOMP
			}
		}
		c.mu.Unlock()
		if ok && st == packet.PUBREC && a.Code < 0x80 {
			c.send(packet.AppendAck(c.ctl[:0], packet.PUBREL, c.version, a.PacketID, packet.Success, nil))
		} else if !ok && c.version == packet.Version5 {
			c.send(packet.AppendAck(c.ctl[:0], packet.PUBREL, c.version, a.PacketID, packet.PacketIdentifierNotFound, nil))
		}
	case packet.PUBACK, packet.PUBCOMP:
		c.mu.Lock()
		if st, ok := c.inflight[a.PacketID]; ok && st == h.Type {
			delete(c.inflight, a.PacketID)
		}
		c.mu.Unlock()
	}
	c.pump()
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
	for f := range s.Filters {
		codes = append(codes, c.subscribeOne(f, subID))
	}
	c.send(packet.AppendSuback(c.ctl[:0], c.version, s.PacketID, nil, codes))
	return nil
}

func (c *Conn) subscribeOne(f packet.SubscribeFilter, subID uint32) byte {
	filter := unsafe.String(unsafe.SliceData(f.Filter), len(f.Filter))
	v5 := c.version == packet.Version5
	fail := func(code5 byte) byte {
		if v5 {
			return code5
		}
		return packet.SubackFailure
	}
	if strings.HasPrefix(filter, "$share/") {
		return fail(packet.SharedSubscriptionsNotSupported)
	}
	qos := min(f.QoS, 2)
	opts := broker.SubOptions{QoS: qos, ID: subID}
	if v5 {
		opts.NoLocal = f.NoLocal
		opts.RetainAsPublished = f.RetainAsPublished
		opts.RetainHandling = f.RetainHandling
	}
	switch c.sess.Subscribe(filter, opts) {
	case broker.SubGranted:
		return qos
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
		if !c.sess.Unsubscribe(string(f)) {
			code = packet.NoSubscriptionExisted
		}
		codes = append(codes, code)
	}
	if c.version != packet.Version5 {
		codes = nil
	}
	c.send(packet.AppendUnsuback(c.ctl[:0], c.version, u.PacketID, nil, codes))
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

// OnClose is the transport's report that the connection is gone. The will,
// if any, is published unless the client disconnected normally or a rights
// change ended the session, and only if the token may still publish to its
// topic (the broker judges it, as any publish).
func (c *Conn) OnClose() {
	c.state = stClosed
	if c.sess == nil {
		return
	}
	if c.registered {
		c.srv.clients.drop(c.key, c)
	}
	c.mu.Lock()
	revoked := c.revoked
	c.ended = true
	c.queued = nil
	c.mu.Unlock()
	if w := c.will; w != nil && !c.graceful && !revoked {
		m := broker.AcquireMessage()
		m.Topic = w.topic
		m.Payload = w.payload
		m.QoS = w.qos
		m.Props = w.props
		c.sess.PublishFinal(m)
		broker.ReleaseMessage(m)
	}
	c.sess.Close()
}

// takenOver ends the session a new connection with the same client
// identifier replaced (MQTT-3.1.4-3).
func (c *Conn) takenOver() {
	c.sess.End(broker.CauseTakenOver, "session taken over")
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

// End is the broker ending the session (a rights change, a kick, a limit,
// a takeover): MQTT 5 gets DISCONNECT with the reason code and a reason
// string, 3.1.1 (whose server never sends DISCONNECT) a close. Called under
// the token's lock: O(1).
func (c *Conn) End(cause broker.Cause, reason string) {
	c.mu.Lock()
	c.ended = true
	c.revoked = cause == broker.CauseTokenChanged || cause == broker.CauseNotAuthorized
	c.queued = nil
	c.mu.Unlock()
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

// Deliver queues one message for the client (broker.Endpoint). QoS 0
// without per-subscriber parts shares one encoding per protocol variant;
// QoS 1 and 2 take a packet identifier and an in-flight slot, or wait in a
// bounded queue for one.
func (c *Conn) Deliver(m *broker.Message, d broker.Delivery) (int, bool, <-chan struct{}) {
	retain := d.RetainAsPublished && m.Retain
	if d.QoS == 0 {
		var f *proto.Frame
		if len(d.SubIDs) == 0 && !retain {
			f = m.Frame(c.enc, c.encFn)
			f.Retain() // the transport's reference
		} else {
			f = proto.AcquireFrame()
			f.B = appendPublish(f.B, c.version, c.ws, m, 0, 0, retain, false, d.SubIDs)
		}
		return c.sendDelivery(f)
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return 0, false, nil
	}
	if len(c.queued) == 0 && len(c.inflight) < c.window {
		id := c.takeIDLocked(d.QoS)
		c.mu.Unlock()
		f := proto.AcquireFrame()
		f.B = appendPublish(f.B, c.version, c.ws, m, d.QoS, id, retain, false, d.SubIDs)
		return c.sendDelivery(f)
	}
	if len(c.queued) >= c.srv.cfg.MaxQueued {
		c.queued[0] = queuedMsg{}
		c.queued = c.queued[1:]
		c.srv.metrics.dropped[dropQueueFull].Inc()
	}
	c.queued = append(c.queued, queuedMsg{
		topic:   strings.Clone(m.Topic),
		payload: append([]byte(nil), m.Payload...),
		props:   append([]byte(nil), m.Props...),
		qos:     d.QoS,
		retain:  retain,
		subIDs:  append([]uint32(nil), d.SubIDs...),
	})
	c.mu.Unlock()
	return 0, true, nil
}

// sendDelivery hands a PUBLISH to the transport, unless it exceeds the
// client's Maximum Packet Size (MQTT-3.1.2-25: discarded).
func (c *Conn) sendDelivery(f *proto.Frame) (int, bool, <-chan struct{}) {
	if c.maxOut > 0 {
		n := len(f.B)
		if c.ws {
			for _, h := range [...]int{2, 4, 10} {
				if wsHeaderLen(n-h) == h {
					n -= h
					break
				}
			}
		}
		if n > c.maxOut {
			f.Release()
			c.srv.metrics.dropped[dropTooLarge].Inc()
			return 0, false, nil
		}
	}
	n := len(f.B)
	ok, backlog := c.t.SendBacklog(f)
	if !ok {
		c.srv.metrics.dropped[dropTransport].Inc()
		return 0, false, backlog
	}
	return n, true, backlog
}

// takeIDLocked assigns a free packet identifier to a new QoS 1/2 delivery.
func (c *Conn) takeIDLocked(qos byte) uint16 {
	if c.inflight == nil {
		c.inflight = make(map[uint16]byte)
	}
	for {
		c.nextID++
		if c.nextID == 0 {
			continue
		}
		if _, used := c.inflight[c.nextID]; !used {
			break
		}
	}
	awaited := packet.PUBACK
	if qos == 2 {
		awaited = packet.PUBREC
	}
	c.inflight[c.nextID] = awaited
	return c.nextID
}

// pump sends queued deliveries while in-flight slots are free. Event
// goroutine (after an acknowledgement).
func (c *Conn) pump() {
	for {
		c.mu.Lock()
		if c.ended || len(c.queued) == 0 || len(c.inflight) >= c.window {
			c.mu.Unlock()
			return
		}
		q := c.queued[0]
		c.queued[0] = queuedMsg{}
		c.queued = c.queued[1:]
		id := c.takeIDLocked(q.qos)
		c.mu.Unlock()
		m := broker.AcquireMessage()
		m.Topic, m.Payload, m.Props = q.topic, q.payload, q.props
		f := proto.AcquireFrame()
		f.B = appendPublish(f.B, c.version, c.ws, m, q.qos, id, q.retain, false, q.subIDs)
		broker.ReleaseMessage(m)
		c.sendDelivery(f)
	}
}
