package loadtest

import (
	"math"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gatecast/gatecast/proto/mqtt"
)

// The worker's side of `loadtest revoke --kind KIND` (revkind.go): after
// "revmark" every signal the broker gives a device — a close frame, a
// DISCONNECT, a close without either, a refused probe — is recorded once
// per device with the CLOCK_MONOTONIC time at which the event goroutine
// read it (OnRequest, or netpoll's close callback), for the parent to time
// against the moment it sent the admin call (monoNow there too). The
// parent fetches them with "revtimes" and judges them: which were the
// expected signal on an affected device, which were wrong.

// Signal kinds (the high half of status.RevCodes).
const (
	sigClose      = 1 + iota // a seed close frame (code)
	sigDisconnect            // an MQTT 5 DISCONNECT (reason code)
	sigLost                  // the connection closed without a close frame or DISCONNECT (MQTT 3.1.1's revocation)
	sigRefused               // an MQTT 5 PUBACK refusing a probe publish (reason code)
)

// revOpen marks, in status.RevCodes, a device still connected when
// "revtimes" was answered.
const revOpen = 1 << 31

// revState is one revoke --kind measurement.
type revState struct {
	kind uint8  // the expected signal
	code uint16 // and its code
	at   []atomic.Int64
	sig  []atomic.Uint32
	n    atomic.Int64 // devices with a signal

	echoMu sync.Mutex
	echoes []func() // close-frame answers held back until "revecho"
}

// revMark starts recording signals (command goroutine). It also stops this
// worker's garbage collector until revEcho (gcHold): a profile of a
// 2,000-close revocation found the worker spending more CPU than the
// broker, most of it marking, on the cores the broker writes with — the
// clients' p99 was then the harness's collection, not the broker.
func (w *worker) revMark(kind uint8, code uint16) {
	w.rev.Store(&revState{kind: kind, code: code, at: make([]atomic.Int64, w.nDev), sig: make([]atomic.Uint32, w.nDev)})
	holdGC()
}

// gcHold is the collector's state while holdGC keeps it off: the hold's
// generation (0: none) and the GOGC percentage to restore, under gcHoldMu.
var (
	gcHoldMu   sync.Mutex
	gcHoldGen  uint64
	gcHoldNext uint64
	gcPrev     int
)

