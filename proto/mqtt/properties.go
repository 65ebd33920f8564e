package mqtt

import "math/bits"

// MQTT 5 property identifiers (MQTT 5.0 section 2.2.2.2, Table 2-4).
const (
	PropPayloadFormatIndicator          byte = 0x01
	PropMessageExpiryInterval           byte = 0x02
	PropContentType                     byte = 0x03
	PropResponseTopic                   byte = 0x08
	PropCorrelationData                 byte = 0x09
	PropSubscriptionIdentifier          byte = 0x0B
	PropSessionExpiryInterval           byte = 0x11
	PropAssignedClientIdentifier        byte = 0x12
	PropServerKeepAlive                 byte = 0x13
	PropAuthenticationMethod            byte = 0x15
	PropAuthenticationData              byte = 0x16
	PropRequestProblemInformation       byte = 0x17
	PropWillDelayInterval               byte = 0x18
	PropRequestResponseInformation      byte = 0x19
	PropResponseInformation             byte = 0x1A
	PropServerReference                 byte = 0x1C
	PropReasonString                    byte = 0x1F
	PropReceiveMaximum                  byte = 0x21
	PropTopicAliasMaximum               byte = 0x22
	PropTopicAlias                      byte = 0x23
	PropMaximumQoS                      byte = 0x24
	PropRetainAvailable                 byte = 0x25
	PropUserProperty                    byte = 0x26
	PropMaximumPacketSize               byte = 0x27
	PropWildcardSubscriptionAvailable   byte = 0x28
	PropSubscriptionIdentifierAvailable byte = 0x29
	PropSharedSubscriptionAvailable     byte = 0x2A
)

// Property data types.
const (
	kindNone byte = iota
	kindByte
	kindUint16
	kindUint32
	kindVarint
	kindString
	kindBinary
	kindPair
)

const maxPropID = 0x2A

var propKinds = [maxPropID + 1]byte{
	PropPayloadFormatIndicator:          kindByte,
	PropMessageExpiryInterval:           kindUint32,
	PropContentType:                     kindString,
	PropResponseTopic:                   kindString,
	PropCorrelationData:                 kindBinary,
	PropSubscriptionIdentifier:          kindVarint,
	PropSessionExpiryInterval:           kindUint32,
	PropAssignedClientIdentifier:        kindString,
	PropServerKeepAlive:                 kindUint16,
	PropAuthenticationMethod:            kindString,
	PropAuthenticationData:              kindBinary,
	PropRequestProblemInformation:       kindByte,
	PropWillDelayInterval:               kindUint32,
	PropRequestResponseInformation:      kindByte,
	PropResponseInformation:             kindString,
	PropServerReference:                 kindString,
	PropReasonString:                    kindString,
	PropReceiveMaximum:                  kindUint16,
	PropTopicAliasMaximum:               kindUint16,
	PropTopicAlias:                      kindUint16,
	PropMaximumQoS:                      kindByte,
	PropRetainAvailable:                 kindByte,
	PropUserProperty:                    kindPair,
	PropMaximumPacketSize:               kindUint32,
	PropWildcardSubscriptionAvailable:   kindByte,
	PropSubscriptionIdentifierAvailable: kindByte,
	PropSharedSubscriptionAvailable:     kindByte,
}

var propNames = [maxPropID + 1]string{
	PropPayloadFormatIndicator:          "payload format indicator",
	PropMessageExpiryInterval:           "message expiry interval",
	PropContentType:                     "content type",
	PropResponseTopic:                   "response topic",
	PropCorrelationData:                 "correlation data",
	PropSubscriptionIdentifier:          "subscription identifier",
	PropSessionExpiryInterval:           "session expiry interval",
	PropAssignedClientIdentifier:        "assigned client identifier",
	PropServerKeepAlive:                 "server keep alive",
	PropAuthenticationMethod:            "authentication method",
	PropAuthenticationData:              "authentication data",
	PropRequestProblemInformation:       "request problem information",
	PropWillDelayInterval:               "will delay interval",
	PropRequestResponseInformation:      "request response information",
	PropResponseInformation:             "response information",
	PropServerReference:                 "server reference",
	PropReasonString:                    "reason string",
	PropReceiveMaximum:                  "receive maximum",
	PropTopicAliasMaximum:               "topic alias maximum",
	PropTopicAlias:                      "topic alias",
	PropMaximumQoS:                      "maximum QoS",
	PropRetainAvailable:                 "retain available",
	PropUserProperty:                    "user property",
	PropMaximumPacketSize:               "maximum packet size",
	PropWildcardSubscriptionAvailable:   "wildcard subscription available",
	PropSubscriptionIdentifierAvailable: "subscription identifier available",
	PropSharedSubscriptionAvailable:     "shared subscription available",
}

