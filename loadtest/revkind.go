package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// `gatecast loadtest revoke --kind KIND`: how long one rights change takes
// to reach the sessions it affects, per kind of change. --conns sessions
// (2,000 by default) are affected, each subscribed to its own topic under
// one tag; --unaffected more (10 % by default) are not and must stay
// untouched. One admin call makes the change; every session's signal is
// timed where the event loop reads it, against the moment just before the
// call was sent, on CLOCK_MONOTONIC (one clock for every process of the
// machine, see clock.go).
//
//	sessions           tag A = <base>/a/#         tag U = <base>/u/#
//	affected i < N     subscribe <base>/a/<i>     token A: readwrite A (and U)
//	unaffected j ≥ N   subscribe <base>/u/<j>     token A: readwrite U; token-*: token U
//
// | kind          | admin call                                   | signal (seed / MQTT 5 / 3.1.1)      |
// |---------------|----------------------------------------------|-------------------------------------|
// | token-delete  | DELETE /tokens/A                             | 4002 / DISCONNECT 0x87 / close      |
// | token-disable | PATCH /tokens/A {"disabled":true}            | 4002 / DISCONNECT 0x87 / close      |
// | token-rotate  | POST /tokens/A/rotate                        | 4002 / DISCONNECT 0x87 / close      |
// | perm-delete   | DELETE /tokens/A/permissions/A               | 4003 / DISCONNECT 0x87 / close      |
// | downgrade     | PUT /tokens/A/permissions/A {"permission":"read"} | MQTT 5 only: PUBACK 0x87 of a probe |
// | tag-edit      | PATCH /tags/A {"pattern":"<base>/x/#"}       | 4003 / DISCONNECT 0x87 / close      |
// | tag-delete    | DELETE /tags/A                               | 4003 / DISCONNECT 0x87 / close      |
// | limit         | PATCH /tokens/A {"max_connections":M}        | 4004 / DISCONNECT 0x97 / close      |
//
// For the token-* kinds the unaffected sessions hold another token; for
// the others they hold the same token, on another tag, so that the change
// must pick the right sessions of one token. For limit the unaffected
// sessions connect first (a lowered limit closes the newest).

// RevokeKinds are the kinds of rights change of `loadtest revoke --kind`.
var RevokeKinds = []string{"token-delete", "token-disable", "token-rotate", "perm-delete", "downgrade", "tag-edit", "tag-delete", "limit"}

// RevKindReport is one rights change's enforcement as the clients saw it.
type RevKindReport struct {
	Kind       string   `json:"kind"`
	Nodes      int      `json:"nodes"` // broker URLs the sessions were spread over (round robin)
	Affected   int      `json:"affected_sessions"`
	Unaffected int      `json:"unaffected_sessions"`
	Signal     string   `json:"signal"` // what an affected session gets: "close 4002", "DISCONNECT 0x87", "PUBACK 0x87", "close"
	Note       string   `json:"note,omitempty"`
	AdminCall  RevCall  `json:"admin_call"`
	Signaled   int64    `json:"signaled"` // sessions that got the expected signal (limit: any session of the token)
	Missing    int64    `json:"missing"`  // affected sessions without it at the end of the wait
	Latency    Latency  `json:"latency"`  // admin call sent → each expected signal read
	FirstMs    float64  `json:"first_ms"`
	LastMs     float64  `json:"last_ms"` // admin call sent → the last expected signal
	WaitedMs   float64  `json:"waited_ms"`
	Wrong      int64    `json:"wrong_closes"` // sessions with another signal, unaffected sessions touched, affected sessions closed by a downgrade, a limit's excess
	WrongKinds []string `json:"wrong,omitempty"`
	// UnaffectedClosed: unaffected sessions closed (or, downgrade, with a
	// refused probe). For limit in cluster mode it is no error: the nodes
	// that apply the change first close their newest sessions until the
	// cluster-wide count is the limit, unaffected ones included.
	UnaffectedClosed  int64          `json:"unaffected_closed"`
	AffectedStillOpen int64          `json:"affected_still_open"` // close kinds: affected sessions still connected at the end
	Probes            *ProbeReport   `json:"probes,omitempty"`
	Broker            []NodeRevStats `json:"broker,omitempty"` // per --admin-url, deltas across the call
	// BrokerEnforcementMs is the rise of gatecast_revocation_seconds_sum
	// on the node that took the call, in ms (-1: its /metrics could not be
	// read); BrokerMaxMs the largest rise on any node.
	BrokerEnforcementMs float64 `json:"broker_enforcement_ms"`
	BrokerMaxMs         float64 `json:"broker_max_node_ms"`
}

