package loadtest

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Report is a run's result, printed as JSON on stdout.
type Report struct {
	Scenario string `json:"scenario"`
	// Protocol is "mqtt" for an MQTT fleet; left out for the seed
	// protocol, whose reports are as they always were.
	Protocol    string           `json:"protocol,omitempty"`
	Started     time.Time        `json:"started"`
	Seconds     float64          `json:"seconds"`
	Workers     int              `json:"workers"`
	InProcess   bool             `json:"in_process,omitempty"`
	SourceIPs   int              `json:"source_ips"`
	Devices     int              `json:"devices"`
	Dashboards  int              `json:"dashboards,omitempty"`
	Commander   bool             `json:"commander,omitempty"`
	Connections ConnReport       `json:"connections"`
	Telemetry   *TrafficReport   `json:"telemetry,omitempty"`
	Commands    *TrafficReport   `json:"commands,omitempty"`
	Churn       *ChurnReport     `json:"churn,omitempty"`
	Revoke      *RevokeReport    `json:"revoke,omitempty"`
	RevKind     *RevKindReport   `json:"revoke_kind,omitempty"`
	Storm       *StormReport     `json:"storm,omitempty"`
	Offline     *OfflineReport   `json:"offline,omitempty"`
	MQTT        *MQTTReport      `json:"mqtt,omitempty"`
	Errors      map[string]int64 `json:"errors"`
	ErrorsTotal int64            `json:"errors_total"`
	Client      ClientReport     `json:"client"`
	Broker      *BrokerReport    `json:"broker,omitempty"`
	Series      []Point          `json:"series"`
	// SocketFloor (revoke --kind): raw loopback sockets getting one close
	// frame each on this machine, measured once per run before the first
	// kind (the same figures in every kind's report); see floor.go.
	SocketFloor *FloorReport `json:"socket_floor,omitempty"`
}

// ConnReport is the first connection of the fleet (the ramp).
type ConnReport struct {
	Target    int     `json:"target"`
	Connected int64   `json:"connected"`
	Failed    int64   `json:"failed"`
	Seconds   float64 `json:"ramp_seconds"`
	PerSecond float64 `json:"connects_per_second"`
	OpenAtEnd int64   `json:"open_at_end"`
	// Handshake is dial + WebSocket upgrade, per connection, over the
	// whole run (reconnects included).
	Handshake Latency `json:"handshake_latency"`
}

// TrafficReport is one kind of message: telemetry (devices → dashboards)
// or commands (commander → devices).
type TrafficReport struct {
	OfferedPerSecond float64 `json:"offered_per_second"` // 0: unpaced
	Sent             int64   `json:"sent"`
	Expected         int64   `json:"expected_deliveries"`
	Delivered        int64   `json:"delivered"`
	// Lost is Expected − Delivered, given only where Expected is exact
	// (every subscriber connected throughout).
	Lost               *int64  `json:"lost,omitempty"`
	Seconds            float64 `json:"seconds"`
	SentPerSecond      float64 `json:"sent_per_second"`
	DeliveredPerSecond float64 `json:"delivered_per_second"`
	Latency            Latency `json:"latency"`
}

// ChurnReport is an outage and the reconnect storm after it.
type ChurnReport struct {
	Dropped             int64   `json:"dropped"`
	Reconnected         int64   `json:"reconnected"`
	Failed              int64   `json:"failed"`
	OutageSeconds       float64 `json:"outage_seconds"`
	JitterSeconds       float64 `json:"reconnect_jitter_seconds"`
	AllBackSeconds      float64 `json:"all_back_seconds"` // from the start of the storm to the last reconnect
	SinceDropSeconds    float64 `json:"all_back_since_drop_seconds"`
	ReconnectsPerSecond float64 `json:"reconnects_per_second"`
}

