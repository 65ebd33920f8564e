package netpoll

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// closeCause is why a connection went away; it labels
// gatecast_ws_closes_total. The first cause recorded for a connection wins.
type closeCause uint8

const (
	causeNone closeCause = iota // nothing recorded: the peer dropped TCP
	causePeer
	causeProtocol
	causeTooBig
	causeBadUTF8
	causeIdle
	causeHandshakeTimeout
	causeWriteTimeout
	causeServer
	causeRateLimit
	numCauses
)

var causeLabels = [numCauses]string{
	causeNone:             "peer",
	causePeer:             "peer",
	causeProtocol:         "protocol",
	causeTooBig:           "too_big",
	causeBadUTF8:          "bad_utf8",
	causeIdle:             "idle",
	causeHandshakeTimeout: "handshake_timeout",
	causeWriteTimeout:     "write_timeout",
	causeServer:           "server",
	causeRateLimit:        "rate_limit",
}

// causeOf maps a protocol error's close code to its cause.
func causeOf(code uint16) closeCause {
	switch code {
	case 1009:
		return causeTooBig
	case 1007:
		return causeBadUTF8
	}
	return causeProtocol
}

// Transports: the transport label of gatecast_ws_connections.
const (
	transportWS  = 0 // WebSocket (Serve)
	transportTCP = 1 // raw TCP stream (ServeStream)
)

var transportLabels = [2]string{transportWS: "ws", transportTCP: "tcp"}

func transportOf(flags uint32) int {
	if flags&fStream != 0 {
		return transportTCP
	}
	return transportWS
}

// metrics holds every collector, children bound at construction so the hot
// paths never look up a label. The gatecast_ws_* names predate stream
// connections and are kept (dashboards use them): every series counts both
// kinds of connection, except gatecast_ws_handshakes_total and
// gatecast_ws_handshake_seconds (WebSocket upgrades only), and
// gatecast_ws_connections tells them apart with its transport label.
type metrics struct {
	connections [2]prometheus.Gauge // by transport

	hsOK, hsNotFound, hsBadRequest, hsTooLarge, hsTimeout prometheus.Counter
	handshakeSeconds                                      prometheus.Histogram
	eventLoopLag                                          prometheus.Histogram

	messagesIn prometheus.Counter
	bytesIn    prometheus.Counter
	bytesOut   prometheus.Counter
	dropped    prometheus.Counter
	slowClosed prometheus.Counter

	droppedTotal   prometheus.Counter // frames refused at the process-wide outbox limit
	backlogged     prometheus.Counter // times a connection's pending output passed its soft limit
	outboxMax      prometheus.Gauge   // largest pending output of one connection at the last sweep
	inboundDropped prometheus.Counter // messages refused by the inbound rate limit
	inputPaused    prometheus.Counter // reads found paused at the input limit
	acceptPaused   prometheus.Counter // accepts paused near the open-files limit
	closes         [numCauses]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		messagesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatecast_ws_messages_received_total", Help: "Complete text and binary messages received from WebSocket clients, plus the messages stream sessions admitted (AdmitInbound)."}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatecast_ws_bytes_received_total", Help: "Bytes read from client sockets (handshakes, frames, raw streams)."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatecast_ws_bytes_sent_total", Help: "Bytes handed to client sockets (WebSocket frames, raw stream output)."}),
		slowClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatecast_ws_slow_consumers_closed_total", Help: "Connections closed with 1008 because their outbox was full (CloseSlow policy)."}),
		handshakeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatecast_ws_handshake_seconds",
			Help:    "Time from TCP accept to the upgrade response (101, or an HTTP error) written to the socket; handshake timeouts are not observed.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		eventLoopLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatecast_eventloop_lag_seconds",
			Help:    "Delay between netpoll handing a connection's read task to the runner and the task starting, sampled on one real wakeup per probe interval.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}}),
	}
	connections := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatecast_ws_connections", Help: "Open connections with a session, by transport: upgraded WebSocket connections (ws), raw TCP streams from their first bytes on (tcp)."}, []string{"transport"})
	for t, label := range transportLabels {
		m.connections[t] = connections.WithLabelValues(label)
	}
	handshakes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_ws_handshakes_total", Help: "WebSocket upgrade attempts by result."}, []string{"result"})
	m.hsOK = handshakes.WithLabelValues("ok")
	m.hsNotFound = handshakes.WithLabelValues("not_found")
	m.hsBadRequest = handshakes.WithLabelValues("bad_request")
	m.hsTooLarge = handshakes.WithLabelValues("too_large")
	m.hsTimeout = handshakes.WithLabelValues("timeout")
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_ws_frames_dropped_total", Help: "Outgoing frames dropped instead of queued, by reason."}, []string{"reason"})
	m.dropped = dropped.WithLabelValues("slow_consumer")
	m.droppedTotal = dropped.WithLabelValues("outbox_total")
	m.backlogged = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatecast_ws_backlogs_total", Help: "Times a connection's pending output passed --outbox-soft-limit (its publishers are then slowed)."})
	m.outboxMax = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gatecast_ws_outbox_max_bytes", Help: "Largest pending output (queued plus being written) of one connection, at the last sweep."})
	inbound := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_ws_inbound_dropped_total", Help: "Client messages (data, ping, pong) dropped on receipt, by reason."}, []string{"reason"})
	m.inboundDropped = inbound.WithLabelValues("rate_limit")
	m.inputPaused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatecast_ws_input_paused_total", Help: "Times a connection's socket reads were paused because its unread input reached --max-input-buffer (TCP then slows the client)."})
	m.acceptPaused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatecast_ws_accept_paused_total", Help: "Times accepting new connections was paused because open files neared the process limit minus the reserve."})
	closes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_ws_closes_total", Help: "Connections gone (those with a session, WebSocket or stream, plus handshake timeouts), by first cause."}, []string{"reason"})
	for c := range numCauses {
		m.closes[c] = closes.WithLabelValues(causeLabels[c])
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{connections, handshakes, m.messagesIn, m.bytesIn, m.bytesOut, dropped, m.slowClosed, closes, inbound, m.inputPaused, m.acceptPaused, m.backlogged, m.outboxMax,
		m.handshakeSeconds, m.eventLoopLag} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("netpoll: metrics already registered on this Registerer (one Server per registry)")
			}
			return nil, err
		}
	}
	return m, nil
}
