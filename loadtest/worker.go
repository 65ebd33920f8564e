package loadtest

import (
	"bufio"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
)

// A worker holds a share of the fleet's connections and runs the commands
// the parent sends it (one JSON line each on its input), answering each
// with a "done" event and emitting a "tick" event every second (JSON lines
// on its output). It runs as its own process (the usual case) or, with
// --in-process, as goroutines of the parent over pipes: the same code and
// the same protocol either way.

// workerSpec is the first line a worker reads: which connections are its
// own and how to make them. Connection ids are global: devices 0…Devices-1,
// then dashboards, then the commander.
type workerSpec struct {
	Index, Count     int
	Epoch            int64 // unix ns; tick k covers [Epoch+k s, Epoch+(k+1) s)
	URLs             []string
	SourceIPs        int // connections bind to 127.0.0.1…127.0.0.N in turn (0: no bind)
	Devices          int // whole fleet
	DevLo, DevHi     int // this worker's devices
	Dashboards       int // whole fleet; this worker holds those with j % Count == Index
	Regions          int
	Commander        bool // this worker holds the commander connection
	DeviceTokens     []string
	DashboardToken   string
	CommanderToken   string
	Size             int
	DialConcurrency  int
	DialTimeout      time.Duration
	HandshakeTimeout time.Duration

	// Protocol "mqtt": every connection speaks MQTT over TCP to URLs
	// (tcp://host:port) instead of the seed protocol ("" or "seed").
	Protocol      string        `json:",omitempty"`
	MQTTVersion   byte          `json:",omitempty"` // 4 (3.1.1) or 5
	KeepAlive     time.Duration `json:",omitempty"` // CONNECT keep alive; PINGREQ every half of it (0: none)
	Persistent    bool          `json:",omitempty"` // devices keep persistent sessions (offline)
	SessionExpiry uint32        `json:",omitempty"` // MQTT 5 Session Expiry Interval of persistent sessions, seconds
	ClientPrefix  string        `json:",omitempty"` // client identifiers are <prefix>-<connection id>
	CommandQoS    byte          `json:",omitempty"` // QoS of the commands and of the devices' command subscriptions

	// Layout is how devices are laid out when not as the fleet's (""):
	// layoutRev (the revoke scenario's --kind: devices [0, Affected) use
	// DeviceTokens[0] and subscribe to TopicBase/a/<i>, the others use the
	// last token and subscribe to TopicBase/u/<i>) or layoutStorm (device
	// i uses DeviceTokens[i] and subscribes to TopicBase/<i>). Either way a
	// device has exactly one subscription, its own topic, and no dashboard
	// or commander is involved.
	Layout    string `json:",omitempty"`
	TopicBase string `json:",omitempty"`
	Affected  int    `json:",omitempty"`
	// ConfirmPing (seed): a connect is complete when the pong of a ping
	// sent right after the upgrade arrives. The broker answers the upgrade
	// before it admits the connection (token, grants, limit), so only a
	// frame read back shows the connection admitted; a refusal's close
	// frame comes before the pong.
	ConfirmPing bool `json:",omitempty"`
}

// Device layouts (workerSpec.Layout).
const (
	layoutRev   = "rev"
	layoutStorm = "storm"
)

func (s *workerSpec) mqtt() bool { return s.Protocol == protoMQTT }

// Protocols the fleet speaks.
const (
	protoSeed = "seed"
	protoMQTT = "mqtt"
)

func (s *workerSpec) validate() error {
	switch {
	case len(s.URLs) == 0:
		return errors.New("no broker URL")
	case s.Devices < 0 || s.DevLo < 0 || s.DevHi < s.DevLo || s.DevHi > s.Devices:
		return fmt.Errorf("bad device range [%d,%d) of %d", s.DevLo, s.DevHi, s.Devices)
	case s.Dashboards < 0 || s.Regions < 1:
		return errors.New("bad dashboards or regions")
	case s.Count < 1 || s.Index < 0 || s.Index >= s.Count:
		return errors.New("bad worker index")
	case s.Devices > 0 && len(s.DeviceTokens) == 0:
		return errors.New("no device token")
	case s.SourceIPs < 0 || s.SourceIPs > 254:
		return errors.New("source IPs must be 0…254")
	case s.Size < minMessageSize || s.Size > maxServerFrame/2:
		return fmt.Errorf("message size must be %d…%d bytes", minMessageSize, maxServerFrame/2)
	case s.DialConcurrency < 1 || s.DialTimeout <= 0 || s.HandshakeTimeout <= 0:
		return errors.New("bad dial settings")
	case s.Protocol != "" && s.Protocol != protoSeed && s.Protocol != protoMQTT:
		return fmt.Errorf("unknown protocol %q", s.Protocol)
	case s.mqtt() && s.MQTTVersion != 4 && s.MQTTVersion != 5:
		return errors.New("MQTT version must be 4 or 5")
	case s.mqtt() && (s.KeepAlive < 0 || s.KeepAlive > 65535*time.Second || s.CommandQoS > 2):
		return errors.New("bad MQTT keep alive or command QoS")
	}
	return nil
}

