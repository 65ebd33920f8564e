package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Options are the knobs of a load run. Every loop is bounded by Conns,
// Messages and Duration.
type Options struct {
	URL, AdminURL, AdminKey string
	Conns                   int           // idle, revoke: connections; fanout: subscribers; fanin: publishers
	Messages                int           // messages published in all
	Rate                    int           // messages per second offered by all publishers together (0 = as fast as possible)
	Size                    int           // bytes of each message's JSON value
	Duration                time.Duration // upper bound of the whole run
	Hold                    time.Duration // idle: how long to hold the connections before measuring
	Dial                    int           // concurrent dials
}

// Report is a run's result, printed as JSON.
type Report struct {
	Scenario     string  `json:"scenario"`
	Conns        int     `json:"conns"`
	Messages     int     `json:"messages,omitempty"`
	SizeBytes    int     `json:"message_bytes,omitempty"`
	Sent         int64   `json:"sent,omitempty"`
	Delivered    int64   `json:"delivered,omitempty"`
	Expected     int64   `json:"expected,omitempty"`
	Seconds      float64 `json:"seconds,omitempty"`
	PerSecond    float64 `json:"deliveries_per_second,omitempty"`
	LatencyP50Ms float64 `json:"latency_p50_ms,omitempty"`
	LatencyP99Ms float64 `json:"latency_p99_ms,omitempty"`
	LatencyMaxMs float64 `json:"latency_max_ms,omitempty"`

	HeapStackPerConn float64 `json:"heap_stack_bytes_per_conn,omitempty"`
	RSSPerConn       float64 `json:"rss_bytes_per_conn,omitempty"`
	BrokerGoroutines float64 `json:"broker_goroutines,omitempty"`

	AdminCallMs float64 `json:"admin_call_ms,omitempty"`
	Closed      int     `json:"closed,omitempty"`
	CloseCodes  string  `json:"close_codes,omitempty"`
	Errors      int64   `json:"errors"`
}

// RunCLI implements `gatecast loadtest SCENARIO [flags]`.
func RunCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: gatecast loadtest idle|fanout|fanin|revoke [flags]   (gatecast loadtest idle --help)")
		return 2
	}
	scenario := args[0]
	var o Options
	fs := flag.NewFlagSet("gatecast loadtest "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/ws/brocker/", "broker WebSocket URL; several comma-separated (cluster nodes): connections are spread over them, the fanout publisher / fanin subscriber uses the first")
	fs.StringVar(&o.AdminURL, "admin-url", "http://127.0.0.1:8081", "broker admin URL (to create tokens and read /metrics)")
	fs.StringVar(&o.AdminKey, "admin-key", os.Getenv("GATECAST_ADMIN_KEY"), "admin key (env GATECAST_ADMIN_KEY)")
	fs.IntVar(&o.Conns, "conns", 1000, "connections (idle, revoke), subscribers (fanout) or publishers (fanin)")
	fs.IntVar(&o.Messages, "messages", 1000, "messages published in all (fanout, fanin)")
	fs.IntVar(&o.Rate, "rate", 0, "messages per second offered by all publishers together; 0 = as fast as possible")
	fs.IntVar(&o.Size, "size", 64, "bytes of each message value")
	fs.DurationVar(&o.Duration, "duration", 2*time.Minute, "upper bound of the run")
	fs.DurationVar(&o.Hold, "hold", 5*time.Second, "idle: how long to hold connections before measuring")
	fs.IntVar(&o.Dial, "dial-concurrency", 64, "concurrent dials")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var r Report
	var err error
	switch scenario {
	case "idle":
		r, err = Idle(ctx, o)
	case "fanout":
		r, err = FanOut(ctx, o)
	case "fanin":
		r, err = FanIn(ctx, o)
	case "revoke":
		r, err = Revoke(ctx, o)
	default:
		fmt.Fprintf(stderr, "unknown scenario %q\n", scenario)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "gatecast loadtest:", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.Encode(r)
	return 0
}

// dialMany opens n connections with at most o.Dial in flight, each with
// tags(i).
func dialMany(ctx context.Context, o Options, n int, secret string, tags func(i int) []string) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	sem := make(chan struct{}, max(1, o.Dial))
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := Dial(ctx, o.url(i), secret, tags(i))
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("dial %d: %w", i, err)
				}
				mu.Unlock()
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if firstErr != nil {
		closeAll(conns)
		return nil, firstErr
	}
	return conns, nil
}

