package server

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gatecast.conf")
	os.WriteFile(file, []byte("# comment\nlisten = 127.0.0.1:9000\nadmin-listen = 127.0.0.1:9001\nping-interval = 5s\nidle-timeout=20s\n"), 0o600)
	env := map[string]string{"GATECAST_CONFIG": file, "GATECAST_ADMIN_LISTEN": "127.0.0.1:9101", "GATECAST_LOG_LEVEL": "debug"}
	cfg, err := ParseConfig([]string{"--log-level", "warn", "--data-dir", "/tmp/x"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9000" || cfg.AdminListen != "127.0.0.1:9101" || cfg.LogLevel != "warn" ||
		cfg.DataDir != "/tmp/x" || cfg.PingInterval != 5*time.Second || cfg.IdleTimeout != 20*time.Second {
		t.Fatalf("precedence wrong: %+v", cfg)
	}
}

func TestParseConfigRejectsBadValues(t *testing.T) {
	for _, args := range [][]string{
		{"--listen", "nope"},
		{"--slow-consumer", "maybe"},
		{"--max-frame-size", "1"},
		{"--ping-interval", "10s", "--idle-timeout", "5s"},
		{"--log-format", "xml"},
		{"--admin-key", "short"},
		{"stray"},
		{"--advertise-admin", "0.0.0.0:9000"},
		{"--advertise-admin", "10.0.0.1:0"},
		{"--store", "postgres://x/y", "--redis", "127.0.0.1:6379", "--admin-listen", "0.0.0.0:8081"},
	} {
		if _, err := ParseConfig(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	if _, err := ParseConfig(nil, func(k string) string {
		if k == "GATECAST_OUTBOX_LIMIT" {
			return "lots"
		}
		return ""
	}, io.Discard); err == nil || !strings.Contains(err.Error(), "GATECAST_OUTBOX_LIMIT") {
		t.Errorf("bad env value: %v", err)
	}
}

func TestAdvertiseAdminAccepted(t *testing.T) {
	for _, args := range [][]string{
		{"--store", "postgres://x/y", "--redis", "127.0.0.1:6379", "--admin-listen", "0.0.0.0:8081", "--advertise-admin", "10.0.0.7"},
		{"--store", "postgres://x/y", "--redis", "127.0.0.1:6379", "--admin-listen", "[::]:8081", "--advertise-admin", "node-a.internal:9081"},
	} {
		cfg, err := ParseConfig(args, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
}

func TestServeHelpListsEverySetting(t *testing.T) {
	var out strings.Builder
	_, err := ParseConfig([]string{"--help"}, func(string) string { return "" }, &out)
	if err == nil {
		t.Fatal("--help should stop parsing")
	}
	for _, name := range []string{"data-dir", "listen", "admin-listen", "admin-key", "max-frame-size", "idle-timeout", "slow-consumer", "GATECAST_"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("help lacks %q", name)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"65536": 65536, "8MiB": 8 << 20, "512KiB": 512 << 10, "1gib": 1 << 30, "2 TiB": 2 << 40, "100B": 100, "0": 0,
	} {
		var b ByteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5MiB", "8MB", "1e6", "99999999999TiB"} {
		var b ByteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) accepted as %d", in, b)
		}
	}
	if s := ByteSize(8 << 20).String(); s != "8MiB" {
		t.Errorf("String = %q", s)
	}
	if s := ByteSize(1000).String(); s != "1000" {
		t.Errorf("String = %q", s)
	}
	cfg, err := ParseConfig([]string{"--outbox-limit", "1MiB", "--outbox-soft-limit", "256KiB"}, func(string) string { return "" }, io.Discard)
	if err != nil || cfg.OutboxLimit != 1<<20 || cfg.OutboxSoftLimit != 256<<10 {
		t.Fatalf("parse: %+v %v", cfg.OutboxLimit, err)
	}
	if _, err := ParseConfig([]string{"--outbox-limit", "1MiB", "--outbox-soft-limit", "2MiB"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Fatal("soft limit above the hard one accepted")
	}
}

func TestForwardSettings(t *testing.T) {
	env := func(string) string { return "" }
	cfg, err := ParseConfig(nil, env, io.Discard)
	if err != nil || cfg.ForwardBatch != 64<<10 || cfg.ForwardQueue != 8<<20 {
		t.Fatalf("defaults: batch %v queue %v, %v", cfg.ForwardBatch, cfg.ForwardQueue, err)
	}
	cfg, err = ParseConfig([]string{"--forward-batch", "0", "--forward-queue", "1MiB"}, env, io.Discard)
	if err != nil || cfg.ForwardBatch != 0 || cfg.ForwardQueue != 1<<20 {
		t.Fatalf("set: batch %v queue %v, %v", cfg.ForwardBatch, cfg.ForwardQueue, err)
	}
	for _, bad := range [][]string{{"--forward-queue", "1KiB"}, {"--forward-batch", "1GiB"}} {
		if _, err := ParseConfig(bad, env, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
