package mqtt

import "testing"

func BenchmarkDecodePublish(b *testing.B) {
	for _, c := range []struct {
		name    string
		version byte
	}{{"v311", Version311}, {"v5props", Version5}} {
		b.Run(c.name, func(b *testing.B) {
			pkt := allocPublishPacketB(c.version)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			var p Publish
			for b.Loop() {
				h, body, _, err := ReadPacket(pkt, 0)
				if err != nil {
					b.Fatal(err)
				}
				if err := DecodePublish(h, body, c.version, &p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendPublish(b *testing.B) {
	for _, c := range []struct {
		name    string
		version byte
	}{{"v311", Version311}, {"v5props", Version5}} {
		b.Run(c.name, func(b *testing.B) {
			pkt := allocPublishPacketB(c.version)
			h, body, _, _ := ReadPacket(pkt, 0)
			var p Publish
			if err := DecodePublish(h, body, c.version, &p); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 0, 512)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendPublish(buf[:0], c.version, &p)
			}
		})
	}
}

func allocPublishPacketB(version byte) []byte {
	p := Publish{QoS: 1, PacketID: 7, Topic: []byte("sensors/room1/temperature"), Payload: []byte(`{"celsius":21.5}`)}
	if version == Version5 {
		p.Props = mkProps(PropPayloadFormatIndicator, 1, PropMessageExpiryInterval, 60,
			PropContentType, "application/json", PropCorrelationData, "abc", PropTopicAlias, 3,
			PropUserProperty, [2]string{"trace", "123"}, PropSubscriptionIdentifier, 9)
	}
	return AppendPublish(nil, version, &p)
}
