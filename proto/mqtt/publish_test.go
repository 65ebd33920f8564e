package mqtt

import (
	"bytes"
	"fmt"
	"testing"
)

func dumpPublish(p *Publish) string {
	return fmt.Sprintf("PUBLISH dup=%v qos=%d retain=%v topic=%q id=%d props=%s payload=%q",
		p.Dup, p.QoS, p.Retain, p.Topic, p.PacketID, dumpProps(&p.Props), p.Payload)
}

var publishVectors = []struct {
	name    string
	version byte
	hex     string
	p       Publish
}{
	{"v3 qos0", Version311, `30 07 0003 "a/b" "hi"`,
		Publish{Topic: []byte("a/b"), Payload: []byte("hi")}},
	// MQTT 3.1.1 section 3.3.2.3: topic "a/b", packet identifier 10.
	{"v3 qos1 spec example", Version311, `32 08 0003 "a/b" 000a "x"`,
		Publish{QoS: 1, Topic: []byte("a/b"), PacketID: 10, Payload: []byte("x")}},
	{"v3 qos2 dup retain empty payload", Version311, `3d 05 0001 "t" ffff`,
		Publish{Dup: true, QoS: 2, Retain: true, Topic: []byte("t"), PacketID: 0xffff}},
	{"v3 utf8 topic", Version311, `30 08 0006 e282ac "/" c3a9 `,
		Publish{Topic: []byte("€/é")}},
	{"v31 qos0", Version31, `31 05 0003 "a/b"`,
		Publish{Retain: true, Topic: []byte("a/b")}},
	{"v5 qos0 no props", Version5, `30 08 0003 "a/b" 00 "hi"`,
		Publish{Topic: []byte("a/b"), Payload: []byte("hi")}},
	{"v5 qos1 every publish property", Version5,
		`32 30 0003 "a/b" 0001 26
		 01 01 | 02 0000003c | 03 0004 "json" | 08 0001 "r" | 09 0002 0102 | 23 0005 |
		 26 0001 "k" 0001 "v" | 0b 01 | 0b ac02
		 "hi"`,
		Publish{QoS: 1, Topic: []byte("a/b"), PacketID: 1, Payload: []byte("hi"),
			Props: mkProps(PropPayloadFormatIndicator, 1, PropMessageExpiryInterval, 60,
				PropContentType, "json", PropResponseTopic, "r", PropCorrelationData, "\x01\x02",
				PropTopicAlias, 5, PropUserProperty, [2]string{"k", "v"},
				PropSubscriptionIdentifier, 1, PropSubscriptionIdentifier, 300)}},
	{"v5 empty topic with alias", Version5, `30 07 0000 03 230001 "p"`,
		Publish{Topic: []byte{}, Payload: []byte("p"), Props: mkProps(PropTopicAlias, 1)}},
	{"v5 repeated user property keys", Version5,
		`30 12 0001 "t" 0e 26 0001 "a" 0001 "1" 26 0001 "a" 0001 "2"`,
		Publish{Topic: []byte("t"),
			Props: mkProps(PropUserProperty, [2]string{"a", "1"}, PropUserProperty, [2]string{"a", "2"})}},
	{"v5 payload format 0 present", Version5, `30 06 0001 "t" 02 0100`,
		Publish{Topic: []byte("t"), Props: mkProps(PropPayloadFormatIndicator, 0)}},
}

func TestPublishVectors(t *testing.T) {
	for _, v := range publishVectors {
		t.Run(v.name, func(t *testing.T) {
			want := hx(t, v.hex)
			if got := AppendPublish(nil, v.version, &v.p); !bytes.Equal(got, want) {
				t.Errorf("encode:\n got % x\nwant % x", got, want)
			}
			if n := PublishLen(v.version, &v.p); n != len(want) {
				t.Errorf("PublishLen = %d, want %d", n, len(want))
			}
			h, body, n, err := ReadPacket(want, 0)
			if err != nil || n != len(want) || h.Type != PUBLISH || h.Remaining != len(body) {
				t.Fatalf("ReadPacket: %+v n=%d err=%v", h, n, err)
			}
			var p Publish
			if err := DecodePublish(h, body, v.version, &p); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got, exp := dumpPublish(&p), dumpPublish(&v.p); got != exp {
				t.Errorf("decode:\n got %s\nwant %s", got, exp)
			}
		})
	}
}

