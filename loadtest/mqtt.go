package loadtest

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gatecast/gatecast/proto/mqtt"
)

// The simulator's MQTT client (--protocol mqtt): the same devConn, worker
// and event loop as the seed client, over the broker's MQTT TCP listener.
//
//   - The dialing goroutine connects, sends CONNECT (the token secret as the
//     password, a client identifier per connection), reads CONNACK and, when
//     the session is new, sends SUBSCRIBE and reads SUBACK, all from
//     netpoll's buffer and never past the packet it waits for; a PUBLISH that
//     arrives before SUBACK is handled on the way. Then reads move to
//     netpoll's OnRequest (onRequestMQTT), as for the seed client.
//   - Packets may span reads. The partial packet stays in netpoll's input
//     buffer, the connection's reassembly buffer: the fixed header is peeked
//     (2 to 5 bytes), and the handler waits for the rest of the packet there
//     (bounded by frameReadTimeout), as readFrame does for a WebSocket frame;
//     a complete packet is decoded in place (mqtt.DecodePublish allocates
//     nothing) and released.
//   - QoS 1 deliveries are acknowledged with PUBACK (QoS 2 with PUBREC,
//     PUBCOMP), batched: the acknowledgements of the packets one OnRequest
//     call reads go out in one write (at most ackBatch bytes), not one write
//     each; the commander's QoS 1 commands are acknowledged by the broker
//     (counted), a DISCONNECT from the broker is counted by reason code
//     (0x87 for a device of a revoked token is the revocation), and each
//     connection sends PINGREQ every half keep alive (pingLoop).

// maxMQTTPacket bounds a packet the client accepts from the broker: its
// largest delivery (--max-frame-size, 64 KiB by default, plus topic and
// properties) is far below.
const maxMQTTPacket = maxServerFrame + 64<<10

// MQTT subscription QoS of the devices' command topics and of the
// dashboards' telemetry filters.
const dashboardQoS = 0

// errMQTTUnexpected is a packet a server must not send at that point.
var errMQTTUnexpected = errors.New("loadtest: unexpected MQTT packet")

// nextPacket reads one whole MQTT packet from r and returns its fixed
// header and body, a view into r valid until r.Release. When only part of
// the packet is buffered it waits for the rest in netpoll's buffer (the
// connection's reassembly buffer; r's read timeout bounds the wait).
func nextPacket(r netpoll.Reader) (mqtt.Header, []byte, error) {
	hn := min(max(r.Len(), 2), 5)
	for {
		b, err := r.Peek(hn) // waits when hn > r.Len()
		if err != nil {
			return mqtt.Header{}, nil, err
		}
		_, _, n, err := mqtt.ReadPacket(b, maxMQTTPacket)
		switch {
		case err == nil, errors.Is(err, mqtt.ErrIncomplete) && n > 0:
			pkt, err := r.Next(n)
			if err != nil {
				return mqtt.Header{}, nil, err
			}
			h, body, _, err := mqtt.ReadPacket(pkt, maxMQTTPacket)
			return h, body, err
		case errors.Is(err, mqtt.ErrIncomplete) && hn < 5:
			hn++ // the remaining length itself is cut short
		default:
			return mqtt.Header{}, nil, err
		}
	}
}

// writeNow writes p to c at once, through mallocBatch (no output node left
// pinned): for the handshake, before c is shared with publishers.
func writeNow(c netpoll.Connection, p []byte) error {
	_, err := (&headReader{c: c}).Write(p)
	return err
}

// clientID appends connection id's MQTT client identifier.
func (w *worker) clientID(b []byte, id int32) []byte {
	b = append(b, w.spec.ClientPrefix...)
	b = append(b, '-')
	return strconv.AppendInt(b, int64(id), 10)
}

