package loadtest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gatecast/gatecast/proto/mqtt"
)

// readMQTT reads one whole packet from br (a fake broker's side).
func readMQTT(br *bufio.Reader) (mqtt.Header, []byte, error) {
	var buf []byte
	for {
		h, body, n, err := mqtt.ReadPacket(buf, 0)
		if err == nil {
			return h, body, nil
		}
		if !errors.Is(err, mqtt.ErrIncomplete) {
			return h, nil, err
		}
		want := 1
		if n > 0 {
			want = n - len(buf)
		}
		more := make([]byte, want)
		if _, err := io.ReadFull(br, more); err != nil {
			return h, nil, err
		}
		buf = append(buf, more...)
	}
}

// writeSplit writes p to c in pieces cut at the given offsets, pausing
// between them, so that the client sees a packet over several reads.
func writeSplit(t *testing.T, c net.Conn, p []byte, cuts ...int) {
	t.Helper()
	prev := 0
	for _, cut := range append(cuts, len(p)) {
		if _, err := c.Write(p[prev:cut]); err != nil {
			t.Error(err)
			return
		}
		prev = cut
		time.Sleep(15 * time.Millisecond)
	}
}

// The client's MQTT reads against a fake broker that cuts its packets
// anywhere — inside the fixed header, inside the remaining length, inside
// the payload, several packets in one write — and lets a delivery overtake
// SUBACK: every packet is reassembled in netpoll's buffer and handled
// once; QoS 1 deliveries are acknowledged; a DISCONNECT is counted by its
// reason code.
func TestMQTTReassembly(t *testing.T) {
	tuneNetpoll()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acks := make(chan uint16, 16)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		h, body, err := readMQTT(br)
		var cn mqtt.Connect
		if err != nil || h.Type != mqtt.CONNECT || mqtt.DecodeConnect(body, &cn) != nil || string(cn.Password) != "tok" || cn.ProtocolLevel != 5 || cn.KeepAlive != 60 {
			t.Errorf("CONNECT: %+v %v", h, err)
			return
		}
		writeSplit(t, c, mqtt.AppendConnack(nil, 5, false, 0, nil), 1)
		h, body, err = readMQTT(br)
		var sub mqtt.Subscribe
		if err != nil || h.Type != mqtt.SUBSCRIBE || mqtt.DecodeSubscribe(h, body, 5, &sub) != nil || sub.Count != 2 {
			t.Errorf("SUBSCRIBE: %+v %v", h, err)
			return
		}
		msg := appendMessage(nil, 300, time.Now().UnixNano()) // 300 bytes: a two-byte remaining length
		pub := func(id uint16) []byte {
			return mqtt.AppendPublish(nil, 5, &mqtt.Publish{QoS: 1, PacketID: id, Topic: []byte("lt/r0/d0/cmd"), Payload: msg})
		}
		// A delivery before SUBACK, then SUBACK cut after its first byte.
		writeSplit(t, c, append(pub(1), mqtt.AppendSuback(nil, 5, 1, nil, []byte{1, 1})...), 1, 2, 100)
		// Three deliveries in one stream, cut inside the header, inside
		// the remaining length and inside the payloads.
		three := append(append(pub(2), pub(3)...), pub(4)...)
		writeSplit(t, c, three, 1, 2, 50, len(pub(2))+1, len(pub(2))+2, len(three)-3)
		for range 4 {
			h, body, err := readMQTT(br)
			var a mqtt.Ack
			if err != nil || h.Type != mqtt.PUBACK || mqtt.DecodeAck(h, body, 5, &a) != nil {
				t.Errorf("PUBACK: %+v %v", h, err)
				return
			}
			acks <- a.PacketID
		}
		writeSplit(t, c, mqtt.AppendDisconnect(nil, 5, mqtt.AdministrativeAction, nil), 1)
		// and hang up, as the broker does after DISCONNECT
	}()
	spec := workerSpec{
		Count: 1, Epoch: time.Now().UnixNano(), URLs: []string{"tcp://" + ln.Addr().String()},
		Devices: 1, DevHi: 1, Regions: 1, DeviceTokens: []string{"tok"},
		Size: 64, DialConcurrency: 1, DialTimeout: 5 * time.Second, HandshakeTimeout: 5 * time.Second,
		Protocol: protoMQTT, MQTTVersion: 5, KeepAlive: 60 * time.Second, ClientPrefix: "t", CommandQoS: 1,
	}
	st := driveWorker(t, spec, command{Op: "connect"}, func(st status) bool { return st.Errors["disconnect_0x98"] == 1 })
	if st.Connected != 1 || st.Delivered[kindCommand] != 4 || st.CommandsUnique != 1 || st.CommandsRepeats != 3 {
		t.Fatalf("status %+v", st)
	}
	if len(st.Errors) != 1 || st.Errors["disconnect_0x98"] != 1 {
		t.Fatalf("errors %v", st.Errors)
	}
	for want := uint16(1); want <= 4; want++ {
		if got := <-acks; got != want {
			t.Fatalf("PUBACK %d, want %d", got, want)
		}
	}
}

