package compare

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// fdHeadroom is what the harness needs besides its client sockets (stdio,
// the epoll descriptor, log files, HTTP to the admin API).
const fdHeadroom = 100

// RunCompareCLI implements `gatecast bench compare [flags]`: it finds (or
// installs) the peers, raises the open-file limit the brokers inherit, runs
// the scenarios against a fresh instance of every broker per scenario part,
// prints the tables to stdout (progress to stderr) and writes the JSON
// report with --json. Exit status: 0 when every part ran, 1 when a part
// failed or the run was interrupted (the tables then show what was
// measured), 2 for bad flags.
func RunCompareCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if path := os.Getenv(cpuProfileEnv); path != "" {
		if stop, err := startCPUProfile(path); err != nil {
			fmt.Fprintf(stderr, "gatecast bench compare: %s: %v\n", cpuProfileEnv, err)
		} else {
			defer stop()
		}
	}
	cfg := DefaultConfig()
	mqttDefaults := DefaultMQTTConfig()
	fs := flag.NewFlagSet("gatecast bench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	gatecastBin := fs.String("gatecast", "bin/gatecast", "gatecast binary to start (build it with 'make build')")
	gatecastArgs := fs.String("gatecast-args", "", "extra 'gatecast serve' flags, space-separated (default: none, every setting at its default like the peers)")
	mosquittoBin := fs.String("mosquitto", "", "mosquitto binary (default: found in PATH or /usr/sbin, installed with apt-get when missing)")
	natsBin := fs.String("nats-server", "", "nats-server binary (default: found in PATH or /usr/sbin, installed with apt-get when missing)")
	brokersFlag := fs.String("brokers", "gatecast,mosquitto,nats", "native table: brokers to measure, each in its own protocol over WebSocket, comma-separated (gatecast, mosquitto, nats)")
	mqttBrokersFlag := fs.String("mqtt-brokers", strings.Join(defaultMQTTBrokers, ","), "MQTT table: brokers to measure with the one MQTT client, comma-separated ("+strings.Join(mqttBrokerNames, ", ")+")")
	only := fs.String("only", "", "run one table only: native (each broker in its own protocol) or mqtt (one MQTT client for every broker); default both")
	mqttFanOutRates := fs.String("mqtt-fanout-rates", joinInts(mqttDefaults.FanOutRates), "MQTT table: fan-out ladder, offered msg/s per step, ascending (empty: no ladder)")
	mqttFanInRates := fs.String("mqtt-fanin-rates", joinInts(mqttDefaults.FanInRates), "MQTT table: fan-in ladder, offered msg/s of all publishers per step, ascending (empty: no ladder)")
	scenarios := fs.String("scenarios", strings.Join(cfg.Scenarios, ","), "scenarios to run, comma-separated: fanout, fanin, latency, loaded (latency under fan-in load; needs fanin before it), idle")
	install := fs.Bool("install", true, "install missing peers with apt-get when running as root")
	jsonPath := fs.String("json", "", "write every figure as JSON to this file")
	workDir := fs.String("work-dir", "", "directory for the brokers' throwaway data, configuration and logs (default: a new temporary directory, removed at the end)")
	keep := fs.Bool("keep", false, "keep the work directory (broker logs) at the end")
	nofile := fs.Uint64("nofile", 20000, "open-file limit (soft RLIMIT_NOFILE) of the harness and of every broker, capped by the hard limit")
	allowed, _ := allowedCPUs()
	pin := fs.Bool("pin", len(allowed) >= 2, "run every broker under taskset on --broker-cpus and the harness on --harness-cpus (default on with 2 CPUs or more; without taskset the run is unpinned and the report says so)")
	brokerCPUs := fs.String("broker-cpus", "", "with --pin: CPUs of every broker, a taskset list such as 1 or 2-3 (default: the upper half of the CPUs this process may use, rounded down)")
	harnessCPUs := fs.String("harness-cpus", "", "with --pin: CPUs of the harness (default: the CPUs the brokers do not get)")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "message size in bytes (the JSON payload with the send time)")
	fs.IntVar(&cfg.DialConcurrency, "dial-concurrency", cfg.DialConcurrency, "connections dialled at once")
	fs.DurationVar(&cfg.Step, "step", cfg.Step, "publishing time of each step of the fan-out and fan-in rate ladders")
	fs.DurationVar(&cfg.Quiet, "quiet", cfg.Quiet, "a run ends this long after the last delivery once publishing is done (what has not arrived is lost)")
	fs.DurationVar(&cfg.Warmup, "warmup-limit", cfg.Warmup, "longest the warm-up may take before a scenario fails")
	fs.IntVar(&cfg.FanOutSubscribers, "fanout-subs", cfg.FanOutSubscribers, "fan-out subscribers")
	fanOutRates := fs.String("fanout-rates", joinInts(cfg.FanOutRates), "fan-out ladder: offered msg/s per step, ascending (empty: no ladder)")
	fs.IntVar(&cfg.FanOutMessages, "fanout-messages", cfg.FanOutMessages, "fan-out burst: messages published as fast as possible")
	fs.IntVar(&cfg.FanInPublishers, "fanin-pubs", cfg.FanInPublishers, "fan-in publishers")
	fanInRates := fs.String("fanin-rates", joinInts(cfg.FanInRates), "fan-in ladder: offered msg/s of all publishers per step, ascending (empty: no ladder)")
	fs.IntVar(&cfg.FanInMessages, "fanin-messages", cfg.FanInMessages, "fan-in burst: messages of all publishers together, sent as fast as possible")
	fs.IntVar(&cfg.LatencyRate, "latency-rate", cfg.LatencyRate, "1→1 latency: msg/s")
	fs.IntVar(&cfg.LatencyMessages, "latency-messages", cfg.LatencyMessages, "1→1 latency: messages")
	fs.Float64Var(&cfg.LoadShare, "load-share", cfg.LoadShare, "latency under load: the background fan-in runs at this share of the broker's sustained fan-in rate measured by the same run")
	fs.IntVar(&cfg.IdleConns, "idle-conns", cfg.IdleConns, "idle connections")
	fs.DurationVar(&cfg.IdleHold, "idle-hold", cfg.IdleHold, "how long the idle connections are held before memory is read")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: gatecast bench compare [flags]

