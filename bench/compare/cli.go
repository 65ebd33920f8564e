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
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("gatecast bench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	gatecastBin := fs.String("gatecast", "bin/gatecast", "gatecast binary to start (build it with 'make build')")
	gatecastArgs := fs.String("gatecast-args", "", "extra 'gatecast serve' flags, space-separated (default: none, every setting at its default like the peers)")
	mosquittoBin := fs.String("mosquitto", "", "mosquitto binary (default: found in PATH or /usr/sbin, installed with apt-get when missing)")
	natsBin := fs.String("nats-server", "", "nats-server binary (default: found in PATH or /usr/sbin, installed with apt-get when missing)")
	brokersFlag := fs.String("brokers", "gatecast,mosquitto,nats", "brokers to measure, comma-separated")
	scenarios := fs.String("scenarios", strings.Join(cfg.Scenarios, ","), "scenarios to run, comma-separated: fanout, fanin, latency, idle")
	install := fs.Bool("install", true, "install missing peers with apt-get when running as root")
	jsonPath := fs.String("json", "", "write every figure as JSON to this file")
	workDir := fs.String("work-dir", "", "directory for the brokers' throwaway data, configuration and logs (default: a new temporary directory, removed at the end)")
	keep := fs.Bool("keep", false, "keep the work directory (broker logs) at the end")
	nofile := fs.Uint64("nofile", 20000, "open-file limit (soft RLIMIT_NOFILE) of the harness and of every broker, capped by the hard limit")
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
	fs.IntVar(&cfg.IdleConns, "idle-conns", cfg.IdleConns, "idle connections")
	fs.DurationVar(&cfg.IdleHold, "idle-hold", cfg.IdleHold, "how long the idle connections are held before memory is read")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: gatecast bench compare [flags]

Runs the same scenarios against Gatecast, Mosquitto (MQTT 3.1.1 over WebSocket)
and the NATS server (NATS over WebSocket), each on throwaway instances on random
127.0.0.1 ports, and prints a table per scenario with the ratio Gatecast / peer.`)
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
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "gatecast bench compare:", err)
		return 2
	}
	names := splitList(*brokersFlag)
	if len(names) == 0 {
		fmt.Fprintln(stderr, "gatecast bench compare: --brokers is empty")
		return 2
	}

	limit, err := SetOpenFileLimit(*nofile)
	if err != nil {
		fmt.Fprintln(stderr, "gatecast bench compare: setting the open-file limit:", err)
		return 1
	}
	if need := uint64(maxConns(cfg) + fdHeadroom); need > limit {
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
	for _, n := range names {
		switch {
		case n == "mosquitto" && *mosquittoBin == "":
			need = append(need, "mosquitto")
		case n == "nats" && *natsBin == "":
			need = append(need, "nats-server")
		}
	}
	paths, err := EnsurePeers(ctx, need, *install, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "gatecast bench compare:", err)
		return 1
	}
	var brokers []Broker
	for _, n := range names {
		switch n {
		case "gatecast":
			// Absolute: the broker runs in its own work directory.
			bin, err := filepath.Abs(*gatecastBin)
			if err == nil {
				_, err = os.Stat(bin)
			}
			if err != nil {
				fmt.Fprintf(stderr, "gatecast bench compare: %v (build it with `make build`, or pass --gatecast PATH)\n", err)
				return 1
			}
			brokers = append(brokers, GatecastProcess(bin, dir, strings.Fields(*gatecastArgs)...))
		case "mosquitto":
			bin := *mosquittoBin
			if bin == "" {
				bin = paths["mosquitto"]
			}
			brokers = append(brokers, MosquittoProcess(bin, dir))
		case "nats":
			bin := *natsBin
			if bin == "" {
				bin = paths["nats-server"]
			}
			brokers = append(brokers, NATSProcess(bin, dir))
		default:
			fmt.Fprintf(stderr, "gatecast bench compare: unknown broker %q (gatecast, mosquitto, nats)\n", n)
			return 2
		}
	}

	fmt.Fprintf(stderr, "open-file limit %d for the harness and every broker; %d CPUs\n", limit, host().CPUs)
	rep, runErr := Run(ctx, cfg, brokers, stderr)
	if rep == nil {
		fmt.Fprintln(stderr, "gatecast bench compare:", runErr)
		return 1
	}
	fmt.Fprintf(stdout, "gatecast bench compare — %d CPUs, Linux %s, %s, open-file limit %d, %.0f s, load average %s before, %s after\n",
		rep.Host.CPUs, rep.Host.Kernel, rep.Host.GoVersion, rep.Host.OpenFileLimit, rep.Seconds, rep.Host.LoadBefore, rep.Host.LoadAfter)
	for _, b := range rep.Brokers {
		fmt.Fprintf(stdout, "  %-10s %-5s %s (max open files %d)\n", b.Broker, b.Protocol, b.Version, b.MaxOpenFiles)
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
	for _, b := range rep.Brokers {
		if len(b.Errors) > 0 {
			return 1
		}
	}
	return 0
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