// command is one instruction from the parent. Op is one of connect,
// outage, reconnect, traffic, quiesce, mark, counts, memory, close, each
// answered by a "done" event, or abort (no answer), which cuts short the
// command running or queued when it arrives.
type command struct {
	Op  string `json:"op"`
	Seq int    `json:"seq"`
	// connect, reconnect
	Rate     float64       `json:"rate,omitempty"`     // dials per second (0: as fast as DialConcurrency allows)
	Jitter   time.Duration `json:"jitter,omitempty"`   // each dial delayed by a uniform random [0, Jitter)
	Deadline int64         `json:"deadline,omitempty"` // unix ns; when set, failed dials are retried with backoff until then
	// outage
	Fraction float64 `json:"fraction,omitempty"` // share of this worker's devices dropped
	// traffic
	Telemetry     bool    `json:"telemetry,omitempty"`
	TelemetryRate float64 `json:"telemetry_rate,omitempty"` // messages/s from this worker's devices (0: unpaced)
	TelemetryMax  int64   `json:"telemetry_max,omitempty"`  // stop after this many (0: until quiesce)
	Commands      bool    `json:"commands,omitempty"`
	CommandRate   float64 `json:"command_rate,omitempty"`
	CommandMax    int64   `json:"command_max,omitempty"`
	CommandFleet  bool    `json:"command_fleet,omitempty"` // to lt/fleet/cmd (every device) instead of one device's topic each
	// mark
	RevokedTokens []int `json:"revoked_tokens,omitempty"`
	At            int64 `json:"at,omitempty"` // unix ns the parent starts revoking
	// histograms: reset them after answering
	Reset bool `json:"reset,omitempty"`
	// connect: only the devices with From <= id < To (To 0: every
	// connection not open)
	From int `json:"from,omitempty"`
	To   int `json:"to,omitempty"`
	// revmark (the revoke scenario's --kind): the signal the change should
	// give (sigClose, sigDisconnect, sigLost or sigRefused, and its code)
	SigKind uint8  `json:"sig_kind,omitempty"`
	SigCode uint16 `json:"sig_code,omitempty"`
	// probe: start (true) or stop QoS 1 probe publishes on every device
	Probe bool `json:"probe,omitempty"`
	// stormarm: reconnect every dropped device until it is back
	Storm *stormSettings `json:"storm,omitempty"`
}

// event is one line from a worker.
type event struct {
	Ev     string    `json:"ev"` // tick, done
	Seq    int       `json:"seq,omitempty"`
	Err    string    `json:"err,omitempty"`
	Tick   *tickData `json:"tick,omitempty"`
	Status *status   `json:"status,omitempty"`
}

// tickData is what happened during one second (deltas), plus the open
// connections at its end.
type tickData struct {
	Sec       int              `json:"sec"`
	Open      int64            `json:"open"`
	Connects  int64            `json:"connects"`
	Sent      [nKinds]int64    `json:"sent"`
	Delivered [nKinds]int64    `json:"delivered"`
	Errors    map[string]int64 `json:"errors,omitempty"`
	Latency   [nKinds]string   `json:"latency"` // encoded histograms (µs), "" when empty
	Connect   string           `json:"connect,omitempty"`
	Close     string           `json:"close,omitempty"`
}

// status is a worker's cumulative state, sent with every "done".
type status struct {
	Open             int64            `json:"open"`
	OpenDevices      int64            `json:"open_devices"`
	Publishing       bool             `json:"publishing,omitempty"` // traffic goroutines still running
	Connected        int64            `json:"connected"`            // by the last connect/reconnect
	Failed           int64            `json:"failed"`
	DialStart        int64            `json:"dial_start,omitempty"`
	LastConnect      int64            `json:"last_connect,omitempty"`
	Dropped          int64            `json:"dropped,omitempty"`
	Sent             [nKinds]int64    `json:"sent"`
	Expected         [nKinds]int64    `json:"expected"`
	Delivered        [nKinds]int64    `json:"delivered"`
	RevokedAffected  int64            `json:"revoked_affected,omitempty"`
	RevokedCloses    int64            `json:"revoked_closes,omitempty"`
	LastRevokedClose int64            `json:"last_revoked_close,omitempty"`
	HeapStack        int64            `json:"heap_stack,omitempty"`
	RSS              int64            `json:"rss,omitempty"`
	Goroutines       int              `json:"goroutines,omitempty"`
	Errors           map[string]int64 `json:"errors,omitempty"`

	// MQTT
	SessionPresent  int64 `json:"session_present,omitempty"` // by the last connect/reconnect
	PubAcks         int64 `json:"pubacks,omitempty"`
	Pings           int64 `json:"pings,omitempty"`
	PingResps       int64 `json:"pingresps,omitempty"`
	DupFlags        int64 `json:"dup_flags,omitempty"`
	CommandsUnique  int64 `json:"commands_unique,omitempty"`  // devices that got at least one command
	CommandsRepeats int64 `json:"commands_repeats,omitempty"` // commands a device got beyond its first
	// histograms (op "histograms"): the dials of the last connect or
	// reconnect, and dial → command of persistent devices
	DialHist   string `json:"dial_hist,omitempty"`
	ResumeHist string `json:"resume_hist,omitempty"`

	// revoke --kind: signals recorded since revmark; per device of this
	// worker (op "revtimes"), the CLOCK_MONOTONIC ns of its first signal
	// (0: none) and the signal (kind<<16 | code); the probes (downgrade)
	RevSignals  int64    `json:"rev_signals,omitempty"`
	RevTimes    []int64  `json:"rev_times,omitempty"`
	RevCodes    []uint32 `json:"rev_codes,omitempty"`
	ProbesSent  int64    `json:"probes_sent,omitempty"`
	ProbesAcked int64    `json:"probes_acked,omitempty"`
	ProbeHist   string   `json:"probe_hist,omitempty"`
	ProbeOK     []int64  `json:"probe_ok,omitempty"` // per device: when its last accepted probe was sent

	// storm
	Storm *stormStatus `json:"storm,omitempty"`
}