// url is the broker URL of connection i: --url may list several nodes of
// a cluster (comma-separated); connections are spread over them in turn,
// and the single publisher (fanout) or subscriber (fanin) uses the first.
func (o Options) url(i int) string {
	urls := strings.Split(o.URL, ",")
	return strings.TrimSpace(urls[i%len(urls)])
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// Idle holds o.Conns idle connections and reports the broker's memory per
// connection (heap and stacks after a forced GC, and RSS), measured by the
// broker itself through its /metrics.
func Idle(ctx context.Context, o Options) (Report, error) {
	api := newAdminAPI(o.AdminURL, o.AdminKey)
	tok, err := api.tokenWith(ctx, "loadtest-idle", "lt/#", "read")
	if err != nil {
		return Report{}, err
	}
	before, err := api.memory(ctx)
	if err != nil {
		return Report{}, err
	}
	conns, err := dialMany(ctx, o, o.Conns, tok.Secret, func(i int) []string { return []string{"lt/dev" + strconv.Itoa(i) + "/cmd"} })
	if err != nil {
		return Report{}, err
	}
	defer closeAll(conns)
	select {
	case <-time.After(o.Hold):
	case <-ctx.Done():
		return Report{}, ctx.Err()
	}
	after, err := api.memory(ctx)
	if err != nil {
		return Report{}, err
	}
	n := float64(o.Conns)
	return Report{
		Scenario:         "idle",
		Conns:            o.Conns,
		HeapStackPerConn: ((after.HeapInuse + after.StackInuse) - (before.HeapInuse + before.StackInuse)) / n,
		RSSPerConn:       (after.RSS - before.RSS) / n,
		BrokerGoroutines: after.Goroutines,
	}, nil
}

// message builds a JSON value of exactly size bytes carrying the send time.
func message(size int, sent time.Time) []byte {
	b := make([]byte, 0, size)
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, sent.UnixNano(), 10)
	b = append(b, `,"p":"`...)
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// sentAt extracts the send time from a delivered frame's payload.
func sentAt(payload []byte) (time.Time, bool) {
	var m struct {
		Message struct {
			T int64 `json:"t"`
		} `json:"message"`
	}
	if json.Unmarshal(payload, &m) != nil || m.Message.T == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, m.Message.T), true
}

// receiver reads deliveries on one connection until want are seen or ctx
// ends, recording latencies.
type receiver struct {
	got       atomic.Int64
	mu        sync.Mutex
	latencies []time.Duration
	last      atomic.Int64 // unix nanos of the last delivery
}

func (r *receiver) run(ctx context.Context, c net.Conn, want int64, done func()) {
	defer done()
	br := bufio.NewReaderSize(c, 16<<10)
	buf := make([]byte, 0, 4096)
	var local []time.Duration
	defer func() {
		r.mu.Lock()
		r.latencies = append(r.latencies, local...)
		r.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	for n := int64(0); n < want; {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return
		}
		if int64(cap(buf)) < h.Length {
			buf = make([]byte, h.Length)
		}
		p := buf[:h.Length]
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		switch h.OpCode {
		case ws.OpText:
			now := time.Now()
			if t, ok := sentAt(p); ok {
				local = append(local, now.Sub(t))
			}
			n++
			r.got.Add(1)
			r.last.Store(now.UnixNano())
		case ws.OpPing:
			wsutil.WriteClientMessage(c, ws.OpPong, p)
		case ws.OpClose:
			return
		}
	}
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return float64(sorted[i]) / float64(time.Millisecond)
}

// publishPaced sends count messages on c to topic, at rate per second
// (0 = unpaced), and returns how many were written.
func publishPaced(ctx context.Context, c net.Conn, topic string, count, rate, size int) int64 {
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	start := time.Now()
	var sent int64
	for i := 0; i < count && ctx.Err() == nil; i++ {
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		frame := append(append([]byte(`{"tag":"`+topic+`","message":`), message(size, time.Now())...), '}')
		if err := wsutil.WriteClientText(c, frame); err != nil {
			return sent
		}
		sent++
	}
	return sent
}

// deliveryRun publishes from pubs and waits for subs to receive, then
// reports throughput and latency.
func deliveryRun(ctx context.Context, o Options, name string, subs, pubs []net.Conn, topicOf func(i int) string, perPub int) Report {
	var rcv receiver
	var wg sync.WaitGroup
	want := int64(perPub * len(pubs))
	for _, c := range subs {
		wg.Add(1)
		go rcv.run(ctx, c, want, wg.Done)
	}
	var sent atomic.Int64
	start := time.Now()
	var pw sync.WaitGroup
	for i, c := range pubs {
		pw.Add(1)
		go func() {
			defer pw.Done()
			rate := 0
			if o.Rate > 0 {
				rate = max(1, o.Rate/len(pubs))
			}
			sent.Add(publishPaced(ctx, c, topicOf(i), perPub, rate, o.Size))
		}()
	}
	pw.Wait()
	wg.Wait()
	end := time.Unix(0, rcv.last.Load())
	secs := end.Sub(start).Seconds()
	slices.Sort(rcv.latencies)
	r := Report{
		Scenario:  name,
		Conns:     len(subs) + len(pubs),
		Messages:  int(sent.Load()),
		SizeBytes: o.Size,
		Sent:      sent.Load(),
		Delivered: rcv.got.Load(),
		Expected:  want * int64(len(subs)),
		Seconds:   secs,
	}
	if secs > 0 {
		r.PerSecond = float64(r.Delivered) / secs
	}
	r.LatencyP50Ms = percentile(rcv.latencies, 0.50)
	r.LatencyP99Ms = percentile(rcv.latencies, 0.99)
	r.LatencyMaxMs = percentile(rcv.latencies, 1)
	r.Errors = r.Expected - r.Delivered
	return r
}

