package loadtest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gatecast/gatecast/proto"
	"github.com/gobwas/ws"
)

func TestParseHeader(t *testing.T) {
	long := func(b0 byte, n uint64) []byte {
		b := []byte{b0, 127}
		return binary.BigEndian.AppendUint64(b, n)
	}
	cases := []struct {
		name string
		in   []byte
		op   ws.OpCode
		fin  bool
		n    int64
		hl   int
		err  error
	}{
		{"short text", []byte{0x81, 5}, ws.OpText, true, 5, 2, nil},
		{"16-bit length", []byte{0x81, 126, 0x01, 0x00}, ws.OpText, true, 256, 4, nil},
		{"64-bit length", long(0x82, 70000), ws.OpBinary, true, 70000, 10, nil},
		{"continuation, not final", []byte{0x00, 3}, ws.OpContinuation, false, 3, 2, nil},
		{"ping", []byte{0x89, 0}, ws.OpPing, true, 0, 2, nil},
		{"close", []byte{0x88, 2}, ws.OpClose, true, 2, 2, nil},
		{"incomplete", []byte{0x81}, 0, false, 0, 0, errShortHeader},
		{"incomplete extended length", []byte{0x81, 126, 1}, 0, false, 0, 0, errShortHeader},
		{"masked", []byte{0x81, 0x85, 1, 2, 3, 4}, 0, false, 0, 0, errMaskedFrame},
		{"reserved bit", []byte{0xC1, 1}, 0, false, 0, 0, errReservedBits},
		{"reserved opcode", []byte{0x83, 1}, 0, false, 0, 0, errReservedOp},
		{"fragmented control", []byte{0x09, 0}, 0, false, 0, 0, errControlFrame},
		{"long control", []byte{0x88, 126, 0, 126}, 0, false, 0, 0, errControlFrame},
		{"too large", long(0x81, maxServerFrame+1), 0, false, 0, 0, errFrameTooLarge},
		{"length MSB", long(0x81, 1<<63), 0, false, 0, 0, errLengthMSB},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, hl, err := parseHeader(c.in)
			if !errors.Is(err, c.err) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if err != nil {
				return
			}
			if h.OpCode != c.op || h.Fin != c.fin || h.Length != c.n || hl != c.hl {
				t.Fatalf("got op %v fin %v len %d hl %d", h.OpCode, h.Fin, h.Length, hl)
			}
		})
	}
}

// Client frames are what a server must accept: masked, final, minimal
// length encoding; ws reads them back unmasked to the same payload.
func TestClientFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		payload := bytes.Repeat([]byte{'a'}, n)
		frame := appendClientFrame(nil, ws.OpText, payload, maskFrom(0xdeadbeef))
		f, err := ws.ReadFrame(bytes.NewReader(frame))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !f.Header.Masked || !f.Header.Fin || f.Header.OpCode != ws.OpText || f.Header.Length != int64(n) {
			t.Fatalf("n=%d: header %+v", n, f.Header)
		}
		if len(frame) != ws.HeaderSize(f.Header)+n {
			t.Fatalf("n=%d: not the minimal encoding: %d bytes", n, len(frame))
		}
		f = ws.UnmaskFrameInPlace(f)
		if !bytes.Equal(f.Payload, payload) {
			t.Fatalf("n=%d: payload differs after unmasking", n)
		}
	}
}

// FuzzFrameHeader checks parseHeader against gobwas/ws's reader: whatever
// it accepts, ws reads the same header, and it never panics.
func FuzzFrameHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		h, hl, err := parseHeader(b)
		if err != nil {
			return
		}
		want, werr := ws.ReadHeader(bytes.NewReader(b))
		if werr != nil {
			t.Fatalf("parseHeader accepted %x, ws.ReadHeader: %v", b, werr)
		}
		if h != want {
			t.Fatalf("parseHeader %+v, ws.ReadHeader %+v", h, want)
		}
		if hl != headerLen(b[1]) || hl > len(b) {
			t.Fatalf("header length %d for %x", hl, b)
		}
		if h.Masked || h.Rsv != 0 || h.OpCode.IsReserved() || h.Length > maxServerFrame ||
			(h.OpCode.IsControl() && (!h.Fin || h.Length > 125)) {
			t.Fatalf("accepted a header a server must not send: %+v", h)
		}
	})
}

