package mqtt

import "bytes"

var (
	nameMQTT   = []byte("MQTT")
	nameMQIsdp = []byte("MQIsdp")
)

// Connect is a CONNECT packet. After DecodeConnect its []byte fields are
// views into the decoded body.
type Connect struct {
	// ProtocolName and ProtocolLevel are what the client sent ("MQTT" with
	// 4 or 5, "MQIsdp" with 3). DecodeConnect fills them even when it
	// refuses the packet, as soon as they are read, so a server can answer
	// in the client's version: CONNACK 0x84 in MQTT 5, return code 1 in
	// 3.1.1. For the other decoders the version is ProtocolLevel.
	ProtocolName  []byte
	ProtocolLevel byte
	CleanStart    bool // Clean Session in 3.1.1
	KeepAlive     uint16
	Props         Properties // MQTT 5
	ClientID      []byte     // may be empty

	WillFlag    bool
	WillQoS     byte
	WillRetain  bool
	WillProps   Properties // MQTT 5
	WillTopic   []byte
	WillPayload []byte

	UsernameFlag bool
	Username     []byte
	PasswordFlag bool
	Password     []byte
}

// DecodeConnect decodes the body of a CONNECT packet (the server's first
// packet; the version comes from the packet itself). It checks:
//
//   - protocol name and level: "MQTT" 4 or 5, or "MQIsdp" 3 (MQTT 3.1,
//     decoded with the 3.1.1 rules); anything else is refused with
//     UnsupportedProtocolVersion, ProtocolName and ProtocolLevel set;
//   - connect flags: the reserved bit set, will QoS 3, or will QoS or will
//     retain without the will flag are MalformedPacket; in 3.1.1 a password
//     without a user name is a ProtocolError (MQTT 5 allows it);
//   - MQTT 5 connect and will properties (see Properties), authentication
//     data without a method being a ProtocolError;
//   - client identifier, will topic and user name are well-formed UTF-8
//     without U+0000 (MalformedPacket); a will topic that is empty or has a
//     wildcard is TopicNameInvalid;
//   - 3.1.1: an empty client identifier with Clean Session 0, and for 3.1
//     any empty identifier, is ClientIdentifierNotValid (identifier
//     rejected, MQTT-3.1.3-8); MQTT 5 lets the server assign one;
//   - no bytes after the last field.
//
// What the identifier may contain, credentials, keep alive limits and the
// will payload format are the server's decisions.
func DecodeConnect(body []byte, c *Connect) error {
	*c = Connect{}
	r := reader{b: body}
	name, ok := r.binary()
	if !ok {
		return errTruncated
	}
	c.ProtocolName = name
	if c.ProtocolLevel, ok = r.u8(); !ok {
		return errTruncated
	}
	switch {
	case bytes.Equal(name, nameMQTT) && (c.ProtocolLevel == Version311 || c.ProtocolLevel == Version5):
	case bytes.Equal(name, nameMQIsdp) && c.ProtocolLevel == Version31:
	default:
		return errUnsupportedProtocol
	}
	v5 := c.ProtocolLevel == Version5
	flags, ok := r.u8()
	if !ok {
		return errTruncated
	}
	if flags&1 != 0 {
		return errConnectReserved
	}
	c.CleanStart = flags&0x02 != 0
	c.WillFlag = flags&0x04 != 0
	c.WillQoS = flags >> 3 & 3
	c.WillRetain = flags&0x20 != 0
	c.PasswordFlag = flags&0x40 != 0
	c.UsernameFlag = flags&0x80 != 0
	if c.WillQoS == 3 {
		return errWillQoS3
	}
	if !c.WillFlag && (c.WillQoS != 0 || c.WillRetain) {
		return errWillFlags
	}
	if !v5 && c.PasswordFlag && !c.UsernameFlag {
		return errPasswordNoUser
	}
	if c.KeepAlive, ok = r.u16(); !ok {
		return errTruncated
	}
	if v5 {
		if err := decodeProperties(&r, propsConnect, &c.Props); err != nil {
			return err
		}
	}
	var err *Error
	if c.ClientID, err = r.str(); err != nil {
		return err
	}
	if len(c.ClientID) == 0 {
		switch {
		case c.ProtocolLevel == Version31:
			return errClientIDEmpty31
		case c.ProtocolLevel == Version311 && !c.CleanStart:
			return errClientIDEmpty
		}
	}
	if c.WillFlag {
		if v5 {
			if err := decodeProperties(&r, propsWill, &c.WillProps); err != nil {
				return err
			}
		}
		if c.WillTopic, ok = r.binary(); !ok {
			return errTruncated
		}
		if err := checkTopicName(c.WillTopic, errWillTopicWildcard); err != nil {
			return err
		}
		if len(c.WillTopic) == 0 {
			return errWillTopicEmpty
		}
		if c.WillPayload, ok = r.binary(); !ok {
			return errTruncated
		}
	}
	if c.UsernameFlag {
		if c.Username, err = r.str(); err != nil {
			return err
		}
	}
	if c.PasswordFlag {
		if c.Password, ok = r.binary(); !ok {
			return errTruncated
		}
	}
	if r.left() != 0 {
		return errTrailing
	}
	return nil
}

