package proto

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"

	"github.com/gobwas/ws"
)

// readFrame parses one server frame with gobwas/ws's reader (an
// implementation independent of AppendFrameHeader) and checks it is a
// single, minimal, unmasked text frame that fills b exactly.
func readFrame(t *testing.T, b []byte) []byte {
	t.Helper()
	r := bytes.NewReader(b)
	h, err := ws.ReadHeader(r)
	if err != nil {
		t.Fatalf("ws.ReadHeader: %v", err)
	}
	if !h.Fin || h.OpCode != ws.OpText || h.Masked || h.Rsv != 0 {
		t.Fatalf("header %+v, want FIN text unmasked", h)
	}
	hl := len(b) - r.Len()
	if hl != ws.HeaderSize(h) || hl != frameHeaderLen(int(h.Length)) {
		t.Fatalf("header is %d bytes for length %d; minimal is %d", hl, h.Length, ws.HeaderSize(h))
	}
	if int64(r.Len()) != h.Length {
		t.Fatalf("header says %d payload bytes, frame has %d", h.Length, r.Len())
	}
	return b[hl:]
}

func TestAppendSeedFrame(t *testing.T) {
	tests := []struct {
		topic, message, payload string
	}{
		{"sensors/room1/temperature", `{"v":21.5}`, `{"tag":"sensors/room1/temperature","message":{"v":21.5}}`},
		{"a", `0`, `{"tag":"a","message":0}`},
		{"", `""`, `{"tag":"","message":""}`},
		{"q\"b\\s/", `1`, `{"tag":"q\"b\\s/","message":1}`},
		{"\b\f\n\r\t\x00\x1f\x7f", `1`, `{"tag":"\b\f\n\r\t\u0000\u001f` + "\x7f" + `","message":1}`},
		{"café/😀/\u2028", `1`, `{"tag":"café/😀/` + "\u2028" + `","message":1}`},
		{"bad\xffutf8\xc3", `1`, `{"tag":"bad\ufffdutf8\ufffd","message":1}`},
		{"t", ``, `{"tag":"t","message":null}`},
		{"t", ` [1, 2] `, `{"tag":"t","message": [1, 2] }`},
	}
	for _, tc := range tests {
		frame := AppendSeedFrame(nil, tc.topic, []byte(tc.message))
		payload := readFrame(t, frame)
		if string(payload) != tc.payload {
			t.Errorf("AppendSeedFrame(%q, %q) payload = %s, want %s", tc.topic, tc.message, payload, tc.payload)
		}
		if n := SeedPayloadLen(tc.topic, []byte(tc.message)); n != len(payload) {
			t.Errorf("SeedPayloadLen(%q, %q) = %d, payload is %d", tc.topic, tc.message, n, len(payload))
		}
	}
	// Appends after existing content.
	dst := AppendSeedFrame([]byte("prev"), "a", []byte("1"))
	if !bytes.HasPrefix(dst, []byte("prev")) || string(readFrame(t, dst[4:])) != `{"tag":"a","message":1}` {
		t.Fatalf("append to non-empty dst gave %q", dst)
	}
}

// TestAppendSeedFrameLengthForms covers the boundaries of the three
// WebSocket length encodings.
func TestAppendSeedFrameLengthForms(t *testing.T) {
	const topic = "t/x"
	fixed := SeedPayloadLen(topic, []byte(`""`))
	for _, n := range []int{fixed, 125, 126, 127, 65535, 65536, 70000} {
		msg := []byte(`"` + strings.Repeat("m", n-fixed) + `"`)
		frame := AppendSeedFrame(nil, topic, msg)
		payload := readFrame(t, frame)
		if len(payload) != n {
			t.Fatalf("payload length %d, want %d", len(payload), n)
		}
		wantHeader := 10 // 64-bit length
		switch {
		case n <= 125:
			wantHeader = 2 // 7-bit length
		case n <= 65535:
			wantHeader = 4 // 16-bit length
		}
		if len(frame)-n != wantHeader {
			t.Fatalf("payload %d: header %d bytes, want %d", n, len(frame)-n, wantHeader)
		}
		var d SeedDecoder
		tag, m, err := d.Decode(payload)
		if err != nil || string(tag) != topic || !bytes.Equal(m, msg) {
			t.Fatalf("payload %d does not decode back: %v", n, err)
		}
	}
}