// Per-property errors, built once so that decoding never allocates.
var (
	errPropNotAllowed [maxPropID + 1]*Error // identifier not valid for the packet: malformed (2.2.2.2)
	errPropDuplicate  [maxPropID + 1]*Error // "It is a Protocol Error to include … more than once"
	errPropValue      [maxPropID + 1]*Error // value out of the range the spec allows
)

func init() {
	for id, name := range propNames {
		if name == "" {
			continue
		}
		errPropNotAllowed[id] = malformed(name + " not allowed in this packet")
		errPropDuplicate[id] = protocol(name + " included more than once")
		switch propKinds[id] {
		case kindByte:
			errPropValue[id] = protocol(name + " other than 0 or 1")
		default:
			errPropValue[id] = protocol(name + " of 0")
		}
	}
}

func propBit(id byte) uint64 { return 1 << id }

// multiSubIDs, outside the identifier range, marks an allowed set in which
// the Subscription Identifier may repeat (server-to-client PUBLISH).
const multiSubIDs = 1 << 63

// multiMask covers the properties that may appear several times; they are
// kept encoded in Properties.list rather than in fields.
const multiMask = 1<<PropUserProperty | 1<<PropSubscriptionIdentifier

// The properties each packet may carry (MQTT 5.0 Table 2-4).
const (
	propsConnect = 1<<PropSessionExpiryInterval | 1<<PropAuthenticationMethod |
		1<<PropAuthenticationData | 1<<PropRequestProblemInformation |
		1<<PropRequestResponseInformation | 1<<PropReceiveMaximum |
		1<<PropTopicAliasMaximum | 1<<PropUserProperty | 1<<PropMaximumPacketSize
	propsWill = 1<<PropPayloadFormatIndicator | 1<<PropMessageExpiryInterval |
		1<<PropContentType | 1<<PropResponseTopic | 1<<PropCorrelationData |
		1<<PropWillDelayInterval | 1<<PropUserProperty
	propsConnack = 1<<PropSessionExpiryInterval | 1<<PropAssignedClientIdentifier |
		1<<PropServerKeepAlive | 1<<PropAuthenticationMethod | 1<<PropAuthenticationData |
		1<<PropResponseInformation | 1<<PropServerReference | 1<<PropReasonString |
		1<<PropReceiveMaximum | 1<<PropTopicAliasMaximum | 1<<PropMaximumQoS |
		1<<PropRetainAvailable | 1<<PropUserProperty | 1<<PropMaximumPacketSize |
		1<<PropWildcardSubscriptionAvailable | 1<<PropSubscriptionIdentifierAvailable |
		1<<PropSharedSubscriptionAvailable
	propsPublish = 1<<PropPayloadFormatIndicator | 1<<PropMessageExpiryInterval |
		1<<PropContentType | 1<<PropResponseTopic | 1<<PropCorrelationData |
		1<<PropSubscriptionIdentifier | 1<<PropTopicAlias | 1<<PropUserProperty | multiSubIDs
	propsAck         = 1<<PropReasonString | 1<<PropUserProperty // PUBACK … PUBCOMP, SUBACK, UNSUBACK
	propsSubscribe   = 1<<PropSubscriptionIdentifier | 1<<PropUserProperty
	propsUnsubscribe = 1 << PropUserProperty
	propsDisconnect  = 1<<PropSessionExpiryInterval | 1<<PropServerReference |
		1<<PropReasonString | 1<<PropUserProperty
	propsAuth = 1<<PropAuthenticationMethod | 1<<PropAuthenticationData |
		1<<PropReasonString | 1<<PropUserProperty
)