// RevCall is the admin call that made the change.
type RevCall struct {
	Method string  `json:"method"`
	Path   string  `json:"path"`
	URL    string  `json:"url"`
	Status int     `json:"status"`
	Ms     float64 `json:"ms"`
	Body   string  `json:"body,omitempty"` // an answer other than 200/204, shortened
}

// ProbeReport is the downgrade's probes: every session keeps one QoS 1
// publish in flight, the next sent as soon as the last is acknowledged, so
// a refusal is seen at most one probe round trip after it takes effect.
//
// A session's refusal took effect between the sending of its last
// accepted probe and of its first refused one: LastAcceptedMs is the
// latest of those last accepted probes (admin call sent → that probe
// sent; negative when it was sent before the call), a lower bound of when
// the change reached every session.
// AcceptedAfterAnswer counts affected sessions with a probe sent after the
// admin call was answered and still accepted: a 2xx answer means the
// change is enforced, so it must be 0.
type ProbeReport struct {
	Sent                int64   `json:"sent"`
	Acked               int64   `json:"acked"`
	RoundTrip           Latency `json:"round_trip"` // probe → PUBACK: the downgrade latency's resolution
	LastAcceptedMs      float64 `json:"last_accepted_probe_ms"`
	AcceptedAfterAnswer int64   `json:"accepted_after_answer"`
}

// NodeRevStats is one node's revocation metrics across the call.
type NodeRevStats struct {
	AdminURL     string  `json:"admin_url"`
	Revocations  float64 `json:"revocation_count"` // rise of gatecast_revocation_seconds_count
	RevocationMs float64 `json:"revocation_ms"`    // rise of gatecast_revocation_seconds_sum, ms
	Barriers     float64 `json:"barrier_count,omitempty"`
	BarrierMs    float64 `json:"barrier_ms,omitempty"` // gatecast_revocation_barrier_seconds_sum (cluster)
	Err          string  `json:"error,omitempty"`
}

// revKindSignal is the signal kind and code the change gives an affected
// session, and its name.
func (o Options) revKindSignal() (kind uint8, code uint16, name string) {
	switch {
	case o.Kind == "downgrade":
		return sigRefused, 0x87, "PUBACK 0x87"
	case o.Protocol == protoMQTT && o.MQTTVersion == 4:
		return sigLost, 0, "close (MQTT 3.1.1)"
	case o.Protocol == protoMQTT && o.Kind == "limit":
		return sigDisconnect, 0x97, "DISCONNECT 0x97"
	case o.Protocol == protoMQTT:
		return sigDisconnect, 0x87, "DISCONNECT 0x87"
	case strings.HasPrefix(o.Kind, "token-"):
		return sigClose, 4002, "close 4002"
	case o.Kind == "limit":
		return sigClose, 4004, "close 4004"
	}
	return sigClose, 4003, "close 4003"
}

func signalName(kind uint8, code uint16) string {
	switch kind {
	case sigClose:
		return "close " + strconv.Itoa(int(code))
	case sigDisconnect:
		return closeKey{code: code, mqtt: mqttKindDisconn}.String()
	case sigRefused:
		return closeKey{code: code, mqtt: mqttKindPuback}.String()
	case sigLost:
		return "closed without a close frame or DISCONNECT"
	}
	return "none"
}

// revKindState is what the set-up made.
type revKindState struct {
	base       string
	tagA, tagU int64
	tokA, tokU ltToken
}

