package compare

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// row is one line of a scenario table: how to read the figure from a
// broker's result and whether more is better. A text row (text set) prints
// words and has no ratio.
type row struct {
	label  string
	higher bool // more is better (false: less is better)
	ratio  bool // print Gatecast / peer
	value  func(r *BrokerResult) (float64, bool)
	format func(float64) string
	// neutral: printed for reading, not ranking (no ↑/↓).
	neutral bool
	// bound reports a harness-bound figure: marked [H] in the table.
	bound func(r *BrokerResult) bool
	text  func(r *BrokerResult) (string, bool)
}

// harnessMark follows a harness-bound figure.
const harnessMark = " [H]"

func fromDelivery(get func(r *BrokerResult) *Delivery, f func(d *Delivery) float64) func(r *BrokerResult) (float64, bool) {
	return func(r *BrokerResult) (float64, bool) {
		d := get(r)
		if d == nil {
			return 0, false
		}
		return f(d), true
	}
}

// boundOf marks a figure harness-bound when the run it comes from was.
func boundOf(get func(r *BrokerResult) *Delivery) func(r *BrokerResult) bool {
	return func(r *BrokerResult) bool {
		d := get(r)
		return d != nil && d.HarnessBound
	}
}

func fanOutBest(r *BrokerResult) *Delivery      { return r.FanOutBest }
func fanOutBurstOf(r *BrokerResult) *Delivery   { return r.FanOutBurst }
func fanInBest(r *BrokerResult) *Delivery       { return r.FanInBest }
func fanInBurstOf(r *BrokerResult) *Delivery    { return r.FanInBurst }
func latencyOf(r *BrokerResult) *Delivery       { return r.Latency }
func loadedLatencyOf(r *BrokerResult) *Delivery { return r.LoadedLatency }
func loadedFanInOf(r *BrokerResult) *Delivery   { return r.LoadedFanIn }
func fanOutLimitOf(r *BrokerResult) string      { return r.FanOutLimit }
func fanInLimitOf(r *BrokerResult) string       { return r.FanInLimit }
func brokerCPUPercent(d *Delivery) float64      { return d.BrokerCPUPercent }
func harnessCPUPercent(d *Delivery) float64     { return d.HarnessCPUPercent }
func deliveredPercent(d *Delivery) float64      { return 100 - d.LossPercent }
func p50(d *Delivery) float64                   { return d.P50Ms }
func p99(d *Delivery) float64                   { return d.P99Ms }
func p999(d *Delivery) float64                  { return d.P999Ms }
func maxLatency(d *Delivery) float64            { return d.MaxMs }
func offeredRate(d *Delivery) float64           { return float64(d.OfferedRate) }
func sentRate(d *Delivery) float64              { return d.SentPerSecond }
func deliveredRate(d *Delivery) float64         { return d.DeliveredPerSecond }
func disconnected(d *Delivery) float64          { return float64(d.Disconnected) }
func bothBound(a, b func(*BrokerResult) bool) func(*BrokerResult) bool {
	return func(r *BrokerResult) bool { return a(r) || b(r) }
}

// cpuPer is broker CPU per expected delivery (sent × subscribers): a
// broker that drops has still received and routed every message, so
// dividing by what it delivered would make dropping look expensive.
func cpuPer(d *Delivery) float64 {
	if d.Expected == 0 {
		return 0
	}
	return d.ServerCPUSeconds / float64(d.Expected) * 1e6
}

// limitText words what ended a ladder.
func limitText(limit func(*BrokerResult) string) func(r *BrokerResult) (string, bool) {
	return func(r *BrokerResult) (string, bool) {
		switch limit(r) {
		case "broker":
			return "broker", true
		case "harness":
			return "harness" + harnessMark, true
		case "top":
			return "top of ladder (≥)", true
		}
		return "", false
	}
}

