package mqtt

import "errors"

// Error is a packet the codec refuses. Code is the MQTT 5 reason code a
// server answers with (in CONNACK before the session exists, in DISCONNECT
// after): MalformedPacket when the bytes cannot be parsed, ProtocolError
// when they parse but break a rule of the spec, or a more specific code
// (TopicNameInvalid, UnsupportedProtocolVersion, ClientIdentifierNotValid,
// PacketTooLarge). An MQTT 3.1.1 server maps it to 3.1.1 behaviour itself
// (close the connection, or a CONNACK return code for the CONNECT errors).
//
// Reason is a short fixed English text naming the rule; it never contains
// bytes of the input. The errors returned by the decoders are shared
// package-level values: compare them by Code, and do not modify them.
type Error struct {
	Code   byte
	Reason string
}

func (e *Error) Error() string { return "mqtt: " + ReasonString(e.Code) + ": " + e.Reason }

// ErrIncomplete is returned by ReadPacket when the buffer holds only the
// beginning of a packet: read more bytes and call again.
var ErrIncomplete = errors.New("mqtt: incomplete packet")

// ErrPacketTooLarge is returned by ReadPacket as soon as the fixed header
// announces a packet larger than the caller's limit. It is an *Error with
// Code PacketTooLarge.
var ErrPacketTooLarge = &Error{Code: PacketTooLarge, Reason: "packet larger than the maximum packet size"}

func malformed(reason string) *Error { return &Error{Code: MalformedPacket, Reason: reason} }
func protocol(reason string) *Error  { return &Error{Code: ProtocolError, Reason: reason} }

var (
	// framing
	errReservedType     = malformed("reserved packet type 0")
	errFixedFlags       = malformed("invalid fixed header flags")
	errVarintTooLong    = malformed("variable byte integer longer than 4 bytes")
	errVarintNotMinimal = malformed("variable byte integer not in its shortest form")
	errWrongType        = malformed("decoder called for another packet type")

	// primitives
	errTruncated     = malformed("packet shorter than its fields")
	errTrailing      = malformed("bytes after the last field")
	errBadUTF8       = malformed("string is not well-formed UTF-8 or contains U+0000")
	errPropLength    = malformed("property length exceeds the packet")
	errPropTruncated = malformed("property value truncated")
	errPropUnknown   = malformed("unknown property identifier")
	errPropAuthData  = protocol("authentication data without authentication method")
	errRespTopicWild = protocol("response topic contains a wildcard")

	// PUBLISH
	errPublishQoS3       = malformed("PUBLISH with QoS 3")
	errPublishDupQoS0    = malformed("PUBLISH with DUP set and QoS 0")
	errPacketIDZero      = protocol("packet identifier 0")
	errTopicWildcard     = &Error{Code: TopicNameInvalid, Reason: "topic name contains a wildcard"}
	errTopicEmpty        = &Error{Code: TopicNameInvalid, Reason: "empty topic name"}
	errTopicEmptyNoAlias = protocol("empty topic name without a topic alias")

	// CONNECT
	errUnsupportedProtocol = &Error{Code: UnsupportedProtocolVersion, Reason: "unsupported protocol name or level"}
	errConnectReserved     = malformed("CONNECT reserved flag set")
	errWillQoS3            = malformed("will QoS 3")
	errWillFlags           = malformed("will QoS or will retain set without the will flag")
	errPasswordNoUser      = protocol("password flag without user name flag")
	errClientIDEmpty       = &Error{Code: ClientIdentifierNotValid, Reason: "empty client identifier without clean session"}
	errClientIDEmpty31     = &Error{Code: ClientIdentifierNotValid, Reason: "empty client identifier in MQTT 3.1"}
	errWillTopicWildcard   = &Error{Code: TopicNameInvalid, Reason: "will topic contains a wildcard"}
	errWillTopicEmpty      = &Error{Code: TopicNameInvalid, Reason: "empty will topic"}

	// CONNACK
	errConnackFlags   = malformed("CONNACK reserved acknowledge flags set")
	errConnackCode    = protocol("reason code not allowed in CONNACK")
	errConnackPresent = protocol("session present with a refusing CONNACK")

	// SUBSCRIBE / UNSUBSCRIBE and their acks
	errNoFilters          = protocol("no topic filter")
	errSubOptsReserved    = malformed("subscription options reserved bits set")
	errSubQoS3Malformed   = malformed("subscription QoS 3")
	errSubQoS3            = protocol("subscription maximum QoS 3")
	errRetainHandling3    = protocol("retain handling 3")
	errNoReasonCodes      = protocol("acknowledgement without reason codes")
	errSubackCode         = protocol("reason code not allowed in SUBACK")
	errUnsubackCode       = protocol("reason code not allowed in UNSUBACK")
	errPubackCode         = protocol("reason code not allowed in PUBACK or PUBREC")
	errPubrelCode         = protocol("reason code not allowed in PUBREL or PUBCOMP")
	errDisconnectCode     = protocol("reason code not allowed in DISCONNECT")
	errAuthCode           = protocol("reason code not allowed in AUTH")
	errAuthVersion        = malformed("AUTH in MQTT 3.1.1")
	errNonEmpty           = malformed("packet must have no body")
	errAckLength311       = malformed("MQTT 3.1.1 acknowledgement length is not 2")
	errDisconnectLength31 = malformed("MQTT 3.1.1 DISCONNECT with a body")
)
