package mqtt

// Control packet types (the high nibble of the first fixed-header byte).
const (
	CONNECT     byte = 1
	CONNACK     byte = 2
	PUBLISH     byte = 3
	PUBACK      byte = 4
	PUBREC      byte = 5
	PUBREL      byte = 6
	PUBCOMP     byte = 7
	SUBSCRIBE   byte = 8
	SUBACK      byte = 9
	UNSUBSCRIBE byte = 10
	UNSUBACK    byte = 11
	PINGREQ     byte = 12
	PINGRESP    byte = 13
	DISCONNECT  byte = 14
	AUTH        byte = 15 // MQTT 5 only
)

// Protocol levels as carried in CONNECT. Every function taking a version
// byte uses the MQTT 5 format for Version5 and the 3.1.1 format for any
// other value (3.1 and 3.1.1 share their wire format).
const (
	Version31  byte = 3 // MQTT 3.1, protocol name "MQIsdp"; decoded with the 3.1.1 rules
	Version311 byte = 4
	Version5   byte = 5
)

// Size limits of the fixed header.
const (
	// MaxRemainingLength is the largest remaining length a four-byte
	// variable byte integer can carry.
	MaxRemainingLength = 268435455
	// MaxPacketSize is the largest possible control packet: one type byte,
	// four length bytes and MaxRemainingLength bytes.
	MaxPacketSize = 1 + 4 + MaxRemainingLength
)

// MQTT 5 reason codes (MQTT 5.0 section 2.4), by their spec names. Codes
// below 0x80 report success; 0x80 and above report failure.
const (
	Success                             byte = 0x00
	NormalDisconnection                 byte = 0x00
	GrantedQoS0                         byte = 0x00
	GrantedQoS1                         byte = 0x01
	GrantedQoS2                         byte = 0x02
	DisconnectWithWill                  byte = 0x04
	NoMatchingSubscribers               byte = 0x10
	NoSubscriptionExisted               byte = 0x11
	ContinueAuthentication              byte = 0x18
	ReAuthenticate                      byte = 0x19
	UnspecifiedError                    byte = 0x80
	MalformedPacket                     byte = 0x81
	ProtocolError                       byte = 0x82
	ImplementationSpecificError         byte = 0x83
	UnsupportedProtocolVersion          byte = 0x84
	ClientIdentifierNotValid            byte = 0x85
	BadUserNameOrPassword               byte = 0x86
	NotAuthorized                       byte = 0x87
	ServerUnavailable                   byte = 0x88
	ServerBusy                          byte = 0x89
	Banned                              byte = 0x8A
	ServerShuttingDown                  byte = 0x8B
	BadAuthenticationMethod             byte = 0x8C
	KeepAliveTimeout                    byte = 0x8D
	SessionTakenOver                    byte = 0x8E
	TopicFilterInvalid                  byte = 0x8F
	TopicNameInvalid                    byte = 0x90
	PacketIdentifierInUse               byte = 0x91
	PacketIdentifierNotFound            byte = 0x92
	ReceiveMaximumExceeded              byte = 0x93
	TopicAliasInvalid                   byte = 0x94
	PacketTooLarge                      byte = 0x95
	MessageRateTooHigh                  byte = 0x96
	QuotaExceeded                       byte = 0x97
	AdministrativeAction                byte = 0x98
	PayloadFormatInvalid                byte = 0x99
	RetainNotSupported                  byte = 0x9A
	QoSNotSupported                     byte = 0x9B
	UseAnotherServer                    byte = 0x9C
	ServerMoved                         byte = 0x9D
	SharedSubscriptionsNotSupported     byte = 0x9E
	ConnectionRateExceeded              byte = 0x9F
	MaximumConnectTime                  byte = 0xA0
	SubscriptionIdentifiersNotSupported byte = 0xA1
	WildcardSubscriptionsNotSupported   byte = 0xA2
)

// MQTT 3.1.1 CONNACK return codes (MQTT 3.1.1 section 3.2.2.3).
const (
	ConnAccepted                   byte = 0
	ConnRefusedProtocolVersion     byte = 1
	ConnRefusedIdentifierRejected  byte = 2
	ConnRefusedServerUnavailable   byte = 3
	ConnRefusedBadUsernamePassword byte = 4
	ConnRefusedNotAuthorized       byte = 5
)

// SubackFailure is the MQTT 3.1.1 SUBACK return code for a refused
// subscription (the 3.1.1 successes are the granted QoS 0, 1 and 2).
const SubackFailure byte = 0x80