// Properties holds the MQTT 5 properties of one packet (or of a CONNECT's
// will). A property is present when Has reports it, so an absent property
// differs from one with a zero value: after setting a field for encoding,
// mark it with Set. The zero value is an empty property list.
//
// User Property and Subscription Identifier may appear several times; they
// are not fields but are read with UserProperties and
// SubscriptionIdentifiers and written with AddUserProperty and
// AddSubscriptionIdentifier.
//
// After decoding, the []byte fields and the user properties are views into
// the decoded buffer, valid while it is. A Properties that AddUserProperty
// or AddSubscriptionIdentifier wrote to owns a buffer: do not copy it by
// value and then add to both copies.
type Properties struct {
	present uint64 // bit id set: property id present

	PayloadFormatIndicator          byte   // 0x01: 0 unspecified bytes, 1 UTF-8
	MessageExpiryInterval           uint32 // 0x02, seconds
	ContentType                     []byte // 0x03
	ResponseTopic                   []byte // 0x08
	CorrelationData                 []byte // 0x09
	SessionExpiryInterval           uint32 // 0x11, seconds
	AssignedClientIdentifier        []byte // 0x12
	ServerKeepAlive                 uint16 // 0x13, seconds
	AuthenticationMethod            []byte // 0x15
	AuthenticationData              []byte // 0x16
	RequestProblemInformation       byte   // 0x17
	WillDelayInterval               uint32 // 0x18, seconds
	RequestResponseInformation      byte   // 0x19
	ResponseInformation             []byte // 0x1A
	ServerReference                 []byte // 0x1C
	ReasonString                    []byte // 0x1F
	ReceiveMaximum                  uint16 // 0x21
	TopicAliasMaximum               uint16 // 0x22
	TopicAlias                      uint16 // 0x23
	MaximumQoS                      byte   // 0x24
	RetainAvailable                 byte   // 0x25
	MaximumPacketSize               uint32 // 0x27
	WildcardSubscriptionAvailable   byte   // 0x28
	SubscriptionIdentifierAvailable byte   // 0x29
	SharedSubscriptionAvailable     byte   // 0x2A

	// list holds encoded property entries; only its User Property and
	// Subscription Identifier entries count (after decoding it is the part
	// of the property section from the first to the last of those, whose
	// other entries are also in the fields). multiLen is the encoded size
	// of the entries that count: equal to len(list) when nothing else is in
	// between, which lets the encoder copy list in one piece.
	list     []byte
	multiLen int
	owned    bool // list is this value's own buffer, not a view of the input
}

// Has reports whether property id is present (for User Property and
// Subscription Identifier: at least once).
func (p *Properties) Has(id byte) bool { return id <= maxPropID && p.present&propBit(id) != 0 }

// Set marks the single-valued property id as present, so that its field is
// encoded. It ignores User Property and Subscription Identifier (use the
// Add methods) and identifiers the spec does not define.
func (p *Properties) Set(id byte) {
	if id <= maxPropID && propKinds[id] != kindNone && propBit(id)&multiMask == 0 {
		p.present |= propBit(id)
	}
}

// Clear marks property id absent (for User Property and Subscription
// Identifier: removes every occurrence).
func (p *Properties) Clear(id byte) {
	if id > maxPropID {
		return
	}
	p.present &^= propBit(id)
	if propBit(id)&multiMask == 0 || len(p.list) == 0 {
		return
	}
	var out []byte
	if p.owned {
		out = p.list[:0] // entries only move backwards: safe in place
	}
	for i := 0; i < len(p.list); {
		e, n := scanProp(p.list[i:])
		if n <= 0 {
			break
		}
		if e.id != id && propBit(e.id)&multiMask != 0 {
			out = append(out, p.list[i:i+n]...)
		}
		i += n
	}
	p.list, p.owned, p.multiLen = out, out != nil, len(out)
}

// Empty reports whether no property is present.
func (p *Properties) Empty() bool { return p == nil || p.present == 0 }

// Reset empties p, keeping the buffer the Add methods allocated.
func (p *Properties) Reset() {
	list, owned := p.list, p.owned
	*p = Properties{}
	if owned {
		p.list, p.owned = list[:0], true
	}
}

func (p *Properties) own() {
	if !p.owned {
		// Cutting the capacity makes the next append copy the view into a
		// new buffer instead of writing over the decoded input.
		p.list = p.list[:len(p.list):len(p.list)]
		p.owned = true
	}
}

