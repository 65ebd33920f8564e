package proto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSeedDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		tag     string
		message string
		err     error
	}{
		{name: "basic", in: `{"tag": "sensors/room1/temperature", "message": {"v": 21.5}}`, tag: "sensors/room1/temperature", message: `{"v": 21.5}`},
		{name: "message first", in: `{"message":[1,2],"tag":"a/b"}`, tag: "a/b", message: `[1,2]`},
		{name: "whitespace everywhere", in: " \t\r\n{ \"tag\" :\n\"a\" , \"message\"\t:  \"x\"  }\n ", tag: "a", message: `"x"`},
		{name: "message zero", in: `{"tag":"t","message":0}`, tag: "t", message: `0`},
		// The encoder's form (decodeEncoderForm) and what is nearly it.
		{name: "encoder form", in: `{"tag":"a/b","message":{"tag":"x","message":1}}`, tag: "a/b", message: `{"tag":"x","message":1}`},
		{name: "encoder form, string message", in: `{"tag":"a","message":"}"}`, tag: "a", message: `"}"`},
		{name: "encoder form, empty tag", in: `{"tag":"","message":1}`, err: ErrMissingTag},
		{name: "encoder form, null message", in: `{"tag":"a","message":null}`, err: ErrMissingMessage},
		{name: "encoder form, then a key", in: `{"tag":"a","message":1,"message":2}`, tag: "a", message: `2`},
		{name: "encoder form, then a tag", in: `{"tag":"a","message":1,"tag":"b"}`, tag: "b", message: `1`},
		{name: "encoder form, trailing space", in: `{"tag":"a","message":1} `, tag: "a", message: `1`},
		{name: "encoder form, two closes", in: `{"tag":"a","message":1}}`, err: ErrInvalidJSON},
		{name: "encoder form, no value", in: `{"tag":"a","message":}`, err: ErrInvalidJSON},
		{name: "encoder form, cut", in: `{"tag":"a","message":`, err: ErrInvalidJSON},
		{name: "encoder form, cut in the tag", in: `{"tag":"a`, err: ErrInvalidJSON},
		{name: "encoder form, escaped tag", in: `{"tag":"a\u0062","message":1}`, tag: "ab", message: `1`},
		{name: "message false", in: `{"tag":"t","message":false}`, tag: "t", message: `false`},
		{name: "message empty string", in: `{"tag":"t","message":""}`, tag: "t", message: `""`},
		{name: "message empty object", in: `{"tag":"t","message":{}}`, tag: "t", message: `{}`},
		{name: "message empty array", in: `{"tag":"t","message":[ ]}`, tag: "t", message: `[ ]`},
		{name: "message true", in: `{"tag":"t","message":true}`, tag: "t", message: `true`},
		{name: "message number forms", in: `{"tag":"t","message":-0.5e+10}`, tag: "t", message: `-0.5e+10`},
		{name: "message nested", in: `{"tag":"t","message":{"a":[{"b":null},[],{},"x\"y",1E3]}}`, tag: "t", message: `{"a":[{"b":null},[],{},"x\"y",1E3]}`},
		{name: "other keys ignored", in: `{"id":7,"tag":"t","extra":{"tag":"nope","message":null},"message":1}`, tag: "t", message: `1`},
		{name: "duplicate tag last wins", in: `{"tag":"a","tag":"b","message":1}`, tag: "b", message: `1`},
		{name: "duplicate message last wins", in: `{"tag":"a","message":1,"message":2}`, tag: "a", message: `2`},
		{name: "duplicate tag non-string last", in: `{"tag":"a","tag":1,"message":1}`, err: ErrMissingTag},
		{name: "duplicate tag string last", in: `{"tag":1,"tag":"a","message":1}`, tag: "a", message: `1`},
		{name: "duplicate message null last", in: `{"tag":"a","message":1,"message":null}`, err: ErrMissingMessage},
		{name: "escaped key", in: `{"t\u0061g":"a","m\u0065ssage":2}`, tag: "a", message: `2`},
		{name: "keys are case sensitive", in: `{"Tag":"a","message":2}`, err: ErrMissingTag},
		{name: "key with lone surrogate is just another key", in: `{"\ud800":1,"tag":"a","message":2}`, tag: "a", message: `2`},
		{name: "tag escapes", in: `{"tag":"caf\u00e9\/\"q\"\\\t\n","message":1}`, tag: "café/\"q\"\\\t\n", message: `1`},
		{name: "tag surrogate pair", in: `{"tag":"x\ud83d\ude00y","message":1}`, tag: "x😀y", message: `1`},
		{name: "tag raw utf8", in: `{"tag":"température/😀","message":1}`, tag: "température/😀", message: `1`},
		{name: "tag escaped NUL", in: `{"tag":"a\u0000","message":1}`, tag: "a\x00", message: `1`},
		{name: "tag lone high surrogate", in: `{"tag":"x\ud800","message":1}`, err: ErrInvalidTag},
		{name: "tag lone low surrogate", in: `{"tag":"x\udc00y","message":1}`, err: ErrInvalidTag},
		{name: "tag high then non-low", in: `{"tag":"\ud800\u0041","message":1}`, err: ErrInvalidTag},
		{name: "tag high then high", in: `{"tag":"\ud800\ud800","message":1}`, err: ErrInvalidTag},
		{name: "tag error before message error", in: `{"tag":"\ud800"}`, err: ErrInvalidTag},
		{name: "missing tag", in: `{"message":1}`, err: ErrMissingTag},
		{name: "empty tag", in: `{"tag":"","message":1}`, err: ErrMissingTag},
		{name: "null tag", in: `{"tag":null,"message":1}`, err: ErrMissingTag},
		{name: "number tag", in: `{"tag":5,"message":1}`, err: ErrMissingTag},
		{name: "object tag", in: `{"tag":{"a":"b"},"message":1}`, err: ErrMissingTag},
		{name: "missing tag before missing message", in: `{}`, err: ErrMissingTag},
		{name: "missing message", in: `{"tag":"a"}`, err: ErrMissingMessage},
		{name: "null message", in: `{"tag":"a","message":null}`, err: ErrMissingMessage},
		{name: "not object array", in: `[{"tag":"a","message":1}]`, err: ErrNotObject},
		{name: "not object string", in: ` "x" `, err: ErrNotObject},
		{name: "not object number", in: `12`, err: ErrNotObject},
		{name: "not object null", in: `null`, err: ErrNotObject},
		{name: "empty", in: ``, err: ErrInvalidJSON},
		{name: "only spaces", in: "  \n", err: ErrInvalidJSON},
		{name: "truncated", in: `{"tag":"a","message":{"x":1}`, err: ErrInvalidJSON},
		{name: "truncated string", in: `{"tag":"a`, err: ErrInvalidJSON},
		{name: "trailing garbage", in: `{"tag":"a","message":1}x`, err: ErrInvalidJSON},
		{name: "two values", in: `{"tag":"a","message":1} {}`, err: ErrInvalidJSON},
		{name: "trailing comma", in: `{"tag":"a","message":1,}`, err: ErrInvalidJSON},
		{name: "trailing comma in array", in: `{"tag":"a","message":[1,]}`, err: ErrInvalidJSON},
		{name: "missing colon", in: `{"tag" "a","message":1}`, err: ErrInvalidJSON},
		{name: "single quotes", in: `{'tag':'a','message':1}`, err: ErrInvalidJSON},
		{name: "unquoted key", in: `{tag:"a",message:1}`, err: ErrInvalidJSON},
		{name: "bad literal", in: `{"tag":"a","message":tru}`, err: ErrInvalidJSON},
		{name: "literal glued", in: `{"tag":"a","message":[truefalse]}`, err: ErrInvalidJSON},
		{name: "leading zero", in: `{"tag":"a","message":01}`, err: ErrInvalidJSON},
		{name: "bare minus", in: `{"tag":"a","message":-}`, err: ErrInvalidJSON},
		{name: "dot without digits", in: `{"tag":"a","message":1.}`, err: ErrInvalidJSON},
		{name: "exponent without digits", in: `{"tag":"a","message":1e+}`, err: ErrInvalidJSON},
		{name: "plus sign", in: `{"tag":"a","message":+1}`, err: ErrInvalidJSON},
		{name: "NaN", in: `{"tag":"a","message":NaN}`, err: ErrInvalidJSON},
		{name: "bad escape", in: `{"tag":"a\x","message":1}`, err: ErrInvalidJSON},
		{name: "short unicode escape", in: `{"tag":"a\u12","message":1}`, err: ErrInvalidJSON},
		{name: "raw control char in string", in: "{\"tag\":\"a\nb\",\"message\":1}", err: ErrInvalidJSON},
		{name: "raw control char in message", in: "{\"tag\":\"a\",\"message\":\"\x01\"}", err: ErrInvalidJSON},
		{name: "mismatched brackets", in: `{"tag":"a","message":[1}`, err: ErrInvalidJSON},
		{name: "mismatched brackets nested", in: `{"tag":"a","message":{"x":[{]}}`, err: ErrInvalidJSON},
		{name: "BOM", in: "\ufeff{\"tag\":\"a\",\"message\":1}", err: ErrInvalidJSON},
		{name: "invalid UTF-8 in tag", in: "{\"tag\":\"a\xff\",\"message\":1}", err: ErrInvalidUTF8},
		{name: "invalid UTF-8 in message string", in: "{\"tag\":\"a\",\"message\":\"\xc3\x28\"}", err: ErrInvalidUTF8},
		{name: "invalid UTF-8 and invalid JSON", in: "\xff", err: ErrInvalidUTF8},
		{name: "UTF-8 encoded surrogate", in: "{\"tag\":\"\xed\xa0\x80\",\"message\":1}", err: ErrInvalidUTF8},
		{name: "lone surrogate escape in message is kept", in: `{"tag":"a","message":"\ud800"}`, tag: "a", message: `"\ud800"`},
	}
	var d SeedDecoder
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tag, msg, err := d.Decode([]byte(tc.in))
			if err != tc.err {
				t.Fatalf("Decode(%q) error = %v, want %v", tc.in, err, tc.err)
			}
			if err != nil {
				return
			}
			if string(tag) != tc.tag || string(msg) != tc.message {
				t.Fatalf("Decode(%q) = %q, %q; want %q, %q", tc.in, tag, msg, tc.tag, tc.message)
			}
		})
	}
}