// startRevKind creates the tags and tokens of one kind and the workers.
func (r *run) startRevKind(ctx context.Context) error {
	o := r.o
	stamp := strconv.FormatInt(r.epoch.UnixNano()/1e6, 36)
	ks := &revKindState{base: "lt-rv/" + stamp + "-" + o.Kind}
	r.revKind = ks
	var err error
	if ks.tagA, err = r.createTag(ctx, ks.base+"/a/#"); err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if ks.tagU, err = r.createTag(ctx, ks.base+"/u/#"); err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	prefix := "loadtest-revoke-" + o.Kind + "-" + stamp
	if ks.tokA, err = r.createToken(ctx, prefix+"-a", ks.tagA); err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	secrets := []string{ks.tokA.Secret}
	switch {
	case o.Unaffected == 0:
	case strings.HasPrefix(o.Kind, "token-"):
		if ks.tokU, err = r.createToken(ctx, prefix+"-u", ks.tagU); err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
		secrets = append(secrets, ks.tokU.Secret)
	default:
		if err := r.api.do(ctx, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", ks.tokA.ID, ks.tagU), map[string]any{"permission": "readwrite"}, nil); err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
	}
	_, _, sig := o.revKindSignal()
	r.rep.RevKind = &RevKindReport{Kind: o.Kind, Affected: o.Conns, Unaffected: o.Unaffected, Signal: sig, Note: o.note,
		Nodes: len(r.deviceURLs()), BrokerEnforcementMs: -1}
	return r.launch(ctx, secrets, "", "", func(sp *workerSpec) {
		sp.Layout, sp.TopicBase, sp.Affected = layoutRev, ks.base, o.Conns
		sp.ConfirmPing = o.Protocol != protoMQTT
	})
}

// deviceURLs are the broker URLs the devices connect to.
func (r *run) deviceURLs() []string {
	if r.o.Protocol == protoMQTT {
		return splitURLs(r.o.MQTTURL)
	}
	return splitURLs(r.o.URL)
}

func (r *run) createTag(ctx context.Context, pattern string) (int64, error) {
	var t struct {
		ID int64 `json:"id"`
	}
	if err := r.api.do(ctx, "POST", "/api/v1/tags", map[string]any{"pattern": pattern}, &t); err != nil {
		return 0, err
	}
	r.createdTags = append(r.createdTags, t.ID)
	return t.ID, nil
}

// createToken creates a token (no limit) with readwrite on tagID.
func (r *run) createToken(ctx context.Context, name string, tagID int64) (ltToken, error) {
	t, err := r.api.tokenOnTag(ctx, name, tagID, "readwrite")
	if t.ID != 0 {
		r.created = append(r.created, t.ID)
	}
	return t, err
}

// revKindCall is the admin call of the kind.
func (r *run) revKindCall() (method, path string, body any) {
	ks, o := r.revKind, r.o
	tok := fmt.Sprintf("/api/v1/tokens/%d", ks.tokA.ID)
	perm := fmt.Sprintf("%s/permissions/%d", tok, ks.tagA)
	tag := fmt.Sprintf("/api/v1/tags/%d", ks.tagA)
	switch o.Kind {
	case "token-delete":
		return "DELETE", tok, nil
	case "token-disable":
		return "PATCH", tok, map[string]any{"disabled": true}
	case "token-rotate":
		return "POST", tok + "/rotate", nil
	case "perm-delete":
		return "DELETE", perm, nil
	case "downgrade":
		return "PUT", perm, map[string]any{"permission": "read"}
	case "tag-edit":
		return "PATCH", tag, map[string]any{"pattern": ks.base + "/x/#"}
	case "tag-delete":
		return "DELETE", tag, nil
	case "limit":
		return "PATCH", tok, map[string]any{"max_connections": o.Unaffected}
	}
	return "", "", nil
}

// timedCall sends the admin call and returns its status, answer and the
// CLOCK_MONOTONIC times just before the request was sent and once the
// answer was read. The request is built beforehand, so t0 is the send.
func (r *run) timedCall(ctx context.Context, method, path string, body any) (status int, answer []byte, t0, t1 int64, err error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.api.base+path, rd)
	if err != nil {
		return 0, nil, 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+r.api.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	t0 = monoNow()
	resp, err := r.api.http.Do(req)
	if err != nil {
		return 0, nil, t0, monoNow(), err
	}
	answer, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, answer, t0, monoNow(), nil
}

// revocationMetrics are the sums a node's /metrics has of the revocation
// histograms: gatecast_revocation_seconds_{sum,count} and
// gatecast_revocation_barrier_seconds_{sum,count} (all outcomes).
func (a *adminAPI) revocationMetrics(ctx context.Context) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", a.base+"/metrics", nil)
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetricSums(resp.Body, "gatecast_revocation_seconds_sum", "gatecast_revocation_seconds_count",
		"gatecast_revocation_barrier_seconds_sum", "gatecast_revocation_barrier_seconds_count")
}