// AppendConnect appends c as a CONNECT packet in the version its
// ProtocolLevel names (the protocol name follows from the level: "MQIsdp"
// for 3, "MQTT" otherwise). Will QoS and retain are written only with the
// will flag; properties only in MQTT 5.
func AppendConnect(b []byte, c *Connect) []byte {
	v5 := c.ProtocolLevel == Version5
	name := nameMQTT
	if c.ProtocolLevel == Version31 {
		name = nameMQIsdp
	}
	var flags byte
	if c.CleanStart {
		flags |= 0x02
	}
	rl := 2 + len(name) + 1 + 1 + 2 + 2 + len(c.ClientID)
	var pl, wpl int
	if v5 {
		pl = c.Props.contentLen()
		rl += varintLen(pl) + pl
	}
	if c.WillFlag {
		flags |= 0x04 | (c.WillQoS&3)<<3
		if c.WillRetain {
			flags |= 0x20
		}
		if v5 {
			wpl = c.WillProps.contentLen()
			rl += varintLen(wpl) + wpl
		}
		rl += 2 + len(c.WillTopic) + 2 + len(c.WillPayload)
	}
	if c.UsernameFlag {
		flags |= 0x80
		rl += 2 + len(c.Username)
	}
	if c.PasswordFlag {
		flags |= 0x40
		rl += 2 + len(c.Password)
	}
	b = appendHeader(b, CONNECT<<4, rl)
	b = appendBinary(b, name)
	b = append(b, c.ProtocolLevel, flags)
	b = appendUint16(b, c.KeepAlive)
	if v5 {
		b = appendProperties(b, &c.Props, pl)
	}
	b = appendBinary(b, c.ClientID)
	if c.WillFlag {
		if v5 {
			b = appendProperties(b, &c.WillProps, wpl)
		}
		b = appendBinary(b, c.WillTopic)
		b = appendBinary(b, c.WillPayload)
	}
	if c.UsernameFlag {
		b = appendBinary(b, c.Username)
	}
	if c.PasswordFlag {
		b = appendBinary(b, c.Password)
	}
	return b
}

// Connack is a CONNACK packet, decoded by a client.
type Connack struct {
	SessionPresent bool
	// Code is the MQTT 5 reason code, or in 3.1.1 the return code
	// (ConnAccepted … ConnRefusedNotAuthorized).
	Code  byte
	Props Properties // MQTT 5
}

// DecodeConnack decodes the body of a CONNACK packet. Reserved acknowledge
// flags are MalformedPacket; a code the version does not define for
// CONNACK, or Session Present with a refusal (MQTT-3.2.2-4, MQTT-3.2.2-6),
// is a ProtocolError. 3.1.1: the body is exactly 2 bytes. MQTT 5: the
// property length is mandatory, properties as in Properties.
func DecodeConnack(body []byte, version byte, c *Connack) error {
	*c = Connack{}
	r := reader{b: body}
	flags, ok := r.u8()
	if !ok {
		return errTruncated
	}
	if flags&^1 != 0 {
		return errConnackFlags
	}
	c.SessionPresent = flags == 1
	if c.Code, ok = r.u8(); !ok {
		return errTruncated
	}
	if version == Version5 {
		if !connackCodes.has(c.Code) {
			return errConnackCode
		}
		if err := decodeProperties(&r, propsConnack, &c.Props); err != nil {
			return err
		}
	} else if !connackCodes3.has(c.Code) {
		return errConnackCode
	}
	if r.left() != 0 {
		return errTrailing
	}
	if c.SessionPresent && c.Code != Success {
		return errConnackPresent
	}
	return nil
}

// AppendConnack appends a CONNACK packet. In 3.1.1 code is a return code
// and props is ignored; in MQTT 5 code is a reason code and props (nil for
// none) is always preceded by its length, as the spec requires.
func AppendConnack(b []byte, version byte, sessionPresent bool, code byte, props *Properties) []byte {
	var flags byte
	if sessionPresent {
		flags = 1
	}
	if version != Version5 {
		return append(b, CONNACK<<4, 2, flags, code)
	}
	pl := props.contentLen()
	b = appendHeader(b, CONNACK<<4, 2+varintLen(pl)+pl)
	b = append(b, flags, code)
	return appendProperties(b, props, pl)
}