// TestSeedDecodeDepth checks the nesting limit is the one encoding/json
// uses (10000 levels including the top-level object), also across the
// 64-level boundary of the in-register nesting stack.
func TestSeedDecodeDepth(t *testing.T) {
	// nested returns a frame whose nesting depth, counting the top-level
	// object, is levels; kind picks the containers: arrays, objects or
	// alternating.
	nested := func(levels int, kind string) []byte {
		var open, close strings.Builder
		for k := 0; k < levels-1; k++ {
			if kind == "object" || kind == "mixed" && k%2 == 1 {
				open.WriteString(`{"a":`)
				close.WriteString("}")
			} else {
				open.WriteString("[")
				close.WriteString("]")
			}
		}
		cl := []byte(close.String())
		slices.Reverse(cl)
		return []byte(`{"tag":"t","message":` + open.String() + "0" + string(cl) + "}")
	}
	var d SeedDecoder
	for _, levels := range []int{2, 64, 65, 66, 129, 130, 200, 9999, 10000, 10001, 12000} {
		for _, kind := range []string{"array", "object", "mixed"} {
			in := nested(levels, kind)
			wantOK := levels <= maxDepth
			if json.Valid(in) != wantOK {
				t.Fatalf("test assumption: encoding/json valid=%v at %d levels", !wantOK, levels)
			}
			_, msg, err := d.Decode(in)
			if wantOK && err != nil {
				t.Fatalf("%d levels of %s: unexpected error %v", levels, kind, err)
			}
			if !wantOK && err != ErrInvalidJSON {
				t.Fatalf("%d levels of %s: error %v, want ErrInvalidJSON", levels, kind, err)
			}
			if wantOK && !bytes.Equal(msg, in[len(`{"tag":"t","message":`):len(in)-1]) {
				t.Fatalf("%d levels of %s: wrong message span", levels, kind)
			}
		}
	}
	// A mismatch beyond the first 64 levels must still be caught.
	bad := []byte(`{"tag":"t","message":` + strings.Repeat("[", 100) + strings.Repeat("]", 50) + "}" + strings.Repeat("]", 49) + `}`)
	if _, _, err := d.Decode(bad); err != ErrInvalidJSON {
		t.Fatalf("deep mismatch: error %v, want ErrInvalidJSON", err)
	}
}

