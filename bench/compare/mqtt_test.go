package compare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestMQTTEncodeMatchesTheSpecification(t *testing.T) {
	// CONNECT, MQTT 3.1.1 §3.1: "MQTT", level 4, clean session, keep-alive 60, client id "ab".
	b, err := appendMQTTConnect(nil, "ab", 60)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 2, 'a', 'b'}
	if !bytes.Equal(b, want) {
		t.Errorf("CONNECT = % x, want % x", b, want)
	}
	// SUBSCRIBE, §3.8: fixed header flags 0010, packet id, (filter, QoS) pairs.
	b, err = appendMQTTSubscribe(nil, 1, []string{"a/+", "b"})
	if err != nil {
		t.Fatal(err)
	}
	want = []byte{0x82, 12, 0, 1, 0, 3, 'a', '/', '+', 0, 0, 1, 'b', 0}
	if !bytes.Equal(b, want) {
		t.Errorf("SUBSCRIBE = % x, want % x", b, want)
	}
	// PUBLISH QoS 0, §3.3: no packet identifier.
	b, err = appendMQTTPublish(nil, "a/b", []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	want = []byte{0x30, 7, 0, 3, 'a', '/', 'b', 'h', 'i'}
	if !bytes.Equal(b, want) {
		t.Errorf("PUBLISH = % x, want % x", b, want)
	}
	// Remaining length of 321 bytes takes two bytes: 0xc1 0x02 (§2.2.3).
	b, _ = appendMQTTPublish(nil, "t", bytes.Repeat([]byte{'x'}, 318))
	if b[1] != 0xc1 || b[2] != 0x02 {
		t.Errorf("remaining length 321 encoded as % x", b[1:3])
	}
}

func TestMQTTEncodeRefusesWhatCannotBeSent(t *testing.T) {
	long := strings.Repeat("a", 70000)
	if _, err := appendMQTTConnect(nil, long, 60); err == nil {
		t.Error("CONNECT with a 70,000-byte client id accepted")
	}
	if _, err := appendMQTTSubscribe(nil, 1, nil); err == nil {
		t.Error("SUBSCRIBE without filters accepted")
	}
	if _, err := appendMQTTSubscribe(nil, 1, []string{""}); err == nil {
		t.Error("SUBSCRIBE with an empty filter accepted")
	}
	if _, err := appendMQTTPublish(nil, "", nil); err == nil {
		t.Error("PUBLISH with an empty topic accepted")
	}
	if _, err := appendMQTTPublish(nil, "a\xffb", nil); err == nil {
		t.Error("PUBLISH with a non-UTF-8 topic accepted")
	}
	if _, err := appendMQTTPublish(nil, long, nil); err == nil {
		t.Error("PUBLISH with a 70,000-byte topic accepted")
	}
}

func TestMQTTParse(t *testing.T) {
	pub, _ := appendMQTTPublish(nil, "a/b", []byte("hello"))
	for _, tc := range []struct {
		name string
		in   []byte
		want mqttPacket
	}{
		{"CONNACK", []byte{0x20, 2, 0, 0}, mqttPacket{Type: mqttConnack}},
		{"CONNACK session present, refused", []byte{0x20, 2, 1, 5}, mqttPacket{Type: mqttConnack, SessionPresent: true, ReturnCode: 5}},
		{"SUBACK", []byte{0x90, 4, 0, 7, 0, 0x80}, mqttPacket{Type: mqttSuback, PacketID: 7, Codes: []byte{0, 0x80}}},
		{"PUBLISH QoS 0", pub, mqttPacket{Type: mqttPublish, Topic: []byte("a/b"), Payload: []byte("hello")}},
		{"PUBLISH QoS 1", []byte{0x32, 6, 0, 1, 't', 0, 9, 'p'}, mqttPacket{Type: mqttPublish, Flags: 2, Topic: []byte("t"), PacketID: 9, Payload: []byte("p")}},
		{"PUBLISH empty payload", []byte{0x30, 3, 0, 1, 't'}, mqttPacket{Type: mqttPublish, Topic: []byte("t"), Payload: []byte{}}},
		{"PINGRESP", []byte{0xd0, 0}, mqttPacket{Type: mqttPingresp}},
		{"PUBREL", []byte{0x62, 2, 0, 3}, mqttPacket{Type: mqttPubrel, Flags: 2, PacketID: 3}},
		{"UNSUBACK", []byte{0xb0, 2, 0, 4}, mqttPacket{Type: mqttUnsuback, PacketID: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append(append([]byte(nil), tc.in...), 0xd0, 0) // a following packet is not consumed
			n, p, err := parseMQTT(in)
			if err != nil || n != len(tc.in) {
				t.Fatalf("parseMQTT = %d, %v; want %d", n, err, len(tc.in))
			}
			if p.Type != tc.want.Type || p.Flags != tc.want.Flags || p.SessionPresent != tc.want.SessionPresent ||
				p.ReturnCode != tc.want.ReturnCode || p.PacketID != tc.want.PacketID ||
				!bytes.Equal(p.Topic, tc.want.Topic) || !bytes.Equal(p.Payload, tc.want.Payload) || !bytes.Equal(p.Codes, tc.want.Codes) {
				t.Fatalf("parseMQTT = %+v, want %+v", p, tc.want)
			}
			for i := range len(tc.in) {
				if n, _, err := parseMQTT(tc.in[:i]); n != 0 || err != nil {
					t.Fatalf("prefix of %d bytes: %d, %v; want incomplete", i, n, err)
				}
			}
		})
	}
}

