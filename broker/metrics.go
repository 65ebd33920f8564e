package broker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/topic"
)

// Label values are fixed sets, bound once at start-up so that the hot path
// only adds to pre-resolved children.
type connectResult int

const (
	resultAccepted connectResult = iota
	resultBadRequest
	resultAuth
	resultForbidden
	resultLimit
	resultError
	numResults
)

var connectResultNames = [numResults]string{"accepted", "rejected_request", "rejected_auth", "rejected_forbidden", "rejected_limit", "error"}

type rejectReason int

const (
	rejectBinary rejectReason = iota
	rejectInvalid
	rejectTopic
	rejectDenied
	numRejects
)

var rejectReasonNames = [numRejects]string{"binary", "invalid", "bad_topic", "denied"}

type revokeKind int

const (
	revokeNone revokeKind = iota
	revokeToken
	revokeSubscription
	revokeLimit
	revokeKick
	numRevokes
)

// Protocols a session may speak, for gatecast_connections{protocol}.
// Anything else is counted as "other" (a wiring mistake, not client input).
var protocolNames = [...]string{"seed", "mqtt3", "mqtt5", "other"}

func protocolIndex(p string) uint8 {
	switch p {
	case "seed", "":
		return 0
	case "mqtt3":
		return 1
	case "mqtt5":
		return 2
	}
	return 3
}

var revokeKindNames = [numRevokes]string{"", "token", "subscription", "limit", "kick"}

type metrics struct {
	connections   [len(protocolNames)]prometheus.Gauge
	enforce       prometheus.Histogram
	delivered     prometheus.Histogram
	subscriptions prometheus.Gauge
	offline       prometheus.Gauge
	connects      [numResults]prometheus.Counter
	messagesIn    [len(protocolNames)]prometheus.Counter // by the publisher's protocol
	bytesIn       prometheus.Counter
	rejected      [numRejects]prometheus.Counter
	deliveries    [len(protocolNames)]prometheus.Counter // by the subscriber's protocol
	bytesOut      prometheus.Counter
	dropped       [len(protocolNames)]prometheus.Counter // by the subscriber's protocol
	forwardErrors prometheus.Counter
	stalls        prometheus.Counter
	stallSeconds  prometheus.Counter
	revocations   [numRevokes]prometheus.Counter
	reg           prometheus.Registerer
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		enforce: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatecast_revocation_seconds",
			Help:    "Time a rights change takes on this node: from the request to re-check tokens (admin write, cluster signal, reconciler) to every affected live session closed or downgraded, store re-read included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		delivered: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatecast_revocation_delivered_seconds",
			Help:    "Time a rights change that closed sessions takes on this node until the last of their close frames (or DISCONNECTs) reached its socket: gatecast_revocation_seconds plus the writes, what the clients see but their own reading. Observed once per change that closed any.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatecast_subscriptions", Help: "Live subscriptions (filters) of all sessions."}),
		offline: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatecast_sessions_offline", Help: "Persistent sessions whose client is away (MQTT clean session 0 / session expiry): their subscriptions stay, their QoS 1/2 messages queue."}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatecast_message_bytes_in_total", Help: "Bytes clients sent after their handshake, accepted or not: seed message payloads, MQTT packets."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatecast_message_bytes_out_total", Help: "Frame bytes queued to subscribers."}),
		forwardErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatecast_cluster_forward_errors_total", Help: "Published messages that could not be forwarded to other nodes (cluster mode)."}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatecast_producer_stalls_total", Help: "Publishes (for the seed protocol: runs of a read's publishes to one topic) after which the publisher waited for a backlogged subscriber or cluster peer queue."}),
		stallSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatecast_producer_stall_seconds_total", Help: "Time publishers spent waiting for backlogged subscribers or peer queues."}),
	}
	connections := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatecast_connections", Help: "Live client sessions, by protocol."}, []string{"protocol"})
	for i := range m.connections {
		m.connections[i] = connections.WithLabelValues(protocolNames[i])
	}
	messagesIn := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_messages_in_total", Help: "Messages published by clients and accepted for routing, by the publisher's protocol."}, []string{"protocol"})
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_messages_out_total", Help: "Messages queued to subscribers (one per recipient), by the subscriber's protocol."}, []string{"protocol"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_deliveries_dropped_total", Help: "Deliveries the transport refused (closed or slow consumer), by the subscriber's protocol."}, []string{"protocol"})
	for i, p := range protocolNames {
		m.messagesIn[i] = messagesIn.WithLabelValues(p)
		m.deliveries[i] = deliveries.WithLabelValues(p)
		m.dropped[i] = dropped.WithLabelValues(p)
	}
	connects := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_connects_total", Help: "Connection attempts by result."}, []string{"result"})
	for i := range m.connects {
		m.connects[i] = connects.WithLabelValues(connectResultNames[i])
	}
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_messages_rejected_total", Help: "Client messages dropped, by reason."}, []string{"reason"})
	for i := range m.rejected {
		m.rejected[i] = rejected.WithLabelValues(rejectReasonNames[i])
	}
	revocations := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_revocations_total", Help: "Sessions closed by enforcement of a rights change or a kick, by kind."}, []string{"kind"})
	for i := 1; i < int(numRevokes); i++ {
		m.revocations[i] = revocations.WithLabelValues(revokeKindNames[i])
	}
	m.revocations[revokeNone] = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"}) // never registered
	if reg != nil {
		for _, c := range []prometheus.Collector{connections, m.enforce, m.delivered, m.subscriptions, m.offline, messagesIn, m.bytesIn,
			deliveries, m.bytesOut, dropped, m.forwardErrors, m.stalls, m.stallSeconds, connects, rejected, revocations} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// bindIndex exports the subscription index's own counters.
func (m *metrics) bindIndex(x *topic.Index[*Subscription]) {
	if m.reg == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gatecast_index_entries", Help: "Subscriptions (filter, session) held by the topic index."},
			func() float64 { return float64(x.Count()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gatecast_match_cache_hits_total", Help: "Publishes whose wildcard subscribers came from the topic index's match cache."},
			func() float64 { h, _ := x.CacheStats(); return float64(h) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gatecast_match_cache_misses_total", Help: "Publishes that walked the wildcard trie (match cache miss); none while no wildcard filter is subscribed."},
			func() float64 { _, mi := x.CacheStats(); return float64(mi) }),
	)
}

// bindTokenCache exports the token (grant) cache's counters.
func (m *metrics) bindTokenCache(c *tokenCache) {
	if m.reg == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gatecast_grant_cache_hits_total", Help: "Connects whose token and grants were already cached."},
			func() float64 { h, _ := c.stats(); return float64(h) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gatecast_grant_cache_misses_total", Help: "Connects that read their token and grants from the store (unknown secrets included: they are never cached)."},
			func() float64 { _, mi := c.stats(); return float64(mi) }),
	)
}