func deliveryRows(best, burst func(*BrokerResult) *Delivery, limit func(*BrokerResult) string, unit string) []row {
	// The sustained figures are the harness's ceiling when the step after
	// them could not be offered, or when the step itself saturated it.
	sustainedBound := bothBound(func(r *BrokerResult) bool { return limit(r) == "harness" }, boundOf(best))
	return []row{
		{label: "sustained: highest offered rate kept up, msg/s", higher: true, ratio: true, value: fromDelivery(best, offeredRate), format: integer, bound: sustainedBound},
		{neutral: true, label: "sustained: sent by the publishers at that rate, msg/s", value: fromDelivery(best, sentRate), format: integer},
		{label: "sustained: " + unit + "/s at that rate", higher: true, ratio: true, value: fromDelivery(best, deliveredRate), format: integer, bound: sustainedBound},
		{label: "sustained: p99 latency at that rate, ms", ratio: true, value: fromDelivery(best, p99), format: millis},
		{label: "sustained: broker CPU µs per expected delivery", ratio: true, value: fromDelivery(best, cpuPer), format: micros},
		{neutral: true, label: "sustained: broker CPU, % of its CPUs", value: fromDelivery(best, brokerCPUPercent), format: percent0},
		{neutral: true, label: "sustained: harness CPU, % of its CPUs", value: fromDelivery(best, harnessCPUPercent), format: percent0},
		{label: "sustained: the ladder was ended by", text: limitText(limit)},
		{label: "burst (as fast as possible): " + unit + "/s", higher: true, ratio: true, value: fromDelivery(burst, deliveredRate), format: integer, bound: boundOf(burst)},
		{label: "burst: delivered, % of expected", higher: true, value: fromDelivery(burst, deliveredPercent), format: percent},
		{label: "burst: p50 latency, ms", ratio: true, value: fromDelivery(burst, p50), format: millis},
		{label: "burst: p99 latency, ms", ratio: true, value: fromDelivery(burst, p99), format: millis},
		{label: "burst: subscribers disconnected", value: fromDelivery(burst, disconnected), format: integer},
		{label: "burst: broker CPU µs per expected delivery", ratio: true, value: fromDelivery(burst, cpuPer), format: micros, bound: boundOf(burst)},
		{neutral: true, label: "burst: broker CPU, % of its CPUs", value: fromDelivery(burst, brokerCPUPercent), format: percent0},
		{neutral: true, label: "burst: harness CPU, % of its CPUs", value: fromDelivery(burst, harnessCPUPercent), format: percent0},
	}
}

// latencyRows are the rows of a 1→1 stream.
func latencyRows(get func(*BrokerResult) *Delivery) []row {
	b := boundOf(get)
	return []row{
		{label: "p50, ms", ratio: true, value: fromDelivery(get, p50), format: millis, bound: b},
		{label: "p99, ms", ratio: true, value: fromDelivery(get, p99), format: millis, bound: b},
		{label: "p99.9, ms", ratio: true, value: fromDelivery(get, p999), format: millis, bound: b},
		{label: "max, ms", ratio: true, value: fromDelivery(get, maxLatency), format: millis, bound: b},
		{label: "delivered, % of sent", higher: true, value: fromDelivery(get, deliveredPercent), format: percent},
		{neutral: true, label: "broker CPU, % of its CPUs", value: fromDelivery(get, brokerCPUPercent), format: percent0},
		{neutral: true, label: "harness CPU, % of its CPUs", value: fromDelivery(get, harnessCPUPercent), format: percent0},
	}
}

func integer(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func millis(v float64) string   { return strconv.FormatFloat(v, 'f', 2, 64) }
func micros(v float64) string   { return strconv.FormatFloat(v, 'f', 2, 64) }
func percent(v float64) string  { return strconv.FormatFloat(v, 'f', 2, 64) + " %" }
func percent0(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) + " %" }

// si prints a rate compactly: 1.23 M, 456 k, 789.
func si(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + " M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + " k"
	default:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
}

type section struct {
	title string
	need  string // the scenario that fills it
	rows  []row
	// ladder, for a ladder's scenario: its steps per broker, printed
	// after the table.
	ladder      func(r *BrokerResult) []Delivery
	ladderRates []int
	ladderName  string
}

