package mqtt

// Ack is a PUBACK, PUBREC, PUBREL or PUBCOMP packet.
type Ack struct {
	Type     byte // PUBACK, PUBREC, PUBREL or PUBCOMP
	PacketID uint16
	Code     byte       // MQTT 5 reason code; Success in 3.1.1
	Props    Properties // MQTT 5
}

// DecodeAck decodes the body of a PUBACK, PUBREC, PUBREL or PUBCOMP packet
// of either direction. The fixed header flags must be 0b0010 for PUBREL
// and 0 for the others (MalformedPacket). 3.1.1: the body is exactly the
// packet identifier. MQTT 5: a remaining length of 2 means Success without
// properties and 3 a reason code without properties (MQTT 5.0 3.4.2.1 and
// 3.4.2.2.1); the reason code must be one the packet type allows
// (ProtocolError); properties as in Properties. A packet identifier of 0
// is not refused here: it matches no packet in flight, which the session
// layer reports.
func DecodeAck(h Header, body []byte, version byte, a *Ack) error {
	if h.Type < PUBACK || h.Type > PUBCOMP {
		return errWrongType
	}
	if f := fixedFlags[h.Type]; h.Flags != byte(f) {
		return errFixedFlags
	}
	*a = Ack{Type: h.Type}
	r := reader{b: body}
	var ok bool
	if a.PacketID, ok = r.u16(); !ok {
		return errTruncated
	}
	if version != Version5 {
		if r.left() != 0 {
			return errAckLength311
		}
		return nil
	}
	if r.left() == 0 {
		return nil
	}
	a.Code, _ = r.u8()
	if h.Type == PUBACK || h.Type == PUBREC {
		if !pubackCodes.has(a.Code) {
			return errPubackCode
		}
	} else if !pubrelCodes.has(a.Code) {
		return errPubrelCode
	}
	if r.left() == 0 {
		return nil
	}
	if err := decodeProperties(&r, propsAck, &a.Props); err != nil {
		return err
	}
	if r.left() != 0 {
		return errTrailing
	}
	return nil
}

// AppendAck appends a PUBACK, PUBREC, PUBREL or PUBCOMP packet (typ).
// 3.1.1: only the packet identifier (code and props are ignored). MQTT 5:
// the shortest form the spec allows: the identifier alone for Success
// without properties, no property length when there are no properties.
func AppendAck(b []byte, typ, version byte, packetID uint16, code byte, props *Properties) []byte {
	first := typ << 4
	if typ == PUBREL {
		first |= 2
	}
	if version != Version5 || code == Success && props.Empty() {
		return append(b, first, 2, byte(packetID>>8), byte(packetID))
	}
	if props.Empty() {
		return append(b, first, 3, byte(packetID>>8), byte(packetID), code)
	}
	pl := props.contentLen()
	b = appendHeader(b, first, 3+varintLen(pl)+pl)
	b = append(b, byte(packetID>>8), byte(packetID), code)
	return appendProperties(b, props, pl)
}

// Disconnect is a DISCONNECT packet of either direction.
type Disconnect struct {
	Code  byte       // MQTT 5 reason code; NormalDisconnection in 3.1.1
	Props Properties // MQTT 5
}

// DecodeDisconnect decodes the body of a DISCONNECT packet. 3.1.1: the
// body must be empty. MQTT 5: an empty body is Normal disconnection, one
// byte a reason code without properties (3.14.2.2.1); the code must be one
// DISCONNECT allows (ProtocolError). Which side may send which code, and
// the session expiry rules of 3.14.2.2.2, depend on the direction and the
// session: they are the caller's.
func DecodeDisconnect(body []byte, version byte, d *Disconnect) error {
	*d = Disconnect{}
	if version != Version5 {
		if len(body) != 0 {
			return errDisconnectLength31
		}
		return nil
	}
	return decodeCodeProps(body, &disconnectCodes, errDisconnectCode, propsDisconnect, &d.Code, &d.Props)
}

// decodeCodeProps decodes a body made of an optional reason code and
// optional properties (DISCONNECT, AUTH).
func decodeCodeProps(body []byte, codes *codeSet, codeErr *Error, allowed uint64, code *byte, p *Properties) error {
	if len(body) == 0 {
		return nil
	}
	*code = body[0]
	if !codes.has(*code) {
		return codeErr
	}
	if len(body) == 1 {
		return nil
	}
	r := reader{b: body, i: 1}
	if err := decodeProperties(&r, allowed, p); err != nil {
		return err
	}
	if r.left() != 0 {
		return errTrailing
	}
	return nil
}

// AppendDisconnect appends a DISCONNECT packet. 3.1.1: the two bytes E0 00
// (code and props ignored). MQTT 5: the shortest form: an empty body for
// Normal disconnection without properties, the code alone without
// properties.
func AppendDisconnect(b []byte, version byte, code byte, props *Properties) []byte {
	if version != Version5 {
		return append(b, DISCONNECT<<4, 0)
	}
	return appendCodeProps(b, DISCONNECT<<4, code, props)
}

func appendCodeProps(b []byte, first, code byte, props *Properties) []byte {
	if props.Empty() {
		if code == Success {
			return append(b, first, 0)
		}
		return append(b, first, 1, code)
	}
	pl := props.contentLen()
	b = appendHeader(b, first, 1+varintLen(pl)+pl)
	b = append(b, code)
	return appendProperties(b, props, pl)
}

// Auth is an MQTT 5 AUTH packet.
type Auth struct {
	Code  byte // Success, ContinueAuthentication or ReAuthenticate
	Props Properties
}

// DecodeAuth decodes the body of an AUTH packet, which exists in MQTT 5
// only (MalformedPacket in 3.1.1). An empty body is Success without
// properties (3.15.2.1); a lone reason code is accepted as having no
// properties, like DISCONNECT. The code must be Success, Continue
// authentication or Re-authenticate (ProtocolError). Whether the
// authentication method matches the CONNECT's is the caller's check.
func DecodeAuth(body []byte, version byte, a *Auth) error {
	*a = Auth{}
	if version != Version5 {
		return errAuthVersion
	}
	return decodeCodeProps(body, &authCodes, errAuthCode, propsAuth, &a.Code, &a.Props)
}

// AppendAuth appends an MQTT 5 AUTH packet: an empty body for Success
// without properties, otherwise the code and the properties.
func AppendAuth(b []byte, code byte, props *Properties) []byte {
	if props.Empty() && code == Success {
		return append(b, AUTH<<4, 0)
	}
	pl := props.contentLen()
	b = appendHeader(b, AUTH<<4, 1+varintLen(pl)+pl)
	b = append(b, code)
	return appendProperties(b, props, pl)
}

// DecodePingreq checks the body of a PINGREQ packet: it must be empty
// (MalformedPacket otherwise). DecodePingresp does the same for PINGRESP.
func DecodePingreq(body []byte) error {
	if len(body) != 0 {
		return errNonEmpty
	}
	return nil
}

// DecodePingresp checks the body of a PINGRESP packet: it must be empty.
func DecodePingresp(body []byte) error { return DecodePingreq(body) }

// AppendPingreq appends a PINGREQ packet (C0 00).
func AppendPingreq(b []byte) []byte { return append(b, PINGREQ<<4, 0) }

// AppendPingresp appends a PINGRESP packet (D0 00).
func AppendPingresp(b []byte) []byte { return append(b, PINGRESP<<4, 0) }