var reasonNames = [256]string{
	Success:                             "success",
	GrantedQoS1:                         "granted QoS 1",
	GrantedQoS2:                         "granted QoS 2",
	DisconnectWithWill:                  "disconnect with will message",
	NoMatchingSubscribers:               "no matching subscribers",
	NoSubscriptionExisted:               "no subscription existed",
	ContinueAuthentication:              "continue authentication",
	ReAuthenticate:                      "re-authenticate",
	UnspecifiedError:                    "unspecified error",
	MalformedPacket:                     "malformed packet",
	ProtocolError:                       "protocol error",
	ImplementationSpecificError:         "implementation specific error",
	UnsupportedProtocolVersion:          "unsupported protocol version",
	ClientIdentifierNotValid:            "client identifier not valid",
	BadUserNameOrPassword:               "bad user name or password",
	NotAuthorized:                       "not authorized",
	ServerUnavailable:                   "server unavailable",
	ServerBusy:                          "server busy",
	Banned:                              "banned",
	ServerShuttingDown:                  "server shutting down",
	BadAuthenticationMethod:             "bad authentication method",
	KeepAliveTimeout:                    "keep alive timeout",
	SessionTakenOver:                    "session taken over",
	TopicFilterInvalid:                  "topic filter invalid",
	TopicNameInvalid:                    "topic name invalid",
	PacketIdentifierInUse:               "packet identifier in use",
	PacketIdentifierNotFound:            "packet identifier not found",
	ReceiveMaximumExceeded:              "receive maximum exceeded",
	TopicAliasInvalid:                   "topic alias invalid",
	PacketTooLarge:                      "packet too large",
	MessageRateTooHigh:                  "message rate too high",
	QuotaExceeded:                       "quota exceeded",
	AdministrativeAction:                "administrative action",
	PayloadFormatInvalid:                "payload format invalid",
	RetainNotSupported:                  "retain not supported",
	QoSNotSupported:                     "QoS not supported",
	UseAnotherServer:                    "use another server",
	ServerMoved:                         "server moved",
	SharedSubscriptionsNotSupported:     "shared subscriptions not supported",
	ConnectionRateExceeded:              "connection rate exceeded",
	MaximumConnectTime:                  "maximum connect time",
	SubscriptionIdentifiersNotSupported: "subscription identifiers not supported",
	WildcardSubscriptionsNotSupported:   "wildcard subscriptions not supported",
}

// ReasonString returns the spec name of an MQTT 5 reason code in lower
// case ("success" for 0x00, which is also Normal disconnection and Granted
// QoS 0), or "reason code 0xNN" for a value the spec does not define.
func ReasonString(code byte) string {
	if s := reasonNames[code]; s != "" {
		return s
	}
	const hex = "0123456789ABCDEF"
	return "reason code 0x" + string([]byte{hex[code>>4], hex[code&15]})
}

var typeNames = [16]string{
	"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
	"SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH",
}

// TypeName returns the spec name of a control packet type ("PUBLISH"), or
// "RESERVED" for 0 and values above 15.
func TypeName(t byte) string {
	if t > 15 {
		return typeNames[0]
	}
	return typeNames[t]
}

// codeSet is a set of byte values (the reason codes one packet type may
// carry).
type codeSet [4]uint64

func makeCodeSet(codes ...byte) (s codeSet) {
	for _, c := range codes {
		s[c>>6] |= 1 << (c & 63)
	}
	return s
}

func (s *codeSet) has(c byte) bool { return s[c>>6]&(1<<(c&63)) != 0 }

// Reason codes each MQTT 5 packet type may carry (MQTT 5.0 Table 2-6 and
// the per-packet reason code tables), and the 3.1.1 SUBACK return codes.
var (
	connackCodes = makeCodeSet(Success, UnspecifiedError, MalformedPacket, ProtocolError,
		ImplementationSpecificError, UnsupportedProtocolVersion, ClientIdentifierNotValid,
		BadUserNameOrPassword, NotAuthorized, ServerUnavailable, ServerBusy, Banned,
		BadAuthenticationMethod, TopicNameInvalid, PacketTooLarge, QuotaExceeded,
		PayloadFormatInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer,
		ServerMoved, ConnectionRateExceeded)
	pubackCodes = makeCodeSet(Success, NoMatchingSubscribers, UnspecifiedError,
		ImplementationSpecificError, NotAuthorized, TopicNameInvalid, PacketIdentifierInUse,
		QuotaExceeded, PayloadFormatInvalid) // PUBACK and PUBREC
	pubrelCodes = makeCodeSet(Success, PacketIdentifierNotFound) // PUBREL and PUBCOMP
	subackCodes = makeCodeSet(GrantedQoS0, GrantedQoS1, GrantedQoS2, UnspecifiedError,
		ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse,
		QuotaExceeded, SharedSubscriptionsNotSupported, SubscriptionIdentifiersNotSupported,
		WildcardSubscriptionsNotSupported)
	unsubackCodes = makeCodeSet(Success, NoSubscriptionExisted, UnspecifiedError,
		ImplementationSpecificError, NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse)
	disconnectCodes = makeCodeSet(NormalDisconnection, DisconnectWithWill, UnspecifiedError,
		MalformedPacket, ProtocolError, ImplementationSpecificError, NotAuthorized, ServerBusy,
		ServerShuttingDown, KeepAliveTimeout, SessionTakenOver, TopicFilterInvalid,
		TopicNameInvalid, ReceiveMaximumExceeded, TopicAliasInvalid, PacketTooLarge,
		MessageRateTooHigh, QuotaExceeded, AdministrativeAction, PayloadFormatInvalid,
		RetainNotSupported, QoSNotSupported, UseAnotherServer, ServerMoved,
		SharedSubscriptionsNotSupported, ConnectionRateExceeded, MaximumConnectTime,
		SubscriptionIdentifiersNotSupported, WildcardSubscriptionsNotSupported)
	authCodes     = makeCodeSet(Success, ContinueAuthentication, ReAuthenticate)
	subackCodes3  = makeCodeSet(GrantedQoS0, GrantedQoS1, GrantedQoS2, SubackFailure)
	connackCodes3 = makeCodeSet(ConnAccepted, ConnRefusedProtocolVersion, ConnRefusedIdentifierRejected,
		ConnRefusedServerUnavailable, ConnRefusedBadUsernamePassword, ConnRefusedNotAuthorized)
)
