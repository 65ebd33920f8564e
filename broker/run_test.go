package broker

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/proto"
)

// connectRuns connects a seed publisher whose transport reports the end of
// each read (ReadEnds, as netpoll does), so its publishes are held in runs;
// held: its payloads stay valid until the read ends (PayloadHeld), so runs
// view them instead of copying.
func (e *env) connectRuns(tb testing.TB, secret string, held bool, tags ...string) *SeedSession {
	tb.Helper()
	s, err := e.b.Connect(&coalescingConn{held: held, count: true}, ConnectRequest{Secret: []byte(secret), Tags: tags, ReadEnds: true})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func runMsg(topic string, n int) []byte {
	return fmt.Appendf(nil, `{"tag":%q,"message":{"n":%d}}`, topic, n)
}

// TestRunsKeepOrder: publishes held in runs reach every kind of subscriber
// in publish order: a seed subscriber alone on its topic (the run by copy),
// several sharing frames, a seed transport without run sends and a neutral
// endpoint (one Deliver per message), a shared group (one member per
// message, alternating). A run is held until the read ends or the topic
// changes, a message too large to hold goes after the run before it, and a
// run longer than runMax is split. Whether the transport keeps payloads
// until the read ends (held: the run views them) or reuses its buffer after
// each message (the run copies them: the test overwrites each payload as
// soon as OnMessage returns), what is delivered is the same.
func TestRunsKeepOrder(t *testing.T) {
	for _, held := range []bool{false, true} {
		t.Run(fmt.Sprintf("held=%v", held), func(t *testing.T) { testRunsKeepOrder(t, held) })
	}
}

func testRunsKeepOrder(t *testing.T, held bool) {
	e := newEnv(t)
	_, rw := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
	pub := e.connectRuns(t, rw, held, "fleet/cmd")
	var read [][]byte // the payloads of the read so far
	onMessage := func(p []byte) {
		pub.OnMessage(true, p)
		if held {
			read = append(read, p)
		} else {
			for i := range p {
				p[i] = 'X' // the transport's buffer, reused
			}
		}
	}
	readEnd := func() {
		pub.OnReadEnd()
		for _, p := range read {
			for i := range p {
				p[i] = 'X' // released after the read
			}
		}
		read = nil
	}
	seed := func(tag string) *coalescingConn {
		c := &coalescingConn{}
		if _, err := e.b.Connect(c, ConnectRequest{Secret: []byte(rw), Tags: []string{tag}}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	solo := seed("fleet/solo")
	fans := []*coalescingConn{seed("fleet/+"), seed("fleet/+"), seed("fleet/#")}
	plain, _ := e.connect(t, rw, "fleet/#")
	plainConn := plain.conn.(*recConn)
	neutral, nep := e.open(t, rw, ConnectRequest{})
	neutral.Subscribe("fleet/+", SubOptions{})
	g1, gep1 := e.open(t, rw, ConnectRequest{})
	g1.Subscribe("$share/g/fleet/+", SubOptions{})
	g2, gep2 := e.open(t, rw, ConnectRequest{})
	g2.Subscribe("$share/g/fleet/+", SubOptions{})

	type sent struct {
		topic string
		n     int
		pad   int
	}
	var seq []sent
	value := func(s sent) []byte {
		if s.pad > 0 {
			return fmt.Appendf(nil, `{"n":%d,"pad":%q}`, s.n, strings.Repeat("p", s.pad))
		}
		return fmt.Appendf(nil, `{"n":%d}`, s.n)
	}
	publishPadded := func(topic string, n, pad int) {
		s := sent{topic, n, pad}
		onMessage(fmt.Appendf(nil, `{"tag":%q,"message":%s}`, topic, value(s)))
		seq = append(seq, s)
	}
	publish := func(topic string, n int, big bool) {
		pad := 0
		if big {
			pad = runHeldBytes
		}
		publishPadded(topic, n, pad)
	}
	for i := range 5 {
		publish("fleet/a", i, false)
	}
	if got := len(fans[0].frames()); got != 0 {
		t.Fatalf("%d frames delivered while the run was held", got)
	}
	publish("fleet/b", 5, false) // another topic: the run of fleet/a goes
	if got := len(fans[0].frames()); got != 5 {
		t.Fatalf("after the topic changed: %d frames delivered, want the 5 held", got)
	}
	publish("fleet/b", 6, false)
	publish("fleet/a", 7, false)
	// not in the encoder's form (keys swapped): encoded again, in the run
	onMessage([]byte(`{"message":{"n":70},"tag":"fleet/a"}`))
	seq = append(seq, sent{"fleet/a", 70, 0})
	// an escaped tag: the decoder unescapes it into a buffer of its own
	onMessage([]byte(`{"tag":"fleet\/a","message":{"n":71}}`))
	seq = append(seq, sent{"fleet/a", 71, 0})
	publish("fleet/a", 8, true) // too large to hold: after the run before it
	publish("fleet/a", 9, false)
	for i := range 3 {
		publish("fleet/solo", 10+i, false)
	}
	for i := range runMax + 5 {
		publish("fleet/a", 20+i, false)
	}
	runsBefore := fans[0].runs
	for i := range 12 { // 3 KiB each: runs of 5 (runBytes)
		publishPadded("fleet/a", 100+i, 3<<10)
	}
	readEnd()
	// at most runBytes (16 KiB) a run: the 5 small ones held before with
	// 5 of them, then 5, then 2
	if got := fans[0].runs - runsBefore; got != 3 {
		t.Fatalf("12 messages of 3 KiB went in %d runs, want 3", got)
	}

	frame := func(s sent) []byte { return proto.AppendSeedFrame(nil, s.topic, value(s)) }
	want := func(match func(string) bool) (frames [][]byte) {
		for _, s := range seq {
			if match(s.topic) {
				frames = append(frames, frame(s))
			}
		}
		return frames
	}
	check := func(name string, got, want [][]byte) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d frames, want %d", name, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("%s: frame %d = %.60q, want %.60q", name, i, got[i], want[i])
			}
		}
	}
	all := want(func(string) bool { return true })
	onlySolo := want(func(t string) bool { return t == "fleet/solo" })
	check("fleet/solo", solo.frames(), onlySolo)
	check("fleet/+ (1)", fans[0].frames(), all)
	check("fleet/+ (2)", fans[1].frames(), all)
	check("fleet/#", fans[2].frames(), all)
	plainConn.mu.Lock()
	check("a seed transport without runs", plainConn.frames, all)
	plainConn.mu.Unlock()
	if solo.runs == 0 || fans[0].runs == 0 {
		t.Fatalf("run sends: solo %d, fan %d; want the runs delivered as runs", solo.runs, fans[0].runs)
	}
	// runMax+5 messages of one topic in one read: two runs at least
	if fans[0].runs < 5 {
		t.Fatalf("fan got %d runs, want at least 5 (a, a, a, a×%d, a×5, and b, solo)", fans[0].runs, runMax)
	}
	var neutralGot []string
	for _, d := range nep.deliveries() {
		neutralGot = append(neutralGot, d.topic)
	}
	var wantTopics []string
	for _, s := range seq {
		wantTopics = append(wantTopics, s.topic)
	}
	if strings.Join(neutralGot, " ") != strings.Join(wantTopics, " ") {
		t.Fatalf("neutral endpoint got topics %v, want %v", neutralGot, wantTopics)
	}
	d1, d2 := gep1.deliveries(), gep2.deliveries()
	if len(d1)+len(d2) != len(seq) || len(d1)-len(d2) > 1 || len(d2)-len(d1) > 1 {
		t.Fatalf("shared group: %d and %d deliveries of %d messages; want each message once, alternating", len(d1), len(d2), len(seq))
	}
	seen := map[string]bool{}
	for _, d := range append(d1, d2...) {
		seen[d.payload] = true
	}
	if len(seen) != len(seq) {
		t.Fatalf("shared group: %d distinct messages, want %d", len(seen), len(seq))
	}
}

