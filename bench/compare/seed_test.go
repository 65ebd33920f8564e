package compare

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gatecast/gatecast/proto"
)

func TestSeedPublishFrame(t *testing.T) {
	payload := appendPayload(nil, 64, 1732461234567890123)
	b, err := appendSeedPublish(nil, "bench/fanout", payload)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"tag":"bench/fanout","message":` + string(payload) + `}`
	if string(b) != want {
		t.Errorf("frame = %s, want %s", b, want)
	}
	// Topics that need escaping stay exact through a JSON decoder.
	for _, topic := range []string{`a"b`, `a\b`, "a\x01b", "ünï/ç"} {
		b, err := appendSeedPublish(nil, topic, []byte(`1`))
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Tag     string          `json:"tag"`
			Message json.RawMessage `json:"message"`
		}
		if err := json.Unmarshal(b, &v); err != nil || v.Tag != topic || string(v.Message) != "1" {
			t.Errorf("topic %q: frame %s decodes to %+v (%v)", topic, b, v, err)
		}
	}
	for _, tc := range []struct {
		topic   string
		payload []byte
	}{{"", []byte("1")}, {"a", nil}, {"a\xff", []byte("1")}} {
		if b, err := appendSeedPublish([]byte("keep"), tc.topic, tc.payload); err == nil || string(b) != "keep" {
			t.Errorf("appendSeedPublish(%q, %q) = %q, %v; want an error and dst unchanged", tc.topic, tc.payload, b, err)
		}
	}
}

func TestSeedWireDecodesDeliveries(t *testing.T) {
	w := &seedWire{}
	n, ev, err := w.parse([]byte(`{"tag":"bench/fanin/3","message":{"t":5,"p":"x"}}`))
	if err != nil || n == 0 || ev.kind != evMessage || string(ev.topic) != "bench/fanin/3" || string(ev.payload) != `{"t":5,"p":"x"}` {
		t.Errorf("parse = %d %+v %v", n, ev, err)
	}
	if _, _, err := w.parse([]byte(`{"tag":"a"}`)); err == nil {
		t.Error("a delivery without a message is not an error")
	}
	if _, _, err := w.parse([]byte(`not json`)); err == nil {
		t.Error("a delivery that is not JSON is not an error")
	}
}

// FuzzSeedPublishRoundTrip: whatever the client encoder accepts, Gatecast's
// own decoder reads back as the same topic and message.
func FuzzSeedPublishRoundTrip(f *testing.F) {
	f.Add("bench/fanout", `{"t":1,"p":"x"}`)
	f.Add(`a"\`, `[1,2]`)
	f.Fuzz(func(t *testing.T, topic, message string) {
		trimmed := strings.Trim(message, " \t\r\n")
		if !json.Valid([]byte(message)) || !utf8.ValidString(message) || trimmed == "null" {
			return // the harness publishes UTF-8 JSON values; null is "no message" in the seed protocol
		}
		b, err := appendSeedPublish(nil, topic, []byte(message))
		if err != nil {
			return
		}
		var d proto.SeedDecoder
		tag, msg, err := d.Decode(b)
		if err != nil {
			t.Fatalf("frame %q: %v", b, err)
		}
		if string(tag) != topic || string(msg) != trimmed {
			t.Fatalf("frame %q decodes to %q, %q", b, tag, msg)
		}
	})
}