// holdGC collects once, then turns the collector off for at most gcHoldMax
// (revEcho, or the timer, turns it back on), with a memory limit of the
// live heap plus gcHoldHeadroom as the safety net: past it the runtime
// collects anyway.
func holdGC() {
	gcHoldMu.Lock()
	defer gcHoldMu.Unlock()
	if gcHoldGen != 0 {
		return
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	debug.SetMemoryLimit(int64(ms.HeapInuse+ms.StackInuse) + gcHoldHeadroom)
	gcPrev = debug.SetGCPercent(-1)
	gcHoldNext++
	gen := gcHoldNext
	gcHoldGen = gen
	time.AfterFunc(gcHoldMax, func() { releaseGCHold(gen) })
}

// releaseGC ends the current hold, if any.
func releaseGC() { releaseGCHold(0) }

// releaseGCHold ends hold gen (0: whichever is on), restoring GOGC and
// removing the memory limit.
func releaseGCHold(gen uint64) {
	gcHoldMu.Lock()
	defer gcHoldMu.Unlock()
	if gcHoldGen == 0 || gen != 0 && gen != gcHoldGen {
		return
	}
	gcHoldGen = 0
	debug.SetGCPercent(gcPrev)
	debug.SetMemoryLimit(math.MaxInt64)
}

const (
	gcHoldMax      = 10 * time.Second
	gcHoldHeadroom = 1 << 30
)

// signal records a signal the broker gave device dc, if a measurement is
// on and dc has none yet, and reports whether it is the expected one (so
// that the caller does not count it as an error). Event goroutines.
func (w *worker) signal(dc *devConn, kind uint8, code uint16) bool {
	rs := w.rev.Load()
	if rs == nil || dc.role != roleDevice {
		return false
	}
	i := int(dc.id) - w.spec.DevLo
	if i < 0 || i >= len(rs.at) {
		return false
	}
	if rs.at[i].CompareAndSwap(0, monoNow()) {
		rs.sig[i].Store(uint32(kind)<<16 | uint32(code))
		rs.n.Add(1)
	}
	return kind == rs.kind && code == rs.code
}

// deferEcho holds back a device's answer to a close frame until "revecho"
// (revEchoDelay at the latest). Event goroutines.
func (w *worker) deferEcho(f func()) {
	var once sync.Once
	run := func() { once.Do(f) }
	time.AfterFunc(revEchoDelay, run)
	if rs := w.rev.Load(); rs != nil {
		rs.echoMu.Lock()
		rs.echoes = append(rs.echoes, run)
		rs.echoMu.Unlock()
	}
}

// revEcho sends the answers held back (command goroutine).
func (w *worker) revEcho() {
	releaseGC()
	rs := w.rev.Load()
	if rs == nil {
		return
	}
	rs.echoMu.Lock()
	fs := rs.echoes
	rs.echoes = nil
	rs.echoMu.Unlock()
	for _, f := range fs {
		f()
	}
}

// revTimes returns, per device of this worker, its signal's time (0:
// none) and the signal, with revOpen set on devices still connected.
func (w *worker) revTimes() ([]int64, []uint32) {
	rs := w.rev.Load()
	if rs == nil {
		return nil, nil
	}
	at := make([]int64, len(rs.at))
	sig := make([]uint32, len(rs.at))
	for i := range at {
		at[i] = rs.at[i].Load()
		sig[i] = rs.sig[i].Load()
		if w.conns[i].isOpen() {
			sig[i] |= revOpen
		}
	}
	return at, sig
}

// probeOK returns, per device of this worker, when its last accepted
// probe was sent (nil when no probing ran).
func (w *worker) probeOK() []int64 {
	ps := w.probe.Load()
	if ps == nil {
		return nil
	}
	out := make([]int64, len(ps.lastOK))
	for i := range out {
		out[i] = ps.lastOK[i].Load()
	}
	return out
}

func (w *worker) revStatus(st *status) {
	if rs := w.rev.Load(); rs != nil {
		st.RevSignals = rs.n.Load()
	}
	if ps := w.probe.Load(); ps != nil {
		st.ProbesSent, st.ProbesAcked = ps.sent.Load(), ps.acked.Load()
		ps.mu.Lock()
		st.ProbeHist = encodeHist(ps.rtt)
		ps.mu.Unlock()
	}
}

// probeState: every device keeps one QoS 1 publish (a probe) to its own
// topic in flight, sending the next as soon as the broker acknowledges the
// last (from the event goroutine that read the PUBACK), until a PUBACK
// refuses one (the downgrade's signal: that device probes no more) or the
// probing stops. A refusal is visible only to MQTT 5 clients: 3.1.1
// acknowledges a refused QoS 1 publish like an accepted one, and the seed
// protocol drops a refused publish without a word.
type probeState struct {
	on       atomic.Bool
	inFlight []atomic.Int64 // per device: when its probe in flight was sent (0: none)
	lastOK   []atomic.Int64 // per device: when its last accepted probe was sent
	done     []atomic.Bool  // refused: no more probes
	sent     atomic.Int64
	acked    atomic.Int64
	mu       sync.Mutex
	rtt      *hdrhistogram.Histogram // probe → PUBACK
}

// probePayload is every probe's payload.
var probePayload = []byte(`{"probe":1}`)

// setProbing starts (on) or stops the probes (command goroutine).
func (w *worker) setProbing(on bool) {
	if !on {
		if ps := w.probe.Load(); ps != nil {
			ps.on.Store(false)
		}
		return
	}
	if !w.spec.mqtt() {
		return
	}
	ps := &probeState{inFlight: make([]atomic.Int64, w.nDev), lastOK: make([]atomic.Int64, w.nDev), done: make([]atomic.Bool, w.nDev), rtt: newHist()}
	ps.on.Store(true)
	w.probe.Store(ps)
	for i := range w.nDev {
		if dc := &w.conns[i]; dc.isOpen() {
			w.sendProbe(ps, dc)
		}
	}
}

// sendProbe publishes dc's next probe: QoS 1, packet identifier 1 (one in
// flight per connection), to <its subscription>/p, which its grant covers
// and nobody subscribes to.
func (w *worker) sendProbe(ps *probeState, dc *devConn) {
	i := int(dc.id) - w.spec.DevLo
	topic := append(w.appendDeviceFilter(make([]byte, 0, 64), int(dc.id)), "/p"...)
	p := mqtt.Publish{QoS: 1, PacketID: 1, Topic: topic, Payload: probePayload}
	frame := mqtt.AppendPublish(make([]byte, 0, 96), w.spec.MQTTVersion, &p)
	ps.inFlight[i].Store(monoNow())
	if dc.write(frame) {
		ps.sent.Add(1)
	}
}

// probeAcked handles the PUBACK of device dc's probe (event goroutine).
func (w *worker) probeAcked(dc *devConn, code byte) {
	ps := w.probe.Load()
	i := int(dc.id) - w.spec.DevLo
	if ps == nil || i < 0 || i >= len(ps.inFlight) {
		return
	}
	t := ps.inFlight[i].Swap(0)
	if t > 0 {
		ps.acked.Add(1)
		d := monoNow() - t
		ps.mu.Lock()
		recordUs(ps.rtt, d)
		ps.mu.Unlock()
	}
	if code >= 0x80 {
		ps.done[i].Store(true)
		if !w.signal(dc, sigRefused, uint16(code)) {
			w.errs.addClose(closeKey{code: uint16(code), mqtt: mqttKindPuback})
		}
		return
	}
	if t > 0 {
		ps.lastOK[i].Store(t)
	}
	if ps.on.Load() && !ps.done[i].Load() {
		w.sendProbe(ps, dc)
	}
}
