package compare

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestJudgeStep(t *testing.T) {
	const ideal = 2 * time.Second
	ok := Delivery{OfferedRate: 1000, Sent: 2000, Expected: 2000, Delivered: 2000, PublishSeconds: 1.99, Seconds: 2.0}
	for _, tc := range []struct {
		name string
		edit func(d *Delivery)
		want string
	}{
		{"all in time", func(*Delivery) {}, "ok"},
		{"99.9 % delivered is enough", func(d *Delivery) { d.Expected, d.Delivered = 10000, 9990 }, "ok"},
		{"below 99.9 %", func(d *Delivery) { d.Expected, d.Delivered = 10000, 9989 }, "lost"},
		{"a little late, within 5 % + 20 ms", func(d *Delivery) { d.PublishSeconds = 2.1 }, "ok"},
		{"publishers late, harness busy", func(d *Delivery) { d.PublishSeconds, d.HarnessBound = 2.2, true }, "harness-bound"},
		{"publishers late, harness idle", func(d *Delivery) { d.PublishSeconds = 2.2 }, "pushed back"},
		{"deliveries late", func(d *Delivery) { d.Seconds = 2.3 }, "late"},
		{"loss while the harness was saturated", func(d *Delivery) { d.Delivered, d.HarnessBound = 1000, true }, "lost"},
		{"a subscriber dropped", func(d *Delivery) { d.Disconnected = 1 }, "disconnected"},
		{"publish error", func(d *Delivery) { d.Error = "publish: broken pipe" }, "error"},
	} {
		d := ok
		tc.edit(&d)
		judgeStep(&d, ideal)
		if d.Verdict != tc.want || d.Sustained != (tc.want == "ok") {
			t.Errorf("%s: verdict %q sustained %v, want %q", tc.name, d.Verdict, d.Sustained, tc.want)
		}
	}
}

func TestLadderLimit(t *testing.T) {
	rates := []int{10, 20, 30}
	ok := Delivery{Sustained: true}
	for _, tc := range []struct {
		steps []Delivery
		err   error
		want  string
	}{
		{nil, nil, ""},
		{[]Delivery{ok, ok, ok}, nil, "top"},
		{[]Delivery{ok, {Verdict: "lost"}}, nil, "broker"},
		{[]Delivery{ok, {Verdict: "harness-bound", HarnessBound: true}}, nil, "harness"},
		{[]Delivery{ok, {Verdict: "lost", HarnessBound: true}}, nil, "harness"},
		{[]Delivery{ok}, errors.New("context canceled"), ""},
	} {
		if got := ladderLimit(tc.steps, rates, tc.err); got != tc.want {
			t.Errorf("%+v (err %v): %q, want %q", tc.steps, tc.err, got, tc.want)
		}
	}
}

