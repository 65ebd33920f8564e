package admin

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

type published struct {
	topic   string
	payload string
	isJSON  bool
}

type recPublisher struct {
	mu    sync.Mutex
	calls []published
	n     int
	err   error
}

func (p *recPublisher) Publish(topic string, payload []byte, isJSON bool) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, published{topic, string(payload), isJSON})
	return p.n, p.err
}

func (p *recPublisher) take() []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.calls
	p.calls = nil
	return c
}

func newPublishFixture(t *testing.T) (*fixture, *recPublisher) {
	pub := &recPublisher{n: 3}
	f := newFixture(t, func(c *Config) { c.Publisher = pub; c.MaxPublishBytes = 64 })
	return f, pub
}

func TestPublish(t *testing.T) {
	f, pub := newPublishFixture(t)
	var res PublishResult
	f.must(200, "POST", "/api/v1/publish", `{"topic":"devices/7/cmd","message":{ "reboot" : true }}`, &res)
	if res != (PublishResult{Topic: "devices/7/cmd", Bytes: len(`{"reboot":true}`), JSON: true, LocalDeliveries: 3}) {
		t.Fatalf("answer %+v", res)
	}
	if c := pub.take(); len(c) != 1 || c[0] != (published{"devices/7/cmd", `{"reboot":true}`, true}) {
		t.Fatalf("published %+v", c)
	}
	for msg, want := range map[string]string{`0`: `0`, `false`: `false`, `""`: `""`, `"hé"`: `"hé"`, `[1, 2]`: `[1,2]`} {
		f.must(200, "POST", "/api/v1/publish", `{"topic":"a/b","message":`+msg+`}`, nil)
		if c := pub.take(); len(c) != 1 || c[0].payload != want || !c[0].isJSON {
			t.Errorf("message %s: published %+v", msg, c)
		}
	}
	// Bytes: JSON text stays JSON, anything else is not.
	for payload, isJSON := range map[string]bool{"reboot now": false, `{"a":1}`: true, "\xff\x00binary": false, "": false} {
		b64 := base64.StdEncoding.EncodeToString([]byte(payload))
		f.must(200, "POST", "/api/v1/publish", `{"topic":"a/b","payload_base64":"`+b64+`"}`, &res)
		if c := pub.take(); len(c) != 1 || c[0].payload != payload || c[0].isJSON != isJSON || res.JSON != isJSON || res.Bytes != len(payload) {
			t.Errorf("payload %q: published %+v, answer %+v", payload, c, res)
		}
	}

	// The audit entry has the topic and size, not the payload.
	f.must(200, "POST", "/api/v1/publish", `{"topic":"devices/9/cmd","message":{"secret-looking":"p4yl0ad"}}`, nil)
	e := f.lastEntry()
	if e.Action != "publish" || e.Target != "topic devices/9/cmd" || e.Status != 200 || e.Enforcement != "" {
		t.Fatalf("publish entry %+v", e)
	}
	if d := detailOf(t, e); d["local_deliveries"] != float64(3) || d["json"] != true || strings.Contains(string(e.Detail), "p4yl0ad") {
		t.Fatalf("publish entry detail %s", e.Detail)
	}
}

func TestPublishRefusals(t *testing.T) {
	f, pub := newPublishFixture(t)
	for body, code := range map[string]string{
		`{"topic":"a/+","message":1}`:                               "invalid_value",
		`{"topic":"a/#","message":1}`:                               "invalid_value",
		`{"topic":"","message":1}`:                                  "invalid_value",
		`{"message":1}`:                                             "invalid_value",
		`{"topic":"a"}`:                                             "invalid_value",
		`{"topic":"a","message":null}`:                              "invalid_value",
		`{"topic":"a","message":1,"payload_base64":"AA=="}`:         "invalid_value",
		`{"topic":"a","payload_base64":"not base64!"}`:              "invalid_value",
		`{"topic":"a","payload_base64":"AA"}`:                       "invalid_value", // no padding
		`{"topic":"a","payload_base64":1}`:                          "invalid_json",
		`{"topic":"a","message":1,"qos":1}`:                         "invalid_json",
		`{"topic":"a","message":{"x":}}`:                            "invalid_json",
		`[{"topic":"a","message":1}]`:                               "invalid_json",
		`{"topic":"a\u0000b","message":1}`:                          "invalid_value",
		`{"topic":"a","message":"` + strings.Repeat("x", 63) + `"}`: "body_too_large",
	} {
		status := 400
		if code == "body_too_large" {
			status = 413
		}
		f.mustError(status, code, "POST", "/api/v1/publish", body)
	}
	if c := pub.take(); len(c) != 0 {
		t.Fatalf("refused publishes were delivered: %+v", c)
	}
	if e := f.lastEntry(); e.Action != "publish" || (e.Status != 400 && e.Status != 413) {
		t.Fatalf("a refused publish's entry %+v", e)
	}
	// The broker failing is a 500 without its cause.
	pub.err = errors.New("broker exploded")
	msg := f.mustError(500, "internal", "POST", "/api/v1/publish", `{"topic":"a","message":1}`)
	if strings.Contains(msg, "exploded") {
		t.Fatalf("answer shows the cause: %s", msg)
	}
	// Without a Publisher (or without the key) there is no publish.
	g := newFixture(t)
	g.mustError(404, "not_found", "POST", "/api/v1/publish", `{"topic":"a","message":1}`)
	if code, _ := f.callWith("POST", "/api/v1/publish", `{"topic":"a","message":1}`, map[string]string{"Content-Type": "application/json"}); code != 401 {
		t.Fatalf("publish without the key: %d", code)
	}
	f.mustError(405, "method_not_allowed", "GET", "/api/v1/publish", "")
}

func TestCLIPublish(t *testing.T) {
	f, pub := newPublishFixture(t)
	out := f.cli("publish", "devices/1/cmd", `{"reboot":true}`)
	if !strings.Contains(out, "delivered to 3 subscriber(s)") || !strings.Contains(out, "JSON") {
		t.Errorf("output: %s", out)
	}
	f.cli("publish", "devices/1/cmd", "reboot")
	file := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(file, []byte("\x00\x01bin"), 0o600); err != nil {
		t.Fatal(err)
	}
	var res PublishResult
	if err := json.Unmarshal([]byte(f.cli("publish", "--json", "--file", file, "devices/1/cmd")), &res); err != nil || res.JSON || res.Bytes != 5 {
		t.Fatalf("--file --json: %+v %v", res, err)
	}
	c := pub.take()
	want := []published{{"devices/1/cmd", `{"reboot":true}`, true}, {"devices/1/cmd", "reboot", false}, {"devices/1/cmd", "\x00\x01bin", false}}
	if len(c) != 3 || c[0] != want[0] || c[1] != want[1] || c[2] != want[2] {
		t.Fatalf("published %+v", c)
	}
	if e := f.lastEntry(); e.Action != "publish" || e.Source != "cli" {
		t.Fatalf("CLI publish entry %+v", e)
	}
	f.cliFail(2, "publish", "devices/1/cmd")
	f.cliFail(2, "publish", "--file", file, "devices/1/cmd", "also")
	if errOut := f.cliFail(1, "publish", "devices/+/cmd", "1"); !strings.Contains(errOut, "wildcards") {
		t.Errorf("wildcard topic: %s", errOut)
	}
	if out := f.cli("help", "publish"); !strings.Contains(out, "gatecast publish TOPIC MESSAGE") {
		t.Errorf("help: %s", out)
	}
}
