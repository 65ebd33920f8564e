package loadtest

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// writeAttackTable prints a hostile-client report for people: what was
// done, what the broker did, and the figures PERFORMANCE.md records.
func writeAttackTable(w io.Writer, rep *AttackReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	row := func(k string, v ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprint(v...)) }
	fmt.Fprintf(tw, "\n== gatecast loadtest %s — %s, %.1f s\n", rep.Scenario, rep.Started.Format("2006-01-02 15:04:05Z"), rep.Seconds)
	if rep.Aborted != "" {
		row("ABORTED", rep.Aborted)
	}
	switch {
	case rep.Flood != nil:
		floodTable(tw, row, rep.Flood)
	case rep.TagStorm != nil:
		tagstormTable(row, rep.TagStorm)
	case rep.Grants != nil:
		grantsTable(row, rep.Grants)
	}
	if b := rep.Broker; b != nil {
		src := b.Source
		if b.PID > 0 {
			src += " pid " + strconv.Itoa(b.PID)
		}
		row("broker RSS", fmt.Sprintf("start %s, peak %s (at %.1f s), end %s  [%s]", fmtSize(b.RSSStart), fmtSize(b.RSSPeak), b.RSSPeakAt, fmtSize(b.RSSEnd), src))
		row("broker open files", fmt.Sprintf("start %d, peak %d, end %d", b.FDsStart, b.FDsPeak, b.FDsEnd))
		row("broker CPU", fmt.Sprintf("%.1f s", b.CPUSeconds))
		ceil := fmt.Sprintf("RSS %s: ", fmtSize(b.RSSCeiling)) + hit(b.RSSCeilingHit, b.CeilingHitAt) +
			fmt.Sprintf("; open files %d: ", b.FDCeiling) + hit(b.FDCeilingHit, b.CeilingHitAt)
		row("ceilings", ceil)
		if b.Gone {
			row("broker", "GONE (could not be read at the end)")
		}
	}
	if rep.ErrorsTotal > 0 {
		row("client errors", formatCounts(rep.Errors))
	}
}

func hit(h bool, at float64) string {
	if h {
		return fmt.Sprintf("PASSED at %.1f s (attack aborted)", at)
	}
	return "not reached"
}

