package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// revKindOptions are small revoke --kind runs: 20 affected sessions, 4
// unaffected, over two in-process workers.
func revKindOptions(o Options, kind string) Options {
	o.Kind, o.Conns, o.Unaffected = kind, 20, 4
	o.Settle = 200e6
	return o
}

// checkRevKind asserts a clean measurement of one kind over nodes nodes.
func checkRevKind(t *testing.T, r *Report, kind string, nodes int, cluster bool) {
	t.Helper()
	rk := r.RevKind
	if rk == nil {
		t.Fatalf("%s: no revoke_kind report", kind)
	}
	if rk.Kind != kind || rk.Nodes != nodes || rk.Affected != 20 || rk.Unaffected != 4 {
		t.Errorf("%s: %+v", kind, rk)
	}
	if rk.AdminCall.Status/100 != 2 || rk.AdminCall.Ms <= 0 {
		t.Errorf("%s: admin call %+v", kind, rk.AdminCall)
	}
	if rk.Signaled != 20 || rk.Missing != 0 || rk.Wrong != 0 || len(rk.WrongKinds) != 0 || rk.AffectedStillOpen != 0 {
		t.Errorf("%s: signaled %d, missing %d, wrong %d %v, affected still open %d", kind, rk.Signaled, rk.Missing, rk.Wrong, rk.WrongKinds, rk.AffectedStillOpen)
	}
	// A limit's excess in a cluster may include unaffected sessions (the
	// nodes that apply it first close their newest); elsewhere none.
	if !(kind == "limit" && cluster) && rk.UnaffectedClosed != 0 {
		t.Errorf("%s: unaffected closed %d", kind, rk.UnaffectedClosed)
	}
	l := rk.Latency
	if l.Count != 20 || l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.Max || rk.LastMs != l.Max || rk.FirstMs > l.P50 {
		t.Errorf("%s: latency %+v, first %v, last %v", kind, l, rk.FirstMs, rk.LastMs)
	}
	// The broker's own account: the node that took the call enforced it.
	if len(rk.Broker) != nodes || rk.Broker[0].Err != "" || rk.Broker[0].Revocations < 1 || rk.BrokerEnforcementMs < 0 {
		t.Errorf("%s: broker metrics %+v (enforcement %v ms)", kind, rk.Broker, rk.BrokerEnforcementMs)
	}
	wantOpen := int64(4) // the unaffected sessions
	if kind == "downgrade" {
		wantOpen = 24
		if rk.Probes == nil || rk.Probes.Sent == 0 || rk.Probes.Acked == 0 || rk.Probes.RoundTrip.Count == 0 || rk.Signal != "PUBACK 0x87" {
			t.Errorf("downgrade: probes %+v, signal %q", rk.Probes, rk.Signal)
		}
	}
	if r.Connections.Connected != 24 || r.Connections.OpenAtEnd != wantOpen || r.ErrorsTotal != 0 {
		t.Errorf("%s: connected %d, open at end %d (want %d), errors %v", kind, r.Connections.Connected, r.Connections.OpenAtEnd, wantOpen, r.Errors)
	}
}

// Every kind of rights change against one real node: the affected
// sessions all get the kind's signal (seed close codes; downgrade over
// MQTT 5), the unaffected none.
func TestRevokeKindsOneNode(t *testing.T) {
	n := testNode(t)
	base := smallOptions(n)
	base.MQTTURL = "tcp://" + n.MQTTAddr()
	want := map[string]string{"token-delete": "close 4002", "token-disable": "close 4002", "token-rotate": "close 4002",
		"perm-delete": "close 4003", "tag-edit": "close 4003", "tag-delete": "close 4003", "limit": "close 4004", "downgrade": "PUBACK 0x87"}
	for _, kind := range RevokeKinds {
		t.Run(kind, func(t *testing.T) {
			r, err := Run(context.Background(), "revoke", revKindOptions(base, kind))
			if err != nil {
				t.Fatalf("%v (report %+v)", err, r)
			}
			checkRevKind(t, r, kind, 1, false)
			if r.RevKind.Signal != want[kind] {
				t.Errorf("signal %q, want %q", r.RevKind.Signal, want[kind])
			}
			if kind == "downgrade" && (r.Protocol != protoMQTT || !strings.Contains(r.RevKind.Note, "MQTT 5")) {
				t.Errorf("downgrade over seed: protocol %q, note %q", r.Protocol, r.RevKind.Note)
			}
		})
	}
	// MQTT: DISCONNECT with the kind's reason code in MQTT 5, the close of
	// the connection in 3.1.1.
	for _, c := range []struct {
		kind    string
		version int
		signal  string
	}{
		{"token-disable", 5, "DISCONNECT 0x87"}, {"perm-delete", 5, "DISCONNECT 0x87"}, {"limit", 5, "DISCONNECT 0x97"},
		{"tag-edit", 4, "close (MQTT 3.1.1)"},
	} {
		t.Run("mqtt"+string(rune('0'+c.version))+"/"+c.kind, func(t *testing.T) {
			o := revKindOptions(base, c.kind)
			o.Protocol, o.MQTTVersion = protoMQTT, c.version
			r, err := Run(context.Background(), "revoke", o)
			if err != nil {
				t.Fatalf("%v (report %+v)", err, r)
			}
			checkRevKind(t, r, c.kind, 1, false)
			if r.RevKind.Signal != c.signal {
				t.Errorf("signal %q, want %q", r.RevKind.Signal, c.signal)
			}
		})
	}
}

