package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatecast/gatecast/server"
)

// attackOptions are the options of a brief hostile run against n (a broker
// in this process: its RSS is this test's).
func attackOptions(n *server.Node) AttackOptions {
	return AttackOptions{
		URL:       "ws://" + n.WSAddr() + "/ws/brocker/",
		AdminURL:  "http://" + n.AdminAddr(),
		AdminKey:  n.AdminKey(),
		BrokerPID: os.Getpid(),
		Timeout:   90 * time.Second,
		// The ceilings must not fire on a test process.
		RSSCeiling: 8 << 30,
		FDCeiling:  18000,
	}
}

// checkAttackReport asserts what every report carries.
func checkAttackReport(t *testing.T, rep *AttackReport, scenario string) {
	t.Helper()
	if rep == nil {
		t.Fatal("no report")
	}
	if rep.Scenario != scenario || rep.Seconds <= 0 || rep.Aborted != "" {
		t.Errorf("report %s: %.1f s, aborted %q", rep.Scenario, rep.Seconds, rep.Aborted)
	}
	b := rep.Broker
	if b == nil || b.RSSStart <= 0 || b.RSSPeak < b.RSSStart || b.RSSEnd <= 0 || b.FDsPeak <= 0 || b.RSSCeilingHit || b.FDCeilingHit {
		t.Errorf("broker %+v", b)
	}
	if len(rep.Series) == 0 {
		t.Error("no series")
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	for _, k := range []string{"scenario", "options", "broker", "errors", "series", scenario} {
		if _, ok := m[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
	if strings.Contains(string(raw), rep.Options.AdminKey) && rep.Options.AdminKey != "" {
		t.Error("the report carries the admin key")
	}
	var table bytes.Buffer
	writeAttackTable(&table, rep)
	if !strings.Contains(table.String(), "broker RSS") {
		t.Errorf("table:\n%s", table.String())
	}
}

// Each hostile scenario runs briefly against a real broker and reports.
// Nothing here asserts a speed: only what the broker must do whatever its
// speed (refuse with 4003, close what it refused, close a disabled
// token's sessions with 4002, deliver authorized publishes).
func TestAttackScenariosAgainstRealNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	n := testNode(t)
	ctx := context.Background()

	t.Run("flood", func(t *testing.T) {
		o := attackOptions(n)
		o.Conns, o.Duration, o.MaxBytes, o.Drain = 2, time.Second, 2<<20, 20*time.Second
		rep, err := RunAttack(ctx, "flood", o)
		if err != nil {
			t.Fatalf("%v (report %+v)", err, rep)
		}
		checkAttackReport(t, rep, "flood")
		f := rep.Flood
		if f.Upgraded != 2 || len(f.Connections) != 2 || f.Written != 2*(2<<20-(2<<20)%6) || f.FrameBytes != 6 {
			t.Fatalf("flood %+v", f)
		}
		// A refused connection ends by the broker's hand, within the
		// drain: its close timeout passes once the 2 MiB are read.
		if f.ClosedByBkr != 2 || f.StillOpen != 0 || f.LifetimeMax <= 0 {
			t.Errorf("flood: closed by the broker %d, still open %d, lifetimes %.2f–%.2f", f.ClosedByBkr, f.StillOpen, f.LifetimeMin, f.LifetimeMax)
		}
		for _, c := range f.Connections {
			// A broker that resets a refused connection may discard the
			// close frame in flight; otherwise it is 4003.
			if c.CloseCode != 4003 && c.EndedBy != endReset && c.ReadEnd != endReset {
				t.Errorf("connection %+v: want 4003 (or a reset)", c)
			}
		}
	})

	t.Run("flood-valid-token", func(t *testing.T) {
		o := attackOptions(n)
		o.Conns, o.Duration, o.MaxBytes, o.ValidToken, o.Frame = 1, time.Second, 1<<20, true, "publish"
		rep, err := RunAttack(ctx, "flood", o)
		if err != nil {
			t.Fatalf("%v (report %+v)", err, rep)
		}
		checkAttackReport(t, rep, "flood")
		c := rep.Flood.Connections[0]
		// A session that may not publish stays open (its publishes are
		// dropped) until our close frame, which the broker answers.
		if !c.Upgraded || c.Written == 0 || c.EndedBy == endClient {
			t.Errorf("valid-token flood: %+v", c)
		}
		if c.CloseCode != 1000 && c.CloseCode != 1008 {
			t.Errorf("valid-token flood closed with %d %q: want 1000 (our close answered) or 1008 (rate limit)", c.CloseCode, c.CloseReason)
		}
	})

	t.Run("tagstorm", func(t *testing.T) {
		o := attackOptions(n)
		o.Loops, o.Tags, o.Witnesses, o.Duration, o.Warmup, o.CloseTimeout = 2, 20, 2, 1500*time.Millisecond, 500*time.Millisecond, 20*time.Second
		rep, err := RunAttack(ctx, "tagstorm", o)
		if err != nil {
			t.Fatalf("%v (report %+v)", err, rep)
		}
		checkAttackReport(t, rep, "tagstorm")
		ts := rep.TagStorm
		if ts.Connects == 0 || ts.Upgraded == 0 || ts.Handshake.Count != ts.Upgraded || ts.StormSecs < 1.5 {
			t.Errorf("storm: %+v", ts)
		}
		if d := ts.Disable; d.Status != 200 || d.Ms <= 0 || d.TokenID == 0 {
			t.Errorf("disable call %+v", d)
		}
		if ts.WitnessesUp != 2 || ts.Witnesses4002 != 2 || ts.WitnessesOpen != 0 {
			t.Errorf("witnesses: %d up, %d got 4002, %d open, other %v", ts.WitnessesUp, ts.Witnesses4002, ts.WitnessesOpen, ts.WitnessesOther)
		}
		if !ts.SessionsGone || ts.SessionsLeft != 0 || ts.SessionsError != "" {
			t.Errorf("sessions after the disable: %d, gone %v, left %d, %s", ts.SessionsAfterDisable, ts.SessionsGone, ts.SessionsLeft, ts.SessionsError)
		}
		if rep.Series[len(rep.Series)-1].Connects == 0 {
			t.Errorf("series without connects: %+v", rep.Series)
		}
	})

	t.Run("grants", func(t *testing.T) {
		o := attackOptions(n)
		// Without --broker-pid: the broker's own /metrics.
		o.BrokerPID = 0
		o.Grants, o.Duration, o.Window, o.Baseline, o.Cleanup, o.BuildConnected = 30, time.Second, 100, true, true, true
		rep, err := RunAttack(ctx, "grants", o)
		if err != nil {
			t.Fatalf("%v (report %+v)", err, rep)
		}
		checkAttackReport(t, rep, "grants")
		if rep.Broker.Source != "metrics" {
			t.Errorf("source %q", rep.Broker.Source)
		}
		g := rep.Grants
		// Adding grants never closes the token's session.
		if g.Build.Built != 30 || g.Build.Put.Count != 30 || len(g.Build.PutMsByTenth) != 10 || g.Build.Seconds <= 0 || !g.Build.Connected || g.Build.HeldSessionClosed != 0 {
			t.Errorf("build %+v", g.Build)
		}
		for _, p := range []*PublishRun{g.Publish, g.Baseline} {
			if p == nil {
				t.Fatal("no publish run")
			}
			if p.Sent == 0 || p.Delivered == 0 || p.Delivered > p.Sent || p.DeliveredPS <= 0 || p.Stalled || p.ClosedCode != 0 {
				t.Errorf("publish %+v", p)
			}
			if p.BrokerAccepted != nil && *p.BrokerAccepted < p.Delivered {
				t.Errorf("broker accepted %d < delivered %d", *p.BrokerAccepted, p.Delivered)
			}
		}
		if g.Publish.Grants != 30 || g.Baseline.Grants != 1 || !strings.HasSuffix(g.Topic, "/g29/data") {
			t.Errorf("grants %d / %d, topic %q", g.Publish.Grants, g.Baseline.Grants, g.Topic)
		}
		if g.Cleanup == nil || g.Cleanup.Deleted != 30 {
			t.Errorf("cleanup %+v", g.Cleanup)
		}
	})

	t.Run("cli", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		o := attackOptions(n)
		t.Setenv("GATECAST_ADMIN_KEY", o.AdminKey)
		code := RunCLI(ctx, []string{"grants", "--url", o.URL, "--admin-url", o.AdminURL, "--grants", "3", "--duration", "300ms", "--quiet"}, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		var rep AttackReport
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || rep.Grants == nil || rep.Grants.Build.Built != 3 {
			t.Fatalf("stdout is not the report: %v\n%s", err, stdout.String())
		}
		if !strings.Contains(stderr.String(), "grants built") || strings.Contains(stderr.String(), "s] grants") {
			t.Errorf("stderr (quiet: the table, no progress):\n%s", stderr.String())
		}
	})
}
