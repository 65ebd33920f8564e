package compare

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one comparison run. Every loop is bounded by these numbers.
type Config struct {
	Size            int           `json:"message_bytes"`    // payload bytes of every message
	DialConcurrency int           `json:"dial_concurrency"` // connections being dialled at once
	Warmup          time.Duration `json:"warmup_limit_ns"`  // longest a warm-up may take before the scenario fails
	Quiet           time.Duration `json:"quiet_ns"`         // a delivery run ends this long after the last delivery once publishing is done
	Step            time.Duration `json:"step_ns"`          // publishing time of each step of a rate ladder

	FanOutSubscribers int   `json:"fanout_subscribers"`
	FanOutRates       []int `json:"fanout_rates"`    // offered msg/s of the ladder steps, ascending
	FanOutMessages    int   `json:"fanout_messages"` // unpaced burst: messages published

	FanInPublishers int   `json:"fanin_publishers"`
	FanInRates      []int `json:"fanin_rates"`    // offered msg/s of all publishers together
	FanInMessages   int   `json:"fanin_messages"` // unpaced burst: messages of all publishers together

	LatencyRate     int `json:"latency_rate"`
	LatencyMessages int `json:"latency_messages"`

	// LoadShare: latency under load ("loaded") runs the 1→1 stream of
	// LatencyRate and LatencyMessages while FanInPublishers publish to one
	// subscriber at this share of the broker's sustained fan-in rate,
	// measured by the fan-in ladder of the same run.
	LoadShare float64 `json:"load_share"`

	IdleConns int           `json:"idle_conns"`
	IdleHold  time.Duration `json:"idle_hold_ns"`

	// Scenarios to run, from "fanout", "fanin", "latency", "loaded",
	// "idle"; "loaded" needs "fanin" before it.
	Scenarios []string `json:"scenarios"`
}

// DefaultConfig is the comparison `make bench-compare` runs.
func DefaultConfig() Config {
	return Config{
		Size:              64,
		DialConcurrency:   64,
		Warmup:            20 * time.Second,
		Quiet:             3 * time.Second,
		Step:              2 * time.Second,
		FanOutSubscribers: 2000,
		FanOutRates:       []int{50, 100, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000, 7000, 8000, 10000},
		FanOutMessages:    1000,
		FanInPublishers:   200,
		FanInRates: []int{10000, 20000, 40000, 60000, 80000, 100000, 125000, 150000, 200000, 250000, 300000, 400000,
			500000, 600000, 800000, 1000000, 1250000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000, 5000000, 6000000, 7000000, 8000000},
		FanInMessages:   200000,
		LatencyRate:     1000,
		LatencyMessages: 5000,
		LoadShare:       0.5,
		IdleConns:       15000,
		IdleHold:        10 * time.Second,
		Scenarios:       []string{"fanout", "fanin", "latency", "loaded", "idle"},
	}
}

// DefaultMQTTConfig is the MQTT table's run: the sizes of DefaultConfig with
// ladders of fewer, wider steps (the MQTT table has four columns, and
// `make bench-compare` runs both tables in about ten minutes).
func DefaultMQTTConfig() Config {
	c := DefaultConfig()
	c.FanOutRates = []int{50, 200, 500, 1000, 1500, 2000, 3000}
	c.FanInRates = []int{10000, 30000, 100000, 300000, 600000, 1000000, 1500000, 2000000, 3000000}
	return c
}