// TestRunStoppedByRevocation: a run is checked again when it goes out: a
// rights change that completed while it was held, and that no longer lets
// the token publish to its topic, stops it; so does the end of the
// publisher's session (a kick, a revocation). A change that still allows
// the topic lets it go.
func TestRunStoppedByRevocation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(t *testing.T, e *env, tok acl.Token, pub *SeedSession)
		deliver bool
	}{
		{"publish grant removed", func(t *testing.T, e *env, tok acl.Token, _ *SeedSession) {
			setGrant(t, e, tok, "fleet/#", acl.PermRead)
		}, false},
		{"unrelated grant added", func(t *testing.T, e *env, tok acl.Token, _ *SeedSession) {
			setGrant(t, e, tok, "other/#", acl.PermRead)
		}, true},
		{"token disabled", func(t *testing.T, e *env, tok acl.Token, _ *SeedSession) {
			e.disable(t, tok.ID)
			if err := e.b.RefreshTokens(context.Background(), tok.ID); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"publisher kicked", func(t *testing.T, e *env, _ acl.Token, pub *SeedSession) {
			if !e.b.Kick(pub.ID()) {
				t.Fatal("kick: no such session")
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tok, rw := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
			_, reader := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermRead})
			pub := e.connectRuns(t, rw, true, "fleet/cmd")
			sub := &coalescingConn{}
			if _, err := e.b.Connect(sub, ConnectRequest{Secret: []byte(reader), Tags: []string{"fleet/+"}}); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				pub.OnMessage(true, runMsg("fleet/t", i))
			}
			tc.change(t, e, tok, pub)
			pub.OnReadEnd()
			got := len(sub.frames())
			if tc.deliver && got != 3 {
				t.Fatalf("%d of the 3 held messages delivered, want all", got)
			}
			if !tc.deliver && got != 0 {
				t.Fatalf("%d of the 3 held messages delivered after the change, want none", got)
			}
		})
	}
}

