package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

const cliUsage = `Usage: gatecast loadtest SCENARIO [flags]
       gatecast loadtest --scenario SCENARIO [flags]

Simulates a fleet of clients against a running broker and prints a JSON
report on stdout (progress on stderr). Scenarios:

  connect    ramp to --conns devices at --ramp-rate, hold, report connect rate and memory per connection
  idle       like connect, plus the broker's heap per connection from its /metrics
  telemetry  devices publish --rate msg/s in all to their own topics; --dashboards watch regions with wildcards
  command    a commander sends --rate commands/s to the fleet topic (every device) or, with
             --command-target device, to one device after the other
  churn      outage: every device (--churn-fraction) drops its TCP connection at once, then all
             reconnect with jittered backoff; time until all are back
  revoke     telemetry flows while --revoke of --tokens device tokens are disabled through the
             admin API; time until every affected client has its 4002 close frame.
             With --kind KIND (token-delete, token-disable, token-rotate, perm-delete, downgrade,
             tag-edit, tag-delete, limit; a list, or all): --conns sessions (default 2000) each on
             its own topic get one rights change; p50/p99/last of admin call → close frame (or
             refused publish), wrong closes, the broker's gatecast_revocation_seconds
  storm      --conns devices (default 15000), one token each (--tokens-file reuses them), connect
             to --url a,b,c; after "storm: ready" the nodes are restarted (loadtest/scripts/storm.sh)
             and every device reconnects at once: time until all are back, reconnect latency,
             attempts, Redis calls (--redis-addr) and Postgres queries (--pg-dsn) per reconnect
  mixed      telemetry + commands + a churn of --churn-fraction of the devices + a revocation
  fanout     1 publisher → --conns subscribers of one topic (command with the fleet topic)
  fanin      --conns publishers → 1 wildcard subscriber (telemetry with one dashboard)
  offline    MQTT only: --conns devices (default 10000) with persistent sessions drop, one QoS 1
             command per device is published meanwhile, they reconnect: reconnect times, Session
             Present, commands delivered (duplicates, missing), reconnect → command, broker memory

--protocol mqtt runs every fleet scenario with MQTT clients over the broker's MQTT TCP
listener (--mqtt-url, --mqtt-version 4|5): devices subscribe after CONNACK, publish
telemetry at QoS 0, get commands at QoS 1 (answering PUBACK) and send PINGREQ every half
--mqtt-keep-alive; revoke waits for DISCONNECT 0x87 (3.1.1: the close).

Hostile clients (issue 9; their own flags: gatecast loadtest flood --help):

  flood      connections refused with 4003 (or --valid-token) stream small frames; broker RSS,
             how long each refused connection stayed open
  tagstorm   loops connect with 1,100 tags and close at once; the latency of a token disable
  grants     a token with 10,000 grants: time to build them, publish msg/s

Connections are spread over worker processes (--per-worker each) and over
source addresses 127.0.0.1…127.0.0.N (--source-ips). See docs/loadtest.md.

Flags:
`

// RunCLI implements `gatecast loadtest SCENARIO [flags]`.
func RunCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == workerArg {
		return runWorkerProcess(ctx, os.Stdin, stdout, stderr)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, cliUsage)
		newFlagSet("", &Options{}, new(cliExtra), stderr).PrintDefaults()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	scenario, rest, err := scenarioArg(args)
	if err != nil {
		for _, a := range args {
			if a == "-h" || a == "-help" || a == "--help" {
				fmt.Fprint(stderr, cliUsage)
				newFlagSet("", &Options{}, new(cliExtra), stderr).PrintDefaults()
				return 0
			}
		}
		fmt.Fprintln(stderr, "gatecast loadtest:", err)
		return 2
	}
	args = rest
	if isAttack(scenario) {
		return RunAttackCLI(ctx, scenario, args, stdout, stderr)
	}
	var o Options
	var x cliExtra
	fs := newFlagSet(scenario, &o, &x, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "gatecast loadtest: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if x.scenario != "" && x.scenario != scenario {
		fmt.Fprintf(stderr, "gatecast loadtest: two scenarios, %q and --scenario %q\n", scenario, x.scenario)
		return 2
	}
	if o.AdminKey == "" {
		o.AdminKey = os.Getenv("GATECAST_ADMIN_KEY")
	}
	rateSet := false
	fs.Visit(func(f *flag.Flag) { rateSet = rateSet || f.Name == "rate" })
	if !rateSet {
		o.Rate = scenarioDefaults[scenario]
	}
	if x.devices != 0 {
		o.Conns = x.devices
	}
	o.CommandQoS = &x.qos
	if !x.quiet {
		o.Progress = stderr
	}
	o.Stderr = stderr
	if x.kinds != "" {
		if scenario != "revoke" {
			fmt.Fprintln(stderr, "gatecast loadtest: --kind is for the revoke scenario")
			return 2
		}
		return runKinds(ctx, o, x, stdout, stderr)
	}
	rep, err := Run(ctx, scenario, o)
	if rep != nil && rep.Storm != nil {
		writeStormTable(stderr, rep)
	}
	if rep != nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		if x.chart != "" {
			if cerr := writeChartFile(x.chart, rep); cerr != nil {
				fmt.Fprintln(stderr, "gatecast loadtest: chart:", cerr)
				if err == nil {
					return 1
				}
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "gatecast loadtest:", err)
		return 1
	}
	return 0
}

