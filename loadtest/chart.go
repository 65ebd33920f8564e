package loadtest

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
)

// writeChart writes a small SVG of a run: open connections (top panel) and
// the p99 delivery latency of each second (bottom panel) against time.
// Hand-written SVG: no dependency, readable in any browser.
func writeChart(w io.Writer, title string, pts []Point) error {
	const (
		width, height = 880, 560
		left, right   = 80, 30
		plotW         = width - left - right
		panelH        = 190
		top1, top2    = 60, 330
	)
	maxT := 1.0
	var maxConns, maxP99 float64
	for _, p := range pts {
		maxT = max(maxT, float64(p.T+1))
		maxConns = max(maxConns, float64(p.Conns))
		maxP99 = max(maxP99, p.P99)
	}
	yConns := niceMax(maxConns)
	yP99 := niceMax(maxP99)
	xStep := niceStep(maxT / 8)
	x := func(t float64) float64 { return left + t/maxT*plotW }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	b.WriteString(`<text x="20" y="28" font-size="16" font-weight="bold">`)
	_ = xml.EscapeText(&b, []byte(title))
	b.WriteString("</text>\n")

	panel := func(top float64, label string, ymax float64, value func(Point) (float64, bool), color string) {
		y := func(v float64) float64 { return top + panelH - v/ymax*panelH }
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-weight="bold">%s</text>`+"\n", left, top-10, label)
		for i := 0; i <= 4; i++ {
			v := ymax * float64(i) / 4
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), left+plotW, y(v))
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(v)+4, fmtAxis(v))
		}
		for t := 0.0; t <= maxT+1e-9; t += xStep {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#eee"/>`+"\n", x(t), top, x(t), top+panelH)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%ss</text>`+"\n", x(t), top+panelH+16, fmtAxis(t))
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%.0f" width="%d" height="%d" fill="none" stroke="#888"/>`+"\n", left, top, plotW, panelH)
		// One polyline per run of seconds that have a value.
		var line []byte
		flush := func() {
			if len(line) > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, bytes.TrimSpace(line))
				line = line[:0]
			}
		}
		for _, p := range pts {
			v, ok := value(p)
			if !ok {
				flush()
				continue
			}
			// A point at the middle of its second.
			line = strconv.AppendFloat(line, x(float64(p.T)+0.5), 'f', 1, 64)
			line = append(line, ',')
			line = strconv.AppendFloat(line, y(v), 'f', 1, 64)
			line = append(line, ' ')
		}
		flush()
	}
	panel(top1, "open connections", yConns, func(p Point) (float64, bool) { return float64(p.Conns), true }, "#1f77b4")
	panel(top2, "p99 delivery latency (ms), per second", yP99, func(p Point) (float64, bool) { return p.P99, p.P99 > 0 }, "#d62728")
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">seconds since start</text>`+"\n", left+plotW/2, height-12)
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// niceMax is an axis maximum: four nice steps at or above v.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	return 4 * niceStep(v/4)
}

func fmtAxis(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}
