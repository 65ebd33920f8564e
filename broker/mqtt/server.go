package mqtt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/proto"
)

// Transport is the connection under an MQTT session. netpoll.Conn
// implements it; its methods are safe for concurrent use and never block.
type Transport interface {
	// SendBacklog queues f (taking one reference in every case) and
	// reports whether it was queued and, when the connection's pending
	// output is past its soft limit, a channel closed when it drains.
	SendBacklog(f *proto.Frame) (ok bool, backlog <-chan struct{})
	// SendBytes is SendBacklog for raw packet bytes the caller keeps: the
	// transport copies them (coalescing small packets into a few buffers)
	// and, over WebSocket, writes them in binary messages of its own
	// making, which may carry several packets. b may be reused as soon as
	// it returns.
	SendBytes(b []byte) (ok bool, backlog <-chan struct{})
	// CloseAfter writes final (one reference taken; nil for none) after
	// everything queued, then closes: with a WebSocket close frame (code,
	// reason) or, on a TCP stream, by closing the connection.
	CloseAfter(final *proto.Frame, code uint16, reason string)
	// Established marks the end of the connection's handshake (CONNECT
	// accepted): the idle timeout replaces the handshake timeout.
	Established()
	// SetIdleTimeout sets the connection's idle timeout (keep alive × 1.5).
	SetIdleTimeout(d time.Duration)
	// AdmitInbound takes one message from the connection's inbound rate
	// budget; false: drop it (the transport closes a connection that stays
	// over its rate).
	AdmitInbound() bool
	// RemoteAddr is the peer's address ("ip:port"), made on each call:
	// the adapter asks at CONNECT and for log lines, and keeps no copy.
	RemoteAddr() string
}

// Config configures a Server.
type Config struct {
	Broker *broker.Broker
	// OnRevoke: what a rights change does to a live session whose
	// subscription it uncovers (--mqtt-on-revoke): close it with
	// DISCONNECT 0x87 (default) or drop just those subscriptions.
	OnRevoke broker.RevokePolicy
	// MaxPacketSize bounds an inbound packet (Maximum Packet Size in
	// CONNACK); larger ones close the connection (0x95). Default 1 MiB.
	MaxPacketSize int
	// MaxWebSocketMessage is the transport's WebSocket message limit: over
	// WebSocket, Maximum Packet Size is the smaller of the two. 0: none.
	MaxWebSocketMessage int
	// ReceiveMaximum bounds the client's QoS 2 publishes awaiting PUBREL
	// (Receive Maximum in CONNACK). Default 64.
	ReceiveMaximum int
	// MaxInflight bounds the QoS 1 and 2 deliveries awaiting the client's
	// acknowledgement (lowered to the client's Receive Maximum). Default 64.
	MaxInflight int
	// MaxQueued bounds the QoS 1 and 2 deliveries waiting for an in-flight
	// slot (or for an away client); past it the oldest is dropped and
	// counted. Default 1000.
	MaxQueued int
	// MaxQueuedBytes bounds the bytes of one session's queued copies (and
	// of the in-flight copies a persistent session keeps for redelivery);
	// MaxQueuedTotal bounds them for the whole process. Past either the
	// oldest queued message is dropped and counted. Defaults 4 MiB and
	// 512 MiB.
	MaxQueuedBytes int
	MaxQueuedTotal int
	// TopicAliasMaximum is the number of topic aliases a client may set
	// (Topic Alias Maximum in CONNACK). Default 16.
	TopicAliasMaximum int
	// ServerTopicAliases is how many topic aliases the server sets for a
	// client that allows some (its Topic Alias Maximum, at most this), on
	// the deliveries encoded for that client alone (alias.go). Default 16;
	// negative: none.
	ServerTopicAliases int
	// DefaultKeepAlive is the keep alive, in seconds, imposed on an MQTT 5
	// client that asks for none (Server Keep Alive). Default 60.
	DefaultKeepAlive int
	// MaxSessionExpiry bounds how long a persistent session outlives its
	// connection (3.1.1 sessions have no expiry of their own; MQTT 5
	// Session Expiry Interval is capped to it). Default 2 h.
	MaxSessionExpiry time.Duration
	// RetainedMax and RetainedMaxBytes bound the retained messages this
	// node keeps (--retained-max, --retained-max-bytes); a retained publish
	// past them is refused (MQTT 5: 0x97) and counted. Defaults 100,000 and
	// 64 MiB.
	RetainedMax      int
	RetainedMaxBytes int
	// RetainStore keeps retained messages across restarts; nil: memory only.
	RetainStore RetainStore
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// Server is the MQTT adapter of one node: its configuration, the client
// identifiers of live sessions (for takeover) and its metrics.
type Server struct {
	cfg      Config
	b        *broker.Broker
	log      *slog.Logger
	metrics  *metrics
	sessions sessionTable
	retained *retainedSet
	held     atomic.Int64 // bytes of every session's queued and in-flight copies
}

// NewServer returns an MQTT adapter over cfg.Broker.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxPacketSize, 1<<20)
	def(&cfg.ReceiveMaximum, 64)
	def(&cfg.MaxInflight, 64)
	def(&cfg.MaxQueued, 1000)
	def(&cfg.MaxQueuedBytes, 4<<20)
	def(&cfg.MaxQueuedTotal, 512<<20)
	def(&cfg.TopicAliasMaximum, 16)
	if cfg.ServerTopicAliases == 0 {
		cfg.ServerTopicAliases = 16
	}
	cfg.ServerTopicAliases = max(min(cfg.ServerTopicAliases, 65535), 0)
	def(&cfg.DefaultKeepAlive, 60)
	if cfg.MaxSessionExpiry <= 0 {
		cfg.MaxSessionExpiry = 2 * time.Hour
	}
	cfg.ReceiveMaximum = min(cfg.ReceiveMaximum, 65535)
	cfg.MaxInflight = min(cfg.MaxInflight, 65535)
	cfg.TopicAliasMaximum = min(cfg.TopicAliasMaximum, 65535)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, b: cfg.Broker, log: cfg.Logger, metrics: m}
	s.sessions.seed = maphash.MakeSeed()
	def(&cfg.RetainedMax, 100_000)
	def(&cfg.RetainedMaxBytes, 64<<20)
	s.cfg = cfg
	s.retained = newRetainedSet(cfg.RetainedMax, cfg.RetainedMaxBytes, cfg.RetainStore, cfg.Logger)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.retained.load(ctx); err != nil {
		return nil, fmt.Errorf("mqtt: loading retained messages: %w", err)
	}
	return s, nil
}

// NewConn returns the session of a new connection; wsFraming: its packets
// travel in WebSocket binary messages (the /mqtt path), else in a TCP byte
// stream. The transport calls its OnMessage and OnClose. remote is unused:
// the connection asks t.RemoteAddr when it needs the address, so that it
// keeps no copy.
func (s *Server) NewConn(t Transport, wsFraming bool, remote string) *Conn {
	return &Conn{srv: s, t: t, ws: wsFraming}
}

// clientKey names a live session by client identifier. Identifiers are
// scoped to a token: a client can take over only a session of its own
// token, so one device's credentials cannot knock another's off.
type clientKey struct {
	token int64
	id    string
}

// assignedID makes a client identifier for a client that sent none.
func assignedID() string {
	var b [12]byte
	rand.Read(b[:])
	return "gatecast-" + hex.EncodeToString(b[:])
}