func TestMQTTParseRefusesMalformedPackets(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"five length bytes", []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}},
		{"non-minimal length", []byte{0x30, 0x83, 0x00, 0, 1, 't'}},
		{"larger than the bound", []byte{0x30, 0xff, 0xff, 0xff, 0x7f}},
		{"QoS 3", []byte{0x36, 3, 0, 1, 't'}},
		{"topic longer than the packet", []byte{0x30, 3, 0, 5, 't'}},
		{"topic not UTF-8", []byte{0x30, 3, 0, 1, 0xff}},
		{"QoS 1 without packet id", []byte{0x32, 4, 0, 1, 't', 0}},
		{"CONNACK wrong length", []byte{0x20, 3, 0, 0, 0}},
		{"CONNACK reserved flags", []byte{0x20, 2, 2, 0}},
		{"SUBACK without codes", []byte{0x90, 2, 0, 1}},
		{"PINGRESP with body", []byte{0xd0, 1, 0}},
		{"PUBACK wrong flags", []byte{0x41, 2, 0, 1}},
		{"CONNECT from a server", []byte{0x10, 0}},
		{"SUBSCRIBE from a server", []byte{0x82, 0}},
		{"reserved type 0", []byte{0x00, 0}},
		{"reserved type 15", []byte{0xf0, 0}},
	} {
		if n, _, err := parseMQTT(tc.in); err == nil {
			t.Errorf("%s: parseMQTT(% x) = %d, no error", tc.name, tc.in, n)
		}
	}
	if _, _, err := parseMQTT([]byte{0x30, 0xff, 0xff, 0xff, 0x7f}); !errors.Is(err, errMQTTTooLarge) {
		t.Errorf("oversized packet: %v, want errMQTTTooLarge", err)
	}
}

func TestMQTTWireEvents(t *testing.T) {
	w := mqttWire{}
	if _, ev, err := w.parse([]byte{0x20, 2, 0, 0}); err != nil || ev.kind != evAck || ev.ack != mqttConnack {
		t.Errorf("CONNACK accepted: %+v, %v", ev, err)
	}
	if _, _, err := w.parse([]byte{0x20, 2, 0, 5}); err == nil {
		t.Error("CONNACK with return code 5 (not authorised) is not an error")
	}
	if _, _, err := w.parse([]byte{0x90, 3, 0, 1, 0x80}); err == nil {
		t.Error("SUBACK 0x80 (failure) is not an error")
	}
	if _, _, err := w.parse([]byte{0x32, 6, 0, 1, 't', 0, 9, 'p'}); err == nil {
		t.Error("a QoS 1 delivery on a QoS 0 subscription is not an error")
	}
	if n, ev, err := w.parse([]byte{0x30, 4, 0, 1, 't', 'p'}); err != nil || n != 6 || ev.kind != evMessage ||
		string(ev.topic) != "t" || string(ev.payload) != "p" {
		t.Errorf("PUBLISH: %d %+v %v", n, ev, err)
	}
	if b := w.appendKeepAlive(nil); !bytes.Equal(b, []byte{0xc0, 0}) {
		t.Errorf("keep-alive = % x, want PINGREQ c0 00", b)
	}
}

