package mqtt

// Publish is a PUBLISH packet. After DecodePublish, Topic, Payload and the
// []byte fields of Props are views into the decoded body, valid while the
// caller's buffer is (copy them to keep them longer).
type Publish struct {
	Dup      bool
	QoS      byte // 0, 1 or 2
	Retain   bool
	Topic    []byte // empty only with a Topic Alias (MQTT 5)
	PacketID uint16 // QoS 1 and 2 only
	Props    Properties
	Payload  []byte
}

// DecodePublish decodes the body of a PUBLISH packet of either direction.
// It checks the header flags (QoS 3 and DUP with QoS 0 are malformed), the
// topic name (well-formed UTF-8 without U+0000, else MalformedPacket; no
// wildcard, else TopicNameInvalid; empty: TopicNameInvalid in 3.1.1, and in
// MQTT 5 a ProtocolError unless a Topic Alias is present), the packet
// identifier (0 with QoS > 0 is a ProtocolError) and, in MQTT 5, the
// properties (see Properties). It allocates nothing.
//
// Rules that need state are the caller's: topic alias ranges and mappings,
// a Subscription Identifier sent by a client (MQTT-3.3.4-6), the payload
// format check a receiver MAY make (see ValidUTF8String), maximum QoS and
// retain support.
func DecodePublish(h Header, body []byte, version byte, p *Publish) error {
	if h.Type != PUBLISH {
		return errWrongType
	}
	qos := h.QoS()
	if qos == 3 {
		return errPublishQoS3
	}
	if h.Dup() && qos == 0 {
		return errPublishDupQoS0
	}
	*p = Publish{Dup: h.Dup(), QoS: qos, Retain: h.Retain()}
	r := reader{b: body}
	topic, ok := r.binary()
	if !ok {
		return errTruncated
	}
	if err := checkTopicName(topic, errTopicWildcard); err != nil {
		return err
	}
	p.Topic = topic
	if qos > 0 {
		if p.PacketID, ok = r.u16(); !ok {
			return errTruncated
		}
		if p.PacketID == 0 {
			return errPacketIDZero
		}
	}
	if version == Version5 {
		if err := decodeProperties(&r, propsPublish, &p.Props); err != nil {
			return err
		}
	}
	if len(topic) == 0 {
		if version != Version5 {
			return errTopicEmpty
		}
		if !p.Props.Has(PropTopicAlias) {
			return errTopicEmptyNoAlias
		}
	}
	p.Payload = r.rest()
	return nil
}

func (p *Publish) bodyLen(version byte, propLen int) int {
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.QoS&3 > 0 {
		n += 2
	}
	if version == Version5 {
		n += varintLen(propLen) + propLen
	}
	return n
}

// PublishLen returns the exact size of the packet AppendPublish encodes
// for p, so a caller can write a frame header (a WebSocket one) in front
// of the packet in the same buffer.
func PublishLen(version byte, p *Publish) int {
	pl := 0
	if version == Version5 {
		pl = p.Props.contentLen()
	}
	rl := p.bodyLen(version, pl)
	return 1 + varintLen(rl) + rl
}

// AppendPublish appends p as a PUBLISH packet; the packet identifier is
// written only for QoS > 0 and the properties only in MQTT 5. It allocates
// nothing when b has PublishLen(version, p) bytes of spare capacity.
func AppendPublish(b []byte, version byte, p *Publish) []byte {
	qos := p.QoS & 3
	first := PUBLISH<<4 | qos<<1
	if p.Dup {
		first |= 8
	}
	if p.Retain {
		first |= 1
	}
	pl := 0
	if version == Version5 {
		pl = p.Props.contentLen()
	}
	b = appendHeader(b, first, p.bodyLen(version, pl))
	b = appendBinary(b, p.Topic)
	if qos > 0 {
		b = appendUint16(b, p.PacketID)
	}
	if version == Version5 {
		b = appendProperties(b, &p.Props, pl)
	}
	return append(b, p.Payload...)
}