func TestParseStamp(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{`{"t":1700000000000000000,"p":"xx"}`, 1700000000000000000, true},
		{`{"t":42}`, 42, true},
		{` { "t" : 7 , "p":1}`, 7, true},
		{`{"t":0}`, 0, false},
		{`{"t":-5}`, 0, false},
		{`{"t":01}`, 0, false},
		{`{"t":1.5}`, 0, false},
		{`{"t":"1"}`, 0, false},
		{`{"t":99999999999999999999}`, 0, false},
		{`{"x":1,"t":2}`, 0, false},
		{`{"t":12`, 0, false},
		{`[1]`, 0, false},
		{``, 0, false},
	}
	for _, c := range cases {
		got, ok := parseStamp([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("parseStamp(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestAppendMessage(t *testing.T) {
	for _, size := range []int{minMessageSize, 64, 200} {
		m := appendMessage(nil, size, 1700000000123456789)
		if len(m) != size {
			t.Fatalf("size %d: got %d bytes", size, len(m))
		}
		if !json.Valid(m) {
			t.Fatalf("size %d: invalid JSON %s", size, m)
		}
		if ts, ok := parseStamp(m); !ok || ts != 1700000000123456789 {
			t.Fatalf("size %d: stamp %d %v", size, ts, ok)
		}
	}
	if len(appendMessage(nil, 1, 1700000000123456789)) != minMessageSize {
		t.Fatal("a size below the minimum must give the minimum")
	}
}

// seedPayload returns the payload of the delivery the broker sends for a
// publish of msg to topic.
func seedPayload(topic string, msg []byte) []byte {
	frame := proto.AppendSeedFrame(nil, topic, msg)
	_, hl, err := parseHeader(frame)
	if err != nil {
		panic(err)
	}
	return frame[hl:]
}

func TestDeliveryStamp(t *testing.T) {
	msg := appendMessage(nil, 64, 1700000000000000042)
	for _, topic := range []string{"lt/r1/+/telemetry", `odd"topic\with/escapes`, "ünïcode/tøpic", ""} {
		if ts, ok := deliveryStamp(seedPayload(topic, msg)); !ok || ts != 1700000000000000042 {
			t.Errorf("topic %q: %d %v", topic, ts, ok)
		}
	}
	// The seed broker (Python's json.dumps) puts spaces after separators.
	spaced := []byte(`{"tag": "a/b", "message": {"t": 1700000000000000042, "p": "x"}}`)
	if ts, ok := deliveryStamp(spaced); !ok || ts != 1700000000000000042 {
		t.Errorf("spaced layout: %d %v", ts, ok)
	}
	for _, bad := range []string{
		`{"tag":"a","message":{"p":"no stamp"}}`,
		`{"tag":"a","message":"text"}`,
		`{"tag":"a","message":{"t":5,"p":"x`, // truncated
		`not json`,
		``,
	} {
		if ts, ok := deliveryStamp([]byte(bad)); ok {
			t.Errorf("%q: got stamp %d", bad, ts)
		}
	}
}

// FuzzDelivery: every delivery the broker can write for a stamped message
// yields its stamp, whatever the topic; arbitrary bytes never panic and
// never yield a stamp ≤ 0.
func FuzzDelivery(f *testing.F) {
	f.Fuzz(func(t *testing.T, topic string, stamp int64, raw []byte) {
		if ts, ok := deliveryStamp(raw); ok && ts <= 0 {
			t.Fatalf("stamp %d from %q", ts, raw)
		}
		if stamp <= 0 {
			return
		}
		msg := appendMessage(nil, 0, stamp)
		ts, ok := deliveryStamp(seedPayload(topic, msg))
		if !ok || ts != stamp {
			t.Fatalf("topic %q stamp %d: got %d %v", topic, stamp, ts, ok)
		}
		// The general path: keys reordered, spaces, as another broker
		// might write it (a topic it could carry unescaped).
		plain := strings.Map(func(r rune) rune {
			if r == '"' || r == '\\' || r < 0x20 || r == utf8.RuneError {
				return 'x'
			}
			return r
		}, topic)
		spaced := []byte(`{ "message" : ` + string(msg) + ` , "tag" : "` + plain + `" }`)
		if plain == "" || !utf8.Valid(spaced) || !json.Valid(spaced) {
			return
		}
		if ts, ok := deliveryStamp(spaced); !ok || ts != stamp {
			t.Fatalf("reordered %q: got %d %v", spaced, ts, ok)
		}
	})
}
