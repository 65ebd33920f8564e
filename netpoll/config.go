package netpoll

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SlowConsumerPolicy says what Send does when a connection's outbox is full.
type SlowConsumerPolicy int

const (
	// DropNewest drops the frame being sent and counts it
	// (gatecast_ws_frames_dropped_total{reason="slow_consumer"}). The
	// connection stays open and receives later frames once it catches up.
	DropNewest SlowConsumerPolicy = iota
	// CloseSlow drops the frame and closes the connection with 1008
	// "slow consumer".
	CloseSlow
)

// String returns the policy's configuration name.
func (p SlowConsumerPolicy) String() string {
	switch p {
	case DropNewest:
		return "drop"
	case CloseSlow:
		return "close"
	}
	return fmt.Sprintf("SlowConsumerPolicy(%d)", int(p))
}

// Defaults applied by NewServer to zero fields of Config.
const (
	DefaultMaxFrameSize     = 64 << 10
	DefaultMaxHeaderBytes   = 8 << 10
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultPingInterval     = 30 * time.Second
	DefaultIdleTimeout      = 75 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultCloseTimeout     = 2 * time.Second
	DefaultOutboxLimit      = 8 << 20
	DefaultInputBufferLimit = 256 << 10
	DefaultInputTotalLimit  = 1 << 30
	DefaultMaxInboundRate   = 100000
	DefaultLagProbeInterval = 250 * time.Millisecond
	DefaultInboundRateGrace = 3 * time.Second

	// Unlimited, as MaxInboundRate, turns the inbound rate limit off.
	Unlimited = -1
)

// Limits on configuration values: beyond them a setting is a mistake, not a
// tuning choice.
const (
	maxMaxFrameSize   = 64 << 20
	minMaxHeaderBytes = 256
	maxMaxHeaderBytes = 1 << 20
	minOutboxLimit    = 4 << 10
	maxOutboxLimit    = 4 << 30
	minInputLimit     = 16 << 10
	maxInputLimit     = 256 << 20
)

// Config configures a Server. Zero durations and sizes take the defaults
// above.
type Config struct {
	Addr             string        // listen address, e.g. "127.0.0.1:8080"; port 0 picks a free port (see Server.Addr)
	Paths            []string      // accepted request paths (exact match, query excluded); any other path gets HTTP 404
	MaxFrameSize     int           // largest message (one frame or the sum of its fragments); larger → close 1009
	MaxHeaderBytes   int           // largest upgrade request (request line + headers); larger → HTTP 431
	HandshakeTimeout time.Duration // from accept to completed upgrade; exceeded → TCP closed
	PingInterval     time.Duration // a connection silent this long gets a ping
	IdleTimeout      time.Duration // a connection that sent nothing (not even a pong) this long is closed 1001 "idle timeout"
	WriteTimeout     time.Duration // a flush that cannot complete this long closes the TCP connection
	CloseTimeout     time.Duration // after our close frame (or HTTP error) is flushed, wait this long for the peer's close/EOF
	// OutboxLimit is the hard bound on a connection's pending output
	// (queued frames plus the batch being written), in bytes: a frame that
	// would pass it is dropped (gatecast_ws_frames_dropped_total
	// {reason="slow_consumer"}), and a connection that stays at it for
	// WriteTimeout is a slow consumer (SlowConsumer policy). A first frame
	// is always queued. Past OutboxSoftLimit (default half of it) the
	// connection is backlogged: Backlog hands senders a channel to wait on,
	// which is how publishers are slowed before anything is dropped.
	OutboxLimit     int
	OutboxSoftLimit int
	// OutboxTotalLimit bounds the pending output of all connections
	// together: past it, a backlogged connection (past its soft limit) is
	// treated as being at its hard limit, so the slowest consumers are cut
	// first (reason="outbox_total"). Default: a quarter of the machine's
	// memory.
	OutboxTotalLimit int64
	SlowConsumer     SlowConsumerPolicy
	// InputBufferLimit bounds a connection's unread input: once netpoll
	// holds this many bytes not yet decoded, it stops reading the socket
	// (TCP flow control then slows the client) until half of them are
	// consumed. A partial frame is copied out of that buffer, so a message
	// of MaxFrameSize still fits whatever this is.
	InputBufferLimit int
	// InputTotalLimit bounds the unread input of all connections together:
	// while the connections' buffers hold more, a connection found with
	// input is paused (as if at its own limit) until the total is back
	// under three quarters of this. Default 1 GiB.
	InputTotalLimit int64
	// MaxInboundRate is the messages (text, binary, ping, pong) a
	// connection may send per second, with bursts of InboundBurst (default
	// twice the rate). Beyond it messages are dropped and counted
	// (gatecast_ws_inbound_dropped_total); a connection still over the rate
	// InboundRateGrace after its first drop, without having paused long
	// enough to refill half its burst, is closed with 1008. Unlimited turns
	// the limit off.
	MaxInboundRate   int
	InboundBurst     int
	InboundRateGrace time.Duration
	// FDReserve is how many file descriptors below the process's limit
	// (RLIMIT_NOFILE) accepting pauses, so that the admin listener, store
	// and Redis connections always find one. Default: 5% of the limit,
	// between 64 and 1024.
	FDReserve int
	// Subprotocols the server may select, in no particular order: when a
	// client offers one of them in Sec-WebSocket-Protocol, the first one it
	// offers is echoed in the 101 response and reported as
	// Handshake.Subprotocol. Empty: never select one (seed clients send none;
	// the offered list is still reported in Handshake.Protocol).
	Subprotocols []string
	// CaptureHeaders names the upgrade request headers whose values the
	// Handler needs (case-insensitive; e.g. "Tag"): each is reported in
	// Handshake.Headers at the same index, repeated headers joined with ','.
	// Authorization is always captured (Handshake.Authorization); the
	// headers the WebSocket handshake itself consumes (Host, Upgrade,
	// Connection, Sec-WebSocket-Key, -Version, -Protocol, -Extensions)
	// cannot be captured (the Sec-WebSocket-Protocol offer is
	// Handshake.Protocol). Capturing allocates nothing per upgrade.
	CaptureHeaders []string
	// LagProbeInterval is how often one read wakeup is timed for
	// gatecast_eventloop_lag_seconds (see lag.go): at most one observation
	// per interval, none while no connection has input.
	LagProbeInterval time.Duration
	Logger           *slog.Logger          // nil: discard
	Registerer       prometheus.Registerer // nil: metrics are kept but not registered
}