// A synthetic run in which NATS's fan-in ladder ended because the harness
// could not offer the next step: the table marks the figure and its
// ratios [H], the ladder shows achieved vs offered per step, the goal says
// it is no verdict and the notes explain.
func TestTablesMarkHarnessBoundFigures(t *testing.T) {
	cfg := DefaultConfig()
	cfg.FanInRates = []int{500000, 1000000, 1500000}
	cfg.Scenarios = []string{"fanin", "loaded"}
	step := func(rate int, sent float64, verdict string, hb bool) Delivery {
		return Delivery{OfferedRate: rate, Publishers: 200, Subscribers: 1, Sent: int64(2 * rate), Expected: int64(2 * rate),
			Delivered: int64(2 * rate), SentPerSecond: sent, AchievedPercent: 100 * sent / float64(rate), DeliveredPerSecond: sent,
			BrokerCPUs: 1, HarnessCPUs: 1, BrokerCPUPercent: 40, HarnessCPUPercent: 60, HarnessBound: hb,
			Sustained: verdict == "ok", Verdict: verdict, P99Ms: 1, ServerCPUSeconds: 1}
	}
	gcSteps := []Delivery{step(500000, 500000, "ok", false), step(1000000, 700000, "pushed back", false)}
	natsSteps := []Delivery{step(500000, 500000, "ok", false), step(1000000, 1000000, "ok", false), step(1500000, 1100000, "harness-bound", true)}
	natsSteps[2].HarnessCPUPercent = 99
	lat := Delivery{Sent: 5000, Expected: 5000, Delivered: 5000, P50Ms: 0.1, P99Ms: 0.3, P999Ms: 0.5, MaxMs: 1, BrokerCPUs: 1, HarnessCPUs: 1}
	load := Delivery{OfferedRate: 250000, SentPerSecond: 250000, Sent: 1000, Expected: 1000, Delivered: 1000}
	rep := &Report{Config: cfg, Host: Host{HarnessCPUs: "0", Pinning: &Pinning{Enabled: true, BrokerCPUs: "1", HarnessCPUs: "0"}},
		Brokers: []*BrokerResult{
			{Broker: "gatecast", FanInSteps: gcSteps, FanInBest: &gcSteps[0], FanInLimit: "broker", LoadedLatency: &lat, LoadedFanIn: &load},
			{Broker: "mosquitto"},
			{Broker: "nats", FanInSteps: natsSteps, FanInBest: &natsSteps[1], FanInLimit: "harness", LoadedLatency: &lat, LoadedFanIn: &load},
		}}
	var out bytes.Buffer
	WriteTables(&out, rep)
	s := out.String()
	for _, want := range []string{
		"1,000,000 [H]",      // NATS's sustained rate: the harness's ceiling
		"0.50× [H]",          // and every ratio computed from it
		"harness [H]",        // what ended NATS's ladder
		"broker",             // what ended Gatecast's
		"gatecast/best peer", // the ratio to the better peer
		"Fan-in ladder, 2s per step",
		"1.10 M (73 %) 100.0 % harness-bound [H]",
		"700 k (70 %) 100.0 % pushed back",
		"[H] harness-bound: the harness used ≥ 95 % of its CPUs (CPU 0)",
		// NATS does at least 1 M: Gatecast's 0.5 M is below 2× whatever
		// the harness hid, so the verdict stands.
		"NOT MET: gatecast 500,000, better peer nats 1,000,000 [H] (0.50×)\n",
		"nats fan-in: the ladder ended at 1,500,000 msg/s offered (1.10 M/s sent, harness-bound) with the harness at 99 % of its CPUs",
		"Latency under load: 1 → 1 at 1,000 msg/s, 5,000 messages, while 200 publishers → 1 subscriber run at 50 %",
		"background fan-in: offered, msg/s",
		"250,000",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("tables lack %q:\n%s", want, s)
		}
	}
	// Gatecast's own figure is not harness-bound.
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "sustained: highest offered rate") && strings.Contains(line, "500,000 [H]") {
			t.Errorf("Gatecast's sustained rate marked harness-bound: %s", line)
		}
	}
}

func TestLoadedNeedsTheFanInLadderFirst(t *testing.T) {
	cfg := DefaultConfig()
	for _, tc := range []struct {
		scenarios []string
		share     float64
		bad       bool
	}{
		{[]string{"fanin", "loaded"}, 0.5, false},
		{[]string{"fanin", "latency", "loaded"}, 1, false},
		{[]string{"loaded", "fanin"}, 0.5, true},
		{[]string{"loaded"}, 0.5, true},
		{[]string{"fanin", "loaded"}, 0, true},
		{[]string{"fanin", "loaded"}, 1.01, true},
	} {
		c := cfg
		c.Scenarios, c.LoadShare = tc.scenarios, tc.share
		if err := c.Validate(); (err != nil) != tc.bad {
			t.Errorf("%v share %v: %v", tc.scenarios, tc.share, err)
		}
	}
	c := cfg
	c.Scenarios, c.FanInRates = []string{"fanin", "loaded"}, nil
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "loaded needs fanin") {
		t.Errorf("no ladder: %v", err)
	}
	if got := maxConns(Config{Scenarios: []string{"fanin", "loaded"}, FanInPublishers: 200}); got != 203 {
		t.Errorf("maxConns %d, want 203 (200 publishers, their subscriber, the 1→1 pair)", got)
	}
}
