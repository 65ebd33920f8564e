// Package server assembles one Gatecast node: the store, the broker, the
// WebSocket transport, and the admin listener, from a validated Config. It
// owns start-up order and graceful shutdown, and the seed protocol's
// handshake mapping (headers or browser query parameters to a connect
// request). It holds no logic of its own beyond that wiring, so that cmd/
// stays thin and end-to-end tests can run a real node in-process.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/postgres"
	"github.com/gatecast/gatecast/acl/sqlite"
	"github.com/gatecast/gatecast/admin"
	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/broker/mqtt"
	"github.com/gatecast/gatecast/cluster"
	"github.com/gatecast/gatecast/netpoll"
	"github.com/gatecast/gatecast/proto"
)

// SeedPaths are the request paths of the seed-compatible endpoint.
var SeedPaths = []string{"/ws/brocker/", "/ws/brocker"}

// Node is a running Gatecast node.
type Node struct {
	cfg       Config
	log       *slog.Logger
	store     acl.Store
	broker    *broker.Broker
	ws        *netpoll.Server
	admin     *http.Server
	adminLn   net.Listener
	adminKey  string
	keyPath   string
	registry  *prometheus.Registry
	cluster   *clusterNode // nil on a single node
	mqtt      *mqtt.Server
	mqttLn    net.Listener // --mqtt-listen; nil when disabled
	serveErr  chan error
	closeOnce sync.Once
}

