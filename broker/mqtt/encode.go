package mqtt

import (
	"github.com/gobwas/ws"

	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/proto"
	packet "github.com/gatecast/gatecast/proto/mqtt"
)

// The shared encodings of a QoS 0 PUBLISH without per-subscriber parts (no
// subscription identifier, retain flag cleared): one per protocol version
// and framing. Every subscriber of one variant gets the same bytes.
var (
	encV3TCP = broker.NewEncoding()
	encV3WS  = broker.NewEncoding()
	encV5TCP = broker.NewEncoding()
	encV5WS  = broker.NewEncoding()
)

func sharedV3TCP(dst []byte, m *broker.Message) []byte { return appendShared(dst, false, false, m) }
func sharedV3WS(dst []byte, m *broker.Message) []byte  { return appendShared(dst, false, true, m) }
func sharedV5TCP(dst []byte, m *broker.Message) []byte { return appendShared(dst, true, false, m) }
func sharedV5WS(dst []byte, m *broker.Message) []byte  { return appendShared(dst, true, true, m) }

// appendShared is appendPublish for the shared encodings (QoS 0, no
// packet identifier, retain and DUP clear, no subscription identifier or
// alias), with only the branches those need: every QoS 0 delivery of a
// fan-in runs it.
func appendShared(dst []byte, v5, wsFraming bool, m *broker.Message) []byte {
	body := 2 + len(m.Topic) + len(m.Payload)
	if v5 {
		body += packet.VarintLen(len(m.Props)) + len(m.Props)
	}
	total := 1 + packet.VarintLen(body) + body
	dst = reserveFramed(dst, total, wsFraming)
	if body < 128 {
		dst = append(dst, packet.PUBLISH<<4, byte(body), byte(len(m.Topic)>>8), byte(len(m.Topic)))
	} else {
		dst = packet.AppendVarint(append(dst, packet.PUBLISH<<4), body)
		dst = append(dst, byte(len(m.Topic)>>8), byte(len(m.Topic)))
	}
	dst = append(dst, m.Topic...)
	if v5 {
		dst = append(packet.AppendVarint(dst, len(m.Props)), m.Props...)
	}
	return append(dst, m.Payload...)
}

// sharedEncoding returns the encoding slot of a connection's variant; its
// encoder is encoders[slot].
func sharedEncoding(version byte, wsFraming bool) broker.Encoding {
	switch {
	case version == packet.Version5 && wsFraming:
		return encV5WS
	case version == packet.Version5:
		return encV5TCP
	case wsFraming:
		return encV3WS
	}
	return encV3TCP
}

// rawEncoding is the shared encoding without framing of a protocol
// version: what a WebSocket connection's transport frames itself for the
// packets it is handed by copy (Transport.SendBytes).
func rawEncoding(version byte) broker.Encoding {
	if version == packet.Version5 {
		return encV5TCP
	}
	return encV3TCP
}

// publishLen is the size of the PUBLISH packet appendPublishAlias writes,
// and of its remaining length.
func publishLen(version byte, m *broker.Message, qos byte, subIDs []uint32, alias uint16, aliasOnly bool) (total, body, props int) {
	topic := len(m.Topic)
	if aliasOnly {
		topic = 0
	}
	body = 2 + topic + len(m.Payload)
	if qos > 0 {
		body += 2
	}
	if version == packet.Version5 {
		props = len(m.Props)
		for _, id := range subIDs {
			props += 1 + packet.VarintLen(int(id))
		}
		if alias > 0 {
			props += 3
		}
		body += packet.VarintLen(props) + props
	}
	return 1 + packet.VarintLen(body) + body, body, props
}

// appendPublish appends one PUBLISH packet for m — in a WebSocket binary
// frame when wsFraming — growing dst at most once. In MQTT 5 the message's
// travelling properties are copied as they are and the subscription
// identifiers appended; MQTT 3.1.1 has no properties.
func appendPublish(dst []byte, version byte, wsFraming bool, m *broker.Message, qos byte, id uint16, retain, dup bool, subIDs []uint32) []byte {
	return appendPublishAlias(dst, version, wsFraming, m, qos, id, retain, dup, subIDs, 0, false)
}