// TestSeedDecodeResultsAlias documents the lifetime rule: an escaped tag
// lives in the decoder's scratch and is overwritten by the next Decode.
func TestSeedDecodeResultsAlias(t *testing.T) {
	var d SeedDecoder
	tag1, _, err := d.Decode([]byte(`{"tag":"\u0061bc","message":1}`))
	if err != nil || string(tag1) != "abc" {
		t.Fatalf("first decode: %q %v", tag1, err)
	}
	tag2, _, err := d.Decode([]byte(`{"tag":"\u0078yz","message":1}`))
	if err != nil || string(tag2) != "xyz" {
		t.Fatalf("second decode: %q %v", tag2, err)
	}
	if string(tag1) != "xyz" {
		t.Fatalf("escaped tag is expected to share the scratch buffer; first result now %q", tag1)
	}
	// Plain tags point into the payload itself.
	p := []byte(`{"tag":"abc","message":1}`)
	tag, msg, _ := d.Decode(p)
	if &tag[0] != &p[8] || &msg[0] != &p[len(p)-2] {
		t.Fatal("plain tag and message should alias the payload")
	}
	// A huge escaped tag is not retained by the decoder after the next call.
	big := `{"tag":"` + strings.Repeat(`\u0061`, 4*maxRetainedScratch) + `","message":1}`
	if _, _, err := d.Decode([]byte(big)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Decode([]byte(`{"tag":"a","message":1}`)); err != nil {
		t.Fatal(err)
	}
	if cap(d.buf) > maxRetainedScratch {
		t.Fatalf("decoder still holds %d bytes of scratch", cap(d.buf))
	}
}

func TestSeedDecodeAllocs(t *testing.T) {
	payloads := map[string][]byte{
		"plain":   []byte(`{"tag":"sensors/room1/temperature","message":{"celsius":21.5,"ok":true,"tags":["a","b"]}}`),
		"escaped": []byte(`{"t\u0061g":"caf\u00e9\/\ud83d\ude00","message":"x\n"}`),
		"deep":    []byte(`{"tag":"t","message":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`),
		"invalid": []byte(`{"tag":"t","message":[1,2}`),
	}
	for name, p := range payloads {
		var d SeedDecoder
		d.Decode(p) // warm up: scratch and deep stack grow once
		allocs := testing.AllocsPerRun(200, func() {
			d.Decode(p)
		})
		if allocs != 0 {
			t.Errorf("%s: Decode allocates %.1f times per call, want 0", name, allocs)
		}
	}
}

// hasLoneSurrogate reports whether the raw JSON string literal s (with
// quotes) escapes a UTF-16 surrogate that is not part of a pair. It is the
// test's own reading of RFC 8259 §7, independent of appendUnescaped.
func hasLoneSurrogate(s string) bool {
	var units []uint16
	var isEsc []bool
	for i := 1; i < len(s)-1; i++ {
		if s[i] != '\\' {
			units, isEsc = append(units, 0), append(isEsc, false)
			continue
		}
		if s[i+1] != 'u' {
			i++
			units, isEsc = append(units, 0), append(isEsc, false)
			continue
		}
		var v uint16
		for _, c := range s[i+2 : i+6] {
			v <<= 4
			switch {
			case c <= '9':
				v |= uint16(c - '0')
			case c >= 'a':
				v |= uint16(c-'a') + 10
			default:
				v |= uint16(c-'A') + 10
			}
		}
		units, isEsc = append(units, v), append(isEsc, true)
		i += 5
	}
	for k := 0; k < len(units); k++ {
		u := units[k]
		if !isEsc[k] || u < 0xD800 || u > 0xDFFF {
			continue
		}
		if u >= 0xDC00 {
			return true
		}
		if k+1 >= len(units) || !isEsc[k+1] || units[k+1] < 0xDC00 || units[k+1] > 0xDFFF {
			return true
		}
		k++ // skip the low half of the pair
	}
	return false
}

// FuzzSeedDecode checks the word-at-a-time scanners against their byte loop
// references (checkScanners), and Decode against encoding/json: the payload is
// accepted iff it is UTF-8, encoding/json accepts it and it is an object
// with a non-empty string "tag" (no lone surrogate) and a non-null
// "message"; the tag equals encoding/json's string and the message is
// exactly encoding/json's raw value for the last "message" key.
func FuzzSeedDecode(f *testing.F) {
	var d SeedDecoder
	f.Fuzz(func(t *testing.T, p []byte) {
		checkScanners(t, p)
		// DecodeValid answers as Decode does for valid UTF-8 and stays in
		// bounds (no panic) for the rest. Its results are copied: the
		// tag may be the decoder's scratch, which Decode reuses.
		vt, vm, verr := d.DecodeValid(p)
		vtag, vmsg := string(vt), string(vm)
		tag, msg, err := d.Decode(p)
		// The encoder's form, where it answers, answers as the general
		// path does.
		if ft, fm, ok := d.decodeEncoderForm(p); ok {
			ftag, fmsg := string(ft), string(fm)
			at, am, aerr := d.decodeAny(p)
			if aerr != nil || string(at) != ftag || string(am) != fmsg {
				t.Fatalf("decodeEncoderForm(%q) = %q, %q; decodeAny = %q, %q, %v", p, ftag, fmsg, at, am, aerr)
			}
			tag, msg, err = d.Decode(p) // decodeAny may have reused the scratch
		}
		if utf8.Valid(p) && (verr != err || vtag != string(tag) || vmsg != string(msg)) {
			t.Fatalf("DecodeValid(%q) = %q, %q, %v; Decode = %q, %q, %v", p, vtag, vmsg, verr, tag, msg, err)
		}

		want := func(e error) {
			t.Helper()
			if err != e {
				t.Fatalf("Decode(%q) error = %v, want %v", p, err, e)
			}
		}
		if !utf8.Valid(p) {
			want(ErrInvalidUTF8)
			return
		}
		if !json.Valid(p) {
			want(ErrInvalidJSON)
			return
		}
		if p[skipWS(p, 0)] != '{' {
			want(ErrNotObject)
			return
		}
		var m map[string]json.RawMessage
		if e := json.Unmarshal(p, &m); e != nil {
			t.Fatalf("encoding/json: %v", e)
		}
		rawTag, ok := m["tag"]
		if !ok || rawTag[0] != '"' || string(rawTag) == `""` {
			want(ErrMissingTag)
			return
		}
		if hasLoneSurrogate(string(rawTag)) {
			want(ErrInvalidTag)
			return
		}
		rawMsg, ok := m["message"]
		if !ok || string(rawMsg) == "null" {
			want(ErrMissingMessage)
			return
		}
		want(nil)
		var wantTag string
		if e := json.Unmarshal(rawTag, &wantTag); e != nil {
			t.Fatalf("encoding/json tag: %v", e)
		}
		if string(tag) != wantTag {
			t.Fatalf("Decode(%q) tag = %q, want %q", p, tag, wantTag)
		}
		if !bytes.Equal(msg, rawMsg) {
			t.Fatalf("Decode(%q) message = %q, want %q", p, msg, rawMsg)
		}
		// The message must be re-embeddable: valid JSON on its own, and
		// semantically what encoding/json decodes.
		var c1, c2 bytes.Buffer
		if json.Compact(&c1, msg) != nil || json.Compact(&c2, rawMsg) != nil || c1.String() != c2.String() {
			t.Fatalf("message %q does not compact like %q", msg, rawMsg)
		}
		// Delivered as it came only where that is what the encoder writes.
		if d.Verbatim() != seedVerbatim(p, tag, msg) {
			t.Fatalf("Decode(%q): Verbatim() = %v, the oracle says %v", p, d.Verbatim(), !d.Verbatim())
		}
		if d.Verbatim() {
			frame := AppendSeedFrame(nil, string(tag), msg)
			if got := frame[FrameHeaderLen(len(p)):]; !bytes.Equal(got, p) {
				t.Fatalf("Verbatim() after Decode(%q), but AppendSeedFrame writes %q", p, got)
			}
			if v := AppendSeedFrameVerbatim(nil, p); !bytes.Equal(v, frame) {
				t.Fatalf("AppendSeedFrameVerbatim(%q) = %q, want %q", p, v, frame)
			}
		}
	})
}

func TestSeedDecodeErrorsAreDistinct(t *testing.T) {
	all := []error{ErrInvalidUTF8, ErrInvalidJSON, ErrNotObject, ErrMissingTag, ErrInvalidTag, ErrMissingMessage}
	for i, a := range all {
		for j, b := range all {
			if (i == j) != errors.Is(a, b) {
				t.Fatalf("errors.Is(%v, %v) = %v", a, b, errors.Is(a, b))
			}
		}
	}
}

func BenchmarkSeedDecode(b *testing.B) {
	// A typical telemetry publish with a 64-byte message.
	msg := `{"device":"room1-t1","celsius":21.5,"humidity":40,"ts":17000000}`
	if len(msg) != 64 {
		b.Fatalf("message is %d bytes", len(msg))
	}
	p := []byte(`{"tag": "sensors/room1/temperature", "message": ` + msg + `}`)
	var d SeedDecoder
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := d.Decode(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeedDecodeHarness decodes the frame the benchmark harness
// (bench/compare) publishes: topic bench/fanin/<n> and its default 64-byte
// message {"t":<send time, Unix ns>,"p":"xxx…"}.
func BenchmarkSeedDecodeHarness(b *testing.B) {
	msg := `{"t":1745000000123456789,"p":"` + strings.Repeat("x", 32) + `"}`
	if len(msg) != 64 {
		b.Fatalf("message is %d bytes", len(msg))
	}
	p := []byte(`{"tag":"bench/fanin/17","message":` + msg + `}`)
	var d SeedDecoder
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := d.Decode(p); err != nil {
			b.Fatal(err)
		}
	}
}

// refScanString is scanString as a plain byte loop, the reference for the
// word-at-a-time version.
func refScanString(p []byte, i int) (end int, escaped bool) {
	j := i + 1
	for {
		for j < len(p) && p[j] >= 0x20 && p[j] != '"' && p[j] != '\\' {
			j++
		}
		if j >= len(p) {
			return -1, false
		}
		switch p[j] {
		case '"':
			return j + 1, escaped
		case '\\':
			escaped = true
			if j+1 >= len(p) {
				return -1, false
			}
			switch p[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if len(p)-j < 6 || !isHex(p[j+2]) || !isHex(p[j+3]) || !isHex(p[j+4]) || !isHex(p[j+5]) {
					return -1, false
				}
				j += 6
			default:
				return -1, false
			}
		default: // control character
			return -1, false
		}
	}
}

// refSkipDigits is skipDigits as a plain byte loop.
func refSkipDigits(p []byte, i int) int {
	for i < len(p) && '0' <= p[i] && p[i] <= '9' {
		i++
	}
	return i
}

// checkScanners compares the word-at-a-time scanners with their references
// at every position of p where Decode may call them.
func checkScanners(t *testing.T, p []byte) {
	t.Helper()
	if got, want := ValidUTF8(p), utf8.Valid(p); got != want {
		t.Fatalf("ValidUTF8(%q) = %v, utf8.Valid says %v", p, got, want)
	}
	for i := range p {
		if p[i] == '"' {
			end, esc := scanString(p, i)
			wantEnd, wantEsc := refScanString(p, i)
			if end != wantEnd || esc != wantEsc {
				t.Fatalf("scanString(%q, %d) = %d, %v; reference %d, %v", p, i, end, esc, wantEnd, wantEsc)
			}
		}
	}
	for i := 0; i <= len(p); i++ {
		if got, want := skipDigits(p, i), refSkipDigits(p, i); got != want {
			t.Fatalf("skipDigits(%q, %d) = %d, reference %d", p, i, got, want)
		}
	}
	// Where the compact-object path answers, it answers as skipValue.
	var d SeedDecoder
	valid := utf8.Valid(p)
	for i := range p {
		if p[i] == '{' && valid {
			if end := skipCompactObject(p, i); end >= 0 {
				if want := d.skipValue(p, i, 1); end != want {
					t.Fatalf("skipCompactObject(%q, %d) = %d, skipValue %d", p, i, end, want)
				}
			}
		}
	}
}

// TestSkipCompactObject: the compact-object path takes the objects it is
// for and leaves everything else, valid or not, to skipValue.
func TestSkipCompactObject(t *testing.T) {
	takes := []string{
		`{}`, `{"t":1}`, `{"t":-0.5e+3,"p":"x\"y","a":true,"b":false,"c":null}`,
		`{"device":"room1-t1","celsius":21.5,"humidity":40,"ts":17000000}`, `{"":""}`,
	}
	for _, s := range takes {
		p := []byte(s + `,`)
		if end := skipCompactObject(p, 0); end != len(s) {
			t.Errorf("skipCompactObject(%q) = %d, want %d", s, end, len(s))
		}
	}
	leaves := []string{
		`{ "t":1}`, `{"t": 1}`, `{"t":1 }`, `{"t":{}}`, `{"t":[1]}`, `{"t":1,}`, `{"t"}`, `{"t":}`,
		`{"t":tru}`, `{"t":01}`, `{"t":1`, `{"t":"x`, `{`, `{"t":nul}`, `{t:1}`, `{"t":1]`, `{"t":-}`,
	}
	var d SeedDecoder
	for _, s := range leaves {
		p := []byte(s)
		if end := skipCompactObject(p, 0); end >= 0 && end != d.skipValue(p, 0, 1) {
			t.Errorf("skipCompactObject(%q) = %d, skipValue %d", s, end, d.skipValue(p, 0, 1))
		}
		if skipCompactObject(p, 0) >= 0 {
			t.Errorf("skipCompactObject(%q) took it", s)
		}
	}
}

// TestSWARTests checks the word tests byte by byte: for every value of one
// byte at every position, and of two adjacent bytes at one position, in
// words filled with bytes that do and do not match, the lowest flagged byte
// is the first matching one.
func TestSWARTests(t *testing.T) {
	tests := []struct {
		name  string
		word  func(uint64) uint64
		match func(byte) bool
	}{
		{"stringStops", stringStops, func(c byte) bool { return c < 0x20 || c == '"' || c == '\\' }},
		{"nonDigits", nonDigits, func(c byte) bool { return c < '0' || c > '9' }},
	}
	for _, tc := range tests {
		check := func(b [8]byte) {
			m := tc.word(binary.LittleEndian.Uint64(b[:]))
			want := -1
			for k, c := range b {
				if tc.match(c) {
					want = k
					break
				}
			}
			got := -1
			if m != 0 {
				got = firstByte(m)
			}
			if got != want {
				t.Fatalf("%s(% x): first match %d, want %d", tc.name, b, got, want)
			}
		}
		for _, fill := range []byte{'a', '5', 0x00, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x2f, 0x30, 0x39, 0x3a, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xb9, 0xba, 0xff} {
			var b [8]byte
			for k := range b {
				b[k] = fill
			}
			for k := range 8 {
				for c := range 256 {
					b[k] = byte(c)
					check(b)
				}
				b[k] = fill
			}
			for c := range 1 << 16 {
				b[3], b[4] = byte(c), byte(c>>8)
				check(b)
			}
		}
	}
}

// TestScanStringMatchesReference runs scanString and refScanString over
// strings with a quote, escape, control character or multibyte character
// at every position 0..20 (across the 8-byte word boundaries), after
// fillers of every length, truncated at every length.
func TestScanStringMatchesReference(t *testing.T) {
	specials := []string{`"`, `\"`, `\\`, `\/`, `\n`, `\u00e9`, `\ud83d\ude00`, `\u12`, `\x`, `\`, "\x00", "\x1f", "\n", "\x7f", "é", "😀", "\xff", "\xc3"}
	fillers := []string{"x", "é", "\x80", " "}
	for _, sp := range specials {
		for _, fill := range fillers {
			for pos := range 21 {
				body := strings.Repeat(fill, pos) + sp + strings.Repeat(fill, 3) + `"` + strings.Repeat("y", 9)
				full := []byte(`"` + body)
				for n := 1; n <= len(full); n++ {
					p := full[:n]
					end, esc := scanString(p, 0)
					wantEnd, wantEsc := refScanString(p, 0)
					if end != wantEnd || esc != wantEsc {
						t.Fatalf("scanString(%q, 0) = %d, %v; reference %d, %v", p, end, esc, wantEnd, wantEsc)
					}
				}
			}
		}
	}
}

