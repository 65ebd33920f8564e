package server

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gatecast/gatecast/admin"
	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/cluster"
	"github.com/gatecast/gatecast/netpoll"
	"github.com/gatecast/gatecast/topic"
)

// Config is every setting of `gatecast serve`. Each has a flag, an
// environment variable GATECAST_<NAME> and a default; an optional config
// file (--config) holds `name = value` lines with the flag names.
// Precedence: flag, then environment, then file, then default.
type Config struct {
	DataDir           string
	Store             string
	Redis             string
	NodeID            string
	LeaseTTL          time.Duration
	Staleness         time.Duration
	OnRedisLoss       string
	RevocationWait    time.Duration
	Reconcile         time.Duration
	ForwardBatch      ByteSize // cluster: bytes one SPUBLISH to another node may carry; 0: one message per SPUBLISH (rolling upgrade)
	ForwardQueue      ByteSize // cluster: bytes queued per other node
	ForwardLegacy     bool     // cluster: forward seed frames, for a rolling upgrade from a version before MQTT
	Listen            string
	AdminListen       string
	MQTTListen        string        // MQTT over TCP; "" disables it
	MQTTOnRevoke      string        // close | unsubscribe
	MQTTMaxPacket     ByteSize      // largest inbound MQTT packet
	MQTTMaxInflight   int           // QoS 1/2 deliveries awaiting acknowledgement, per connection
	SessionQueueMax   int           // QoS 1/2 deliveries queued behind them, per session
	SessionExpiryMax  time.Duration // how long a persistent MQTT session outlives its connection, at most
	RetainedMax       int           // retained MQTT messages kept, at most
	SessionQueueBytes ByteSize      // bytes an MQTT session may hold queued, at most
	SessionQueueTotal ByteSize      // and every session together
	RetainedMaxBytes  ByteSize      // and their bytes
	AdvertiseAdmin    string
	AdminKey          string
	LogLevel          string
	LogFormat         string
	MaxFrameSize      int
	MaxHeaderBytes    int
	MaxSubscriptions  int
	MaxTopicBytes     int
	MaxTopicLevels    int
	HandshakeTimeout  time.Duration
	PingInterval      time.Duration
	IdleTimeout       time.Duration
	WriteTimeout      time.Duration
	CloseTimeout      time.Duration
	OutboxLimit       ByteSize
	OutboxSoftLimit   ByteSize // 0: half of OutboxLimit
	OutboxTotalLimit  ByteSize // 0: a quarter of the machine's memory
	SlowConsumer      string
	MaxInputBuffer    ByteSize
	MaxInputTotal     ByteSize
	MaxInboundRate    int
	InboundBurst      int
	FDReserve         int
	ShutdownTimeout   time.Duration

	// AdminAllowedHosts is --admin-allowed-hosts (admin.ParseAllowedHosts).
	AdminAllowedHosts string
}

// Defaults returns the configuration `make run` uses.
func Defaults() Config {
	return Config{
		DataDir:           "./data",
		Listen:            "127.0.0.1:8080",
		AdminListen:       "127.0.0.1:8081",
		MQTTListen:        "127.0.0.1:1883",
		MQTTOnRevoke:      "close",
		MQTTMaxPacket:     1 << 20,
		MQTTMaxInflight:   64,
		SessionQueueMax:   1000,
		SessionExpiryMax:  2 * time.Hour,
		RetainedMax:       100_000,
		SessionQueueBytes: 4 << 20,
		SessionQueueTotal: 512 << 20,
		RetainedMaxBytes:  64 << 20,
		LogLevel:          "info",
		LogFormat:         "text",
		MaxFrameSize:      64 << 10,
		MaxHeaderBytes:    8 << 10,
		MaxSubscriptions:  broker.DefaultMaxSubscriptions,
		MaxTopicBytes:     broker.DefaultMaxTopicBytes,
		MaxTopicLevels:    broker.DefaultMaxTopicLevels,
		HandshakeTimeout:  5 * time.Second,
		PingInterval:      30 * time.Second,
		IdleTimeout:       75 * time.Second,
		WriteTimeout:      10 * time.Second,
		CloseTimeout:      2 * time.Second,
		OutboxLimit:       netpoll.DefaultOutboxLimit,
		SlowConsumer:      "drop",
		MaxInputBuffer:    netpoll.DefaultInputBufferLimit,
		MaxInputTotal:     netpoll.DefaultInputTotalLimit,
		MaxInboundRate:    netpoll.DefaultMaxInboundRate,
		ShutdownTimeout:   10 * time.Second,
		LeaseTTL:          30 * time.Second,
		Staleness:         5 * time.Second,
		OnRedisLoss:       "refuse",
		RevocationWait:    2 * time.Second,
		Reconcile:         5 * time.Minute,
		ForwardBatch:      cluster.DefaultBatchBytes,
		ForwardQueue:      cluster.DefaultPeerQueueBytes,
	}
}

