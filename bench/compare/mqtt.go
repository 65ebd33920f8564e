package compare

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// MQTT 3.1.1 control packet types (OASIS MQTT 3.1.1 §2.2.1). Only the
// client side of QoS 0 is implemented: a well-kept packet library
// (eclipse/paho.mqtt.golang/packets) would bring a new module for five
// packet shapes, so the encoder and decoder are here, fuzzed.
const (
	mqttConnect     = 1
	mqttConnack     = 2
	mqttPublish     = 3
	mqttPuback      = 4
	mqttPubrec      = 5
	mqttPubrel      = 6
	mqttPubcomp     = 7
	mqttSubscribe   = 8
	mqttSuback      = 9
	mqttUnsubscribe = 10
	mqttUnsuback    = 11
	mqttPingreq     = 12
	mqttPingresp    = 13
	mqttDisconnect  = 14
)

// mqttMaxPacket bounds the remaining length the decoder accepts. The
// protocol allows 256 MiB; the harness never receives more than a few
// hundred bytes, and a bound keeps a corrupt length from growing the read
// buffer without limit.
const mqttMaxPacket = 16 << 20

// mqttKeepAlive is the keep-alive the harness announces in CONNECT; Conn's
// KeepAlive sends a PINGREQ, and the scenarios call it well within this.
const mqttKeepAlive = 60

var (
	errMQTTLength    = errors.New("mqtt: malformed remaining length")
	errMQTTTooLarge  = errors.New("mqtt: packet larger than 16 MiB")
	errMQTTMalformed = errors.New("mqtt: malformed packet")
)

// mqttPacket is one decoded server→client packet. Topic, Payload and Codes
// alias the decoded buffer.
type mqttPacket struct {
	Type, Flags    byte
	SessionPresent bool   // CONNACK
	ReturnCode     byte   // CONNACK
	PacketID       uint16 // PUBLISH with QoS > 0, PUBACK…, SUBACK, UNSUBACK
	Topic          []byte // PUBLISH
	Payload        []byte // PUBLISH
	Codes          []byte // SUBACK return codes
}

// parseMQTT decodes the packet at the start of b. It returns n == 0 and no
// error when b holds only part of a packet. Packets a server never sends
// (CONNECT, SUBSCRIBE, …), reserved types, wrong fixed-header flags and
// inconsistent lengths are errors.
func parseMQTT(b []byte) (n int, p mqttPacket, err error) {
	if len(b) < 2 {
		return 0, p, nil
	}
	p.Type, p.Flags = b[0]>>4, b[0]&0x0f
	rl, i := 0, 1
	for mult := 1; ; mult *= 128 {
		if i > 4 {
			return 0, p, errMQTTLength
		}
		if i == len(b) {
			return 0, p, nil
		}
		c := b[i]
		i++
		rl += int(c&0x7f) * mult
		if c&0x80 == 0 {
			if c == 0 && i > 2 { // a trailing zero byte: not the minimal encoding
				return 0, p, errMQTTLength
			}
			break
		}
	}
	if rl > mqttMaxPacket {
		return 0, p, errMQTTTooLarge
	}
	if len(b)-i < rl {
		return 0, p, nil
	}
	body := b[i : i+rl]
	n = i + rl
	switch p.Type {
	case mqttConnack:
		if p.Flags != 0 || rl != 2 || body[0]&^1 != 0 {
			return 0, p, fmt.Errorf("%w: CONNACK", errMQTTMalformed)
		}
		p.SessionPresent = body[0] == 1
		p.ReturnCode = body[1]
	case mqttPublish:
		qos := (p.Flags >> 1) & 3
		if qos == 3 || len(body) < 2 {
			return 0, p, fmt.Errorf("%w: PUBLISH", errMQTTMalformed)
		}
		tl := int(body[0])<<8 | int(body[1])
		rest := body[2:]
		if tl > len(rest) {
			return 0, p, fmt.Errorf("%w: PUBLISH topic length", errMQTTMalformed)
		}
		p.Topic, rest = rest[:tl], rest[tl:]
		if !utf8.Valid(p.Topic) {
			return 0, p, fmt.Errorf("%w: PUBLISH topic is not UTF-8", errMQTTMalformed)
		}
		if qos > 0 {
			if len(rest) < 2 {
				return 0, p, fmt.Errorf("%w: PUBLISH packet identifier", errMQTTMalformed)
			}
			p.PacketID, rest = uint16(rest[0])<<8|uint16(rest[1]), rest[2:]
		}
		p.Payload = rest
	case mqttPuback, mqttPubrec, mqttPubcomp, mqttUnsuback, mqttPubrel:
		want := byte(0)
		if p.Type == mqttPubrel {
			want = 2
		}
		if p.Flags != want || rl != 2 {
			return 0, p, fmt.Errorf("%w: acknowledgement type %d", errMQTTMalformed, p.Type)
		}
		p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	case mqttSuback:
		if p.Flags != 0 || rl < 3 {
			return 0, p, fmt.Errorf("%w: SUBACK", errMQTTMalformed)
		}
		p.PacketID = uint16(body[0])<<8 | uint16(body[1])
		p.Codes = body[2:]
	case mqttPingresp:
		if p.Flags != 0 || rl != 0 {
			return 0, p, fmt.Errorf("%w: PINGRESP", errMQTTMalformed)
		}
	default:
		return 0, p, fmt.Errorf("%w: packet type %d is not sent by a server", errMQTTMalformed, p.Type)
	}
	return n, p, nil
}

