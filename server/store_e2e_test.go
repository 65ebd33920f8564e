package server

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/gatecast/gatecast/internal/testserver"
)

// The whole seed flow on a node whose store is a real Postgres: admin
// writes land there, sessions are admitted and routed from it, and a revoke
// is enforced live.
func TestPostgresStoreEndToEnd(t *testing.T) {
	dsn := testserver.PostgresDB(t)
	var logs bytes.Buffer
	n := startNodeLogged(t, slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil)), func(c *Config) { c.Store = dsn })
	rw := n.createToken("writer", 0)
	sensors := n.createTag("sensors/#")
	n.grant(rw, sensors, "readwrite")
	sub := n.dialOK(t, rw.Token, "sensors/+/temp")
	pub := n.dialOK(t, rw.Token, "sensors/room1/temp")
	pub.publish("sensors/room1/temp", `{"c":21.5}`)
	sub.expectMessage("sensors/room1/temp", `{"c":21.5}`)

	n.mustAPI("DELETE", "/api/v1/tokens/"+itoa(rw.ID), nil, nil)
	sub.expectClose(4002)
	pub.expectClose(4002)
	n.dial(t, rw.Token, "sensors/#").expectClose(4003) // invalid token, as in the seed

	// The DSN's password never reaches the logs.
	if pw := passwordOf(dsn); pw != "" && strings.Contains(logs.String(), pw) {
		t.Fatalf("logs contain the store password")
	}
	if !strings.Contains(logs.String(), `store="postgres://`) {
		t.Fatalf("start-up log does not name the store:\n%s", logs.String())
	}
}

func TestStoreURLValidated(t *testing.T) {
	for _, bad := range []string{"mysql://x", "redis://localhost:6379", "/var/lib/db.sqlite"} {
		cfg := Defaults()
		cfg.Store = bad
		if err := cfg.Validate(); err == nil {
			t.Errorf("--store %q accepted", bad)
		}
	}
	cfg := Defaults()
	cfg.Store = "postgres://gc:s3cret@127.0.0.1:1/gc"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := storeName(cfg); strings.Contains(got, "s3cret") {
		t.Fatalf("store name %q shows the password", got)
	}
	// An unreachable Postgres is a start-up error naming the store, not a hang.
	cfg.DataDir = t.TempDir()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.MQTTListen = "127.0.0.1:0"
	_, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "opening the store") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("start with unreachable Postgres: %v", err)
	}
}

func passwordOf(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	colon := strings.LastIndex(dsn[:max(at, 0)], ":")
	if at < 0 || colon < 0 || colon < strings.Index(dsn, "//") {
		return ""
	}
	return dsn[colon+1 : at]
}

// Postgres stops: admin writes answer 503, the data plane keeps serving
// from cached grants (live sessions publish and receive, a known token
// reconnects); when Postgres is back, admin writes work again.
func TestPostgresDownDataPlaneServes(t *testing.T) {
	pg := testserver.StartPostgres(t)
	n := startNode(t, func(c *Config) { c.Store = pg.DSN() })
	rw := n.createToken("writer", 0)
	n.grant(rw, n.createTag("sensors/#"), "readwrite")
	sub := n.dialOK(t, rw.Token, "sensors/#")
	pub := n.dialOK(t, rw.Token, "sensors/room1/temp")

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	var out map[string]map[string]string
	if code := n.api("POST", "/api/v1/tokens", map[string]any{"name": "new"}, &out); code != 503 || out["error"]["code"] != "unavailable" {
		t.Fatalf("admin write with Postgres down: %d %v, want 503 unavailable", code, out)
	}
	pub.publish("sensors/room1/temp", `{"c":1}`)
	sub.expectMessage("sensors/room1/temp", `{"c":1}`)
	again := n.dialOK(t, rw.Token, "sensors/#") // cached token: no store read
	pub.publish("sensors/room1/temp", `{"c":2}`)
	sub.expectMessage("sensors/room1/temp", `{"c":2}`)
	again.expectMessage("sensors/room1/temp", `{"c":2}`)

	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "admin writes work again", func() bool {
		return n.api("POST", "/api/v1/tokens", map[string]any{"name": "after"}, nil) == 201
	})
}