// AddUserProperty appends a User Property (a UTF-8 string pair; the spec
// allows repeated keys and keeps their order). It copies k and v.
func (p *Properties) AddUserProperty(k, v []byte) {
	p.own()
	n := len(p.list)
	p.list = append(p.list, PropUserProperty)
	p.list = appendBinary(p.list, k)
	p.list = appendBinary(p.list, v)
	p.multiLen += len(p.list) - n
	p.present |= propBit(PropUserProperty)
}

// AddSubscriptionIdentifier appends a Subscription Identifier (1 to
// 268,435,455). SUBSCRIBE carries at most one; a server-to-client PUBLISH
// carries one per matching subscription that had one.
func (p *Properties) AddSubscriptionIdentifier(id uint32) {
	p.own()
	n := len(p.list)
	p.list = append(p.list, PropSubscriptionIdentifier)
	p.list = appendVarint(p.list, int(id))
	p.multiLen += len(p.list) - n
	p.present |= propBit(PropSubscriptionIdentifier)
}

// UserProperties calls yield for each User Property in order, until yield
// returns false; use it as `for k, v := range p.UserProperties`. Decoded
// keys and values are views into the input.
func (p *Properties) UserProperties(yield func(k, v []byte) bool) {
	if p.present&propBit(PropUserProperty) == 0 {
		return
	}
	for i := 0; i < len(p.list); {
		e, n := scanProp(p.list[i:])
		if n <= 0 {
			return
		}
		i += n
		if e.id == PropUserProperty && !yield(e.v1, e.v2) {
			return
		}
	}
}

// SubscriptionIdentifiers calls yield for each Subscription Identifier in
// order, until yield returns false.
func (p *Properties) SubscriptionIdentifiers(yield func(id uint32) bool) {
	if p.present&propBit(PropSubscriptionIdentifier) == 0 {
		return
	}
	for i := 0; i < len(p.list); {
		e, n := scanProp(p.list[i:])
		if n <= 0 {
			return
		}
		i += n
		if e.id == PropSubscriptionIdentifier && !yield(e.num) {
			return
		}
	}
}

// SubscriptionIdentifier returns the first Subscription Identifier, or 0
// when there is none (0 is not a valid identifier).
func (p *Properties) SubscriptionIdentifier() uint32 {
	var first uint32
	p.SubscriptionIdentifiers(func(id uint32) bool { first = id; return false })
	return first
}

// prop is one scanned property entry.
type prop struct {
	id     byte
	num    uint32 // byte, two-byte, four-byte and variable byte integers
	v1, v2 []byte // string or binary value; a pair's key and value
}

// scanProp parses the property entry at the start of b. n is its encoded
// size, or 0 if b does not start with a complete, well-formed entry of a
// known identifier (n < 0: a badly encoded variable byte integer). Values
// are not checked.
func scanProp(b []byte) (e prop, n int) {
	if len(b) == 0 || b[0] > maxPropID || propKinds[b[0]] == kindNone {
		return e, 0
	}
	e.id = b[0]
	r := reader{b: b, i: 1}
	var ok bool
	switch propKinds[e.id] {
	case kindByte:
		var c byte
		c, ok = r.u8()
		e.num = uint32(c)
	case kindUint16:
		var v uint16
		v, ok = r.u16()
		e.num = uint32(v)
	case kindUint32:
		if ok = r.left() >= 4; ok {
			e.num = uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4])
			r.i += 4
		}
	case kindVarint:
		v, vn := decodeVarint(b[1:])
		if vn <= 0 {
			return e, vn
		}
		e.num, r.i, ok = v, 1+vn, true
	case kindString, kindBinary:
		e.v1, ok = r.binary()
	case kindPair:
		if e.v1, ok = r.binary(); ok {
			e.v2, ok = r.binary()
		}
	}
	if !ok {
		return prop{}, 0
	}
	return e, r.i
}

