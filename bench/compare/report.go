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
// broker's result and whether more is better.
type row struct {
	label  string
	higher bool // more is better (false: less is better)
	ratio  bool // print Gatecast / peer
	value  func(r *BrokerResult) (float64, bool)
	format func(float64) string
}

func fromDelivery(get func(r *BrokerResult) *Delivery, f func(d *Delivery) float64) func(r *BrokerResult) (float64, bool) {
	return func(r *BrokerResult) (float64, bool) {
		d := get(r)
		if d == nil {
			return 0, false
		}
		return f(d), true
	}
}

func fanOutBest(r *BrokerResult) *Delivery    { return r.FanOutBest }
func fanOutBurstOf(r *BrokerResult) *Delivery { return r.FanOutBurst }
func fanInBest(r *BrokerResult) *Delivery     { return r.FanInBest }
func fanInBurstOf(r *BrokerResult) *Delivery  { return r.FanInBurst }
func latencyOf(r *BrokerResult) *Delivery     { return r.Latency }

func deliveryRows(best, burst func(*BrokerResult) *Delivery, unit string) []row {
	// CPU per expected delivery (sent × subscribers): a broker that drops
	// has still received and routed every message, so dividing by what it
	// delivered would make dropping look expensive.
	cpuPer := func(d *Delivery) float64 {
		if d.Expected == 0 {
			return 0
		}
		return d.ServerCPUSeconds / float64(d.Expected) * 1e6
	}
	return []row{
		{"sustained: highest offered rate kept up, msg/s", true, true, fromDelivery(best, func(d *Delivery) float64 { return float64(d.OfferedRate) }), integer},
		{"sustained: " + unit + "/s at that rate", true, true, fromDelivery(best, func(d *Delivery) float64 { return d.DeliveredPerSecond }), integer},
		{"sustained: p99 latency at that rate, ms", false, true, fromDelivery(best, func(d *Delivery) float64 { return d.P99Ms }), millis},
		{"burst (as fast as possible): " + unit + "/s", true, true, fromDelivery(burst, func(d *Delivery) float64 { return d.DeliveredPerSecond }), integer},
		{"burst: delivered, % of expected", true, false, fromDelivery(burst, func(d *Delivery) float64 { return 100 - d.LossPercent }), percent},
		{"burst: p50 latency, ms", false, true, fromDelivery(burst, func(d *Delivery) float64 { return d.P50Ms }), millis},
		{"burst: p99 latency, ms", false, true, fromDelivery(burst, func(d *Delivery) float64 { return d.P99Ms }), millis},
		{"burst: subscribers disconnected", false, false, fromDelivery(burst, func(d *Delivery) float64 { return float64(d.Disconnected) }), integer},
		{"burst: broker CPU µs per expected delivery", false, true, fromDelivery(burst, cpuPer), micros},
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

func millis(v float64) string  { return strconv.FormatFloat(v, 'f', 2, 64) }
func micros(v float64) string  { return strconv.FormatFloat(v, 'f', 2, 64) }
func percent(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + " %" }

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
}

func sections(cfg Config) []section {
	return []section{
		{fmt.Sprintf("Fan-out: 1 publisher → %s subscribers of one topic, %d-byte messages", integer(float64(cfg.FanOutSubscribers)), cfg.Size),
			"fanout", deliveryRows(fanOutBest, fanOutBurstOf, "deliveries")},
		{fmt.Sprintf("Fan-in: %s publishers → 1 subscriber (wildcard), %d-byte messages", integer(float64(cfg.FanInPublishers)), cfg.Size),
			"fanin", deliveryRows(fanInBest, fanInBurstOf, "messages")},
		{fmt.Sprintf("Latency: 1 → 1 at %s msg/s, %s messages of %d bytes", integer(float64(cfg.LatencyRate)), integer(float64(cfg.LatencyMessages)), cfg.Size),
			"latency", []row{
				{"p50, ms", false, true, fromDelivery(latencyOf, func(d *Delivery) float64 { return d.P50Ms }), millis},
				{"p99, ms", false, true, fromDelivery(latencyOf, func(d *Delivery) float64 { return d.P99Ms }), millis},
				{"p99.9, ms", false, true, fromDelivery(latencyOf, func(d *Delivery) float64 { return d.P999Ms }), millis},
				{"max, ms", false, true, fromDelivery(latencyOf, func(d *Delivery) float64 { return d.MaxMs }), millis},
				{"delivered, % of sent", true, false, fromDelivery(latencyOf, func(d *Delivery) float64 { return 100 - d.LossPercent }), percent},
			}},
		{fmt.Sprintf("Idle: %s connections, one subscription each, held %v", integer(float64(cfg.IdleConns)), cfg.IdleHold),
			"idle", []row{
				{"broker RSS per connection, bytes", false, true, func(r *BrokerResult) (float64, bool) {
					if r.Idle == nil {
						return 0, false
					}
					return r.Idle.RSSPerConn, true
				}, integer},
				{"broker RSS with all connected, MiB", false, true, func(r *BrokerResult) (float64, bool) {
					if r.Idle == nil {
						return 0, false
					}
					return float64(r.Idle.RSSAfter) / (1 << 20), true
				}, func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }},
				{"connections open at the end", true, false, func(r *BrokerResult) (float64, bool) {
					if r.Idle == nil {
						return 0, false
					}
					return float64(r.Idle.Open), true
				}, integer},
			}},
	}
}