// nShards receive shards per worker: event goroutines of different
// connections record into different shards, so no lock is shared by all.
const nShards = 8

type recvShard struct {
	mu   sync.Mutex
	lat  [nKinds]*hdrhistogram.Histogram // since the last tick
	recv [nKinds]atomic.Int64
	_    [64]byte
}

// pubCounter is one publishing goroutine's count, on its own cache line.
type pubCounter struct {
	sent     [nKinds]atomic.Int64
	expected [nKinds]atomic.Int64
	_        [32]byte
}

const maxPublishers = 4 // telemetry goroutines use 0…2, the commander 3

// worker is one worker's state. Its goroutines: the command goroutine
// (handle and everything it calls: dialing, outage, traffic start/stop,
// status), netpoll's event goroutines (devConn.onRequest → delivered,
// closeFrame), the publishing goroutines (telemetryLoop, commandLoop), the
// dialing goroutines of dialAll, and the ticker (emitTick, which reads
// only atomics, the shards under their locks and the histograms under
// theirs).
type worker struct {
	spec    workerSpec
	targets []dialTarget
	laddrs  []*netpoll.TCPAddr
	conns   []devConn // devices first, then dashboards, then the commander
	nDev    int
	cmdr    *devConn
	dpr     []int64 // dashboards watching each region

	open       atomic.Int64
	connects   atomic.Int64
	publishing atomic.Int32 // traffic goroutines running
	errs       errorCounts
	shards     [nShards]recvShard
	pub        [maxPublishers]pubCounter

	connectMu   sync.Mutex
	connectHist *hdrhistogram.Histogram
	closeMu     sync.Mutex
	closeHist   *hdrhistogram.Histogram

	revoked          atomic.Pointer[[]bool]
	markAt           atomic.Int64
	revokedCloses    atomic.Int64
	lastRevokedClose atomic.Int64

	rev   atomic.Pointer[revState]   // revoke --kind: set by revmark
	probe atomic.Pointer[probeState] // revoke --kind downgrade: QoS 1 probes running
	storm atomic.Pointer[stormState] // storm: set by stormarm

	// MQTT
	mqttCounters
	cmdID      uint16                  // the commander's last packet identifier (commandLoop only)
	cmdSeen    []atomic.Uint32         // commands received per device of this worker
	phaseHist  *hdrhistogram.Histogram // dials of the last connect/reconnect, under connectMu
	resumeMu   sync.Mutex
	resumeHist *hdrhistogram.Histogram // dial → command (persistent devices)
	pingStop   chan struct{}
	pingDone   chan struct{}

	// command goroutine only
	dropped   []int32
	affected  int64  // devices of revoked tokens connected at the mark
	last      status // connect results
	traffic   *trafficRun
	baseHeap  int64
	baseRSS   int64
	tickStop  chan struct{}
	tickDone  chan struct{}
	tickMu    sync.Mutex
	tickPrev  tickTotals
	tickLat   [nKinds]*hdrhistogram.Histogram
	out       *eventWriter
	closeOnce sync.Once
}

type tickTotals struct {
	connects  int64
	sent      [nKinds]int64
	delivered [nKinds]int64
	errors    map[string]int64
}

type trafficRun struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

// eventWriter serialises events from the command goroutine and the ticker.
type eventWriter struct {
	mu  sync.Mutex
	bw  *bufio.Writer
	enc *json.Encoder
}

func newEventWriter(w io.Writer) *eventWriter {
	bw := bufio.NewWriterSize(w, 64<<10)
	return &eventWriter{bw: bw, enc: json.NewEncoder(bw)}
}

func (e *eventWriter) send(ev event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enc.Encode(ev); err != nil {
		return err
	}
	return e.bw.Flush()
}