// appendMQTTConnect appends dc's CONNECT. Persistent devices (offline)
// ask for a session that outlives the connection: MQTT 5 with a Session
// Expiry Interval (Clean Start on the first connect only), 3.1.1 with
// Clean Session 0 (the client identifier is new to the broker on the first
// connect, so no old session is resumed).
func (w *worker) appendMQTTConnect(b []byte, dc *devConn) []byte {
	c := mqtt.Connect{
		ProtocolLevel: w.spec.MQTTVersion,
		CleanStart:    true,
		KeepAlive:     uint16(w.spec.KeepAlive / time.Second),
		UsernameFlag:  true,
		Username:      []byte("loadtest"),
		PasswordFlag:  true,
	}
	c.ClientID = w.clientID(make([]byte, 0, 48), dc.id)
	i := int(dc.id)
	switch dc.role {
	case roleDevice:
		c.Password = []byte(w.deviceToken(i))
		if w.spec.Persistent {
			if w.spec.MQTTVersion == mqtt.Version5 {
				dc.wmu.Lock()
				c.CleanStart = dc.gen == 0 // never attached: a fresh session
				dc.wmu.Unlock()
				c.Props.SessionExpiryInterval = w.spec.SessionExpiry
				c.Props.Set(mqtt.PropSessionExpiryInterval)
			} else {
				c.CleanStart = false
			}
		}
	case roleDashboard:
		c.Password = []byte(w.spec.DashboardToken)
	default:
		c.Password = []byte(w.spec.CommanderToken)
	}
	return mqtt.AppendConnect(b, &c)
}

// appendMQTTSubscribe appends dc's SUBSCRIBE (packet identifier 1), or
// returns b unchanged when dc subscribes to nothing (the commander).
func (w *worker) appendMQTTSubscribe(b []byte, dc *devConn) []byte {
	i := int(dc.id)
	var filters []mqtt.SubscribeFilter
	switch {
	case dc.role == roleDevice && w.spec.Layout != "":
		filters = []mqtt.SubscribeFilter{{Filter: w.appendDeviceFilter(nil, i), QoS: w.spec.CommandQoS}}
	case dc.role == roleDevice:
		own := appendDeviceTopic(nil, i%w.spec.Regions, i, "cmd")
		filters = []mqtt.SubscribeFilter{{Filter: own, QoS: w.spec.CommandQoS}, {Filter: []byte(fleetTopic), QoS: w.spec.CommandQoS}}
	case dc.role == roleDashboard:
		f := append([]byte("lt/r"), strconv.Itoa((i-w.spec.Devices)%w.spec.Regions)...)
		filters = []mqtt.SubscribeFilter{{Filter: append(f, "/+/telemetry"...), QoS: dashboardQoS}}
	default:
		return b
	}
	return mqtt.AppendSubscribe(b, w.spec.MQTTVersion, 1, nil, filters)
}

