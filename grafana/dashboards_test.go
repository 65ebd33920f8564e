package grafana

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// datasourceUIDs are the datasource references a panel may use: the
// dashboard's DS_PROMETHEUS variable, or the provisioned uid directly.
var datasourceUIDs = map[string]bool{"${DS_PROMETHEUS}": true, "$DS_PROMETHEUS": true, "prometheus": true}

// TestDashboardsStatic checks the dashboards' structure and that every
// metric they name is one a freshly started node really exports.
func TestDashboardsStatic(t *testing.T) {
	ds := loadDashboards(t)
	node := startCluster(t)[0]
	samples, families := exportedMetrics(t, node.AdminAddr())
	if len(families) == 0 {
		t.Fatal("/metrics exported no metric families")
	}

	uids := map[string]string{}
	for _, d := range ds {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: missing uid or title", d.file)
		}
		if prev, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q already used by %s", d.file, d.UID, prev)
		}
		uids[d.UID] = d.file

		hasDSVar := false
		for _, v := range d.Templating.List {
			if v.Type == "datasource" && v.Name == "DS_PROMETHEUS" {
				hasDSVar = true
			}
		}
		if !hasDSVar {
			t.Errorf("%s: no datasource variable DS_PROMETHEUS", d.file)
		}

		ids := map[int]bool{}
		queries := 0
		for _, p := range allPanels(d.Panels) {
			where := fmt.Sprintf("%s panel %d %q", d.file, p.ID, p.Title)
			if p.ID == 0 || ids[p.ID] {
				t.Errorf("%s: missing or duplicate panel id", where)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: gridPos %+v outside Grafana's 24 columns", where, p.GridPos)
			}
			if p.Type == "row" {
				if len(p.Targets) > 0 {
					t.Errorf("%s: a row has queries", where)
				}
				continue
			}
			if !datasourceUIDs[p.Datasource.UID] || p.Datasource.Type != "prometheus" {
				t.Errorf("%s: datasource %+v, want prometheus ${DS_PROMETHEUS}", where, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no targets", where)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s target %s: empty expr", where, tg.RefID)
					continue
				}
				queries++
				if tg.Datasource.UID != "" && !datasourceUIDs[tg.Datasource.UID] {
					t.Errorf("%s target %s: datasource %+v", where, tg.RefID, tg.Datasource)
				}
				if _, err := substitute(tg.Expr); err != nil {
					t.Errorf("%s target %s: %v in %s", where, tg.RefID, err, tg.Expr)
				}
				checkMetricNames(t, where+" target "+tg.RefID, tg.Expr, samples, families)
			}
		}
		if queries == 0 {
			t.Errorf("%s: no queries at all", d.file)
		}
		for _, v := range d.variableQueries(t) {
			if _, err := variablePromQL(v.query); err != nil {
				t.Errorf("%s variable %s: %v", d.file, v.name, err)
			}
			checkMetricNames(t, d.file+" variable "+v.name, v.query, samples, families)
		}
	}
}

func checkMetricNames(t *testing.T, where, expr string, samples map[string]bool, families map[string]string) {
	t.Helper()
	names := metricRef.FindAllString(expr, -1)
	if len(names) == 0 {
		t.Errorf("%s: %s references no gatecast_/go_/process_ metric", where, expr)
	}
	for _, name := range names {
		if !knownMetric(name, samples, families) {
			t.Errorf("%s: metric %s is not exported by the node (expr %s)", where, name, expr)
		}
	}
}

// TestKnownMetricSuffixes pins the histogram/summary suffix rule of the
// static check, so it can neither accept an invented name nor refuse a real
// series.
func TestKnownMetricSuffixes(t *testing.T) {
	samples := map[string]bool{"gatecast_x_total": true}
	families := map[string]string{"gatecast_h_seconds": "histogram", "go_s_seconds": "summary", "gatecast_x_total": "counter"}
	for name, want := range map[string]bool{
		"gatecast_x_total":          true,
		"gatecast_h_seconds_bucket": true,
		"gatecast_h_seconds_sum":    true,
		"gatecast_h_seconds_count":  true,
		"go_s_seconds_count":        true,
		"go_s_seconds_bucket":       false, // summaries have no buckets
		"gatecast_x_total_count":    false, // a counter has no _count series
		"gatecast_y_total":          false,
	} {
		if got := knownMetric(name, samples, families); got != want {
			t.Errorf("knownMetric(%s) = %v, want %v", name, got, want)
		}
	}
	if _, err := substitute(`rate(x{job=~"$job"}[$__rate_interval]) and ${instance}`); err != nil {
		t.Errorf("substitute known variables: %v", err)
	}
	if _, err := substitute(`rate(x[$__unknown])`); err == nil {
		t.Error("substitute accepted an unknown variable")
	}
}