// runWorker runs a worker until the parent sends "close" or closes in.
func runWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	if !sc.Scan() {
		return fmt.Errorf("loadtest worker: no spec on input: %v", sc.Err())
	}
	var spec workerSpec
	if err := json.Unmarshal(sc.Bytes(), &spec); err != nil {
		return fmt.Errorf("loadtest worker: bad spec: %w", err)
	}
	w, err := newWorker(spec, newEventWriter(out))
	if err != nil {
		return err
	}
	defer w.shutdown()
	// A worker outlives a cancelled parent context on purpose: the parent
	// says when to stop (or closes our input), so that it still gets the
	// final counts. "abort" cuts the running command short instead; it is
	// read while that command runs, so it has its own goroutine.
	base := context.WithoutCancel(ctx)
	cmds := make(chan command, 16)
	readErr := make(chan error, 1)
	var mu sync.Mutex
	var cancelOp context.CancelFunc = func() {}
	var abortUpTo atomic.Int64 // commands up to this seq are aborted
	go func() {
		defer close(cmds)
		lastSeq := 0
		for sc.Scan() {
			var c command
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				readErr <- fmt.Errorf("loadtest worker: bad command: %w", err)
				return
			}
			if c.Op == "abort" {
				abortUpTo.Store(int64(lastSeq))
				mu.Lock()
				cancelOp()
				mu.Unlock()
				continue
			}
			lastSeq = c.Seq
			cmds <- c
		}
		readErr <- sc.Err()
	}()
	for c := range cmds {
		opCtx, cancel := context.WithCancel(base)
		mu.Lock()
		cancelOp = cancel
		if int64(c.Seq) <= abortUpTo.Load() {
			cancel()
		}
		mu.Unlock()
		st, err := w.handle(opCtx, c)
		cancel()
		ev := event{Ev: "done", Seq: c.Seq, Status: &st}
		if err != nil {
			ev.Err = err.Error()
		}
		if err := w.out.send(ev); err != nil {
			return err
		}
		if c.Op == "close" {
			return nil
		}
	}
	return <-readErr
}

func newWorker(spec workerSpec, out *eventWriter) (*worker, error) {
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("loadtest worker: %w", err)
	}
	tuneNetpoll()
	w := &worker{spec: spec, out: out, connectHist: newHist(), closeHist: newHist(), phaseHist: newHist(), resumeHist: newHist()}
	for i := range w.shards {
		for k := range w.shards[i].lat {
			w.shards[i].lat[k] = newHist()
		}
	}
	for k := range w.tickLat {
		w.tickLat[k] = newHist()
	}
	loopback := true
	for _, u := range spec.URLs {
		t, err := resolveTarget(u, spec.mqtt())
		if err != nil {
			return nil, err
		}
		loopback = loopback && t.raddr.IP.IsLoopback()
		w.targets = append(w.targets, t)
	}
	if spec.SourceIPs > 0 && loopback {
		for i := range spec.SourceIPs {
			w.laddrs = append(w.laddrs, &netpoll.TCPAddr{TCPAddr: net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}})
		}
	}
	w.dpr = make([]int64, spec.Regions)
	for j := range spec.Dashboards {
		w.dpr[j%spec.Regions]++
	}
	// The baseline for the client's memory per connection is taken before
	// the per-connection state exists.
	w.baseHeap, w.baseRSS = memNow()
	n := spec.DevHi - spec.DevLo
	for j := spec.Index; j < spec.Dashboards; j += spec.Count {
		n++
	}
	if spec.Commander {
		n++
	}
	w.conns = make([]devConn, 0, n)
	for i := spec.DevLo; i < spec.DevHi; i++ {
		w.conns = append(w.conns, devConn{w: w, id: int32(i), role: roleDevice})
	}
	w.nDev = len(w.conns)
	for j := spec.Index; j < spec.Dashboards; j += spec.Count {
		w.conns = append(w.conns, devConn{w: w, id: int32(spec.Devices + j), role: roleDashboard})
	}
	if spec.Commander {
		w.conns = append(w.conns, devConn{w: w, id: int32(spec.Devices + spec.Dashboards), role: roleCommander})
		w.cmdr = &w.conns[len(w.conns)-1]
	}
	if spec.mqtt() {
		w.cmdSeen = make([]atomic.Uint32, w.nDev)
		if spec.KeepAlive > 0 {
			w.pingStop, w.pingDone = make(chan struct{}), make(chan struct{})
			go w.pingLoop(w.pingStop, w.pingDone)
		}
	}
	w.tickStop, w.tickDone = make(chan struct{}), make(chan struct{})
	go w.tickLoop()
	return w, nil
}

// memNow returns the heap and stack in use after a full collection, and
// the resident set size, of this process.
func memNow() (heapStack, rss int64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r, _ := readRSS("self")
	return int64(ms.HeapInuse + ms.StackInuse), r
}

func (w *worker) laddr(id int32) *netpoll.TCPAddr {
	if len(w.laddrs) == 0 {
		return nil
	}
	return w.laddrs[int(id)%len(w.laddrs)]
}

// mask returns a fresh masking key. math/rand/v2's top-level source is
// per-thread: no lock, no allocation.
func (w *worker) mask() [4]byte { return maskFrom(rand.Uint32()) }

// handshakeHeader returns the Authorization and Tag header lines of dc.
func (w *worker) handshakeHeader(dc *devConn) []byte {
	b := make([]byte, 0, 160)
	b = append(b, "Authorization: Token "...)
	i := int(dc.id)
	switch {
	case dc.role == roleDevice && w.spec.Layout != "":
		b = append(b, w.deviceToken(i)...)
		b = append(b, "\r\nTag: "...)
		b = w.appendDeviceFilter(b, i)
	case dc.role == roleDevice:
		b = append(b, w.spec.DeviceTokens[i%len(w.spec.DeviceTokens)]...)
		b = append(b, "\r\nTag: "...)
		b = appendDeviceTopic(b, i%w.spec.Regions, i, "cmd")
		b = append(b, ","+fleetTopic...)
	case dc.role == roleDashboard:
		b = append(b, w.spec.DashboardToken...)
		b = append(b, "\r\nTag: lt/r"...)
		b = strconv.AppendInt(b, int64((i-w.spec.Devices)%w.spec.Regions), 10)
		b = append(b, "/+/telemetry"...)
	default:
		b = append(b, w.spec.CommanderToken...)
		b = append(b, "\r\nTag: lt/commander"...)
	}
	return append(b, "\r\n"...)
}