// appendMQTTLength appends the variable-length remaining length.
func appendMQTTLength(dst []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		dst = append(dst, c)
		if n == 0 {
			return dst
		}
	}
}

func appendMQTTString(dst []byte, s string) []byte {
	return append(append(dst, byte(len(s)>>8), byte(len(s))), s...)
}

// checkMQTTString refuses what a UTF-8 encoded MQTT string cannot hold.
func checkMQTTString(what, s string) error {
	if len(s) > 0xffff {
		return fmt.Errorf("mqtt: %s longer than 65,535 bytes", what)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("mqtt: %s is not UTF-8", what)
	}
	return nil
}

// appendMQTTConnect appends CONNECT for MQTT 3.1.1 with a clean session,
// no will and no credentials.
func appendMQTTConnect(dst []byte, clientID string, keepAlive uint16) ([]byte, error) {
	return appendMQTTConnectAuth(dst, clientID, keepAlive, "", "")
}

// appendMQTTConnectAuth appends CONNECT for MQTT 3.1.1 with a clean
// session and no will; a non-empty username sets the User Name flag, a
// non-empty password the Password flag (§3.1.2.8–9: 3.1.1 allows a password
// only with a user name, so a password alone is refused). The password is
// binary data: Gatecast takes the token secret there.
func appendMQTTConnectAuth(dst []byte, clientID string, keepAlive uint16, username, password string) ([]byte, error) {
	if err := checkMQTTString("client identifier", clientID); err != nil {
		return dst, err
	}
	if err := checkMQTTString("user name", username); err != nil {
		return dst, err
	}
	if len(password) > 0xffff {
		return dst, errors.New("mqtt: password longer than 65,535 bytes")
	}
	if password != "" && username == "" {
		return dst, errors.New("mqtt: MQTT 3.1.1 sends a password only with a user name")
	}
	flags := byte(0x02) // clean session
	rl := 10 + 2 + len(clientID)
	if username != "" {
		flags |= 0x80
		rl += 2 + len(username)
	}
	if password != "" {
		flags |= 0x40
		rl += 2 + len(password)
	}
	dst = append(dst, mqttConnect<<4)
	dst = appendMQTTLength(dst, rl)
	dst = appendMQTTString(dst, "MQTT")
	dst = append(dst, 4, flags, byte(keepAlive>>8), byte(keepAlive)) // level 4
	dst = appendMQTTString(dst, clientID)
	if username != "" {
		dst = appendMQTTString(dst, username)
	}
	if password != "" {
		dst = appendMQTTString(dst, password)
	}
	return dst, nil
}

// appendMQTTSubscribe appends SUBSCRIBE of filters at QoS 0.
func appendMQTTSubscribe(dst []byte, packetID uint16, filters []string) ([]byte, error) {
	if len(filters) == 0 {
		return dst, errors.New("mqtt: SUBSCRIBE needs at least one filter")
	}
	rl := 2
	for _, f := range filters {
		if f == "" {
			return dst, errors.New("mqtt: empty topic filter")
		}
		if err := checkMQTTString("topic filter", f); err != nil {
			return dst, err
		}
		rl += 2 + len(f) + 1
	}
	if rl > mqttMaxPacket {
		return dst, errMQTTTooLarge
	}
	dst = append(dst, mqttSubscribe<<4|0x02)
	dst = appendMQTTLength(dst, rl)
	dst = append(dst, byte(packetID>>8), byte(packetID))
	for _, f := range filters {
		dst = append(appendMQTTString(dst, f), 0)
	}
	return dst, nil
}

// appendMQTTPublish appends a QoS 0 PUBLISH without retain.
func appendMQTTPublish(dst []byte, topic string, payload []byte) ([]byte, error) {
	if topic == "" {
		return dst, errors.New("mqtt: empty topic name")
	}
	if err := checkMQTTString("topic name", topic); err != nil {
		return dst, err
	}
	rl := 2 + len(topic) + len(payload)
	if rl > mqttMaxPacket {
		return dst, errMQTTTooLarge
	}
	dst = append(dst, mqttPublish<<4)
	dst = appendMQTTLength(dst, rl)
	dst = appendMQTTString(dst, topic)
	return append(dst, payload...), nil
}