// flagSet declares every setting on fs, bound to c.
func (c *Config) flagSet(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the embedded SQLite database and the generated admin key")
	fs.StringVar(&c.Store, "store", c.Store, "store of tokens, tags and permissions: empty for the embedded SQLite database in --data-dir, or a postgres:// URL")
	fs.StringVar(&c.Redis, "redis", c.Redis, "cluster mode: Redis address(es), host:port[,host:port…] (several = Redis Cluster); needs a postgres:// --store")
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "cluster mode: this node's ID (default: host name plus random suffix)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "cluster mode: how long a node's connection leases and registry entry outlive its last heartbeat")
	fs.DurationVar(&c.Staleness, "revocation-staleness", c.Staleness, "cluster mode: once Redis has been unreachable this long the node can no longer hear revocations and refuses new connections (1013)")
	fs.StringVar(&c.OnRedisLoss, "on-redis-loss", c.OnRedisLoss, "cluster mode, past --revocation-staleness: refuse (new connections only) or close (also close existing ones with 1013)")
	fs.DurationVar(&c.RevocationWait, "revocation-wait", c.RevocationWait, "cluster mode: how long an admin rights change waits for every node to confirm it before answering 202 with the nodes that have not")
	fs.DurationVar(&c.Reconcile, "reconcile-interval", c.Reconcile, "cluster mode: how often every cached token is re-read from the store and enforced, in case a change signal was lost")
	fs.BoolVar(&c.ForwardLegacy, "forward-legacy", c.ForwardLegacy, "cluster mode: forward messages to other nodes as seed frames, which nodes from before MQTT read (set it while a rolling upgrade from such a version runs; MQTT properties and binary payloads then travel as seed JSON)")
	fs.Var(&c.ForwardBatch, "forward-batch", "cluster mode: bytes of messages one SPUBLISH to another node may carry; 0 = one message per SPUBLISH in the frame nodes before batching decode (set it while a rolling upgrade from such a version runs)")
	fs.Var(&c.ForwardQueue, "forward-queue", "cluster mode: bytes queued per other node; past half of it publishers forwarding there are slowed, at it messages for that node are dropped and counted")
	fs.StringVar(&c.Listen, "listen", c.Listen, "WebSocket listener address (host:port)")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin API, /metrics and /healthz listener address (host:port)")
	fs.StringVar(&c.MQTTListen, "mqtt-listen", c.MQTTListen, "MQTT 3.1.1/5 over TCP listener address (host:port); empty disables it (MQTT over WebSocket is on --listen at /mqtt)")
	fs.StringVar(&c.MQTTOnRevoke, "mqtt-on-revoke", c.MQTTOnRevoke, "what a rights change does to an MQTT session whose subscription it no longer covers: close (DISCONNECT 0x87) or unsubscribe (drop only those subscriptions)")
	fs.Var(&c.MQTTMaxPacket, "mqtt-max-packet", "largest MQTT packet a client may send (Maximum Packet Size); larger closes with 0x95")
	fs.IntVar(&c.MQTTMaxInflight, "mqtt-max-inflight", c.MQTTMaxInflight, "QoS 1/2 deliveries awaiting a client's acknowledgement, per connection (lowered to the client's Receive Maximum)")
	fs.IntVar(&c.SessionQueueMax, "session-queue-max", c.SessionQueueMax, "QoS 1/2 deliveries queued for an MQTT session behind its in-flight window or while its client is away; past it the oldest is dropped and counted")
	fs.Var(&c.SessionQueueBytes, "session-queue-bytes", "bytes of QoS 1/2 messages one MQTT session may hold queued (and kept for redelivery); past it the oldest is dropped and counted")
	fs.Var(&c.SessionQueueTotal, "session-queue-total", "bytes of queued QoS 1/2 messages every MQTT session of this node may hold together (as --session-queue-bytes)")
	fs.IntVar(&c.RetainedMax, "retained-max", c.RetainedMax, "retained MQTT messages this node keeps, at most; a retained publish on a new topic past it is refused (MQTT 5: 0x97) and counted")
	fs.Var(&c.RetainedMaxBytes, "retained-max-bytes", "bytes of retained MQTT messages this node keeps, at most (as --retained-max)")
	fs.DurationVar(&c.SessionExpiryMax, "session-expiry-max", c.SessionExpiryMax, "how long a persistent MQTT session (3.1.1 clean session 0, MQTT 5 session expiry) outlives its connection, at most")
	fs.StringVar(&c.AdvertiseAdmin, "advertise-admin", c.AdvertiseAdmin, "cluster mode: host or host:port at which the other nodes reach this node's admin API (default: the --admin-listen address; the port defaults to the listening one; required when --admin-listen is 0.0.0.0 or ::)")
	fs.StringVar(&c.AdminKey, "admin-key", c.AdminKey, "admin API key (default: generated into <data-dir>/admin.key on first start)")
	fs.StringVar(&c.AdminAllowedHosts, "admin-allowed-hosts", c.AdminAllowedHosts, "DNS-rebinding protection: comma-separated host names or host:port the admin listener answers for (Host header); others get 421 on every admin route, /metrics, /healthz and /debug/pprof included; its own listen and advertised addresses are always allowed (default empty: any Host)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	fs.IntVar(&c.MaxFrameSize, "max-frame-size", c.MaxFrameSize, "largest client message in bytes; larger closes with 1009")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", c.MaxHeaderBytes, "largest WebSocket upgrade request in bytes; larger gets HTTP 431")
	fs.IntVar(&c.MaxSubscriptions, "max-subscriptions", c.MaxSubscriptions, "most tags (subscriptions) one connection may request; more closes with 4003")
	fs.IntVar(&c.MaxTopicBytes, "max-topic-bytes", c.MaxTopicBytes, "longest subscription tag (more closes with 4003) or publish topic (more is dropped and counted), in bytes")
	fs.IntVar(&c.MaxTopicLevels, "max-topic-levels", c.MaxTopicLevels, "most '/'-separated levels of a subscription tag (more closes with 4003) or publish topic (more is dropped and counted)")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", c.HandshakeTimeout, "time allowed from TCP accept to a completed WebSocket upgrade")
	fs.DurationVar(&c.PingInterval, "ping-interval", c.PingInterval, "a connection silent this long is sent a ping")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "a connection that sends nothing (not even a pong) this long is closed with 1001")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "a write that cannot progress this long closes the connection")
	fs.DurationVar(&c.CloseTimeout, "close-timeout", c.CloseTimeout, "how long to wait for the client's close frame after ours")
	fs.Var(&c.OutboxLimit, "outbox-limit", "pending output per connection (bytes: 8MiB, 512KiB, 65536) past which frames are dropped; a consumer still there after --write-timeout is a slow consumer")
	fs.Var(&c.OutboxSoftLimit, "outbox-soft-limit", "pending output per connection past which the publishers feeding it are slowed (their reads pause); 0 = half of --outbox-limit")
	fs.Var(&c.OutboxTotalLimit, "outbox-total-limit", "pending output of all connections together past which the slowest consumers are cut first; 0 = a quarter of the machine's memory")
	fs.StringVar(&c.SlowConsumer, "slow-consumer", c.SlowConsumer, "slow-consumer policy: drop (drop and count) or close (close with 1008)")
	fs.Var(&c.MaxInputBuffer, "max-input-buffer", "unread input buffered per connection (bytes: 256KiB) before the broker stops reading its socket (TCP then slows the client)")
	fs.Var(&c.MaxInputTotal, "max-input-total", "unread input buffered for all connections together (bytes: 1GiB) before the broker pauses reading the sockets that hold input")
	fs.IntVar(&c.MaxInboundRate, "max-inbound-rate", c.MaxInboundRate, "messages (incl. pings) per second one connection may send; beyond it they are dropped and counted, sustained for 3s the connection is closed with 1008; 0 = unlimited")
	fs.IntVar(&c.InboundBurst, "inbound-burst", c.InboundBurst, "burst allowed above --max-inbound-rate, in messages; 0 = twice the rate")
	fs.IntVar(&c.FDReserve, "fd-reserve", c.FDReserve, "open files kept free for the admin listener, store and Redis: accepting pauses this close to the process limit; 0 = 5% of the limit, 64 to 1024")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "on SIGTERM/SIGINT, how long to wait for clients to be closed and flushed")
}