// Validate reports a configuration the scenarios cannot run.
func (c Config) Validate() error {
	var errs []error
	if c.Size < MinPayloadSize || c.Size > 64<<10 {
		errs = append(errs, fmt.Errorf("message size %d outside %d..65536", c.Size, MinPayloadSize))
	}
	if c.DialConcurrency < 1 {
		errs = append(errs, errors.New("dial concurrency must be at least 1"))
	}
	if c.Warmup <= 0 || c.Quiet <= 0 || c.Step <= 0 {
		errs = append(errs, errors.New("warm-up limit, quiet time and step must be positive"))
	}
	seen := map[string]bool{}
	for _, s := range c.Scenarios {
		switch s {
		case "fanout":
			if c.FanOutSubscribers < 1 || c.FanOutMessages < 1 {
				errs = append(errs, errors.New("fanout needs at least 1 subscriber and 1 message"))
			}
			errs = append(errs, ascending("fanout rates", c.FanOutRates))
		case "fanin":
			if c.FanInPublishers < 1 || c.FanInMessages < c.FanInPublishers {
				errs = append(errs, errors.New("fanin needs at least 1 publisher and a message per publisher"))
			}
			errs = append(errs, ascending("fanin rates", c.FanInRates))
		case "latency":
			if c.LatencyRate < 1 || c.LatencyMessages < 1 {
				errs = append(errs, errors.New("latency needs a positive rate and message count"))
			}
		case "loaded":
			if c.LatencyRate < 1 || c.LatencyMessages < 1 {
				errs = append(errs, errors.New("loaded needs a positive latency rate and message count"))
			}
			if !(c.LoadShare > 0 && c.LoadShare <= 1) {
				errs = append(errs, fmt.Errorf("load share %v outside (0, 1]", c.LoadShare))
			}
			if !seen["fanin"] || len(c.FanInRates) == 0 {
				errs = append(errs, errors.New("loaded needs fanin (with a ladder) before it in the scenarios: its load is a share of the fan-in rate the same run measured"))
			}
		case "idle":
			if c.IdleConns < 1 || c.IdleHold < 0 {
				errs = append(errs, errors.New("idle needs at least 1 connection and a hold ≥ 0"))
			}
		default:
			errs = append(errs, fmt.Errorf("unknown scenario %q (fanout, fanin, latency, loaded, idle)", s))
		}
		seen[s] = true
	}
	return errors.Join(errs...)
}

func ascending(what string, rates []int) error {
	for i, r := range rates {
		if r < 1 || (i > 0 && r <= rates[i-1]) {
			return fmt.Errorf("%s must be positive and ascending: %v", what, rates)
		}
	}
	return nil
}

// Delivery is the outcome of one publish→deliver run.
type Delivery struct {
	OfferedRate        int     `json:"offered_rate"` // msg/s of all publishers together; 0 = as fast as possible
	Publishers         int     `json:"publishers"`
	Subscribers        int     `json:"subscribers"`
	Sent               int64   `json:"sent"`
	Expected           int64   `json:"expected"` // sent × subscribers
	Delivered          int64   `json:"delivered"`
	Seconds            float64 `json:"seconds"` // first publish → last delivery
	SentPerSecond      float64 `json:"sent_per_second"`
	DeliveredPerSecond float64 `json:"delivered_per_second"`
	LossPercent        float64 `json:"loss_percent"`
	P50Ms              float64 `json:"p50_ms"`
	P99Ms              float64 `json:"p99_ms"`
	P999Ms             float64 `json:"p999_ms"`
	MaxMs              float64 `json:"max_ms"`
	Disconnected       int64   `json:"disconnected"` // subscribers the broker closed during the run
	ServerCPUSeconds   float64 `json:"server_cpu_seconds"`

	// PublishSeconds is first publish → last publish written; paced runs:
	// AchievedPercent is the rate the publishers achieved (SentPerSecond)
	// as a share of the offered rate.
	PublishSeconds  float64 `json:"publish_seconds"`
	AchievedPercent float64 `json:"achieved_percent,omitempty"`
	// ActiveSeconds is first publish → the last poll that saw a delivery
	// (or the end of publishing): the window of the CPU percentages, which
	// are shares of the CPUs each process may run on (BrokerCPUs,
	// HarnessCPUs; 100 % = all of them busy).
	ActiveSeconds     float64 `json:"active_seconds"`
	BrokerCPUs        int     `json:"broker_cpus"`
	BrokerCPUPercent  float64 `json:"broker_cpu_percent"`
	HarnessCPUs       int     `json:"harness_cpus"`
	HarnessCPUSeconds float64 `json:"harness_cpu_seconds"` // like ServerCPUSeconds: the whole run, wait included
	HarnessCPUPercent float64 `json:"harness_cpu_percent"`
	// HarnessBound: the harness used ≥ 95 % of its CPUs during the run, so
	// the figure may be the harness's ceiling rather than the broker's.
	HarnessBound bool `json:"harness_bound"`

	// Sustained (ladder steps): at least 99.9 % delivered, no subscriber
	// lost, the offered rate achieved by the publishers (within 5 %), and
	// deliveries kept within 90 % of it (both with 20 ms of slack for
	// scheduling). Verdict says why a step is not: "ok", "harness-bound"
	// (the harness could not offer the rate), "pushed back" (the
	// publishers could not write at the rate while the harness had CPU to
	// spare: the broker slowed them), "lost", "late", "disconnected",
	// "error".
	Sustained bool   `json:"sustained"`
	Verdict   string `json:"verdict,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Idle is the outcome of the idle-connections scenario.
type Idle struct {
	Conns            int     `json:"conns"`
	Open             int     `json:"open"` // still open when memory was read
	RSSBefore        int64   `json:"rss_before_bytes"`
	RSSAfter         int64   `json:"rss_after_bytes"`
	RSSPerConn       float64 `json:"rss_bytes_per_conn"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	// HarnessCPUSeconds: the harness's own CPU time over the same period
	// (dialling, keep-alives).
	HarnessCPUSeconds float64 `json:"harness_cpu_seconds"`
}