// publishErrors lists PUBLISH packets every decoder must refuse, with the
// reason code.
var publishErrors = []struct {
	name    string
	version byte
	hex     string
	code    byte
}{
	{"qos 3", Version311, `36 05 0001 "t" 0001`, MalformedPacket},
	{"dup with qos 0", Version311, `38 03 0001 "t"`, MalformedPacket},
	{"packet id 0", Version311, `32 05 0001 "t" 0000`, ProtocolError},
	{"packet id 0 v5", Version5, `34 06 0001 "t" 0000 00`, ProtocolError},
	{"missing packet id", Version311, `32 03 0001 "t"`, MalformedPacket},
	{"topic length beyond body", Version311, `30 03 0005 "t"`, MalformedPacket},
	{"no topic length", Version311, `30 01 00`, MalformedPacket},
	{"plus wildcard", Version311, `30 05 0003 "a/+"`, TopicNameInvalid},
	{"hash wildcard", Version5, `30 04 0001 "#" 00`, TopicNameInvalid},
	{"wildcard after utf8", Version311, `30 05 0003 c3a9 "#"`, TopicNameInvalid},
	{"invalid utf8 topic", Version311, `30 03 0001 ff`, MalformedPacket},
	{"U+0000 in topic", Version311, `30 04 0002 "a" 00`, MalformedPacket},
	{"surrogate in topic", Version5, `30 06 0003 eda080 00`, MalformedPacket},
	{"overlong NUL in topic", Version311, `30 04 0002 c080`, MalformedPacket},
	{"empty topic v3", Version311, `30 02 0000`, TopicNameInvalid},
	{"empty topic v5 without alias", Version5, `30 03 0000 00`, ProtocolError},
	{"v5 missing property length", Version5, `30 03 0001 "t"`, MalformedPacket},
	{"v5 property length beyond body", Version5, `30 05 0001 "t" 05 01`, MalformedPacket},
	{"v5 property length not minimal", Version5, `30 05 0001 "t" 8000`, MalformedPacket},
	{"v5 unknown property", Version5, `30 06 0001 "t" 02 0400`, MalformedPacket},
	{"v5 property not allowed in PUBLISH", Version5, `30 09 0001 "t" 05 1100000001`, MalformedPacket},
	{"v5 truncated property value", Version5, `30 07 0001 "t" 03 020000`, MalformedPacket},
	{"v5 duplicate payload format", Version5, `30 08 0001 "t" 04 0101 0101`, ProtocolError},
	{"v5 duplicate topic alias", Version5, `30 0a 0001 "t" 06 230001 230002`, ProtocolError},
	{"v5 payload format 2", Version5, `30 06 0001 "t" 02 0102`, ProtocolError},
	{"v5 topic alias 0", Version5, `30 07 0001 "t" 03 230000`, ProtocolError},
	{"v5 subscription id 0", Version5, `30 06 0001 "t" 02 0b00`, ProtocolError},
	{"v5 subscription id not minimal", Version5, `30 07 0001 "t" 03 0b8000`, MalformedPacket},
	{"v5 subscription id 5 bytes", Version5, `30 09 0001 "t" 05 0b80808080`, MalformedPacket},
	{"v5 bad utf8 content type", Version5, `30 08 0001 "t" 04 030001ff`, MalformedPacket},
	{"v5 NUL in user property value", Version5, `30 0b 0001 "t" 07 260001 "k" 000100`, MalformedPacket},
	{"v5 bad utf8 user property key", Version5, `30 0b 0001 "t" 07 260001 ff 000176`, MalformedPacket},
	{"v5 wildcard response topic", Version5, `30 08 0001 "t" 04 080001 "#"`, ProtocolError},
	{"v5 property id as 2-byte varint", Version5, `30 07 0001 "t" 03 810101`, MalformedPacket},
	{"not a PUBLISH", Version311, `40 02 0001`, MalformedPacket},
}

func TestPublishErrors(t *testing.T) {
	for _, v := range publishErrors {
		t.Run(v.name, func(t *testing.T) {
			b := hx(t, v.hex)
			h, body, _, err := ReadPacket(b, 0)
			if err != nil {
				t.Fatalf("ReadPacket: %v", err)
			}
			if h.Remaining != len(b)-2 {
				t.Fatalf("vector length byte wrong: remaining %d, have %d", h.Remaining, len(b)-2)
			}
			var p Publish
			err = DecodePublish(h, body, v.version, &p)
			if code := errCode(err); code != v.code {
				t.Fatalf("got %v (code %#x), want code %#x", err, code, v.code)
			}
			if e := err.Error(); !bytes.HasPrefix([]byte(e), []byte("mqtt: ")) {
				t.Errorf("error text %q", e)
			}
		})
	}
}

