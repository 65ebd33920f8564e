package mqtt

import (
	"testing"

	"github.com/gatecast/gatecast/acl"
	packet "github.com/gatecast/gatecast/proto/mqtt"
)

// FuzzConnInput feeds arbitrary bytes to a connection, before and after a
// valid CONNECT, whole and split in two: the adapter never panics, and
// whatever it writes back is well-formed MQTT.
func FuzzConnInput(f *testing.F) {
	e := newEnvFuzz(f)
	_, secret := e.token(f, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	connect := func(v byte) []byte {
		p := packet.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: v, CleanStart: true, KeepAlive: 30,
			ClientID: []byte("fz"), PasswordFlag: true, UsernameFlag: true, Username: []byte("u"), Password: []byte(secret)}
		return packet.AppendConnect(nil, &p)
	}
	seeds := [][]byte{
		packet.AppendSubscribe(nil, 5, 1, nil, []packet.SubscribeFilter{{Filter: []byte("a/#"), QoS: 2}}),
		packet.AppendPublish(nil, 5, &packet.Publish{Topic: []byte("a/b"), Payload: []byte("x"), QoS: 2, PacketID: 7}),
		packet.AppendAck(nil, packet.PUBREL, 5, 7, 0, nil),
		packet.AppendUnsubscribe(nil, 5, 2, nil, [][]byte{[]byte("a/#")}),
		packet.AppendPingreq(nil),
		packet.AppendDisconnect(nil, 5, 0, nil),
		{0x30, 0x80, 0x80, 0x80, 0x80, 0x01},
		{0xf0, 0x00},
		{0x82, 0x05, 0x00, 0x01, 0x00, 0x01, '#'},
	}
	for _, s := range seeds {
		f.Add(byte(5), true, 3, s)
		f.Add(byte(4), false, 0, s)
	}
	f.Fuzz(func(t *testing.T, version byte, afterConnect bool, cut int, data []byte) {
		if version != 4 && version != 5 {
			version = 5
		}
		tr := newFakeTransport()
		c := e.srv.NewConn(tr, false, "fuzz")
		if afterConnect {
			c.OnMessage(false, connect(version))
		}
		if cut < 0 {
			cut = -cut
		}
		if len(data) > 0 {
			cut %= len(data) + 1
		} else {
			cut = 0
		}
		c.OnMessage(false, data[:cut])
		c.OnMessage(false, data[cut:])
		closeWait(c)
		tr.mu.Lock()
		out := tr.out
		tr.mu.Unlock()
		for len(out) > 0 {
			_, _, n, err := packet.ReadPacket(out, 0)
			if err != nil {
				t.Fatalf("the server wrote a bad packet: %v", err)
			}
			out = out[n:]
		}
	})
}