func floodTable(tw io.Writer, row func(string, ...any), f *FloodReport) {
	tok := "invalid token (refused: 4003)"
	if f.ValidToken {
		tok = "valid token (read one topic, publish none)"
	}
	row("attack", fmt.Sprintf("%d connections, %s, %s frames of %d B, %d B per write, %.1f s", f.Conns, tok, f.Frame, f.FrameBytes, f.WriteBytes, f.StreamSecs))
	row("written", fmt.Sprintf("%s in all (%s/s), %d frames; after the close frame: %s", fmtSize(f.Written), fmtSize(f.WrittenPS), f.Frames, fmtSize(f.AfterClose)))
	row("closed by the broker", fmt.Sprintf("%d of %d upgraded; still open at the end (closed by us): %d", f.ClosedByBkr, f.Upgraded, f.StillOpen))
	if f.ClosedByBkr > 0 {
		row("lifetime (upgrade → EOF/RST)", fmt.Sprintf("%.2f – %.2f s", f.LifetimeMin, f.LifetimeMax))
	}
	fmt.Fprintf(tw, "  conn\tclose frame\tended\tby\twritten\tafter close frame\n")
	for _, c := range f.Connections {
		if !c.Upgraded {
			fmt.Fprintf(tw, "  %d\t%s\t\t\t\t\n", c.Index, c.Error)
			continue
		}
		cf := "-"
		if c.CloseCode != 0 {
			cf = fmt.Sprintf("%d %q at %.2f s", c.CloseCode, c.CloseReason, c.CloseFrameAt)
		}
		ended := fmt.Sprintf("%.2f s", c.EndedAt)
		if c.CloseSentToEnd > 0 {
			ended += fmt.Sprintf(" (%.2f s after our close)", c.CloseSentToEnd)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", c.Index, cf, ended, c.EndedBy, fmtSize(c.Written), fmtSize(c.AfterClose))
	}
}

func tagstormTable(row func(string, ...any), t *TagStormReport) {
	row("attack", fmt.Sprintf("%d loops × %d tags (Tag header %d B, request %d B), connect and close at once, %.1f s (stopped at %.1f s)", t.Loops, t.Tags, t.TagBytes, t.RequestBytes, t.StormSecs, t.StormEndedAt))
	row("connects", fmt.Sprintf("%d (%.0f/s), 101: %d, failed: %d; 101 while the disable call ran: %d", t.Connects, t.PerSecond, t.Upgraded, t.Failed, t.UpgradedDuringDisable))
	if t.Handshake.Count > 0 {
		row("handshake (dial → 101)", fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms", t.Handshake.P50, t.Handshake.P99, t.Handshake.Max))
	}
	d := t.Disable
	status := strconv.Itoa(d.Status)
	if d.Status == 0 {
		status = "no answer: " + d.Error
	} else if d.Body != "" {
		status += " " + d.Body
	}
	row("PATCH {\"disabled\":true}", fmt.Sprintf("%.1f ms, HTTP %s (sent at %.1f s)", d.Ms, status, d.StartedAt))
	w := fmt.Sprintf("%d of %d got 4002", t.Witnesses4002, t.WitnessesUp)
	if t.Witnesses4002 > 0 {
		w += fmt.Sprintf(", the last %.1f ms after the call started", t.Witness4002Ms)
	}
	if len(t.WitnessesOther) > 0 {
		w += fmt.Sprintf("; other closes %v", t.WitnessesOther)
	}
	if t.WitnessesOpen > 0 {
		w += fmt.Sprintf("; %d STILL OPEN", t.WitnessesOpen)
	}
	row("witness sessions", w)
	s := fmt.Sprintf("%d listed right after the call; ", t.SessionsAfterDisable)
	switch {
	case t.SessionsError != "":
		s += "could not list: " + t.SessionsError
	case t.SessionsGone:
		s += fmt.Sprintf("none left %.0f ms after the call started", t.SessionsGoneMs)
	default:
		s += fmt.Sprintf("%d STILL LISTED at the end of --close-timeout", t.SessionsLeft)
	}
	row("token's sessions", s)
}

func grantsTable(row func(string, ...any), g *GrantsReport) {
	b := g.Build
	held := "no session connected"
	if b.Connected {
		held = "a session of the token connected"
		if b.HeldSessionClosed != 0 {
			held += fmt.Sprintf(" (CLOSED by the broker with %d)", b.HeldSessionClosed)
		}
	}
	row("grants built", fmt.Sprintf("%d of %d in %.1f s (concurrency %d, %s): tag POSTs %.1f s, PUTs %.1f s", b.Built, g.Grants, b.Seconds, b.Concurrency, held, b.TagSeconds, b.PutSeconds))
	row("per PUT", fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.1f ms, mean %.2f ms", b.Put.P50, b.Put.P99, b.Put.Max, b.Put.Mean))
	if len(b.PutMsByTenth) > 0 {
		parts := make([]string, len(b.PutMsByTenth))
		for i, v := range b.PutMsByTenth {
			parts[i] = strconv.FormatFloat(v, 'f', 2, 64)
		}
		row("mean PUT ms by tenth", strings.Join(parts, " "))
	}
	for _, p := range []*PublishRun{g.Publish, g.Baseline} {
		if p == nil {
			continue
		}
		name := fmt.Sprintf("publish, %d grants", p.Grants)
		if p.Grants == 1 {
			name = "publish, 1 grant"
		}
		v := fmt.Sprintf("%.0f msg/s delivered (%d sent, %d delivered in %.1f s, window %d)", p.DeliveredPS, p.Sent, p.Delivered, p.Seconds, p.Window)
		if p.BrokerAccepted != nil {
			v += fmt.Sprintf("; broker accepted %d", *p.BrokerAccepted)
		}
		if p.BrokerRejected != nil {
			v += fmt.Sprintf(", rejected %d", *p.BrokerRejected)
		}
		if p.Stalled {
			v += "; STALLED"
		}
		row(name, v)
		row("  connects", fmt.Sprintf("subscriber %.1f ms, publisher %.1f ms", p.SubscriberMs, p.PublisherMs))
	}
	if g.Topic != "" {
		row("topic", g.Topic)
	}
	if c := g.Cleanup; c != nil {
		row("cleanup", fmt.Sprintf("%d tags deleted in %.1f s", c.Deleted, c.Seconds))
	}
}
