package compare

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strconv"
	"testing"
	"testing/iotest"

	"github.com/gatecast/gatecast/proto"
)

// benchDelivery is a delivery of the harness's payload as Gatecast writes
// it (proto.AppendSeedFrame, without the WebSocket header).
func benchDelivery(topic string, size int, sent int64) []byte {
	f := proto.AppendSeedFrame(nil, topic, appendPayload(nil, size, sent))
	return f[proto.FrameHeaderLen(proto.SeedPayloadLen(topic, appendPayload(nil, size, sent))):]
}

func TestSeedBenchDeliveryAgreesWithDecoder(t *testing.T) {
	for _, tc := range []struct {
		topic string
		size  int
		sent  int64
	}{
		{"bench/fanin/3", 64, 1732461234567890123},
		{"a", MinPayloadSize, -9223372036854775808},
		{"a", MinPayloadSize, 9223372036854775807},
		{"bench/fanin", 1000, 1},
		{"b", 64, -1},
		{"b", 64, 12345678},
		{"b", 64, 1234567812345678},
	} {
		b := benchDelivery(tc.topic, tc.size, tc.sent)
		tag, msg, sent, ok := seedBenchDelivery(b)
		if !ok || string(tag) != tc.topic || sent != tc.sent || !bytes.Equal(msg, appendPayload(nil, tc.size, tc.sent)) {
			t.Errorf("%s: = %q %q %d %v; want the topic, the payload and %d", b, tag, msg, sent, ok, tc.sent)
		}
		checkSeedBenchDelivery(t, b)
	}
	// Anything else is left to the general decoder, whatever it decides.
	for _, b := range []string{
		`{"tag":"a\"b","message":{"t":1,"p":"x"}}`,
		`{"tag":"a\\b","message":{"t":1,"p":"x"}}`,
		`{"tag":"ü","message":{"t":1,"p":"x"}}`,
		`{"tag":"","message":{"t":1,"p":"x"}}`,
		`{"tag":"a","message":{"t":01,"p":"x"}}`,
		`{"tag":"a","message":{"t":0,"p":"x"}}`,
		`{"tag":"a","message":{"t":1,"p":"xy"}}`,
		`{"tag":"a","message":{"t":1,"p":"x"} }`,
		`{"tag":"a", "message":{"t":1,"p":"x"}}`,
		`{"tag":"a","message":{"t":99999999999999999999,"p":"x"}}`,
		`{"tag":"a","message":{"t":9223372036854775808,"p":"x"}}`,
		`{"tag":"a","message":{"t":-9223372036854775809,"p":"x"}}`,
		`{"tag":"a","message":{"t":1,"p":"x"},"x":{"t":1,"p":"x"}}`,
	} {
		if _, _, _, ok := seedBenchDelivery([]byte(b)); ok {
			t.Errorf("%s: taken by the fast path", b)
		}
		checkSeedBenchDelivery(t, []byte(b))
	}
}

// checkSeedBenchDelivery: when the fast path takes b, the general decoder
// reads the same tag and message from it, and payloadTime the same time.
func checkSeedBenchDelivery(t *testing.T, b []byte) {
	t.Helper()
	tag, msg, sent, ok := seedBenchDelivery(b)
	if !ok {
		return
	}
	var d proto.SeedDecoder
	wantTag, wantMsg, err := d.Decode(b)
	if err != nil || !bytes.Equal(tag, wantTag) || !bytes.Equal(msg, wantMsg) {
		t.Fatalf("%q: fast path %q %q, decoder %q %q %v", b, tag, msg, wantTag, wantMsg, err)
	}
	if want, wok := payloadTime(msg); !wok || want != sent {
		t.Fatalf("%q: fast path t=%d, payloadTime %d %v", b, sent, want, wok)
	}
}

func FuzzSeedBenchDelivery(f *testing.F) {
	f.Add(benchDelivery("bench/fanin/1", 64, 1732461234567890123))
	f.Add(benchDelivery("a", MinPayloadSize, -9223372036854775808))
	f.Add([]byte(`{"tag":"a","message":{"t":12345678,"p":"xxxxxxxxx"}}`))
	f.Add([]byte(`{"tag":"a","message":{"t":9223372036854775808,"p":"x"}}`))
	f.Fuzz(checkSeedBenchDelivery)
}

func TestDigits8(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b [8]byte
	for i := 0; i < 200_000; i++ {
		for j := range b {
			if rng.IntN(4) == 0 {
				b[j] = byte(rng.IntN(256))
			} else {
				b[j] = '0' + byte(rng.IntN(10))
			}
		}
		v, ok := digits8(b[:])
		want, err := strconv.ParseUint(string(b[:]), 10, 64)
		allDigits := err == nil && !bytes.ContainsAny(b[:], "+-_")
		if ok != allDigits || (ok && v != want) {
			t.Fatalf("digits8(%q) = %d, %v; want %d, %v", b, v, ok, want, allDigits)
		}
	}
	for _, s := range []string{"00000000", "99999999", "12345678", "/0000000", ":0000000", "0000000/", "0000000:"} {
		v, ok := digits8([]byte(s))
		want, err := strconv.ParseUint(s, 10, 64)
		if ok != (err == nil) || v != want {
			t.Errorf("digits8(%q) = %d, %v", s, v, ok)
		}
	}
}

func TestAppendRepeated(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 64, 1000} {
		got := appendRepeated([]byte("head"), []byte("abc"), n)
		if want := "head" + string(bytes.Repeat([]byte("abc"), n)); string(got) != want {
			t.Errorf("n=%d: %q", n, got)
		}
	}
}

// connReader hands out exactly the bytes of its source, whether they are
// read, peeked across reads or discarded, and grows its buffer only to what
// a peek needs or a full read asks for.
func TestConnReaderPeekDiscardAndRead(t *testing.T) {
	src := make([]byte, 3*readBufMax)
	for i := range src {
		src[i] = byte(i * 7)
	}
	for _, name := range []string{"whole", "one byte"} {
		var r io.Reader = bytes.NewReader(src)
		if name == "one byte" {
			r = iotest.OneByteReader(r)
		}
		b := newConnReader(r)
		pos := 0
		rng := rand.New(rand.NewPCG(3, 4))
		for pos < len(src) {
			n := min(1+rng.IntN(20_000), len(src)-pos)
			switch rng.IntN(3) {
			case 0:
				p, err := b.peek(n)
				if err != nil || !bytes.Equal(p, src[pos:pos+n]) {
					t.Fatalf("%s: peek(%d) at %d: %v", name, n, pos, err)
				}
				b.discard(n)
				pos += n
			case 1:
				p := make([]byte, n)
				k, err := b.Read(p)
				if err != nil || k == 0 || !bytes.Equal(p[:k], src[pos:pos+k]) {
					t.Fatalf("%s: Read at %d: %d %v", name, pos, k, err)
				}
				pos += k
			case 2:
				if p, err := b.peek(1); err != nil || p[0] != src[pos] {
					t.Fatalf("%s: peek(1) at %d: %v", name, pos, err)
				}
			}
			if b.at == 0 {
				t.Fatalf("%s: no read time after a read", name)
			}
		}
		if len(b.buf) > readBufMax*2 {
			t.Errorf("%s: buffer grew to %d bytes for peeks of at most 20,000", name, len(b.buf))
		}
		if _, err := b.peek(1); err != io.EOF {
			t.Errorf("%s: peek at the end: %v, want EOF", name, err)
		}
	}
}
