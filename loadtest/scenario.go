package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Scenarios lists what `gatecast loadtest` runs.
var Scenarios = []string{"connect", "idle", "telemetry", "command", "churn", "revoke", "mixed", "fanout", "fanin", "offline", "storm"}

// Options are the knobs of a run. Zero values take the defaults of
// RunCLI's flags (see withDefaults); every wait is bounded by Timeout.
type Options struct {
	URL      string // broker WebSocket URL(s), comma-separated: connections are spread over them
	AdminURL string
	AdminKey string

	Conns      int // devices (connect, idle, churn, telemetry, command, revoke, mixed); subscribers (fanout); publishers (fanin)
	Dashboards int // telemetry, revoke, mixed: wildcard subscribers, one region each
	Regions    int // device regions (0: as many as dashboards)
	Tokens     int // device tokens the devices are spread over (revoke, mixed)
	Revoke     int // tokens disabled (revoke, mixed)

	Rate          float64 // messages/s offered: telemetry in all (telemetry, fanin, revoke, mixed) or commands (command, fanout); 0 = unpaced
	CommandRate   float64 // mixed: commands/s
	CommandTarget string  // "fleet" (every device gets each command) or "device" (one device each, in turn)
	Messages      int64   // messages to publish in all (0: publish for Duration)
	Size          int     // bytes of each message value

	Duration time.Duration // how long traffic flows
	Hold     time.Duration // connect, idle, churn: how long connections are held before measuring / dropping
	Drain    time.Duration // longest wait for in-flight deliveries after publishing stops
	Timeout  time.Duration // upper bound of the whole run

	RampRate         float64 // connects/s for the first connection of the fleet (0: as fast as the dial concurrency allows)
	DialConcurrency  int     // dials in flight per worker
	DialTimeout      time.Duration
	HandshakeTimeout time.Duration

	Workers   int  // worker processes (0: enough for PerWorker each)
	PerWorker int  // connections per worker at most (the open files cap)
	InProcess bool // run workers as goroutines of this process (tests, debugging)
	SourceIPs int  // bind connections to 127.0.0.1…127.0.0.N in turn (0: at least 4, and 10,000 connections each at most)

	ChurnFraction     float64       // churn (default 1), mixed (default 0.1): share of devices dropped
	Outage            time.Duration // churn, mixed: time between the drop and the reconnect storm
	ReconnectJitter   time.Duration // each device reconnects after a uniform random delay below this
	ReconnectDeadline time.Duration // devices stop retrying this long after the storm began
	CloseTimeout      time.Duration // revoke, mixed: longest wait for the close frames

	// MQTT fleets (Protocol "mqtt"): every client speaks MQTT over TCP.
	Protocol      string        // "seed" (default) or "mqtt"
	MQTTVersion   int           // 4 (3.1.1) or 5 (default)
	MQTTURL       string        // MQTT listener(s), tcp://host:port, comma-separated (default: the first URL's host, port 1883)
	KeepAlive     time.Duration // MQTT keep alive (default 60s); every connection sends PINGREQ each half of it
	SessionExpiry time.Duration // offline: MQTT 5 Session Expiry Interval of the devices' sessions (default 1h)
	CommandQoS    *int          // MQTT: QoS of the commands and of the devices' command subscriptions, 0 to 2 (nil: 1)

	// revoke --kind (revkind.go)
	Kind       string        // one of RevokeKinds; "" is the classic revoke scenario
	Unaffected int           // sessions the change must not touch (default Conns/10, at least 1)
	Settle     time.Duration // after the expected signals, how long to watch for wrong ones (default 300ms)
	note       string        // set by withDefaults: why the protocol was changed

	// storm (storm.go)
	Storm StormOptions

	BrokerPID int       // read the broker's RSS and CPU from /proc/<pid>
	Progress  io.Writer // one progress line per second (nil: none)
	Stderr    io.Writer // worker processes' stderr (nil: discarded)
}

// scenarioDefaults are the rates that make sense per scenario when --rate
// is not given.
var scenarioDefaults = map[string]float64{
	"telemetry": 1000, "fanin": 50000, "revoke": 1000, "mixed": 1000,
	"command": 10, "fanout": 200,
}

