package compare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Report is everything one comparison run measured; the CLI writes it as
// JSON with --json. Config and Brokers are the native table (every broker
// in its own protocol over WebSocket); MQTT is the MQTT table (one MQTT
// client for every broker), nil when it was not run.
type Report struct {
	Started time.Time       `json:"started"`
	Seconds float64         `json:"seconds"`
	Host    Host            `json:"host"`
	Config  Config          `json:"config"`
	Brokers []*BrokerResult `json:"brokers"`
	MQTT    *Table          `json:"mqtt,omitempty"`
}

// MQTTTableTitle is the title of the MQTT table in the report.
const MQTTTableTitle = "MQTT, one client for every broker"

// Table is a table of the report other than the native one: its own
// configuration (the MQTT table runs shorter ladders), its brokers'
// figures and the targets judged on them.
type Table struct {
	Title   string          `json:"title"`
	Config  Config          `json:"config"`
	Brokers []*BrokerResult `json:"brokers"`
	Targets []Target        `json:"targets,omitempty"`
}

// Suite is what one table runs: its scenarios and sizes, and its brokers.
type Suite struct {
	Config  Config
	Brokers []Broker
}

// Host describes the machine the run was on.
type Host struct {
	CPUs          int    `json:"cpus"`
	Kernel        string `json:"kernel"`
	GoVersion     string `json:"go_version"`
	OpenFileLimit uint64 `json:"open_file_limit"` // soft RLIMIT_NOFILE of the harness, inherited by the brokers
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end:
	// the figures are only comparable on an otherwise idle machine.
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
	// HarnessCPUs is the CPUs the harness ran on (its affinity during the
	// run); Pinning, set by the command line, how they were chosen.
	HarnessCPUs string   `json:"harness_cpus"`
	Pinning     *Pinning `json:"pinning,omitempty"`
}

// BrokerResult is one broker's figures. A scenario that failed has no
// figures and an entry in Errors instead.
type BrokerResult struct {
	Broker       string `json:"broker"`
	Protocol     string `json:"protocol"`
	Transport    string `json:"transport,omitempty"` // MQTT: "tcp" or "ws"
	Version      string `json:"version"`
	MaxOpenFiles int64  `json:"max_open_files"` // the broker process's soft limit, from /proc/PID/limits
	CPUs         string `json:"cpus"`           // CPUs the broker process could run on (Cpus_allowed_list)

	FanOutSteps []Delivery `json:"fanout_steps,omitempty"`
	FanOutBest  *Delivery  `json:"fanout_sustained,omitempty"` // highest sustained step
	FanOutBurst *Delivery  `json:"fanout_burst,omitempty"`
	FanInSteps  []Delivery `json:"fanin_steps,omitempty"`
	FanInBest   *Delivery  `json:"fanin_sustained,omitempty"`
	FanInBurst  *Delivery  `json:"fanin_burst,omitempty"`
	// FanOutLimit and FanInLimit say what ended each ladder: "broker",
	// "harness" (the first step not sustained was harness-bound: the
	// sustained figure is the harness's ceiling), "top" (every step was
	// sustained: a lower bound), "" (unknown).
	FanOutLimit string    `json:"fanout_limit,omitempty"`
	FanInLimit  string    `json:"fanin_limit,omitempty"`
	Latency     *Delivery `json:"latency,omitempty"`
	// LoadedLatency is the 1→1 stream of latency under load, LoadedFanIn
	// the background fan-in it ran with.
	LoadedLatency *Delivery `json:"loaded_latency,omitempty"`
	LoadedFanIn   *Delivery `json:"loaded_fanin,omitempty"`
	Idle          *Idle     `json:"idle,omitempty"`

	Errors map[string]string `json:"errors,omitempty"` // scenario part → error
}

// unit is one part of a scenario, run on a fresh instance of each broker.
type unit struct {
	name string
	run  func(ctx context.Context, inst *Instance, cfg *Config, res *BrokerResult) (summary string, err error)
}