func sections(cfg Config) []section {
	idle := func(f func(i *Idle) float64) func(r *BrokerResult) (float64, bool) {
		return func(r *BrokerResult) (float64, bool) {
			if r.Idle == nil {
				return 0, false
			}
			return f(r.Idle), true
		}
	}
	loadedRows := []row{
		{neutral: true, label: "background fan-in: offered, msg/s", value: fromDelivery(loadedFanInOf, offeredRate), format: integer},
		{neutral: true, label: "background fan-in: sent by the publishers, msg/s", value: fromDelivery(loadedFanInOf, sentRate), format: integer, bound: boundOf(loadedFanInOf)},
		{neutral: true, label: "background fan-in: delivered, % of expected", value: fromDelivery(loadedFanInOf, deliveredPercent), format: percent},
	}
	loadedRows = append(loadedRows, latencyRows(loadedLatencyOf)...)
	return []section{
		{title: fmt.Sprintf("Fan-out: 1 publisher → %s subscribers of one topic, %d-byte messages", integer(float64(cfg.FanOutSubscribers)), cfg.Size),
			need: "fanout", rows: deliveryRows(fanOutBest, fanOutBurstOf, fanOutLimitOf, "deliveries"),
			ladder: func(r *BrokerResult) []Delivery { return r.FanOutSteps }, ladderRates: cfg.FanOutRates, ladderName: "Fan-out"},
		{title: fmt.Sprintf("Fan-in: %s publishers → 1 subscriber (wildcard), %d-byte messages", integer(float64(cfg.FanInPublishers)), cfg.Size),
			need: "fanin", rows: deliveryRows(fanInBest, fanInBurstOf, fanInLimitOf, "messages"),
			ladder: func(r *BrokerResult) []Delivery { return r.FanInSteps }, ladderRates: cfg.FanInRates, ladderName: "Fan-in"},
		{title: fmt.Sprintf("Latency: 1 → 1 at %s msg/s, %s messages of %d bytes", integer(float64(cfg.LatencyRate)), integer(float64(cfg.LatencyMessages)), cfg.Size),
			need: "latency", rows: latencyRows(latencyOf)},
		{title: fmt.Sprintf("Latency under load: 1 → 1 at %s msg/s, %s messages, while %s publishers → 1 subscriber run at %s of each broker's sustained fan-in rate",
			integer(float64(cfg.LatencyRate)), integer(float64(cfg.LatencyMessages)), integer(float64(cfg.FanInPublishers)), percent0(100*cfg.LoadShare)),
			need: "loaded", rows: loadedRows},
		{title: fmt.Sprintf("Idle: %s connections, one subscription each, held %v", integer(float64(cfg.IdleConns)), cfg.IdleHold),
			need: "idle", rows: []row{
				{label: "broker RSS per connection, bytes", ratio: true, value: idle(func(i *Idle) float64 { return i.RSSPerConn }), format: integer},
				{label: "broker RSS with all connected, MiB", ratio: true, value: idle(func(i *Idle) float64 { return float64(i.RSSAfter) / (1 << 20) }),
					format: func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }},
				{label: "connections open at the end", higher: true, value: idle(func(i *Idle) float64 { return float64(i.Open) }), format: integer},
				{neutral: true, label: "broker CPU while connecting and holding, s", value: idle(func(i *Idle) float64 { return i.ServerCPUSeconds }), format: millis},
				{neutral: true, label: "harness CPU while connecting and holding, s", value: idle(func(i *Idle) float64 { return i.HarnessCPUSeconds }), format: millis},
			}},
	}
}

// WriteTables prints one table per scenario run: a column per broker and,
// when Gatecast was measured, a ratio column Gatecast / peer per peer and
// Gatecast / the best peer on that row (for rows where less is better, a
// ratio below 1 is Gatecast ahead). A figure marked [H] is harness-bound.
// The ladders follow their table step by step (offered rate, rate the
// publishers achieved, share delivered, verdict). Then the goals of
// docs/PERFORMANCE.md with met / not met. The MQTT table, when it was run,
// follows the same way with its targets; then every error.
func WriteTables(w io.Writer, rep *Report) {
	if len(rep.Brokers) > 0 {
		writeTable(w, rep, rep.Config, rep.Brokers, "")
		if gc, peers := splitBrokers(rep.Brokers); len(gc) == 1 && gc[0].Broker == "gatecast" && len(peers) > 0 {
			writeGoals(w, rep.Config, gc[0], peers)
		}
	}
	if t := rep.MQTT; t != nil && len(t.Brokers) > 0 {
		fmt.Fprintf(w, "\n=== %s (MQTT 3.1.1, QoS 0, clean sessions): %s ===\n", t.Title, mqttTransports(t.Brokers))
		writeTable(w, rep, t.Config, t.Brokers, mqttTag)
		writeTargets(w, t)
	}
	writeErrors(w, rep)
}

// mqttTag prefixes the MQTT table's section titles and notes.
const mqttTag = "MQTT · "

// isGatecast reports whether a column is one of Gatecast's ("gatecast",
// "gatecast-mqtt-tcp", …): the others are its peers.
func isGatecast(name string) bool { return name == "gatecast" || strings.HasPrefix(name, "gatecast-") }