// The same over a real 3-node cluster (Postgres + Redis): sessions spread
// over the nodes, the call to the first; every node's metrics are read.
func TestRevokeKindsCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postgres, Redis and three nodes")
	}
	nodes, _, _ := testCluster(t, 3)
	base := clusterOptions(nodes)
	for _, kind := range RevokeKinds {
		t.Run(kind, func(t *testing.T) {
			r, err := Run(context.Background(), "revoke", revKindOptions(base, kind))
			if err != nil {
				t.Fatalf("%v (report %+v)", err, r)
			}
			checkRevKind(t, r, kind, 3, true)
			for _, b := range r.RevKind.Broker {
				if b.Err != "" {
					t.Errorf("%s: metrics of %s: %s", kind, b.AdminURL, b.Err)
				}
			}
		})
	}
}

// `--kinds` on the command line: a line per kind, the table, an array of
// reports.
func TestRevokeKindsCLI(t *testing.T) {
	n := testNode(t)
	var out, errb bytes.Buffer
	code := RunCLI(context.Background(), []string{"revoke", "--kinds", "token-disable,tag-delete",
		"--url", "ws://" + n.WSAddr() + "/ws/brocker/", "--admin-url", "http://" + n.AdminAddr(), "--admin-key", n.AdminKey(),
		"--conns", "10", "--unaffected", "2", "--workers", "2", "--in-process", "--source-ips", "2", "--quiet",
	}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var reps []Report
	if err := json.Unmarshal(out.Bytes(), &reps); err != nil || len(reps) != 2 {
		t.Fatalf("stdout: %v\n%s", err, out.String())
	}
	for i, k := range []string{"token-disable", "tag-delete"} {
		if rk := reps[i].RevKind; rk == nil || rk.Kind != k || rk.Signaled != 10 || rk.Wrong != 0 {
			t.Errorf("report %d: %+v", i, rk)
		}
	}
	s := errb.String()
	for _, want := range []string{"revoke token-disable: 10/10 close 4002", "revoke tag-delete: 10/10 close 4003", "broker enforcement ms", "wrong closes"} {
		if !strings.Contains(s, want) {
			t.Errorf("stderr lacks %q:\n%s", want, s)
		}
	}
	errb.Reset()
	if code := RunCLI(context.Background(), []string{"revoke", "--kind", "moon"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "token-delete") {
		t.Errorf("bad kind: exit %d, %s", code, errb.String())
	}
	errb.Reset()
	if code := RunCLI(context.Background(), []string{"telemetry", "--kind", "limit"}, &out, &errb); code != 2 {
		t.Errorf("--kind on telemetry: exit %d, %s", code, errb.String())
	}
}

func TestParseMetricSums(t *testing.T) {
	in := `# HELP gatecast_revocation_seconds x
# TYPE gatecast_revocation_seconds histogram
gatecast_revocation_seconds_bucket{le="0.001"} 3
gatecast_revocation_seconds_sum 0.0125
gatecast_revocation_seconds_count 4
gatecast_revocation_barrier_seconds_sum{outcome="confirmed"} 0.5
gatecast_revocation_barrier_seconds_sum{outcome="pending"} 2 1700000000000
gatecast_revocation_barrier_seconds_count{outcome="confirmed"} 7
gatecast_revocation_seconds_sumx 99
`
	m, err := parseMetricSums(strings.NewReader(in), "gatecast_revocation_seconds_sum", "gatecast_revocation_seconds_count",
		"gatecast_revocation_barrier_seconds_sum", "gatecast_revocation_barrier_seconds_count")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"gatecast_revocation_seconds_sum": 0.0125, "gatecast_revocation_seconds_count": 4,
		"gatecast_revocation_barrier_seconds_sum": 2.5, "gatecast_revocation_barrier_seconds_count": 7}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (all %v)", k, m[k], v, m)
		}
	}
}

func TestExactLatency(t *testing.T) {
	var ns []int64
	for i := 100; i >= 1; i-- {
		ns = append(ns, int64(i)*1e6)
	}
	l := exactLatency(ns)
	if l.Count != 100 || l.P50 != 50 || l.P90 != 90 || l.P99 != 99 || l.Max != 100 || l.Mean != 50.5 {
		t.Errorf("%+v", l)
	}
	if (exactLatency(nil) != Latency{}) {
		t.Error("empty")
	}
}