// RevokeReport is K tokens disabled under load.
type RevokeReport struct {
	Tokens      int       `json:"tokens"`
	Revoked     int       `json:"tokens_revoked"`
	AdminCallMs []float64 `json:"admin_call_ms"`
	Affected    int64     `json:"affected_connections"`
	// Closed counts the affected clients closed with the revocation's
	// signal, reported under its name: close code 4002 (seed), DISCONNECT
	// 0x87 (MQTT 5), the connection closed (MQTT 3.1.1, whose server sends
	// no DISCONNECT).
	Closed           int64   `json:"-"`
	Closed4002       *int64  `json:"closed_with_4002,omitempty"`
	ClosedDisconnect *int64  `json:"closed_with_disconnect_0x87,omitempty"`
	ClosedByBroker   *int64  `json:"closed_by_broker,omitempty"`
	AllClosedMs      float64 `json:"all_closed_ms"` // from the first admin call to the last affected client's close frame (DISCONNECT, close)
	CloseLatency     Latency `json:"close_latency"`
	Unaffected       int64   `json:"unaffected_devices"`
	UnaffectedOpen   int64   `json:"unaffected_still_open"`
	UnexpectedCloses int64   `json:"unexpected_closes"`
}

// MQTTReport is what an MQTT fleet (--protocol mqtt) did besides its
// messages.
type MQTTReport struct {
	Version          int      `json:"version"` // 4 (3.1.1) or 5
	URLs             []string `json:"urls"`
	KeepAliveSeconds int      `json:"keep_alive_seconds"`
	CommandQoS       int      `json:"command_qos"` // commands and the devices' command subscriptions; telemetry is QoS 0
	Persistent       bool     `json:"persistent_sessions,omitempty"`
	SessionPresent   int64    `json:"session_present"`       // CONNACKs with Session Present 1, whole run
	PubAcks          int64    `json:"command_acks_received"` // PUBACKs (QoS 1) or PUBCOMPs (QoS 2) for the commander's commands
	Pings            int64    `json:"pingreqs_sent"`
	PingResps        int64    `json:"pingresps_received"`
	DupDeliveries    int64    `json:"dup_flag_deliveries"` // deliveries with the DUP flag (resent after a reconnect)
}

// OfflineReport is the offline scenario: devices with persistent sessions
// drop, one QoS 1 command per device is published while they are away,
// they reconnect.
type OfflineReport struct {
	Devices              int64   `json:"devices"`
	SessionExpirySeconds int     `json:"session_expiry_seconds,omitempty"` // MQTT 5
	Dropped              int64   `json:"dropped"`
	OfflineSessions      float64 `json:"broker_offline_sessions"` // gatecast_sessions_offline after the drop (this run's)
	OfflineSeconds       float64 `json:"offline_wait_seconds"`    // from the drop until the broker counted them offline
	CommandsSent         int64   `json:"commands_sent"`
	CommandsAcked        int64   `json:"commands_acked"` // PUBACKs (PUBCOMPs at QoS 2) the backend got
	PublishSeconds       float64 `json:"publish_seconds"`
	Reconnected          int64   `json:"reconnected"`
	ReconnectFailed      int64   `json:"reconnect_failed"`
	ReconnectSeconds     float64 `json:"reconnect_seconds"` // from the storm's start to the last CONNACK
	JitterSeconds        float64 `json:"reconnect_jitter_seconds"`
	// ReconnectLatency is dial → CONNACK per device, in the storm.
	ReconnectLatency Latency `json:"reconnect_latency"`
	SessionPresent   int64   `json:"session_present"` // reconnects whose CONNACK said Session Present 1
	// Delivered counts devices that got their command, Duplicates the
	// commands a device got more than once; DupFlag the deliveries that
	// carried the DUP flag; Missing the devices without their command.
	Delivered  int64 `json:"commands_delivered"`
	Duplicates int64 `json:"duplicates"`
	DupFlag    int64 `json:"dup_flag"`
	Missing    int64 `json:"missing"`
	// AllDeliveredSeconds: from the storm's start to the last command.
	AllDeliveredSeconds float64 `json:"all_delivered_seconds"`
	// ReconnectToCommand is the start of the device's reconnect (its
	// dial) → its command's arrival: TCP connect, CONNECT, CONNACK and
	// the queued delivery.
	ReconnectToCommand Latency `json:"reconnect_to_command"`
	// CommandAge is the command's publish → its arrival (includes the
	// time the device was away).
	CommandAge Latency `json:"command_age"`
	// Broker memory from its /metrics (after a forced GC): before the
	// fleet connected, connected, with the sessions offline and the
	// commands queued, after the reconnect and the deliveries.
	Broker OfflineMemory `json:"broker_memory"`
}