// mqttWire is the MQTT 3.1.1 client codec: a byte stream of packets, over
// WebSocket binary frames (a packet may span frames, a frame may carry
// several packets) or over plain TCP.
type mqttWire struct{}

func (mqttWire) opcode() ws.OpCode { return ws.OpBinary }
func (mqttWire) stream() bool      { return true }

func (mqttWire) appendPublish(dst []byte, topic string, payload []byte) ([]byte, error) {
	return appendMQTTPublish(dst, topic, payload)
}

func (mqttWire) appendKeepAlive(dst []byte) []byte {
	return append(dst, mqttPingreq<<4, 0)
}

func (mqttWire) parse(b []byte) (int, event, error) {
	n, p, err := parseMQTT(b)
	if err != nil || n == 0 {
		return n, event{}, err
	}
	switch p.Type {
	case mqttPublish:
		if p.Flags&0x06 != 0 {
			// A QoS 0 subscription only ever receives QoS 0 (the broker
			// downgrades); a higher QoS would need an acknowledgement the
			// harness does not send.
			return n, event{}, fmt.Errorf("mqtt: PUBLISH with QoS %d on a QoS 0 subscription", p.Flags>>1&3)
		}
		return n, event{kind: evMessage, topic: p.Topic, payload: p.Payload}, nil
	case mqttConnack:
		if p.ReturnCode != 0 {
			return n, event{}, fmt.Errorf("mqtt: CONNACK refused the connection: return code %d", p.ReturnCode)
		}
		return n, event{kind: evAck, ack: mqttConnack}, nil
	case mqttSuback:
		for _, c := range p.Codes {
			if c == 0x80 {
				return n, event{}, errors.New("mqtt: SUBACK refused a subscription (0x80)")
			}
		}
		return n, event{kind: evAck, ack: mqttSuback}, nil
	default: // PINGRESP, stray acknowledgements
		return n, event{kind: evNone}, nil
	}
}

// MQTT is the MQTT 3.1.1 client (QoS 0, clean sessions) over WebSocket
// (subprotocol "mqtt", binary frames) or over plain TCP, chosen by the
// URL's scheme: the one client the MQTT table drives every broker with.
type MQTT struct {
	// URL is ws://host:port/path (Mosquitto serves MQTT on any path,
	// Gatecast on /mqtt) or tcp://host:port (also mqtt://host:port).
	URL string
	// Username and Password go in CONNECT when set (Gatecast: any user
	// name, the token secret as the password); empty for anonymous
	// brokers. A password needs a user name in MQTT 3.1.1.
	Username, Password string
}

// Name implements Protocol.
func (MQTT) Name() string { return "mqtt" }

// Transport is "tcp" or "ws", from the URL's scheme.
func (m MQTT) Transport() string {
	if _, ok := mqttTCPAddr(m.URL); ok {
		return "tcp"
	}
	return "ws"
}

// mqttTCPAddr returns host:port of a tcp:// or mqtt:// URL.
func mqttTCPAddr(url string) (string, bool) {
	for _, scheme := range []string{"tcp://", "mqtt://"} {
		if rest, ok := strings.CutPrefix(url, scheme); ok {
			return strings.TrimSuffix(rest, "/"), true
		}
	}
	return "", false
}

// Dial implements Protocol: CONNECT → CONNACK, then one SUBSCRIBE of all
// filters → SUBACK.
func (m MQTT) Dial(ctx context.Context, clientID string, filters []string) (*Conn, error) {
	var c *Conn
	var err error
	if addr, ok := mqttTCPAddr(m.URL); ok {
		c, err = dialTCP(ctx, addr, mqttWire{})
	} else {
		c, err = dialWS(ctx, m.URL, []string{"mqtt"}, nil, mqttWire{})
	}
	if err != nil {
		return nil, err
	}
	err = c.handshake(ctx, func() error {
		b, err := appendMQTTConnectAuth(nil, clientID, mqttKeepAlive, m.Username, m.Password)
		if err != nil {
			return err
		}
		if err := c.writeData(b); err != nil {
			return err
		}
		if err := c.awaitAck(mqttConnack); err != nil {
			return err
		}
		if len(filters) == 0 {
			return nil
		}
		if b, err = appendMQTTSubscribe(b[:0], 1, filters); err != nil {
			return err
		}
		if err := c.writeData(b); err != nil {
			return err
		}
		return c.awaitAck(mqttSuback)
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("mqtt %s (client %s): %w", m.URL, strconv.Quote(clientID), err)
	}
	return c, nil
}