// deviceToken returns device i's token secret.
func (w *worker) deviceToken(i int) string {
	t := w.spec.DeviceTokens
	switch w.spec.Layout {
	case layoutRev:
		if i < w.spec.Affected {
			return t[0]
		}
		return t[len(t)-1]
	case layoutStorm:
		if i < len(t) {
			return t[i]
		}
	}
	return t[i%len(t)]
}

// appendDeviceFilter appends the one subscription of device i of a
// layout: TopicBase/a/<i> (rev, affected), TopicBase/u/<i> (rev, the
// others), TopicBase/<i> (storm).
func (w *worker) appendDeviceFilter(b []byte, i int) []byte {
	b = append(b, w.spec.TopicBase...)
	if w.spec.Layout == layoutRev {
		if i < w.spec.Affected {
			b = append(b, "/a"...)
		} else {
			b = append(b, "/u"...)
		}
	}
	b = append(b, '/')
	return strconv.AppendInt(b, int64(i), 10)
}

// fleetTopic is the command topic every device subscribes to.
const fleetTopic = "lt/fleet/cmd"

// appendDeviceTopic appends lt/r<region>/d<device>/<leaf>.
func appendDeviceTopic(b []byte, region, device int, leaf string) []byte {
	b = append(b, "lt/r"...)
	b = strconv.AppendInt(b, int64(region), 10)
	b = append(b, "/d"...)
	b = strconv.AppendInt(b, int64(device), 10)
	b = append(b, '/')
	return append(b, leaf...)
}

// delivered counts a message read by dc and records its latency (ns; < 0
// when the message carried no stamp). Event goroutines call it.
func (w *worker) delivered(dc *devConn, latNs int64) {
	k := kindCommand
	if dc.role == roleDashboard {
		k = kindTelemetry
	}
	s := &w.shards[int(dc.id)%nShards]
	s.recv[k].Add(1)
	if latNs >= 0 {
		s.mu.Lock()
		recordUs(s.lat[k], latNs)
		s.mu.Unlock()
	}
}

// closeFrame accounts for a close frame the broker sent first.
func (w *worker) closeFrame(dc *devConn, code uint16, now int64) {
	if w.stormCause(dc, closeKey{code: code}.String()) || w.signal(dc, sigClose, code) {
		return
	}
	if code == 4002 && w.revokedDevice(dc) {
		w.revokedClose(now)
		return
	}
	w.errs.addClose(closeKey{code: code, rejected: now-dc.openedAt < int64(rejectWindow)})
}

// revokedDevice reports whether dc is a device of a token the parent
// marked as revoked.
func (w *worker) revokedDevice(dc *devConn) bool {
	rv := w.revoked.Load()
	return dc.role == roleDevice && rv != nil && (*rv)[int(dc.id)%len(*rv)]
}

// revokedClose counts the revocation's close of one affected client and
// times it from the mark.
//
// The count comes last: once the parent sees every affected client
// counted, their times are in lastRevokedClose and the histogram.
func (w *worker) revokedClose(now int64) {
	for {
		last := w.lastRevokedClose.Load()
		if now <= last || w.lastRevokedClose.CompareAndSwap(last, now) {
			break
		}
	}
	w.closeMu.Lock()
	recordUs(w.closeHist, now-w.markAt.Load())
	w.closeMu.Unlock()
	w.revokedCloses.Add(1)
}

func (w *worker) handle(ctx context.Context, c command) (status, error) {
	var err error
	switch c.Op {
	case "connect":
		idx := make([]int32, 0, len(w.conns))
		for i := range w.conns {
			dc := &w.conns[i]
			if c.To > 0 && (dc.role != roleDevice || int(dc.id) < c.From || int(dc.id) >= c.To) {
				continue
			}
			if !dc.isOpen() {
				idx = append(idx, int32(i))
			}
		}
		w.dialAll(ctx, idx, c)
	case "outage":
		w.outage(c.Fraction)
	case "reconnect":
		w.dialAll(ctx, w.dropped, c)
		w.dropped = nil
	case "traffic":
		w.startTraffic(c)
	case "quiesce":
		w.stopTraffic()
	case "mark":
		rv := make([]bool, max(1, len(w.spec.DeviceTokens)))
		for _, k := range c.RevokedTokens {
			if k < 0 || k >= len(rv) {
				return w.status(), fmt.Errorf("revoked token index %d out of range", k)
			}
			rv[k] = true
		}
		w.markAt.Store(c.At)
		w.revoked.Store(&rv)
		w.affected = 0
		for i := range w.nDev {
			if dc := &w.conns[i]; rv[int(dc.id)%len(rv)] && dc.isOpen() {
				w.affected++
			}
		}
	case "counts":
	case "revmark":
		w.revMark(c.SigKind, c.SigCode)
	case "probe":
		w.setProbing(c.Probe)
	case "revecho":
		w.revEcho()
	case "revtimes":
		st := w.status()
		st.RevTimes, st.RevCodes = w.revTimes()
		st.ProbeOK = w.probeOK()
		return st, nil
	case "stormarm":
		err = w.stormArm(c.Storm)
	case "stormstop":
		w.stormStop()
	case "stormtimes":
		st := w.status()
		st.Storm = w.stormTimes()
		return st, nil
	case "histograms":
		st := w.status()
		w.connectMu.Lock()
		st.DialHist = encodeHist(w.phaseHist)
		w.connectMu.Unlock()
		w.resumeMu.Lock()
		st.ResumeHist = encodeHist(w.resumeHist)
		if c.Reset {
			w.resumeHist.Reset()
		}
		w.resumeMu.Unlock()
		return st, nil
	case "memory":
		st := w.status()
		h, r := memNow()
		st.HeapStack, st.RSS, st.Goroutines = h-w.baseHeap, r-w.baseRSS, runtime.NumGoroutine()
		return st, nil
	case "close":
		w.shutdown()
	default:
		err = fmt.Errorf("unknown op %q", c.Op)
	}
	return w.status(), err
}