// handshakeMQTT runs CONNECT → CONNACK (→ SUBSCRIBE → SUBACK) on a fresh
// connection from the dialing goroutine, then attaches it. A refusal is
// counted by its reason code (connack_0x86, suback_0x87…). dialAt is when
// the dial began: the connection's openedAt, from which a persistent
// device's command is timed.
func (dc *devConn) handshakeMQTT(c netpoll.Connection, dialAt int64) (errKind, error) {
	w := dc.w
	_ = c.SetReadTimeout(w.spec.HandshakeTimeout)
	_ = c.SetWriteTimeout(w.spec.HandshakeTimeout)
	fail := func(kind errKind, err error) (errKind, error) {
		_ = c.Close()
		if kind == errMQTTConnect && isTimeout(err) {
			kind = errHandshakeTimeout
		}
		return kind, err
	}
	if err := writeNow(c, w.appendMQTTConnect(make([]byte, 0, 128), dc)); err != nil {
		return fail(errHandshake, err)
	}
	r := c.Reader()
	h, body, err := nextPacket(r)
	if err != nil {
		return fail(errMQTTConnect, err)
	}
	if h.Type != mqtt.CONNACK {
		return fail(errMQTTConnect, errMQTTUnexpected)
	}
	var ack mqtt.Connack
	if err := mqtt.DecodeConnack(body, w.spec.MQTTVersion, &ack); err != nil {
		return fail(errProtocol, err)
	}
	_ = r.Release()
	if ack.Code != 0 {
		w.errs.addClose(closeKey{code: uint16(ack.Code), mqtt: mqttKindConnack})
		return fail(errCounted, &refusedError{code: uint16(ack.Code), mqtt: true, what: "CONNACK " + mqtt.ReasonString(ack.Code)})
	}
	if ack.SessionPresent {
		w.sessionPresent.Add(1)
	} else if sub := w.appendMQTTSubscribe(make([]byte, 0, 96), dc); len(sub) > 0 {
		if err := writeNow(c, sub); err != nil {
			return fail(errHandshake, err)
		}
		for {
			h, body, err := nextPacket(r)
			if err != nil {
				return fail(errMQTTConnect, err)
			}
			if h.Type != mqtt.SUBACK {
				// A delivery may overtake SUBACK: the subscription is
				// live before the broker answers.
				err = dc.handlePacket(c, h, body, nil)
				_ = r.Release()
				if err != nil {
					return fail(errProtocol, err)
				}
				continue
			}
			var sa mqtt.Suback
			err = mqtt.DecodeSuback(body, w.spec.MQTTVersion, &sa)
			refused := byte(0)
			for _, code := range sa.Codes {
				if code >= 0x80 {
					refused = code
				}
			}
			_ = r.Release()
			if err != nil {
				return fail(errProtocol, err)
			}
			if refused != 0 {
				w.errs.addClose(closeKey{code: uint16(refused), mqtt: mqttKindSuback})
				return fail(errCounted, &refusedError{code: uint16(refused), mqtt: true, what: "SUBACK " + mqtt.ReasonString(refused)})
			}
			break
		}
	}
	_ = c.SetReadTimeout(frameReadTimeout)
	_ = c.SetWriteTimeout(writeTimeout)
	dc.attach(c, dialAt)
	return 0, nil
}

// ackBatch bounds the acknowledgements one OnRequest call holds before
// writing them (4 bytes each in 3.1.1 and for an MQTT 5 Success).
const ackBatch = 256

// ackBufs hold the acknowledgements of one OnRequest call: taken at the
// first one, given back at the end of the call, so that neither an idle
// connection nor a wakeup keeps or allocates one.
var ackBufs = sync.Pool{New: func() any { return new([ackBatch + 16]byte) }}

// onRequestMQTT is netpoll's OnRequest for an MQTT connection: it runs on
// an event goroutine, serially per connection, whenever input is buffered.
func (dc *devConn) onRequestMQTT(_ context.Context, c netpoll.Connection) error {
	r := c.Reader()
	var acks []byte // from ackBufs once there is one
	defer func() {
		if cap(acks) == 0 {
			return
		}
		if len(acks) > 0 {
			dc.write(acks)
		}
		ackBufs.Put((*[ackBatch + 16]byte)(acks[:cap(acks)]))
	}()
	for r.Len() > 0 {
		if len(acks) >= ackBatch {
			dc.write(acks)
			acks = acks[:0]
		}
		if dc.flags.Load()&fGotClose != 0 {
			_ = r.Skip(r.Len())
			_ = r.Release()
			return nil
		}
		if err := dc.readPacket(c, r, &acks); err != nil {
			switch {
			case isTimeout(err):
				dc.w.errs.add(errReadTimeout)
			case errors.Is(err, netpoll.ErrEOF), errors.Is(err, netpoll.ErrConnClosed):
			default:
				dc.w.errs.add(errProtocol)
			}
			_ = c.Close()
			return nil
		}
	}
	return nil
}

// readPacket reads and handles one packet of an attached connection,
// appending its acknowledgement, if any, to *acks. A QoS 0 or QoS 1
// delivery allocates nothing.
func (dc *devConn) readPacket(c netpoll.Connection, r netpoll.Reader, acks *[]byte) error {
	h, body, err := nextPacket(r)
	if err != nil {
		return err
	}
	err = dc.handlePacket(c, h, body, acks)
	if rerr := r.Release(); err == nil {
		err = rerr
	}
	return err
}