// appendPublishAlias is appendPublish with a server → client Topic Alias
// (MQTT 5): alias 0 for none; aliasOnly sends the alias without the topic
// name (the client learnt the mapping from an earlier packet).
func appendPublishAlias(dst []byte, version byte, wsFraming bool, m *broker.Message, qos byte, id uint16, retain, dup bool, subIDs []uint32, alias uint16, aliasOnly bool) []byte {
	total, body, props := publishLen(version, m, qos, subIDs, alias, aliasOnly)
	dst = reserveFramed(dst, total, wsFraming)
	b0 := packet.PUBLISH<<4 | qos<<1
	if retain {
		b0 |= 1
	}
	if dup {
		b0 |= 8
	}
	dst = append(dst, b0)
	dst = packet.AppendVarint(dst, body)
	if aliasOnly {
		dst = append(dst, 0, 0)
	} else {
		dst = append(dst, byte(len(m.Topic)>>8), byte(len(m.Topic)))
		dst = append(dst, m.Topic...)
	}
	if qos > 0 {
		dst = append(dst, byte(id>>8), byte(id))
	}
	if version == packet.Version5 {
		dst = packet.AppendVarint(dst, props)
		dst = append(dst, m.Props...)
		for _, sid := range subIDs {
			dst = append(dst, packet.PropSubscriptionIdentifier)
			dst = packet.AppendVarint(dst, int(sid))
		}
		if alias > 0 {
			dst = append(dst, packet.PropTopicAlias, byte(alias>>8), byte(alias))
		}
	}
	return append(dst, m.Payload...)
}

// appendFramed appends pkt, in a WebSocket binary frame when wsFraming.
func appendFramed(dst []byte, wsFraming bool, pkt []byte) []byte {
	if wsFraming {
		dst = proto.AppendFrameHeader(dst, ws.OpBinary, len(pkt))
	}
	return append(dst, pkt...)
}

// travelling are the MQTT 5 PUBLISH properties that travel with a message
// to its subscribers (MQTT 5.0 §3.3.2.3); topic aliases and subscription
// identifiers are per connection.
var travelling = [...]byte{packet.PropPayloadFormatIndicator, packet.PropMessageExpiryInterval,
	packet.PropContentType, packet.PropResponseTopic, packet.PropCorrelationData}

// appendTravelling appends the properties of p that travel, in wire form
// without the length prefix, and reports whether there were any.
func appendTravelling(dst []byte, p *packet.Properties) ([]byte, bool) {
	return appendTravellingExcept(dst, p, 0)
}

// appendTravellingExcept is appendTravelling without property skip.
func appendTravellingExcept(dst []byte, p *packet.Properties, skip byte) ([]byte, bool) {
	any := p.Has(packet.PropUserProperty)
	for _, id := range travelling {
		if id != skip && p.Has(id) {
			any = true
		}
	}
	if !any {
		return dst, false
	}
	var t packet.Properties
	for _, id := range travelling {
		if id != skip && p.Has(id) {
			t.Set(id)
		}
	}
	t.PayloadFormatIndicator = p.PayloadFormatIndicator
	t.MessageExpiryInterval = p.MessageExpiryInterval
	t.ContentType = p.ContentType
	t.ResponseTopic = p.ResponseTopic
	t.CorrelationData = p.CorrelationData
	for k, v := range p.UserProperties {
		t.AddUserProperty(k, v)
	}
	start := len(dst)
	dst = packet.AppendProperties(dst, &t)
	// drop the length prefix AppendProperties wrote
	l, k := packet.DecodeVarint(dst[start:])
	if k <= 0 || int(l) != len(dst)-start-k {
		return dst[:start], false
	}
	copy(dst[start:], dst[start+k:])
	return dst[:len(dst)-k], true
}

// reserveFramed makes room in dst for a packet of total bytes (and its
// WebSocket frame header when wsFraming) in one growth, and appends that
// header: what every PUBLISH encoder starts with.
func reserveFramed(dst []byte, total int, wsFraming bool) []byte {
	need := total
	if wsFraming {
		need += proto.FrameHeaderLen(total)
	}
	if cap(dst)-len(dst) < need {
		grown := make([]byte, len(dst), len(dst)+need)
		copy(grown, dst)
		dst = grown
	}
	if wsFraming {
		dst = proto.AppendFrameHeader(dst, ws.OpBinary, total)
	}
	return dst
}
