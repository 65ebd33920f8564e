package mqtt

import (
	"bytes"
	"testing"

	"github.com/gatecast/gatecast/broker"
	packet "github.com/gatecast/gatecast/proto/mqtt"
)

// The shared encodings are appendPublish's QoS 0 packet, byte for byte,
// whatever the sizes (one- to three-byte remaining lengths, properties,
// WebSocket header lengths).
func TestSharedEncodings(t *testing.T) {
	for _, size := range []int{0, 1, 100, 123, 124, 125, 126, 200, 16000, 70000, 200000} {
		for _, props := range [][]byte{nil, {packet.PropPayloadFormatIndicator, 1}, bytes.Repeat([]byte{packet.PropContentType, 0, 1, 'x'}, 40)} {
			m := &broker.Message{Topic: "a/b/c", Payload: bytes.Repeat([]byte{'p'}, size), Props: props}
			for _, v := range []byte{packet.Version311, packet.Version5} {
				for _, wsFraming := range []bool{false, true} {
					want := appendPublish([]byte("x"), v, wsFraming, m, 0, 0, false, false, nil)
					got := encoders[sharedEncoding(v, wsFraming)]([]byte("x"), m)
					if !bytes.Equal(got, want) {
						t.Fatalf("size %d, props %d, v%d, ws %v: shared encoding differs", size, len(props), v, wsFraming)
					}
				}
			}
		}
	}
}