func (o Options) withDefaults(scenario string) Options {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if scenario == "offline" {
		def(&o.Conns, 10000)
	}
	if scenario == "revoke" && o.Kind != "" {
		def(&o.Conns, 2000)
		if o.Unaffected == 0 {
			o.Unaffected = max(1, o.Conns/10)
		}
		if o.Unaffected < 0 {
			o.Unaffected = 0
		}
		defD(&o.Settle, 300*time.Millisecond)
		if o.Kind == "downgrade" && o.Protocol != protoMQTT {
			// A seed client cannot see a refused publish: the broker drops
			// it and counts it, without a word (protocol-seed.md). MQTT 5
			// answers a QoS 1 publish with PUBACK 0x87.
			o.Protocol, o.MQTTVersion = protoMQTT, 5
			o.note = "downgrade runs with MQTT 5 clients: a seed client is never told a publish was refused (dropped and counted), an MQTT 5 client gets PUBACK 0x87"
		}
	}
	if scenario == "storm" {
		def(&o.Conns, 15000)
		o.Storm = o.Storm.withDefaults()
	}
	def(&o.Conns, 1000)
	def(&o.Size, 64)
	o.Size = max(o.Size, minMessageSize)
	def(&o.Tokens, 10)
	def(&o.Revoke, 1)
	def(&o.DialConcurrency, 64)
	def(&o.PerWorker, 15000)
	defD(&o.Duration, 10*time.Second)
	defD(&o.Hold, 5*time.Second)
	defD(&o.Drain, 5*time.Second)
	defD(&o.Timeout, 10*time.Minute)
	defD(&o.DialTimeout, 10*time.Second)
	defD(&o.HandshakeTimeout, 10*time.Second)
	defD(&o.Outage, time.Second)
	defD(&o.ReconnectJitter, 2*time.Second)
	defD(&o.ReconnectDeadline, time.Minute)
	defD(&o.CloseTimeout, 30*time.Second)
	if o.CommandTarget == "" {
		o.CommandTarget = "fleet"
	}
	if o.ChurnFraction == 0 {
		o.ChurnFraction = 1
		if scenario == "mixed" {
			o.ChurnFraction = 0.1
		}
	}
	if o.CommandRate == 0 && scenario == "mixed" {
		o.CommandRate = 5
	}
	if o.Protocol == "" {
		o.Protocol = protoSeed
	}
	if o.Protocol == protoMQTT {
		def(&o.MQTTVersion, 5)
		defD(&o.KeepAlive, 60*time.Second)
		defD(&o.SessionExpiry, time.Hour)
		if strings.TrimSpace(o.MQTTURL) == "" {
			o.MQTTURL = deriveMQTTURL(o.URL)
		}
	}
	if scenario == "offline" {
		// The broker keeps at most broker.DefaultMaxOfflineSessions (1,000)
		// offline sessions per token: spread the devices so that each
		// token stays below.
		o.Tokens = max(o.Tokens, (o.Conns+maxOfflinePerToken-1)/maxOfflinePerToken)
	}
	return o
}

// maxOfflinePerToken is the broker's default cap on one token's offline
// sessions (broker.DefaultMaxOfflineSessions).
const maxOfflinePerToken = 1000

// deriveMQTTURL is the MQTT listener on the host of the first seed URL:
// tcp://host:1883, the broker's default --mqtt-listen port.
func deriveMQTTURL(urls string) string {
	first, _, _ := strings.Cut(urls, ",")
	u, err := url.Parse(strings.TrimSpace(first))
	if err != nil || u.Hostname() == "" {
		return "tcp://127.0.0.1:1883"
	}
	return "tcp://" + net.JoinHostPort(u.Hostname(), "1883")
}