// Start opens the store, binds both listeners and starts serving. It
// returns once the node accepts connections.
func Start(cfg Config, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	n := &Node{cfg: cfg, log: log, serveErr: make(chan error, 2)}
	ok := false
	defer func() {
		if !ok {
			n.closeResources()
		}
	}()

	n.registry = prometheus.NewRegistry()
	n.registry.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	store, err := openStore(cfg, n.registry)
	if err != nil {
		return nil, fmt.Errorf("opening the store %s: %w", storeName(cfg), err)
	}
	n.store = store
	n.registry.MustRegister(newWeakSecrets(store))

	n.adminKey = cfg.AdminKey
	if n.adminKey == "" {
		key, path, created, err := admin.LoadOrCreateKey(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("admin key: %w", err)
		}
		n.adminKey, n.keyPath = key, path
		if created {
			log.Info("generated a new admin key", "path", path)
		}
	}

	bcfg := broker.Config{Store: store, Logger: log.With("component", "broker"), Registerer: n.registry,
		MaxSubscriptions: cfg.MaxSubscriptions, MaxTopicBytes: cfg.MaxTopicBytes, MaxTopicLevels: cfg.MaxTopicLevels,
		ForwardSeedFrames: cfg.ForwardLegacy}
	if cfg.Redis != "" {
		n.cluster, err = openCluster(cfg, store, log.With("component", "cluster"), n.registry)
		if err != nil {
			return nil, fmt.Errorf("joining the cluster through Redis %s: %w", cfg.Redis, err)
		}
		// Rights come from the projection in Redis (tracked: no per-token
		// change counters to watch), the store of record behind it.
		bcfg.Rights, bcfg.Limiter, bcfg.Router = n.cluster.projected, n.cluster.leases, n.cluster.routes
		bcfg.Available = n.cluster.available
		if err := n.cluster.registerMetrics(n.registry); err != nil {
			return nil, err
		}
	}
	n.broker, err = broker.New(bcfg)
	if err != nil {
		return nil, err
	}
	if n.mqtt, err = newMQTT(cfg, n); err != nil {
		return nil, err
	}

	policy := netpoll.DropNewest
	if cfg.SlowConsumer == "close" {
		policy = netpoll.CloseSlow
	}
	n.ws, err = netpoll.NewServer(netpoll.Config{
		Addr:             cfg.Listen,
		Paths:            append(append([]string(nil), SeedPaths...), MQTTPath),
		Subprotocols:     []string{"mqtt"},
		CaptureHeaders:   []string{"Tag"}, // hs.Headers[0] in seedHandler.Open
		MaxFrameSize:     cfg.MaxFrameSize,
		MaxHeaderBytes:   cfg.MaxHeaderBytes,
		HandshakeTimeout: cfg.HandshakeTimeout,
		PingInterval:     cfg.PingInterval,
		IdleTimeout:      cfg.IdleTimeout,
		WriteTimeout:     cfg.WriteTimeout,
		CloseTimeout:     cfg.CloseTimeout,
		OutboxLimit:      int(cfg.OutboxLimit),
		OutboxSoftLimit:  int(cfg.OutboxSoftLimit),
		OutboxTotalLimit: int64(cfg.OutboxTotalLimit),
		SlowConsumer:     policy,
		InputBufferLimit: int(cfg.MaxInputBuffer),
		InputTotalLimit:  int64(cfg.MaxInputTotal),
		MaxInboundRate:   inboundRate(cfg.MaxInboundRate),
		InboundBurst:     cfg.InboundBurst,
		FDReserve:        cfg.FDReserve,
		Logger:           log.With("component", "ws"),
		Registerer:       n.registry,
	}, &seedHandler{b: n.broker, mqtt: n.mqtt, log: log.With("component", "seed")})
	if err != nil {
		return nil, err
	}
	if err := n.ws.Listen(); err != nil {
		return nil, fmt.Errorf("WebSocket listener %s: %w", cfg.Listen, err)
	}
	if err := n.listenMQTT(); err != nil {
		return nil, err
	}

	n.adminLn, err = net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		return nil, fmt.Errorf("admin listener %s: %w", cfg.AdminListen, err)
	}
	var enforcer admin.Enforcer = n.broker
	var nodes func(context.Context) (any, error)
	var peers func(context.Context) ([]admin.Peer, error)
	var writeLock func(context.Context) (func(), error)
	nodeID := cfg.NodeID
	enforceDeadline := admin.DefaultEnforceDeadline
	if n.cluster != nil {
		enforceDeadline += cfg.RevocationWait // the barrier's own 202 names the unconfirmed nodes
		enforcer = clusterEnforcer{Broker: n.broker, node: n.cluster}
		nodes, nodeID, peers = n.cluster.nodes, n.cluster.id, n.cluster.peers
		writeLock = n.cluster.writeLock.take
		if err := n.cluster.attach(n.broker, cluster.NodeInfo{WSAddr: n.WSAddr(), AdminAddr: n.advertisedAdmin(),
			Features: []string{cluster.FeatureBarrierVersions}}); err != nil {
			return nil, fmt.Errorf("cluster heartbeat: %w", err)
		}
	}
	allowedHosts, _ := admin.ParseAllowedHosts(cfg.AdminAllowedHosts) // validated with the config
	n.admin = &http.Server{
		// every admin route, /debug/pprof included, answers allowed Host headers only
		Handler: admin.HostGuard(allowedHosts, []string{n.AdminAddr(), n.advertisedAdmin()}, log.With("component", "admin"), withProfiling(n.adminKey, admin.NewHandler(admin.Config{
			Store:     store,
			Enforcer:  enforcer,
			Nodes:     nodes,
			NodeID:    nodeID,
			Peers:     peers,
			WriteLock: writeLock,
			Key:       n.adminKey,
			Metrics:   promhttp.HandlerFor(n.registry, promhttp.HandlerOpts{Registry: n.registry}),
			Health:    n.health,
			Logger:    log.With("component", "admin"),

			EnforceDeadline: enforceDeadline,
			Publisher:       brokerPublisher{n.broker},
			MaxPublishBytes: cfg.MaxFrameSize,
		}))),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute, // CPU profiles take 30 s by default
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() { n.serveErr <- n.ws.Serve() }()
	go func() {
		if err := n.admin.Serve(n.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.serveErr <- fmt.Errorf("admin listener: %w", err)
		}
	}()
	ok = true
	log.Info("gatecast started", "listen", n.WSAddr(), "admin_listen", n.AdminAddr(), "mqtt_listen", n.MQTTAddr(), "data_dir", cfg.DataDir, "store", storeName(cfg), "redis", cfg.Redis, "node_id", nodeID)
	return n, nil
}

