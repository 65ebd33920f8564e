package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Hostile-client scenarios (issue 9): a handful of connections that do what
// an adversary on the internet would do, with the broker's memory, open
// files and the admin API's latency measured while they do it. Unlike the
// fleet scenarios they need no worker processes (a few dozen sockets at
// most): they run in the parent on plain net.Conns, every phase bounded by
// a count and a duration, and stop by themselves. See docs/loadtest.md.

// AttackScenarios are the hostile-client scenarios of `gatecast loadtest`.
var AttackScenarios = []string{"flood", "tagstorm", "grants"}

func isAttack(scenario string) bool {
	for _, s := range AttackScenarios {
		if s == scenario {
			return true
		}
	}
	return false
}

// AttackOptions are the knobs of a hostile-client run. Zero values take the
// defaults of withDefaults (the CLI's defaults).
type AttackOptions struct {
	URL      string `json:"url"`
	AdminURL string `json:"admin_url"`
	AdminKey string `json:"-"`

	BrokerPID      int           `json:"broker_pid,omitempty"` // 0: the broker's own /metrics (process_*) are sampled instead of /proc
	Duration       time.Duration `json:"duration_ns"`          // flood: streaming time; tagstorm: storm time (at least); grants: publishing time
	Timeout        time.Duration `json:"timeout_ns"`           // upper bound of the whole run
	RSSCeiling     int64         `json:"rss_ceiling_bytes"`    // abort when the broker's RSS passes this
	FDCeiling      int           `json:"fd_ceiling"`           // abort when the broker's open files pass this
	SampleInterval time.Duration `json:"sample_interval_ns"`   // broker RSS sampling period
	SourceIPs      int           `json:"source_ips"`           // tagstorm: bind the loops to 127.0.0.1…N (loopback brokers only)
	DialTimeout    time.Duration `json:"dial_timeout_ns"`      // TCP connect + upgrade response

	// flood
	Conns      int           `json:"conns"`
	ValidToken bool          `json:"valid_token"`
	Frame      string        `json:"frame"`      // empty, ping, text, publish
	WriteSize  int64         `json:"write_size"` // bytes per write (whole frames)
	MaxBytes   int64         `json:"max_bytes_per_conn,omitempty"`
	Drain      time.Duration `json:"drain_ns"` // after streaming stops: longest wait for the broker to close

	// tagstorm
	Loops        int           `json:"loops"`
	Tags         int           `json:"tags"`
	TagPrefix    string        `json:"tag_prefix"`
	Warmup       time.Duration `json:"warmup_ns"`
	Witnesses    int           `json:"witnesses"`
	AdminTimeout time.Duration `json:"admin_timeout_ns"`
	CloseTimeout time.Duration `json:"close_timeout_ns"`
	CloseRST     bool          `json:"close_rst"`

	// grants
	Grants           int  `json:"grants"`
	BuildConcurrency int  `json:"build_concurrency"`
	BuildConnected   bool `json:"build_connected"`
	Window           int  `json:"window"`
	Baseline         bool `json:"baseline"`
	Cleanup          bool `json:"cleanup"`

	Progress io.Writer `json:"-"` // one progress line per second (nil: none)
}

// attackDurations are the default --duration per scenario.
var attackDurations = map[string]time.Duration{"flood": 10 * time.Second, "tagstorm": 15 * time.Second, "grants": 10 * time.Second}

// Frame kinds a flood streams.
var floodFrames = []string{"empty", "ping", "text", "publish"}

func (o AttackOptions) withDefaults(scenario string) AttackOptions {
	defI := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defD(&o.Duration, attackDurations[scenario])
	defD(&o.Timeout, 10*time.Minute)
	if o.RSSCeiling == 0 {
		o.RSSCeiling = 4 << 30
	}
	defI(&o.FDCeiling, 15000)
	defD(&o.SampleInterval, 100*time.Millisecond)
	defI(&o.SourceIPs, 16)
	defD(&o.DialTimeout, 10*time.Second)
	defI(&o.Conns, 4)
	if o.Frame == "" {
		o.Frame = "empty"
	}
	if o.WriteSize == 0 {
		o.WriteSize = 64 << 10
	}
	defD(&o.Drain, 20*time.Second)
	defI(&o.Loops, 50)
	defI(&o.Tags, 1100)
	if o.TagPrefix == "" {
		o.TagPrefix = "t"
	}
	defD(&o.Warmup, 3*time.Second)
	defI(&o.Witnesses, 4)
	defD(&o.AdminTimeout, 2*time.Minute)
	defD(&o.CloseTimeout, 30*time.Second)
	defI(&o.Grants, 10000)
	defI(&o.BuildConcurrency, 1)
	defI(&o.Window, 1000)
	return o
}