// handlePacket handles one packet from the broker. Acknowledgements are
// appended to *acks, for the caller to write through dc.write (shared
// with the publishers), or with acks nil (the handshake, before c is
// shared) written to c at once. body is valid until the caller releases
// the reader.
func (dc *devConn) handlePacket(c netpoll.Connection, h mqtt.Header, body []byte, acks *[]byte) error {
	w := dc.w
	v := w.spec.MQTTVersion
	ack := func(typ byte, id uint16) {
		if acks != nil {
			if cap(*acks) == 0 {
				*acks = ackBufs.Get().(*[ackBatch + 16]byte)[:0]
			}
			// within capacity: the caller writes them before ackBatch
			*acks = mqtt.AppendAck(*acks, typ, v, id, mqtt.Success, nil)
			return
		}
		var buf [8]byte
		if c != nil {
			_ = writeNow(c, mqtt.AppendAck(buf[:0], typ, v, id, mqtt.Success, nil))
		}
	}
	switch h.Type {
	case mqtt.PUBLISH:
		var p mqtt.Publish
		if err := mqtt.DecodePublish(h, body, v, &p); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		lat := int64(-1)
		if t, ok := parseStamp(p.Payload); ok {
			lat = now - t
		}
		if p.Dup {
			w.dupFlags.Add(1)
		}
		// The device's own count first: a report that waits for the
		// delivered count (run.drain) then reads this one complete.
		if dc.role == roleDevice {
			w.commandSeen(dc, now)
		}
		w.delivered(dc, lat)
		switch p.QoS {
		case 1:
			ack(mqtt.PUBACK, p.PacketID)
		case 2:
			ack(mqtt.PUBREC, p.PacketID)
		}
	case mqtt.PUBACK, mqtt.PUBCOMP:
		// The end of a QoS 1 or QoS 2 command's flow (the commander).
		var a mqtt.Ack
		if err := mqtt.DecodeAck(h, body, v, &a); err != nil {
			return err
		}
		if dc.role == roleDevice {
			// A device's probe (revoke --kind downgrade).
			w.probeAcked(dc, a.Code)
			break
		}
		w.pubacks.Add(1)
		if a.Code >= 0x80 {
			w.errs.addClose(closeKey{code: uint16(a.Code), mqtt: mqttKindPuback})
		}
	case mqtt.PUBREC:
		var a mqtt.Ack
		if err := mqtt.DecodeAck(h, body, v, &a); err != nil {
			return err
		}
		if a.Code >= 0x80 { // refused: the flow ends here
			w.pubacks.Add(1)
			w.errs.addClose(closeKey{code: uint16(a.Code), mqtt: mqttKindPuback})
			break
		}
		ack(mqtt.PUBREL, a.PacketID)
	case mqtt.PUBREL:
		var a mqtt.Ack
		if err := mqtt.DecodeAck(h, body, v, &a); err != nil {
			return err
		}
		ack(mqtt.PUBCOMP, a.PacketID)
	case mqtt.SUBACK, mqtt.UNSUBACK:
		// The simulator subscribes once, in the handshake: nothing to do.
	case mqtt.PINGRESP:
		if err := mqtt.DecodePingresp(body); err != nil {
			return err
		}
		w.pingresps.Add(1)
	case mqtt.DISCONNECT:
		var d mqtt.Disconnect
		if err := mqtt.DecodeDisconnect(body, v, &d); err != nil {
			return err
		}
		prev := dc.flags.Or(fGotClose)
		if prev&fByUs == 0 {
			w.disconnected(dc, d.Code, time.Now().UnixNano())
		}
		// The broker closes the TCP connection after DISCONNECT; close it
		// ourselves if it does not.
		dc.lingerThenClose(c)
	default:
		return errMQTTUnexpected
	}
	return nil
}