func (n *Node) health() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// a read of the store proves it answers
	if _, err := n.store.GetToken(ctx, 0); err != nil && !errors.Is(err, acl.ErrNotFound) {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// WSAddr is the bound WebSocket listener address.
func (n *Node) WSAddr() string { return n.ws.Addr().String() }

// advertisedAdmin is the admin address other nodes call: --advertise-admin
// (its port defaulting to the bound one), else the bound listener address.
func (n *Node) advertisedAdmin() string {
	a := n.cfg.AdvertiseAdmin
	if a == "" {
		return n.AdminAddr()
	}
	if _, _, err := net.SplitHostPort(a); err == nil {
		return a
	}
	_, port, _ := net.SplitHostPort(n.AdminAddr())
	return net.JoinHostPort(strings.Trim(a, "[]"), port)
}

// AdminAddr is the bound admin listener address.
func (n *Node) AdminAddr() string { return n.adminLn.Addr().String() }

// AdminKey is the key the admin API requires.
func (n *Node) AdminKey() string { return n.adminKey }

// Broker exposes the node's broker (for tests and measurements).
func (n *Node) Broker() *broker.Broker { return n.broker }

// Done delivers an error if a listener fails while serving.
func (n *Node) Done() <-chan error { return n.serveErr }

// Shutdown stops accepting, closes every client with 1001, flushes, stops
// the admin listener and closes the store.
func (n *Node) Shutdown(ctx context.Context) error {
	var errs []error
	n.closeOnce.Do(func() {
		if n.broker != nil {
			// Every protocol's own goodbye first (MQTT 5: DISCONNECT 0x8B;
			// seed: 1001), then the listeners drain.
			n.broker.CloseAll(broker.CauseShutdown, "server shutting down")
		}
		if n.ws != nil {
			if err := n.ws.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("WebSocket listener: %w", err))
			}
		}
		if n.admin != nil {
			if err := n.admin.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("admin listener: %w", err))
			}
		}
		if n.cluster != nil {
			n.cluster.close()
		}
		if n.store != nil {
			if err := n.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("store: %w", err))
			}
		}
	})
	return errors.Join(errs...)
}

// closeResources undoes a partial Start.
func (n *Node) closeResources() {
	if n.ws != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = n.ws.Shutdown(ctx)
		cancel()
	}
	if n.adminLn != nil {
		n.adminLn.Close()
	}
	if n.mqttLn != nil {
		n.mqttLn.Close()
	}
	if n.cluster != nil {
		n.cluster.close()
	}
	if n.store != nil {
		n.store.Close()
	}
}

// Run starts a node, prints how to connect to out, and serves until ctx is
// cancelled (SIGTERM/SIGINT in the binary), then shuts down gracefully.
func Run(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) error {
	n, err := Start(cfg, log)
	if err != nil {
		return err
	}
	n.printBanner(out)
	select {
	case <-ctx.Done():
	case err = <-n.serveErr:
		log.Error("listener failed", "err", err)
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if serr := n.Shutdown(sctx); serr != nil {
		return errors.Join(err, serr)
	}
	log.Info("stopped")
	return err
}

func (n *Node) printBanner(out io.Writer) {
	keyHint := "the key you set with --admin-key / GATECAST_ADMIN_KEY"
	keyExport := `export GATECAST_ADMIN_KEY=...   # the key you configured`
	if n.keyPath != "" {
		keyHint = n.keyPath + " (mode 0600)"
		keyExport = "export GATECAST_ADMIN_KEY=$(cat " + n.keyPath + ")"
	}
	// The address to call the admin listener at: a wildcard listener is
	// reached on loopback (or at --advertise-admin), unless only named hosts
	// are answered, its own address always among them.
	adminAddr := n.AdminAddr()
	if host, port, err := net.SplitHostPort(adminAddr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			switch {
			case n.cfg.AdvertiseAdmin != "":
				adminAddr = n.advertisedAdmin()
			case n.cfg.AdminAllowedHosts == "":
				adminAddr = net.JoinHostPort("127.0.0.1", port)
			}
		}
	}
	// The CLI commands must reach this node, not whatever listens on the
	// CLI's default admin address.
	cli := "./bin/gatecast"
	if "http://"+adminAddr != admin.DefaultAdminURL {
		cli += " --admin-url http://" + adminAddr
	}
	fmt.Fprintf(out, `
Gatecast is running.
  WebSocket (seed protocol):  ws://%[1]s/ws/brocker/
  Admin API:                  http://%[2]s   (admin key: %[3]s)
  Web console:                http://%[2]s/   (sign in with the admin key)
  /metrics, /healthz:         http://%[2]s/metrics   (no key needed)

Try it from another terminal:
  %[4]s
  %[6]s token create --name demo            # prints the secret ONCE
  %[6]s grant demo 'sensors/#' readwrite
  ./bin/gatecast sub --url ws://%[1]s/ws/brocker/ --token <secret> --tags 'sensors/#'
  ./bin/gatecast pub --url ws://%[1]s/ws/brocker/ --token <secret> --tags 'sensors/#' sensors/room1/temp '{"c":21.5}'
  curl -H "Authorization: Bearer $GATECAST_ADMIN_KEY" http://%[2]s/api/v1/connections

Seed clients connect unchanged with headers 'Authorization: Token <secret>' and 'Tag: a,b';
browsers use ws://%[1]s/ws/brocker/?token=<secret>&tags=a,b
%[5]sStop with Ctrl-C.
`, n.WSAddr(), adminAddr, keyHint, keyExport, n.mqttBanner(), cli)
}