// readerSet is the reader goroutines of one rig: one per connection,
// counting deliveries into the current run.
type readerSet struct {
	nPubs    int
	warmed   atomic.Int64 // subscribers that saw a warm-up message from every publisher
	closedN  atomic.Int64 // subscribers whose connection ended while the rig was up
	stray    atomic.Int64 // messages outside a run or not the harness's payload
	stopping atomic.Bool
	cur      atomic.Pointer[runStats]
	wg       sync.WaitGroup

	errMu    sync.Mutex
	firstErr error
}

type runStats struct {
	delivered atomic.Int64
	last      atomic.Int64 // Unix ns of the latest delivery
	lat       *latencyRecorder
}

func (rs *readerSet) setErr(err error) {
	rs.errMu.Lock()
	if rs.firstErr == nil {
		rs.firstErr = err
	}
	rs.errMu.Unlock()
}

func (rs *readerSet) err() error {
	rs.errMu.Lock()
	defer rs.errMu.Unlock()
	return rs.firstErr
}

// subscriber reads c until it fails; idx spreads latency recording over
// the shards.
func (rs *readerSet) subscriber(c *Conn, idx int) {
	defer rs.wg.Done()
	seen := make([]uint64, (rs.nPubs+63)/64)
	nSeen := 0
	for {
		_, t, ok, err := c.NextTimed()
		if err != nil {
			if !rs.stopping.Load() {
				rs.closedN.Add(1)
				rs.setErr(err)
			}
			return
		}
		if !ok {
			rs.stray.Add(1)
			continue
		}
		if t < 0 { // warm-up from publisher -t-1
			k := int(-t - 1)
			if k < rs.nPubs && seen[k/64]&(1<<(k%64)) == 0 {
				seen[k/64] |= 1 << (k % 64)
				if nSeen++; nSeen == rs.nPubs {
					rs.warmed.Add(1)
				}
			}
			continue
		}
		now := c.RecvTime() // the latest socket read's clock: see RecvTime for the error bound
		st := rs.cur.Load()
		if st == nil {
			rs.stray.Add(1)
			continue
		}
		st.delivered.Add(1)
		for {
			old := st.last.Load()
			if now <= old || st.last.CompareAndSwap(old, now) {
				break
			}
		}
		st.lat.record(idx, now-t)
	}
}

// drain reads a publisher's connection so that pings are answered and a
// close is noticed; nothing is delivered to publishers.
func (rs *readerSet) drain(c *Conn) {
	defer rs.wg.Done()
	for {
		if _, _, err := c.Next(); err != nil {
			return
		}
	}
}

// rig is a set of open connections for one scenario: subscribers with
// their readers, publishers with their topics.
type rig struct {
	inst      *Instance
	cfg       *Config
	subs      []*Conn
	pubs      []*Conn
	pubTopics []string
	readers   *readerSet
	stopKeep  chan struct{}
	keepDone  chan struct{}
}