// WriteTables prints one table per scenario run: a column per broker and,
// when Gatecast was measured, a ratio column Gatecast / peer per peer (for
// rows where less is better, a ratio below 1 is Gatecast ahead). Then the
// goals of docs/PERFORMANCE.md with met / not met, and every error.
func WriteTables(w io.Writer, rep *Report) {
	ran := map[string]bool{}
	for _, s := range rep.Config.Scenarios {
		ran[s] = true
	}
	var gc *BrokerResult
	var peers []*BrokerResult
	for _, b := range rep.Brokers {
		if b.Broker == "gatecast" {
			gc = b
		} else {
			peers = append(peers, b)
		}
	}
	for _, sec := range sections(rep.Config) {
		if !ran[sec.need] {
			continue
		}
		fmt.Fprintf(w, "\n%s\n", sec.title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "\t")
		for _, b := range rep.Brokers {
			fmt.Fprintf(tw, "%s\t", b.Broker)
		}
		if gc != nil {
			for _, p := range peers {
				fmt.Fprintf(tw, "gatecast/%s\t", p.Broker)
			}
		}
		fmt.Fprintln(tw)
		for _, r := range sec.rows {
			mark := "↓"
			if r.higher {
				mark = "↑"
			}
			fmt.Fprintf(tw, "%s %s\t", r.label, mark)
			for _, b := range rep.Brokers {
				if v, ok := r.value(b); ok {
					fmt.Fprintf(tw, "%s\t", r.format(v))
				} else {
					fmt.Fprint(tw, "—\t")
				}
			}
			if gc != nil {
				for _, p := range peers {
					fmt.Fprintf(tw, "%s\t", ratio(r, gc, p))
				}
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
	if gc != nil && len(peers) > 0 {
		writeGoals(w, rep, gc, peers)
	}
	writeErrors(w, rep)
}

func ratio(r row, gc, peer *BrokerResult) string {
	if !r.ratio {
		return ""
	}
	a, ok1 := r.value(gc)
	b, ok2 := r.value(peer)
	if !ok1 || !ok2 || b == 0 {
		return "—"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64) + "×"
}

// writeGoals checks the goals of docs/PERFORMANCE.md: at least 2× the
// better peer on fan-out deliveries/s and fan-in messages/s, a lower p99
// latency and less memory per idle connection than the better peer.
func writeGoals(w io.Writer, rep *Report, gc *BrokerResult, peers []*BrokerResult) {
	type goal struct {
		need, label string
		higher      bool
		factor      float64
		value       func(r *BrokerResult) (float64, bool)
	}
	goals := []goal{
		{"fanout", "fan-out deliveries/s, sustained ≥ 2× the better peer", true, 2, fromDelivery(fanOutBest, func(d *Delivery) float64 { return d.DeliveredPerSecond })},
		{"fanout", "fan-out deliveries/s, burst ≥ 2× the better peer", true, 2, fromDelivery(fanOutBurstOf, func(d *Delivery) float64 { return d.DeliveredPerSecond })},
		{"fanin", "fan-in messages/s, sustained ≥ 2× the better peer", true, 2, fromDelivery(fanInBest, func(d *Delivery) float64 { return d.DeliveredPerSecond })},
		{"fanin", "fan-in messages/s, burst ≥ 2× the better peer", true, 2, fromDelivery(fanInBurstOf, func(d *Delivery) float64 { return d.DeliveredPerSecond })},
		{"latency", "1→1 p99 latency lower than the better peer", false, 1, fromDelivery(latencyOf, func(d *Delivery) float64 { return d.P99Ms })},
		{"idle", "RSS per idle connection lower than the better peer", false, 1, func(r *BrokerResult) (float64, bool) {
			if r.Idle == nil {
				return 0, false
			}
			return r.Idle.RSSPerConn, true
		}},
	}
	ran := map[string]bool{}
	for _, s := range rep.Config.Scenarios {
		ran[s] = true
	}
	fmt.Fprintln(w, "\nGoals (docs/PERFORMANCE.md)")
	for _, g := range goals {
		if !ran[g.need] {
			continue
		}
		v, ok := g.value(gc)
		bestName, bestVal, have := "", 0.0, false
		for _, p := range peers {
			pv, ok := g.value(p)
			if !ok {
				continue
			}
			if !have || (g.higher && pv > bestVal) || (!g.higher && pv < bestVal) {
				bestName, bestVal, have = p.Broker, pv, true
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
			detail = fmt.Sprintf(": gatecast %s, better peer %s %s (%s)", trim(v), bestName, trim(bestVal), r)
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
	for _, b := range rep.Brokers {
		for part, e := range b.Errors {
			lines = append(lines, fmt.Sprintf("  %s %s: %s", b.Broker, part, e))
		}
		for _, l := range []struct {
			name  string
			steps []Delivery
		}{{"fan-out", b.FanOutSteps}, {"fan-in", b.FanInSteps}} {
			for _, d := range l.steps {
				if !d.Sustained {
					lines = append(lines, fmt.Sprintf("  %s %s: first step not kept up, %s msg/s offered: %s",
						b.Broker, l.name, integer(float64(d.OfferedRate)), deliverySummary(d)))
				}
			}
			if n := len(l.steps); n > 0 && l.steps[n-1].Sustained && n == len(ladderRates(rep.Config, l.name)) {
				lines = append(lines, fmt.Sprintf("  %s %s: kept up with every step up to %s msg/s: its sustained figures are a lower bound",
					b.Broker, l.name, integer(float64(l.steps[n-1].OfferedRate))))
			}
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

func ladderRates(cfg Config, name string) []int {
	if name == "fan-out" {
		return cfg.FanOutRates
	}
	return cfg.FanInRates
}