// FanOut: one publisher, o.Conns subscribers of one topic.
func FanOut(ctx context.Context, o Options) (Report, error) {
	api := newAdminAPI(o.AdminURL, o.AdminKey)
	tok, err := api.tokenWith(ctx, "loadtest-fanout", "lt/#", "readwrite")
	if err != nil {
		return Report{}, err
	}
	subs, err := dialMany(ctx, o, o.Conns, tok.Secret, func(int) []string { return []string{"lt/fanout"} })
	if err != nil {
		return Report{}, err
	}
	defer closeAll(subs)
	pub, err := Dial(ctx, o.url(0), tok.Secret, []string{"lt/fanout/publisher"})
	if err != nil {
		return Report{}, err
	}
	defer pub.Close()
	time.Sleep(200 * time.Millisecond) // let the last subscriptions land before the first publish
	return deliveryRun(ctx, o, "fanout", subs, []net.Conn{pub}, func(int) string { return "lt/fanout" }, o.Messages), nil
}

// FanIn: o.Conns publishers, one subscriber with a wildcard.
func FanIn(ctx context.Context, o Options) (Report, error) {
	api := newAdminAPI(o.AdminURL, o.AdminKey)
	tok, err := api.tokenWith(ctx, "loadtest-fanin", "lt/#", "readwrite")
	if err != nil {
		return Report{}, err
	}
	sub, err := Dial(ctx, o.url(0), tok.Secret, []string{"lt/fanin/+"})
	if err != nil {
		return Report{}, err
	}
	defer sub.Close()
	pubs, err := dialMany(ctx, o, o.Conns, tok.Secret, func(i int) []string { return []string{"lt/cmd/" + strconv.Itoa(i)} })
	if err != nil {
		return Report{}, err
	}
	defer closeAll(pubs)
	time.Sleep(200 * time.Millisecond)
	perPub := max(1, o.Messages/o.Conns)
	return deliveryRun(ctx, o, "fanin", []net.Conn{sub}, pubs, func(i int) string { return "lt/fanin/" + strconv.Itoa(i) }, perPub), nil
}

// Revoke: o.Conns sessions of one token; delete the token through the
// admin API and time until every client has read its close frame.
func Revoke(ctx context.Context, o Options) (Report, error) {
	api := newAdminAPI(o.AdminURL, o.AdminKey)
	tok, err := api.tokenWith(ctx, "loadtest-revoke", "lt/#", "read")
	if err != nil {
		return Report{}, err
	}
	conns, err := dialMany(ctx, o, o.Conns, tok.Secret, func(i int) []string { return []string{"lt/dev" + strconv.Itoa(i) + "/cmd"} })
	if err != nil {
		return Report{}, err
	}
	defer closeAll(conns)
	time.Sleep(200 * time.Millisecond)
	closedAt := make([]time.Time, len(conns))
	codes := make([]ws.StatusCode, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
			defer stop()
			for {
				h, err := ws.ReadHeader(c)
				if err != nil {
					return
				}
				p := make([]byte, h.Length)
				if _, err := io.ReadFull(c, p); err != nil {
					return
				}
				if h.OpCode == ws.OpClose {
					closedAt[i] = time.Now()
					codes[i], _ = ws.ParseCloseFrameData(p)
					return
				}
			}
		}()
	}
	start := time.Now()
	if err := api.do(ctx, "DELETE", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), nil, nil); err != nil {
		return Report{}, err
	}
	adminMs := float64(time.Since(start)) / float64(time.Millisecond)
	wg.Wait()
	var lat []time.Duration
	byCode := map[ws.StatusCode]int{}
	for i, t := range closedAt {
		if !t.IsZero() {
			lat = append(lat, t.Sub(start))
			byCode[codes[i]]++
		}
	}
	slices.Sort(lat)
	return Report{
		Scenario:     "revoke",
		Conns:        o.Conns,
		AdminCallMs:  adminMs,
		Closed:       len(lat),
		CloseCodes:   fmt.Sprint(byCode),
		LatencyP50Ms: percentile(lat, 0.5),
		LatencyP99Ms: percentile(lat, 0.99),
		LatencyMaxMs: percentile(lat, 1),
		Errors:       int64(o.Conns - len(lat)),
	}, nil
}