// parseMetricSums adds up, per name, the samples of the Prometheus text
// exposition whose metric name is one of names (whatever their labels).
func parseMetricSums(rd io.Reader, names ...string) (map[string]float64, error) {
	m := make(map[string]float64, len(names))
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 {
			continue
		}
		name := line[:end]
		if !slices.Contains(names, name) {
			continue
		}
		rest := line[end:]
		if rest[0] == '{' {
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				continue
			}
			rest = rest[j+1:]
		}
		// The value, then an optional timestamp.
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		m[name] += v
	}
	return m, sc.Err()
}

// scrapeRevocation reads every admin URL's revocation sums (an error per
// node that could not be read).
func (r *run) scrapeRevocation(ctx context.Context) ([]map[string]float64, []error) {
	urls := splitURLs(r.o.AdminURL)
	ms := make([]map[string]float64, len(urls))
	errs := make([]error, len(urls))
	for i, u := range urls {
		ms[i], errs[i] = newAdminAPI(u, r.o.AdminKey).revocationMetrics(ctx)
	}
	return ms, errs
}

// revKindScenario connects the sessions, makes the change and times it.
func (r *run) revKindScenario(ctx context.Context) error {
	o, rk := r.o, r.rep.RevKind
	n, m := o.Conns, o.Unaffected
	if o.Kind == "limit" {
		// A lowered limit closes the newest sessions: the ones that must
		// stay connect first.
		st, err := r.fl.all(ctx, command{Op: "connect", From: n, To: n + m})
		if err != nil {
			return err
		}
		for _, s := range st {
			r.preConnected += s.Connected
		}
	}
	if _, err := r.connectAll(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	before, _ := r.scrapeRevocation(ctx)
	kind, code, _ := o.revKindSignal()
	if _, err := r.fl.all(ctx, command{Op: "revmark", SigKind: kind, SigCode: code}); err != nil {
		return err
	}
	if o.Kind == "downgrade" {
		if _, err := r.fl.all(ctx, command{Op: "probe", Probe: true}); err != nil {
			return err
		}
		// Let the probes reach a steady stream before the change.
		if err := sleep(ctx, settle); err != nil {
			return err
		}
	}
	method, path, body := r.revKindCall()
	rk.AdminCall = RevCall{Method: method, Path: path, URL: r.api.base}
	status, answer, t0, t1, err := r.timedCall(ctx, method, path, body)
	rk.AdminCall.Status, rk.AdminCall.Ms = status, float64(t1-t0)/1e6
	if err != nil {
		return fmt.Errorf("revoke %s: admin call: %w", o.Kind, err)
	}
	if status != 200 && status != 204 {
		rk.AdminCall.Body = string(bytes.TrimSpace(answer[:min(len(answer), 300)]))
	}
	if status/100 != 2 {
		return fmt.Errorf("revoke %s: %s %s: HTTP %d: %s", o.Kind, method, path, status, rk.AdminCall.Body)
	}
	// Wait for the expected signals (polling the workers' counts), then
	// Settle longer for wrong ones.
	deadline := time.Now().Add(o.CloseTimeout)
	var got int64
	for {
		st, err := r.fl.all(ctx, command{Op: "counts"})
		if err != nil {
			return err
		}
		got = 0
		for _, s := range st {
			got += s.RevSignals
		}
		if got >= int64(n) || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	rk.WaitedMs = float64(monoNow()-t0) / 1e6
	if err := sleep(ctx, o.Settle); err != nil {
		return err
	}
	if o.Kind == "downgrade" {
		if _, err := r.fl.all(ctx, command{Op: "probe", Probe: false}); err != nil {
			return err
		}
	}
	// The answers to the close frames, held back during the measurement,
	// go out now; the broker then ends those connections.
	if _, err := r.fl.all(ctx, command{Op: "revecho"}); err != nil {
		return err
	}
	wantOpen := int64(m)
	if o.Kind == "downgrade" {
		wantOpen = int64(n + m)
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		st, err := r.fl.all(ctx, command{Op: "counts"})
		if err != nil {
			return err
		}
		var open int64
		for _, s := range st {
			open += s.OpenDevices
		}
		if open <= wantOpen {
			break
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	st, err := r.fl.all(ctx, command{Op: "revtimes"})
	if err != nil {
		return err
	}
	after, aerrs := r.scrapeRevocation(ctx)
	r.revKindOutcome(st, t0, t1, kind, code)
	r.revKindBroker(before, after, aerrs)
	if rk.Missing > 0 {
		return fmt.Errorf("revoke %s: %d of %d affected sessions got no %s within %s", o.Kind, rk.Missing, n, rk.Signal, o.CloseTimeout)
	}
	return nil
}

// revKindOutcome judges every session's signal.
func (r *run) revKindOutcome(st []status, t0, t1 int64, expKind uint8, expCode uint16) {
	o, rk := r.o, r.rep.RevKind
	n := o.Conns
	cluster := rk.Nodes > 1
	var lat []int64
	wrong := map[string]int64{}
	probeHist := newHist()
	probes := &ProbeReport{}
	haveOK := false
	workers := len(st)
	devices := r.shape.devices
	for w, s := range st {
		lo := devices * w / workers
		probes.Sent += s.ProbesSent
		probes.Acked += s.ProbesAcked
		if s.ProbeHist != "" {
			if h, err := decodeHist(s.ProbeHist); err == nil {
				probeHist.Merge(h)
			}
		}
		for j, ok := range s.ProbeOK {
			if lo+j >= n || ok == 0 {
				continue
			}
			if v := float64(ok-t0) / 1e6; !haveOK || v > probes.LastAcceptedMs {
				probes.LastAcceptedMs, haveOK = v, true
			}
			if ok > t1 {
				probes.AcceptedAfterAnswer++
			}
		}
		for j, at := range s.RevTimes {
			id := lo + j
			sig := s.RevCodes[j]
			open := sig&revOpen != 0
			kind, code := uint8(sig>>16&0x7fff), uint16(sig)
			affected := id < n
			who := "unaffected"
			if affected {
				who = "affected"
			}
			expected := kind == expKind && code == expCode && kind != 0
			switch {
			case o.Kind == "limit" && expected:
				// Any session of the token may be part of the excess.
				lat = append(lat, at-t0)
				if !affected {
					rk.UnaffectedClosed++
					if !cluster {
						wrong[who+" closed: "+signalName(kind, code)]++
					}
				}
			case affected && expected:
				lat = append(lat, at-t0)
				if o.Kind == "downgrade" && !open {
					wrong["affected closed after its refusal"]++
				}
			case kind != 0:
				wrong[who+": "+signalName(kind, code)]++
				if !affected {
					rk.UnaffectedClosed++
				}
			case !affected && !open:
				wrong["unaffected closed without a signal"]++
				rk.UnaffectedClosed++
			case affected && o.Kind == "downgrade" && !open:
				wrong["affected closed without a signal"]++
			}
			if affected && open && o.Kind != "downgrade" && o.Kind != "limit" {
				rk.AffectedStillOpen++
			}
		}
	}
	rk.Signaled = int64(len(lat))
	if o.Kind == "limit" && rk.Signaled > int64(n) {
		wrong[fmt.Sprintf("limit: %d sessions closed beyond the excess of %d", rk.Signaled-int64(n), n)] += rk.Signaled - int64(n)
	}
	if rk.Signaled < int64(n) {
		rk.Missing = int64(n) - rk.Signaled
	}
	for k, v := range wrong {
		rk.Wrong += v
		rk.WrongKinds = append(rk.WrongKinds, fmt.Sprintf("%s: %d", k, v))
	}
	slices.Sort(rk.WrongKinds)
	rk.Latency = exactLatency(lat)
	if len(lat) > 0 {
		rk.FirstMs = float64(slices.Min(lat)) / 1e6
		rk.LastMs = float64(slices.Max(lat)) / 1e6
	}
	if o.Kind == "downgrade" {
		probes.RoundTrip = latencyOf(probeHist)
		rk.Probes = probes
		if probes.AcceptedAfterAnswer > 0 {
			rk.Wrong += probes.AcceptedAfterAnswer
			rk.WrongKinds = append(rk.WrongKinds, fmt.Sprintf("affected: probe sent after the answer accepted: %d", probes.AcceptedAfterAnswer))
		}
	}
}

// revKindBroker fills the per-node revocation metrics.
func (r *run) revKindBroker(before, after []map[string]float64, errs []error) {
	rk := r.rep.RevKind
	urls := splitURLs(r.o.AdminURL)
	for i, u := range urls {
		ns := NodeRevStats{AdminURL: u}
		switch {
		case errs[i] != nil:
			ns.Err = errs[i].Error()
		case before[i] == nil:
			ns.Err = "/metrics could not be read before the call"
		default:
			d := func(k string) float64 { return after[i][k] - before[i][k] }
			ns.Revocations = d("gatecast_revocation_seconds_count")
			ns.RevocationMs = round3(d("gatecast_revocation_seconds_sum") * 1000)
			ns.Barriers = d("gatecast_revocation_barrier_seconds_count")
			ns.BarrierMs = round3(d("gatecast_revocation_barrier_seconds_sum") * 1000)
			if i == 0 {
				rk.BrokerEnforcementMs = ns.RevocationMs
			}
			rk.BrokerMaxMs = max(rk.BrokerMaxMs, ns.RevocationMs)
		}
		rk.Broker = append(rk.Broker, ns)
	}
}

// exactLatency is the distribution of ns durations, exact (sorted), in ms.
func exactLatency(ns []int64) Latency {
	if len(ns) == 0 {
		return Latency{}
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return float64(s[max(0, min(i, len(s)-1))]) / 1e6
	}
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	return Latency{Count: int64(len(s)), P50: q(.50), P90: q(.90), P99: q(.99), P999: q(.999),
		Max: float64(s[len(s)-1]) / 1e6, Mean: sum / float64(len(s)) / 1e6}
}

// parseKinds expands a --kind value: one kind, a comma-separated list, or
// "all".
func parseKinds(v string) ([]string, error) {
	if strings.TrimSpace(v) == "all" {
		return RevokeKinds, nil
	}
	var out []string
	for _, k := range strings.Split(v, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(RevokeKinds, k) {
			return nil, fmt.Errorf("--kind %q: want one of %s, or all", k, strings.Join(RevokeKinds, ", "))
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("--kind is empty")
	}
	return out, nil
}

// writeRevKindTable prints one row per kind.
func writeRevKindTable(w io.Writer, reps []*Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tnodes\tsessions\tsignal\tadmin call ms\tp50 ms\tp99 ms\tlast ms\tbroker enforcement ms\twrong closes\tunaffected closed\t")
	for _, rep := range reps {
		rk := rep.RevKind
		if rk == nil {
			continue
		}
		enf := "n/a"
		if rk.BrokerEnforcementMs >= 0 {
			enf = fmt.Sprintf("%.2f", rk.BrokerEnforcementMs)
			if rk.Nodes > 1 {
				enf += fmt.Sprintf(" (max node %.2f)", rk.BrokerMaxMs)
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%d\t%d\t\n", rk.Kind, rk.Nodes, rk.Signaled, rk.Signal,
			rk.AdminCall.Ms, rk.Latency.P50, rk.Latency.P99, rk.LastMs, enf, rk.Wrong, rk.UnaffectedClosed)
	}
	tw.Flush()
}

// revKindLine is the one-line summary of a kind printed as it ends.
func revKindLine(rk *RevKindReport) string {
	s := fmt.Sprintf("revoke %s: %d/%d %s, admin call %.2f ms, p50 %.2f p99 %.2f last %.2f ms, broker %.2f ms, wrong %d, unaffected closed %d",
		rk.Kind, rk.Signaled, rk.Affected, rk.Signal, rk.AdminCall.Ms, rk.Latency.P50, rk.Latency.P99, rk.LastMs, rk.BrokerEnforcementMs, rk.Wrong, rk.UnaffectedClosed)
	if p := rk.Probes; p != nil {
		s += fmt.Sprintf(", probe round trip p50 %.2f ms, last accepted probe sent at %.2f ms, accepted after the answer %d", p.RoundTrip.P50, p.LastAcceptedMs, p.AcceptedAfterAnswer)
	}
	return s
}