// OfflineMemory is the broker's resident set and heap (+ stacks) at the
// offline scenario's steps, from process_resident_memory_bytes and
// go_memstats_{heap,stack}_inuse_bytes.
type OfflineMemory struct {
	RSSBefore      float64 `json:"rss_before_bytes"`
	RSSOnline      float64 `json:"rss_online_bytes"`
	RSSOffline     float64 `json:"rss_offline_bytes"`
	RSSAfter       float64 `json:"rss_after_bytes"`
	HeapBefore     float64 `json:"heap_stack_before_bytes"`
	HeapOnline     float64 `json:"heap_stack_online_bytes"`
	HeapOffline    float64 `json:"heap_stack_offline_bytes"`
	HeapAfter      float64 `json:"heap_stack_after_bytes"`
	OfflinePerConn float64 `json:"heap_stack_per_offline_session_bytes"` // (offline − before) / devices: a session with its queued command, no connection
}

// ClientReport is the simulator's own cost per idle connection, measured
// by each worker on itself after a full GC (heap + stacks, and RSS), minus
// what it used before its connections existed.
type ClientReport struct {
	Conns            int64   `json:"measured_conns"`
	HeapStackPerConn float64 `json:"heap_stack_bytes_per_conn"`
	RSSPerConn       float64 `json:"rss_bytes_per_conn"`
	Goroutines       int     `json:"goroutines_max_per_worker"`
}

// BrokerReport is the broker process, from /proc (--broker-pid) and, for
// idle, from its own /metrics.
type BrokerReport struct {
	PID              int     `json:"pid,omitempty"`
	RSSStart         int64   `json:"rss_start_bytes,omitempty"`
	RSSConnected     int64   `json:"rss_connected_bytes,omitempty"`
	RSSPeak          int64   `json:"rss_peak_bytes,omitempty"`
	RSSEnd           int64   `json:"rss_end_bytes,omitempty"`
	RSSPerConn       float64 `json:"rss_bytes_per_conn,omitempty"`
	CPUSeconds       float64 `json:"cpu_seconds,omitempty"`
	HeapStackPerConn float64 `json:"metrics_heap_stack_bytes_per_conn,omitempty"`
	MetricsRSSPer    float64 `json:"metrics_rss_bytes_per_conn,omitempty"`
	Goroutines       float64 `json:"metrics_goroutines,omitempty"`
}