// status returns the worker's cumulative state. Command goroutine only.
func (w *worker) status() status {
	st := w.last
	st.Open = w.open.Load()
	for i := range w.nDev {
		if w.conns[i].isOpen() {
			st.OpenDevices++
		}
	}
	st.Publishing = w.publishing.Load() > 0
	st.Dropped = int64(len(w.dropped))
	st.Sent, st.Expected, st.Delivered = w.totals()
	st.RevokedAffected = w.affected
	st.RevokedCloses = w.revokedCloses.Load()
	st.LastRevokedClose = w.lastRevokedClose.Load()
	w.revStatus(&st)
	st.Storm = w.stormStatus()
	st.Errors = w.errs.snapshot()
	if w.spec.mqtt() {
		st.PubAcks, st.Pings, st.PingResps, st.DupFlags = w.pubacks.Load(), w.pings.Load(), w.pingresps.Load(), w.dupFlags.Load()
		for i := range w.cmdSeen {
			if n := int64(w.cmdSeen[i].Load()); n > 0 {
				st.CommandsUnique++
				st.CommandsRepeats += n - 1
			}
		}
	}
	return st
}

// totals sums the message counters. Any goroutine.
func (w *worker) totals() (sent, expected, delivered [nKinds]int64) {
	for k := range nKinds {
		for i := range w.pub {
			sent[k] += w.pub[i].sent[k].Load()
			expected[k] += w.pub[i].expected[k].Load()
		}
		for i := range w.shards {
			delivered[k] += w.shards[i].recv[k].Load()
		}
	}
	return sent, expected, delivered
}

// dialJob is one scheduled dial.
type dialJob struct {
	due     int64
	idx     int32
	attempt int32
}

type jobHeap []dialJob

func (h jobHeap) Len() int           { return len(h) }
func (h jobHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h jobHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *jobHeap) Push(x any)        { *h = append(*h, x.(dialJob)) }
func (h *jobHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

type dialResult struct {
	job   dialJob
	kind  errKind
	err   error
	start int64
	dur   int64
}

// Reconnect backoff after a failed attempt: doubling from backoffBase up
// to backoffMax, each delay drawn uniformly from [d/2, d).
const (
	backoffBase = 100 * time.Millisecond
	backoffMax  = 5 * time.Second
)

func backoff(attempt int32) time.Duration {
	d := backoffBase << min(attempt, 10)
	if d > backoffMax {
		d = backoffMax
	}
	return d/2 + rand.N(d/2)
}

// dialAll connects the connections idx (indexes into w.conns), paced by
// c.Rate, spread by c.Jitter, retried until c.Deadline when set, with at
// most DialConcurrency dials in flight.
func (w *worker) dialAll(ctx context.Context, idx []int32, c command) {
	w.last = status{}
	w.connectMu.Lock()
	w.phaseHist.Reset()
	w.connectMu.Unlock()
	present0 := w.sessionPresent.Load()
	defer func() { w.last.SessionPresent = w.sessionPresent.Load() - present0 }()
	if len(idx) == 0 {
		return
	}
	start := time.Now().UnixNano()
	w.last.DialStart = start
	h := make(jobHeap, 0, len(idx))
	for k, i := range idx {
		due := start
		if c.Rate > 0 {
			due += int64(float64(k) / c.Rate * 1e9)
		}
		if c.Jitter > 0 {
			due += rand.Int64N(int64(c.Jitter))
		}
		h = append(h, dialJob{due: due, idx: i})
	}
	heap.Init(&h)
	conc := w.spec.DialConcurrency
	jobs := make(chan dialJob)
	results := make(chan dialResult, conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				t0 := time.Now().UnixNano()
				kind, err := w.conns[j.idx].connect(ctx)
				results <- dialResult{job: j, kind: kind, err: err, start: t0, dur: time.Now().UnixNano() - t0}
			}
		}()
	}
	timer := time.NewTimer(time.Hour)
	inflight := 0
	done := ctx.Done()
	for h.Len() > 0 || inflight > 0 {
		var send chan dialJob
		var wait <-chan time.Time
		var next dialJob
		if h.Len() > 0 && inflight < conc && done != nil {
			next = h[0]
			if d := next.due - time.Now().UnixNano(); d > 0 {
				timer.Reset(time.Duration(d))
				wait = timer.C
			} else {
				send = jobs
			}
		}
		select {
		case <-done:
			// Aborted: dial nothing more, let the dials in flight finish.
			done = nil
			h = h[:0]
		case send <- next:
			heap.Pop(&h)
			inflight++
		case <-wait:
		case r := <-results:
			inflight--
			if r.err == nil {
				w.last.Connected++
				w.last.LastConnect = r.start + r.dur
				w.connectMu.Lock()
				recordUs(w.connectHist, r.dur)
				recordUs(w.phaseHist, r.dur)
				w.connectMu.Unlock()
				continue
			}
			if r.kind != errCounted {
				w.errs.add(r.kind)
			}
			now := time.Now().UnixNano()
			if c.Deadline > 0 {
				due := now + int64(backoff(r.job.attempt))
				if due < c.Deadline {
					heap.Push(&h, dialJob{due: due, idx: r.job.idx, attempt: r.job.attempt + 1})
					continue
				}
				w.errs.add(errGaveUp)
			}
			w.last.Failed++
		}
	}
	timer.Stop()
	close(jobs)
	wg.Wait()
}