// FuzzMQTTParse: the decoder never panics and never reads past its input;
// a packet it accepts is refused by none of its prefixes (they are
// incomplete), and a QoS 0 PUBLISH it accepts re-encodes to the same bytes.
func FuzzMQTTParse(f *testing.F) {
	pub, _ := appendMQTTPublish(nil, "bench/fanout", appendPayload(nil, 64, 1732461234567890123))
	f.Add(pub)
	f.Add([]byte{0x20, 2, 0, 0})
	f.Add([]byte{0x90, 3, 0, 1, 0})
	f.Add([]byte{0xd0, 0})
	f.Add([]byte{0x32, 6, 0, 1, 't', 0, 9, 'p'})
	f.Add([]byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, p, err := parseMQTT(b)
		if err != nil {
			return
		}
		if n < 0 || n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		if n == 0 {
			return
		}
		for i := range n {
			if m, _, err := parseMQTT(b[:i]); m != 0 || err != nil {
				t.Fatalf("prefix %d of an accepted packet: %d, %v", i, m, err)
			}
		}
		if p.Type == mqttPublish && p.Flags == 0 && len(p.Topic) > 0 {
			re, err := appendMQTTPublish(nil, string(p.Topic), p.Payload)
			if err != nil || !bytes.Equal(re, b[:n]) {
				t.Fatalf("re-encoded % x (%v), decoded from % x", re, err, b[:n])
			}
		}
	})
}

// FuzzMQTTPublishRoundTrip: whatever the encoder accepts decodes to the
// same topic and payload.
func FuzzMQTTPublishRoundTrip(f *testing.F) {
	f.Add("bench/fanin/7", []byte(`{"t":1,"p":"x"}`))
	f.Add("a", []byte{})
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		b, err := appendMQTTPublish(nil, topic, payload)
		if err != nil {
			return
		}
		n, p, err := parseMQTT(b)
		if err != nil || n != len(b) || string(p.Topic) != topic || !bytes.Equal(p.Payload, payload) {
			t.Fatalf("round trip of %q, %q: n=%d %+v %v", topic, payload, n, p, err)
		}
	})
}

func TestMQTTConnectWithCredentials(t *testing.T) {
	// §3.1.2.3: User Name flag 0x80, Password flag 0x40, Clean Session
	// 0x02; the payload is client id, user name, password, in that order.
	b, err := appendMQTTConnectAuth(nil, "ab", 60, "u", "pw")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x10, 21, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xc2, 0, 60, 0, 2, 'a', 'b', 0, 1, 'u', 0, 2, 'p', 'w'}
	if !bytes.Equal(b, want) {
		t.Errorf("CONNECT = % x, want % x", b, want)
	}
	// A user name alone sets only its flag.
	b, err = appendMQTTConnectAuth(nil, "ab", 60, "u", "")
	if err != nil || b[9] != 0x82 || b[1] != 17 {
		t.Errorf("CONNECT with a user name only = % x, %v", b, err)
	}
	// No credentials: the plain CONNECT.
	plain, _ := appendMQTTConnect(nil, "ab", 60)
	if b, _ := appendMQTTConnectAuth(nil, "ab", 60, "", ""); !bytes.Equal(b, plain) {
		t.Errorf("CONNECT without credentials = % x, want % x", b, plain)
	}
	// A 200-byte password: the remaining length takes two bytes.
	long := strings.Repeat("s", 200)
	b, err = appendMQTTConnectAuth(nil, "ab", 60, "bench", long)
	if err != nil {
		t.Fatal(err)
	}
	if rl := 10 + 2 + 2 + 2 + 5 + 2 + 200; b[1] != byte(rl%128|0x80) || b[2] != byte(rl/128) || len(b) != 3+rl {
		t.Errorf("remaining length of % x (%d bytes)", b[1:3], len(b))
	}
	if !bytes.HasSuffix(b, append([]byte{0, 200}, long...)) {
		t.Error("the password is not the last field, length-prefixed")
	}
	for _, tc := range []struct{ user, pass string }{
		{"", "secret"},                    // 3.1.1: no password without a user name
		{"a\xffb", ""},                    // not UTF-8
		{strings.Repeat("u", 70000), ""},  // too long
		{"u", strings.Repeat("p", 70000)}, // too long
	} {
		if _, err := appendMQTTConnectAuth(nil, "ab", 60, tc.user, tc.pass); err == nil {
			t.Errorf("CONNECT with user %.10q, password %.10q accepted", tc.user, tc.pass)
		}
	}
}

func TestMQTTTransportFromTheURL(t *testing.T) {
	for _, tc := range []struct {
		url, transport, addr string
	}{
		{"tcp://127.0.0.1:1883", "tcp", "127.0.0.1:1883"},
		{"mqtt://127.0.0.1:1883/", "tcp", "127.0.0.1:1883"},
		{"ws://127.0.0.1:8080/mqtt", "ws", ""},
		{"ws://127.0.0.1:9001/", "ws", ""},
	} {
		m := MQTT{URL: tc.url}
		addr, _ := mqttTCPAddr(tc.url)
		if m.Transport() != tc.transport || addr != tc.addr {
			t.Errorf("%s: transport %q, address %q; want %q, %q", tc.url, m.Transport(), addr, tc.transport, tc.addr)
		}
	}
}

