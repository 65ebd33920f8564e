package mqtt

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// errorVectors are whole packets (ReadPacket accepts their fixed header)
// that the decoder for their type refuses with the given reason code.
var errorVectors = []struct {
	name    string
	version byte
	hex     string
	code    byte
}{
	// CONNECT: protocol name and level
	{"connect MQTT level 3", v3, `10 0c 0004 "MQTT" 03 02 003c 0000`, UnsupportedProtocolVersion},
	{"connect MQTT level 6", v5, `10 0c 0004 "MQTT" 06 02 003c 0000`, UnsupportedProtocolVersion},
	{"connect MQIsdp level 4", v3, `10 0e 0006 "MQIsdp" 04 02 003c 0000`, UnsupportedProtocolVersion},
	{"connect unknown name", v3, `10 0c 0004 "MQTX" 04 02 003c 0000`, UnsupportedProtocolVersion},
	{"connect name only", v3, `10 06 0004 "MQTT"`, MalformedPacket},
	{"connect truncated name", v3, `10 03 0004 "M"`, MalformedPacket},
	{"connect empty", v3, `10 00`, MalformedPacket},
	// CONNECT: flags
	{"connect reserved flag", v3, `10 0c 0004 "MQTT" 04 03 003c 0000`, MalformedPacket},
	{"connect reserved flag v5", v5, `10 0d 0004 "MQTT" 05 01 003c 00 0000`, MalformedPacket},
	{"connect will qos 3", v3, `10 11 0004 "MQTT" 04 1e 003c 0000 0001 "w" 0000`, MalformedPacket},
	{"connect will qos without will", v3, `10 0c 0004 "MQTT" 04 0a 003c 0000`, MalformedPacket},
	{"connect will retain without will", v5, `10 0d 0004 "MQTT" 05 22 003c 00 0000`, MalformedPacket},
	{"connect v3 password without username", v3, `10 0f 0004 "MQTT" 04 42 003c 0000 0001 "p"`, ProtocolError},
	{"connect no keep alive", v3, `10 09 0004 "MQTT" 04 02 00`, MalformedPacket},
	// CONNECT: payload
	{"connect v3 empty client id, clean session 0", v3, `10 0c 0004 "MQTT" 04 00 003c 0000`, ClientIdentifierNotValid},
	{"connect 3.1 empty client id", Version31, `10 0e 0006 "MQIsdp" 03 02 003c 0000`, ClientIdentifierNotValid},
	{"connect bad utf8 client id", v3, `10 0d 0004 "MQTT" 04 02 003c 0001 ff`, MalformedPacket},
	{"connect no client id", v3, `10 0a 0004 "MQTT" 04 02 003c`, MalformedPacket},
	{"connect will topic wildcard", v3, `10 11 0004 "MQTT" 04 06 003c 0000 0001 "+" 0000`, TopicNameInvalid},
	{"connect will topic empty", v3, `10 10 0004 "MQTT" 04 06 003c 0000 0000 0000`, TopicNameInvalid},
	{"connect will topic bad utf8", v3, `10 11 0004 "MQTT" 04 06 003c 0000 0001 c0 0000`, MalformedPacket},
	{"connect will payload missing", v3, `10 0f 0004 "MQTT" 04 06 003c 0000 0001 "w"`, MalformedPacket},
	{"connect username bad utf8", v3, `10 0f 0004 "MQTT" 04 82 003c 0000 0001 00`, MalformedPacket},
	{"connect password missing", v3, `10 0f 0004 "MQTT" 04 c2 003c 0000 0001 "u"`, MalformedPacket},
	{"connect trailing byte", v3, `10 0d 0004 "MQTT" 04 02 003c 0000 00`, MalformedPacket},
	// CONNECT: MQTT 5 properties
	{"connect v5 topic alias not allowed", v5, `10 10 0004 "MQTT" 05 02 003c 03 230001 0000`, MalformedPacket},
	{"connect v5 receive maximum 0", v5, `10 10 0004 "MQTT" 05 02 003c 03 210000 0000`, ProtocolError},
	{"connect v5 maximum packet size 0", v5, `10 12 0004 "MQTT" 05 02 003c 05 2700000000 0000`, ProtocolError},
	{"connect v5 request problem information 2", v5, `10 0f 0004 "MQTT" 05 02 003c 02 1702 0000`, ProtocolError},
	{"connect v5 request response information 2", v5, `10 0f 0004 "MQTT" 05 02 003c 02 1902 0000`, ProtocolError},
	{"connect v5 duplicate session expiry", v5, `10 17 0004 "MQTT" 05 02 003c 0a 1100000001 1100000002 0000`, ProtocolError},
	{"connect v5 authentication data without method", v5, `10 10 0004 "MQTT" 05 02 003c 03 160000 0000`, ProtocolError},
	{"connect v5 no property length", v5, `10 0a 0004 "MQTT" 05 02 003c`, MalformedPacket},
	{"connect v5 will delay twice", v5, `10 1d 0004 "MQTT" 05 06 003c 00 0000 0a 1800000001 1800000001 0001 "w" 0000`, ProtocolError},
	{"connect v5 subscription identifier in will", v5, `10 15 0004 "MQTT" 05 06 003c 00 0000 02 0b01 0001 "w" 0000`, MalformedPacket},
	{"connect v5 will payload format 3", v5, `10 15 0004 "MQTT" 05 06 003c 00 0000 02 0103 0001 "w" 0000`, ProtocolError},
	{"connect v5 will response topic wildcard", v5, `10 17 0004 "MQTT" 05 06 003c 00 0000 04 080001 "#" 0001 "w" 0000`, ProtocolError},

	// CONNACK
	{"connack v3 long", v3, `20 03 00 00 00`, MalformedPacket},
	{"connack v3 short", v3, `20 01 00`, MalformedPacket},
	{"connack v3 reserved flags", v3, `20 02 02 00`, MalformedPacket},
	{"connack v3 return code 6", v3, `20 02 00 06`, ProtocolError},
	{"connack v3 session present with refusal", v3, `20 02 01 05`, ProtocolError},
	{"connack v5 no property length", v5, `20 02 00 00`, MalformedPacket},
	{"connack v5 reserved flags", v5, `20 03 80 00 00`, MalformedPacket},
	{"connack v5 code not for connack", v5, `20 03 00 10 00`, ProtocolError},
	{"connack v5 session present with refusal", v5, `20 03 01 80 00`, ProtocolError},
	{"connack v5 topic alias", v5, `20 06 00 00 03 230001`, MalformedPacket},
	{"connack v5 maximum qos 2", v5, `20 05 00 00 02 2402`, ProtocolError},
	{"connack v5 retain available 2", v5, `20 05 00 00 02 2502`, ProtocolError},
	{"connack v5 wildcard subscription available 5", v5, `20 05 00 00 02 2805`, ProtocolError},
	{"connack v5 subscription identifier available 2", v5, `20 05 00 00 02 2902`, ProtocolError},
	{"connack v5 shared subscription available 2", v5, `20 05 00 00 02 2a02`, ProtocolError},
	{"connack v5 receive maximum 0", v5, `20 06 00 00 03 210000`, ProtocolError},
	{"connack v5 duplicate reason string", v5, `20 0b 00 00 08 1f0001 "a" 1f0001 "b"`, ProtocolError},
	{"connack v5 trailing", v5, `20 04 00 00 00 00`, MalformedPacket},

	// PUBACK … PUBCOMP
	{"puback v3 long", v3, `40 03 0001 00`, MalformedPacket},
	{"puback v3 short", v3, `40 01 00`, MalformedPacket},
	{"pubrel v5 short", v5, `62 01 00`, MalformedPacket},
	{"puback v5 code not for puback", v5, `40 03 0001 92`, ProtocolError},
	{"pubrec v5 code not for pubrec", v5, `50 03 0001 04`, ProtocolError},
	{"pubrel v5 code not for pubrel", v5, `62 03 0001 10`, ProtocolError},
	{"pubcomp v5 code not for pubcomp", v5, `70 03 0001 80`, ProtocolError},
	{"puback v5 trailing after properties", v5, `40 05 0001 00 00 ff`, MalformedPacket},
	{"puback v5 topic alias", v5, `40 07 0001 00 03 230001`, MalformedPacket},
	{"puback v5 duplicate reason string", v5, `40 0c 0001 80 08 1f0001 "a" 1f0001 "b"`, ProtocolError},
	{"puback v5 property length beyond", v5, `40 05 0001 80 05 1f`, MalformedPacket},

	// SUBSCRIBE
	{"subscribe packet id 0", v3, `82 06 0000 0001 "t" 00`, ProtocolError},
	{"subscribe v3 no filter", v3, `82 02 000a`, ProtocolError},
	{"subscribe v5 no filter", v5, `82 03 000a 00`, ProtocolError},
	{"subscribe v3 options bit 2", v3, `82 06 000a 0001 "t" 04`, MalformedPacket},
	{"subscribe v3 qos 3", v3, `82 06 000a 0001 "t" 03`, MalformedPacket},
	{"subscribe v5 reserved options bit 6", v5, `82 07 000a 00 0001 "t" 40`, MalformedPacket},
	{"subscribe v5 reserved options bit 7", v5, `82 07 000a 00 0001 "t" 80`, MalformedPacket},
	{"subscribe v5 qos 3", v5, `82 07 000a 00 0001 "t" 03`, ProtocolError},
	{"subscribe v5 retain handling 3", v5, `82 07 000a 00 0001 "t" 30`, ProtocolError},
	{"subscribe filter bad utf8", v3, `82 06 000a 0001 ff 00`, MalformedPacket},
	{"subscribe filter U+0000", v5, `82 07 000a 00 0001 00 00`, MalformedPacket},
	{"subscribe options missing", v3, `82 05 000a 0001 "t"`, MalformedPacket},
	{"subscribe second options missing", v3, `82 09 000a 0001 "t" 00 0001 "u"`, MalformedPacket},
	{"subscribe filter truncated", v3, `82 05 000a 0005 "t"`, MalformedPacket},
	{"subscribe v5 two subscription identifiers", v5, `82 0b 000a 04 0b01 0b02 0001 "t" 00`, ProtocolError},
	{"subscribe v5 subscription identifier 0", v5, `82 09 000a 02 0b00 0001 "t" 00`, ProtocolError},
	{"subscribe v5 reason string", v5, `82 0b 000a 04 1f0001 "x" 0001 "t" 00`, MalformedPacket},
	{"subscribe missing packet id", v3, `82 01 00`, MalformedPacket},

	// SUBACK
	{"suback v3 code 0x87", v3, `90 03 0001 87`, ProtocolError},
	{"suback v3 no code", v3, `90 02 0001`, ProtocolError},
	{"suback v5 no code", v5, `90 03 0001 00`, ProtocolError},
	{"suback v5 code 0x10", v5, `90 04 0001 00 10`, ProtocolError},
	{"suback v5 topic alias", v5, `90 07 0001 03 230001 00`, MalformedPacket},

	// UNSUBSCRIBE
	{"unsubscribe packet id 0", v3, `a2 05 0000 0001 "t"`, ProtocolError},
	{"unsubscribe v3 no filter", v3, `a2 02 000a`, ProtocolError},
	{"unsubscribe v5 no filter", v5, `a2 03 000a 00`, ProtocolError},
	{"unsubscribe filter bad utf8", v3, `a2 05 000a 0001 80`, MalformedPacket},
	{"unsubscribe filter truncated", v3, `a2 05 000a 0002 "t"`, MalformedPacket},
	{"unsubscribe v5 subscription identifier", v5, `a2 08 000a 02 0b01 0001 "t"`, MalformedPacket},

	// UNSUBACK
	{"unsuback v3 long", v3, `b0 03 0001 00`, MalformedPacket},
	{"unsuback v5 no code", v5, `b0 03 0001 00`, ProtocolError},
	{"unsuback v5 code 0x01", v5, `b0 04 0001 00 01`, ProtocolError},
	{"unsuback v5 no property length", v5, `b0 02 0001`, MalformedPacket},
	{"unsuback v5 property length beyond", v5, `b0 05 0001 03 1f00`, MalformedPacket},
	{"unsuback v5 session expiry", v5, `b0 09 0001 05 1100000001 00`, MalformedPacket},

	// PINGREQ, PINGRESP
	{"pingreq with body", v3, `c0 01 00`, MalformedPacket},
	{"pingresp with body", v5, `d0 01 00`, MalformedPacket},

	// DISCONNECT
	{"disconnect v3 with body", v3, `e0 01 00`, MalformedPacket},
	{"disconnect v5 code 0x01", v5, `e0 01 01`, ProtocolError},
	{"disconnect v5 duplicate session expiry", v5, `e0 0c 00 0a 1100000001 1100000001`, ProtocolError},
	{"disconnect v5 trailing", v5, `e0 03 00 00 00`, MalformedPacket},
	{"disconnect v5 topic alias", v5, `e0 05 00 03 230001`, MalformedPacket},
	{"disconnect v5 bad utf8 reason string", v5, `e0 06 00 04 1f0001 ff`, MalformedPacket},

	// AUTH
	{"auth in 3.1.1", v3, `f0 00`, MalformedPacket},
	{"auth v5 code 0x01", v5, `f0 01 01`, ProtocolError},
	{"auth v5 session expiry", v5, `f0 07 18 05 1100000001`, MalformedPacket},
	{"auth v5 authentication data without method", v5, `f0 05 18 03 160000`, ProtocolError},
	{"auth v5 trailing", v5, `f0 03 18 00 00`, MalformedPacket},
	{"auth v5 bad utf8 method", v5, `f0 06 18 04 150001 ff`, MalformedPacket},
	{"auth v5 duplicate method", v5, `f0 0c 18 0a 150003 "abc" 150001 "a"`, ProtocolError},
}