func TestAppendPublishReuse(t *testing.T) {
	// Encoding a decoded packet writes the same bytes.
	for _, v := range publishVectors {
		b := hx(t, v.hex)
		h, body, _, _ := ReadPacket(b, 0)
		var p Publish
		if err := DecodePublish(h, body, v.version, &p); err != nil {
			t.Fatal(err)
		}
		if got := AppendPublish(make([]byte, 3, 64), v.version, &p); !bytes.Equal(got[3:], b) {
			t.Errorf("%s: re-encode\n got % x\nwant % x", v.name, got[3:], b)
		}
	}
}

func TestPropertiesAddAfterDecode(t *testing.T) {
	// Adding to decoded properties must not write into the input buffer.
	b := hx(t, `30 12 0001 "t" 07 260001 "k" 000176 "payload"`)
	orig := append([]byte(nil), b...)
	h, body, _, _ := ReadPacket(b, 0)
	var p Publish
	if err := DecodePublish(h, body, Version5, &p); err != nil {
		t.Fatal(err)
	}
	p.Props.AddUserProperty([]byte("k2"), []byte("v2"))
	p.Props.AddSubscriptionIdentifier(7)
	if !bytes.Equal(b, orig) {
		t.Fatalf("input modified:\n% x\n% x", b, orig)
	}
	want := `{ user("k"="v") user("k2"="v2") subid=7 }`
	if got := dumpProps(&p.Props); got != want {
		t.Fatalf("got %s want %s", got, want)
	}
	p.Props.Clear(PropUserProperty)
	if got := dumpProps(&p.Props); got != `{ subid=7 }` {
		t.Fatalf("after clear: %s", got)
	}
	if p.Props.SubscriptionIdentifier() != 7 {
		t.Fatal("SubscriptionIdentifier")
	}
	p.Props.Reset()
	if !p.Props.Empty() || dumpProps(&p.Props) != "{ }" {
		t.Fatal("reset")
	}
}

func TestPropertiesSetClear(t *testing.T) {
	var p Properties
	p.Set(PropUserProperty) // ignored: multi-valued
	p.Set(0x04)             // ignored: undefined
	p.Set(0x7f)
	if !p.Empty() {
		t.Fatal("Set accepted an invalid identifier")
	}
	p.MessageExpiryInterval = 0
	p.Set(PropMessageExpiryInterval)
	if !p.Has(PropMessageExpiryInterval) || PropertiesLen(&p) != 6 {
		t.Fatalf("len %d", PropertiesLen(&p))
	}
	if got := AppendProperties(nil, &p); !bytes.Equal(got, []byte{5, 2, 0, 0, 0, 0}) {
		t.Fatalf("% x", got)
	}
	p.Clear(PropMessageExpiryInterval)
	if !p.Empty() || PropertiesLen(&p) != 1 || PropertiesLen(nil) != 1 {
		t.Fatal("clear")
	}
}

func TestPropertiesAddAfterInterleavedDecode(t *testing.T) {
	b := hx(t, `30 14 0001 "t" 10 260001 "a" 0001 "1" 0101 260001 "b" 0001 "2"`)
	orig := append([]byte(nil), b...)
	h, body, _, _ := ReadPacket(b, 0)
	var p Publish
	if err := DecodePublish(h, body, Version5, &p); err != nil {
		t.Fatal(err)
	}
	p.Props.AddUserProperty([]byte("c"), []byte("3"))
	if !bytes.Equal(b, orig) {
		t.Fatal("input modified")
	}
	want := hx(t, `30 1b 0001 "t" 17 0101 260001 "a" 0001 "1" 260001 "b" 0001 "2" 260001 "c" 0001 "3"`)
	if got := AppendPublish(nil, Version5, &p); !bytes.Equal(got, want) {
		t.Fatalf("\n got % x\nwant % x", got, want)
	}
	if PublishLen(Version5, &p) != len(want) {
		t.Fatal("PublishLen")
	}
	p.Props.Clear(PropUserProperty)
	p.Props.AddUserProperty([]byte("d"), []byte("4"))
	want = hx(t, `30 0d 0001 "t" 09 0101 260001 "d" 0001 "4"`)
	if got := AppendPublish(nil, Version5, &p); !bytes.Equal(got, want) {
		t.Fatalf("after clear\n got % x\nwant % x", got, want)
	}
}
