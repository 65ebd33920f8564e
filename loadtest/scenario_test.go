package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatecast/gatecast/server"
)

// testNode starts a real broker in this process on loopback ports.
func testNode(t *testing.T) *server.Node {
	t.Helper()
	// netpoll's knobs are process-global and meant to be set once, before
	// any connection: set the load client's before the broker's listeners
	// start, not from a worker while the broker is accepting.
	tuneNetpoll()
	cfg := server.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = "127.0.0.1:0"
	cfg.MQTTListen = "127.0.0.1:0"
	cfg.LogLevel = "error"
	n, err := server.Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	return n
}

// smallOptions are the options of a small, fast run against n.
func smallOptions(n *server.Node) Options {
	return Options{
		URL:               "ws://" + n.WSAddr() + "/ws/brocker/",
		AdminURL:          "http://" + n.AdminAddr(),
		AdminKey:          n.AdminKey(),
		Conns:             40,
		Dashboards:        2,
		Tokens:            4,
		Revoke:            1,
		Size:              64,
		Duration:          800 * time.Millisecond,
		Hold:              100 * time.Millisecond,
		Drain:             2 * time.Second,
		Timeout:           45 * time.Second,
		DialConcurrency:   8,
		Workers:           2,
		InProcess:         true,
		SourceIPs:         2,
		Outage:            100 * time.Millisecond,
		ReconnectJitter:   200 * time.Millisecond,
		ReconnectDeadline: 10 * time.Second,
		CloseTimeout:      10 * time.Second,
	}
}

// checkCommon asserts what every clean run reports.
func checkCommon(t *testing.T, r *Report, conns int) {
	t.Helper()
	if r.ErrorsTotal != 0 || len(r.Errors) != 0 {
		t.Errorf("errors: %v", r.Errors)
	}
	c := r.Connections
	if c.Target != conns || c.Connected != int64(conns) || c.Failed != 0 || c.OpenAtEnd != int64(conns) {
		t.Errorf("connections: %+v, want %d", c, conns)
	}
	if c.Handshake.Count < int64(conns) || c.Handshake.P50 <= 0 || c.Handshake.Max < c.Handshake.P99 {
		t.Errorf("handshake latency: %+v", c.Handshake)
	}
	if r.Workers != 2 || r.SourceIPs != 2 {
		t.Errorf("workers %d, source IPs %d", r.Workers, r.SourceIPs)
	}
	if len(r.Series) == 0 {
		t.Fatal("no time series")
	}
	var peak, connects int64
	for i, p := range r.Series {
		if i > 0 && p.T <= r.Series[i-1].T {
			t.Fatalf("series not in order: %+v", r.Series)
		}
		peak = max(peak, p.Conns)
		connects += p.Connects
	}
	if peak != int64(conns) || connects < int64(conns) {
		t.Errorf("series: peak %d conns, %d connects; want %d", peak, connects, conns)
	}
	// The report is JSON with the documented top-level fields.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "connections", "errors", "errors_total", "client", "series", "workers", "source_ips"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
}

func checkTraffic(t *testing.T, name string, tr *TrafficReport, wantExpected func(sent int64) int64) {
	t.Helper()
	if tr == nil {
		t.Fatalf("no %s report", name)
	}
	if tr.Sent == 0 || tr.Expected != wantExpected(tr.Sent) || tr.Delivered != tr.Expected {
		t.Errorf("%s: sent %d, expected %d (want %d), delivered %d", name, tr.Sent, tr.Expected, wantExpected(tr.Sent), tr.Delivered)
	}
	if tr.Lost == nil || *tr.Lost != 0 {
		t.Errorf("%s: lost %v", name, tr.Lost)
	}
	l := tr.Latency
	if l.Count != tr.Delivered || l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.P999 || l.P999 > l.Max {
		t.Errorf("%s latency: %+v (delivered %d)", name, l, tr.Delivered)
	}
}