// TestProvisioning checks the provisioning files point Grafana at the
// dashboards and define the datasource uid the dashboards default to.
func TestProvisioning(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join("provisioning", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	dsYAML := read("datasources/prometheus.yaml")
	for _, want := range []string{"apiVersion: 1", "uid: prometheus", "type: prometheus"} {
		if !strings.Contains(dsYAML, want) {
			t.Errorf("datasources/prometheus.yaml lacks %q", want)
		}
	}
	dbYAML := read("dashboards/gatecast.yaml")
	for _, want := range []string{"apiVersion: 1", "type: file", "path: "} {
		if !strings.Contains(dbYAML, want) {
			t.Errorf("dashboards/gatecast.yaml lacks %q", want)
		}
	}
	for _, d := range loadDashboards(t) {
		for _, v := range d.raw["templating"].(map[string]any)["list"].([]any) {
			v := v.(map[string]any)
			if v["name"] != "DS_PROMETHEUS" {
				continue
			}
			cur, _ := v["current"].(map[string]any)
			if cur["value"] != "prometheus" {
				t.Errorf("%s: DS_PROMETHEUS defaults to %v, want the provisioned uid prometheus", d.file, cur["value"])
			}
		}
	}
}

// Bounds of the live test.
const (
	trafficFor    = 40 * time.Second // publishing stops after this, or at the end of the test
	publishEvery  = 100 * time.Millisecond
	queryDeadline = 30 * time.Second // for all queries together
)

// TestDashboardsLive runs a real Prometheus against a real node carrying
// traffic, rejections and a revocation, and requires every panel query and
// every variable query to return data.
func TestDashboardsLive(t *testing.T) {
	ds := loadDashboards(t)
	bin := prometheusBinary(t)
	nodes := startCluster(t)
	node, other := nodes[0], nodes[1]
	api := adminClient{t: t, addr: node.AdminAddr(), key: node.AdminKey()}

	// Rights: one fleet token that may publish and subscribe under sensors/.
	tagID := api.createTag("sensors/#")
	fleet := api.createToken("fleet", 10)
	api.grant(fleet.ID, tagID, "readwrite")
	victim := api.createToken("victim", 1)
	api.grant(victim.ID, tagID, "read")

	// The subscriber on the other node: publishes cross the cluster.
	sub := dialSeed(t, other.WSAddr(), fleet.Token, "sensors/#")
	pub := dialSeed(t, node.WSAddr(), fleet.Token, "sensors/#")

	// A revocation: delete a token whose session is live; the broker
	// closes it.
	v := dialSeed(t, node.WSAddr(), victim.Token, "sensors/#")
	// The 101 can reach the client before the broker has registered the
	// session; a delete before that would be a refusal, not a revocation.
	api.waitConnections(victim.ID, 1)
	api.do("DELETE", fmt.Sprintf("/api/v1/tokens/%d", victim.ID), nil, nil)
	if _, err := v.expectClose(5 * time.Second); err != nil {
		t.Fatalf("victim session not closed after its token was deleted: %v", err)
	}

	// A rejection: an unknown token gets a close frame instead of a session.
	bad := dialSeed(t, node.WSAddr(), "not-a-real-token", "sensors/#")
	if code, err := bad.expectClose(5 * time.Second); err != nil || code == ws.StatusNormalClosure {
		t.Fatalf("unknown token: close code %d, err %v; want a refusal", code, err)
	}

	// A rejected message: not the seed JSON shape.
	if err := pub.sendText(`not json`); err != nil {
		t.Fatal(err)
	}

	var received atomic.Int64
	var wg sync.WaitGroup
	ctx, stopTraffic := context.WithTimeout(context.Background(), trafficFor)
	t.Cleanup(func() { stopTraffic(); sub.conn.Close(); pub.conn.Close(); wg.Wait() })
	wg.Add(3)
	go func() { defer wg.Done(); sub.drain(&received) }()
	go func() { defer wg.Done(); pub.drain(&received) }()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(publishEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			if err := pub.sendText(fmt.Sprintf(`{"tag":"sensors/a/temp","message":{"c":%d}}`, i)); err != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	// MQTT clients: accepted and refused CONNECTs, a refused publish, an
	// offline persistent session and the session events (see mqttTraffic).
	mqttTraffic(t, api, node, tagID)

	prom := startPrometheus(t, bin, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gatecast
    metrics_path: /metrics
    static_configs:
      - targets: ['%s', '%s']
`, node.AdminAddr(), other.AdminAddr()))

	// Hostile clients, once Prometheus scrapes: a non-reading subscriber
	// fed a bulk publish and a ping flood trip the flow-control and
	// inbound limits (see hostileTraffic).
	waitHostile := hostileTraffic(t, api, node, fleet.Token)

	type check struct{ where, query string }
	var checks []check
	// Liveness first: these prove the traffic above reached Prometheus, so
	// the panel queries are not passing on idle zeros alone.
	for _, q := range []string{
		`gatecast_connections{job="gatecast"} > 0`,
		`gatecast_subscriptions{job="gatecast"} > 0`,
		`gatecast_messages_in_total{job="gatecast"} > 0`,
		`gatecast_messages_out_total{job="gatecast"} > 0`,
		`gatecast_connects_total{job="gatecast",result="accepted"} > 0`,
		`gatecast_connects_total{job="gatecast",result="rejected_auth"} > 0`,
		`gatecast_messages_rejected_total{job="gatecast",reason="invalid"} > 0`,
		`gatecast_revocations_total{job="gatecast",kind="token"} > 0`,
		`rate(gatecast_messages_in_total{job="gatecast"}[10s]) > 0`,
		`gatecast_cluster_forwarded_total{job="gatecast"} > 0`,
		`gatecast_cluster_forward_batches_total{job="gatecast"} > 0`,
		`gatecast_cluster_received_total{job="gatecast"} > 0`,
		`gatecast_cluster_nodes{job="gatecast"} == 2`,
		`gatecast_ws_handshake_seconds_count{job="gatecast"} > 0`,
		`gatecast_eventloop_lag_seconds_count{job="gatecast"} > 0`,
		`gatecast_match_cache_hits_total{job="gatecast"} > 0`,
		`gatecast_grant_cache_misses_total{job="gatecast"} > 0`,
		`gatecast_store_query_seconds_count{job="gatecast",store="postgres"} > 0`,
		`gatecast_revocation_seconds_count{job="gatecast"} > 0`,
		`gatecast_redis_request_seconds_count{job="gatecast"} > 0`,
		`gatecast_revocation_barrier_seconds_count{job="gatecast",outcome="confirmed"} > 0`,
		// hostileTraffic: the non-reading subscriber and its publisher.
		`max_over_time(gatecast_ws_outbox_bytes{job="gatecast"}[1m]) > 0`,
		`max_over_time(gatecast_ws_outbox_max_bytes{job="gatecast"}[1m]) > 0`,
		`gatecast_ws_backlogs_total{job="gatecast"} > 0`,
		`gatecast_producer_stalls_total{job="gatecast"} > 0`,
		`gatecast_producer_stall_seconds_total{job="gatecast"} > 0`,
		`gatecast_ws_frames_dropped_total{job="gatecast",reason="slow_consumer"} > 0`,
		`gatecast_deliveries_dropped_total{job="gatecast"} > 0`,
		`gatecast_ws_input_paused_total{job="gatecast"} > 0`,
		// hostileTraffic: the ping flood.
		`gatecast_ws_inbound_dropped_total{job="gatecast",reason="rate_limit"} > 0`,
		`gatecast_ws_closes_total{job="gatecast",reason="rate_limit"} > 0`,
		// mqttTraffic.
		`gatecast_connections{job="gatecast",protocol="mqtt3"} > 0`,
		`gatecast_connections{job="gatecast",protocol="mqtt5"} > 0`,
		`gatecast_ws_connections{job="gatecast",transport="tcp"} > 0`,
		`gatecast_sessions_offline{job="gatecast"} > 0`,
		`gatecast_mqtt_connects_total{job="gatecast",result="accepted"} > 0`,
		`gatecast_mqtt_connects_total{job="gatecast",result="bad_credentials"} > 0`,
		`gatecast_mqtt_publishes_refused_total{job="gatecast",reason="not_authorized"} > 0`,
		`gatecast_mqtt_deliveries_dropped_total{job="gatecast",reason="too_large"} > 0`,
		`gatecast_mqtt_takeovers_total{job="gatecast"} > 0`,
		`gatecast_mqtt_protocol_errors_total{job="gatecast"} > 0`,
		`gatecast_mqtt_sessions_resumed_total{job="gatecast"} > 0`,
		`gatecast_mqtt_sessions_expired_total{job="gatecast"} > 0`,
	} {
		checks = append(checks, check{"liveness", q})
	}
	for _, d := range ds {
		for _, v := range d.variableQueries(t) {
			q, err := variablePromQL(v.query)
			if err == nil {
				q, err = substitute(q)
			}
			if err != nil {
				t.Fatalf("%s variable %s: %v", d.file, v.name, err)
			}
			checks = append(checks, check{fmt.Sprintf("%s variable %s", d.file, v.name), q})
		}
		for _, tg := range d.targets() {
			q, err := substitute(tg.expr)
			if err != nil {
				t.Fatalf("%s panel %q: %v", tg.file, tg.panel, err)
			}
			checks = append(checks, check{fmt.Sprintf("%s panel %q target %s", tg.file, tg.panel, tg.refID), q})
		}
	}

	deadline := time.Now().Add(queryDeadline)
	for _, c := range checks {
		var n int
		var err error
		for {
			qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			n, err = prom.query(qctx, c.query)
			cancel()
			var qe *queryError
			if n > 0 || errors.As(err, &qe) || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("%s: query %s failed: %v", c.where, c.query, err)
		} else if n == 0 {
			t.Errorf("%s: query %s returned no data within %v (targets: %s)", c.where, c.query, queryDeadline, prom.targetsHealth())
		}
	}
	waitHostile()
	if received.Load() == 0 {
		t.Error("no client received a published message")
	}
	t.Logf("%d queries answered with data; %d messages delivered to clients", len(checks), received.Load())
}