func splitBrokers(brokers []*BrokerResult) (gc, peers []*BrokerResult) {
	for _, b := range brokers {
		if isGatecast(b.Broker) {
			gc = append(gc, b)
		} else {
			peers = append(peers, b)
		}
	}
	return gc, peers
}

// mqttTransports says how each broker of the MQTT table was reached.
func mqttTransports(brokers []*BrokerResult) string {
	var parts []string
	for _, b := range brokers {
		t := b.Transport
		if t == "" {
			t = "?"
		}
		parts = append(parts, b.Broker+" over "+map[string]string{"tcp": "TCP", "ws": "WebSocket"}[t])
	}
	return strings.Join(parts, ", ")
}

// ratioColumn is one ratio column: Gatecast column gc over peer (nil: the
// best peer on each row).
type ratioColumn struct {
	label string
	gc    *BrokerResult
	peer  *BrokerResult
}

// ratioColumns: with one Gatecast column, one per peer and one for the
// best peer (with two peers or more); with several (the MQTT table), one
// per Gatecast column over the best peer (or the only one).
func ratioColumns(brokers []*BrokerResult) []ratioColumn {
	gcs, peers := splitBrokers(brokers)
	var cols []ratioColumn
	if len(peers) == 0 {
		return nil
	}
	for _, gc := range gcs {
		if len(gcs) == 1 || len(peers) == 1 {
			for _, p := range peers {
				cols = append(cols, ratioColumn{label: gc.Broker + "/" + p.Broker, gc: gc, peer: p})
			}
		}
		if len(peers) > 1 {
			cols = append(cols, ratioColumn{label: gc.Broker + "/best peer", gc: gc})
		}
	}
	return cols
}