func TestErrorVectors(t *testing.T) {
	all := errorVectors
	for _, p := range publishErrors {
		if p.name == "not a PUBLISH" {
			continue // a valid PUBACK for the generic dispatcher
		}
		all = append(all, struct {
			name    string
			version byte
			hex     string
			code    byte
		}{"publish " + p.name, p.version, p.hex, p.code})
	}
	for _, v := range all {
		t.Run(v.name, func(t *testing.T) {
			b := hx(t, v.hex)
			h, body, n, err := ReadPacket(b, 0)
			if err != nil || n != len(b) {
				t.Fatalf("ReadPacket: n=%d of %d, %v", n, len(b), err)
			}
			_, err = decodeBody(h, body, v.version)
			if code := errCode(err); code != v.code {
				t.Fatalf("got %v (code %#x), want %#x (%s)", err, code, v.code, ReasonString(v.code))
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "mqtt: ") || !utf8.ValidString(msg) || len(msg) > 120 {
				t.Errorf("error text %q", msg)
			}
		})
	}
}

func TestConnectLevelOnError(t *testing.T) {
	for _, c := range []struct {
		hex   string
		name  string
		level byte
		code  byte
	}{
		{`0004 "MQTT" 06 02 003c 0000`, "MQTT", 6, UnsupportedProtocolVersion},
		{`0004 "MQTT" 03`, "MQTT", 3, UnsupportedProtocolVersion},
		{`0004 "MQTT" 05 01`, "MQTT", 5, MalformedPacket},
		{`0004 "MQTT" 04 02 003c 0001 ff`, "MQTT", 4, MalformedPacket},
		{`0006 "MQIsdp" 05`, "MQIsdp", 5, UnsupportedProtocolVersion},
	} {
		var cn Connect
		err := DecodeConnect(hx(t, c.hex), &cn)
		if errCode(err) != c.code || string(cn.ProtocolName) != c.name || cn.ProtocolLevel != c.level {
			t.Errorf("%s: err=%v name=%q level=%d", c.hex, err, cn.ProtocolName, cn.ProtocolLevel)
		}
	}
}