// splitURLs splits a comma-separated URL list.
func splitURLs(s string) []string {
	var urls []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

func (o Options) validate(scenario string) error {
	switch {
	case o.Conns < 1:
		return errors.New("--conns must be at least 1")
	case o.Dashboards < 0 || o.Regions < 0 || o.Tokens < 1 || o.Revoke < 0:
		return errors.New("--dashboards, --regions, --revoke must be ≥ 0 and --tokens ≥ 1")
	case (scenario == "revoke" || scenario == "mixed") && (o.Revoke < 1 || o.Revoke >= min(o.Tokens, o.Conns)):
		return errors.New("--revoke must be at least 1 and less than --tokens (and --conns): some devices must stay")
	case o.Rate < 0 || o.CommandRate < 0 || o.RampRate < 0 || o.Messages < 0:
		return errors.New("rates and --messages must be ≥ 0")
	case o.CommandTarget != "fleet" && o.CommandTarget != "device":
		return errors.New("--command-target must be fleet or device")
	case o.ChurnFraction <= 0 || o.ChurnFraction > 1:
		return errors.New("--churn-fraction must be in (0, 1]")
	case o.SourceIPs < 0 || o.SourceIPs > 254:
		return errors.New("--source-ips must be 0…254")
	case o.Workers < 0 || o.PerWorker < 1:
		return errors.New("--workers must be ≥ 0 and --per-worker ≥ 1")
	case o.Size > maxServerFrame/2:
		return fmt.Errorf("--size must be at most %d", maxServerFrame/2)
	case strings.TrimSpace(o.URL) == "" && o.Protocol != protoMQTT:
		return errors.New("--url is empty")
	case o.Protocol != protoSeed && o.Protocol != protoMQTT:
		return fmt.Errorf("--protocol %q: want seed or mqtt", o.Protocol)
	case scenario == "offline" && o.Protocol != protoMQTT:
		return errors.New("offline needs --protocol mqtt: seed sessions end with their connection")
	case o.Protocol == protoMQTT && o.MQTTVersion != 4 && o.MQTTVersion != 5:
		return fmt.Errorf("--mqtt-version %d: want 4 (3.1.1) or 5", o.MQTTVersion)
	case o.Protocol == protoMQTT && (o.KeepAlive < time.Second || o.KeepAlive > 65535*time.Second):
		return errors.New("--mqtt-keep-alive must be 1s to 65535s")
	case o.Protocol == protoMQTT && (o.SessionExpiry < time.Second || o.SessionExpiry > 0xFFFFFFFE*time.Second):
		return errors.New("--mqtt-session-expiry must be at least 1s")
	case o.Protocol == protoMQTT && (o.commandQoS() < 0 || o.commandQoS() > 2):
		return fmt.Errorf("--mqtt-command-qos %d: want 0, 1 or 2", o.commandQoS())
	case scenario == "offline" && o.commandQoS() == 0:
		return errors.New("offline needs --mqtt-command-qos 1 or 2: a broker keeps no QoS 0 message for a client that is away")
	case o.Protocol == protoMQTT && len(splitURLs(o.MQTTURL)) == 0:
		return errors.New("--mqtt-url is empty")
	case len(splitURLs(o.AdminURL)) == 0:
		return errors.New("--admin-url is empty")
	case o.Kind != "" && scenario != "revoke":
		return errors.New("--kind is for the revoke scenario")
	case o.Kind != "" && !contains(RevokeKinds, o.Kind):
		return fmt.Errorf("--kind %q: want one of %s", o.Kind, strings.Join(RevokeKinds, ", "))
	case o.Kind == "downgrade" && o.MQTTVersion != 5:
		return errors.New("--kind downgrade needs MQTT 5: a 3.1.1 server acknowledges a refused QoS 1 publish like an accepted one")
	case o.Kind == "limit" && o.Unaffected < 1:
		return errors.New("--kind limit needs --unaffected ≥ 1: the limit is lowered to the unaffected count (0 would mean unlimited)")
	case scenario == "storm":
		return o.Storm.validate()
	}
	return nil
}

// shape is which connections a scenario needs.
type shape struct {
	devices, dashboards, regions int
	commander                    bool
}

func shapeOf(scenario string, o Options) (shape, error) {
	s := shape{devices: o.Conns}
	switch scenario {
	case "connect", "idle", "churn":
	case "revoke":
		if o.Kind != "" {
			s.devices = o.Conns + o.Unaffected
		} else {
			s.dashboards = o.Dashboards
		}
	case "storm":
	case "telemetry":
		s.dashboards = o.Dashboards
	case "mixed":
		s.dashboards, s.commander = o.Dashboards, true
	case "command", "fanout", "offline":
		s.commander = true
	case "fanin":
		s.dashboards, s.regions = 1, 1
	default:
		return s, fmt.Errorf("unknown scenario %q (one of %s)", scenario, strings.Join(Scenarios, ", "))
	}
	if s.regions == 0 {
		s.regions = max(1, o.Regions)
		if o.Regions == 0 && s.dashboards > 0 {
			s.regions = s.dashboards
		}
	}
	return s, nil
}

// run is one scenario in progress, driven from one goroutine.
type run struct {
	o        Options
	scenario string
	shape    shape
	api      *adminAPI
	fl       *fleet
	agg      *aggregator
	broker   *brokerSampler
	rep      *Report
	epoch    time.Time

	devTokens   []ltToken
	created     []int64
	createdTags []int64

	revKind      *revKindState // revoke --kind
	storm        *stormRun     // storm
	preConnected int64         // connections made before connectAll (revoke --kind limit)

	sessionPresent int64 // MQTT: CONNACKs with Session Present 1, summed over the connects
}

// Run runs a scenario against a running broker and returns its report.
func Run(ctx context.Context, scenario string, o Options) (*Report, error) {
	o = o.withDefaults(scenario)
	sh, err := shapeOf(scenario, o)
	if err != nil {
		return nil, err
	}
	if err := o.validate(scenario); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	r := &run{o: o, scenario: scenario, shape: sh, api: newAdminAPI(splitURLs(o.AdminURL)[0], o.AdminKey), epoch: time.Now()}
	r.rep = &Report{Scenario: scenario, Started: r.epoch.UTC(), Devices: sh.devices, Dashboards: sh.dashboards, Commander: sh.commander, InProcess: o.InProcess}
	if o.Protocol == protoMQTT {
		r.rep.Protocol = protoMQTT
		r.rep.MQTT = &MQTTReport{Version: o.MQTTVersion, URLs: splitURLs(o.MQTTURL), KeepAliveSeconds: int(o.KeepAlive / time.Second),
			CommandQoS: o.commandQoS(), Persistent: scenario == "offline"}
	}
	if o.BrokerPID > 0 {
		if r.broker, err = newBrokerSampler(o.BrokerPID, r.epoch); err != nil {
			return nil, err
		}
		r.rep.Broker = &BrokerReport{PID: o.BrokerPID, RSSStart: r.broker.rssNow()}
	}
	defer r.cleanupTokens()
	start := r.start
	switch {
	case scenario == "storm":
		start = r.startStorm
	case o.Kind != "":
		start = r.startRevKind
	}
	if err := start(ctx); err != nil {
		if r.broker != nil {
			r.broker.finish()
		}
		return nil, err
	}
	runErr := r.scenarioBody(ctx)
	if runErr == nil {
		var st []status
		if st, runErr = r.fl.all(ctx, command{Op: "counts"}); runErr == nil {
			for _, s := range st {
				r.rep.Connections.OpenAtEnd += s.Open
			}
		}
	}
	final, closeErr := r.fl.close(context.WithoutCancel(ctx))
	r.finish(final)
	if runErr != nil {
		return r.rep, runErr
	}
	return r.rep, closeErr
}

func (r *run) scenarioBody(ctx context.Context) error {
	switch r.scenario {
	case "connect":
		return r.connectScenario(ctx)
	case "idle":
		return r.idleScenario(ctx)
	case "telemetry", "fanin":
		return r.trafficScenario(ctx, true, false)
	case "command", "fanout":
		return r.trafficScenario(ctx, false, true)
	case "churn":
		return r.churnScenario(ctx)
	case "revoke":
		if r.o.Kind != "" {
			return r.revKindScenario(ctx)
		}
		return r.revokeScenario(ctx)
	case "storm":
		return r.stormScenario(ctx)
	case "mixed":
		return r.mixedScenario(ctx)
	case "offline":
		return r.offlineScenario(ctx)
	}
	return fmt.Errorf("unknown scenario %q", r.scenario)
}

// start creates the tokens and the workers.
func (r *run) start(ctx context.Context) error {
	o, sh := r.o, r.shape
	tag, err := r.api.tagID(ctx, "lt/#")
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	prefix := "loadtest-" + r.scenario + "-" + strconv.FormatInt(r.epoch.Unix(), 10)
	mk := func(name, perm string) (ltToken, error) {
		t, err := r.api.tokenOnTag(ctx, prefix+"-"+name, tag, perm)
		if t.ID != 0 {
			r.created = append(r.created, t.ID)
		}
		return t, err
	}
	nTok := min(o.Tokens, sh.devices)
	var secrets []string
	for k := range nTok {
		t, err := mk("dev-"+strconv.Itoa(k), "readwrite")
		if err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
		r.devTokens = append(r.devTokens, t)
		secrets = append(secrets, t.Secret)
	}
	var dash, cmdr ltToken
	if sh.dashboards > 0 {
		if dash, err = mk("dashboard", "read"); err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
	}
	if sh.commander {
		if cmdr, err = mk("commander", "readwrite"); err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
	}

	return r.launch(ctx, secrets, dash.Secret, cmdr.Secret, nil)
}

// launch starts the workers of the fleet r.shape describes: device
// secrets (device i uses secrets[i mod len], or as spec.Layout says), the
// dashboards' and the commander's; mutate, when set, completes each
// worker's spec.
func (r *run) launch(ctx context.Context, secrets []string, dashSecret, cmdrSecret string, mutate func(*workerSpec)) error {
	o, sh := r.o, r.shape
	prefix := "loadtest-" + r.scenario + "-" + strconv.FormatInt(r.epoch.Unix(), 10)
	total := sh.devices + sh.dashboards
	if sh.commander {
		total++
	}
	workers := o.Workers
	if workers == 0 {
		workers = (total + o.PerWorker - 1) / o.PerWorker
	}
	if per := (total + workers - 1) / workers; per > o.PerWorker {
		return fmt.Errorf("%d connections over %d workers is %d per worker, above --per-worker %d", total, workers, per, o.PerWorker)
	}
	sourceIPs := o.SourceIPs
	if sourceIPs == 0 {
		// Each source address has ~28k ephemeral ports, fewer while
		// TIME_WAIT sockets of a previous run hold some, and the
		// kernel's search for a free port slows as they fill up: keep
		// every address below 10,000 connections.
		sourceIPs = min(254, max(4, (total+9999)/10000))
	}
	urls := splitURLs(o.URL)
	if o.Protocol == protoMQTT {
		urls = splitURLs(o.MQTTURL)
	}
	r.rep.Workers, r.rep.SourceIPs = workers, sourceIPs
	specs := make([]workerSpec, workers)
	for w := range specs {
		specs[w] = workerSpec{
			Index: w, Count: workers, Epoch: r.epoch.UnixNano(), URLs: urls, SourceIPs: sourceIPs,
			Devices: sh.devices, DevLo: sh.devices * w / workers, DevHi: sh.devices * (w + 1) / workers,
			Dashboards: sh.dashboards, Regions: sh.regions, Commander: sh.commander && w == 0,
			DeviceTokens: secrets, DashboardToken: dashSecret, CommanderToken: cmdrSecret,
			Size: o.Size, DialConcurrency: o.DialConcurrency, DialTimeout: o.DialTimeout, HandshakeTimeout: o.HandshakeTimeout,
		}
		if o.Protocol == protoMQTT {
			sp := &specs[w]
			sp.Protocol, sp.MQTTVersion, sp.KeepAlive, sp.CommandQoS = protoMQTT, byte(o.MQTTVersion), o.KeepAlive, byte(o.commandQoS())
			sp.ClientPrefix = prefix
			if r.scenario == "offline" {
				sp.Persistent, sp.SessionExpiry = true, uint32(o.SessionExpiry/time.Second)
			}
		}
		if mutate != nil {
			mutate(&specs[w])
		}
		if err := specs[w].validate(); err != nil {
			return err
		}
	}
	stderr := o.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	r.agg = newAggregator(workers, o.Progress, r.broker)
	var err error
	r.fl, err = startFleet(ctx, specs, o.InProcess, stderr, r.agg)
	return err
}

// cleanupTokens deletes the tokens the run created (after the fleet
// closed, so that deleting them disconnects nobody).
func (r *run) cleanupTokens() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r.storm != nil && !r.storm.deleteTokens {
		r.created = nil // kept for the next run (--tokens-file)
	}
	deleteAll(ctx, r.created, r.o.Storm.AdminConcurrency, func(ctx context.Context, id int64) error { return r.api.deleteToken(ctx, id) })
	for _, id := range r.createdTags {
		_ = r.api.do(ctx, "DELETE", fmt.Sprintf("/api/v1/tags/%d", id), nil, nil)
	}
}

