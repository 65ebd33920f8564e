package mqtt

import (
	"bytes"
	"testing"
)

const (
	v3 = Version311
	v5 = Version5
)

func bs(s string) []byte { return []byte(s) }

// vector is one packet both ways: encode(pkt) == hex and decode(hex) ==
// pkt. decodeOnly marks a valid form the encoders do not produce (they
// write the shortest one); encode(decode(hex)) must then still decode to
// pkt.
type vector struct {
	name       string
	version    byte
	hex        string
	pkt        any
	decodeOnly bool
}

var vectors = []vector{
	// CONNECT. MQTT 3.1.1 section 3.1.2.10 (variable header example: flags
	// CE, keep alive 10) with a payload for each flag.
	{"connect v3 spec example", v3,
		`10 1d 0004 "MQTT" 04 ce 000a 0003 "cid" 0001 "w" 0003 "bye" 0001 "u" 0001 "p"`,
		&Connect{ProtocolName: bs("MQTT"), ProtocolLevel: 4, CleanStart: true, KeepAlive: 10, ClientID: bs("cid"),
			WillFlag: true, WillQoS: 1, WillTopic: bs("w"), WillPayload: bs("bye"),
			UsernameFlag: true, Username: bs("u"), PasswordFlag: true, Password: bs("p")}, false},
	{"connect v3 minimal empty client id", v3, `10 0c 0004 "MQTT" 04 02 003c 0000`,
		&Connect{ProtocolName: bs("MQTT"), ProtocolLevel: 4, CleanStart: true, KeepAlive: 60}, false},
	{"connect v3 username only, will retain qos 2", v3,
		`10 1a 0004 "MQTT" 04 b4 0000 0001 "c" 0003 "a/b" 0000 0004 "user"`,
		&Connect{ProtocolName: bs("MQTT"), ProtocolLevel: 4, ClientID: bs("c"),
			WillFlag: true, WillQoS: 2, WillRetain: true, WillTopic: bs("a/b"),
			UsernameFlag: true, Username: bs("user")}, false},
	{"connect 3.1 MQIsdp", Version31, `10 11 0006 "MQIsdp" 03 02 001e 0003 "abc"`,
		&Connect{ProtocolName: bs("MQIsdp"), ProtocolLevel: 3, CleanStart: true, KeepAlive: 30, ClientID: bs("abc")}, false},
	// MQTT 5.0 section 3.1.2.12 (variable header example: flags CE, keep
	// alive 10, session expiry interval 10).
	{"connect v5 spec example", v5,
		`10 1f 0004 "MQTT" 05 ce 000a 05 110000000a 0001 "c" 00 0001 "w" 0000 0001 "u" 0001 "p"`,
		&Connect{ProtocolName: bs("MQTT"), ProtocolLevel: 5, CleanStart: true, KeepAlive: 10,
			Props: mkProps(PropSessionExpiryInterval, 10), ClientID: bs("c"),
			WillFlag: true, WillQoS: 1, WillTopic: bs("w"), WillPayload: bs(""),
			UsernameFlag: true, Username: bs("u"), PasswordFlag: true, Password: bs("p")}, false},
	{"connect v5 every property", v5,
		`10 68 0004 "MQTT" 05 f4 0000
		 27 110000000a 150004 "SCRA" 16000201 02 1700 1901 210014 22000a 2700010000 260001 "a" 0001 "b"
		 0001 "c"
		 23 0101 0200000e10 030004 "text" 080002 "rt" 090001ff 180000001e 260001 "x" 0001 "y"
		 0001 "w" 0002 "hi" 0001 "u" 0003 00ff01`,
		&Connect{ProtocolName: bs("MQTT"), ProtocolLevel: 5,
			Props: mkProps(PropSessionExpiryInterval, 10, PropAuthenticationMethod, "SCRA",
				PropAuthenticationData, "\x01\x02", PropRequestProblemInformation, 0,
				PropRequestResponseInformation, 1, PropReceiveMaximum, 20, PropTopicAliasMaximum, 10,
				PropMaximumPacketSize, 65536, PropUserProperty, [2]string{"a", "b"}),
			ClientID: bs("c"), WillFlag: true, WillQoS: 2, WillRetain: true,
			WillProps: mkProps(PropPayloadFormatIndicator, 1, PropMessageExpiryInterval, 3600,
				PropContentType, "text", PropResponseTopic, "rt", PropCorrelationData, "\xff",
				PropWillDelayInterval, 30, PropUserProperty, [2]string{"x", "y"}),
			WillTopic: bs("w"), WillPayload: bs("hi"),
			UsernameFlag: true, Username: bs("u"), PasswordFlag: true, Password: bs("\x00\xff\x01")}, false},
	{"connect v5 password without username", v5, `10 11 0004 "MQTT" 05 42 0000 00 0000 0002 "pw"`,
		&Connect{ProtocolName: bs("MQTT"), ProtocolLevel: 5, CleanStart: true, ClientID: bs(""),
			PasswordFlag: true, Password: bs("pw")}, false},
	{"connect v5 empty client id, no clean start", v5, `10 0d 0004 "MQTT" 05 00 0000 00 0000`,
		&Connect{ProtocolName: bs("MQTT"), ProtocolLevel: 5}, false},

	// CONNACK
	{"connack v3 accepted", v3, `20 02 00 00`, &Connack{}, false},
	{"connack v3 session present", v3, `20 02 01 00`, &Connack{SessionPresent: true}, false},
	{"connack v3 not authorized", v3, `20 02 00 05`, &Connack{Code: ConnRefusedNotAuthorized}, false},
	{"connack v5 success", v5, `20 03 00 00 00`, &Connack{}, false},
	{"connack v5 not authorized", v5, `20 03 00 87 00`, &Connack{Code: NotAuthorized}, false},
	{"connack v5 unsupported version with reason", v5, `20 08 00 84 05 1f0002 "no"`,
		&Connack{Code: UnsupportedProtocolVersion, Props: mkProps(PropReasonString, "no")}, false},
	{"connack v5 every property", v5,
		`20 46 01 00 43
		 1100000078 120003 "gen" 13001e 150003 "tok" 160001aa 1a0002 "ri" 1c0002 "sv" 1f0002 "ok"
		 210064 220005 2401 2500 2700100000 2801 2900 2a01 260001 "k" 0001 "v"`,
		&Connack{SessionPresent: true, Props: mkProps(PropSessionExpiryInterval, 120,
			PropAssignedClientIdentifier, "gen", PropServerKeepAlive, 30, PropAuthenticationMethod, "tok",
			PropAuthenticationData, "\xaa", PropResponseInformation, "ri", PropServerReference, "sv",
			PropReasonString, "ok", PropReceiveMaximum, 100, PropTopicAliasMaximum, 5, PropMaximumQoS, 1,
			PropRetainAvailable, 0, PropMaximumPacketSize, 1<<20, PropWildcardSubscriptionAvailable, 1,
			PropSubscriptionIdentifierAvailable, 0, PropSharedSubscriptionAvailable, 1,
			PropUserProperty, [2]string{"k", "v"})}, false},

	// PUBACK, PUBREC, PUBREL, PUBCOMP
	{"puback v3", v3, `40 02 0001`, &Ack{Type: PUBACK, PacketID: 1}, false},
	{"pubrec v3", v3, `50 02 0002`, &Ack{Type: PUBREC, PacketID: 2}, false},
	{"pubrel v3", v3, `62 02 0003`, &Ack{Type: PUBREL, PacketID: 3}, false},
	{"pubcomp v3", v3, `70 02 ffff`, &Ack{Type: PUBCOMP, PacketID: 0xffff}, false},
	{"puback v5 success short", v5, `40 02 0001`, &Ack{Type: PUBACK, PacketID: 1}, false},
	{"puback v5 code only", v5, `40 03 0001 10`, &Ack{Type: PUBACK, PacketID: 1, Code: NoMatchingSubscribers}, false},
	{"puback v5 success, explicit code", v5, `40 03 0001 00`, &Ack{Type: PUBACK, PacketID: 1}, true},
	{"puback v5 success, empty properties", v5, `40 04 0001 00 00`, &Ack{Type: PUBACK, PacketID: 1}, true},
	{"puback v5 reason string", v5, `40 0d 0001 87 09 1f0006 "denied"`,
		&Ack{Type: PUBACK, PacketID: 1, Code: NotAuthorized, Props: mkProps(PropReasonString, "denied")}, false},
	{"pubrec v5 quota", v5, `50 03 0009 97`, &Ack{Type: PUBREC, PacketID: 9, Code: QuotaExceeded}, false},
	{"pubrel v5 not found", v5, `62 03 0005 92`, &Ack{Type: PUBREL, PacketID: 5, Code: PacketIdentifierNotFound}, false},
	{"pubcomp v5 user property", v5, `70 0b 0006 00 07 260001 "a" 0001 "b"`,
		&Ack{Type: PUBCOMP, PacketID: 6, Props: mkProps(PropUserProperty, [2]string{"a", "b"})}, false},

	// SUBSCRIBE. MQTT 3.1.1 section 3.8.3: "a/b" QoS 1 and "c/d" QoS 2,
	// packet identifier 10.
	{"subscribe v3 spec example", v3, `82 0e 000a 0003 "a/b" 01 0003 "c/d" 02`,
		&subscribeV{PacketID: 10, Filters: []SubscribeFilter{{Filter: bs("a/b"), QoS: 1}, {Filter: bs("c/d"), QoS: 2}}}, false},
	{"subscribe v5 no properties", v5, `82 07 0002 00 0001 "t" 00`,
		&subscribeV{PacketID: 2, Filters: []SubscribeFilter{{Filter: bs("t")}}}, false},
	{"subscribe v5 options and properties", v5,
		`82 1f 0001 09 0b05 260001 "k" 0001 "v" 0003 "a/#" 2e 000a "$share/g/x" 11`,
		&subscribeV{PacketID: 1, Props: mkProps(PropSubscriptionIdentifier, 5, PropUserProperty, [2]string{"k", "v"}),
			Filters: []SubscribeFilter{
				{Filter: bs("a/#"), QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
				{Filter: bs("$share/g/x"), QoS: 1, RetainHandling: 1}}}, false},

	// SUBACK. MQTT 3.1.1 section 3.9.3: granted QoS 0, granted QoS 2,
	// failure.
	{"suback v3 spec example", v3, `90 05 000a 00 02 80`, &Suback{PacketID: 10, Codes: []byte{0, 2, 0x80}}, false},
	{"suback v3 single", v3, `90 03 0001 01`, &Suback{PacketID: 1, Codes: []byte{1}}, false},
	{"suback v5 user property", v5, `90 0b 0003 07 260001 "a" 0001 "b" 00`,
		&Suback{PacketID: 3, Props: mkProps(PropUserProperty, [2]string{"a", "b"}), Codes: []byte{0}}, false},
	{"suback v5", v5, `90 06 0001 00 00 01 02`, &Suback{PacketID: 1, Codes: []byte{0, 1, 2}}, false},
	{"suback v5 failures with reason", v5, `90 09 0002 04 1f0001 "x" 87 a2`,
		&Suback{PacketID: 2, Props: mkProps(PropReasonString, "x"), Codes: []byte{0x87, 0xa2}}, false},

	// UNSUBSCRIBE. MQTT 3.1.1 section 3.10.3: "a/b" and "c/d".
	{"unsubscribe v3 spec example", v3, `a2 0c 000a 0003 "a/b" 0003 "c/d"`,
		&unsubscribeV{PacketID: 10, Filters: []string{"a/b", "c/d"}}, false},
	{"unsubscribe v3 single", v3, `a2 05 0001 0001 "x"`, &unsubscribeV{PacketID: 1, Filters: []string{"x"}}, false},
	{"unsubscribe v5 no properties", v5, `a2 0c 0002 00 0003 "a/b" 0002 "c/"`,
		&unsubscribeV{PacketID: 2, Filters: []string{"a/b", "c/"}}, false},
	{"unsubscribe v5 user property", v5, `a2 0d 0001 07 260001 "k" 0001 "v" 0001 "t"`,
		&unsubscribeV{PacketID: 1, Props: mkProps(PropUserProperty, [2]string{"k", "v"}), Filters: []string{"t"}}, false},

	// UNSUBACK
	{"unsuback v3", v3, `b0 02 000a`, &Unsuback{PacketID: 10}, false},
	{"unsuback v3 max id", v3, `b0 02 ffff`, &Unsuback{PacketID: 0xffff}, false},
	{"unsuback v5 user property", v5, `b0 0b 0003 07 260001 "a" 0001 "b" 00`,
		&Unsuback{PacketID: 3, Props: mkProps(PropUserProperty, [2]string{"a", "b"}), Codes: []byte{0}}, false},
	{"unsuback v5", v5, `b0 05 0001 00 00 11`, &Unsuback{PacketID: 1, Codes: []byte{0, 0x11}}, false},
	{"unsuback v5 reason string", v5, `b0 08 0002 04 1f0001 "y" 80`,
		&Unsuback{PacketID: 2, Props: mkProps(PropReasonString, "y"), Codes: []byte{0x80}}, false},

	// PUBLISH (the rest are in publishVectors): user properties on both
	// sides of another property; the encoder writes them after it.
	{"publish v5 interleaved user properties", v5,
		`30 14 0001 "t" 10 260001 "a" 0001 "1" 0101 260001 "b" 0001 "2"`,
		&Publish{Topic: bs("t"), Props: mkProps(PropPayloadFormatIndicator, 1,
			PropUserProperty, [2]string{"a", "1"}, PropUserProperty, [2]string{"b", "2"})}, true},
	{"publish v5 interleaved, encoded form", v5,
		`30 14 0001 "t" 10 0101 260001 "a" 0001 "1" 260001 "b" 0001 "2"`,
		&Publish{Topic: bs("t"), Props: mkProps(PropPayloadFormatIndicator, 1,
			PropUserProperty, [2]string{"a", "1"}, PropUserProperty, [2]string{"b", "2"})}, false},

	// PINGREQ, PINGRESP
	{"pingreq v3", v3, `c0 00`, pingreqV{}, false},
	{"pingresp v3", v3, `d0 00`, pingrespV{}, false},
	{"pingreq v5", v5, `c0 00`, pingreqV{}, false},
	{"pingresp v5", v5, `d0 00`, pingrespV{}, false},

	// DISCONNECT
	{"disconnect v3", v3, `e0 00`, &Disconnect{}, false},
	{"disconnect v5 normal", v5, `e0 00`, &Disconnect{}, false},
	{"disconnect v5 with will", v5, `e0 01 04`, &Disconnect{Code: DisconnectWithWill}, false},
	{"disconnect v5 normal, explicit", v5, `e0 02 00 00`, &Disconnect{}, true},
	{"disconnect v5 shutting down with properties", v5,
		`e0 11 8b 0f 1100000000 1c0002 "s2" 1f0002 "rs"`,
		&Disconnect{Code: ServerShuttingDown, Props: mkProps(PropSessionExpiryInterval, 0,
			PropServerReference, "s2", PropReasonString, "rs")}, false},

	// AUTH
	{"auth v5 success", v5, `f0 00`, &Auth{}, false},
	{"auth v5 continue", v5, `f0 13 18 11 150004 "SCRA" 160003 010203 1f0001 "c"`,
		&Auth{Code: ContinueAuthentication, Props: mkProps(PropAuthenticationMethod, "SCRA",
			PropAuthenticationData, "\x01\x02\x03", PropReasonString, "c")}, false},
	{"auth v5 user property", v5, `f0 0d 19 0b 150001 "m" 260001 "a" 0001 "b"`,
		&Auth{Code: ReAuthenticate, Props: mkProps(PropAuthenticationMethod, "m", PropUserProperty, [2]string{"a", "b"})}, false},
	{"auth v5 re-authenticate", v5, `f0 02 19 00`, &Auth{Code: ReAuthenticate}, false},
	{"auth v5 code without properties", v5, `f0 01 19`, &Auth{Code: ReAuthenticate}, true},
}

// allVectors adds the PUBLISH vectors to the table.
func allVectors() []vector {
	vs := append([]vector(nil), vectors...)
	for _, p := range publishVectors {
		vs = append(vs, vector{"publish " + p.name, p.version, p.hex, &p.p, false})
	}
	return vs
}

func TestVectors(t *testing.T) {
	for _, v := range allVectors() {
		t.Run(v.name, func(t *testing.T) {
			want := hx(t, v.hex)
			got, err := decodePacket(want, v.version)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if g, e := dump(got), dump(v.pkt); g != e {
				t.Errorf("decode:\n got %s\nwant %s", g, e)
			}
			enc := encode(nil, v.version, v.pkt)
			if !v.decodeOnly && !bytes.Equal(enc, want) {
				t.Errorf("encode:\n got % x\nwant % x", enc, want)
			}
			// The decoded packet re-encodes to the same bytes (or, for a
			// decode-only form, to one that decodes the same), also when
			// appended after other bytes.
			re := encode([]byte{0xEE}, v.version, got)[1:]
			if !v.decodeOnly && !bytes.Equal(re, want) {
				t.Errorf("re-encode:\n got % x\nwant % x", re, want)
			}
			again, err := decodePacket(re, v.version)
			if err != nil || dump(again) != dump(v.pkt) {
				t.Errorf("decode(encode(decode)): %v\n got %s\nwant %s", err, dump(again), dump(v.pkt))
			}
		})
	}
}
