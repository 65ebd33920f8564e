package netpoll

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestConfigDefaultsAndValidation(t *testing.T) {
	base := Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}}
	got, err := base.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxFrameSize != 64<<10 || got.MaxHeaderBytes != 8<<10 || got.HandshakeTimeout != 5*time.Second ||
		got.PingInterval != 30*time.Second || got.IdleTimeout != 75*time.Second || got.WriteTimeout != 10*time.Second ||
		got.CloseTimeout != 2*time.Second || got.OutboxLimit != 8<<20 || got.OutboxSoftLimit != 4<<20 || got.SlowConsumer != DropNewest || got.Logger == nil ||
		got.LagProbeInterval != 250*time.Millisecond {
		t.Fatalf("defaults = %+v", got)
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{
			name:   "no address",
			mutate: func(c *Config) { c.Addr = "" },
			want:   "Addr",
		},
		{
			name:   "no paths",
			mutate: func(c *Config) { c.Paths = nil },
			want:   "Paths",
		},
		{
			name:   "relative path",
			mutate: func(c *Config) { c.Paths = []string{"ws"} },
			want:   "Paths",
		},
		{
			name:   "path with query",
			mutate: func(c *Config) { c.Paths = []string{"/ws?x=1"} },
			want:   "Paths",
		},
		{
			name:   "negative frame size",
			mutate: func(c *Config) { c.MaxFrameSize = -1 },
			want:   "MaxFrameSize",
		},
		{
			name:   "tiny header limit",
			mutate: func(c *Config) { c.MaxHeaderBytes = 10 },
			want:   "MaxHeaderBytes",
		},
		{
			name:   "sub-millisecond lag probe",
			mutate: func(c *Config) { c.LagProbeInterval = time.Microsecond },
			want:   "LagProbeInterval",
		},
		{
			name:   "negative timeout",
			mutate: func(c *Config) { c.WriteTimeout = -time.Second },
			want:   "WriteTimeout",
		},
		{
			name:   "idle not above ping",
			mutate: func(c *Config) { c.PingInterval, c.IdleTimeout = time.Minute, time.Minute },
			want:   "IdleTimeout",
		},
		{
			name:   "unknown policy",
			mutate: func(c *Config) { c.SlowConsumer = 7 },
			want:   "SlowConsumer",
		},
		{
			name:   "captured header with a space",
			mutate: func(c *Config) { c.CaptureHeaders = []string{"X Tag"} },
			want:   "CaptureHeaders",
		},
		{
			name:   "captured header twice",
			mutate: func(c *Config) { c.CaptureHeaders = []string{"Tag", "tag"} },
			want:   "CaptureHeaders",
		},
		{
			name:   "captured handshake header",
			mutate: func(c *Config) { c.CaptureHeaders = []string{"sec-websocket-key"} },
			want:   "CaptureHeaders",
		},
		{
			name:   "subprotocol with a comma",
			mutate: func(c *Config) { c.Subprotocols = []string{"a,b"} },
			want:   "Subprotocols",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mutate(&cfg)
			_, err := NewServer(cfg, newTestHandler())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
	if _, err := NewServer(base, nil); err == nil {
		t.Fatal("nil Handler accepted")
	}
}

func TestMetricsRegisteredOncePerRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}, Registerer: reg}
	if _, err := NewServer(cfg, newTestHandler()); err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(cfg, newTestHandler()); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second server on one registry: %v", err)
	}
}

func TestSweepInterval(t *testing.T) {
	cfg, _ := Config{Addr: "x", Paths: []string{"/"}}.withDefaults()
	if got := cfg.sweepInterval(); got != 500*time.Millisecond {
		t.Errorf("defaults: %v, want CloseTimeout/4 = 500ms", got)
	}
	cfg.CloseTimeout = time.Millisecond
	if got := cfg.sweepInterval(); got != 5*time.Millisecond {
		t.Errorf("tiny timeout: %v, want the 5ms floor", got)
	}
}

func TestTruncateReason(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	got := truncateReason(long)
	if len(got) > maxCloseReason || len(got) < maxCloseReason-1 || !strings.HasPrefix(long, got) {
		t.Fatalf("truncated to %d bytes", len(got))
	}
	if truncateReason("short") != "short" {
		t.Fatal("short reason changed")
	}
}
