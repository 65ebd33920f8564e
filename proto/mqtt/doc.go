// Package mqtt is Gatecast's codec for MQTT control packets: versions
// 3.1.1 (and 3.1) and 5.0 in one set of functions, used by the broker's
// MQTT adapter on the server side and by the load-test client on the
// client side.
//
// # What it owns, and what it must not know
//
// The package owns the bytes of MQTT control packets: the fixed header and
// its framing, the variable headers and payloads of every packet type of
// both versions, MQTT 5 properties, the MQTT 5 reason codes and 3.1.1
// return codes, and the validity rules the specs state for those bytes
// (reserved bits, field ranges, which property a packet may carry, UTF-8
// strings). It must not know about sessions, tokens, grants, topic
// matching or the network: whether a packet identifier is in flight, a
// topic alias is mapped, a client may publish to a topic or a topic filter
// is well-formed are decided by the broker's MQTT adapter and the topic
// package. Rules that depend on that state or on the direction of a packet
// are listed in the decoders' comments as the caller's.
//
// # Style
//
// Everything is a pure function over caller-owned byte slices (in the
// manner of github.com/gobwas/ws): ReadPacket frames, one Decode function
// per packet fills a caller's struct, one Append function per packet
// appends the encoded packet to a caller's slice and returns it. Nothing
// is kept between calls.
//
// Decoded []byte fields (topics, payloads, client identifiers, property
// values, user properties, topic filters) are views into the buffer given
// to the decoder: they are valid while that buffer is and must be copied
// to outlive it. Views have their capacity cut to their length, so
// appending to one never writes over the bytes after it.
//
// The hot path allocates nothing: ReadPacket, DecodePublish (both versions,
// with properties, user properties and subscription identifiers read
// through iterators), PublishLen and AppendPublish into a buffer with room.
// Refusals allocate nothing either: errors are shared package values.
//
// # Versions
//
// Functions taking a version byte use the MQTT 5 format for Version5 (5)
// and the 3.1.1 format for any other value; the version is the
// ProtocolLevel of the connection's CONNECT. MQTT 3.1 (protocol name
// "MQIsdp", level 3) has the 3.1.1 wire format and is decoded with the
// 3.1.1 rules (plus its non-empty client identifier).
//
// # Framing
//
//	ReadPacket(b, maxSize) (h Header, body []byte, n int, err error)
//
// parses the fixed header at the start of b. ErrIncomplete means read
// more (n is the total size once the remaining length is complete);
// ErrPacketTooLarge is returned as soon as the header announces a packet
// over maxSize; a malformed header is an *Error. Then the caller decodes
// body with the decoder for h.Type and consumes b[:n].
//
// # Decoders
//
//	DecodeConnect(body, *Connect)                 server
//	DecodeConnack(body, version, *Connack)        client
//	DecodePublish(h, body, version, *Publish)     both
//	DecodeAck(h, body, version, *Ack)             both: PUBACK PUBREC PUBREL PUBCOMP
//	DecodeSubscribe(h, body, version, *Subscribe)     server; filters via Subscribe.Filters
//	DecodeSuback(body, version, *Suback)          client
//	DecodeUnsubscribe(h, body, version, *Unsubscribe) server; filters via Unsubscribe.Filters
//	DecodeUnsuback(body, version, *Unsuback)      client
//	DecodePingreq(body), DecodePingresp(body)
//	DecodeDisconnect(body, version, *Disconnect)  both
//	DecodeAuth(body, version, *Auth)              both, MQTT 5 only
//
// # Encoders
//
//	AppendConnect(b, *Connect)
//	AppendConnack(b, version, sessionPresent, code, *Properties)
//	AppendPublish(b, version, *Publish), PublishLen(version, *Publish)
//	AppendAck(b, typ, version, packetID, code, *Properties)
//	AppendSubscribe(b, version, packetID, *Properties, []SubscribeFilter)
//	AppendSuback(b, version, packetID, *Properties, codes)
//	AppendUnsubscribe(b, version, packetID, *Properties, [][]byte)
//	AppendUnsuback(b, version, packetID, *Properties, codes)
//	AppendPingreq(b), AppendPingresp(b)
//	AppendDisconnect(b, version, code, *Properties)
//	AppendAuth(b, code, *Properties)
//	AppendProperties(b, *Properties), PropertiesLen(*Properties)
//
// Encoders write the shortest form the spec allows (an MQTT 5 PUBACK with
// Success and no properties is the packet identifier alone) and ignore
// what the version cannot carry (properties and reason codes in 3.1.1). A
// nil *Properties is an empty list. Encoders assume valid input (strings
// under 64 KiB, QoS 0 to 2, identifiers in range): other input gives wrong
// bytes but never a panic.
//
// # Errors
//
// A refused packet is an *Error whose Code is the MQTT 5 reason code to
// answer with: MalformedPacket (0x81) for bytes that cannot be parsed,
// ProtocolError (0x82) for bytes that parse but break a rule, and
// UnsupportedProtocolVersion, ClientIdentifierNotValid or TopicNameInvalid
// where the spec names those. A 3.1.1 server maps them to its behaviour:
// close the connection, except for the CONNECT refusals that have a
// return code (ConnRefusedProtocolVersion, ConnRefusedIdentifierRejected).
// Reason is fixed English text that never echoes input bytes.
//
// # Properties
//
// Properties has one field per MQTT 5 property and a presence set (Has,
// Set, Clear), so an absent property differs from a zero one. User
// Property and Subscription Identifier, which may repeat, stay encoded:
// read them with the UserProperties and SubscriptionIdentifiers iterators
// (range-over-func), write them with AddUserProperty and
// AddSubscriptionIdentifier. Decoding checks, per the MQTT 5.0 spec
// (section 2.2.2.2 and each property's definition): an identifier the spec
// does not define, or one not allowed in that packet, is MalformedPacket
// (section 2.2.2.2 says so; it is not a Protocol Error); a property other
// than User Property (and Subscription Identifier in PUBLISH) included
// twice is a ProtocolError; strings must be well-formed UTF-8 without
// U+0000 (MalformedPacket); byte properties must be 0 or 1, Receive
// Maximum, Maximum Packet Size, Topic Alias and Subscription Identifier
// non-zero (ProtocolError); a Response Topic has no wildcard and
// Authentication Data needs an Authentication Method (ProtocolError).
package mqtt
