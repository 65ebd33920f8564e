//go:build !race

// The race detector instruments memory accesses and changes allocation
// counts, so the zero-allocation proofs run only without it.

package mqtt

import "testing"

func allocPublishPacket(_ testing.TB, version byte) []byte { return allocPublishPacketB(version) }

func TestDecodePublishAllocs(t *testing.T) {
	for _, version := range []byte{Version311, Version5} {
		b := allocPublishPacket(t, version)
		var p Publish
		n := testing.AllocsPerRun(1000, func() {
			h, body, _, err := ReadPacket(b, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := DecodePublish(h, body, version, &p); err != nil {
				t.Fatal(err)
			}
			for k, v := range p.Props.UserProperties {
				_, _ = k, v
			}
			for id := range p.Props.SubscriptionIdentifiers {
				_ = id
			}
			_ = p.Props.SubscriptionIdentifier()
		})
		if n != 0 {
			t.Errorf("version %d: %v allocs per decode", version, n)
		}
	}
}

func TestAppendPublishAllocs(t *testing.T) {
	for _, version := range []byte{Version311, Version5} {
		src := allocPublishPacket(t, version)
		h, body, _, _ := ReadPacket(src, 0)
		var p Publish
		if err := DecodePublish(h, body, version, &p); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 0, 256)
		n := testing.AllocsPerRun(1000, func() {
			buf = buf[:0]
			size := PublishLen(version, &p)
			buf = AppendPublish(buf, version, &p)
			if len(buf) != size {
				t.Fatal("PublishLen mismatch")
			}
		})
		if n != 0 {
			t.Errorf("version %d: %v allocs per encode", version, n)
		}
	}
}

func TestReadPacketAllocs(t *testing.T) {
	b := allocPublishPacket(t, Version5)
	n := testing.AllocsPerRun(1000, func() {
		if _, _, _, err := ReadPacket(b, 0); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := ReadPacket(b[:3], 0); err != ErrIncomplete {
			t.Fatal(err)
		}
		if _, _, _, err := ReadPacket(b, 4); err != ErrPacketTooLarge {
			t.Fatal(err)
		}
		if _, _, _, err := ReadPacket([]byte{0x30, 0x80, 0}, 0); err == nil {
			t.Fatal("accepted")
		}
	})
	if n != 0 {
		t.Errorf("%v allocs per ReadPacket", n)
	}
}

func TestDecodePublishErrorAllocs(t *testing.T) {
	// Refusing a packet allocates nothing either: errors are shared values.
	b := []byte{0x30, 0x05, 0x00, 0x01, 't', 0x01, 0x02}
	h, body, _, _ := ReadPacket(b, 0)
	var p Publish
	n := testing.AllocsPerRun(1000, func() {
		if DecodePublish(h, body, Version5, &p) == nil {
			t.Fatal("accepted")
		}
	})
	if n != 0 {
		t.Errorf("%v allocs per refused decode", n)
	}
}

func TestDecodeSubscribeAllocs(t *testing.T) {
	var filters []SubscribeFilter
	for _, f := range []string{"a/#", "b/+/c", "$share/g/d"} {
		filters = append(filters, SubscribeFilter{Filter: []byte(f), QoS: 1, NoLocal: true})
	}
	var props Properties
	props.AddSubscriptionIdentifier(42)
	props.AddUserProperty([]byte("k"), []byte("v"))
	b := AppendSubscribe(nil, Version5, 9, &props, filters)
	var s Subscribe
	n := testing.AllocsPerRun(1000, func() {
		h, body, _, err := ReadPacket(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := DecodeSubscribe(h, body, Version5, &s); err != nil {
			t.Fatal(err)
		}
		count := 0
		for f := range s.Filters {
			count += int(f.QoS)
		}
		if count != 3 || s.Props.SubscriptionIdentifier() != 42 {
			t.Fatal("filters")
		}
	})
	if n != 0 {
		t.Errorf("%v allocs per SUBSCRIBE decode", n)
	}
}

func TestAckAllocs(t *testing.T) {
	buf := make([]byte, 0, 64)
	var a Ack
	var props Properties
	props.ReasonString = []byte("quota")
	props.Set(PropReasonString)
	n := testing.AllocsPerRun(1000, func() {
		buf = AppendAck(buf[:0], PUBACK, Version5, 7, QuotaExceeded, &props)
		h, body, _, err := ReadPacket(buf, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := DecodeAck(h, body, Version5, &a); err != nil || a.Code != QuotaExceeded {
			t.Fatal(err)
		}
		buf = AppendSuback(buf[:0], Version5, 7, nil, []byte{1, 2})
		buf = AppendPingresp(buf[:0])
		buf = AppendDisconnect(buf[:0], Version5, ServerShuttingDown, nil)
	})
	if n != 0 {
		t.Errorf("%v allocs", n)
	}
}