// cliExtra are flags that are not Options.
type cliExtra struct {
	chart    string
	quiet    bool
	devices  int
	qos      int
	scenario string // --scenario, taken out of the arguments by scenarioArg; here for --help
	kinds    string // --kind / --kinds
	floor    bool   // --floor: revoke --kind measures the socket floor first
}

// scenarioArg returns the scenario, named first (`loadtest telemetry
// --conns 10`) or with --scenario anywhere (`loadtest --protocol mqtt
// --scenario offline`), and the remaining arguments.
func scenarioArg(args []string) (string, []string, error) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:], nil
	}
	rest := make([]string, 0, len(args))
	scenario := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "scenario" {
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return "", nil, errors.New("--scenario needs a value")
			}
			i++
			val = args[i]
		}
		scenario = val
	}
	if scenario == "" {
		return "", nil, errors.New("no scenario: gatecast loadtest SCENARIO [flags] or --scenario SCENARIO")
	}
	return scenario, rest, nil
}

func writeChartFile(path string, rep *Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	title := "gatecast loadtest " + rep.Scenario + " — " + rep.Started.Format("2006-01-02 15:04:05Z")
	if err := writeChart(f, title, rep.Series); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newFlagSet(scenario string, o *Options, x *cliExtra, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gatecast loadtest "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, cliUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/ws/brocker/", "broker WebSocket URL; several comma-separated (cluster nodes): connections are spread over them")
	fs.StringVar(&o.AdminURL, "admin-url", "http://127.0.0.1:8081", "broker admin URL (creates and disables tokens, reads /metrics); several comma-separated (cluster nodes): the calls go to the first, /metrics is read from each (revoke --kind), token creations are spread over them (storm)")
	// The environment is read after parsing, so that --help never prints
	// the key as a default.
	fs.StringVar(&o.AdminKey, "admin-key", "", "admin key (default: env GATECAST_ADMIN_KEY)")
	fs.IntVar(&o.Conns, "conns", 0, "devices (fanout: subscribers, fanin: publishers) (default 1000; offline 10000)")
	fs.IntVar(&x.devices, "devices", 0, "same as --conns")
	fs.StringVar(&x.scenario, "scenario", "", "the scenario, instead of naming it first")
	fs.IntVar(&o.Dashboards, "dashboards", 10, "telemetry, revoke, mixed: dashboards, each watching one region's telemetry with a wildcard")
	fs.IntVar(&o.Regions, "regions", 0, "device regions (0: one per dashboard)")
	fs.IntVar(&o.Tokens, "tokens", 10, "device tokens; device i uses token i mod N")
	fs.IntVar(&o.Revoke, "revoke", 1, "revoke, mixed: device tokens disabled under load")
	fs.Float64Var(&o.Rate, "rate", 0, "messages/s offered in all: telemetry (telemetry, fanin, revoke, mixed) or commands (command, fanout); 0 = unpaced (default per scenario: telemetry 1000, fanin 50000, revoke 1000, mixed 1000, command 10, fanout 200, offline unpaced)")
	fs.Float64Var(&o.CommandRate, "command-rate", 0, "mixed: commands/s (default 5)")
	fs.StringVar(&o.CommandTarget, "command-target", "fleet", "command, fanout, mixed: fleet (every device gets each command) or device (one device each, in turn)")
	fs.Int64Var(&o.Messages, "messages", 0, "messages to publish in all, then stop (0: publish for --duration)")
	fs.IntVar(&o.Size, "size", 64, "bytes of each message value (at least 32: it carries the send time)")
	fs.DurationVar(&o.Duration, "duration", 0, "how long traffic flows (default 10s)")
	fs.DurationVar(&o.Hold, "hold", 0, "connect, idle, churn: how long connections are held before measuring or dropping (default 5s)")
	fs.DurationVar(&o.Drain, "drain", 0, "longest wait for in-flight deliveries after publishing stops (default 5s)")
	fs.DurationVar(&o.Timeout, "timeout", 0, "upper bound of the whole run (default 10m)")
	fs.Float64Var(&o.RampRate, "ramp-rate", 0, "connects/s while the fleet connects (0: as fast as --dial-concurrency allows)")
	fs.IntVar(&o.DialConcurrency, "dial-concurrency", 64, "dials in flight per worker")
	fs.DurationVar(&o.DialTimeout, "dial-timeout", 0, "TCP connect timeout (default 10s)")
	fs.DurationVar(&o.HandshakeTimeout, "handshake-timeout", 0, "WebSocket upgrade timeout (default 10s)")
	fs.IntVar(&o.Workers, "workers", 0, "worker processes (0: enough for --per-worker connections each)")
	fs.IntVar(&o.PerWorker, "per-worker", 15000, "connections per worker process at most (each process is capped at 20,000 open files here)")
	fs.BoolVar(&o.InProcess, "in-process", false, "run the workers as goroutines of this process (debugging; the open files cap then applies to the whole fleet)")
	fs.IntVar(&o.SourceIPs, "source-ips", 0, "bind connections to 127.0.0.1…127.0.0.N in turn, ~28k ports each (0: at least 4, at most 10,000 connections each); loopback brokers only")
	fs.Float64Var(&o.ChurnFraction, "churn-fraction", 0, "churn, mixed: share of devices dropped (default: churn 1, mixed 0.1)")
	fs.DurationVar(&o.Outage, "outage", 0, "churn, mixed: pause between the drop and the reconnect storm (default 1s)")
	fs.DurationVar(&o.ReconnectJitter, "reconnect-jitter", 0, "churn, mixed: each device reconnects after a random delay below this (default 2s)")
	fs.DurationVar(&o.ReconnectDeadline, "reconnect-deadline", 0, "churn, mixed: devices stop retrying this long after the storm began (default 1m)")
	fs.DurationVar(&o.CloseTimeout, "close-timeout", 0, "revoke, mixed: longest wait for the close frames (default 30s)")
	fs.StringVar(&o.Protocol, "protocol", "seed", "seed (WebSocket, the seed protocol, --url) or mqtt (MQTT over TCP, --mqtt-url)")
	fs.IntVar(&o.MQTTVersion, "mqtt-version", 5, "mqtt: protocol version, 4 (3.1.1) or 5")
	fs.StringVar(&o.MQTTURL, "mqtt-url", "", "mqtt: the broker's MQTT TCP listener, tcp://host:port; several comma-separated (default: --url's host, port 1883)")
	fs.DurationVar(&o.KeepAlive, "mqtt-keep-alive", 0, "mqtt: CONNECT keep alive; every connection sends PINGREQ each half of it (default 60s)")
	fs.IntVar(&x.qos, "mqtt-command-qos", 1, "mqtt: QoS of the commands and of the devices' command subscriptions: 0, 1 (PUBACK) or 2 (PUBREC, PUBREL, PUBCOMP); telemetry is QoS 0")
	fs.DurationVar(&o.SessionExpiry, "mqtt-session-expiry", 0, "offline: MQTT 5 Session Expiry Interval of the devices' persistent sessions (default 1h; 3.1.1 uses Clean Session 0)")
	fs.StringVar(&x.kinds, "kind", "", "revoke: time one kind of rights change on --conns sessions (default 2000) each on its own topic: "+strings.Join(RevokeKinds, ", ")+"; a comma-separated list or all runs each in turn and prints a table (without it: the classic revoke scenario)")
	fs.StringVar(&x.kinds, "kinds", "", "same as --kind")
	fs.IntVar(&o.Unaffected, "unaffected", 0, "revoke --kind: sessions the change must not touch (default 10% of --conns; -1: none)")
	fs.BoolVar(&x.floor, "floor", true, "revoke --kind: before the first kind, before any worker starts, time one close frame written to each of --conns raw loopback sockets of this process (the machine's floor, printed under the table and in socket_floor; scaled when the open files do not allow 2×--conns)")
	fs.DurationVar(&o.Settle, "settle", 0, "revoke --kind: after the last expected signal, how long to watch for wrong ones (default 300ms)")
	fs.StringVar(&o.Storm.TokensFile, "tokens-file", "", "storm: reuse the device tokens saved in this file (when they still exist on the broker), or save them there; they are then kept at the end")
	fs.StringVar(&o.Storm.ReadyFile, "ready-file", "", "storm: create this file once every device is connected and the reconnects are armed (also printed: \"storm: ready\" on stderr)")
	fs.DurationVar(&o.Storm.Timeout, "storm-timeout", 0, "storm: a device stops retrying this long after its drop (default 60s)")
	fs.DurationVar(&o.Storm.Wait, "storm-wait", 0, "storm: longest wait for the nodes to drop the devices after ready (default 5m)")
	fs.DurationVar(&o.Storm.Quiet, "storm-quiet", 0, "storm: when some devices never drop, the storm is over once none is down and none dropped for this long (default 3s)")
	fs.IntVar(&o.Storm.Attempts, "storm-attempts", 0, "storm: reconnect attempts per device and drop (default 100)")
	fs.DurationVar(&o.Storm.Jitter, "storm-jitter", 0, "storm: delay a device's first reconnect attempt by a random [0, this) (default 0: at once)")
	fs.DurationVar(&o.Storm.Backoff, "storm-backoff", 0, "storm: delay after a failed attempt, doubling per attempt, each drawn from [d/2, d) (default 50ms)")
	fs.DurationVar(&o.Storm.BackoffMax, "storm-backoff-max", 0, "storm: longest delay between attempts (default 1s)")
	fs.IntVar(&o.Storm.Concurrency, "storm-concurrency", 0, "storm: reconnects in flight per worker (default 2000: every device of a worker may be dialing at once, as in a real fleet; --dial-concurrency paces only the first connect)")
	fs.IntVar(&o.Storm.AdminConcurrency, "admin-concurrency", 0, "storm: token creations (and deletions) in flight, spread over the --admin-url list (default 32)")
	fs.IntVar(&o.Storm.TokenLimit, "token-limit", 0, "storm: max_connections of the tokens it creates (0: unlimited)")
	fs.StringVar(&o.Storm.RedisAddrs, "redis-addr", "", "storm: read INFO commandstats of these Redis servers (host:port or redis://[:password@]host:port, comma-separated) before and after the storm")
	fs.StringVar(&o.Storm.PGDSN, "pg-dsn", "", "storm: read pg_stat_database (and pg_stat_statements, created if it can be) of this Postgres database (the broker's --store) before and after the storm")
	fs.DurationVar(&o.Storm.PGStatsDelay, "pg-stats-delay", 11*time.Second, "storm: wait this long after the storm before the last Postgres reading (idle backends report their counts up to 10 s late)")
	fs.DurationVar(&o.Storm.Baseline, "stats-baseline", 0, "storm: idle window before the storm measuring the stores' background rate, subtracted in the net figures (default 2s; negative: none)")
	fs.IntVar(&o.BrokerPID, "broker-pid", 0, "PID of a broker on this machine: report its RSS and CPU from /proc")
	fs.StringVar(&x.chart, "chart", "", "write an SVG chart (connections and p99 latency over time) to this file")
	fs.BoolVar(&x.quiet, "quiet", false, "no progress lines on stderr")
	return fs
}

