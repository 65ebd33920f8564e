package loadtest

import (
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to a minute, with three
// significant digits (HdrHistogram); a larger value is recorded as the
// maximum.
const (
	histMinUs  = 1
	histMaxUs  = 60_000_000
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinUs, histMaxUs, histDigits)
}

// recordUs records a duration in nanoseconds, clamped to the histogram's
// range.
func recordUs(h *hdrhistogram.Histogram, ns int64) {
	us := ns / 1000
	if us < histMinUs {
		us = histMinUs
	} else if us > histMaxUs {
		us = histMaxUs
	}
	_ = h.RecordValue(us) // in range by construction
}

// encodeHist returns h in HdrHistogram's compressed V2 form (base64), or ""
// when h is empty.
func encodeHist(h *hdrhistogram.Histogram) string {
	if h == nil || h.TotalCount() == 0 {
		return ""
	}
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return ""
	}
	return string(b)
}

// errBadHistogram is returned for a histogram snapshot that does not decode.
var errBadHistogram = errors.New("loadtest: malformed histogram snapshot")

// decodeHist decodes an encodeHist result. The library indexes its input
// without checking lengths, so a malformed snapshot (a worker's output is
// still input) is checked first and any panic from deeper inside is turned
// into an error.
func decodeHist(s string) (h *hdrhistogram.Histogram, err error) {
	raw, derr := base64.StdEncoding.DecodeString(s)
	if derr != nil || len(raw) < 8 {
		return nil, errBadHistogram
	}
	defer func() {
		if recover() != nil {
			h, err = nil, errBadHistogram
		}
	}()
	h, err = hdrhistogram.Decode([]byte(s))
	if err != nil {
		return nil, errBadHistogram
	}
	if h.LowestTrackableValue() != histMinUs || h.HighestTrackableValue() < histMaxUs || h.SignificantFigures() != histDigits {
		return nil, errBadHistogram
	}
	return h, nil
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}

// Message kinds, counted and timed apart.
const (
	kindTelemetry = iota // device → dashboards
	kindCommand          // commander → devices
	nKinds
)

// errKind is a kind of client-side failure.
type errKind uint8

const (
	errDial             errKind = iota // dial failed otherwise than below
	errDialRefused                     // connection refused
	errDialNoPort                      // EADDRNOTAVAIL / EADDRINUSE: no free source port
	errDialFiles                       // EMFILE / ENFILE: out of file descriptors
	errDialTimeout                     // dial timed out
	errHandshake                       // WebSocket handshake failed
	errHandshakeTimeout                // no handshake response in time
	errHandshakeHTTP                   // the server answered the upgrade with an HTTP error
	errDropped                         // connection lost without a close frame
	errWrite                           // a write failed on an open connection
	errProtocol                        // malformed frame from the broker
	errReadTimeout                     // a frame started but did not complete in time
	errGaveUp                          // reconnect: still failing at the deadline
	errDroppedMQTT                     // MQTT: connection lost without a DISCONNECT (other than a revocation's close in 3.1.1)
	errMQTTConnect                     // MQTT: no CONNACK or SUBACK in time, or an unexpected packet in their place
	nErrKinds
)

// errCounted is the kind of a failure its reporter already counted (an
// MQTT refusal, counted by reason code): dialAll adds nothing for it.
const errCounted = nErrKinds

var errKindNames = [nErrKinds]string{
	errDial:             "dial",
	errDialRefused:      "dial_refused",
	errDialNoPort:       "dial_no_source_port",
	errDialFiles:        "dial_too_many_files",
	errDialTimeout:      "dial_timeout",
	errHandshake:        "handshake",
	errHandshakeTimeout: "handshake_timeout",
	errHandshakeHTTP:    "handshake_http_status",
	errDropped:          "dropped_without_close_frame",
	errWrite:            "write",
	errProtocol:         "protocol",
	errReadTimeout:      "read_timeout",
	errGaveUp:           "reconnect_gave_up",
	errDroppedMQTT:      "dropped_without_disconnect",
	errMQTTConnect:      "mqtt_handshake",
}

// closeKey is a close frame that was not expected: rejected (it came
// within rejectWindow of the handshake, i.e. the broker refused the
// connection) or a close of an established connection. For MQTT it is a
// failure reason code instead, named by the packet that carried it.
type closeKey struct {
	code     uint16
	rejected bool
	mqtt     uint8 // 0: a WebSocket close frame; else the MQTT packet (mqttKind…)
}

// MQTT packets that carry a failure reason code the simulator counts.
const (
	_               = iota
	mqttKindConnack // CONNACK refusal: connack_0x86
	mqttKindDisconn // DISCONNECT from the broker: disconnect_0x98
	mqttKindSuback  // a refused subscription: suback_0x87 (3.1.1: suback_0x80)
	mqttKindPuback  // a refused QoS 1 publish (MQTT 5): puback_0x87
)

var mqttKindNames = [...]string{mqttKindConnack: "connack_", mqttKindDisconn: "disconnect_", mqttKindSuback: "suback_", mqttKindPuback: "puback_"}

func (k closeKey) String() string {
	if k.mqtt != 0 && int(k.mqtt) < len(mqttKindNames) {
		const hex = "0123456789abcdef"
		return mqttKindNames[k.mqtt] + "0x" + string([]byte{hex[k.code>>4&0xf], hex[k.code&0xf]})
	}
	if k.rejected {
		return "rejected_" + strconv.Itoa(int(k.code))
	}
	return "closed_" + strconv.Itoa(int(k.code))
}

// errorCounts counts failures by kind. Failures are rare next to messages,
// so close codes share one mutex; the fixed kinds are atomic.
type errorCounts struct {
	kinds  [nErrKinds]atomic.Int64
	mu     sync.Mutex
	closes map[closeKey]int64
}

func (e *errorCounts) add(k errKind) { e.kinds[k].Add(1) }

func (e *errorCounts) addClose(k closeKey) {
	e.mu.Lock()
	if e.closes == nil {
		e.closes = make(map[closeKey]int64)
	}
	e.closes[k]++
	e.mu.Unlock()
}

// snapshot returns the cumulative counts by name (zero counts left out).
func (e *errorCounts) snapshot() map[string]int64 {
	m := make(map[string]int64)
	for k := range e.kinds {
		if v := e.kinds[k].Load(); v != 0 {
			m[errKindNames[k]] = v
		}
	}
	e.mu.Lock()
	for k, v := range e.closes {
		m[k.String()] += v
	}
	e.mu.Unlock()
	return m
}

func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// diffCounts returns now − before for every key of now.
func diffCounts(now, before map[string]int64) map[string]int64 {
	d := make(map[string]int64)
	for k, v := range now {
		if x := v - before[k]; x != 0 {
			d[k] = x
		}
	}
	return d
}

// formatCounts renders counts as "a=1 b=2" in key order, for progress lines.
func formatCounts(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s=%d", k, m[k])
	}
	return s
}