// Every scenario runs end to end, small, against a real node, with its
// connections spread over two workers (in-process here; the worker process
// path is TestWorkerProcesses).
func TestScenariosAgainstRealNode(t *testing.T) {
	n := testNode(t)
	ctx := context.Background()
	run := func(t *testing.T, scenario string, o Options) *Report {
		t.Helper()
		r, err := Run(ctx, scenario, o)
		if err != nil {
			t.Fatalf("%s: %v (report %+v)", scenario, err, r)
		}
		if r.Scenario != scenario {
			t.Fatalf("scenario %q", r.Scenario)
		}
		return r
	}

	t.Run("connect", func(t *testing.T) {
		o := smallOptions(n)
		o.RampRate = 400
		r := run(t, "connect", o)
		checkCommon(t, r, 40)
		// 40 connections at 400/s take ~0.1 s to ramp.
		if r.Connections.Seconds < 0.05 || r.Connections.PerSecond <= 0 {
			t.Errorf("ramp: %+v", r.Connections)
		}
		if r.Client.Conns != 40 || r.Client.Goroutines == 0 {
			t.Errorf("client: %+v", r.Client)
		}
	})
	t.Run("idle", func(t *testing.T) {
		r := run(t, "idle", smallOptions(n))
		checkCommon(t, r, 40)
		if r.Broker == nil || r.Broker.Goroutines == 0 {
			t.Errorf("broker: %+v", r.Broker)
		}
	})
	t.Run("telemetry", func(t *testing.T) {
		o := smallOptions(n)
		o.Rate = 500
		r := run(t, "telemetry", o)
		checkCommon(t, r, 42)
		// One dashboard per region: each message reaches exactly one.
		checkTraffic(t, "telemetry", r.Telemetry, func(s int64) int64 { return s })
		if r.Commands != nil {
			t.Error("unexpected command report")
		}
	})
	t.Run("telemetry with more dashboards than regions", func(t *testing.T) {
		o := smallOptions(n)
		o.Rate, o.Dashboards, o.Regions, o.Messages = 0, 4, 2, 200
		r := run(t, "telemetry", o)
		checkCommon(t, r, 44)
		checkTraffic(t, "telemetry", r.Telemetry, func(s int64) int64 { return 2 * s })
		if r.Telemetry.Sent != 200 {
			t.Errorf("sent %d of --messages 200", r.Telemetry.Sent)
		}
	})
	t.Run("command", func(t *testing.T) {
		o := smallOptions(n)
		o.Rate = 20
		r := run(t, "command", o)
		checkCommon(t, r, 41)
		checkTraffic(t, "commands", r.Commands, func(s int64) int64 { return 40 * s })
	})
	t.Run("command to one device each", func(t *testing.T) {
		o := smallOptions(n)
		o.Rate, o.CommandTarget = 100, "device"
		r := run(t, "command", o)
		checkCommon(t, r, 41)
		checkTraffic(t, "commands", r.Commands, func(s int64) int64 { return s })
	})
	t.Run("fanout", func(t *testing.T) {
		o := smallOptions(n)
		o.Messages, o.Rate = 10, 1000
		r := run(t, "fanout", o)
		checkCommon(t, r, 41)
		checkTraffic(t, "commands", r.Commands, func(s int64) int64 { return 40 * s })
		if r.Commands.Delivered != 400 {
			t.Errorf("delivered %d, want 400", r.Commands.Delivered)
		}
	})
	t.Run("fanin", func(t *testing.T) {
		o := smallOptions(n)
		o.Messages, o.Rate = 300, 3000
		r := run(t, "fanin", o)
		checkCommon(t, r, 41)
		checkTraffic(t, "telemetry", r.Telemetry, func(s int64) int64 { return s })
		if r.Telemetry.Delivered != 300 {
			t.Errorf("delivered %d, want 300", r.Telemetry.Delivered)
		}
	})
	t.Run("churn", func(t *testing.T) {
		r := run(t, "churn", smallOptions(n))
		checkCommon(t, r, 40)
		c := r.Churn
		if c == nil || c.Dropped != 40 || c.Reconnected != 40 || c.Failed != 0 || c.AllBackSeconds <= 0 || c.SinceDropSeconds < c.AllBackSeconds+0.1 {
			t.Fatalf("churn: %+v", c)
		}
		// Every device connected twice: the ramp and the storm.
		if r.Connections.Handshake.Count != 80 {
			t.Errorf("handshakes %d, want 80", r.Connections.Handshake.Count)
		}
	})
	t.Run("revoke", func(t *testing.T) {
		o := smallOptions(n)
		o.Revoke, o.Rate = 2, 400
		r := run(t, "revoke", o)
		// Devices i with i mod 4 < 2 hold a revoked token: 20 of 40.
		rv := r.Revoke
		if rv == nil || rv.Tokens != 4 || rv.Revoked != 2 || len(rv.AdminCallMs) != 2 {
			t.Fatalf("revoke: %+v", rv)
		}
		if rv.Affected != 20 || rv.Closed != 20 || rv.Closed4002 == nil || *rv.Closed4002 != 20 || rv.Unaffected != 20 || rv.UnaffectedOpen != 20 || rv.UnexpectedCloses != 0 {
			t.Errorf("revoke: %+v", rv)
		}
		if rv.CloseLatency.Count != 20 || rv.AllClosedMs <= 0 || rv.CloseLatency.Max > rv.AllClosedMs+1 {
			t.Errorf("close timing: all %v ms, latency %+v", rv.AllClosedMs, rv.CloseLatency)
		}
		if r.Connections.OpenAtEnd != 22 || r.ErrorsTotal != 0 {
			t.Errorf("open at end %d (want 20 devices + 2 dashboards), errors %v", r.Connections.OpenAtEnd, r.Errors)
		}
		// A seed report is as it was before MQTT fleets: the close code
		// under its old name, no protocol or MQTT sections.
		b, _ := json.Marshal(r)
		if !bytes.Contains(b, []byte(`"closed_with_4002":20`)) || bytes.Contains(b, []byte(`"protocol"`)) || bytes.Contains(b, []byte(`"mqtt"`)) || bytes.Contains(b, []byte(`_0x87"`)) {
			t.Errorf("seed report: %s", b)
		}
		// Traffic kept flowing from the devices that stayed. (A publish
		// in flight as its token is disabled is refused: no exact loss.)
		if tr := r.Telemetry; tr == nil || tr.Sent == 0 || tr.Delivered == 0 || tr.Delivered > tr.Expected || tr.Lost != nil {
			t.Errorf("telemetry: %+v", tr)
		}
	})
	t.Run("mixed", func(t *testing.T) {
		o := smallOptions(n)
		o.Duration = 1500 * time.Millisecond
		o.ChurnFraction = 0.25
		o.CommandRate = 20
		o.Rate = 400
		r := run(t, "mixed", o)
		c, rv := r.Churn, r.Revoke
		if c == nil || c.Dropped == 0 || c.Reconnected != c.Dropped {
			t.Fatalf("churn: %+v", c)
		}
		if rv == nil || rv.Affected != 10 || rv.Closed != 10 || rv.UnaffectedOpen != 30 || rv.UnexpectedCloses != 0 {
			t.Fatalf("revoke: %+v", rv)
		}
		if tr := r.Telemetry; tr == nil || tr.Sent == 0 || tr.Delivered == 0 || tr.Delivered > tr.Expected || tr.Lost != nil {
			t.Errorf("telemetry: %+v", tr)
		}
		if cm := r.Commands; cm == nil || cm.Sent == 0 || cm.Delivered == 0 || cm.Delivered > cm.Expected || cm.Lost != nil {
			t.Errorf("commands: %+v", cm)
		}
		if r.ErrorsTotal != 0 {
			t.Errorf("errors %v", r.Errors)
		}
	})
}