func unitsOf(scenario string) []unit {
	switch scenario {
	case "fanout":
		return []unit{
			{"fanout-sustained", func(ctx context.Context, inst *Instance, cfg *Config, res *BrokerResult) (string, error) {
				steps, err := fanOutLadder(ctx, inst, cfg)
				res.FanOutSteps, res.FanOutBest = steps, best(steps)
				res.FanOutLimit = ladderLimit(steps, cfg.FanOutRates, err)
				return ladderSummary(steps), err
			}},
			{"fanout-burst", func(ctx context.Context, inst *Instance, cfg *Config, res *BrokerResult) (string, error) {
				d, err := fanOutBurst(ctx, inst, cfg)
				if err == nil {
					res.FanOutBurst = &d
				}
				return deliverySummary(d), err
			}},
		}
	case "fanin":
		return []unit{
			{"fanin-sustained", func(ctx context.Context, inst *Instance, cfg *Config, res *BrokerResult) (string, error) {
				steps, err := fanInLadder(ctx, inst, cfg)
				res.FanInSteps, res.FanInBest = steps, best(steps)
				res.FanInLimit = ladderLimit(steps, cfg.FanInRates, err)
				return ladderSummary(steps), err
			}},
			{"fanin-burst", func(ctx context.Context, inst *Instance, cfg *Config, res *BrokerResult) (string, error) {
				d, err := fanInBurst(ctx, inst, cfg)
				if err == nil {
					res.FanInBurst = &d
				}
				return deliverySummary(d), err
			}},
		}
	case "latency":
		return []unit{{"latency", func(ctx context.Context, inst *Instance, cfg *Config, res *BrokerResult) (string, error) {
			d, err := latency1to1(ctx, inst, cfg)
			if err == nil {
				res.Latency = &d
			}
			return deliverySummary(d), err
		}}}
	case "loaded":
		return []unit{{"loaded", func(ctx context.Context, inst *Instance, cfg *Config, res *BrokerResult) (string, error) {
			if res.FanInBest == nil {
				return "", errors.New("no sustained fan-in rate was measured in this run: latency under load runs at a share of it")
			}
			stream, load, err := loadedLatency(ctx, inst, cfg, res.FanInBest.OfferedRate)
			if err == nil {
				res.LoadedLatency, res.LoadedFanIn = &stream, &load
			}
			return fmt.Sprintf("%s; background fan-in %s/s offered: %s", deliverySummary(stream), si(float64(load.OfferedRate)), deliverySummary(load)), err
		}}}
	case "idle":
		return []unit{{"idle", func(ctx context.Context, inst *Instance, cfg *Config, res *BrokerResult) (string, error) {
			d, err := idleConns(ctx, inst, cfg)
			if err == nil {
				res.Idle = &d
			}
			return fmt.Sprintf("%d open, RSS %s → %s, %.0f B/conn", d.Open, mib(d.RSSBefore), mib(d.RSSAfter), d.RSSPerConn), err
		}}}
	}
	return nil
}

// best is the sustained step with the highest rate, nil if none.
func best(steps []Delivery) *Delivery {
	var b *Delivery
	for i := range steps {
		if steps[i].Sustained {
			b = &steps[i]
		}
	}
	return b
}

func ladderSummary(steps []Delivery) string {
	var parts []string
	for _, d := range steps {
		mark := "ok"
		if !d.Sustained {
			mark = "NOT sustained (" + d.Verdict + ")"
		}
		if d.HarnessBound {
			mark += ", harness-bound"
		}
		parts = append(parts, fmt.Sprintf("%d/s: %s/s sent (%.1f %%), %s, broker CPU %.0f %%, harness CPU %.0f %%: %s",
			d.OfferedRate, si(d.SentPerSecond), d.AchievedPercent, deliverySummary(d), d.BrokerCPUPercent, d.HarnessCPUPercent, mark))
	}
	return strings.Join(parts, "\n    ")
}

