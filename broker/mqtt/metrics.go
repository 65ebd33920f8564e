package mqtt

import "github.com/prometheus/client_golang/prometheus"

// Label values are fixed sets, bound once.
type connectOutcome int

const (
	connAccepted connectOutcome = iota
	connBadCredentials
	connNotAuthorized
	connLimit
	connUnavailable
	connProtocolError
	connUnsupportedVersion
	numConnectOutcomes
)

var connectOutcomeNames = [numConnectOutcomes]string{"accepted", "bad_credentials", "not_authorized", "limit", "unavailable", "protocol_error", "unsupported_version"}

type refusal int

const (
	refusedNotAuthorized refusal = iota
	refusedInvalidTopic
	refusedRetain
	numRefusals
)

var refusalNames = [numRefusals]string{"not_authorized", "invalid_topic", "retain"}

type drop int

const (
	dropQueueFull drop = iota // QoS 1/2 deliveries beyond MaxQueued
	dropTooLarge              // larger than the client's Maximum Packet Size
	dropTransport             // the transport refused (outbox limit)
	numDrops
)

var dropNames = [numDrops]string{"queue_full", "too_large", "outbox"}

type metrics struct {
	connects   [numConnectOutcomes]prometheus.Counter
	refused    [numRefusals]prometheus.Counter
	dropped    [numDrops]prometheus.Counter
	takeovers  prometheus.Counter
	protoError prometheus.Counter
	expired    prometheus.Counter
	resumed    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{}
	connects := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_mqtt_connects_total", Help: "MQTT CONNECT packets answered, by outcome."}, []string{"result"})
	for i := range m.connects {
		m.connects[i] = connects.WithLabelValues(connectOutcomeNames[i])
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_mqtt_publishes_refused_total", Help: "MQTT PUBLISH packets refused (acknowledged with a failure reason in MQTT 5, acknowledged and dropped in 3.1.1), by reason."}, []string{"reason"})
	for i := range m.refused {
		m.refused[i] = refused.WithLabelValues(refusalNames[i])
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_mqtt_deliveries_dropped_total", Help: "Deliveries to MQTT clients dropped, by reason."}, []string{"reason"})
	for i := range m.dropped {
		m.dropped[i] = dropped.WithLabelValues(dropNames[i])
	}
	m.takeovers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatecast_mqtt_takeovers_total", Help: "MQTT sessions taken over by a new connection with the same client identifier."})
	m.protoError = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatecast_mqtt_protocol_errors_total", Help: "MQTT connections closed for a malformed packet or a protocol violation."})
	m.expired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatecast_mqtt_sessions_expired_total", Help: "Persistent MQTT sessions discarded because their client stayed away past the session expiry."})
	m.resumed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatecast_mqtt_sessions_resumed_total", Help: "MQTT connections that resumed a persistent session (CONNACK Session Present 1)."})
	if reg != nil {
		for _, c := range []prometheus.Collector{connects, refused, dropped, m.takeovers, m.protoError, m.expired, m.resumed} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