// dialMany opens n connections, cfg.DialConcurrency at a time, connection i
// as client name(i) subscribed to filter(i). On error, the ones opened are
// closed.
func dialMany(ctx context.Context, p Protocol, cfg *Config, n int, name, filter func(i int) string) ([]*Conn, error) {
	conns := make([]*Conn, n)
	sem := make(chan struct{}, cfg.DialConcurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	failed := 0
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := p.Dial(ctx, name(i), []string{filter(i)})
			if err != nil {
				mu.Lock()
				failed++
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		closeConns(conns)
		return nil, fmt.Errorf("%d of %d connections failed; first: %w", max(failed, 1), n, firstErr)
	}
	return conns, nil
}

func closeConns(conns []*Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// newRig dials nSubs subscribers and nPubs publishers and starts a reader
// on each. Publishers subscribe to a private topic of their own, because
// the seed protocol requires a subscription on every connection; the same
// is done on every broker so that the connections are alike.
func newRig(ctx context.Context, inst *Instance, cfg *Config, nSubs int, subFilter func(int) string, nPubs int, pubTopic func(int) string) (*rig, error) {
	return newTaggedRig(ctx, inst, cfg, "", nSubs, subFilter, nPubs, pubTopic)
}

// newTaggedRig is newRig with tag in the client IDs and the publishers'
// private topics, so that two rigs can share one broker: MQTT brokers
// close the older of two connections with one client ID.
func newTaggedRig(ctx context.Context, inst *Instance, cfg *Config, tag string, nSubs int, subFilter func(int) string, nPubs int, pubTopic func(int) string) (*rig, error) {
	subs, err := dialMany(ctx, inst.Proto, cfg, nSubs,
		func(i int) string { return "bench-sub-" + tag + strconv.Itoa(i) }, subFilter)
	if err != nil {
		return nil, fmt.Errorf("subscribers: %w", err)
	}
	pubs, err := dialMany(ctx, inst.Proto, cfg, nPubs,
		func(i int) string { return "bench-pub-" + tag + strconv.Itoa(i) },
		func(i int) string { return "bench/pub/" + tag + strconv.Itoa(i) })
	if err != nil {
		closeConns(subs)
		return nil, fmt.Errorf("publishers: %w", err)
	}
	r := &rig{inst: inst, cfg: cfg, subs: subs, pubs: pubs, readers: &readerSet{nPubs: nPubs},
		stopKeep: make(chan struct{}), keepDone: make(chan struct{})}
	for i := 0; i < nPubs; i++ {
		r.pubTopics = append(r.pubTopics, pubTopic(i))
	}
	for i, c := range subs {
		r.readers.wg.Add(1)
		go r.readers.subscriber(c, i)
	}
	for _, c := range pubs {
		r.readers.wg.Add(1)
		go r.readers.drain(c)
	}
	go keepAlive(append(append([]*Conn(nil), subs...), pubs...), r.stopKeep, r.keepDone)
	return r, nil
}

// keepAlivePeriod is how often idle connections send their keep-alive
// (MQTT PINGREQ; the CONNECT announces 60 s).
const keepAlivePeriod = 20 * time.Second

// keepAlive sends each connection's keep-alive every keepAlivePeriod until
// stop is closed. It writes control frames only (under the connection's
// write lock), never a publisher's queued frames.
func keepAlive(conns []*Conn, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(keepAlivePeriod)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			for _, c := range conns {
				c.KeepAlive()
			}
		}
	}
}

func (r *rig) close() {
	r.readers.stopping.Store(true)
	close(r.stopKeep)
	<-r.keepDone
	closeConns(r.subs)
	closeConns(r.pubs)
	r.readers.wg.Wait()
}