// writeTable prints the sections of one table (cfg's scenarios, brokers'
// figures), their titles prefixed with tag.
func writeTable(w io.Writer, rep *Report, cfg Config, brokers []*BrokerResult, tag string) {
	ran := map[string]bool{}
	for _, s := range cfg.Scenarios {
		ran[s] = true
	}
	_, peers := splitBrokers(brokers)
	cols := ratioColumns(brokers)
	for _, sec := range sections(cfg) {
		if !ran[sec.need] {
			continue
		}
		fmt.Fprintf(w, "\n%s%s\n", tag, sec.title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "\t")
		for _, b := range brokers {
			fmt.Fprintf(tw, "%s\t", b.Broker)
		}
		for _, c := range cols {
			fmt.Fprintf(tw, "%s\t", c.label)
		}
		fmt.Fprintln(tw)
		marked := false
		for _, r := range sec.rows {
			mark := "↓"
			if r.higher {
				mark = "↑"
			}
			if r.text != nil || r.neutral {
				mark = " "
			}
			fmt.Fprintf(tw, "%s %s\t", r.label, mark)
			for _, b := range brokers {
				cell := "—"
				if r.text != nil {
					if t, ok := r.text(b); ok {
						cell = t
					}
				} else if v, ok := r.value(b); ok {
					cell = r.format(v)
					if r.bound != nil && r.bound(b) {
						cell += harnessMark
					}
				}
				marked = marked || strings.HasSuffix(cell, harnessMark)
				fmt.Fprintf(tw, "%s\t", cell)
			}
			for _, c := range cols {
				p := c.peer
				if p == nil {
					p = bestPeer(r, peers)
				}
				fmt.Fprintf(tw, "%s\t", ratio(r, c.gc, p))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
		if sec.ladder != nil {
			marked = writeLadder(w, cfg, brokers, sec) || marked
		}
		if marked {
			fmt.Fprintf(w, "  [H] harness-bound: the harness used ≥ %.0f %% of its CPUs (%s) during that run, so the figure is the harness's ceiling, not the broker's\n",
				100*harnessBoundShare, harnessCPUsOf(rep))
		}
	}
}

func harnessCPUsOf(rep *Report) string {
	if rep.Host.HarnessCPUs == "" {
		return "?"
	}
	if rep.Host.Pinning != nil && !rep.Host.Pinning.Enabled {
		return rep.Host.HarnessCPUs + ", unpinned: shared with the broker"
	}
	return "CPU " + rep.Host.HarnessCPUs
}

// bestPeer is the peer with the better figure on r, nil if none has one.
func bestPeer(r row, peers []*BrokerResult) *BrokerResult {
	if !r.ratio {
		return nil
	}
	var best *BrokerResult
	bv := 0.0
	for _, p := range peers {
		v, ok := r.value(p)
		if !ok {
			continue
		}
		if best == nil || (r.higher && v > bv) || (!r.higher && v < bv) {
			best, bv = p, v
		}
	}
	return best
}

func ratio(r row, gc, peer *BrokerResult) string {
	if !r.ratio || r.value == nil {
		return ""
	}
	if peer == nil {
		return "—"
	}
	a, ok1 := r.value(gc)
	b, ok2 := r.value(peer)
	if !ok1 || !ok2 || b == 0 {
		return "—"
	}
	s := strconv.FormatFloat(a/b, 'f', 2, 64) + "×"
	if r.bound != nil && (r.bound(gc) || r.bound(peer)) {
		s += harnessMark
	}
	return s
}

// writeLadder prints a ladder step by step: for each offered rate, per
// broker, the rate the publishers achieved (and its share of the offered
// one), the share delivered and the verdict. It reports whether it printed
// a harness-bound step.
func writeLadder(w io.Writer, cfg Config, brokers []*BrokerResult, sec section) bool {
	any := false
	for _, b := range brokers {
		any = any || len(sec.ladder(b)) > 0
	}
	if !any {
		return false
	}
	fmt.Fprintf(w, "%s ladder, %v per step: sent/s achieved by the publishers (%% of offered), delivered %% of expected, verdict\n", sec.ladderName, cfg.Step)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "offered msg/s\t")
	for _, b := range brokers {
		fmt.Fprintf(tw, "%s\t", b.Broker)
	}
	fmt.Fprintln(tw)
	marked := false
	for _, rate := range sec.ladderRates {
		cells := make([]string, len(brokers))
		ran := false
		for i, b := range brokers {
			cells[i] = "—"
			for _, d := range sec.ladder(b) {
				if d.OfferedRate == rate {
					cells[i] = stepCell(d)
					ran = true
					marked = marked || d.HarnessBound
				}
			}
		}
		if !ran {
			continue
		}
		fmt.Fprintf(tw, "%s\t", integer(float64(rate)))
		for _, c := range cells {
			fmt.Fprintf(tw, "%s\t", c)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	return marked
}

func stepCell(d Delivery) string {
	s := fmt.Sprintf("%s (%.0f %%) %s %s", si(d.SentPerSecond), d.AchievedPercent, strconv.FormatFloat(100-d.LossPercent, 'f', 1, 64)+" %", d.Verdict)
	if d.HarnessBound && d.Verdict != "harness-bound" {
		s += harnessMark
	} else if d.Verdict == "harness-bound" {
		s = strings.TrimSuffix(s, "harness-bound") + "harness-bound" + harnessMark
	}
	return s
}

// writeGoals checks the goals of docs/PERFORMANCE.md: at least 2× the
// better peer on fan-out deliveries/s and fan-in messages/s, a lower p99
// latency and less memory per idle connection than the better peer. A
// verdict on a harness-bound figure says so.
func writeGoals(w io.Writer, cfg Config, gc *BrokerResult, peers []*BrokerResult) {
	type goal struct {
		need, label string
		higher      bool
		factor      float64
		value       func(r *BrokerResult) (float64, bool)
		bound       func(r *BrokerResult) bool
	}
	never := func(*BrokerResult) bool { return false }
	fanOutSust := bothBound(func(r *BrokerResult) bool { return r.FanOutLimit == "harness" }, boundOf(fanOutBest))
	fanInSust := bothBound(func(r *BrokerResult) bool { return r.FanInLimit == "harness" }, boundOf(fanInBest))
	goals := []goal{
		{"fanout", "fan-out deliveries/s, sustained ≥ 2× the better peer", true, 2, fromDelivery(fanOutBest, deliveredRate), fanOutSust},
		{"fanout", "fan-out deliveries/s, burst ≥ 2× the better peer", true, 2, fromDelivery(fanOutBurstOf, deliveredRate), boundOf(fanOutBurstOf)},
		{"fanin", "fan-in messages/s, sustained ≥ 2× the better peer", true, 2, fromDelivery(fanInBest, deliveredRate), fanInSust},
		{"fanin", "fan-in messages/s, burst ≥ 2× the better peer", true, 2, fromDelivery(fanInBurstOf, deliveredRate), boundOf(fanInBurstOf)},
		{"latency", "1→1 p99 latency lower than the better peer", false, 1, fromDelivery(latencyOf, p99), boundOf(latencyOf)},
		{"idle", "RSS per idle connection lower than the better peer", false, 1, func(r *BrokerResult) (float64, bool) {
			if r.Idle == nil {
				return 0, false
			}
			return r.Idle.RSSPerConn, true
		}, never},
	}
	ran := map[string]bool{}
	for _, s := range cfg.Scenarios {
		ran[s] = true
	}
	fmt.Fprintln(w, "\nGoals (docs/PERFORMANCE.md)")
	for _, g := range goals {
		if !ran[g.need] {
			continue
		}
		v, ok := g.value(gc)
		var bestP *BrokerResult
		bestVal, have := 0.0, false
		for _, p := range peers {
			pv, ok := g.value(p)
			if !ok {
				continue
			}
			if !have || (g.higher && pv > bestVal) || (!g.higher && pv < bestVal) {
				bestP, bestVal, have = p, pv, true
			}
		}
		status := "not measured"
		detail := ""
		if ok && have {
			if g.higher {
				status = "NOT MET"
				if v >= g.factor*bestVal {
					status = "met"
				}
			} else {
				status = "NOT MET"
				if v < bestVal {
					status = "met"
				}
			}
			r := "—"
			if bestVal != 0 {
				r = strconv.FormatFloat(v/bestVal, 'f', 2, 64) + "×"
			}
			gm, pm := "", ""
			if g.bound(gc) {
				gm = harnessMark
			}
			if g.bound(bestP) {
				pm = harnessMark
			}
			detail = fmt.Sprintf(": gatecast %s%s, better peer %s %s%s (%s)", trim(v), gm, bestP.Broker, trim(bestVal), pm, r)
			// A harness-bound figure is a lower bound of what that broker
			// can do: a verdict still holds when the other side's bound
			// cannot change it.
			definite := (gm == "" && pm == "") ||
				(g.higher && ((status == "met" && pm == "") || (status == "NOT MET" && gm == "")))
			if !definite {
				detail += ", harness-bound: not a verdict on the brokers"
			}
		}
		fmt.Fprintf(w, "  %-56s %s%s\n", g.label, status, detail)
	}
}

func trim(v float64) string {
	if v >= 100 {
		return integer(v)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func writeErrors(w io.Writer, rep *Report) {
	var lines []string
	if p := rep.Host.Pinning; p != nil && !p.Enabled && p.Note != "" {
		lines = append(lines, "  "+p.Note+": harness-bound figures cannot be told from broker-bound ones")
	}
	for _, b := range rep.Brokers {
		lines = append(lines, brokerNotes("", b)...)
	}
	if rep.MQTT != nil {
		for _, b := range rep.MQTT.Brokers {
			lines = append(lines, brokerNotes(mqttTag, b)...)
		}
	}
	if len(lines) == 0 {
		return
	}
	sort.Strings(lines)
	fmt.Fprintln(w, "\nNotes")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// brokerNotes are the notes on one broker's figures: its errors and how
// its ladders ended, each line prefixed with tag.
func brokerNotes(tag string, b *BrokerResult) []string {
	var lines []string
	for part, e := range b.Errors {
		lines = append(lines, fmt.Sprintf("  %s%s %s: %s", tag, b.Broker, part, e))
	}
	for _, l := range []struct {
		name  string
		steps []Delivery
		limit string
	}{{"fan-out", b.FanOutSteps, b.FanOutLimit}, {"fan-in", b.FanInSteps, b.FanInLimit}} {
		n := len(l.steps)
		if n == 0 {
			continue
		}
		last := l.steps[n-1]
		switch {
		case n == 1 && !last.Sustained:
			lines = append(lines, fmt.Sprintf("  %s%s %s: first step not kept up (%s), %s msg/s offered: %s",
				tag, b.Broker, l.name, last.Verdict, integer(float64(last.OfferedRate)), deliverySummary(last)))
		case l.limit == "top":
			lines = append(lines, fmt.Sprintf("  %s%s %s: kept up with every step up to %s msg/s: its sustained figures are a lower bound",
				tag, b.Broker, l.name, integer(float64(last.OfferedRate))))
		}
		if l.limit == "harness" {
			lines = append(lines, fmt.Sprintf("  %s%s %s: the ladder ended at %s msg/s offered (%s/s sent, %s) with the harness at %.0f %% of its CPUs: the sustained figure is the harness's ceiling, the broker's may be higher",
				tag, b.Broker, l.name, integer(float64(last.OfferedRate)), si(last.SentPerSecond), last.Verdict, last.HarnessCPUPercent))
		}
	}
	return lines
}