// disconnected accounts for a DISCONNECT the broker sent first (MQTT 5).
// 0x87 (not authorized) to a device of a revoked token is the revocation.
func (w *worker) disconnected(dc *devConn, code byte, now int64) {
	if w.stormCause(dc, closeKey{code: uint16(code), mqtt: mqttKindDisconn}.String()) || w.signal(dc, sigDisconnect, uint16(code)) {
		return
	}
	if code == mqtt.NotAuthorized && w.revokedDevice(dc) {
		w.revokedClose(now)
		return
	}
	w.errs.addClose(closeKey{code: uint16(code), mqtt: mqttKindDisconn})
}

// lostMQTT accounts for an MQTT connection the broker closed without a
// DISCONNECT: in 3.1.1, whose server never sends one, that is how a
// revocation ends a device of a revoked token; anything else is a drop.
func (w *worker) lostMQTT(dc *devConn) {
	if w.signal(dc, sigLost, 0) {
		return
	}
	if w.spec.MQTTVersion != mqtt.Version5 && w.revokedDevice(dc) {
		w.revokedClose(time.Now().UnixNano())
		return
	}
	w.errs.add(errDroppedMQTT)
}

// commandSeen counts a command delivered to device dc and, for persistent
// sessions (offline), times it from the start of the connection's dial.
func (w *worker) commandSeen(dc *devConn, now int64) {
	i := int(dc.id) - w.spec.DevLo
	if i < 0 || i >= len(w.cmdSeen) {
		return
	}
	w.cmdSeen[i].Add(1)
	if w.spec.Persistent {
		w.resumeMu.Lock()
		recordUs(w.resumeHist, now-dc.openedAt)
		w.resumeMu.Unlock()
	}
}

// appendMQTTDisconnect appends a normal DISCONNECT (E0 00 in both
// versions).
func appendMQTTDisconnect(b []byte, version byte) []byte {
	return mqtt.AppendDisconnect(b, version, mqtt.NormalDisconnection, nil)
}

// pingLoop sends PINGREQ on every open MQTT connection once per half keep
// alive, spread over the interval in pingSlots steps, until stop.
func (w *worker) pingLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	const pingSlots = 20
	interval := w.spec.KeepAlive / 2
	t := time.NewTicker(max(interval/pingSlots, time.Millisecond))
	defer t.Stop()
	ping := mqtt.AppendPingreq(nil)
	slot := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		for i := slot; i < len(w.conns); i += pingSlots {
			if dc := &w.conns[i]; dc.isOpen() && dc.write(ping) {
				w.pings.Add(1)
			}
		}
		slot = (slot + 1) % pingSlots
	}
}

// mqttCounters are a worker's cumulative MQTT counts.
type mqttCounters struct {
	sessionPresent atomic.Int64 // CONNACKs with Session Present 1
	pubacks        atomic.Int64 // PUBACKs (QoS 1) and PUBCOMPs (QoS 2) for the commander's commands
	pings          atomic.Int64 // PINGREQs sent
	pingresps      atomic.Int64
	dupFlags       atomic.Int64 // deliveries with the DUP flag (resent after a reconnect)
}

// appendMQTTPublish appends a PUBLISH of msg to topic at qos. QoS 1 and 2
// take the next packet identifier of the worker's commander: only
// commandLoop publishes above QoS 0, from one goroutine. The broker holds
// a client's QoS 2 identifiers only until PUBREL, answered at once, and no
// QoS 1 identifier, so reusing one after 65,535 publishes is safe.
func (w *worker) appendMQTTPublish(b, topic, msg []byte, qos byte) []byte {
	p := mqtt.Publish{QoS: qos, Topic: topic, Payload: msg}
	if qos > 0 {
		if w.cmdID++; w.cmdID == 0 {
			w.cmdID = 1
		}
		p.PacketID = w.cmdID
	}
	return mqtt.AppendPublish(b, w.spec.MQTTVersion, &p)
}