// setGrant sets tok's permission on pattern and refreshes it, as the admin
// API does.
func setGrant(t *testing.T, e *env, tok acl.Token, pattern string, p acl.Permission) {
	t.Helper()
	ctx := context.Background()
	tags, err := e.store.ListTags(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := int64(0)
	for _, tg := range tags {
		if tg.Pattern == pattern {
			id = tg.ID
		}
	}
	if id == 0 {
		tg, err := e.store.CreateTag(ctx, pattern)
		if err != nil {
			t.Fatal(err)
		}
		id = tg.ID
	}
	if err := e.store.SetPermission(ctx, tok.ID, id, p); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
}

// TestRunAllocs: runs allocate nothing in steady state, for a fan-in's one
// subscriber (the run by copy) and for a fan-out's many (shared frames).
func TestRunAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	for _, subs := range []int{1, 8} {
		t.Run(fmt.Sprint(subs), func(t *testing.T) {
			e := newEnv(t)
			_, rw := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
			pub := e.connectRuns(t, rw, true, "fleet/cmd")
			conns := make([]*coalescingConn, subs)
			for i := range conns {
				conns[i] = &coalescingConn{count: true}
				if _, err := e.b.Connect(conns[i], ConnectRequest{Secret: []byte(rw), Tags: []string{"fleet/+/temp"}}); err != nil {
					t.Fatal(err)
				}
			}
			msg := []byte(`{"tag":"fleet/dev1/temp","message":{"c":21.5,"unit":"C","seq":12345678}}`)
			read := func() {
				for range 10 {
					pub.OnMessage(true, msg)
				}
				pub.OnReadEnd()
			}
			read()
			if allocs := testing.AllocsPerRun(100, read); allocs != 0 {
				t.Fatalf("a read of 10 publishes allocates %.1f times", allocs)
			}
			for i, c := range conns {
				if c.n != 1020 || c.runs != 102 { // AllocsPerRun runs read once more first
					t.Fatalf("subscriber %d: %d frames in %d runs, want 1020 in 102", i, c.n, c.runs)
				}
			}
		})
	}
}