// The worker path for real: the parent re-runs this test binary twice in
// worker mode (TestMain), spreads the fleet over the two processes and
// merges their ticks and histograms.
func TestWorkerProcesses(t *testing.T) {
	n := testNode(t)
	o := smallOptions(n)
	o.InProcess = false
	o.Rate = 400
	var progress, stderr bytes.Buffer
	o.Progress, o.Stderr = &progress, &stderr
	r, err := Run(context.Background(), "telemetry", o)
	if err != nil {
		t.Fatalf("%v\nworker stderr:\n%s", err, stderr.String())
	}
	checkCommon(t, r, 42)
	checkTraffic(t, "telemetry", r.Telemetry, func(s int64) int64 { return s })
	if r.InProcess || r.Client.Conns != 42 || r.Client.HeapStackPerConn <= 0 {
		t.Errorf("client: %+v", r.Client)
	}
	if stderr.Len() != 0 {
		t.Errorf("worker stderr: %s", stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "conns") || !strings.Contains(lines[len(lines)-1], "p99") {
		t.Errorf("progress lines:\n%s", progress.String())
	}
}

// A worker classifies what goes wrong: a refused token is a rejection with
// its close code, a dead port a refused dial.
func TestWorkerClassifiesFailures(t *testing.T) {
	n := testNode(t)
	spec := workerSpec{
		Count: 1, Epoch: time.Now().UnixNano(), URLs: []string{"ws://" + n.WSAddr() + "/ws/brocker/"},
		Devices: 3, DevHi: 3, Regions: 1, DeviceTokens: []string{"not-a-token"},
		Size: 64, DialConcurrency: 2, DialTimeout: 5 * time.Second, HandshakeTimeout: 5 * time.Second,
	}
	// The broker upgrades, then closes with 4003: the handshake succeeded,
	// the connection did not last.
	st := driveWorker(t, spec, command{Op: "connect"}, func(st status) bool { return st.Open == 0 && st.Errors["rejected_4003"] == 3 })
	if st.Connected != 3 || st.Open != 0 || st.Errors["rejected_4003"] != 3 || len(st.Errors) != 1 {
		t.Fatalf("bad token: %+v", st)
	}

	spec.URLs = []string{"ws://" + closedPort(t) + "/ws/brocker/"}
	st = driveWorker(t, spec, command{Op: "connect"}, nil)
	if st.Connected != 0 || st.Failed != 3 || st.Errors["dial_refused"] != 3 || len(st.Errors) != 1 {
		t.Fatalf("closed port: %+v", st)
	}

	st = driveWorker(t, spec, command{Op: "connect", Deadline: time.Now().Add(300 * time.Millisecond).UnixNano()}, nil)
	if st.Connected != 0 || st.Failed != 3 || st.Errors["reconnect_gave_up"] != 3 || st.Errors["dial_refused"] < 6 {
		t.Fatalf("retries until the deadline: %+v", st)
	}
}

// driveWorker runs one in-process worker, sends it c, then asks for its
// counts until settled(status) holds (at most 5 s; nil: at once), and
// returns the last answer.
func driveWorker(t *testing.T, spec workerSpec, c command, settled func(status) bool) status {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runWorker(context.Background(), inR, outW)
		outW.Close()
	}()
	enc := json.NewEncoder(inW)
	if err := enc.Encode(spec); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(outR)
	ask := func(c command) status {
		if err := enc.Encode(c); err != nil {
			t.Fatal(err)
		}
		for {
			var ev event
			if err := dec.Decode(&ev); err != nil {
				t.Fatal(err)
			}
			if ev.Ev == "done" {
				if ev.Err != "" || ev.Seq != c.Seq || ev.Status == nil {
					t.Fatalf("answer %+v", ev)
				}
				return *ev.Status
			}
		}
	}
	c.Seq = 1
	st := ask(c)
	for seq, deadline := 2, time.Now().Add(5*time.Second); settled != nil && !settled(st) && time.Now().Before(deadline); seq++ {
		time.Sleep(10 * time.Millisecond)
		st = ask(command{Op: "counts", Seq: seq})
	}
	if err := enc.Encode(command{Op: "close", Seq: 1000}); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, outR)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return st
}

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestWorkerRefusesBadInput(t *testing.T) {
	for name, in := range map[string]string{
		"no spec":         "",
		"bad spec":        "{not json\n",
		"invalid spec":    `{"Count":1,"URLs":["ws://127.0.0.1:1/"],"Regions":1,"Size":64}` + "\n",
		"bad url":         `{"Count":1,"URLs":["http://x/"],"Regions":1,"Size":64,"DialConcurrency":1,"DialTimeout":1,"HandshakeTimeout":1}` + "\n",
		"too many source": `{"Count":1,"URLs":["ws://127.0.0.1:1/"],"Regions":1,"Size":64,"DialConcurrency":1,"DialTimeout":1,"HandshakeTimeout":1,"SourceIPs":300}` + "\n",
	} {
		if err := runWorker(context.Background(), strings.NewReader(in), io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A bad command is refused with an error answer, not a crash.
	spec := `{"Count":1,"URLs":["ws://127.0.0.1:1/"],"Regions":1,"Size":64,"DialConcurrency":1,"DialTimeout":1000000000,"HandshakeTimeout":1000000000}`
	var out bytes.Buffer
	err := runWorker(context.Background(), strings.NewReader(spec+"\n"+`{"op":"fly","seq":1}`+"\n"+`{"op":"mark","seq":2,"revoked_tokens":[5]}`+"\n"+`{"op":"close","seq":3}`+"\n"), &out)
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	dec := json.NewDecoder(&out)
	for {
		var ev event
		if err := dec.Decode(&ev); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if ev.Ev == "done" {
			errs = append(errs, ev.Err)
		}
	}
	if len(errs) != 3 || !strings.Contains(errs[0], "unknown op") || !strings.Contains(errs[1], "out of range") || errs[2] != "" {
		t.Fatalf("answers: %q", errs)
	}
}

func TestRunRefusesBadOptions(t *testing.T) {
	base := Options{URL: "ws://127.0.0.1:1/ws/brocker/", Conns: 10, Tokens: 4}
	for name, mod := range map[string]func(*Options){
		"revoke all tokens": func(o *Options) { o.Revoke = 4 },
		"negative rate":     func(o *Options) { o.Rate = -1 },
		"bad target":        func(o *Options) { o.CommandTarget = "moon" },
		"churn fraction":    func(o *Options) { o.ChurnFraction = 1.5 },
		"source IPs":        func(o *Options) { o.SourceIPs = 255 },
		"per worker":        func(o *Options) { o.Workers, o.PerWorker = 1, 5 },
		"protocol":          func(o *Options) { o.Protocol = "amqp" },
		"mqtt version":      func(o *Options) { o.Protocol, o.MQTTVersion = protoMQTT, 3 },
		"mqtt keep alive":   func(o *Options) { o.Protocol, o.KeepAlive = protoMQTT, time.Millisecond },
		"mqtt url":          func(o *Options) { o.Protocol, o.MQTTURL = protoMQTT, "ws://127.0.0.1:1/" },
		"mqtt qos":          func(o *Options) { q := 3; o.Protocol, o.CommandQoS = protoMQTT, &q },
	} {
		o := base
		mod(&o)
		if _, err := Run(context.Background(), "revoke", o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Run(context.Background(), "offline", base); err == nil || !strings.Contains(err.Error(), "--protocol mqtt") {
		t.Errorf("offline over seed: %v", err)
	}
	q0 := 0
	mq := base
	mq.Protocol, mq.CommandQoS = protoMQTT, &q0
	if _, err := Run(context.Background(), "offline", mq); err == nil || !strings.Contains(err.Error(), "QoS 0") {
		t.Errorf("offline at QoS 0: %v", err)
	}
	if _, err := Run(context.Background(), "dance", base); err == nil || !strings.Contains(err.Error(), "unknown scenario") {
		t.Errorf("unknown scenario: %v", err)
	}
}

// The command line: flags, JSON on stdout, progress on stderr, the chart.
func TestCLI(t *testing.T) {
	var out, errb bytes.Buffer
	if code := RunCLI(context.Background(), nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "telemetry") {
		t.Fatalf("no scenario: %d %s", code, errb.String())
	}
	errb.Reset()
	if code := RunCLI(context.Background(), []string{"connect", "--no-such-flag"}, &out, &errb); code != 2 {
		t.Fatalf("bad flag: %d", code)
	}
	n := testNode(t)
	chart := filepath.Join(t.TempDir(), "run.svg")
	out.Reset()
	errb.Reset()
	code := RunCLI(context.Background(), []string{"command",
		"--url", "ws://" + n.WSAddr() + "/ws/brocker/", "--admin-url", "http://" + n.AdminAddr(), "--admin-key", n.AdminKey(),
		"--conns", "20", "--duration", "1500ms", "--workers", "2", "--in-process", "--source-ips", "2",
		"--chart", chart,
	}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r Report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, out.String())
	}
	// --rate defaults per scenario: 10 commands/s here.
	if r.Commands == nil || r.Commands.OfferedPerSecond != 10 || r.Commands.Delivered != 20*r.Commands.Sent || r.Commands.Sent == 0 {
		t.Fatalf("commands: %+v", r.Commands)
	}
	if !strings.Contains(errb.String(), "delivered/s") {
		t.Errorf("no progress on stderr: %s", errb.String())
	}
	svg, err := os.ReadFile(chart)
	if err != nil {
		t.Fatal(err)
	}
	checkSVG(t, svg, 2)
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// checkSVG asserts svg is well-formed XML with an <svg> root and at least
// minLines polylines.
func checkSVG(t *testing.T, svg []byte, minLines int) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	root, lines := "", 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "polyline" {
				lines++
			}
		}
	}
	if root != "svg" || lines < minLines {
		t.Fatalf("root %q, %d polylines", root, lines)
	}
}

// An interrupted run (Ctrl-C, --timeout) still stops its workers in order
// and returns what it has: here the context ends while the workers are
// still ramping, so their answer to "connect" comes after the parent gave
// up on it and must be skipped when they are told to close.
func TestInterruptedRun(t *testing.T) {
	n := testNode(t)
	o := smallOptions(n)
	o.RampRate = 4 // 40 connections in 10 s
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Interrupt at the first progress line that shows connections.
	o.Progress = writerFunc(func(p []byte) (int, error) {
		if !bytes.Contains(p, []byte("conns       0 ")) {
			cancel()
		}
		return len(p), nil
	})
	r, err := Run(ctx, "connect", o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if r == nil || r.Connections.Connected != 0 || len(r.Series) == 0 {
		t.Fatalf("report %+v", r)
	}
	var peak int64
	for _, p := range r.Series {
		peak = max(peak, p.Conns)
	}
	if peak == 0 || peak == 40 {
		t.Errorf("peak %d connections: the ramp should have been cut short", peak)
	}
}