// fakeMQTTServer accepts one plain TCP connection and runs serve on it.
func fakeMQTTServer(t *testing.T, serve func(c net.Conn) error) (url string, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		ch <- serve(c)
	}()
	return "tcp://" + ln.Addr().String(), ch
}

// readPacket reads one whole client packet from c.
func readPacket(c net.Conn) ([]byte, error) {
	var b []byte
	one := make([]byte, 1)
	for {
		if _, err := io.ReadFull(c, one); err != nil {
			return nil, err
		}
		b = append(b, one[0])
		if len(b) >= 2 && (len(b) > 4 || b[len(b)-1]&0x80 == 0) {
			break
		}
	}
	rl, mult := 0, 1
	for _, x := range b[1:] {
		rl += int(x&0x7f) * mult
		mult *= 128
	}
	body := make([]byte, rl)
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, err
	}
	return append(b, body...), nil
}

// Over plain TCP the client sends bare MQTT packets (no WebSocket frame):
// CONNECT with the credentials, SUBSCRIBE after CONNACK; it decodes
// packets however the server's writes split or join them, and sends
// PUBLISH and PINGREQ bare too.
func TestMQTTOverTCP(t *testing.T) {
	url, done := fakeMQTTServer(t, func(c net.Conn) error {
		p, err := readPacket(c)
		if err != nil {
			return err
		}
		want, _ := appendMQTTConnectAuth(nil, "c1", mqttKeepAlive, "bench", "s3cret")
		if !bytes.Equal(p, want) {
			return fmt.Errorf("CONNECT % x, want % x", p, want)
		}
		if _, err := c.Write([]byte{0x20, 2, 0, 0}); err != nil {
			return err
		}
		if p, err = readPacket(c); err != nil {
			return err
		}
		if want, _ := appendMQTTSubscribe(nil, 1, []string{"a/+"}); !bytes.Equal(p, want) {
			return fmt.Errorf("SUBSCRIBE % x, want % x", p, want)
		}
		// SUBACK and two deliveries in one write, the second cut in two.
		pub1, _ := appendMQTTPublish(nil, "a/1", []byte("one"))
		pub2, _ := appendMQTTPublish(nil, "a/2", []byte("two"))
		out := append(append([]byte{0x90, 3, 0, 1, 0}, pub1...), pub2[:4]...)
		if _, err := c.Write(out); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
		if _, err := c.Write(pub2[4:]); err != nil {
			return err
		}
		if p, err = readPacket(c); err != nil {
			return err
		}
		if want, _ := appendMQTTPublish(nil, "b", []byte("up")); !bytes.Equal(p, want) {
			return fmt.Errorf("PUBLISH % x, want % x", p, want)
		}
		if p, err = readPacket(c); err != nil {
			return err
		}
		if !bytes.Equal(p, []byte{0xc0, 0}) {
			return fmt.Errorf("keep-alive % x, want PINGREQ", p)
		}
		return nil
	})
	c, err := MQTT{URL: url, Username: "bench", Password: "s3cret"}.Dial(context.Background(), "c1", []string{"a/+"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, want := range []string{"a/1 one", "a/2 two"} {
		topic, payload, err := c.Next()
		if err != nil || string(topic)+" "+string(payload) != want {
			t.Fatalf("Next = %q %q %v, want %s", topic, payload, err, want)
		}
	}
	if err := c.Publish("b", []byte("up")); err != nil {
		t.Fatal(err)
	}
	if err := c.KeepAlive(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The server hung up: Next reports it.
	if _, _, err := c.Next(); err == nil {
		t.Fatal("Next after the server closed: no error")
	}
}

// A refused CONNECT (return code 4, bad user name or password, as Gatecast
// answers a wrong token) fails the dial.
func TestMQTTOverTCPRefused(t *testing.T) {
	url, _ := fakeMQTTServer(t, func(c net.Conn) error {
		if _, err := readPacket(c); err != nil {
			return err
		}
		_, err := c.Write([]byte{0x20, 2, 0, 4})
		return err
	})
	_, err := MQTT{URL: url, Username: "bench", Password: "wrong"}.Dial(context.Background(), "c1", []string{"a"})
	if err == nil || !strings.Contains(err.Error(), "return code 4") {
		t.Fatalf("Dial = %v, want the refusal", err)
	}
}