// A refused CONNACK is counted by its reason code, once, and the dial
// fails.
func TestMQTTRefusedConnack(t *testing.T) {
	tuneNetpoll()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, _, err := readMQTT(br); err == nil {
					_, _ = c.Write(mqtt.AppendConnack(nil, 4, false, mqtt.ConnRefusedBadUsernamePassword, nil))
				}
				_, _ = io.Copy(io.Discard, br)
			}()
		}
	}()
	spec := workerSpec{
		Count: 1, Epoch: time.Now().UnixNano(), URLs: []string{"tcp://" + ln.Addr().String()},
		Devices: 2, DevHi: 2, Regions: 1, DeviceTokens: []string{"bad"},
		Size: 64, DialConcurrency: 2, DialTimeout: 5 * time.Second, HandshakeTimeout: 5 * time.Second,
		Protocol: protoMQTT, MQTTVersion: 4, KeepAlive: 60 * time.Second, ClientPrefix: "t", CommandQoS: 1,
	}
	st := driveWorker(t, spec, command{Op: "connect"}, nil)
	if st.Connected != 0 || st.Failed != 2 || st.Errors["connack_0x04"] != 2 || len(st.Errors) != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestMQTTReceivePathAllocs: reading a QoS 0 delivery (a dashboard) or a
// QoS 1 delivery (a device, which answers PUBACK) from netpoll's buffer,
// parsing its stamp and recording it allocates nothing.
func TestMQTTReceivePathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	w := newTestWorker(t, 1)
	w.spec.Protocol, w.spec.MQTTVersion, w.spec.CommandQoS = protoMQTT, 5, 1
	w.cmdSeen = make([]atomic.Uint32, 1)
	for _, tc := range []struct {
		dc  *devConn
		qos byte
	}{{&w.conns[len(w.conns)-1], 0}, {&w.conns[0], 1}} {
		const runs = 1000
		lb := netpoll.NewLinkBuffer()
		pkt := mqtt.AppendPublish(nil, 5, &mqtt.Publish{QoS: tc.qos, PacketID: 7, Topic: []byte("lt/r0/d0/telemetry"), Payload: appendMessage(nil, 64, time.Now().UnixNano())})
		for range runs + 10 {
			buf, _ := lb.Malloc(len(pkt))
			copy(buf, pkt)
		}
		if err := lb.Flush(); err != nil {
			t.Fatal(err)
		}
		var buf [ackBatch + 16]byte
		read := func() {
			acks := buf[:0]
			if err := tc.dc.readPacket(nil, lb, &acks); err != nil {
				t.Fatal(err)
			}
			if want := int(tc.qos) * 4; len(acks) != want {
				t.Fatalf("QoS %d: %d bytes of acknowledgement", tc.qos, len(acks))
			}
		}
		for range 10 {
			read()
		}
		allocs := testing.AllocsPerRun(runs-1, read)
		if allocs != 0 {
			t.Fatalf("QoS %d: %v allocations per received message", tc.qos, allocs)
		}
	}
	_, _, delivered := w.totals()
	if delivered[kindTelemetry] != 1010 || delivered[kindCommand] != 1010 || w.cmdSeen[0].Load() != 1010 {
		t.Fatalf("delivered %v, device saw %d", delivered, w.cmdSeen[0].Load())
	}
}

// TestMQTTPublishAllocs: building a stamped PUBLISH into a publisher's
// buffers allocates nothing once they have grown.
func TestMQTTPublishAllocs(t *testing.T) {
	w := newTestWorker(t, 1)
	w.spec.Protocol, w.spec.MQTTVersion = protoMQTT, 5
	var topic, msg, frame []byte
	build := func() {
		topic = appendDeviceTopic(topic[:0], 3, 12345, "telemetry")
		msg = appendMessage(msg[:0], 64, time.Now().UnixNano())
		frame = w.appendMQTTPublish(frame[:0], topic, msg, 1)
	}
	build()
	if allocs := testing.AllocsPerRun(1000, build); allocs != 0 {
		t.Fatalf("%v allocations per published packet", allocs)
	}
}
