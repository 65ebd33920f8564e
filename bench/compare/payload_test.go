package compare

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

func TestPayloadIsSizedJSONWithTime(t *testing.T) {
	for _, tc := range []struct {
		size int
		sent int64
	}{
		{64, 1732461234567890123},
		{64, -1},
		{64, -200},
		{MinPayloadSize, -9223372036854775808},
		{MinPayloadSize, 9223372036854775807},
		{1000, 42},
	} {
		p := appendPayload([]byte("prefix"), tc.size, tc.sent)[len("prefix"):]
		if len(p) != tc.size {
			t.Errorf("size %d, sent %d: got %d bytes: %s", tc.size, tc.sent, len(p), p)
		}
		var v struct {
			T int64  `json:"t"`
			P string `json:"p"`
		}
		if err := json.Unmarshal(p, &v); err != nil || v.T != tc.sent {
			t.Errorf("not the JSON object with t=%d: %s (%v)", tc.sent, p, err)
		}
		if got, ok := payloadTime(p); !ok || got != tc.sent {
			t.Errorf("payloadTime(%s) = %d, %v; want %d", p, got, ok, tc.sent)
		}
	}
}

func TestPayloadTimeRefusesOtherShapes(t *testing.T) {
	for _, p := range []string{
		``, `{"t":`, `{"t":,"p":""}`, `{"t":0,"p":""}`, `{"t":-0,"p":""}`, `{"t":12}`, `{"t":12"p":""}`,
		`{"x":12,"p":""}`, `{"t":99999999999999999999,"p":""}`, `{"t":9223372036854775808,"p":""}`,
		`{"t":-9223372036854775809,"p":""}`, `{"t":1a,"p":""}`, `{"t":--1,"p":""}`, `[1,2]`,
	} {
		if v, ok := payloadTime([]byte(p)); ok {
			t.Errorf("payloadTime(%q) = %d, accepted", p, v)
		}
	}
}

// FuzzPayloadTime: the decoder never panics, and whatever it accepts is the
// decimal number written after {"t": — the same value strconv finds.
func FuzzPayloadTime(f *testing.F) {
	f.Add([]byte(`{"t":1732461234567890123,"p":"xxxxxxxx"}`))
	f.Add([]byte(`{"t":-5,"p":""}`))
	f.Add([]byte(`{"t":9223372036854775807,"p":""}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		v, ok := payloadTime(p)
		if !ok {
			return
		}
		rest := p[len(`{"t":`):]
		i := bytes.IndexByte(rest, ',')
		if i < 0 {
			t.Fatalf("payloadTime(%q) = %d without a comma after the number", p, v)
		}
		want, err := strconv.ParseInt(string(rest[:i]), 10, 64)
		if err != nil || want != v || v == 0 {
			t.Fatalf("payloadTime(%q) = %d; strconv: %d, %v", p, v, want, err)
		}
	})
}