// runKinds runs `revoke --kind K1,K2…` (or all): one run per kind, each
// with its own sessions, tokens and tags; a line per kind as it ends and a
// table at the end on stderr; the report on stdout (an array of reports
// for more than one kind).
func runKinds(ctx context.Context, o Options, x cliExtra, stdout, stderr io.Writer) int {
	kinds, err := parseKinds(x.kinds)
	if err != nil {
		fmt.Fprintln(stderr, "gatecast loadtest:", err)
		return 2
	}
	var floor *FloorReport
	if x.floor {
		// Before any worker process exists and any session connects: the
		// sockets are closed again before the first kind starts.
		ko := o
		ko.Kind = kinds[0]
		f, err := socketFloor(ctx, ko.withDefaults("revoke").Conns, floorDeadline)
		if err != nil {
			f.Error = err.Error()
		}
		floor = &f
		if o.Progress != nil {
			fmt.Fprintln(o.Progress, floorLine(floor))
		}
	}
	var reps []*Report
	code := 0
	for _, k := range kinds {
		ko := o
		ko.Kind = k
		rep, err := Run(ctx, "revoke", ko)
		if rep != nil {
			rep.SocketFloor = floor
			reps = append(reps, rep)
			if rep.RevKind != nil {
				fmt.Fprintln(stderr, revKindLine(rep.RevKind))
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "gatecast loadtest: revoke --kind %s: %v\n", k, err)
			code = 1
			if ctx.Err() != nil {
				break
			}
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if len(kinds) == 1 && len(reps) == 1 {
		_ = enc.Encode(reps[0])
	} else {
		_ = enc.Encode(reps)
	}
	fmt.Fprintln(stderr)
	writeRevKindTable(stderr, reps)
	if floor != nil {
		// The machine's part, under the broker's figures.
		fmt.Fprintln(stderr, floorLine(floor))
	}
	return code
}
