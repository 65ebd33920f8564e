package mqtt

import (
	"encoding/binary"
	"time"

	packet "github.com/gatecast/gatecast/proto/mqtt"
)

// Message expiry for copies the adapter keeps (queued for an away or slow
// client, in flight for redelivery): MQTT-3.3.2-5 says an expired message
// is not delivered, and MQTT-3.3.2-6 that the interval sent is what is
// left of it.

// propsExpiry finds the Message Expiry Interval in travelling properties
// (wire form: only the properties appendTravelling writes). It returns the
// offset of its four value bytes, or -1.
func propsExpiry(props []byte) int {
	for i := 0; i < len(props); {
		id := props[i]
		i++
		switch id {
		case packet.PropPayloadFormatIndicator:
			i++
		case packet.PropMessageExpiryInterval:
			if i+4 > len(props) {
				return -1
			}
			return i
		case packet.PropContentType, packet.PropResponseTopic, packet.PropCorrelationData:
			if i+2 > len(props) {
				return -1
			}
			i += 2 + int(binary.BigEndian.Uint16(props[i:]))
		case packet.PropUserProperty:
			for range 2 {
				if i+2 > len(props) {
					return -1
				}
				i += 2 + int(binary.BigEndian.Uint16(props[i:]))
			}
		default:
			return -1 // not a property that travels: nothing to find
		}
	}
	return -1
}

// expiresAt is when a copy made now of a message with these properties
// expires; zero: never.
func expiresAt(props []byte, now time.Time) time.Time {
	i := propsExpiry(props)
	if i < 0 {
		return time.Time{}
	}
	return now.Add(time.Duration(binary.BigEndian.Uint32(props[i:])) * time.Second)
}

// refreshExpiry writes the remaining interval into a copy's own properties
// and reports false when the copy has expired.
func refreshExpiry(q *queuedMsg, now time.Time) bool {
	if q.expires.IsZero() {
		return true
	}
	left := q.expires.Sub(now)
	if left <= 0 {
		return false
	}
	if i := propsExpiry(q.props); i >= 0 {
		binary.BigEndian.PutUint32(q.props[i:], uint32((left+time.Second-1)/time.Second))
	}
	return true
}