func TestAppendFrameHeader(t *testing.T) {
	for _, tc := range []struct {
		op   ws.OpCode
		n    int
		want []byte
	}{
		{ws.OpText, 0, []byte{0x81, 0}},
		{ws.OpBinary, 125, []byte{0x82, 125}},
		{ws.OpText, 126, []byte{0x81, 126, 0, 126}},
		{ws.OpText, 65535, []byte{0x81, 126, 0xff, 0xff}},
		{ws.OpText, 65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{ws.OpPong, 3, []byte{0x8a, 3}},
	} {
		if got := AppendFrameHeader(nil, tc.op, tc.n); !bytes.Equal(got, tc.want) {
			t.Errorf("AppendFrameHeader(%v, %d) = %x, want %x", tc.op, tc.n, got, tc.want)
		}
	}
}

func TestAppendSeedFrameAllocs(t *testing.T) {
	topic := "sensors/room1/\"temperature\"\n"
	msg := []byte(`{"device":"room1-t1","celsius":21.5,"humidity":40,"ts":17000000}`)
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(200, func() {
		buf = AppendSeedFrame(buf[:0], topic, msg)
	})
	if allocs != 0 {
		t.Fatalf("AppendSeedFrame allocates %.1f times per call with a presized dst, want 0", allocs)
	}
	// Without room it grows dst exactly once.
	allocs = testing.AllocsPerRun(50, func() {
		buf = AppendSeedFrame(nil, topic, msg)
	})
	if allocs != 1 {
		t.Fatalf("AppendSeedFrame into nil allocates %.1f times, want 1", allocs)
	}
}

// FuzzSeedFrameRoundTrip: whatever the topic (any bytes) and message, the
// frame is a well-formed minimal text frame whose payload is UTF-8, valid
// JSON, exactly SeedPayloadLen long, and decodes (with encoding/json and
// with SeedDecoder) to the topic and the message. pad grows the message so
// the fuzzer reaches all three length encodings.
func FuzzSeedFrameRoundTrip(f *testing.F) {
	var d SeedDecoder
	f.Fuzz(func(t *testing.T, topic string, message []byte, pad uint32) {
		if !utf8.Valid(message) || !json.Valid(message) {
			// Any bytes still give a valid message: as a JSON string.
			message, _ = json.Marshal(string(message))
		}
		if pad %= 70000; pad > 0 {
			message = append(append(append([]byte(`[`), message...), `,"`+strings.Repeat("p", int(pad))+`"`...), ']')
		}
		if quoteVerbatim(topic) != quoteVerbatimRef(topic) {
			t.Fatalf("quoteVerbatim(%q) = %v, the byte loop says otherwise", topic, quoteVerbatim(topic))
		}
		frame := AppendSeedFrame(nil, topic, message)
		// Decoders read the value without the whitespace around it.
		wantMsg := bytes.Trim(message, " \t\r\n")
		payload := readFrame(t, frame)
		if len(payload) != SeedPayloadLen(topic, message) {
			t.Fatalf("payload %d bytes, SeedPayloadLen says %d", len(payload), SeedPayloadLen(topic, message))
		}
		if !utf8.Valid(payload) || !json.Valid(payload) {
			t.Fatalf("payload %q is not UTF-8 JSON", payload)
		}
		// What a JSON decoder reads back is the topic, with bytes that are
		// not UTF-8 replaced as encoding/json does.
		wantJSON, _ := json.Marshal(topic)
		var wantTopic string
		json.Unmarshal(wantJSON, &wantTopic)
		var got struct {
			Tag     string          `json:"tag"`
			Message json.RawMessage `json:"message"`
		}
		if err := json.Unmarshal(payload, &got); err != nil {
			t.Fatalf("encoding/json: %v", err)
		}
		if got.Tag != wantTopic || !bytes.Equal(got.Message, wantMsg) {
			t.Fatalf("encoding/json read back %q, %q; want %q, %q", got.Tag, got.Message, wantTopic, wantMsg)
		}
		tag, msg, err := d.Decode(payload)
		switch {
		case wantTopic == "":
			if err != ErrMissingTag {
				t.Fatalf("empty topic: Decode error %v", err)
			}
		case err != nil:
			t.Fatalf("Decode: %v", err)
		case string(tag) != wantTopic || !bytes.Equal(msg, wantMsg):
			t.Fatalf("Decode read back %q, %q; want %q, %q", tag, msg, wantTopic, wantMsg)
		}
	})
}

func BenchmarkAppendSeedFrame(b *testing.B) {
	topic := "sensors/room1/temperature"
	msg := []byte(`{"device":"room1-t1","celsius":21.5,"humidity":40,"ts":17000000}`)
	if len(msg) != 64 {
		b.Fatalf("message is %d bytes", len(msg))
	}
	buf := make([]byte, 0, 256)
	b.SetBytes(int64(SeedPayloadLen(topic, msg)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendSeedFrame(buf[:0], topic, msg)
	}
}

// quoteVerbatimRef is quoteVerbatim one byte at a time.
func quoteVerbatimRef(s string) bool {
	for i := 0; i < len(s); i++ {
		if quoteLen[s[i]] != 1 {
			return false
		}
	}
	return true
}

// TestQuoteVerbatim: the eight-bytes-a-step check agrees with the byte
// loop for every byte value at every position of strings up to 17 bytes
// (two words and a tail), alone and after another byte that must be
// escaped (where a borrow could hide or invent a hit).
func TestQuoteVerbatim(t *testing.T) {
	for n := 1; n <= 17; n++ {
		for pos := range n {
			for c := range 256 {
				b := []byte(strings.Repeat("a/b", 6)[:n])
				b[pos] = byte(c)
				if got, want := quoteVerbatim(string(b)), quoteVerbatimRef(string(b)); got != want {
					t.Fatalf("%q: %v, want %v", b, got, want)
				}
				for _, other := range []byte{0x00, 0x1f, '"', '\\', 0x80, 0xff, 0x21, 0x7f} {
					for at := range n {
						if at == pos {
							continue
						}
						b2 := append([]byte(nil), b...)
						b2[at] = other
						if got, want := quoteVerbatim(string(b2)), quoteVerbatimRef(string(b2)); got != want {
							t.Fatalf("%q: %v, want %v", b2, got, want)
						}
					}
				}
			}
		}
	}
	if !quoteVerbatim("") {
		t.Fatal("the empty string is verbatim")
	}
}

// TestSeedVerbatim: a client message is delivered as it came exactly when it
// is the form the encoder writes; anything else (spacing, escapes, another
// key, another order) is encoded again.
func TestSeedVerbatim(t *testing.T) {
	var d SeedDecoder
	for _, tc := range []struct {
		in       string
		verbatim bool
	}{
		{`{"tag":"fleet/dev1/temp","message":{"c":21.5}}`, true},
		{`{"tag":"a","message":1}`, true},
		{`{"tag":"température/😀","message":"x"}`, true}, // raw UTF-8 is written as is
		{`{"tag":"a","message":[1, 2]}`, true},          // the message is verbatim in both
		{`{"tag": "a","message":1}`, false},
		{`{"tag":"a", "message":1}`, false},
		{`{"tag":"a","message":1 }`, false},
		{` {"tag":"a","message":1}`, false},
		{`{"tag":"a","message":1}` + "\n", false},
		{`{"tag":"\u0061","message":1}`, false}, // escaped: the encoder writes "a"
		{`{"tag":"a\/b","message":1}`, false},
		{`{"message":1,"tag":"a"}`, false},
		{`{"tag":"a","message":1,"x":2}`, false},
		{`{"tag":"b","tag":"a","message":1}`, false}, // last tag wins; not the encoder's form
		{`{"tag":"a","message":1,"message":2}`, false},
	} {
		p := []byte(tc.in)
		tag, msg, err := d.Decode(p)
		if err != nil {
			t.Fatalf("Decode(%q): %v", tc.in, err)
		}
		if got := d.Verbatim(); got != tc.verbatim {
			t.Errorf("Decode(%q): Verbatim() = %v, want %v", tc.in, got, tc.verbatim)
		}
		if got := seedVerbatim(p, tag, msg); got != tc.verbatim {
			t.Errorf("seedVerbatim(%q) = %v, want %v", tc.in, got, tc.verbatim)
		}
		frame := AppendSeedFrame(nil, string(tag), msg)
		if same := len(frame) == FrameHeaderLen(len(p))+len(p) && bytes.HasSuffix(frame, p); tc.verbatim && !same {
			t.Errorf("%q: verbatim but the encoder writes %q", tc.in, frame)
		}
	}
	if seedVerbatim(nil, nil, nil) {
		t.Error("seedVerbatim of nothing")
	}
	if _, _, err := d.Decode([]byte(`{"tag":"a","message":null}`)); err != ErrMissingMessage || d.Verbatim() {
		t.Errorf("a failed decode of the encoder's form: err %v, Verbatim() = %v", err, d.Verbatim())
	}
}

// seedVerbatim, the tests' oracle for SeedDecoder.Verbatim, reports
// whether payload, a client's seed message that Decode decoded into tag
// and message, is byte for byte the payload AppendSeedFrame writes for them - {"tag":"<tag>","message":
// <message>} and nothing else, the tag in place (no escapes) - so that it
// can be delivered as it came (AppendSeedFrameVerbatim) instead of encoded
// again. Devices nearly always send that form. A tag in place is JSON
// string content without escapes: no '"', '\\' or control character, and
// valid UTF-8 (Decode checked it), which is exactly what AppendSeedFrame
// writes as is. O(1): the checks are on the slices' positions and the
// constant parts.
func seedVerbatim(payload, tag, message []byte) bool {
	const head, mid = seedPrefix + `"`, `"` + seedMiddle
	t := len(head) + len(tag)
	m := t + len(mid)
	return len(tag) > 0 && len(message) > 0 &&
		len(payload) == m+len(message)+len(seedSuffix) &&
		unsafe.SliceData(tag) == unsafe.SliceData(payload[len(head):]) &&
		unsafe.SliceData(message) == unsafe.SliceData(payload[m:]) &&
		string(payload[:len(head)]) == head &&
		string(payload[t:m]) == mid &&
		string(payload[len(payload)-len(seedSuffix):]) == seedSuffix
}
