package mqtt

// SubscribeFilter is one topic filter of a SUBSCRIBE packet with its
// subscription options. In 3.1.1 only QoS is meaningful (the others are
// zero after decoding and ignored when encoding).
type SubscribeFilter struct {
	Filter            []byte
	QoS               byte // maximum QoS, 0 to 2
	NoLocal           bool // MQTT 5
	RetainAsPublished bool // MQTT 5
	RetainHandling    byte // MQTT 5: 0 send retained, 1 only for a new subscription, 2 never
}

func (f *SubscribeFilter) options(version byte) byte {
	o := f.QoS & 3
	if version == Version5 {
		if f.NoLocal {
			o |= 0x04
		}
		if f.RetainAsPublished {
			o |= 0x08
		}
		o |= (f.RetainHandling & 3) << 4
	}
	return o
}

// Subscribe is a SUBSCRIBE packet, decoded by a server. Its topic filters
// stay in the decoded body: iterate them with Filters.
type Subscribe struct {
	PacketID uint16
	Props    Properties // MQTT 5: at most one Subscription Identifier, user properties
	Count    int        // number of topic filters, at least 1
	filters  []byte     // the validated payload
}

// Filters calls yield for each topic filter in order, until yield returns
// false; use it as `for f := range s.Filters`. f.Filter is a view into the
// decoded body.
func (s *Subscribe) Filters(yield func(f SubscribeFilter) bool) {
	r := reader{b: s.filters}
	for r.left() > 0 {
		name, ok := r.binary()
		if !ok {
			return
		}
		o, ok := r.u8()
		if !ok {
			return
		}
		f := SubscribeFilter{Filter: name, QoS: o & 3, NoLocal: o&0x04 != 0,
			RetainAsPublished: o&0x08 != 0, RetainHandling: o >> 4 & 3}
		if !yield(f) {
			return
		}
	}
}

// DecodeSubscribe decodes the body of a SUBSCRIBE packet. It checks the
// fixed header flags (0b0010, else MalformedPacket), a non-zero packet
// identifier (ProtocolError), the MQTT 5 properties (Subscription
// Identifier once, 1 to 268,435,455), at least one topic filter
// (ProtocolError), each filter being well-formed UTF-8 without U+0000
// (MalformedPacket) and its options byte: in 3.1.1 bits 2-7 set or QoS 3
// are MalformedPacket (MQTT-3.8.3-4); in MQTT 5 bits 6-7 set are
// MalformedPacket (MQTT-3.8.3-5), QoS 3 and Retain Handling 3 are
// ProtocolError.
//
// The filter's own syntax (empty, wildcard placement, shared subscription
// form and No Local on a shared subscription) belongs to the topic layer,
// which answers per filter in SUBACK.
func DecodeSubscribe(h Header, body []byte, version byte, s *Subscribe) error {
	if h.Type != SUBSCRIBE {
		return errWrongType
	}
	if h.Flags != 2 {
		return errFixedFlags
	}
	*s = Subscribe{}
	r := reader{b: body}
	var ok bool
	if s.PacketID, ok = r.u16(); !ok {
		return errTruncated
	}
	if s.PacketID == 0 {
		return errPacketIDZero
	}
	if version == Version5 {
		if err := decodeProperties(&r, propsSubscribe, &s.Props); err != nil {
			return err
		}
	}
	start := r.i
	for r.left() > 0 {
		if _, err := r.str(); err != nil {
			return err
		}
		o, ok := r.u8()
		if !ok {
			return errTruncated
		}
		if version == Version5 {
			switch {
			case o&0xC0 != 0:
				return errSubOptsReserved
			case o&3 == 3:
				return errSubQoS3
			case o>>4&3 == 3:
				return errRetainHandling3
			}
		} else {
			switch {
			case o&0xFC != 0:
				return errSubOptsReserved
			case o == 3:
				return errSubQoS3Malformed
			}
		}
		s.Count++
	}
	if s.Count == 0 {
		return errNoFilters
	}
	s.filters = body[start:len(body):len(body)]
	return nil
}

// AppendSubscribe appends a SUBSCRIBE packet (props: MQTT 5 only, nil for
// none).
func AppendSubscribe(b []byte, version byte, packetID uint16, props *Properties, filters []SubscribeFilter) []byte {
	rl, pl := 2, 0
	if version == Version5 {
		pl = props.contentLen()
		rl += varintLen(pl) + pl
	}
	for i := range filters {
		rl += 2 + len(filters[i].Filter) + 1
	}
	b = appendHeader(b, SUBSCRIBE<<4|2, rl)
	b = appendUint16(b, packetID)
	if version == Version5 {
		b = appendProperties(b, props, pl)
	}
	for i := range filters {
		b = appendBinary(b, filters[i].Filter)
		b = append(b, filters[i].options(version))
	}
	return b
}

// Suback is a SUBACK packet, decoded by a client.
type Suback struct {
	PacketID uint16
	Props    Properties // MQTT 5: reason string, user properties
	Codes    []byte     // one per filter, a view into the body
}