// ParseConfig reads settings from args (without the subcommand), the
// environment and an optional config file. usage receives the help text
// for -h.
func ParseConfig(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	c := Defaults()
	fs := flag.NewFlagSet("gatecast serve", flag.ContinueOnError)
	fs.SetOutput(usage)
	c.flagSet(fs)
	var configFile string
	fs.StringVar(&configFile, "config", getenv("GATECAST_CONFIG"), "optional config file of `name = value` lines using these flag names (env GATECAST_CONFIG)")
	fs.Usage = func() {
		fmt.Fprintf(usage, "Usage: gatecast serve [flags]\n\nEvery flag can also be set as GATECAST_<NAME> (e.g. --admin-listen is GATECAST_ADMIN_LISTEN)\nor in the --config file. Precedence: flag, environment, file, default.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	fromEnv := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			fromEnv[f.Name] = v
		}
	})
	if configFile != "" {
		fileVals, err := readConfigFile(configFile)
		if err != nil {
			return c, err
		}
		for name, v := range fileVals {
			if fs.Lookup(name) == nil || name == "config" {
				return c, fmt.Errorf("config file %s: unknown setting %q", configFile, name)
			}
			if explicit[name] || fromEnv[name] != "" {
				continue
			}
			if err := fs.Set(name, v); err != nil {
				return c, fmt.Errorf("config file %s: %s: %w", configFile, name, err)
			}
		}
	}
	for name, v := range fromEnv {
		if explicit[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return c, fmt.Errorf("%s: %w", envName(name), err)
		}
	}
	return c, c.Validate()
}

