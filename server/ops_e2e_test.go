package server

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAdminRequiresKey(t *testing.T) {
	n := startNode(t)
	for _, auth := range []string{"", "Bearer wrong-key-wrong-key", "Bearer " + n.AdminKey() + "x"} {
		req, _ := http.NewRequest("GET", "http://"+n.AdminAddr()+"/api/v1/tokens", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(string(body), `"error"`) {
			t.Fatalf("auth %q: HTTP %d %s", auth, resp.StatusCode, body)
		}
	}
}

// The generated admin key is private to the user running the broker.
func TestAdminKeyFileMode(t *testing.T) {
	n := startNode(t)
	st, err := os.Stat(filepath.Join(n.cfg.DataDir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("admin.key mode %v, want 0600", st.Mode().Perm())
	}
}

func TestMetricsAndHealth(t *testing.T) {
	f := newFleet(t)
	sub := f.dialOK(t, f.ro.Token, "sensors/#")
	pub := f.dialOK(t, f.rw.Token, "sensors/a")
	f.dial(t, "gc_wrong", "sensors/#").expectClose(4003)
	pub.publish("sensors/a", `1`)
	sub.expectMessage("sensors/a", `1`)

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + f.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Fatalf("healthz: %d %s", code, body)
	}
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("metrics: HTTP %d", code)
	}
	for _, want := range []string{
		`gatecast_connections{protocol="seed"} 2`,
		`gatecast_connects_total{result="accepted"} 2`,
		`gatecast_connects_total{result="rejected_auth"} 1`,
		`gatecast_messages_in_total{protocol="seed"} 1`,
		`gatecast_messages_out_total{protocol="seed"} 1`,
		"gatecast_subscriptions 2",
		"gatecast_ws_connections",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// never a secret in the metrics
	if strings.Contains(body, f.ro.Token) {
		t.Fatal("a token secret appears in /metrics")
	}
}

// Secrets never reach the logs, whatever happens.
func TestLogsNeverContainSecrets(t *testing.T) {
	var logs bytes.Buffer
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.MQTTListen = "127.0.0.1:0"
	cfg.LogLevel = "debug"
	n0, err := Start(cfg, NewLogger(cfg, &syncWriter{w: &logs}))
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{Node: n0, t: t}
	tok := n.createToken("secretive", 1)
	tag := n.createTag("s/#")
	n.grant(tok, tag, "readwrite")
	c := n.dialOK(t, tok.Token, "s/#")
	n.dial(t, tok.Token, "s/#").expectClose(4004)
	n.dial(t, tok.Token+"typo", "s/#").expectClose(4003)
	n.mustAPI("POST", "/api/v1/tokens/"+itoa(tok.ID)+"/rotate", nil, nil)
	c.expectClose(4002)
	_ = n.Shutdown(t.Context())
	time.Sleep(10 * time.Millisecond)
	if strings.Contains(logs.String(), tok.Token) {
		t.Fatalf("the secret appears in the logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "rights change enforced") {
		t.Fatalf("expected an audit trail in the logs:\n%s", logs.String())
	}
}