// warmup publishes a warm-up message from every publisher every 20 ms
// until every subscriber has received one from each: every path is live
// before anything is measured (the seed protocol confirms no subscription).
func (r *rig) warmup(ctx context.Context) error {
	deadline := time.Now().Add(r.cfg.Warmup)
	var buf []byte
	for r.readers.warmed.Load() < int64(len(r.subs)) {
		if n := r.readers.closedN.Load(); n > 0 {
			return fmt.Errorf("warm-up: %d subscribers were disconnected: %v", n, r.readers.err())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("warm-up: only %d of %d subscribers received a message from every publisher within %v",
				r.readers.warmed.Load(), len(r.subs), r.cfg.Warmup)
		}
		for i, p := range r.pubs {
			buf = appendPayload(buf[:0], r.cfg.Size, -int64(i+1))
			if err := p.Publish(r.pubTopics[i], buf); err != nil {
				return fmt.Errorf("warm-up publish: %w", err)
			}
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	// Let warm-up messages still in flight land before the clock starts.
	return sleepCtx(ctx, 200*time.Millisecond)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pacing is how publishers send during a run.
type pacing struct {
	rate   int           // msg/s of all publishers together; 0 = as fast as possible
	perPub int           // messages per publisher
	tick   time.Duration // a paced publisher sleeps at least this long between writes (0: until the next message is due)
	batch  int           // most messages per write
}

// publishBound bounds the publishing phase of one run; deliveryBound the
// wait for deliveries after it.
const (
	publishBound  = 2 * time.Minute
	deliveryBound = 2 * time.Minute
)

// deliver runs one measured publish→deliver run on the rig.
func (r *rig) deliver(ctx context.Context, pc pacing) (Delivery, error) {
	d := Delivery{OfferedRate: pc.rate, Publishers: len(r.pubs), Subscribers: len(r.subs)}
	st := &runStats{lat: newLatencyRecorder()}
	closed0 := r.readers.closedN.Load()
	r.readers.cur.Store(st)
	defer r.readers.cur.Store(nil)

	pctx, cancel := context.WithTimeout(ctx, publishBound)
	defer cancel()
	var sent atomic.Int64
	var pubErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	perRate := float64(pc.rate) / float64(len(r.pubs))
	// Paced publishers start at evenly spread offsets within one wake-up
	// period, as independent devices would: started together, 200
	// publishers would send in lockstep, in bursts no real fleet makes.
	var period time.Duration
	if perRate > 0 {
		period = max(pc.tick, time.Duration(float64(time.Second)/perRate))
	}
	s0 := r.sample(time.Now())
	start := s0.at
	for i, p := range r.pubs {
		wg.Add(1)
		offset := period * time.Duration(i) / time.Duration(len(r.pubs))
		go func() {
			defer wg.Done()
			n, err := publishPaced(pctx, p, r.pubTopics[i], pc.perPub, perRate, r.cfg.Size, start.Add(offset), pc.tick, pc.batch)
			sent.Add(n)
			if err != nil {
				errOnce.Do(func() { pubErr = err })
			}
		}()
	}
	wg.Wait()
	pubEnd := time.Now()
	if ctx.Err() != nil {
		return d, ctx.Err()
	}
	d.Sent = sent.Load()
	d.Expected = d.Sent * int64(len(r.subs))

	// Wait until everything has arrived, or nothing has for cfg.Quiet.
	// The CPU times are sampled along the way (at most every 20 ms, when
	// something arrived): the last sample ends the active window of the CPU
	// percentages, so a quiet wait after a loss does not dilute them.
	active := r.sample(pubEnd)
	lastN, lastChange := st.delivered.Load(), time.Now()
	for st.delivered.Load() < d.Expected {
		now := time.Now()
		if n := st.delivered.Load(); n != lastN {
			lastN, lastChange = n, now
			if now.Sub(active.at) >= cpuSampleEvery {
				active = r.sample(now)
			}
		}
		if now.Sub(lastChange) >= r.cfg.Quiet || now.Sub(pubEnd) >= deliveryBound {
			break
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return d, err
		}
	}
	if st.delivered.Load() >= d.Expected && st.delivered.Load() != lastN {
		active = r.sample(time.Now())
	}
	r.readers.cur.Store(nil)
	end := r.sample(time.Now())

	d.Delivered = st.delivered.Load()
	d.Disconnected = r.readers.closedN.Load() - closed0
	d.ServerCPUSeconds = (end.broker - s0.broker).Seconds()
	d.HarnessCPUSeconds = (end.harness - s0.harness).Seconds()
	d.BrokerCPUs, d.HarnessCPUs = max(r.inst.CPUs, 1), selfCPUCount()
	if a := active.at.Sub(start).Seconds(); a > 0 {
		d.ActiveSeconds = a
		d.BrokerCPUPercent = 100 * (active.broker - s0.broker).Seconds() / a / float64(d.BrokerCPUs)
		d.HarnessCPUPercent = 100 * (active.harness - s0.harness).Seconds() / a / float64(d.HarnessCPUs)
		d.HarnessBound = d.HarnessCPUPercent >= 100*harnessBoundShare
	}
	if pub := pubEnd.Sub(start).Seconds(); pub > 0 {
		d.PublishSeconds = pub
		d.SentPerSecond = float64(d.Sent) / pub
		if pc.rate > 0 {
			d.AchievedPercent = 100 * d.SentPerSecond / float64(pc.rate)
		}
	}
	if last := st.last.Load(); last > 0 {
		d.Seconds = time.Unix(0, last).Sub(start).Seconds()
	}
	if d.Seconds > 0 {
		d.DeliveredPerSecond = float64(d.Delivered) / d.Seconds
	}
	if d.Expected > 0 {
		d.LossPercent = 100 * float64(d.Expected-min(d.Delivered, d.Expected)) / float64(d.Expected)
	}
	h := st.lat.merged()
	d.P50Ms, d.P99Ms, d.P999Ms = quantileMs(h, 50), quantileMs(h, 99), quantileMs(h, 99.9)
	d.MaxMs = float64(h.Max()) / 1000
	if pubErr != nil {
		d.Error = "publish: " + pubErr.Error()
	} else if d.Disconnected > 0 {
		d.Error = fmt.Sprintf("%d subscribers disconnected, first: %v", d.Disconnected, r.readers.err())
	}
	return d, nil
}

// cpuSampleEvery is the most often deliver reads the CPU times while it
// waits for deliveries.
const cpuSampleEvery = 20 * time.Millisecond

// cpuSample is the CPU time used so far by the broker and by the harness at
// one moment.
type cpuSample struct {
	at              time.Time
	broker, harness time.Duration
}

func (r *rig) sample(at time.Time) cpuSample {
	b, _ := processCPU(r.inst.PID)
	return cpuSample{at: at, broker: b, harness: selfCPU()}
}

// publishPaced sends count messages on c to topic at rate msg/s from
// start on (0 = as fast as possible, at once), each stamped with its send
// time, at most batch per write. It returns how many were written.
func publishPaced(ctx context.Context, c *Conn, topic string, count int, rate float64, size int, start time.Time, tick time.Duration, batch int) (int64, error) {
	var buf []byte
	if rate > 0 {
		if err := sleepCtx(ctx, time.Until(start)); err != nil {
			return 0, err
		}
	}
	sent := 0
	for sent < count {
		if err := ctx.Err(); err != nil {
			return int64(sent), err
		}
		n := count - sent
		if rate > 0 {
			due := min(int(time.Since(start).Seconds()*rate)+1, count)
			if due <= sent {
				next := start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))
				wait := max(time.Until(next), tick)
				if err := sleepCtx(ctx, wait); err != nil {
					return int64(sent), err
				}
				continue
			}
			n = due - sent
		}
		n = min(n, batch)
		// The messages of one write carry one send time (as before): one
		// payload, encoded and masked once, queued n times.
		buf = appendPayload(buf[:0], size, time.Now().UnixNano())
		if err := c.AppendPublishes(topic, buf, n); err != nil {
			return int64(sent), err
		}
		if err := c.Flush(); err != nil {
			return int64(sent), err
		}
		sent += n
	}
	return int64(sent), nil
}

// Topics of the scenarios.
const (
	fanOutTopic  = "bench/fanout"
	latencyTopic = "bench/latency"
)

// Pacing of the throughput scenarios: a paced publisher wakes at most every
// 5 ms and writes the messages due (at most 64 per write); unpaced ones
// write 16 per write as fast as the socket takes them. The latency
// scenario writes each message alone, when it is due.
const (
	throughputTick  = 5 * time.Millisecond
	pacedBatch      = 64
	unpacedBatch    = 16
	pauseAfterSteps = 300 * time.Millisecond
)

// What a sustained ladder step needs (see Delivery.Sustained).
const (
	deliveredShare = 0.999                 // of the expected deliveries
	achievedShare  = 0.95                  // of the offered rate, by the publishers
	sustainedShare = 0.9                   // of the offered rate, in deliveries
	scheduleSlack  = 20 * time.Millisecond // added to both time bounds
)

// judgeStep sets d.Sustained and d.Verdict for a ladder step whose
// publishers should have sent d.Sent messages in ideal (the step's length
// at the offered rate).
func judgeStep(d *Delivery, ideal time.Duration) {
	bound := func(share float64) float64 { return ideal.Seconds()/share + scheduleSlack.Seconds() }
	switch {
	case d.Disconnected > 0:
		d.Verdict = "disconnected"
	case d.Error != "":
		d.Verdict = "error"
	case d.PublishSeconds > bound(achievedShare):
		// The publishers wrote late: either the harness had no CPU left
		// to offer the rate, or their writes were held back by the broker
		// (TCP flow control).
		d.Verdict = "pushed back"
		if d.HarnessBound {
			d.Verdict = "harness-bound"
		}
	case float64(d.Delivered) < deliveredShare*float64(d.Expected):
		d.Verdict = "lost"
	case d.Seconds > bound(sustainedShare):
		d.Verdict = "late"
	default:
		d.Verdict = "ok"
	}
	d.Sustained = d.Verdict == "ok"
}

// ladderLimit says what ended a ladder: "top" (every step sustained: the
// figures are a lower bound), "harness" (the step that was not sustained
// was harness-bound), "broker", or "" (no step, or the ladder was cut
// short by an error).
func ladderLimit(steps []Delivery, rates []int, err error) string {
	n := len(steps)
	switch {
	case n == 0 || err != nil:
		return ""
	case steps[n-1].Sustained:
		if n == len(rates) {
			return "top"
		}
		return ""
	case steps[n-1].HarnessBound:
		return "harness"
	default:
		return "broker"
	}
}

// ladder runs the rate steps on one rig until a step is not sustained and
// returns every step run.
func (r *rig) ladder(ctx context.Context, rates []int, perPub func(rate int) int) ([]Delivery, error) {
	var steps []Delivery
	for _, rate := range rates {
		pp := perPub(rate)
		d, err := r.deliver(ctx, pacing{rate: rate, perPub: pp, tick: throughputTick, batch: pacedBatch})
		if err != nil {
			return steps, err
		}
		judgeStep(&d, time.Duration(float64(pp*len(r.pubs))/float64(rate)*float64(time.Second)))
		steps = append(steps, d)
		if !d.Sustained {
			break
		}
		if err := sleepCtx(ctx, pauseAfterSteps); err != nil {
			return steps, err
		}
	}
	return steps, nil
}

// fanOutLadder: one publisher, cfg.FanOutSubscribers subscribers of one
// topic, offered rates stepped up until the broker no longer keeps up.
func fanOutLadder(ctx context.Context, inst *Instance, cfg *Config) ([]Delivery, error) {
	r, err := newRig(ctx, inst, cfg, cfg.FanOutSubscribers, func(int) string { return fanOutTopic }, 1, func(int) string { return fanOutTopic })
	if err != nil {
		return nil, err
	}
	defer r.close()
	if err := r.warmup(ctx); err != nil {
		return nil, err
	}
	return r.ladder(ctx, cfg.FanOutRates, func(rate int) int { return max(1, int(float64(rate)*cfg.Step.Seconds())) })
}

// fanOutBurst: cfg.FanOutMessages published as fast as possible.
func fanOutBurst(ctx context.Context, inst *Instance, cfg *Config) (Delivery, error) {
	r, err := newRig(ctx, inst, cfg, cfg.FanOutSubscribers, func(int) string { return fanOutTopic }, 1, func(int) string { return fanOutTopic })
	if err != nil {
		return Delivery{}, err
	}
	defer r.close()
	if err := r.warmup(ctx); err != nil {
		return Delivery{}, err
	}
	return r.deliver(ctx, pacing{perPub: cfg.FanOutMessages, batch: unpacedBatch})
}

func fanInRig(ctx context.Context, inst *Instance, cfg *Config) (*rig, error) {
	return newRig(ctx, inst, cfg, 1, func(int) string { return "bench/fanin/+" },
		cfg.FanInPublishers, func(i int) string { return "bench/fanin/" + strconv.Itoa(i) })
}

// fanInLadder: cfg.FanInPublishers publishers on topics of their own, one
// subscriber with a wildcard covering them all.
func fanInLadder(ctx context.Context, inst *Instance, cfg *Config) ([]Delivery, error) {
	r, err := fanInRig(ctx, inst, cfg)
	if err != nil {
		return nil, err
	}
	defer r.close()
	if err := r.warmup(ctx); err != nil {
		return nil, err
	}
	n := cfg.FanInPublishers
	return r.ladder(ctx, cfg.FanInRates, func(rate int) int { return max(1, int(float64(rate)*cfg.Step.Seconds())/n) })
}

// fanInBurst: cfg.FanInMessages spread over the publishers, sent as fast
// as possible.
func fanInBurst(ctx context.Context, inst *Instance, cfg *Config) (Delivery, error) {
	r, err := fanInRig(ctx, inst, cfg)
	if err != nil {
		return Delivery{}, err
	}
	defer r.close()
	if err := r.warmup(ctx); err != nil {
		return Delivery{}, err
	}
	return r.deliver(ctx, pacing{perPub: cfg.FanInMessages / cfg.FanInPublishers, batch: unpacedBatch})
}

// latency1to1: one publisher, one subscriber, a fixed rate.
func latency1to1(ctx context.Context, inst *Instance, cfg *Config) (Delivery, error) {
	r, err := newRig(ctx, inst, cfg, 1, func(int) string { return latencyTopic }, 1, func(int) string { return latencyTopic })
	if err != nil {
		return Delivery{}, err
	}
	defer r.close()
	if err := r.warmup(ctx); err != nil {
		return Delivery{}, err
	}
	return r.deliver(ctx, pacing{rate: cfg.LatencyRate, perPub: cfg.LatencyMessages, batch: 1})
}

// loadLead is how long the background fan-in of latency under load runs
// before the 1→1 stream starts, and goes on after it ends.
const loadLead = 500 * time.Millisecond

// loadedLatency: the 1→1 stream of latency1to1 while cfg.FanInPublishers
// publish to one wildcard subscriber at cfg.LoadShare of capacity, the
// broker's sustained fan-in rate (msg/s). The fan-in starts loadLead
// before the stream and ends loadLead after it. It returns the stream's
// figures and the background's.
func loadedLatency(ctx context.Context, inst *Instance, cfg *Config, capacity int) (stream, load Delivery, err error) {
	rate := max(1, int(float64(capacity)*cfg.LoadShare))
	fr, err := fanInRig(ctx, inst, cfg)
	if err != nil {
		return stream, load, fmt.Errorf("background fan-in: %w", err)
	}
	defer fr.close()
	lr, err := newTaggedRig(ctx, inst, cfg, "lat-", 1, func(int) string { return latencyTopic }, 1, func(int) string { return latencyTopic })
	if err != nil {
		return stream, load, err
	}
	defer lr.close()
	if err := fr.warmup(ctx); err != nil {
		return stream, load, fmt.Errorf("background fan-in: %w", err)
	}
	if err := lr.warmup(ctx); err != nil {
		return stream, load, err
	}
	streamTime := time.Duration(float64(cfg.LatencyMessages) / float64(cfg.LatencyRate) * float64(time.Second))
	n := cfg.FanInPublishers
	perPub := max(1, int(float64(rate)*(streamTime+2*loadLead).Seconds())/n)

	var loadErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		load, loadErr = fr.deliver(ctx, pacing{rate: rate, perPub: perPub, tick: throughputTick, batch: pacedBatch})
	}()
	if err := sleepCtx(ctx, loadLead); err != nil {
		<-done
		return stream, load, err
	}
	stream, err = lr.deliver(ctx, pacing{rate: cfg.LatencyRate, perPub: cfg.LatencyMessages, batch: 1})
	<-done
	if err == nil && loadErr != nil {
		err = fmt.Errorf("background fan-in: %w", loadErr)
	}
	return stream, load, err
}