// decodeProperties reads a property length and the property section at
// r's position into p (which must be empty), checking each property
// against allowed and the rules of Table 2-4 and section 3.
func decodeProperties(r *reader, allowed uint64, p *Properties) *Error {
	plen, vn := decodeVarint(r.b[r.i:])
	if vn == 0 {
		return errTruncated
	}
	if vn < 0 {
		return varintErr(vn)
	}
	r.i += vn
	if int(plen) > r.left() {
		return errPropLength
	}
	end := r.i + int(plen)
	sec := r.b[r.i:end:end]
	r.i = end
	first, last := -1, 0 // span of the multi-valued entries
	for i := 0; i < len(sec); {
		id := sec[i]
		if id > maxPropID || propKinds[id] == kindNone {
			return errPropUnknown
		}
		bit := propBit(id)
		if allowed&bit == 0 {
			return errPropNotAllowed[id]
		}
		if p.present&bit != 0 && id != PropUserProperty &&
			(id != PropSubscriptionIdentifier || allowed&multiSubIDs == 0) {
			return errPropDuplicate[id]
		}
		e, n := scanProp(sec[i:])
		if n <= 0 {
			if n < 0 {
				return varintErr(n)
			}
			return errPropTruncated
		}
		if bit&multiMask != 0 {
			if first < 0 {
				first = i
			}
			last = i + n
			p.multiLen += n
		}
		i += n
		switch propKinds[id] {
		case kindByte:
			if e.num > 1 { // every byte property is 0 or 1
				return errPropValue[id]
			}
		case kindUint16:
			if e.num == 0 && (id == PropReceiveMaximum || id == PropTopicAlias) {
				return errPropValue[id]
			}
		case kindUint32:
			if e.num == 0 && id == PropMaximumPacketSize {
				return errPropValue[id]
			}
		case kindVarint:
			if e.num == 0 {
				return errPropValue[id]
			}
		case kindString:
			if id == PropResponseTopic {
				if err := checkTopicName(e.v1, errRespTopicWild); err != nil {
					return err
				}
			} else if !ValidUTF8String(e.v1) {
				return errBadUTF8
			}
		case kindPair:
			if !ValidUTF8String(e.v1) || !ValidUTF8String(e.v2) {
				return errBadUTF8
			}
		}
		p.present |= bit
		if bit&multiMask == 0 {
			p.setField(id, e.num, e.v1)
		}
	}
	if first >= 0 {
		p.list = sec[first:last:last]
	}
	if p.present&propBit(PropAuthenticationData) != 0 && p.present&propBit(PropAuthenticationMethod) == 0 {
		return errPropAuthData
	}
	return nil
}

func (p *Properties) setField(id byte, num uint32, v []byte) {
	switch id {
	case PropPayloadFormatIndicator:
		p.PayloadFormatIndicator = byte(num)
	case PropMessageExpiryInterval:
		p.MessageExpiryInterval = num
	case PropContentType:
		p.ContentType = v
	case PropResponseTopic:
		p.ResponseTopic = v
	case PropCorrelationData:
		p.CorrelationData = v
	case PropSessionExpiryInterval:
		p.SessionExpiryInterval = num
	case PropAssignedClientIdentifier:
		p.AssignedClientIdentifier = v
	case PropServerKeepAlive:
		p.ServerKeepAlive = uint16(num)
	case PropAuthenticationMethod:
		p.AuthenticationMethod = v
	case PropAuthenticationData:
		p.AuthenticationData = v
	case PropRequestProblemInformation:
		p.RequestProblemInformation = byte(num)
	case PropWillDelayInterval:
		p.WillDelayInterval = num
	case PropRequestResponseInformation:
		p.RequestResponseInformation = byte(num)
	case PropResponseInformation:
		p.ResponseInformation = v
	case PropServerReference:
		p.ServerReference = v
	case PropReasonString:
		p.ReasonString = v
	case PropReceiveMaximum:
		p.ReceiveMaximum = uint16(num)
	case PropTopicAliasMaximum:
		p.TopicAliasMaximum = uint16(num)
	case PropTopicAlias:
		p.TopicAlias = uint16(num)
	case PropMaximumQoS:
		p.MaximumQoS = byte(num)
	case PropRetainAvailable:
		p.RetainAvailable = byte(num)
	case PropMaximumPacketSize:
		p.MaximumPacketSize = num
	case PropWildcardSubscriptionAvailable:
		p.WildcardSubscriptionAvailable = byte(num)
	case PropSubscriptionIdentifierAvailable:
		p.SubscriptionIdentifierAvailable = byte(num)
	case PropSharedSubscriptionAvailable:
		p.SharedSubscriptionAvailable = byte(num)
	}
}