// withDefaults returns cfg with defaults applied, or an error naming the
// first invalid setting.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Addr == "" {
		return cfg, errors.New("netpoll: Config.Addr is empty")
	}
	if len(cfg.Paths) == 0 {
		return cfg, errors.New("netpoll: Config.Paths is empty: no request path would be accepted")
	}
	for _, p := range cfg.Paths {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "? \t\r\n") {
			return cfg, fmt.Errorf("netpoll: Config.Paths: %q is not an absolute path without query", p)
		}
	}
	for _, p := range cfg.Subprotocols {
		if p == "" || strings.ContainsAny(p, ", \t\r\n") {
			return cfg, fmt.Errorf("netpoll: Config.Subprotocols: %q is not a token", p)
		}
	}
	if len(cfg.CaptureHeaders) > 0 {
		names := make([]string, len(cfg.CaptureHeaders)) // the caller's slice stays as it was
		for i, name := range cfg.CaptureHeaders {
			canon, err := captureName(name)
			if err != nil {
				return cfg, err
			}
			if slices.Contains(names[:i], canon) {
				return cfg, fmt.Errorf("netpoll: Config.CaptureHeaders: %q is listed twice", name)
			}
			names[i] = canon
		}
		cfg.CaptureHeaders = names
	}
	if err := defaultInt(&cfg.MaxFrameSize, DefaultMaxFrameSize, 1, maxMaxFrameSize, "MaxFrameSize"); err != nil {
		return cfg, err
	}
	if err := defaultInt(&cfg.MaxHeaderBytes, DefaultMaxHeaderBytes, minMaxHeaderBytes, maxMaxHeaderBytes, "MaxHeaderBytes"); err != nil {
		return cfg, err
	}
	if err := defaultInt(&cfg.OutboxLimit, DefaultOutboxLimit, minOutboxLimit, maxOutboxLimit, "OutboxLimit"); err != nil {
		return cfg, err
	}
	if err := defaultInt(&cfg.OutboxSoftLimit, cfg.OutboxLimit/2, 1, cfg.OutboxLimit, "OutboxSoftLimit"); err != nil {
		return cfg, err
	}
	switch {
	case cfg.OutboxTotalLimit == 0:
		cfg.OutboxTotalLimit = DefaultOutboxTotalLimit()
	case cfg.OutboxTotalLimit < int64(cfg.OutboxLimit):
		return cfg, fmt.Errorf("netpoll: Config.OutboxTotalLimit = %d is below OutboxLimit (%d)", cfg.OutboxTotalLimit, cfg.OutboxLimit)
	}
	if err := defaultInt(&cfg.InputBufferLimit, DefaultInputBufferLimit, minInputLimit, maxInputLimit, "InputBufferLimit"); err != nil {
		return cfg, err
	}
	switch {
	case cfg.InputTotalLimit == 0:
		cfg.InputTotalLimit = DefaultInputTotalLimit
	case cfg.InputTotalLimit < int64(cfg.InputBufferLimit):
		return cfg, fmt.Errorf("netpoll: Config.InputTotalLimit = %d is below InputBufferLimit (%d)", cfg.InputTotalLimit, cfg.InputBufferLimit)
	}
	switch {
	case cfg.MaxInboundRate == Unlimited:
	case cfg.MaxInboundRate == 0:
		cfg.MaxInboundRate = DefaultMaxInboundRate
	case cfg.MaxInboundRate < 0:
		return cfg, fmt.Errorf("netpoll: Config.MaxInboundRate = %d is negative (Unlimited is %d)", cfg.MaxInboundRate, Unlimited)
	}
	if cfg.MaxInboundRate != Unlimited {
		if err := defaultInt(&cfg.InboundBurst, 2*cfg.MaxInboundRate, 1, 1<<30, "InboundBurst"); err != nil {
			return cfg, err
		}
	}
	if cfg.FDReserve < 0 {
		return cfg, fmt.Errorf("netpoll: Config.FDReserve = %d is negative", cfg.FDReserve)
	}
	durations := []struct {
		v    *time.Duration
		def  time.Duration
		name string
	}{
		{&cfg.HandshakeTimeout, DefaultHandshakeTimeout, "HandshakeTimeout"},
		{&cfg.PingInterval, DefaultPingInterval, "PingInterval"},
		{&cfg.IdleTimeout, DefaultIdleTimeout, "IdleTimeout"},
		{&cfg.WriteTimeout, DefaultWriteTimeout, "WriteTimeout"},
		{&cfg.CloseTimeout, DefaultCloseTimeout, "CloseTimeout"},
		{&cfg.LagProbeInterval, DefaultLagProbeInterval, "LagProbeInterval"},
		{&cfg.InboundRateGrace, DefaultInboundRateGrace, "InboundRateGrace"},
	}
	for _, d := range durations {
		switch {
		case *d.v < 0:
			return cfg, fmt.Errorf("netpoll: Config.%s is negative (%v)", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		case *d.v < time.Millisecond:
			return cfg, fmt.Errorf("netpoll: Config.%s %v is below 1ms", d.name, *d.v)
		}
	}
	if cfg.IdleTimeout <= cfg.PingInterval {
		return cfg, fmt.Errorf("netpoll: Config.IdleTimeout (%v) must exceed PingInterval (%v), or a ping could never be answered in time",
			cfg.IdleTimeout, cfg.PingInterval)
	}
	if cfg.SlowConsumer != DropNewest && cfg.SlowConsumer != CloseSlow {
		return cfg, fmt.Errorf("netpoll: Config.SlowConsumer: unknown policy %d", int(cfg.SlowConsumer))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// captureName validates a header name of Config.CaptureHeaders and returns
// it in the canonical form gobwas hands header keys to Upgrader.OnHeader
// ("sec-foo-bar" → "Sec-Foo-Bar").
func captureName(name string) (string, error) {
	if name == "" {
		return "", errors.New("netpoll: Config.CaptureHeaders: empty header name")
	}
	b := []byte(name)
	upper := true
	for i, c := range b {
		if !isTokenChar(c) {
			return "", fmt.Errorf("netpoll: Config.CaptureHeaders: %q is not a header name", name)
		}
		switch {
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
		upper = c == '-'
	}
	canon := string(b)
	switch canon {
	case "Host", "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions":
		// gobwas handles these itself and never passes them to OnHeader.
		return "", fmt.Errorf("netpoll: Config.CaptureHeaders: %q is consumed by the WebSocket handshake", name)
	}
	return canon, nil
}

func defaultInt(v *int, def, lo, hi int, name string) error {
	if *v == 0 {
		*v = def
	}
	if *v < lo || *v > hi {
		return fmt.Errorf("netpoll: Config.%s = %d is outside [%d, %d]", name, *v, lo, hi)
	}
	return nil
}

// sweepInterval is the sweeper's tick: a quarter of the shortest timeout, so
// every deadline is enforced within 25% of its value, bounded to keep the
// sweeper cheap with long timeouts and sane with tiny test timeouts.
func (cfg *Config) sweepInterval() time.Duration {
	d := min(cfg.HandshakeTimeout, cfg.PingInterval, cfg.IdleTimeout, cfg.WriteTimeout, cfg.CloseTimeout) / 4
	return min(max(d, 5*time.Millisecond), time.Second)
}