// idleConns opens cfg.IdleConns connections, each subscribed to a topic of
// its own, holds them, and reads the broker's VmRSS before and after.
func idleConns(ctx context.Context, inst *Instance, cfg *Config) (Idle, error) {
	res := Idle{Conns: cfg.IdleConns}
	// Let the fresh broker settle (start-up allocations, the probe).
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return res, err
	}
	var err error
	if res.RSSBefore, err = processRSS(inst.PID); err != nil {
		return res, err
	}
	cpu0, _ := processCPU(inst.PID)
	self0 := selfCPU()
	conns, err := dialMany(ctx, inst.Proto, cfg, cfg.IdleConns,
		func(i int) string { return "bench-idle-" + strconv.Itoa(i) },
		func(i int) string { return "bench/idle/" + strconv.Itoa(i) })
	if err != nil {
		return res, err
	}
	rs := &readerSet{}
	for _, c := range conns {
		rs.wg.Add(1)
		go rs.subscriber(c, 0)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go keepAlive(conns, stop, done)
	defer func() {
		rs.stopping.Store(true)
		close(stop)
		<-done
		closeConns(conns)
		rs.wg.Wait()
	}()
	if err := sleepCtx(ctx, cfg.IdleHold); err != nil {
		return res, err
	}
	if res.RSSAfter, err = processRSS(inst.PID); err != nil {
		return res, err
	}
	cpu1, _ := processCPU(inst.PID)
	res.ServerCPUSeconds = (cpu1 - cpu0).Seconds()
	res.HarnessCPUSeconds = (selfCPU() - self0).Seconds()
	res.Open = cfg.IdleConns - int(rs.closedN.Load())
	res.RSSPerConn = float64(res.RSSAfter-res.RSSBefore) / float64(cfg.IdleConns)
	if res.Open != cfg.IdleConns {
		return res, fmt.Errorf("%d of %d idle connections were closed by the broker; first: %v", cfg.IdleConns-res.Open, cfg.IdleConns, rs.err())
	}
	return res, nil
}
