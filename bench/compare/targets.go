package compare

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The targets of the MQTT table (docs/PERFORMANCE.md, "MQTT, one client
// for every broker"), judged on each Gatecast column. They are measured
// and reported, never asserted by the tests.
const (
	// mqttCPUShare: broker CPU per delivered QoS 0 message at most this
	// share of the better peer's.
	mqttCPUShare = 0.5
	// mqttIdleBytes: RSS per idle MQTT connection at most 4.5 KiB.
	mqttIdleBytes = 4608
)

// Target statuses.
const (
	targetMet         = "met"
	targetNotMet      = "NOT MET"
	targetNotMeasured = "not measured"
)

// Target is one target judged on one Gatecast column of a table.
type Target struct {
	Target string  `json:"target"` // "cpu", "idle_rss", "zero_loss"
	Broker string  `json:"broker"` // the Gatecast column
	Label  string  `json:"label"`
	Status string  `json:"status"` // "met", "NOT MET", "not measured"
	Value  float64 `json:"value,omitempty"`
	// Peer is the better peer the value is judged against (CPU), PeerValue
	// its figure and Ratio Value / PeerValue.
	Peer      string  `json:"peer,omitempty"`
	PeerValue float64 `json:"peer_value,omitempty"`
	Ratio     float64 `json:"ratio,omitempty"`
	// HarnessBound: a figure judged comes from a harness-bound run.
	HarnessBound bool   `json:"harness_bound,omitempty"`
	Detail       string `json:"detail,omitempty"`
}

// mqttTargets judges the MQTT table's targets on each of its Gatecast
// columns against its peers.
func mqttTargets(t *Table) []Target {
	gcs, peers := splitBrokers(t.Brokers)
	ran := map[string]bool{}
	for _, s := range t.Config.Scenarios {
		ran[s] = true
	}
	var out []Target
	for _, gc := range gcs {
		for _, c := range []struct {
			need, what string
			get        func(*BrokerResult) *Delivery
		}{
			{"fanout", "fan-out sustained", fanOutBest},
			{"fanout", "fan-out burst", fanOutBurstOf},
			{"fanin", "fan-in sustained", fanInBest},
			{"fanin", "fan-in burst", fanInBurstOf},
		} {
			if ran[c.need] && len(peers) > 0 {
				out = append(out, cpuTarget(gc, peers, c.what, c.get))
			}
		}
		if ran["idle"] {
			tg := Target{Target: "idle_rss", Broker: gc.Broker, Status: targetNotMeasured,
				Label: fmt.Sprintf("RSS per idle MQTT connection ≤ %s B (4.5 KiB)", integer(mqttIdleBytes))}
			if gc.Idle != nil {
				tg.Value = gc.Idle.RSSPerConn
				tg.Status = targetNotMet
				if tg.Value <= mqttIdleBytes {
					tg.Status = targetMet
				}
				tg.Detail = integer(tg.Value) + " B"
			}
			out = append(out, tg)
		}
		if len(peers) > 0 {
			out = append(out, zeroLossTarget(gc, peers))
		}
	}
	return out
}

// cpuTarget: broker CPU µs per expected delivery (sent × subscribers;
// equal to per delivered when nothing is lost, and lower than per
// delivered for a broker that drops, so the comparison never favours
// Gatecast) of one run at most mqttCPUShare of the better peer's.
func cpuTarget(gc *BrokerResult, peers []*BrokerResult, what string, get func(*BrokerResult) *Delivery) Target {
	tg := Target{Target: "cpu", Broker: gc.Broker, Status: targetNotMeasured,
		Label: fmt.Sprintf("broker CPU per QoS 0 delivery ≤ %.1f× the better peer, %s", mqttCPUShare, what)}
	d := get(gc)
	var best *BrokerResult
	var bd *Delivery
	for _, p := range peers {
		pd := get(p)
		if pd == nil || pd.Expected == 0 || pd.ServerCPUSeconds <= 0 {
			continue
		}
		if bd == nil || cpuPer(pd) < cpuPer(bd) {
			best, bd = p, pd
		}
	}
	if d == nil || d.Expected == 0 || bd == nil {
		return tg
	}
	tg.Value, tg.Peer, tg.PeerValue = cpuPer(d), best.Broker, cpuPer(bd)
	tg.Ratio = tg.Value / tg.PeerValue
	tg.HarnessBound = d.HarnessBound || bd.HarnessBound
	tg.Status = targetNotMet
	if tg.Value <= mqttCPUShare*tg.PeerValue {
		tg.Status = targetMet
	}
	tg.Detail = fmt.Sprintf("%s µs, better peer %s %s µs (%s×)", micros(tg.Value), best.Broker, micros(tg.PeerValue), strconv.FormatFloat(tg.Ratio, 'f', 2, 64))
	if tg.HarnessBound {
		tg.Detail += ", from a harness-bound run" + harnessMark
	}
	return tg
}

// lossRun is one run of a broker that can lose messages, keyed so that the
// same run of two brokers can be matched (ladder steps by offered rate).
type lossRun struct {
	key string
	d   *Delivery
}

func lossRuns(r *BrokerResult) []lossRun {
	var runs []lossRun
	for i := range r.FanOutSteps {
		runs = append(runs, lossRun{"fan-out step " + integer(float64(r.FanOutSteps[i].OfferedRate)) + " msg/s", &r.FanOutSteps[i]})
	}
	for i := range r.FanInSteps {
		runs = append(runs, lossRun{"fan-in step " + integer(float64(r.FanInSteps[i].OfferedRate)) + " msg/s", &r.FanInSteps[i]})
	}
	for _, x := range []struct {
		key string
		d   *Delivery
	}{{"fan-out burst", r.FanOutBurst}, {"fan-in burst", r.FanInBurst}, {"latency", r.Latency},
		{"latency under load", r.LoadedLatency}, {"background fan-in", r.LoadedFanIn}} {
		if x.d != nil {
			runs = append(runs, lossRun{x.key, x.d})
		}
	}
	return runs
}

// lossless: every expected delivery arrived.
func lossless(d *Delivery) bool { return d.Expected > 0 && d.Delivered >= d.Expected }

// zeroLossTarget: no loss in any run in which a peer lost nothing. Runs
// are matched by name (ladder steps by offered rate: a step only one of
// them reached is not compared); a run a lossless peer has and Gatecast
// lacks (it failed) counts against Gatecast, except ladder steps past the
// end of Gatecast's ladder.
func zeroLossTarget(gc *BrokerResult, peers []*BrokerResult) Target {
	tg := Target{Target: "zero_loss", Broker: gc.Broker, Label: "zero loss wherever the better peer has zero loss"}
	mine := map[string]*Delivery{}
	for _, r := range lossRuns(gc) {
		mine[r.key] = r.d
	}
	compared := 0
	var lost []string
	seen := map[string]bool{}
	for _, p := range peers {
		for _, r := range lossRuns(p) {
			if seen[r.key] || !lossless(r.d) {
				continue
			}
			seen[r.key] = true
			d, ok := mine[r.key]
			switch {
			case ok:
				compared++
				if !lossless(d) {
					lost = append(lost, fmt.Sprintf("%s (%s delivered, %s none lost)", r.key, percent(100-d.LossPercent), p.Broker))
				}
			case !strings.Contains(r.key, " step "):
				lost = append(lost, fmt.Sprintf("%s (no figures; %s none lost)", r.key, p.Broker))
			}
		}
	}
	tg.Value = float64(compared)
	switch {
	case len(lost) > 0:
		tg.Status = targetNotMet
		tg.Detail = strings.Join(lost, "; ")
	case compared == 0:
		tg.Status = targetNotMeasured
		tg.Detail = "no run in which a peer lost nothing"
	default:
		tg.Status = targetMet
		tg.Detail = fmt.Sprintf("%d runs compared", compared)
	}
	return tg
}

// writeTargets prints a table's targets.
func writeTargets(w io.Writer, t *Table) {
	if len(t.Targets) == 0 {
		return
	}
	fmt.Fprintf(w, "\nTargets (%s; docs/PERFORMANCE.md: measured, not asserted)\n", t.Title)
	for _, tg := range t.Targets {
		detail := ""
		if tg.Detail != "" {
			detail = ": " + tg.Detail
		}
		fmt.Fprintf(w, "  %-17s %-73s %s%s\n", tg.Broker, tg.Label, tg.Status, detail)
	}
}