// maxUpgradeRequest is the broker's default --max-header-bytes: a tagstorm
// request must fit, or it is answered 431 and tests nothing.
const maxUpgradeRequest = 8192

func (o AttackOptions) validate(scenario string) error {
	switch {
	case !isAttack(scenario):
		return fmt.Errorf("unknown scenario %q", scenario)
	case strings.TrimSpace(o.URL) == "" || strings.Contains(o.URL, ","):
		return errors.New("--url must be one broker URL")
	case o.Duration < 0 || o.Timeout < 0 || o.Drain < 0 || o.Warmup < 0:
		return errors.New("durations must be ≥ 0")
	case o.RSSCeiling < 1<<20 || o.FDCeiling < 1:
		return errors.New("--rss-ceiling must be at least 1 MiB and --fd-ceiling at least 1 (the ceilings cannot be turned off)")
	case o.SourceIPs < 1 || o.SourceIPs > 254:
		return errors.New("--source-ips must be 1…254")
	}
	switch scenario {
	case "flood":
		if o.Conns < 1 || o.Conns > 1000 {
			return errors.New("--conns must be 1…1000")
		}
		if !contains(floodFrames, o.Frame) {
			return fmt.Errorf("--frame must be one of %s", strings.Join(floodFrames, ", "))
		}
		if o.WriteSize < 64 || o.WriteSize > 16<<20 {
			return errors.New("--write-size must be 64 B … 16 MiB")
		}
		if o.MaxBytes < 0 {
			return errors.New("--max-bytes must be ≥ 0")
		}
	case "tagstorm":
		if o.Loops < 1 || o.Loops > 1000 || o.Tags < 1 || o.Witnesses < 0 || o.Witnesses > 1000 {
			return errors.New("--loops must be 1…1000, --tags ≥ 1, --witnesses 0…1000")
		}
		if !validTagPrefix(o.TagPrefix) {
			return errors.New("--tag-prefix must be a plain topic level: letters, digits, - or _")
		}
		u, err := url.Parse(o.URL)
		if err != nil {
			return err
		}
		if n := len(upgradeRequest(u, "gc_"+strings.Repeat("x", 43), stormTags(o.TagPrefix, o.Tags))); n > maxUpgradeRequest {
			return fmt.Errorf("--tags %d makes a %d-byte upgrade request, above the broker's default --max-header-bytes %d (it would be answered 431): use fewer tags or a shorter --tag-prefix", o.Tags, n, maxUpgradeRequest)
		}
		if o.Warmup >= o.Duration {
			return errors.New("--warmup must be shorter than --duration")
		}
	case "grants":
		if o.Grants < 1 || o.Grants > 1_000_000 || o.BuildConcurrency < 1 || o.BuildConcurrency > 64 || o.Window < 1 {
			return errors.New("--grants must be 1…1,000,000, --build-concurrency 1…64, --window ≥ 1")
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func validTagPrefix(p string) bool {
	if p == "" || len(p) > 64 {
		return false
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// AttackReport is a hostile-client run's result, printed as JSON on stdout.
type AttackReport struct {
	Scenario string        `json:"scenario"`
	Started  time.Time     `json:"started"`
	Seconds  float64       `json:"seconds"`
	Options  AttackOptions `json:"options"`
	// Aborted says why the run stopped before its end: "rss_ceiling",
	// "fd_ceiling", "interrupted", "timeout"; empty when it ran through.
	Aborted     string           `json:"aborted,omitempty"`
	Broker      *AttackBroker    `json:"broker,omitempty"`
	Flood       *FloodReport     `json:"flood,omitempty"`
	TagStorm    *TagStormReport  `json:"tagstorm,omitempty"`
	Grants      *GrantsReport    `json:"grants,omitempty"`
	Errors      map[string]int64 `json:"errors"`
	ErrorsTotal int64            `json:"errors_total"`
	Series      []AttackPoint    `json:"series"`
}

// AttackBroker is the broker process during the run, from /proc/<pid>
// (statm, stat, fd) or, without --broker-pid, from its /metrics.
type AttackBroker struct {
	PID           int     `json:"pid,omitempty"`
	Source        string  `json:"source"` // "proc" or "metrics"
	RSSStart      int64   `json:"rss_start_bytes"`
	RSSPeak       int64   `json:"rss_peak_bytes"`
	RSSPeakAt     float64 `json:"rss_peak_at_seconds"`
	RSSEnd        int64   `json:"rss_end_bytes"`
	FDsStart      int     `json:"fds_start"`
	FDsPeak       int     `json:"fds_peak"`
	FDsEnd        int     `json:"fds_end"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	RSSCeiling    int64   `json:"rss_ceiling_bytes"`
	RSSCeilingHit bool    `json:"rss_ceiling_hit"`
	FDCeiling     int     `json:"fd_ceiling"`
	FDCeilingHit  bool    `json:"fd_ceiling_hit"`
	CeilingHitAt  float64 `json:"ceiling_hit_at_seconds,omitempty"`
	Gone          bool    `json:"gone,omitempty"` // the broker could not be read any more (exited?)
}

// AttackPoint is one sample of the run (about one a second).
type AttackPoint struct {
	T         float64 `json:"t"`
	RSS       int64   `json:"broker_rss_bytes"`
	FDs       int     `json:"broker_fds"`
	CPU       float64 `json:"broker_cpu_percent"`
	Written   int64   `json:"written_bytes,omitempty"` // flood: bytes written so far
	Open      int     `json:"open,omitempty"`          // flood: connections open; tagstorm: witnesses without a close frame
	Connects  int64   `json:"connects,omitempty"`      // tagstorm: connects so far
	Sent      int64   `json:"sent,omitempty"`          // grants: publishes sent so far
	Delivered int64   `json:"delivered,omitempty"`     // grants: deliveries so far
}

// attackRun is one hostile-client scenario in progress.
type attackRun struct {
	o        AttackOptions
	scenario string
	target   *url.URL
	api      *adminAPI
	rep      *AttackReport
	epoch    time.Time
	watch    *brokerWatch
	errs     *attackErrors
	// abort ends the scenario's attack phase early (a ceiling was hit).
	abortCtx context.Context
	abort    context.CancelCauseFunc
	created  []int64
	stamp    string // unique per run: token names, tag prefixes
}

// errCeiling is the abort cause when a safety ceiling is passed.
var errCeiling = errors.New("loadtest: broker ceiling passed")

// RunAttack runs a hostile-client scenario against a running broker and
// returns its report. The report is returned with the error when the run
// failed part way.
func RunAttack(ctx context.Context, scenario string, o AttackOptions) (*AttackReport, error) {
	o = o.withDefaults(scenario)
	if err := o.validate(scenario); err != nil {
		return nil, err
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, errors.New("loadtest: only ws:// URLs are supported")
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	r := &attackRun{o: o, scenario: scenario, target: u, api: newAdminAPI(o.AdminURL, o.AdminKey), epoch: time.Now(), errs: newAttackErrors()}
	r.stamp = strconv.FormatInt(r.epoch.UnixNano()/1e6, 36)
	r.rep = &AttackReport{Scenario: scenario, Started: r.epoch.UTC(), Options: o}
	r.abortCtx, r.abort = context.WithCancelCause(ctx)
	defer r.abort(nil)
	r.watch, err = newBrokerWatch(ctx, o, r.api, r.epoch, func(reason string) {
		r.abort(fmt.Errorf("%w: %s", errCeiling, reason))
	})
	if err != nil {
		return nil, err
	}
	defer r.cleanup()
	var runErr error
	switch scenario {
	case "flood":
		runErr = r.flood()
	case "tagstorm":
		runErr = r.tagstorm()
	case "grants":
		runErr = r.grants()
	}
	r.finish(ctx)
	return r.rep, runErr
}

// finish stops the broker watch and completes the report.
func (r *attackRun) finish(ctx context.Context) {
	rep := r.rep
	b, series := r.watch.finish()
	rep.Broker, rep.Series = b, series
	switch {
	case b.RSSCeilingHit:
		rep.Aborted = "rss_ceiling"
	case b.FDCeilingHit:
		rep.Aborted = "fd_ceiling"
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		rep.Aborted = "timeout"
	case ctx.Err() != nil:
		rep.Aborted = "interrupted"
	}
	rep.Errors = r.errs.snapshot()
	rep.ErrorsTotal = sumCounts(rep.Errors)
	rep.Seconds = time.Since(r.epoch).Seconds()
}

// cleanup deletes the tokens the run created.
func (r *attackRun) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range r.created {
		_ = r.api.deleteToken(ctx, id)
	}
}

// since is the time from the start of the run, in seconds.
func (r *attackRun) since(t time.Time) float64 { return t.Sub(r.epoch).Seconds() }

// aborted reports whether the attack phase was ended by a ceiling or by
// the run's context.
func (r *attackRun) aborted() bool { return r.abortCtx.Err() != nil }

// createToken creates a token for this run (deleted at the end).
func (r *attackRun) createToken(ctx context.Context, name string) (ltToken, error) {
	var tok ltToken
	err := r.api.do(ctx, "POST", "/api/v1/tokens", map[string]any{"name": "loadtest-" + r.scenario + "-" + r.stamp + "-" + name, "max_connections": 0}, &tok)
	if tok.ID != 0 {
		r.created = append(r.created, tok.ID)
	}
	if err != nil {
		return tok, fmt.Errorf("admin API: %w", err)
	}
	return tok, nil
}

// grant gives tok perm on pattern (creating the tag when needed).
func (r *attackRun) grant(ctx context.Context, tok ltToken, pattern, perm string) error {
	tag, err := r.api.tagID(ctx, pattern)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if err := r.api.do(ctx, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag), map[string]any{"permission": perm}, nil); err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	return nil
}

// attackErrors counts client-side failures by name.
type attackErrors struct {
	mu sync.Mutex
	m  map[string]int64
}

func newAttackErrors() *attackErrors { return &attackErrors{m: map[string]int64{}} }

func (e *attackErrors) add(name string) {
	e.mu.Lock()
	e.m[name]++
	e.mu.Unlock()
}

func (e *attackErrors) snapshot() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int64, len(e.m))
	for k, v := range e.m {
		out[k] = v
	}
	return out
}

// dialError names a failed dial for the error counts (the fleet's names).
func dialError(err error) string {
	return errKindNames[classifyDial(err)]
}

// --- the broker, watched -------------------------------------------------

// brokerWatch samples the broker's RSS every SampleInterval, and its open
// files and CPU time about once a second, from /proc/<pid> or (without a
// PID) from its /metrics; it keeps the peaks and a series, prints the
// progress line, and calls onCeiling once when a ceiling is passed.
type brokerWatch struct {
	o         AttackOptions
	pid       string
	api       *adminAPI
	epoch     time.Time
	onCeiling func(reason string)
	stop      chan struct{}
	done      chan struct{}

	mu       sync.Mutex
	rep      AttackBroker
	series   []AttackPoint
	cpuStart float64
	cpuLast  float64
	lastFDs  int
	status   func(p *AttackPoint) string // the scenario's counters for the series and progress line
}

// brokerSample is one reading of the broker.
type brokerReading struct {
	rss int64
	fds int     // -1: not read
	cpu float64 // seconds; -1: not read
}

func newBrokerWatch(ctx context.Context, o AttackOptions, api *adminAPI, epoch time.Time, onCeiling func(string)) (*brokerWatch, error) {
	w := &brokerWatch{o: o, api: api, epoch: epoch, onCeiling: onCeiling, stop: make(chan struct{}), done: make(chan struct{})}
	w.rep.RSSCeiling, w.rep.FDCeiling = o.RSSCeiling, o.FDCeiling
	if o.BrokerPID > 0 {
		w.pid = strconv.Itoa(o.BrokerPID)
		w.rep.PID, w.rep.Source = o.BrokerPID, "proc"
	} else {
		w.rep.Source = "metrics"
	}
	s, err := w.read(ctx, true)
	if err != nil {
		if o.BrokerPID > 0 {
			return nil, fmt.Errorf("--broker-pid %d: %w", o.BrokerPID, err)
		}
		return nil, fmt.Errorf("reading the broker's RSS from %s/metrics (or give --broker-pid): %w", o.AdminURL, err)
	}
	w.rep.RSSStart, w.rep.RSSPeak, w.rep.FDsStart, w.rep.FDsPeak = s.rss, s.rss, s.fds, s.fds
	w.cpuStart, w.cpuLast, w.lastFDs = s.cpu, s.cpu, s.fds
	go w.loop()
	return w, nil
}

// read takes one reading; full also reads open files and CPU time.
func (w *brokerWatch) read(ctx context.Context, full bool) (brokerReading, error) {
	if w.pid == "" {
		m, err := scrapeMetrics(ctx, w.api, "process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total")
		if err != nil {
			return brokerReading{}, err
		}
		rss, ok := m["process_resident_memory_bytes"]
		if !ok {
			return brokerReading{}, errors.New("no process_resident_memory_bytes in /metrics")
		}
		s := brokerReading{rss: int64(rss), fds: -1, cpu: -1}
		if v, ok := m["process_open_fds"]; ok {
			s.fds = int(v)
		}
		if v, ok := m["process_cpu_seconds_total"]; ok {
			s.cpu = v
		}
		return s, nil
	}
	rss, err := readRSS(w.pid)
	if err != nil {
		return brokerReading{}, err
	}
	s := brokerReading{rss: rss, fds: -1, cpu: -1}
	if full {
		if n, err := countFDs(w.pid); err == nil {
			s.fds = n
		}
		if c, err := readCPU(w.pid); err == nil {
			s.cpu = c
		}
	}
	return s, nil
}

// countFDs returns how many files process pid has open.
func countFDs(pid string) (int, error) {
	f, err := os.Open("/proc/" + pid + "/fd")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(4096)
		n += len(names)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// fdInterval is how often the broker's open files are counted.
const fdInterval = 250 * time.Millisecond

func (w *brokerWatch) loop() {
	defer close(w.done)
	interval := w.o.SampleInterval
	if w.pid == "" {
		interval = max(interval, 250*time.Millisecond) // an HTTP scrape each time
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	lastFull, lastCPUAt, lastFDs := time.Now(), time.Now(), time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-w.stop
		cancel()
	}()
	fired := false
	for {
		select {
		case <-w.stop:
			return
		case now := <-t.C:
			full := now.Sub(lastFull) >= time.Second-interval/2
			// Open files a few times a second: a storm of connections
			// can add a thousand or more in one.
			fdsNow := full || now.Sub(lastFDs) >= fdInterval-interval/2
			s, err := w.read(ctx, fdsNow)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				w.mu.Lock()
				w.rep.Gone = w.pid != "" && errors.Is(err, os.ErrNotExist)
				w.mu.Unlock()
				continue
			}
			w.mu.Lock()
			w.rep.Gone = false
			if s.rss > w.rep.RSSPeak {
				w.rep.RSSPeak, w.rep.RSSPeakAt = s.rss, now.Sub(w.epoch).Seconds()
			}
			if fdsNow {
				lastFDs = now
			}
			if s.fds >= 0 {
				w.lastFDs = s.fds
				w.rep.FDsPeak = max(w.rep.FDsPeak, s.fds)
			}
			var reason string
			if !fired && w.o.RSSCeiling > 0 && s.rss > w.o.RSSCeiling {
				w.rep.RSSCeilingHit, reason = true, fmt.Sprintf("broker RSS %s above --rss-ceiling %s", fmtSize(s.rss), fmtSize(w.o.RSSCeiling))
			} else if !fired && w.o.FDCeiling > 0 && s.fds > w.o.FDCeiling {
				w.rep.FDCeilingHit, reason = true, fmt.Sprintf("broker has %d open files, above --fd-ceiling %d", s.fds, w.o.FDCeiling)
			}
			if reason != "" {
				fired = true
				w.rep.CeilingHitAt = now.Sub(w.epoch).Seconds()
			}
			var line string
			if full {
				lastFull = now
				p := AttackPoint{T: round3(now.Sub(w.epoch).Seconds()), RSS: s.rss, FDs: w.lastFDs}
				if s.cpu >= 0 && w.cpuLast >= 0 {
					if d := now.Sub(lastCPUAt).Seconds(); d > 0 {
						p.CPU = round3((s.cpu - w.cpuLast) / d * 100)
					}
					w.cpuLast, lastCPUAt = s.cpu, now
				}
				var extra string
				if w.status != nil {
					extra = w.status(&p)
				}
				w.series = append(w.series, p)
				line = fmt.Sprintf("[%5.1fs] %s  broker %s rss, %d fds, %.0f%% cpu", p.T, extra, fmtSize(p.RSS), p.FDs, p.CPU)
			}
			w.mu.Unlock()
			if line != "" && w.o.Progress != nil {
				fmt.Fprintln(w.o.Progress, line)
			}
			if reason != "" {
				if w.o.Progress != nil {
					fmt.Fprintln(w.o.Progress, "ABORT:", reason)
				}
				w.onCeiling(reason)
			}
		}
	}
}

// setStatus installs the scenario's counters for the series and progress
// line (called with the watch's lock held, once a second).
func (w *brokerWatch) setStatus(f func(p *AttackPoint) string) {
	w.mu.Lock()
	w.status = f
	w.mu.Unlock()
}

// now takes a reading right away (not recorded in the series).
func (w *brokerWatch) now() (rss int64, fds int) {
	s, err := w.read(context.Background(), true)
	if err != nil {
		return 0, -1
	}
	w.mu.Lock()
	if s.rss > w.rep.RSSPeak {
		w.rep.RSSPeak, w.rep.RSSPeakAt = s.rss, time.Since(w.epoch).Seconds()
	}
	w.rep.FDsPeak = max(w.rep.FDsPeak, s.fds)
	w.mu.Unlock()
	return s.rss, s.fds
}

// finish stops sampling and returns the broker's report and the series.
func (w *brokerWatch) finish() (*AttackBroker, []AttackPoint) {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	s, err := w.read(context.Background(), true)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.rep.RSSEnd, w.rep.FDsEnd = s.rss, s.fds
		w.rep.RSSPeak = max(w.rep.RSSPeak, s.rss)
		w.rep.FDsPeak = max(w.rep.FDsPeak, s.fds)
		// The last point: the state at the end of the run.
		p := AttackPoint{T: round3(time.Since(w.epoch).Seconds()), RSS: s.rss, FDs: s.fds}
		if w.status != nil {
			w.status(&p)
		}
		w.series = append(w.series, p)
		if s.cpu >= 0 {
			w.cpuLast = s.cpu
		}
	} else {
		w.rep.Gone = true
	}
	if w.cpuStart >= 0 && w.cpuLast >= 0 {
		w.rep.CPUSeconds = round3(w.cpuLast - w.cpuStart)
	}
	rep := w.rep
	return &rep, append([]AttackPoint(nil), w.series...)
}

// scrapeMetrics reads /metrics (no key needed) and returns the sum of the
// samples of each of the named metrics that is present (every label set).
func scrapeMetrics(ctx context.Context, api *adminAPI, names ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := newGet(ctx, api.base+"/metrics")
	if err != nil {
		return nil, err
	}
	resp, err := api.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(resp.Body, names...)
}

// parseMetrics sums, per name, the samples of the Prometheus text format
// in r whose metric name is one of names.
func parseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 || !want[line[:end]] {
			continue
		}
		// The value follows the last space outside the labels (a
		// timestamp may follow it: not written by client_golang).
		rest := line[end:]
		if rest[0] == '{' {
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				continue
			}
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[line[:end]] += v
	}
	return out, sc.Err()
}

// --- sizes -----------------------------------------------------------------

// byteSize is a flag holding a size in bytes, written as 4GiB, 512MiB,
// 64KiB, 100MB, 4096…
type byteSize int64

func (b *byteSize) String() string { return fmtSize(int64(*b)) }

func (b *byteSize) Set(s string) error {
	v, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(v)
	return nil
}

// parseSize parses a size: a number, optionally with a unit (B, KB, MB,
// GB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024; k, m, g alone
// are taken as binary).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("invalid size %q (units: B, KiB, MiB, GiB, KB, MB, GB)", s)
	}
	if v*mult > 1<<62 {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return int64(v * mult), nil
}

// fmtSize writes a byte count in binary units.
func fmtSize(b int64) string {
	switch {
	case b < 0:
		return "-"
	case b >= 1<<30:
		return strconv.FormatFloat(float64(b)/(1<<30), 'f', 2, 64) + " GiB"
	case b >= 1<<20:
		return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB"
	case b >= 1<<10:
		return strconv.FormatFloat(float64(b)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(b, 10) + " B"
}

func round3(v float64) float64 {
	return float64(int64(v*1000+0.5*sign(v))) / 1000
}

func sign(v float64) float64 {
	if v < 0 {
		return -1
	}
	return 1
}

// --- CLI -------------------------------------------------------------------

const attackUsage = `Usage: gatecast loadtest flood|tagstorm|grants [flags]

Hostile clients (issue 9), against a broker you can throw away. Each run is
bounded in count and time and stops by itself; the broker's RSS and open
files are watched (--broker-pid, else its /metrics) and the run aborts when
they pass --rss-ceiling / --fd-ceiling. JSON report on stdout, a table on
stderr. Scenarios:

  flood     --conns connections upgrade with an invalid token (refused with 4003; --valid-token:
            a token that may subscribe but not publish) and stream small masked frames (--frame)
            in --write-size writes for --duration; how long each stayed open, bytes written,
            broker RSS peak and final
  tagstorm  --loops loops connect with --tags distinct tags (t/0,t/1,…) and close at once, for
            --duration; after --warmup the token is disabled (PATCH {"disabled":true}): the call's
            latency and status, --witnesses sessions of the token closed with 4002, sessions left,
            broker RSS and open files
  grants    a token with --grants grants built through the admin API (time per PUT), then one
            connection publishes to a topic of the last grant for --duration (at most --window
            messages in flight) and a subscriber counts: msg/s

Flags:
`

// RunAttackCLI implements `gatecast loadtest flood|tagstorm|grants`.
func RunAttackCLI(ctx context.Context, scenario string, args []string, stdout, stderr io.Writer) int {
	o, quiet, err := parseAttackFlags(scenario, args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.AdminKey == "" {
		o.AdminKey = os.Getenv("GATECAST_ADMIN_KEY")
	}
	if !quiet {
		o.Progress = stderr
	}
	rep, err := RunAttack(ctx, scenario, o)
	if rep != nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		writeAttackTable(stderr, rep)
	}
	if err != nil {
		fmt.Fprintln(stderr, "gatecast loadtest:", err)
		return 1
	}
	return 0
}

// parseAttackFlags parses a hostile scenario's flags.
func parseAttackFlags(scenario string, args []string, stderr io.Writer) (AttackOptions, bool, error) {
	var o AttackOptions
	fs, quiet := newAttackFlagSet(scenario, &o, stderr)
	if err := fs.Parse(args); err != nil {
		return o, false, err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "gatecast loadtest: unexpected argument %q\n", fs.Arg(0))
		return o, false, errors.New("unexpected argument")
	}
	return o, *quiet, nil
}

func newAttackFlagSet(scenario string, o *AttackOptions, stderr io.Writer) (*flag.FlagSet, *bool) {
	fs := flag.NewFlagSet("gatecast loadtest "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, attackUsage)
		fs.PrintDefaults()
	}
	*o = AttackOptions{RSSCeiling: 4 << 30, WriteSize: 64 << 10, Cleanup: true, BuildConnected: true}
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/ws/brocker/", "broker WebSocket URL (one)")
	fs.StringVar(&o.AdminURL, "admin-url", "http://127.0.0.1:8081", "broker admin URL (tokens, grants, the disable call, /metrics)")
	fs.StringVar(&o.AdminKey, "admin-key", "", "admin key (default: env GATECAST_ADMIN_KEY)")
	fs.IntVar(&o.BrokerPID, "broker-pid", 0, "PID of the broker on this machine: RSS from /proc/PID/statm, open files from /proc/PID/fd, CPU (default: its /metrics)")
	fs.DurationVar(&o.Duration, "duration", 0, "flood: streaming time (default 10s); tagstorm: storm time, at least until the disable call returns (default 15s); grants: publishing time (default 10s)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "upper bound of the whole run")
	fs.Var((*byteSize)(&o.RSSCeiling), "rss-ceiling", "abort the attack when the broker's RSS passes this (always on)")
	fs.IntVar(&o.FDCeiling, "fd-ceiling", 15000, "abort the attack when the broker has more open files than this (this machine caps a process at 20,000)")
	fs.DurationVar(&o.SampleInterval, "sample-interval", 100*time.Millisecond, "how often the broker's RSS is read (open files: every 250ms, CPU: every second)")
	fs.DurationVar(&o.DialTimeout, "dial-timeout", 10*time.Second, "TCP connect and upgrade response timeout")
	fs.IntVar(&o.Conns, "conns", 4, "flood: connections")
	fs.BoolVar(&o.ValidToken, "valid-token", false, "flood: connect with a valid token (read on one topic, no write) instead of an invalid one")
	fs.StringVar(&o.Frame, "frame", "empty", "flood: frames streamed: empty (6-byte empty text frames), ping (empty pings), text ({} : not a message), publish (to a topic the token may not publish on)")
	fs.Var((*byteSize)(&o.WriteSize), "write-size", "flood: bytes per write, whole frames")
	fs.Var((*byteSize)(&o.MaxBytes), "max-bytes", "flood: stop a connection's stream after this many bytes (0: only --duration)")
	fs.DurationVar(&o.Drain, "drain", 20*time.Second, "flood: after streaming stops, longest wait for the broker to close each connection")
	fs.IntVar(&o.Loops, "loops", 50, "tagstorm: connect-and-close loops")
	fs.IntVar(&o.Tags, "tags", 1100, "tagstorm: distinct tags per connection (the upgrade request must stay within 8 KiB)")
	fs.StringVar(&o.TagPrefix, "tag-prefix", "t", "tagstorm: tags are PREFIX/0 … PREFIX/N-1, granted by PREFIX/#")
	fs.DurationVar(&o.Warmup, "warmup", 3*time.Second, "tagstorm: storm time before the disable call")
	fs.IntVar(&o.Witnesses, "witnesses", 4, "tagstorm: long-lived sessions of the token (one tag each) that must get 4002")
	fs.DurationVar(&o.AdminTimeout, "admin-timeout", 2*time.Minute, "tagstorm: HTTP timeout of the disable call")
	fs.DurationVar(&o.CloseTimeout, "close-timeout", 30*time.Second, "tagstorm: after the disable call, longest wait for the 4002s and for the token's sessions to be gone")
	fs.BoolVar(&o.CloseRST, "close-rst", false, "tagstorm: close each connection with a TCP reset instead of a FIN")
	fs.IntVar(&o.SourceIPs, "source-ips", 16, "tagstorm: bind the loops' connections to 127.0.0.1…127.0.0.N in turn (loopback brokers only)")
	fs.IntVar(&o.Grants, "grants", 10000, "grants: grants on the token (one tag each: PREFIX/g<i>/#)")
	fs.IntVar(&o.BuildConcurrency, "build-concurrency", 1, "grants: admin calls in flight while building the grants")
	fs.BoolVar(&o.BuildConnected, "build-connected", true, "grants: keep a session of the token connected while the grants are built (each PUT is then enforced on a live session)")
	fs.IntVar(&o.Window, "window", 1000, "grants: publishes in flight at most (sent, not yet delivered to the subscriber)")
	fs.BoolVar(&o.Baseline, "baseline", false, "grants: also publish for --duration with a one-grant token, for comparison")
	fs.BoolVar(&o.Cleanup, "cleanup", true, "grants: delete the run's tags at the end (its tokens are always deleted)")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	return fs, quiet
}