func (p *Properties) field(id byte) (num uint32, v []byte) {
	switch id {
	case PropPayloadFormatIndicator:
		return uint32(p.PayloadFormatIndicator), nil
	case PropMessageExpiryInterval:
		return p.MessageExpiryInterval, nil
	case PropContentType:
		return 0, p.ContentType
	case PropResponseTopic:
		return 0, p.ResponseTopic
	case PropCorrelationData:
		return 0, p.CorrelationData
	case PropSessionExpiryInterval:
		return p.SessionExpiryInterval, nil
	case PropAssignedClientIdentifier:
		return 0, p.AssignedClientIdentifier
	case PropServerKeepAlive:
		return uint32(p.ServerKeepAlive), nil
	case PropAuthenticationMethod:
		return 0, p.AuthenticationMethod
	case PropAuthenticationData:
		return 0, p.AuthenticationData
	case PropRequestProblemInformation:
		return uint32(p.RequestProblemInformation), nil
	case PropWillDelayInterval:
		return p.WillDelayInterval, nil
	case PropRequestResponseInformation:
		return uint32(p.RequestResponseInformation), nil
	case PropResponseInformation:
		return 0, p.ResponseInformation
	case PropServerReference:
		return 0, p.ServerReference
	case PropReasonString:
		return 0, p.ReasonString
	case PropReceiveMaximum:
		return uint32(p.ReceiveMaximum), nil
	case PropTopicAliasMaximum:
		return uint32(p.TopicAliasMaximum), nil
	case PropTopicAlias:
		return uint32(p.TopicAlias), nil
	case PropMaximumQoS:
		return uint32(p.MaximumQoS), nil
	case PropRetainAvailable:
		return uint32(p.RetainAvailable), nil
	case PropMaximumPacketSize:
		return p.MaximumPacketSize, nil
	case PropWildcardSubscriptionAvailable:
		return uint32(p.WildcardSubscriptionAvailable), nil
	case PropSubscriptionIdentifierAvailable:
		return uint32(p.SubscriptionIdentifierAvailable), nil
	case PropSharedSubscriptionAvailable:
		return uint32(p.SharedSubscriptionAvailable), nil
	}
	return 0, nil
}

// contentLen is the size of the encoded properties without their length.
func (p *Properties) contentLen() int {
	if p == nil || p.present == 0 {
		return 0
	}
	n := 0
	for m := p.present &^ multiMask; m != 0; m &= m - 1 {
		id := byte(bits.TrailingZeros64(m))
		switch propKinds[id] {
		case kindByte:
			n += 2
		case kindUint16:
			n += 3
		case kindUint32:
			n += 5
		case kindString, kindBinary:
			_, v := p.field(id)
			n += 3 + len(v)
		}
	}
	if p.present&multiMask != 0 {
		n += p.multiLen
	}
	return n
}

// PropertiesLen returns the number of bytes AppendProperties appends for
// p: the property length and the properties. A nil p is an empty list.
func PropertiesLen(p *Properties) int {
	n := p.contentLen()
	return varintLen(n) + n
}

// AppendProperties appends p's property length and properties to b (MQTT
// 5 only; a nil or empty p appends the single byte 0). Single-valued
// properties come first in identifier order, then the user properties and
// subscription identifiers in the order they were added or decoded. It
// writes every present property whether or not the packet at hand allows
// it: choosing them is the caller's job.
func AppendProperties(b []byte, p *Properties) []byte {
	return appendProperties(b, p, p.contentLen())
}

func appendProperties(b []byte, p *Properties, n int) []byte {
	b = appendVarint(b, n)
	if n == 0 {
		return b
	}
	for m := p.present &^ multiMask; m != 0; m &= m - 1 {
		id := byte(bits.TrailingZeros64(m))
		num, v := p.field(id)
		b = append(b, id)
		switch propKinds[id] {
		case kindByte:
			b = append(b, byte(num))
		case kindUint16:
			b = appendUint16(b, uint16(num))
		case kindUint32:
			b = appendUint32(b, num)
		case kindString, kindBinary:
			b = appendBinary(b, v)
		}
	}
	if p.present&multiMask != 0 && p.multiLen == len(p.list) {
		return append(b, p.list...)
	}
	if p.present&multiMask != 0 {
		for i := 0; i < len(p.list); {
			e, en := scanProp(p.list[i:])
			if en <= 0 {
				break
			}
			if propBit(e.id)&multiMask != 0 {
				b = append(b, p.list[i:i+en]...)
			}
			i += en
		}
	}
	return b
}