// DecodeSuback decodes the body of a SUBACK packet: a packet identifier,
// the MQTT 5 properties and at least one code, each one the version
// allows in SUBACK (3.1.1: 0, 1, 2 or 0x80), else ProtocolError.
func DecodeSuback(body []byte, version byte, s *Suback) error {
	*s = Suback{}
	r := reader{b: body}
	var ok bool
	if s.PacketID, ok = r.u16(); !ok {
		return errTruncated
	}
	set := &subackCodes3
	if version == Version5 {
		set = &subackCodes
		if err := decodeProperties(&r, propsAck, &s.Props); err != nil {
			return err
		}
	}
	s.Codes = r.rest()
	if len(s.Codes) == 0 {
		return errNoReasonCodes
	}
	for _, c := range s.Codes {
		if !set.has(c) {
			return errSubackCode
		}
	}
	return nil
}

// AppendSuback appends a SUBACK packet with one code per filter of the
// SUBSCRIBE (props: MQTT 5 only, nil for none).
func AppendSuback(b []byte, version byte, packetID uint16, props *Properties, codes []byte) []byte {
	return appendAckList(b, SUBACK<<4, version, packetID, props, codes)
}

func appendAckList(b []byte, first, version byte, packetID uint16, props *Properties, codes []byte) []byte {
	rl, pl := 2+len(codes), 0
	if version == Version5 {
		pl = props.contentLen()
		rl += varintLen(pl) + pl
	}
	b = appendHeader(b, first, rl)
	b = appendUint16(b, packetID)
	if version == Version5 {
		b = appendProperties(b, props, pl)
	}
	return append(b, codes...)
}

// Unsubscribe is an UNSUBSCRIBE packet, decoded by a server. Its topic
// filters stay in the decoded body: iterate them with Filters.
type Unsubscribe struct {
	PacketID uint16
	Props    Properties // MQTT 5: user properties
	Count    int        // number of topic filters, at least 1
	filters  []byte
}

// Filters calls yield for each topic filter in order (views into the
// decoded body), until yield returns false.
func (u *Unsubscribe) Filters(yield func(filter []byte) bool) {
	r := reader{b: u.filters}
	for r.left() > 0 {
		name, ok := r.binary()
		if !ok || !yield(name) {
			return
		}
	}
}

// DecodeUnsubscribe decodes the body of an UNSUBSCRIBE packet: fixed
// header flags 0b0010 (else MalformedPacket), a non-zero packet identifier
// (ProtocolError), MQTT 5 properties, at least one topic filter
// (ProtocolError), each well-formed UTF-8 without U+0000 (MalformedPacket).
func DecodeUnsubscribe(h Header, body []byte, version byte, u *Unsubscribe) error {
	if h.Type != UNSUBSCRIBE {
		return errWrongType
	}
	if h.Flags != 2 {
		return errFixedFlags
	}
	*u = Unsubscribe{}
	r := reader{b: body}
	var ok bool
	if u.PacketID, ok = r.u16(); !ok {
		return errTruncated
	}
	if u.PacketID == 0 {
		return errPacketIDZero
	}
	if version == Version5 {
		if err := decodeProperties(&r, propsUnsubscribe, &u.Props); err != nil {
			return err
		}
	}
	start := r.i
	for r.left() > 0 {
		if _, err := r.str(); err != nil {
			return err
		}
		u.Count++
	}
	if u.Count == 0 {
		return errNoFilters
	}
	u.filters = body[start:len(body):len(body)]
	return nil
}

// AppendUnsubscribe appends an UNSUBSCRIBE packet (props: MQTT 5 only, nil
// for none).
func AppendUnsubscribe(b []byte, version byte, packetID uint16, props *Properties, filters [][]byte) []byte {
	rl, pl := 2, 0
	if version == Version5 {
		pl = props.contentLen()
		rl += varintLen(pl) + pl
	}
	for _, f := range filters {
		rl += 2 + len(f)
	}
	b = appendHeader(b, UNSUBSCRIBE<<4|2, rl)
	b = appendUint16(b, packetID)
	if version == Version5 {
		b = appendProperties(b, props, pl)
	}
	for _, f := range filters {
		b = appendBinary(b, f)
	}
	return b
}

// Unsuback is an UNSUBACK packet, decoded by a client.
type Unsuback struct {
	PacketID uint16
	Props    Properties // MQTT 5
	Codes    []byte     // MQTT 5: one per filter, a view into the body; nil in 3.1.1
}

// DecodeUnsuback decodes the body of an UNSUBACK packet. 3.1.1: exactly a
// packet identifier. MQTT 5: a packet identifier, properties and at least
// one reason code allowed in UNSUBACK (else ProtocolError).
func DecodeUnsuback(body []byte, version byte, u *Unsuback) error {
	*u = Unsuback{}
	r := reader{b: body}
	var ok bool
	if u.PacketID, ok = r.u16(); !ok {
		return errTruncated
	}
	if version != Version5 {
		if r.left() != 0 {
			return errAckLength311
		}
		return nil
	}
	if err := decodeProperties(&r, propsAck, &u.Props); err != nil {
		return err
	}
	u.Codes = r.rest()
	if len(u.Codes) == 0 {
		return errNoReasonCodes
	}
	for _, c := range u.Codes {
		if !unsubackCodes.has(c) {
			return errUnsubackCode
		}
	}
	return nil
}

// AppendUnsuback appends an UNSUBACK packet: in 3.1.1 only the packet
// identifier (props and codes are ignored), in MQTT 5 with properties and
// one reason code per filter.
func AppendUnsuback(b []byte, version byte, packetID uint16, props *Properties, codes []byte) []byte {
	if version != Version5 {
		return append(b, UNSUBACK<<4, 2, byte(packetID>>8), byte(packetID))
	}
	return appendAckList(b, UNSUBACK<<4, version, packetID, props, codes)
}
