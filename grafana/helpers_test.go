package grafana

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/gatecast/gatecast/internal/testserver"
	"github.com/gatecast/gatecast/server"
)

// ---- dashboards ----

// panelTarget is one query of one panel, with where it came from.
type panelTarget struct {
	file, panel, refID, expr string
}

// variableQuery is a templating variable backed by a Prometheus query.
type variableQuery struct {
	file, name, query string
}

type dashboard struct {
	file       string
	raw        map[string]any
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Definition string          `json:"definition"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int        `json:"id"`
	Type       string     `json:"type"`
	Title      string     `json:"title"`
	Datasource datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string     `json:"refId"`
		Expr       string     `json:"expr"`
		Datasource datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row holds its panels
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dashboardFiles are the dashboards this package ships; the tests insist
// that exactly these exist so a new file cannot slip in untested.
var dashboardFiles = []string{"fleet-overview.json", "traffic.json", "security.json", "cluster.json"}

func loadDashboards(t *testing.T) []dashboard {
	t.Helper()
	found, err := filepath.Glob(filepath.Join("dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range found {
		names = append(names, filepath.Base(f))
	}
	sort.Strings(names)
	want := append([]string(nil), dashboardFiles...)
	sort.Strings(want)
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("dashboards/ holds %v, want exactly %v", names, want)
	}
	var ds []dashboard
	for _, name := range dashboardFiles {
		b, err := os.ReadFile(filepath.Join("dashboards", name))
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: not valid dashboard JSON: %v", name, err)
		}
		if err := json.Unmarshal(b, &d.raw); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d.file = name
		ds = append(ds, d)
	}
	return ds
}

// allPanels flattens rows (collapsed rows nest their panels).
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

func (d dashboard) targets() []panelTarget {
	var out []panelTarget
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			out = append(out, panelTarget{file: d.file, panel: p.Title, refID: tg.RefID, expr: tg.Expr})
		}
	}
	return out
}

func (d dashboard) variableQueries(t *testing.T) []variableQuery {
	t.Helper()
	var out []variableQuery
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Definition
		var obj struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &obj); err == nil && obj.Query != "" {
			q = obj.Query
		} else {
			var s string
			if json.Unmarshal(v.Query, &s) == nil && s != "" {
				q = s
			}
		}
		out = append(out, variableQuery{file: d.file, name: v.Name, query: q})
	}
	return out
}

// metricRef matches the metric names a query may reference.
var metricRef = regexp.MustCompile(`\b(?:gatecast|go|process)_[a-z_]+\b`)

// grafanaVar matches $name, ${name} and ${name:format}.
var grafanaVar = regexp.MustCompile(`\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|([A-Za-z_][A-Za-z0-9_]*))`)

// variableValues is what the live test substitutes for each variable the
// dashboards use: the "All" value of the job/instance selectors, and
// windows that cover several of the test's 1 s scrapes.
var variableValues = map[string]string{
	"job":             ".+",
	"instance":        ".+",
	"__rate_interval": "10s",
	"__interval":      "2s",
	"__range":         "1m",
}

// substitute replaces Grafana variables; it reports a variable it does not know.
func substitute(expr string) (string, error) {
	var unknown []string
	out := grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		v, ok := variableValues[name]
		if !ok {
			unknown = append(unknown, name)
			return m
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown Grafana variable(s) %v", unknown)
	}
	return out, nil
}

// labelValuesQuery parses Grafana's label_values(selector, label) into a
// PromQL query returning one series per label value.
var labelValuesRE = regexp.MustCompile(`^label_values\(\s*(.+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$`)

func variablePromQL(q string) (string, error) {
	m := labelValuesRE.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return "", fmt.Errorf("variable query %q is not label_values(selector, label)", q)
	}
	return fmt.Sprintf("count by (%s) (%s)", m[2], m[1]), nil
}

// ---- node ----

// startCluster starts two nodes in cluster mode on a real Postgres and a
// real Redis (throwaway servers), so that every dashboard — cluster health
// included — has its metrics exported.
func startCluster(t *testing.T) []*server.Node {
	t.Helper()
	dsn := testserver.PostgresDB(t)
	redis := testserver.Redis(t)
	var nodes []*server.Node
	for _, id := range []string{"node-a", "node-b"} {
		cfg := server.Defaults()
		cfg.DataDir = t.TempDir()
		cfg.Listen = "127.0.0.1:0"
		cfg.AdminListen = "127.0.0.1:0"
		cfg.MQTTListen = "127.0.0.1:0"
		cfg.CloseTimeout = 500 * time.Millisecond
		cfg.Store, cfg.Redis, cfg.NodeID = dsn, redis, id
		cfg.AdminKey = "grafana-test-admin-key"
		// Small flow-control and inbound limits, so that the live test's
		// hostile clients (hostileTraffic) really trip them; the regular
		// traffic stays far below them.
		cfg.OutboxLimit = testOutboxLimit
		cfg.MaxInputBuffer = testInputBuffer
		cfg.MaxInboundRate = testInboundRate
		n, err := server.Start(cfg, nil)
		if err != nil {
			t.Fatalf("start node %s: %v", id, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := n.Shutdown(ctx); err != nil {
				t.Errorf("node shutdown: %v", err)
			}
		})
		nodes = append(nodes, n)
	}
	return nodes
}

// exportedMetrics reads the node's /metrics (without the admin key, as
// Prometheus does) and returns every family name and sample name, with the
// family type for each family.
func exportedMetrics(t *testing.T, adminAddr string) (samples map[string]bool, families map[string]string) {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics without a key: HTTP %d %s", resp.StatusCode, b)
	}
	samples, families = map[string]bool{}, map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) == 2 {
				families[f[0]] = f[1]
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		samples[name] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	return samples, families
}

// knownMetric reports whether a name used in a query is exported: a
// sample name, or a histogram/summary series (_bucket, _sum, _count) whose
// base family is exported.
func knownMetric(name string, samples map[string]bool, families map[string]string) bool {
	if samples[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch families[base] {
		case "histogram":
			return true
		case "summary":
			return suffix != "_bucket"
		}
	}
	return false
}

// ---- admin API and WebSocket clients ----

type adminClient struct {
	t    *testing.T
	addr string
	key  string
}

func (a adminClient) do(method, path string, body any, out any) {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+a.addr+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		a.t.Fatalf("%s %s: HTTP %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("%s %s: decoding %q: %v", method, path, raw, err)
		}
	}
}

// waitConnections waits until the broker lists n live sessions of a token.
func (a adminClient) waitConnections(tokenID int64, n int) {
	a.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var conns []json.RawMessage
		a.do("GET", fmt.Sprintf("/api/v1/connections?token_id=%d", tokenID), nil, &struct {
			Connections any `json:"connections"`
		}{&conns})
		if len(conns) == n {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("token %d: %d live sessions, want %d", tokenID, len(conns), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type createdToken struct {
	ID    int64  `json:"id"`
	Token string `json:"token"`
}

func (a adminClient) createToken(name string, maxConns int) createdToken {
	a.t.Helper()
	var tok createdToken
	a.do("POST", "/api/v1/tokens", map[string]any{"name": name, "max_connections": maxConns}, &tok)
	if tok.ID == 0 || tok.Token == "" {
		a.t.Fatalf("create token %q: got %+v", name, tok)
	}
	return tok
}

func (a adminClient) createTag(pattern string) int64 {
	a.t.Helper()
	var tag struct {
		ID int64 `json:"id"`
	}
	a.do("POST", "/api/v1/tags", map[string]any{"pattern": pattern}, &tag)
	if tag.ID == 0 {
		a.t.Fatalf("create tag %q: no id", pattern)
	}
	return tag.ID
}

func (a adminClient) grant(tokenID, tagID int64, perm string) {
	a.t.Helper()
	a.do("PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tokenID, tagID), map[string]any{"permission": perm}, nil)
}

// wsClient is a seed-protocol client. Only one goroutine writes (the one
// given the client) and only one reads.
type wsClient struct {
	conn net.Conn
	r    io.Reader // bytes buffered by the dialer, then conn
}

func dialSeed(t *testing.T, wsAddr, secret, tags string) *wsClient {
	t.Helper()
	h := http.Header{}
	h.Set("Authorization", "Token "+secret)
	h.Set("Tag", tags)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dialer{Header: ws.HandshakeHeaderHTTP(h)}.Dial(ctx, "ws://"+wsAddr+"/ws/brocker/")
	if err != nil {
		t.Fatalf("dial %s: %v", wsAddr, err)
	}
	c := &wsClient{conn: conn, r: conn}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	t.Cleanup(func() { conn.Close() })
	return c
}

func (c *wsClient) sendText(s string) error {
	return wsutil.WriteClientText(c.conn, []byte(s))
}

// nextFrame reads one frame: its opcode and payload.
func (c *wsClient) nextFrame(timeout time.Duration) (ws.OpCode, []byte, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		return 0, nil, err
	}
	if h.Length > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", h.Length)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.r, p); err != nil {
		return 0, nil, err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	return h.OpCode, p, nil
}

// expectClose reads until the server's close frame and returns its code.
func (c *wsClient) expectClose(timeout time.Duration) (ws.StatusCode, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		op, p, err := c.nextFrame(time.Until(deadline))
		if err != nil {
			return 0, err
		}
		if op == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(p)
			return code, nil
		}
	}
	return 0, errors.New("no close frame in time")
}

// drain counts text messages until the connection fails; it returns when
// it does.
func (c *wsClient) drain(received *atomic.Int64) {
	for {
		op, _, err := c.nextFrame(time.Minute)
		if err != nil || op == ws.OpClose {
			return
		}
		if op == ws.OpText {
			received.Add(1)
		}
	}
}

// ---- Prometheus ----

const (
	promReadyTimeout = 20 * time.Second
	promStopGrace    = 10 * time.Second
)

// prometheusBinary finds Debian's prometheus, installing it when missing
// and the test runs as root; otherwise it skips, or fails under CI.
func prometheusBinary(t *testing.T) string {
	t.Helper()
	find := func() string {
		if p, err := exec.LookPath("prometheus"); err == nil {
			return p
		}
		if fi, err := os.Stat("/usr/bin/prometheus"); err == nil && fi.Mode()&0o111 != 0 {
			return "/usr/bin/prometheus"
		}
		return ""
	}
	testserver.Ensure(t, "prometheus", "prometheus", func() bool { return find() != "" })
	return find()
}

// promServer is one Prometheus this test started.
type promServer struct {
	url     string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process is reaped
}

// startPrometheus runs Prometheus on a free loopback port with the given
// config, in a temporary directory, and stops it (by its PID) when the test
// ends. A lost race for the port is retried with a new one.
func startPrometheus(t *testing.T, bin, config string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, err := launchPrometheus(bin, cfgPath, filepath.Join(dir, fmt.Sprintf("data%d", attempt)), filepath.Join(dir, fmt.Sprintf("prometheus%d.log", attempt)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.stop)
		if lastErr = p.waitReady(promReadyTimeout); lastErr == nil {
			return p
		}
		p.stop()
		if !strings.Contains(p.log(), "address already in use") {
			break
		}
	}
	t.Fatalf("prometheus did not start: %v", lastErr)
	return nil
}

func launchPrometheus(bin, cfgPath, dataDir, logPath string) (*promServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own copy
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+dataDir,
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Dir = filepath.Dir(cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The kernel kills Prometheus if the test binary dies without running
	// its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &promServer{url: "http://" + addr, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	// Pdeathsig fires when the forking THREAD exits (go.dev/issue/27505):
	// the goroutine that starts the child keeps its thread locked until the
	// child has exited.
	go func() {
		runtime.LockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			cmd.Wait()
		}
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start prometheus: %w", err)
	}
	return p, nil
}

func (p *promServer) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the PID we started, then SIGKILL if it lingers,
// and returns once the process is reaped. Signal refuses a reaped process,
// so a recycled PID is never hit.
func (p *promServer) stop() {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if p.exited() {
			return
		}
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.done:
			return
		case <-time.After(promStopGrace):
		}
	}
}

func (p *promServer) log() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 4<<10 {
		b = b[len(b)-4<<10:]
	}
	return strings.TrimSpace(string(b))
}

func (p *promServer) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("prometheus exited: %s", p.log())
		}
		resp, err := http.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/-/ready: HTTP %d", resp.StatusCode)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v: %v; log: %s", timeout, last, p.log())
}

// queryError is a query Prometheus refused (bad PromQL): polling again
// cannot help.
type queryError struct{ msg string }

func (e *queryError) Error() string { return e.msg }

// query runs an instant query and returns the number of series (or 1 for a
// scalar) in the result.
func (p *promServer) query(ctx context.Context, q string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", p.url+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("decoding answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if r.Status != "success" {
		if r.ErrorType == "bad_data" {
			return 0, &queryError{r.ErrorType + ": " + r.Error}
		}
		return 0, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	switch r.Data.ResultType {
	case "vector", "matrix":
		var series []json.RawMessage
		if err := json.Unmarshal(r.Data.Result, &series); err != nil {
			return 0, err
		}
		return len(series), nil
	case "scalar", "string":
		return 1, nil
	}
	return 0, fmt.Errorf("unexpected result type %q", r.Data.ResultType)
}

// targetsHealth summarises the scrape targets, for failure messages.
func (p *promServer) targetsHealth() string {
	resp, err := http.Get(p.url + "/api/v1/targets")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return err.Error()
	}
	var parts []string
	for _, tg := range r.Data.ActiveTargets {
		parts = append(parts, fmt.Sprintf("%s health=%s lastError=%q", tg.ScrapeURL, tg.Health, tg.LastError))
	}
	return strings.Join(parts, "; ")
}