func TestDecodersCheckHeader(t *testing.T) {
	// Decoders that take the header refuse a wrong type or fixed flags even
	// when the caller framed the packet itself.
	body := hx(t, `000a 0001 "t" 00`)
	var s Subscribe
	if errCode(DecodeSubscribe(Header{Type: SUBSCRIBE, Flags: 0}, body, v3, &s)) != MalformedPacket {
		t.Error("SUBSCRIBE flags 0 accepted")
	}
	if errCode(DecodeSubscribe(Header{Type: UNSUBSCRIBE, Flags: 2}, body, v3, &s)) != MalformedPacket {
		t.Error("SUBSCRIBE decoder accepted UNSUBSCRIBE")
	}
	var u Unsubscribe
	if errCode(DecodeUnsubscribe(Header{Type: UNSUBSCRIBE, Flags: 0}, hx(t, `000a 0001 "t"`), v3, &u)) != MalformedPacket {
		t.Error("UNSUBSCRIBE flags 0 accepted")
	}
	if errCode(DecodeUnsubscribe(Header{Type: SUBSCRIBE, Flags: 2}, hx(t, `000a 0001 "t"`), v3, &u)) != MalformedPacket {
		t.Error("UNSUBSCRIBE decoder accepted SUBSCRIBE")
	}
	var a Ack
	for _, h := range []Header{{Type: PUBREL, Flags: 0}, {Type: PUBACK, Flags: 2}, {Type: PUBLISH}, {Type: SUBACK}} {
		if errCode(DecodeAck(h, hx(t, `0001`), v3, &a)) != MalformedPacket {
			t.Errorf("DecodeAck accepted %+v", h)
		}
	}
	var p Publish
	if errCode(DecodePublish(Header{Type: PUBACK}, hx(t, `0001 "t"`), v3, &p)) != MalformedPacket {
		t.Error("DecodePublish accepted PUBACK")
	}
}