// chosen picks a pseudo-random, stable share frac of connection ids.
func chosen(id int32, frac float64) bool {
	if frac >= 1 {
		return true
	}
	return float64(uint32(id)*2654435761)/(1<<32) < frac
}

// outage drops a share of this worker's devices abruptly (TCP reset, no
// close frame), as a network outage would, and remembers them for
// "reconnect".
func (w *worker) outage(frac float64) {
	w.dropped = w.dropped[:0]
	for i := range w.nDev {
		if chosen(w.conns[i].id, frac) && w.conns[i].closeBy(false) {
			w.dropped = append(w.dropped, int32(i))
		}
	}
	// Close callbacks run right away unless the connection's OnRequest
	// is running; wait for the stragglers so that "open" is settled.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		settled := true
		for _, i := range w.dropped {
			if w.conns[i].isOpen() {
				settled = false
				break
			}
		}
		if settled {
			return
		}
	}
}

// startTraffic starts the publishing goroutines c asks for.
func (w *worker) startTraffic(c command) {
	w.stopTraffic()
	tr := &trafficRun{stop: make(chan struct{})}
	w.traffic = tr
	if c.Telemetry && w.nDev > 0 {
		p := min(runtime.GOMAXPROCS(0), 3, w.nDev)
		for k := range p {
			rate := c.TelemetryRate / float64(p)
			maxN := int64(0)
			if c.TelemetryMax > 0 {
				maxN = c.TelemetryMax / int64(p)
				if int64(k) < c.TelemetryMax%int64(p) {
					maxN++
				}
				if maxN == 0 {
					continue
				}
			}
			tr.wg.Add(1)
			w.publishing.Add(1)
			go func() {
				defer tr.wg.Done()
				defer w.publishing.Add(-1)
				w.telemetryLoop(tr.stop, k, p, rate, maxN)
			}()
		}
	}
	if c.Commands && w.cmdr != nil {
		tr.wg.Add(1)
		w.publishing.Add(1)
		go func() {
			defer tr.wg.Done()
			defer w.publishing.Add(-1)
			w.commandLoop(tr.stop, c.CommandRate, c.CommandMax, c.CommandFleet)
		}()
	}
}

func (w *worker) stopTraffic() {
	if w.traffic != nil {
		close(w.traffic.stop)
		w.traffic.wg.Wait()
		w.traffic = nil
	}
}

// telemetryLoop publishes from the devices k, k+p, k+2p… in turn, each to
// its own telemetry topic, at rate messages per second (0: unpaced), until
// stop or maxN messages (0: no limit). Devices that are not connected are
// skipped.
func (w *worker) telemetryLoop(stop <-chan struct{}, k, p int, rate float64, maxN int64) {
	pc := &w.pub[k]
	var topic, msg, payload, frame []byte
	cursor := k
	send := func() bool {
		for tries := (w.nDev + p - 1) / p; tries > 0; tries-- {
			dc := &w.conns[cursor]
			if cursor += p; cursor >= w.nDev {
				cursor = k
			}
			if !dc.isOpen() {
				continue
			}
			i := int(dc.id)
			g := i % w.spec.Regions
			topic = appendDeviceTopic(topic[:0], g, i, "telemetry")
			msg = appendMessage(msg[:0], w.spec.Size, time.Now().UnixNano())
			if w.spec.mqtt() {
				frame = w.appendMQTTPublish(frame[:0], topic, msg, 0)
			} else {
				payload = appendPublish(payload[:0], topic, msg)
				frame = appendClientFrame(frame[:0], ws.OpText, payload, w.mask())
			}
			if dc.write(frame) {
				pc.sent[kindTelemetry].Add(1)
				pc.expected[kindTelemetry].Add(w.dpr[g])
				return true
			}
		}
		return false
	}
	pace(stop, rate, maxN, send)
}