// deleteAll calls del for every id, conc at a time (at least 1).
func deleteAll(ctx context.Context, ids []int64, conc int, del func(context.Context, int64) error) {
	conc = max(1, min(conc, len(ids)))
	ch := make(chan int64)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ch {
				_ = del(ctx, id)
			}
		}()
	}
	for _, id := range ids {
		ch <- id
	}
	close(ch)
	wg.Wait()
}

// connectAll connects the whole fleet (ramp) and records it.
func (r *run) connectAll(ctx context.Context) ([]status, error) {
	rate := r.o.RampRate / float64(len(r.fl.hs))
	st, err := r.fl.all(ctx, command{Op: "connect", Rate: rate})
	if err != nil {
		return nil, err
	}
	c := &r.rep.Connections
	c.Target = r.shape.devices + r.shape.dashboards
	if r.shape.commander {
		c.Target++
	}
	var first, last int64
	c.Connected = r.preConnected
	for _, s := range st {
		c.Connected += s.Connected
		c.Failed += s.Failed
		r.sessionPresent += s.SessionPresent
		if s.DialStart != 0 && (first == 0 || s.DialStart < first) {
			first = s.DialStart
		}
		last = max(last, s.LastConnect)
	}
	if last > first && first > 0 {
		c.Seconds = float64(last-first) / 1e9
		c.PerSecond = float64(c.Connected) / c.Seconds
	}
	if c.Connected < int64(c.Target) {
		return st, fmt.Errorf("only %d of %d connections were established (%d failed; see errors)", c.Connected, c.Target, c.Failed)
	}
	if r.rep.Broker != nil {
		r.rep.Broker.RSSConnected = r.broker.rssNow()
	}
	return st, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// measureClient asks every worker for its own memory per connection.
func (r *run) measureClient(ctx context.Context) error {
	st, err := r.fl.all(ctx, command{Op: "memory"})
	if err != nil {
		return err
	}
	c := &r.rep.Client
	var heap, rss int64
	for i, s := range st {
		c.Conns += s.Open
		c.Goroutines = max(c.Goroutines, s.Goroutines)
		// In-process workers share one process: each measured all of it.
		if !r.o.InProcess || i == 0 {
			heap += s.HeapStack
			rss += s.RSS
		}
	}
	if c.Conns > 0 {
		c.HeapStackPerConn = float64(heap) / float64(c.Conns)
		c.RSSPerConn = float64(rss) / float64(c.Conns)
	}
	if b := r.rep.Broker; b != nil && c.Conns > 0 {
		b.RSSConnected = r.broker.rssNow()
		b.RSSPerConn = float64(b.RSSConnected-b.RSSStart) / float64(c.Conns)
	}
	return nil
}

func (r *run) connectScenario(ctx context.Context) error {
	if _, err := r.connectAll(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, r.o.Hold); err != nil {
		return err
	}
	return r.measureClient(ctx)
}

// idleScenario also reads the broker's own memory account from /metrics
// before and after, so that it works without --broker-pid.
func (r *run) idleScenario(ctx context.Context) error {
	before, err := r.api.memory(ctx)
	if err != nil {
		return err
	}
	if _, err := r.connectAll(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, r.o.Hold); err != nil {
		return err
	}
	if err := r.measureClient(ctx); err != nil {
		return err
	}
	after, err := r.api.memory(ctx)
	if err != nil {
		return err
	}
	if r.rep.Broker == nil {
		r.rep.Broker = &BrokerReport{}
	}
	n := float64(r.rep.Client.Conns)
	b := r.rep.Broker
	b.HeapStackPerConn = ((after.HeapInuse + after.StackInuse) - (before.HeapInuse + before.StackInuse)) / n
	b.MetricsRSSPer = (after.RSS - before.RSS) / n
	b.Goroutines = after.Goroutines
	return nil
}

// share returns worker i's share of n (proportional to its devices).
func (r *run) share(i int, n float64) float64 {
	if r.shape.devices == 0 {
		return 0
	}
	w := len(r.fl.hs)
	devs := r.shape.devices*(i+1)/w - r.shape.devices*i/w
	return n * float64(devs) / float64(r.shape.devices)
}

// trafficCommand builds worker i's traffic command.
func (r *run) trafficCommand(i int, telemetry, commands bool, telemetryRate, commandRate float64, maxN int64) command {
	c := command{Op: "traffic", CommandFleet: r.o.CommandTarget == "fleet"}
	if telemetry {
		c.Telemetry = true
		c.TelemetryRate = r.share(i, telemetryRate)
		if maxN > 0 {
			c.TelemetryMax = int64(math.Round(r.share(i, float64(maxN))))
		}
	}
	if commands {
		c.Commands, c.CommandRate, c.CommandMax = true, commandRate, maxN
	}
	return c
}

// trafficPhase runs traffic until Messages are sent (or Duration passes)
// and returns when publishing stopped, with its start and end.
func (r *run) trafficPhase(ctx context.Context, telemetry, commands bool, telemetryRate, commandRate float64, during func() error) (start, end time.Time, err error) {
	start = time.Now()
	if _, err = r.fl.do(ctx, func(i int) command {
		return r.trafficCommand(i, telemetry, commands, telemetryRate, commandRate, r.o.Messages)
	}); err != nil {
		return
	}
	if during != nil {
		if err = during(); err != nil {
			return
		}
	}
	if r.o.Messages > 0 {
		for {
			st, e := r.fl.all(ctx, command{Op: "counts"})
			if e != nil {
				return start, time.Now(), e
			}
			busy := false
			for _, s := range st {
				busy = busy || s.Publishing
			}
			if !busy {
				break
			}
			if err = sleep(ctx, 50*time.Millisecond); err != nil {
				return
			}
		}
	} else if err = sleep(ctx, time.Until(start.Add(r.o.Duration))); err != nil {
		return
	}
	end = time.Now()
	_, err = r.fl.all(ctx, command{Op: "quiesce"})
	return
}

// drain waits for in-flight deliveries: until every expected delivery
// arrived, nothing arrived for a second, or Drain passed. It returns the
// final counts and when the last delivery was seen.
func (r *run) drain(ctx context.Context) ([]status, time.Time, error) {
	deadline := time.Now().Add(r.o.Drain)
	last, lastChange := int64(-1), time.Now()
	for {
		st, err := r.fl.all(ctx, command{Op: "counts"})
		if err != nil {
			return nil, lastChange, err
		}
		var exp, del int64
		for _, s := range st {
			for k := range nKinds {
				exp += s.Expected[k]
				del += s.Delivered[k]
			}
		}
		now := time.Now()
		if del != last {
			last, lastChange = del, now
		}
		if del >= exp || now.Sub(lastChange) > time.Second || now.After(deadline) {
			return st, lastChange, nil
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, lastChange, err
		}
	}
}

// trafficReports fills the telemetry and command reports from final
// counts. exact says whether expected deliveries are exact.
func (r *run) trafficReports(st []status, start, end, lastDelivery time.Time, telemetry, commands bool, exact [nKinds]bool, offered [nKinds]float64) {
	for k := range nKinds {
		if (k == kindTelemetry && !telemetry) || (k == kindCommand && !commands) {
			continue
		}
		t := &TrafficReport{OfferedPerSecond: offered[k]}
		for _, s := range st {
			t.Sent += s.Sent[k]
			t.Expected += s.Expected[k]
			t.Delivered += s.Delivered[k]
		}
		if exact[k] {
			lost := t.Expected - t.Delivered
			t.Lost = &lost
		}
		t.Seconds = end.Sub(start).Seconds()
		if t.Seconds > 0 {
			t.SentPerSecond = float64(t.Sent) / t.Seconds
		}
		if d := lastDelivery.Sub(start).Seconds(); d > 0 {
			t.DeliveredPerSecond = float64(t.Delivered) / d
		}
		if k == kindTelemetry {
			r.rep.Telemetry = t
		} else {
			r.rep.Commands = t
		}
	}
}

// settle gives the broker time to finish the last subscriptions before
// the first publish.
const settle = 200 * time.Millisecond

func (r *run) trafficScenario(ctx context.Context, telemetry, commands bool) error {
	if _, err := r.connectAll(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	start, end, err := r.trafficPhase(ctx, telemetry, commands, r.o.Rate, r.o.Rate, nil)
	if err != nil {
		return err
	}
	st, lastDelivery, err := r.drain(ctx)
	if err != nil {
		return err
	}
	r.trafficReports(st, start, end, lastDelivery, telemetry, commands, [nKinds]bool{true, true}, [nKinds]float64{r.o.Rate, r.o.Rate})
	return r.measureClient(ctx)
}

// churnPhase drops a share of the devices abruptly, waits Outage, then lets
// them all reconnect at once, each after a random delay below
// ReconnectJitter and retrying with backoff until ReconnectDeadline.
func (r *run) churnPhase(ctx context.Context, frac float64) error {
	dropAt := time.Now()
	st, err := r.fl.all(ctx, command{Op: "outage", Fraction: frac})
	if err != nil {
		return err
	}
	c := &ChurnReport{OutageSeconds: r.o.Outage.Seconds(), JitterSeconds: r.o.ReconnectJitter.Seconds()}
	r.rep.Churn = c
	for _, s := range st {
		c.Dropped += s.Dropped
	}
	if err := sleep(ctx, r.o.Outage); err != nil {
		return err
	}
	stormAt := time.Now()
	st, err = r.fl.all(ctx, command{Op: "reconnect", Jitter: r.o.ReconnectJitter, Deadline: stormAt.Add(r.o.ReconnectDeadline).UnixNano()})
	if err != nil {
		return err
	}
	var last int64
	for _, s := range st {
		c.Reconnected += s.Connected
		c.Failed += s.Failed
		last = max(last, s.LastConnect)
		r.sessionPresent += s.SessionPresent
	}
	if last > 0 {
		c.AllBackSeconds = float64(last-stormAt.UnixNano()) / 1e9
		c.SinceDropSeconds = float64(last-dropAt.UnixNano()) / 1e9
		if c.AllBackSeconds > 0 {
			c.ReconnectsPerSecond = float64(c.Reconnected) / c.AllBackSeconds
		}
	}
	if c.Reconnected < c.Dropped {
		return fmt.Errorf("churn: only %d of %d dropped devices reconnected", c.Reconnected, c.Dropped)
	}
	return nil
}

func (r *run) churnScenario(ctx context.Context) error {
	if _, err := r.connectAll(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, r.o.Hold); err != nil {
		return err
	}
	if err := r.churnPhase(ctx, r.o.ChurnFraction); err != nil {
		return err
	}
	return r.measureClient(ctx)
}

// revokePhase disables Revoke device tokens through the admin API (all at
// once) and waits until every client of those tokens has its close frame.
func (r *run) revokePhase(ctx context.Context) error {
	k := r.o.Revoke
	rv := &RevokeReport{Tokens: len(r.devTokens), Revoked: k}
	r.rep.Revoke = rv
	idx := make([]int, k)
	for i := range idx {
		idx[i] = i
	}
	// Workers time close frames from at, the moment the admin calls start.
	at := time.Now().Add(50 * time.Millisecond)
	st, err := r.fl.all(ctx, command{Op: "mark", RevokedTokens: idx, At: at.UnixNano()})
	if err != nil {
		return err
	}
	for _, s := range st {
		rv.Affected += s.RevokedAffected
	}
	if err := sleep(ctx, time.Until(at)); err != nil {
		return err
	}
	rv.AdminCallMs = make([]float64, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			errs[i] = r.api.disableToken(ctx, r.devTokens[i].ID)
			rv.AdminCallMs[i] = float64(time.Since(t0).Microseconds()) / 1000
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("disabling tokens: %w", err)
	}
	deadline := time.Now().Add(r.o.CloseTimeout)
	var last int64
	for {
		st, err := r.fl.all(ctx, command{Op: "counts"})
		if err != nil {
			return err
		}
		rv.Closed, last = 0, 0
		for _, s := range st {
			rv.Closed += s.RevokedCloses
			last = max(last, s.LastRevokedClose)
		}
		if rv.Closed >= rv.Affected || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	if last > 0 {
		rv.AllClosedMs = float64(last-at.UnixNano()) / 1e6
	}
	if rv.Closed < rv.Affected {
		return fmt.Errorf("revoke: only %d of %d affected clients got their %s within %s", rv.Closed, rv.Affected, r.revokeSignal(), r.o.CloseTimeout)
	}
	return nil
}

// revokeOutcome checks, at the end, that the devices of tokens that were
// not revoked are all still connected.
func (r *run) revokeOutcome(st []status) {
	rv := r.rep.Revoke
	if rv == nil {
		return
	}
	var devices int64
	for _, s := range st {
		devices += s.OpenDevices
	}
	rv.Unaffected = int64(r.shape.devices) - rv.Affected
	rv.UnaffectedOpen = devices
}

func (r *run) revokeScenario(ctx context.Context) error {
	if _, err := r.connectAll(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	// Traffic flows for the whole Duration; the revocation happens a
	// quarter of the way in.
	r.o.Messages = 0 // traffic flows for Duration, not a message count
	start, end, err := r.trafficPhase(ctx, true, false, r.o.Rate, 0, func() error {
		if err := sleep(ctx, r.o.Duration/4); err != nil {
			return err
		}
		return r.revokePhase(ctx)
	})
	if err != nil {
		return err
	}
	st, lastDelivery, err := r.drain(ctx)
	if err != nil {
		return err
	}
	// A publish in flight when its token is disabled is refused: expected
	// deliveries are an upper bound here.
	r.trafficReports(st, start, end, lastDelivery, true, false, [nKinds]bool{false, false}, [nKinds]float64{r.o.Rate, 0})
	r.revokeOutcome(st)
	return nil
}

// mixedScenario: telemetry and commands flow for Duration; a quarter of the
// way in a share of the devices (ChurnFraction) drops and reconnects, then
// Revoke tokens are disabled.
func (r *run) mixedScenario(ctx context.Context) error {
	if _, err := r.connectAll(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	r.o.Messages = 0 // traffic flows for Duration, not a message count
	start, end, err := r.trafficPhase(ctx, true, true, r.o.Rate, r.o.CommandRate, func() error {
		if err := sleep(ctx, r.o.Duration/4); err != nil {
			return err
		}
		if err := r.churnPhase(ctx, r.o.ChurnFraction); err != nil {
			return err
		}
		return r.revokePhase(ctx)
	})
	if err != nil {
		return err
	}
	st, lastDelivery, err := r.drain(ctx)
	if err != nil {
		return err
	}
	// With churn and revocation, expected counts are upper bounds:
	// commands reach only the devices connected at the time, and a
	// publish in flight when its device is reset or its token disabled
	// is lost or refused.
	r.trafficReports(st, start, end, lastDelivery, true, true, [nKinds]bool{false, false}, [nKinds]float64{r.o.Rate, r.o.CommandRate})
	r.revokeOutcome(st)
	return nil
}

// unexpectedClosePrefixes name the errors that are a broker closing or
// refusing a client: seed close codes, MQTT refusals and DISCONNECTs, MQTT
// connections closed without a DISCONNECT.
var unexpectedClosePrefixes = []string{"closed_", "rejected_", "connack_", "disconnect_", "suback_", "dropped_without_disconnect"}

// commandQoS is the QoS of an MQTT fleet's commands (and of the devices'
// command subscriptions), 1 unless set; telemetry is QoS 0.
func (o Options) commandQoS() int {
	if o.CommandQoS == nil {
		return 1
	}
	return *o.CommandQoS
}

// revokeSignal names what a revoked client gets.
func (r *run) revokeSignal() string {
	switch {
	case r.o.Protocol != protoMQTT:
		return "4002 close frame"
	case r.o.MQTTVersion == 5:
		return "DISCONNECT 0x87"
	}
	return "connection close (MQTT 3.1.1)"
}

// finish completes the report from the workers' final state and the
// merged ticks.
func (r *run) finish(final []status) {
	rep := r.rep
	rep.Seconds = time.Since(r.epoch).Seconds()
	rep.Connections.Handshake = latencyOf(r.agg.connect)
	rep.Errors = map[string]int64{}
	if final != nil {
		for _, s := range final {
			for k, v := range s.Errors {
				rep.Errors[k] += v
			}
		}
	} else {
		for k, v := range r.agg.errors {
			rep.Errors[k] = v
		}
	}
	rep.ErrorsTotal = sumCounts(rep.Errors)
	if rep.Telemetry != nil {
		rep.Telemetry.Latency = latencyOf(r.agg.lat[kindTelemetry])
	}
	if rep.Commands != nil {
		rep.Commands.Latency = latencyOf(r.agg.lat[kindCommand])
		if rep.Offline != nil {
			rep.Offline.CommandAge = rep.Commands.Latency
		}
	}
	if rv := rep.Revoke; rv != nil {
		rv.CloseLatency = latencyOf(r.agg.close)
		closed := rv.Closed
		switch {
		case r.o.Protocol != protoMQTT:
			rv.Closed4002 = &closed
		case r.o.MQTTVersion == 5:
			rv.ClosedDisconnect = &closed
		default:
			rv.ClosedByBroker = &closed
		}
		rv.UnexpectedCloses = 0
		for name, v := range rep.Errors {
			for _, p := range unexpectedClosePrefixes {
				if strings.HasPrefix(name, p) {
					rv.UnexpectedCloses += v
				}
			}
		}
	}
	if m := rep.MQTT; m != nil && final != nil {
		for _, s := range final {
			m.PubAcks += s.PubAcks
			m.Pings += s.Pings
			m.PingResps += s.PingResps
			m.DupDeliveries += s.DupFlags
		}
		m.SessionPresent = r.sessionPresent
	}
	if r.broker != nil {
		cpu, peak := r.broker.finish()
		rep.Broker.CPUSeconds, rep.Broker.RSSPeak, rep.Broker.RSSEnd = cpu, peak, r.broker.rssNow()
	}
	rep.Series = r.agg.series()
}