func TestEncodersNeverPanic(t *testing.T) {
	// Encoders assume valid input, but out-of-range values only give wrong
	// bytes, never a panic.
	long := make([]byte, 70000)
	var pr Properties
	pr.AddSubscriptionIdentifier(1 << 30)
	pr.ContentType = long
	pr.Set(PropContentType)
	_ = AppendPublish(nil, v5, &Publish{QoS: 7, Topic: long, Props: pr, Payload: long})
	_ = PublishLen(v5, &Publish{QoS: 7, Topic: long, Props: pr})
	_ = AppendConnect(nil, &Connect{ProtocolLevel: 0, WillFlag: true, WillQoS: 9, ClientID: long})
	_ = AppendConnect(nil, &Connect{ProtocolLevel: 5, WillFlag: true, WillProps: pr, UsernameFlag: true, PasswordFlag: true})
	_ = AppendConnack(nil, v5, true, 0xff, &pr)
	_ = AppendConnack(nil, v3, true, 0xff, nil)
	_ = AppendAck(nil, 0xff, v5, 0, 0xff, &pr)
	_ = AppendAck(nil, PUBREL, v5, 0, 0, nil)
	_ = AppendSubscribe(nil, v5, 0, nil, []SubscribeFilter{{Filter: long, QoS: 9, RetainHandling: 9}})
	_ = AppendSubscribe(nil, v5, 0, &pr, nil)
	_ = AppendUnsubscribe(nil, v5, 0, nil, [][]byte{long, nil})
	_ = AppendSuback(nil, v5, 0, nil, nil)
	_ = AppendUnsuback(nil, v5, 0, nil, nil)
	_ = AppendUnsuback(nil, v3, 0, &pr, []byte{1})
	_ = AppendDisconnect(nil, v5, 0xff, &pr)
	_ = AppendDisconnect(nil, v3, 0xff, &pr)
	_ = AppendAuth(nil, 0xff, nil)
	_ = AppendAuth(nil, 0, &pr)
	_ = AppendProperties(nil, nil)
	var empty Properties
	empty.Clear(PropUserProperty)
	empty.Clear(0xff)
	empty.UserProperties(func(k, v []byte) bool { t.Fatal("user property in empty"); return false })
	if empty.SubscriptionIdentifier() != 0 || empty.Has(0xff) {
		t.Fatal("empty properties")
	}
}