// Point is one second of the run.
type Point struct {
	T         int     `json:"t"`
	Conns     int64   `json:"conns"`
	Connects  int64   `json:"connects"`
	Sent      int64   `json:"sent"`
	Delivered int64   `json:"delivered"`
	Errors    int64   `json:"errors"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	Max       float64 `json:"max_ms"`
	BrokerRSS int64   `json:"broker_rss_bytes,omitempty"`
	BrokerCPU float64 `json:"broker_cpu_percent,omitempty"`
}

// aggregator merges the workers' ticks (reader goroutines) and prints a
// progress line once every live worker has reported a second.
type aggregator struct {
	mu       sync.Mutex
	live     []bool
	points   map[int]*aggPoint
	lat      [nKinds]*hdrhistogram.Histogram
	connect  *hdrhistogram.Histogram
	close    *hdrhistogram.Histogram
	errors   map[string]int64
	badTicks int
	printed  int
	last     []int     // the last second each worker reported (its ticks come in order); -1 none
	maxSeen  int       // the last second any worker reported
	progress io.Writer // nil: quiet
	broker   *brokerSampler
}

type aggPoint struct {
	reported  map[int]bool
	open      map[int]int64
	connects  int64
	sent      int64
	delivered int64
	errors    int64
	lat       *hdrhistogram.Histogram
}

func newAggregator(workers int, progress io.Writer, broker *brokerSampler) *aggregator {
	a := &aggregator{
		live:     make([]bool, workers),
		points:   make(map[int]*aggPoint),
		connect:  newHist(),
		close:    newHist(),
		errors:   make(map[string]int64),
		printed:  -1,
		last:     make([]int, workers),
		maxSeen:  -1,
		progress: progress,
		broker:   broker,
	}
	for i := range a.live {
		a.live[i] = true
		a.last[i] = -1
	}
	for k := range a.lat {
		a.lat[k] = newHist()
	}
	return a
}

// maxSec bounds a tick's second: a day of ticks is far beyond any run.
const maxSec = 86400

func (a *aggregator) addTick(w int, t *tickData) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.Sec < 0 || t.Sec > maxSec || w < 0 || w >= len(a.live) {
		a.badTicks++
		return
	}
	p := a.points[t.Sec]
	if p == nil {
		p = &aggPoint{reported: map[int]bool{}, open: map[int]int64{}, lat: newHist()}
		a.points[t.Sec] = p
	}
	p.reported[w] = true
	a.last[w] = max(a.last[w], t.Sec)
	a.maxSeen = max(a.maxSeen, t.Sec)
	// A second's connections are the most any tick of it reported (the
	// last tick of a run comes after its connections are closed).
	p.open[w] = max(p.open[w], t.Open)
	p.connects += t.Connects
	for k := range nKinds {
		p.sent += t.Sent[k]
		p.delivered += t.Delivered[k]
		if t.Latency[k] != "" {
			h, err := decodeHist(t.Latency[k])
			if err != nil {
				a.badTicks++
				continue
			}
			p.lat.Merge(h)
			a.lat[k].Merge(h)
		}
	}
	for name, v := range t.Errors {
		p.errors += v
		a.errors[name] += v
	}
	for _, pair := range []struct {
		s string
		h *hdrhistogram.Histogram
	}{{t.Connect, a.connect}, {t.Close, a.close}} {
		if pair.s == "" {
			continue
		}
		if h, err := decodeHist(pair.s); err == nil {
			pair.h.Merge(h)
		} else {
			a.badTicks++
		}
	}
	a.printReady()
}

// workerGone stops waiting for a worker's ticks.
func (a *aggregator) workerGone(w int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.live[w] = false
	a.printReady()
}

// printReady prints the progress line of every second all live workers
// are done with: each has reported it or a later one (a worker's ticks come
// in order, and one that started late never reports the seconds before its
// first). A second nobody reported gets no line. Called with mu held.
func (a *aggregator) printReady() {
	for a.printed < a.maxSeen {
		next := a.printed + 1
		for w, live := range a.live {
			if live && a.last[w] < next {
				return
			}
		}
		a.printed = next
		p := a.points[next]
		if p == nil || a.progress == nil {
			continue
		}
		var open int64
		for _, v := range p.open {
			open += v
		}
		var errs int64
		for _, v := range a.errors {
			errs += v
		}
		all := newHist()
		for k := range a.lat {
			all.Merge(a.lat[k])
		}
		line := fmt.Sprintf("[%4ds] conns %7d  connects/s %6d  sent/s %7d  delivered/s %8d  p99 %s (run %s)  errors %d",
			a.printed, open, p.connects, p.sent, p.delivered, fmtMs(p.lat), fmtMs(all), errs)
		if errs > 0 {
			line += " (" + formatCounts(a.errors) + ")"
		}
		if a.broker != nil {
			if rss, cpu, ok := a.broker.latest(); ok {
				line += fmt.Sprintf("  broker %s %.0f%% cpu", fmtBytes(rss), cpu)
			}
		}
		fmt.Fprintln(a.progress, line)
	}
}

func fmtMs(h *hdrhistogram.Histogram) string {
	if h.TotalCount() == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(h.ValueAtQuantile(99))/1000, 'f', 2, 64) + "ms"
}

func fmtBytes(b int64) string {
	return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + "MiB"
}

// series returns the per-second points, in order.
func (a *aggregator) series() []Point {
	a.mu.Lock()
	defer a.mu.Unlock()
	secs := make([]int, 0, len(a.points))
	for s := range a.points {
		secs = append(secs, s)
	}
	sort.Ints(secs)
	out := make([]Point, 0, len(secs))
	for _, s := range secs {
		p := a.points[s]
		pt := Point{T: s, Connects: p.connects, Sent: p.sent, Delivered: p.delivered, Errors: p.errors}
		for _, v := range p.open {
			pt.Conns += v
		}
		if p.lat.TotalCount() > 0 {
			pt.P50 = float64(p.lat.ValueAtQuantile(50)) / 1000
			pt.P99 = float64(p.lat.ValueAtQuantile(99)) / 1000
			pt.Max = float64(p.lat.Max()) / 1000
		}
		if a.broker != nil {
			pt.BrokerRSS, pt.BrokerCPU = a.broker.at(s)
		}
		out = append(out, pt)
	}
	return out
}

// brokerSampler reads the broker's RSS and CPU time from /proc once a
// second.
type brokerSampler struct {
	pid   string
	epoch time.Time
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	samples  map[int]brokerSample
	lastRSS  int64
	lastCPU  float64 // percent of one core over the last second
	peak     int64
	cpuStart float64
	cpuLast  float64
	ok       bool
}

type brokerSample struct {
	rss int64
	cpu float64
}

// newBrokerSampler checks that pid is readable and starts sampling.
func newBrokerSampler(pid int, epoch time.Time) (*brokerSampler, error) {
	b := &brokerSampler{pid: strconv.Itoa(pid), epoch: epoch, stop: make(chan struct{}), done: make(chan struct{}), samples: map[int]brokerSample{}}
	rss, err := readRSS(b.pid)
	if err != nil {
		return nil, fmt.Errorf("--broker-pid %d: %w", pid, err)
	}
	cpu, err := readCPU(b.pid)
	if err != nil {
		return nil, fmt.Errorf("--broker-pid %d: %w", pid, err)
	}
	b.lastRSS, b.peak, b.cpuStart, b.cpuLast = rss, rss, cpu, cpu
	go b.loop()
	return b, nil
}

func (b *brokerSampler) loop() {
	defer close(b.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	prev := time.Now()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			rss, err1 := readRSS(b.pid)
			cpu, err2 := readCPU(b.pid)
			if err1 != nil || err2 != nil {
				continue // the broker exited; keep the last figures
			}
			b.mu.Lock()
			pct := (cpu - b.cpuLast) / now.Sub(prev).Seconds() * 100
			b.lastRSS, b.lastCPU, b.cpuLast, b.ok = rss, pct, cpu, true
			b.peak = max(b.peak, rss)
			b.samples[int(now.Sub(b.epoch)/time.Second)-1] = brokerSample{rss: rss, cpu: pct}
			b.mu.Unlock()
			prev = now
		}
	}
}

// rssNow reads the broker's RSS right now.
func (b *brokerSampler) rssNow() int64 {
	rss, err := readRSS(b.pid)
	if err != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.lastRSS
	}
	b.mu.Lock()
	b.peak = max(b.peak, rss)
	b.mu.Unlock()
	return rss
}

func (b *brokerSampler) latest() (int64, float64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastRSS, b.lastCPU, b.ok
}

func (b *brokerSampler) at(sec int) (int64, float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.samples[sec]
	return s.rss, s.cpu
}

// finish stops sampling and returns the run's CPU seconds and peak RSS.
func (b *brokerSampler) finish() (cpuSeconds float64, peak int64) {
	close(b.stop)
	<-b.done
	if cpu, err := readCPU(b.pid); err == nil {
		b.cpuLast = cpu
	}
	return b.cpuLast - b.cpuStart, b.peak
}