func deliverySummary(d Delivery) string {
	s := fmt.Sprintf("%d/%d delivered, %s/s, p99 %.2f ms", d.Delivered, d.Expected, si(d.DeliveredPerSecond), d.P99Ms)
	if d.Error != "" {
		s += " (" + d.Error + ")"
	}
	return s
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Run runs cfg.Scenarios against every broker. Each part of a scenario
// runs on a fresh instance of each broker in turn (so the brokers are
// measured close together in time), which is stopped before the next one
// starts. A part that fails is recorded in the broker's Errors and the run
// goes on; when ctx ends (Ctrl-C) the instance running is stopped and Run
// returns what it has with ctx's error. progress gets one line per part.
func Run(ctx context.Context, cfg Config, brokers []Broker, progress io.Writer) (*Report, error) {
	return RunSuites(ctx, &Suite{Config: cfg, Brokers: brokers}, nil, progress)
}

// RunSuites runs the native table's suite, then the MQTT table's, each as
// Run does; either may be nil or have no brokers (not run). The MQTT
// table's targets are judged at the end.
func RunSuites(ctx context.Context, native, mqtt *Suite, progress io.Writer) (*Report, error) {
	for _, s := range []*Suite{native, mqtt} {
		if s != nil && len(s.Brokers) > 0 {
			if err := s.Config.Validate(); err != nil {
				return nil, err
			}
		}
	}
	rep := &Report{Started: time.Now(), Host: host(), Brokers: []*BrokerResult{}}
	if native != nil {
		rep.Config = native.Config
		if len(native.Brokers) == 0 {
			rep.Config.Scenarios = nil
		}
	}
	defer func() {
		rep.Seconds = time.Since(rep.Started).Seconds()
		rep.Host.LoadAfter = loadAvg()
	}()
	if native != nil && len(native.Brokers) > 0 {
		rep.Brokers = newResults(native.Brokers)
		if err := runSuite(ctx, native, rep.Brokers, "", progress); err != nil {
			return rep, err
		}
	}
	if mqtt != nil && len(mqtt.Brokers) > 0 {
		rep.MQTT = &Table{Title: MQTTTableTitle, Config: mqtt.Config, Brokers: newResults(mqtt.Brokers)}
		err := runSuite(ctx, mqtt, rep.MQTT.Brokers, "mqtt ", progress)
		rep.MQTT.Targets = mqttTargets(rep.MQTT)
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func newResults(brokers []Broker) []*BrokerResult {
	results := make([]*BrokerResult, len(brokers))
	for i, b := range brokers {
		results[i] = &BrokerResult{Broker: b.Name}
	}
	return results
}

// runSuite runs s's scenarios into results (one per broker); tag prefixes
// the progress lines.
func runSuite(ctx context.Context, s *Suite, results []*BrokerResult, tag string, progress io.Writer) error {
	cfg := s.Config
	for _, sc := range cfg.Scenarios {
		for _, u := range unitsOf(sc) {
			for i, b := range s.Brokers {
				res := results[i]
				start := time.Now()
				summary, err := runUnit(ctx, b, u, &cfg, res)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err != nil {
					if res.Errors == nil {
						res.Errors = map[string]string{}
					}
					res.Errors[u.name] = err.Error()
					summary = "FAILED: " + err.Error()
				}
				fmt.Fprintf(progress, "%s%-16s %-17s %5.1fs  %s\n", tag, u.name, b.Name, time.Since(start).Seconds(), summary)
			}
		}
	}
	return nil
}

// runUnit starts a fresh instance, runs u on it and stops it, whatever
// happens.
func runUnit(ctx context.Context, b Broker, u unit, cfg *Config, res *BrokerResult) (summary string, err error) {
	inst, err := b.Start(ctx)
	if err != nil {
		return "", err
	}
	defer func() {
		if serr := inst.Stop(); serr != nil && err == nil {
			err = fmt.Errorf("stopping %s: %w", b.Name, serr)
		}
	}()
	res.Protocol = inst.Proto.Name()
	if t, ok := inst.Proto.(interface{ Transport() string }); ok {
		res.Transport = t.Transport()
	}
	if list, err := processCPUList(inst.PID); err == nil {
		res.CPUs, inst.CPUs = list, cpuCount(list)
	}
	if inst.Version != "" {
		res.Version = inst.Version
	}
	if n, err := processMaxOpenFiles(inst.PID); err == nil {
		res.MaxOpenFiles = n
	}
	return u.run(ctx, inst, cfg, res)
}

func host() Host {
	h := Host{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		h.OpenFileLimit = rl.Cur
	}
	h.LoadBefore = loadAvg()
	if cpus, err := allowedCPUs(); err == nil {
		h.HarnessCPUs = formatCPUList(cpus)
	}
	return h
}

// loadAvg is the 1, 5 and 15 minute load averages from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