// mqttBanner is the banner's MQTT paragraph.
func (n *Node) mqttBanner() string {
	ws := "MQTT over WebSocket: ws://" + n.WSAddr() + MQTTPath + " (subprotocol mqtt, e.g. MQTT.js)\n"
	addr := n.MQTTAddr()
	if addr == "" {
		return ws + "\n"
	}
	host, port, _ := net.SplitHostPort(addr)
	return "MQTT 3.1.1/5 on " + addr + ", the token secret as the password:\n" +
		"  mosquitto_sub -h " + host + " -p " + port + " -V mqttv5 -u device -P <secret> -t 'sensors/#'\n" + ws + "\n"
}

// withProfiling serves Go's pprof endpoints under /debug/pprof/ on the admin
// listener, behind the admin key (profiles reveal internals), and
// everything else through next. `heap?gc=1` is how the load tests read live
// memory after a forced collection.
func withProfiling(key string, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// Compare digests, as the admin API does: comparing the raw values in
	// constant time would still leak the key's length.
	want := sha256.Sum256([]byte("Bearer " + key))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
			next.ServeHTTP(w, r)
			return
		}
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"code":"unauthorized","message":"missing or wrong admin key"}}` + "\n"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// seedHandler maps the seed protocol's handshake onto broker admission,
// and hands connections to MQTTPath to the MQTT adapter.
type seedHandler struct {
	b    *broker.Broker
	mqtt *mqtt.Server
	log  *slog.Logger
}

// Open runs on the connection's event goroutine with hs valid only during
// the call: Connect hashes the secret and copies the tags, keeping neither
// slice.
func (h *seedHandler) Open(c *netpoll.Conn, hs *netpoll.Handshake) netpoll.Session {
	if string(hs.Path) == MQTTPath {
		return h.mqtt.NewConn(c, true, hs.RemoteAddr)
	}
	secret := proto.SeedSecret(hs.Authorization)
	tags := proto.AppendTags(nil, hs.Headers[0]) // the Tag header (Config.CaptureHeaders)
	if len(secret) == 0 || len(tags) == 0 {
		// Browsers cannot set headers: accept ?token= and ?tags= as well.
		qToken, qTags, err := proto.ParseQuery(hs.RawQuery)
		if err != nil {
			c.Close(broker.CloseBadRequest, "malformed query string")
			return nil
		}
		if len(secret) == 0 {
			secret = []byte(qToken)
		}
		if len(tags) == 0 {
			tags = qTags
		}
	}
	s, err := h.b.Connect(c, broker.ConnectRequest{Secret: secret, Tags: tags, RemoteAddr: hs.RemoteAddr, Protocol: "seed", ReadEnds: true})
	if err != nil {
		var rej *broker.Rejection
		if errors.As(err, &rej) {
			// info, at most one line per cause every 10 s (lograte.go); never the secret
			refusalLog.Log(rej.Cause, h.log, slog.LevelInfo, "connection refused", "remote", hs.RemoteAddr, "code", rej.Code, "cause", rej.Cause, "reason", rej.Reason)
			c.Close(rej.Code, rej.Reason)
		} else {
			h.log.Error("connection failed", "remote", hs.RemoteAddr, "err", err)
			c.Close(1011, "internal error")
		}
		return nil
	}
	return s
}

// openStore opens the configured store: the embedded SQLite database, or
// Postgres (its schema migrations are applied here, safely when several
// nodes start at once).
func openStore(cfg Config, reg prometheus.Registerer) (acl.Store, error) {
	if cfg.Store == "" {
		return sqlite.Open(filepath.Join(cfg.DataDir, "gatecast.db"), sqlite.WithRegisterer(reg))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return postgres.Open(ctx, cfg.Store, postgres.WithRegisterer(reg))
}

// storeName says which store a node uses, without its password.
func storeName(cfg Config) string {
	if cfg.Store == "" {
		return "sqlite:" + filepath.Join(cfg.DataDir, "gatecast.db")
	}
	return redactURL(cfg.Store)
}

// inboundRate maps --max-inbound-rate (0 = unlimited) to netpoll's setting.
func inboundRate(flag int) int {
	if flag == 0 {
		return netpoll.Unlimited
	}
	return flag
}