// TestValidUTF8 compares validUTF8 with utf8.Valid for ASCII of every
// length up to 80 with a valid or invalid non-ASCII sequence at every
// position.
func TestValidUTF8(t *testing.T) {
	seqs := []string{"", "é", "€", "😀", "\xff", "\xc3", "\xc3(", "\xed\xa0\x80", "\xf0\x9f\x98", "\x80"}
	for _, seq := range seqs {
		for n := range 81 {
			for pos := 0; pos <= n; pos++ {
				p := []byte(strings.Repeat("a", pos) + seq + strings.Repeat("b", n-pos))
				if got, want := ValidUTF8(p), utf8.Valid(p); got != want {
					t.Fatalf("ValidUTF8(%q) = %v, utf8.Valid says %v", p, got, want)
				}
			}
		}
	}
}

// TestSkipDigitsMatchesReference checks skipDigits for runs of every length
// up to 40 ending in every kind of byte, from every start.
func TestSkipDigitsMatchesReference(t *testing.T) {
	for _, end := range []string{"", ",", "}", ".", "e", "/", ":", "\x80", "\xff", " "} {
		for n := range 41 {
			p := []byte("-" + strings.Repeat("7", n) + end + "123456789")
			for i := 0; i <= len(p); i++ {
				if got, want := skipDigits(p, i), refSkipDigits(p, i); got != want {
					t.Fatalf("skipDigits(%q, %d) = %d, reference %d", p, i, got, want)
				}
			}
		}
	}
}