// commandLoop publishes commands from the commander: to the fleet topic
// (every device receives each) or to one device's command topic after the
// other, across the whole fleet.
func (w *worker) commandLoop(stop <-chan struct{}, rate float64, maxN int64, fleet bool) {
	pc := &w.pub[maxPublishers-1]
	var topic, msg, payload, frame []byte
	next := 0
	send := func() bool {
		var expect int64 = 1
		if fleet {
			topic = append(topic[:0], fleetTopic...)
			expect = int64(w.spec.Devices)
		} else {
			if w.spec.Devices == 0 {
				return false
			}
			topic = appendDeviceTopic(topic[:0], next%w.spec.Regions, next, "cmd")
			next = (next + 1) % w.spec.Devices
		}
		msg = appendMessage(msg[:0], w.spec.Size, time.Now().UnixNano())
		if w.spec.mqtt() {
			frame = w.appendMQTTPublish(frame[:0], topic, msg, w.spec.CommandQoS)
		} else {
			payload = appendPublish(payload[:0], topic, msg)
			frame = appendClientFrame(frame[:0], ws.OpText, payload, w.mask())
		}
		if !w.cmdr.write(frame) {
			return false
		}
		pc.sent[kindCommand].Add(1)
		pc.expected[kindCommand].Add(expect)
		return true
	}
	pace(stop, rate, maxN, send)
}

// pace calls send rate times per second (0: as fast as it returns) until
// stop is closed or maxN calls were made (0: no limit). A pacer that falls
// more than a second behind skips ahead instead of bursting; a send that
// finds nothing to send from waits for the next tick.
func pace(stop <-chan struct{}, rate float64, maxN int64, send func() bool) {
	const tick = 2 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	var done int64
	for maxN == 0 || done < maxN {
		target := done + 256
		if rate > 0 {
			target = int64(rate * time.Since(start).Seconds())
			if behind := target - done - max(int64(rate), 1); behind > 0 {
				done += behind
			}
		}
		if maxN > 0 && target > maxN {
			target = maxN
		}
		idle := false
		for done < target {
			done++
			if !send() {
				idle = true
				break
			}
		}
		if rate > 0 || idle {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			continue
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}

// tickLoop emits a tick at every whole second after the epoch.
func (w *worker) tickLoop() {
	defer close(w.tickDone)
	epoch := time.Unix(0, w.spec.Epoch)
	sec := int(time.Since(epoch) / time.Second)
	for {
		t := time.NewTimer(time.Until(epoch.Add(time.Duration(sec+1) * time.Second)))
		select {
		case <-w.tickStop:
			t.Stop()
			return
		case <-t.C:
		}
		w.emitTick(sec)
		sec++
	}
}

// emitTick sends what happened since the previous tick as second sec.
func (w *worker) emitTick(sec int) {
	w.tickMu.Lock()
	defer w.tickMu.Unlock()
	td := &tickData{Sec: sec, Open: w.open.Load()}
	sent, _, delivered := w.totals()
	errs := w.errs.snapshot()
	c := w.connects.Load()
	td.Connects = c - w.tickPrev.connects
	for k := range nKinds {
		td.Sent[k] = sent[k] - w.tickPrev.sent[k]
		td.Delivered[k] = delivered[k] - w.tickPrev.delivered[k]
		h := w.tickLat[k]
		h.Reset()
		for i := range w.shards {
			s := &w.shards[i]
			s.mu.Lock()
			if s.lat[k].TotalCount() > 0 {
				h.Merge(s.lat[k])
				s.lat[k].Reset()
			}
			s.mu.Unlock()
		}
		td.Latency[k] = encodeHist(h)
		w.tickPrev.sent[k], w.tickPrev.delivered[k] = sent[k], delivered[k]
	}
	td.Errors = diffCounts(errs, w.tickPrev.errors)
	w.tickPrev.errors, w.tickPrev.connects = errs, c
	w.connectMu.Lock()
	td.Connect = encodeHist(w.connectHist)
	w.connectHist.Reset()
	w.connectMu.Unlock()
	w.closeMu.Lock()
	td.Close = encodeHist(w.closeHist)
	w.closeHist.Reset()
	w.closeMu.Unlock()
	_ = w.out.send(event{Ev: "tick", Tick: td})
}

// shutdown stops traffic, closes every connection (gracefully, then by
// force after a grace period) and emits the last, partial tick. Safe to
// call twice.
func (w *worker) shutdown() {
	w.closeOnce.Do(func() {
		w.stopTraffic()
		w.stormStop()
		w.setProbing(false)
		if w.pingStop != nil {
			close(w.pingStop)
			<-w.pingDone
		}
		// A tick with the connections still open, for short runs that
		// ended before their first whole second.
		w.emitTick(int(time.Since(time.Unix(0, w.spec.Epoch)) / time.Second))
		for i := range w.conns {
			w.conns[i].closeBy(true)
		}
		waitOpen(&w.open, 2*time.Second)
		for i := range w.conns {
			w.conns[i].forceClose()
		}
		waitOpen(&w.open, 2*time.Second)
		close(w.tickStop)
		<-w.tickDone
		w.emitTick(int(time.Since(time.Unix(0, w.spec.Epoch)) / time.Second))
	})
}

func waitOpen(open *atomic.Int64, d time.Duration) {
	for deadline := time.Now().Add(d); open.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}