func envName(flagName string) string {
	return "GATECAST_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func readConfigFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		name, val, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("config file %s:%d: want `name = value`", path, line)
		}
		out[strings.TrimSpace(name)] = strings.Trim(strings.TrimSpace(val), `"`)
	}
	return out, sc.Err()
}

// Validate checks every setting before anything starts.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, a ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, a...))
		}
	}
	check(c.DataDir != "", "--data-dir must not be empty")
	check(c.Redis == "" || isPostgresURL(c.Store), "--redis runs a cluster node, which needs the shared store: set --store postgres://… (the embedded SQLite store is single-node)")
	check(c.LeaseTTL >= time.Second, "--lease-ttl must be at least 1s")
	check(c.RevocationWait > 0, "--revocation-wait must be positive")
	check(c.Reconcile >= time.Second, "--reconcile-interval must be at least 1s")
	check(c.ForwardBatch >= 0 && c.ForwardBatch <= 16<<20, "--forward-batch %v: want 0 (no batching) to 16MiB", c.ForwardBatch)
	check(c.ForwardQueue >= 64<<10 && c.ForwardQueue <= 4<<30, "--forward-queue %v: want 64KiB to 4GiB", c.ForwardQueue)
	check(c.Staleness >= 100*time.Millisecond, "--revocation-staleness must be at least 100ms")
	check(c.OnRedisLoss == "refuse" || c.OnRedisLoss == "close", "--on-redis-loss %q: want refuse or close", c.OnRedisLoss)
	for _, a := range redisAddrs(c.Redis) {
		_, _, err := net.SplitHostPort(a)
		check(err == nil, "--redis %q: want host:port", a)
	}
	check(c.Store == "" || isPostgresURL(c.Store), "--store %q: want empty (embedded SQLite) or a postgres:// URL", redactURL(c.Store))
	for _, a := range []struct{ name, v string }{{"--listen", c.Listen}, {"--admin-listen", c.AdminListen}} {
		_, _, err := net.SplitHostPort(a.v)
		check(err == nil, "%s %q: want host:port", a.name, a.v)
	}
	if c.MQTTListen != "" {
		_, _, err := net.SplitHostPort(c.MQTTListen)
		check(err == nil, "--mqtt-listen %q: want host:port, or empty to disable MQTT over TCP", c.MQTTListen)
		check(c.MQTTListen != c.Listen && c.MQTTListen != c.AdminListen || strings.HasSuffix(c.MQTTListen, ":0"), "--mqtt-listen must differ from --listen and --admin-listen")
	}
	if c.AdvertiseAdmin != "" {
		host, port := c.AdvertiseAdmin, ""
		if h, p, err := net.SplitHostPort(c.AdvertiseAdmin); err == nil {
			host, port = h, p
		}
		_, perr := strconv.Atoi(port)
		check(!isUnspecified(host) && !strings.ContainsAny(host, "/ ") && (port == "" || perr == nil && port != "0"),
			"--advertise-admin %q: want a host or host:port the other nodes can reach", c.AdvertiseAdmin)
	} else if c.Redis != "" {
		host, _, _ := net.SplitHostPort(c.AdminListen)
		check(!isUnspecified(host), "--admin-listen %q listens on every interface: set --advertise-admin to the host:port the other nodes should call", c.AdminListen)
	}
	check(c.Listen != c.AdminListen || strings.HasSuffix(c.Listen, ":0"), "--listen and --admin-listen must differ")
	check(c.AdminKey == "" || len(c.AdminKey) >= 16, "--admin-key must be at least 16 characters")
	if _, err := admin.ParseAllowedHosts(c.AdminAllowedHosts); err != nil {
		errs = append(errs, fmt.Errorf("--admin-allowed-hosts: %w", err))
	}
	check(c.LogLevel == "debug" || c.LogLevel == "info" || c.LogLevel == "warn" || c.LogLevel == "error",
		"--log-level %q: want debug, info, warn or error", c.LogLevel)
	check(c.LogFormat == "text" || c.LogFormat == "json", "--log-format %q: want text or json", c.LogFormat)
	check(c.MaxFrameSize >= 128 && c.MaxFrameSize <= 16<<20, "--max-frame-size %d: want 128 to 16777216", c.MaxFrameSize)
	check(c.MaxHeaderBytes >= 1024 && c.MaxHeaderBytes <= 1<<20, "--max-header-bytes %d: want 1024 to 1048576", c.MaxHeaderBytes)
	check(c.MaxSubscriptions >= 1 && c.MaxSubscriptions <= 1<<16, "--max-subscriptions %d: want 1 to 65536", c.MaxSubscriptions)
	check(c.MaxTopicBytes >= 1 && c.MaxTopicBytes <= topic.MaxBytes, "--max-topic-bytes %d: want 1 to %d", c.MaxTopicBytes, topic.MaxBytes)
	check(c.MaxTopicLevels >= 1 && c.MaxTopicLevels <= topic.MaxLevels, "--max-topic-levels %d: want 1 to %d", c.MaxTopicLevels, topic.MaxLevels)
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--handshake-timeout", c.HandshakeTimeout}, {"--ping-interval", c.PingInterval}, {"--idle-timeout", c.IdleTimeout},
		{"--write-timeout", c.WriteTimeout}, {"--close-timeout", c.CloseTimeout}, {"--shutdown-timeout", c.ShutdownTimeout}} {
		check(d.v > 0, "%s must be positive", d.name)
	}
	check(c.IdleTimeout > c.PingInterval, "--idle-timeout (%s) must be longer than --ping-interval (%s)", c.IdleTimeout, c.PingInterval)
	check(c.OutboxLimit >= 4<<10 && c.OutboxLimit <= 4<<30, "--outbox-limit %v: want 4KiB to 4GiB", c.OutboxLimit)
	check(c.OutboxSoftLimit >= 0 && c.OutboxSoftLimit <= c.OutboxLimit, "--outbox-soft-limit %v: want 0 (half) to --outbox-limit (%v)", c.OutboxSoftLimit, c.OutboxLimit)
	check(c.OutboxTotalLimit == 0 || c.OutboxTotalLimit >= c.OutboxLimit, "--outbox-total-limit %v: want 0 (automatic) or at least --outbox-limit (%v)", c.OutboxTotalLimit, c.OutboxLimit)
	check(c.SlowConsumer == "drop" || c.SlowConsumer == "close", "--slow-consumer %q: want drop or close", c.SlowConsumer)
	check(c.MQTTOnRevoke == "close" || c.MQTTOnRevoke == "unsubscribe", "--mqtt-on-revoke %q: want close or unsubscribe", c.MQTTOnRevoke)
	check(c.MQTTMaxPacket >= 64 && c.MQTTMaxPacket <= 256<<20, "--mqtt-max-packet %d: want 64 B to 256 MiB", c.MQTTMaxPacket)
	check(c.MQTTMaxInflight >= 1 && c.MQTTMaxInflight <= 65535, "--mqtt-max-inflight %d: want 1 to 65535", c.MQTTMaxInflight)
	check(c.SessionQueueMax >= 1 && c.SessionQueueMax <= 1<<20, "--session-queue-max %d: want 1 to 1048576", c.SessionQueueMax)
	check(c.SessionExpiryMax >= time.Second, "--session-expiry-max %v: want at least 1s", c.SessionExpiryMax)
	check(c.SessionQueueBytes >= 1<<10 && c.SessionQueueBytes <= c.SessionQueueTotal, "--session-queue-bytes %v: want 1KiB to --session-queue-total", c.SessionQueueBytes)
	check(c.SessionQueueTotal <= 1<<40, "--session-queue-total %v: want at most 1TiB", c.SessionQueueTotal)
	check(c.RetainedMax >= 1 && c.RetainedMax <= 100_000_000, "--retained-max %d: want 1 to 100000000", c.RetainedMax)
	check(c.RetainedMaxBytes >= 1<<10 && c.RetainedMaxBytes <= 64<<30, "--retained-max-bytes %v: want 1KiB to 64GiB", c.RetainedMaxBytes)
	check(c.MaxInputBuffer >= 16<<10 && c.MaxInputBuffer <= 256<<20, "--max-input-buffer %v: want 16KiB to 256MiB", c.MaxInputBuffer)
	check(c.MaxInputTotal >= c.MaxInputBuffer && c.MaxInputTotal <= 1<<40, "--max-input-total %v: want --max-input-buffer (%v) to 1TiB", c.MaxInputTotal, c.MaxInputBuffer)
	check(c.MaxInboundRate >= 0 && c.MaxInboundRate <= 1<<30, "--max-inbound-rate %d: want 0 (unlimited) to 1073741824", c.MaxInboundRate)
	check(c.InboundBurst >= 0 && c.InboundBurst <= 1<<30, "--inbound-burst %d: want 0 (twice the rate) to 1073741824", c.InboundBurst)
	check(c.FDReserve >= 0 && c.FDReserve <= 1<<20, "--fd-reserve %d: want 0 (automatic) to 1048576", c.FDReserve)
	return errors.Join(errs...)
}

// isUnspecified reports whether host names no single interface ("", 0.0.0.0,
// ::), which other nodes cannot call.
func isUnspecified(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// redactURL hides the password of a store URL, for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		if err != nil {
			return "(unparseable URL)"
		}
		return s
	}
	return u.Redacted()
}

// redisAddrs splits --redis into addresses, accepting redis:// prefixes.
func redisAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimPrefix(strings.TrimSpace(a), "redis://")
		a = strings.TrimSuffix(a, "/")
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

// ByteSize is a size flag: a number of bytes with an optional binary unit
// (KiB, MiB, GiB, TiB; B or none for bytes). It prints in the largest unit
// that divides it.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

func (b ByteSize) String() string {
	for _, u := range byteUnits[:4] {
		if v := int64(b); v != 0 && v%(1<<u.shift) == 0 {
			return strconv.FormatInt(v>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

func (b *ByteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	shift := uint(0)
	for _, u := range byteUnits {
		if len(s) > len(u.suffix) && strings.EqualFold(s[len(s)-len(u.suffix):], u.suffix) {
			s, shift = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB, GiB or TiB)", s)
	}
	*b = ByteSize(n << shift)
	return nil
}
