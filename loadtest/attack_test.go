package loadtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestParseAttackFlags(t *testing.T) {
	var stderr bytes.Buffer
	o, quiet, err := parseAttackFlags("flood", []string{"--conns", "2", "--rss-ceiling", "512MiB", "--write-size", "4KiB", "--max-bytes", "1GB", "--valid-token", "--frame", "ping", "--quiet", "--duration", "3s"}, &stderr)
	if err != nil {
		t.Fatal(err, stderr.String())
	}
	if !quiet || o.Conns != 2 || o.RSSCeiling != 512<<20 || o.WriteSize != 4<<10 || o.MaxBytes != 1e9 || !o.ValidToken || o.Frame != "ping" || o.Duration != 3*time.Second {
		t.Errorf("parsed %+v quiet=%v", o, quiet)
	}
	// Defaults: the documented ones, the ceiling always on.
	o, _, err = parseAttackFlags("tagstorm", nil, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	o = o.withDefaults("tagstorm")
	if o.Loops != 50 || o.Tags != 1100 || o.RSSCeiling != 4<<30 || o.FDCeiling != 15000 || o.Duration != 15*time.Second || o.Warmup != 3*time.Second || o.AdminTimeout != 2*time.Minute || !o.Cleanup {
		t.Errorf("tagstorm defaults %+v", o)
	}
	if err := o.validate("tagstorm"); err != nil {
		t.Errorf("default tagstorm options invalid: %v", err)
	}
	for _, sc := range AttackScenarios {
		o, _, err := parseAttackFlags(sc, nil, &stderr)
		if err != nil {
			t.Fatal(err)
		}
		o = o.withDefaults(sc)
		if err := o.validate(sc); err != nil {
			t.Errorf("%s: defaults invalid: %v", sc, err)
		}
		if o.Duration != attackDurations[sc] {
			t.Errorf("%s: duration %s", sc, o.Duration)
		}
	}
	if _, _, err := parseAttackFlags("flood", []string{"extra"}, &stderr); err == nil {
		t.Error("an extra argument was accepted")
	}
	if _, _, err := parseAttackFlags("flood", []string{"--rss-ceiling", "lots"}, &stderr); err == nil {
		t.Error("a bad size was accepted")
	}
}

func TestAttackValidate(t *testing.T) {
	base := func(sc string) AttackOptions {
		return AttackOptions{URL: "ws://127.0.0.1:1/ws/brocker/"}.withDefaults(sc)
	}
	bad := map[string]func(o *AttackOptions) string{
		"too many tags": func(o *AttackOptions) string { o.Tags = 3000; return "tagstorm" },
		"tag prefix":    func(o *AttackOptions) string { o.TagPrefix = "a/b"; return "tagstorm" },
		"warmup":        func(o *AttackOptions) string { o.Warmup = o.Duration; return "tagstorm" },
		"frame":         func(o *AttackOptions) string { o.Frame = "huge"; return "flood" },
		"conns":         func(o *AttackOptions) string { o.Conns = -1; return "flood" },
		"two urls":      func(o *AttackOptions) string { o.URL += ",ws://127.0.0.1:2/"; return "flood" },
		"ceiling off":   func(o *AttackOptions) string { o.RSSCeiling = 1; return "flood" },
		"grants":        func(o *AttackOptions) string { o.Grants = -5; return "grants" },
		"scenario":      func(o *AttackOptions) string { return "nosuch" },
	}
	for name, f := range bad {
		o := base("tagstorm")
		sc := f(&o)
		if err := o.validate(sc); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The default 1,100 tags fit in the broker's default 8 KiB request.
	o := base("tagstorm")
	u, _ := url.Parse(o.URL)
	if n := len(upgradeRequest(u, "gc_"+strings.Repeat("x", 43), stormTags("t", 1100))); n > maxUpgradeRequest || n < 6000 {
		t.Errorf("1,100-tag request: %d bytes", n)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "64KiB": 64 << 10, "4GiB": 4 << 30, "4 GiB": 4 << 30, "1.5m": 3 << 19, "100MB": 100e6, "0": 0, "4.00 GiB": 4 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "4XB", "GiB", "1e30GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
	if s := fmtSize(4 << 30); s != "4.00 GiB" {
		t.Errorf("fmtSize %q", s)
	}
	var b byteSize
	if err := b.Set(b.String()); err != nil {
		t.Errorf("a printed size does not parse back: %v", err)
	}
}

func TestStormTagsAndRequest(t *testing.T) {
	if s := stormTags("t", 3); s != "t/0,t/1,t/2" {
		t.Errorf("stormTags %q", s)
	}
	u, _ := url.Parse("ws://127.0.0.1:8080/ws/brocker/?x=1")
	req := string(upgradeRequest(u, "gc_secret", "a/b,c"))
	for _, want := range []string{"GET /ws/brocker/?x=1 HTTP/1.1\r\n", "Host: 127.0.0.1:8080\r\n", "Upgrade: websocket\r\n", "Sec-WebSocket-Version: 13\r\n", "Authorization: Token gc_secret\r\n", "Tag: a/b,c\r\n"} {
		if !strings.Contains(req, want) {
			t.Errorf("request lacks %q:\n%s", want, req)
		}
	}
	if !strings.HasSuffix(req, "\r\n\r\n") || strings.Count(req, "\r\n\r\n") != 1 {
		t.Errorf("request head not terminated once: %q", req)
	}
	if a := loopbackAddrs(u, 3); len(a) != 3 || a[2].String() != "127.0.0.3:0" {
		t.Errorf("loopback addrs %v", a)
	}
	if a := loopbackAddrs(&url.URL{Host: "example.com:80"}, 3); a != nil {
		t.Errorf("non-loopback broker got local addresses %v", a)
	}
}

// Every copy is a whole, final, masked client frame with the payload, each
// with its own key.
func TestRepeatFrames(t *testing.T) {
	for _, tc := range []struct {
		op      ws.OpCode
		payload string
		size    int
	}{{ws.OpText, "", 64 << 10}, {ws.OpPing, "", 100}, {ws.OpText, `{"tag":"a","message":1}`, 1000}, {ws.OpText, "x", 1}} {
		b := repeatFrames(tc.op, []byte(tc.payload), tc.size)
		one := 6 + len(tc.payload)
		if len(b)%one != 0 || len(b) > max(tc.size, one) || len(b) < max(one, tc.size-one+1) {
			t.Errorf("%v %q size %d: %d bytes", tc.op, tc.payload, tc.size, len(b))
		}
		masks := map[[4]byte]bool{}
		r := bytes.NewReader(b)
		for r.Len() > 0 {
			h, err := ws.ReadHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			if !h.Fin || !h.Masked || h.OpCode != tc.op || h.Length != int64(len(tc.payload)) {
				t.Fatalf("frame header %+v", h)
			}
			p := make([]byte, h.Length)
			io.ReadFull(r, p)
			ws.Cipher(p, h.Mask, 0)
			if string(p) != tc.payload {
				t.Fatalf("payload %q", p)
			}
			masks[h.Mask] = true
		}
		if n := len(b) / one; n > 100 && len(masks) < n/2 {
			t.Errorf("%d frames share %d masks", n, len(masks))
		}
	}
	// The empty text frame of the flood is 6 bytes.
	if n := len(appendClientFrame(nil, ws.OpText, nil, [4]byte{})); n != 6 {
		t.Errorf("empty text frame: %d bytes", n)
	}
}

func serverFrame(op ws.OpCode, p []byte) []byte {
	b := []byte{0x80 | byte(op), byte(len(p))}
	return append(b, p...)
}

func TestReadFrames(t *testing.T) {
	var in bytes.Buffer
	in.Write(serverFrame(ws.OpText, []byte(`{"tag":"a","message":1}`)))
	in.Write(serverFrame(ws.OpPong, nil))
	cl := binary.BigEndian.AppendUint16(nil, 4003)
	in.Write(serverFrame(ws.OpClose, append(cl, "invalid token"...)))
	var ops []ws.OpCode
	var closes []int
	e := readFrames(bufio.NewReader(&in), func(op ws.OpCode) { ops = append(ops, op) }, func(c int, _ string) { closes = append(closes, c) })
	if e.closeCode != 4003 || e.closeReason != "invalid token" || e.frames != 2 || e.how != endEOF || e.closeAt.IsZero() || e.endAt.Before(e.closeAt) {
		t.Errorf("read end %+v", e)
	}
	if len(ops) != 2 || ops[0] != ws.OpText || ops[1] != ws.OpPong || len(closes) != 1 || closes[0] != 4003 {
		t.Errorf("ops %v closes %v", ops, closes)
	}
	// A masked frame from the server is a protocol error.
	e = readFrames(bufio.NewReader(bytes.NewReader(appendClientFrame(nil, ws.OpText, []byte("x"), [4]byte{1, 2, 3, 4}))), nil, nil)
	if e.how != endError || e.err == nil {
		t.Errorf("masked server frame: %+v", e)
	}
}

// upgrade reads the head and leaves what follows (a close frame) in the
// reader; a refusal is an errHTTPStatus, counted by its code.
func TestUpgrade(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answers := []string{
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n" + string(serverFrame(ws.OpClose, append(binary.BigEndian.AppendUint16(nil, 4003), "no"...))),
		"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n",
	}
	go func() {
		for _, a := range answers {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			for {
				l, err := br.ReadString('\n')
				if err != nil || l == "\r\n" {
					break
				}
			}
			c.Write([]byte(a))
			c.Close()
		}
	}()
	u, _ := url.Parse("ws://" + ln.Addr().String() + "/ws/brocker/")
	rc, err := dialRaw(t.Context(), u, nil, upgradeRequest(u, "s", "a"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e := readFrames(rc.r, nil, nil)
	rc.c.Close()
	if e.closeCode != 4003 || e.closeReason != "no" {
		t.Errorf("close frame after the head: %+v", e)
	}
	_, err = dialRaw(t.Context(), u, nil, upgradeRequest(u, "s", "a"), 5*time.Second)
	var hs errHTTPStatus
	if !errors.As(err, &hs) || hs.code != 431 || upgradeError(err) != "handshake_http_431" {
		t.Errorf("refused upgrade: %v (%s)", err, upgradeError(err))
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP gatecast_messages_rejected_total x
# TYPE gatecast_messages_rejected_total counter
gatecast_messages_rejected_total{reason="denied"} 7
gatecast_messages_rejected_total{reason="invalid",x="a b}"} 3
gatecast_messages_in_total 1.5e+06
gatecast_messages_in_total_other 99
process_resident_memory_bytes 2.5e+07
`
	m, err := parseMetrics(strings.NewReader(in), "gatecast_messages_rejected_total", "gatecast_messages_in_total", "process_resident_memory_bytes", "absent")
	if err != nil {
		t.Fatal(err)
	}
	if m["gatecast_messages_rejected_total"] != 10 || m["gatecast_messages_in_total"] != 1.5e6 || m["process_resident_memory_bytes"] != 2.5e7 {
		t.Errorf("parsed %v", m)
	}
	if _, ok := m["absent"]; ok {
		t.Error("an absent metric was reported")
	}
}

func TestCountListed(t *testing.T) {
	for in, want := range map[string]int{
		`[]`: 0,
		`[{"id":1,"subscriptions":["a","b"]},{"id":2}]`:             2,
		`{"items":[{"id":1}],"total":57,"next":"abc"}`:              57,
		`{"connections":[{"id":1},{"id":2}],"next":null}`:           2,
		`{"next":{"a":[1]},"data":[{"id":1}]}`:                      1,
		`{"connections":[{"id":3}],"total":12,"next_cursor":"abc"}`: 12,
		`{"connections":[],"total":0,"next_cursor":""}`:             0,
	} {
		if n, err := countListed(strings.NewReader(in)); err != nil || n != want {
			t.Errorf("countListed(%s) = %d, %v; want %d", in, n, err, want)
		}
	}
	for _, in := range []string{`"x"`, `{"a":1}`, `[1,`} {
		if _, err := countListed(strings.NewReader(in)); err == nil {
			t.Errorf("countListed(%s) accepted", in)
		}
	}
}

func TestTenths(t *testing.T) {
	d := make([]int64, 100)
	for i := range d {
		d[i] = int64(i/10+1) * 1e6
	}
	got := tenths(d)
	if len(got) != 10 || got[0] != 1 || got[9] != 10 {
		t.Errorf("tenths %v", got)
	}
	if got := tenths([]int64{2e6, 4e6}); len(got) != 2 || got[1] != 4 {
		t.Errorf("tenths of 2: %v", got)
	}
	if tenths(nil) != nil {
		t.Error("tenths of nothing")
	}
}

// The table names the figures PERFORMANCE.md records; the JSON report
// never carries the admin key.
func TestAttackReportOutput(t *testing.T) {
	accepted := int64(10)
	rep := &AttackReport{
		Scenario: "tagstorm", Started: time.Unix(0, 0), Seconds: 3, Aborted: "rss_ceiling",
		Options: AttackOptions{URL: "ws://x/", AdminKey: "sekrit-admin-key"},
		Broker:  &AttackBroker{Source: "proc", PID: 42, RSSStart: 20 << 20, RSSPeak: 5 << 30, RSSCeiling: 4 << 30, RSSCeilingHit: true, CeilingHitAt: 2.5},
		TagStorm: &TagStormReport{Loops: 50, Tags: 1100, Disable: DisableCall{Ms: 77000, Status: 200}, WitnessesUp: 4, Witnesses4002: 4, Witness4002Ms: 76900,
			SessionsAfterDisable: 3, SessionsLeft: 3},
		Errors: map[string]int64{"dial_refused": 2}, ErrorsTotal: 2,
	}
	var out bytes.Buffer
	writeAttackTable(&out, rep)
	for _, want := range []string{"ABORTED", "rss_ceiling", `PATCH {"disabled":true}`, "77000.0 ms, HTTP 200", "4 of 4 got 4002", "3 STILL LISTED", "peak 5.00 GiB", "PASSED at 2.5 s", "dial_refused"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	rep.TagStorm = nil
	rep.Flood = &FloodReport{Conns: 1, Upgraded: 1, ClosedByBkr: 1, LifetimeMin: 20, LifetimeMax: 20, Connections: []FloodConn{{Upgraded: true, CloseCode: 4003, CloseReason: "invalid token", EndedAt: 20, EndedBy: "reset", Written: 1 << 30}}}
	out.Reset()
	writeAttackTable(&out, rep)
	for _, want := range []string{"invalid token (refused: 4003)", "20.00 – 20.00 s", `4003 "invalid token"`, "reset", "1.00 GiB"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("flood table lacks %q:\n%s", want, out.String())
		}
	}
	rep.Flood = nil
	rep.Grants = &GrantsReport{Grants: 10000, Build: GrantBuild{Built: 10000, Seconds: 73, PutMsByTenth: []float64{1, 2}}, Publish: &PublishRun{Grants: 10000, DeliveredPS: 3000, BrokerAccepted: &accepted}}
	out.Reset()
	writeAttackTable(&out, rep)
	for _, want := range []string{"10000 of 10000 in 73.0 s", "3000 msg/s delivered", "broker accepted 10", "1.00 2.00"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("grants table lacks %q:\n%s", want, out.String())
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("sekrit")) {
		t.Error("the JSON report carries the admin key")
	}
}

// A polite reader answers the broker's pings with masked pongs carrying
// the same payload.
func TestReadFramesReplying(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	got := make(chan []byte, 1)
	go func() {
		srv.Write(serverFrame(ws.OpPing, []byte("hi")))
		br := bufio.NewReader(srv)
		h, err := ws.ReadHeader(br)
		if err != nil || h.OpCode != ws.OpPong || !h.Masked {
			got <- nil
			return
		}
		p := make([]byte, h.Length)
		io.ReadFull(br, p)
		ws.Cipher(p, h.Mask, 0)
		got <- p
		srv.Write(serverFrame(ws.OpClose, binary.BigEndian.AppendUint16(nil, 1000)))
		srv.Close()
	}()
	e := readFramesReplying(bufio.NewReader(cli), cli, nil, nil)
	if p := <-got; string(p) != "hi" {
		t.Errorf("pong payload %q", p)
	}
	if e.closeCode != 1000 || e.frames != 1 {
		t.Errorf("read end %+v", e)
	}
}