Runs the same scenarios against Gatecast, Mosquitto and the NATS server, each on
throwaway instances on random 127.0.0.1 ports, and prints a table per scenario
with the ratio Gatecast / peer, in two tables:
  native: each broker in its own protocol over WebSocket (Gatecast seed JSON,
          Mosquitto MQTT 3.1.1, NATS text protocol);
  mqtt:   one MQTT 3.1.1 QoS 0 client for every broker: gatecast-mqtt-tcp
          (--mqtt-listen), gatecast-mqtt-ws (/mqtt on --listen), mosquitto
          (its TCP listener; mosquitto-ws: its WebSocket one), nats-mqtt (the
          NATS server's MQTT listener, JetStream in a throwaway directory).
The scenario sizes are shared; the MQTT table has ladders of its own
(--mqtt-fanout-rates, --mqtt-fanin-rates). --only mqtt runs the MQTT table only.`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "gatecast bench compare: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var err error
	if cfg.FanOutRates, err = parseInts(*fanOutRates); err != nil {
		fmt.Fprintln(stderr, "gatecast bench compare: --fanout-rates:", err)
		return 2
	}
	if cfg.FanInRates, err = parseInts(*fanInRates); err != nil {
		fmt.Fprintln(stderr, "gatecast bench compare: --fanin-rates:", err)
		return 2
	}
	cfg.Scenarios = splitList(*scenarios)
	mqttCfg := cfg
	if mqttCfg.FanOutRates, err = parseInts(*mqttFanOutRates); err != nil {
		fmt.Fprintln(stderr, "gatecast bench compare: --mqtt-fanout-rates:", err)
		return 2
	}
	if mqttCfg.FanInRates, err = parseInts(*mqttFanInRates); err != nil {
		fmt.Fprintln(stderr, "gatecast bench compare: --mqtt-fanin-rates:", err)
		return 2
	}
	names, mqttNames := splitList(*brokersFlag), splitList(*mqttBrokersFlag)
	switch *only {
	case "":
	case "native":
		mqttNames = nil
	case "mqtt":
		names = nil
	default:
		fmt.Fprintf(stderr, "gatecast bench compare: --only %q: want native or mqtt\n", *only)
		return 2
	}
	if len(names) > 0 {
		if err := cfg.Validate(); err != nil {
			fmt.Fprintln(stderr, "gatecast bench compare:", err)
			return 2
		}
	}
	if len(mqttNames) > 0 {
		if err := mqttCfg.Validate(); err != nil {
			fmt.Fprintln(stderr, "gatecast bench compare: MQTT table:", err)
			return 2
		}
	}
	if len(names) == 0 && len(mqttNames) == 0 {
		fmt.Fprintln(stderr, "gatecast bench compare: no broker to measure (--brokers and --mqtt-brokers empty, or emptied by --only)")
		return 2
	}
	for _, n := range names {
		if !slices.Contains(nativeBrokerNames, n) {
			fmt.Fprintf(stderr, "gatecast bench compare: unknown broker %q (%s)\n", n, strings.Join(nativeBrokerNames, ", "))
			return 2
		}
	}
	for _, n := range mqttNames {
		if !slices.Contains(mqttBrokerNames, n) {
			fmt.Fprintf(stderr, "gatecast bench compare: unknown MQTT broker %q (%s)\n", n, strings.Join(mqttBrokerNames, ", "))
			return 2
		}
	}
	pinning := &Pinning{}
	var pinBroker, pinHarnessCPUs []int
	switch {
	case *pin:
		if pinBroker, pinHarnessCPUs, err = choosePinning(allowed, *brokerCPUs, *harnessCPUs); err != nil {
			fmt.Fprintln(stderr, "gatecast bench compare:", err)
			return 2
		}
		if pinning.Taskset = findTaskset(); pinning.Taskset == "" {
			pinning.Note = "taskset (util-linux) not found: brokers and harness ran unpinned, sharing every CPU"
			pinBroker, pinHarnessCPUs = nil, nil
		}
	case *brokerCPUs != "" || *harnessCPUs != "":
		fmt.Fprintln(stderr, "gatecast bench compare: --broker-cpus and --harness-cpus need --pin")
		return 2
	case len(allowed) < 2:
		pinning.Note = "unpinned: this process may use 1 CPU only, shared by the brokers and the harness"
	default:
		pinning.Note = "unpinned (--pin=false): brokers and harness shared every CPU"
	}

	limit, err := SetOpenFileLimit(*nofile)
	if err != nil {
		fmt.Fprintln(stderr, "gatecast bench compare: setting the open-file limit:", err)
		return 1
	}
	conns := 0
	if len(names) > 0 {
		conns = maxConns(cfg)
	}
	if len(mqttNames) > 0 {
		conns = max(conns, maxConns(mqttCfg))
	}
	if need := uint64(conns + fdHeadroom); need > limit {
		fmt.Fprintf(stderr, "gatecast bench compare: the scenarios need up to %d open files in the harness and in each broker, but the limit is %d (hard limit or --nofile); lower --idle-conns or raise `ulimit -Hn`\n", need, limit)
		return 2
	}

	dir := *workDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "gatecast-bench-compare-"); err != nil {
			fmt.Fprintln(stderr, "gatecast bench compare:", err)
			return 1
		}
		if !*keep {
			defer os.RemoveAll(dir)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(stderr, "gatecast bench compare:", err)
		return 1
	}
	if *keep {
		fmt.Fprintln(stderr, "broker data and logs in", dir)
	}

	var need []string
	for _, n := range append(append([]string(nil), names...), mqttNames...) {
		switch {
		case (n == "mosquitto" || n == "mosquitto-ws") && *mosquittoBin == "" && !slices.Contains(need, "mosquitto"):
			need = append(need, "mosquitto")
		case (n == "nats" || n == "nats-mqtt") && *natsBin == "" && !slices.Contains(need, "nats-server"):
			need = append(need, "nats-server")
		}
	}
	paths, err := EnsurePeers(ctx, need, *install, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "gatecast bench compare:", err)
		return 1
	}
	launcher := Launcher{Dir: dir}
	if pinBroker != nil {
		launcher.Taskset, launcher.CPUs = pinning.Taskset, formatCPUList(pinBroker)
	}
	// Absolute: the broker runs in its own work directory.
	gcBin, err := filepath.Abs(*gatecastBin)
	if err == nil {
		_, err = os.Stat(gcBin)
	}
	gcErr := err
	mosqBin, natsPath := *mosquittoBin, *natsBin
	if mosqBin == "" {
		mosqBin = paths["mosquitto"]
	}
	if natsPath == "" {
		natsPath = paths["nats-server"]
	}
	gcArgs := strings.Fields(*gatecastArgs)
	var brokers, mqttBrokers []Broker
	for _, n := range append(append([]string(nil), names...), mqttNames...) {
		if isGatecast(n) && gcErr != nil {
			fmt.Fprintf(stderr, "gatecast bench compare: %v (build it with `make build`, or pass --gatecast PATH)\n", gcErr)
			return 1
		}
	}
	for _, n := range names {
		switch n {
		case "gatecast":
			brokers = append(brokers, GatecastProcess(gcBin, launcher, gcArgs...))
		case "mosquitto":
			brokers = append(brokers, MosquittoProcess(mosqBin, launcher))
		case "nats":
			brokers = append(brokers, NATSProcess(natsPath, launcher))
		}
	}
	for _, n := range mqttNames {
		b, err := mqttBroker(n, gcBin, mosqBin, natsPath, launcher, gcArgs)
		if err != nil {
			fmt.Fprintln(stderr, "gatecast bench compare:", err)
			return 2
		}
		mqttBrokers = append(mqttBrokers, b)
	}

	if pinBroker != nil {
		restore, err := pinHarness(pinHarnessCPUs)
		if err != nil {
			fmt.Fprintln(stderr, "gatecast bench compare: pinning the harness:", err)
			return 1
		}
		defer func() {
			if err := restore(); err != nil {
				fmt.Fprintln(stderr, "gatecast bench compare: restoring the CPU affinity:", err)
			}
		}()
		pinning.Enabled = true
		pinning.BrokerCPUs, pinning.HarnessCPUs = launcher.CPUs, formatCPUList(pinHarnessCPUs)
	}
	fmt.Fprintf(stderr, "open-file limit %d for the harness and every broker; %d CPUs; %s\n", limit, host().CPUs, pinning.describe())
	rep, runErr := RunSuites(ctx, &Suite{Config: cfg, Brokers: brokers}, &Suite{Config: mqttCfg, Brokers: mqttBrokers}, stderr)
	if rep == nil {
		fmt.Fprintln(stderr, "gatecast bench compare:", runErr)
		return 1
	}
	rep.Host.Pinning = pinning
	fmt.Fprintf(stdout, "gatecast bench compare — %d CPUs, Linux %s, %s, open-file limit %d, %.0f s, load average %s before, %s after\n",
		rep.Host.CPUs, rep.Host.Kernel, rep.Host.GoVersion, rep.Host.OpenFileLimit, rep.Seconds, rep.Host.LoadBefore, rep.Host.LoadAfter)
	fmt.Fprintf(stdout, "  %s\n", pinning.describe())
	for _, b := range rep.Brokers {
		fmt.Fprintf(stdout, "  %-17s %-5s %s (max open files %d)\n", b.Broker, b.Protocol, b.Version, b.MaxOpenFiles)
	}
	if rep.MQTT != nil {
		for _, b := range rep.MQTT.Brokers {
			fmt.Fprintf(stdout, "  %-17s %-5s %s (MQTT table, over %s; max open files %d)\n", b.Broker, b.Protocol, b.Version, b.Transport, b.MaxOpenFiles)
		}
	}
	WriteTables(stdout, rep)
	if *jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonPath, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(stderr, "gatecast bench compare: writing the JSON report:", err)
			return 1
		}
	}
	if runErr != nil {
		fmt.Fprintln(stderr, "gatecast bench compare: interrupted:", runErr)
		return 1
	}
	all := rep.Brokers
	if rep.MQTT != nil {
		all = append(append([]*BrokerResult(nil), all...), rep.MQTT.Brokers...)
	}
	for _, b := range all {
		if len(b.Errors) > 0 {
			return 1
		}
	}
	return 0
}

// The brokers of the tables: every name --brokers and --mqtt-brokers take,
// and the MQTT table's default selection.
var (
	nativeBrokerNames  = []string{"gatecast", "mosquitto", "nats"}
	mqttBrokerNames    = []string{GatecastMQTTTCP, GatecastMQTTWS, "mosquitto", "mosquitto-ws", "nats-mqtt"}
	defaultMQTTBrokers = []string{GatecastMQTTTCP, GatecastMQTTWS, "mosquitto", "nats-mqtt"}
)

// mqttBroker is the MQTT table's broker called name.
func mqttBroker(name, gatecastBin, mosquittoBin, natsBin string, l Launcher, gatecastArgs []string) (Broker, error) {
	switch name {
	case GatecastMQTTTCP:
		return GatecastMQTTProcess(gatecastBin, l, "tcp", gatecastArgs...)
	case GatecastMQTTWS:
		return GatecastMQTTProcess(gatecastBin, l, "ws", gatecastArgs...)
	case "mosquitto":
		return MosquittoMQTTProcess(mosquittoBin, l, "tcp")
	case "mosquitto-ws":
		return MosquittoMQTTProcess(mosquittoBin, l, "ws")
	case "nats-mqtt":
		return NATSMQTTProcess(natsBin, l), nil
	}
	return Broker{}, fmt.Errorf("unknown MQTT broker %q (%s)", name, strings.Join(mqttBrokerNames, ", "))
}

// maxConns is the most client connections any scenario holds at once.
func maxConns(cfg Config) int {
	n := 0
	for _, s := range cfg.Scenarios {
		switch s {
		case "fanout":
			n = max(n, cfg.FanOutSubscribers+1)
		case "fanin":
			n = max(n, cfg.FanInPublishers+1)
		case "latency":
			n = max(n, 2)
		case "loaded":
			n = max(n, cfg.FanInPublishers+1+2)
		case "idle":
			n = max(n, cfg.IdleConns)
		}
	}
	return n
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// describe is one line for the report's header.
func (p *Pinning) describe() string {
	if p.Enabled {
		return fmt.Sprintf("pinned with taskset: brokers on CPU %s, harness on CPU %s", p.BrokerCPUs, p.HarnessCPUs)
	}
	return p.Note
}
