package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/sqlite"
)

// newEnvConfig is newEnv with a Broker configured by cfg (Store is set here).
func newEnvConfig(t testing.TB, cfg Config) *env {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "acl.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg.Store = st
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{store: st, b: b}
}

func (e *env) disable(t testing.TB, id int64) {
	t.Helper()
	disabled := true
	if _, err := e.store.UpdateToken(context.Background(), id, acl.TokenUpdate{Disabled: &disabled}); err != nil {
		t.Fatal(err)
	}
}

func rejectionOf(t *testing.T, err error) *Rejection {
	t.Helper()
	var rej *Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("want a *Rejection, got %v", err)
	}
	return rej
}

// A token's own clients cannot delay its revocation. Fifty loops connect
// with many distinct tags each and close at once, as fast as they can,
// while the token is disabled: RefreshTokens returns within milliseconds
// (the bound asserted is generous: 100 ms on a shared machine, with the
// race detector), no session of the token is live when it returns, no open
// session is in the index, and once the loops stop (and the background
// cleanup ran) the index holds none of its subscriptions.
//
// On 4785f55, where admission held the token's mutex while it deduplicated
// (O(n²)), checked and subscribed every tag, the disable took seconds here.
func TestRevocationUnderConnectStorm(t *testing.T) {
	for _, tc := range []struct {
		name string
		tags int
		// pile: sessions each loop leaves open, oldest closed first, as a
		// transport leaves the sessions of clients that vanished until it
		// notices: the disable finds loops×pile sessions with tags filters
		// each (on a real server, thousands of them piled up).
		pile int
		cfg  Config
	}{
		{"1100 tags, cap raised to 1100", 1100, 4, Config{MaxSubscriptions: 1100}},
		{"default cap", DefaultMaxSubscriptions, 10, Config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvConfig(t, tc.cfg)
			tok, secret := e.token(t, 0, map[string]acl.Permission{"dev/#": acl.PermRead})
			const loops = 50
			var (
				stop     atomic.Bool
				admitted atomic.Int64
				wg       sync.WaitGroup
			)
			deadline := time.Now().Add(20 * time.Second) // bounds the loops whatever happens
			for g := range loops {
				tags := make([]string, tc.tags)
				for i := range tags {
					tags[i] = fmt.Sprintf("dev/%d/%d", g, i)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					var open []*SeedSession
					for !stop.Load() && time.Now().Before(deadline) {
						s, err := e.b.Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: tags, Protocol: "seed"})
						if err == nil {
							admitted.Add(1)
							if open = append(open, s); len(open) > tc.pile {
								open[0].OnClose()
								open = open[1:]
							}
						}
						runtime.Gosched() // a real client waits for the network between two connects
					}
					for _, s := range open {
						s.OnClose() // the transport notices at last
					}
				}()
			}
			waitUntil(t, "the connect loops are running", func() bool { return admitted.Load() >= int64(loops*(tc.pile+2)) })

			e.disable(t, tok.ID)
			start := time.Now()
			err := e.b.RefreshTokens(context.Background(), tok.ID)
			took := time.Since(start)
			// Checked before the loops stop: whatever they are doing,
			// nothing of the token is live once RefreshTokens returned.
			live := len(e.b.Connections(tok.ID))
			var liveInIndex int
			for g := range loops {
				for _, topic := range []string{fmt.Sprintf("dev/%d/0", g), fmt.Sprintf("dev/%d/%d", g, tc.tags-1)} {
					for _, sub := range e.b.index.Match(topic, nil) {
						if !sub.s.closed.Load() {
							liveInIndex++
						}
					}
				}
			}
			stop.Store(true)
			wg.Wait()
			t.Logf("RefreshTokens (disable) under %d connect/close loops of %d tags, %d sessions piled up: %v (%d connects admitted)", loops, tc.tags, loops*tc.pile, took, admitted.Load())
			if err != nil {
				t.Fatal(err)
			}
			if live != 0 || liveInIndex != 0 {
				t.Fatalf("after RefreshTokens returned: %d sessions of the token live, %d open sessions in the index", live, liveInIndex)
			}
			// the closed sessions' index entries are removed in the
			// background (RefreshTokens does not wait for that cleanup)
			waitUntil(t, "the index holds none of the token's subscriptions", func() bool { return e.b.index.Count() == 0 })
			if n := e.b.SessionCount(); n != 0 {
				t.Fatalf("%d sessions left", n)
			}
			if took > 100*time.Millisecond {
				t.Fatalf("RefreshTokens took %v under the connect storm, want < 100ms", took)
			}
		})
	}
}

// fakeRouter counts route additions and removals per filter (cluster mode
// without Redis); onAdd, if set, runs inside Add.
type fakeRouter struct {
	mu      sync.Mutex
	added   map[string]int
	removed map[string]int
	onAdd   func(filter string)
}

func (r *fakeRouter) Add(ctx context.Context, f string) error {
	r.mu.Lock()
	r.added[f]++
	hook := r.onAdd
	r.mu.Unlock()
	if hook != nil {
		hook(f)
	}
	return nil
}

func (r *fakeRouter) Remove(ctx context.Context, f string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed[f]++
	return nil
}

func (r *fakeRouter) Forward(context.Context, string, []byte) error { return nil }

func (r *fakeRouter) balanced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for f, n := range r.added {
		if r.removed[f] != n {
			return false
		}
	}
	return len(r.removed) == len(r.added)
}

// fakeLimiter counts cluster connection slots.
type fakeLimiter struct{ acquired, released atomic.Int64 }

func (l *fakeLimiter) Acquire(context.Context, int64, int) (bool, error) {
	l.acquired.Add(1)
	return true, nil
}
func (l *fakeLimiter) Release(context.Context, int64) error          { l.released.Add(1); return nil }
func (l *fakeLimiter) Adopt(context.Context, int64, int) error       { return nil }
func (l *fakeLimiter) Trim(context.Context, int64, int) (int, error) { return 0, nil }

// Filters enter the index after the session is registered and the token's
// lock released, so a revocation (or a kick) can close the session while
// Connect is still subscribing it. Whatever the point, nothing of it is left
// in the index or the cluster route table, nothing is removed twice, and
// its cluster slot is given back once.
func TestCloseRacingSubscribe(t *testing.T) {
	const tags = 6
	filters := make([]string, tags)
	for i := range filters {
		filters[i] = fmt.Sprintf("r/%d", i)
	}
	filters[tags-1] = "r/+/wild" // wildcard filters live in another structure
	for _, closer := range []string{"disable", "kick"} {
		for _, at := range []int{0, tags / 2, tags, -1} { // -1: during the cluster route
			t.Run(fmt.Sprintf("%s at filter %d", closer, at), func(t *testing.T) {
				router := &fakeRouter{added: map[string]int{}, removed: map[string]int{}}
				limiter := &fakeLimiter{}
				e := newEnvConfig(t, Config{Router: router, Limiter: limiter})
				tok, secret := e.token(t, 5, map[string]acl.Permission{"r/#": acl.PermRead})
				var fired atomic.Bool
				closeIt := func(s *Session) {
					if !fired.CompareAndSwap(false, true) {
						return
					}
					switch closer {
					case "disable":
						e.disable(t, tok.ID)
						if err := e.b.RefreshTokens(context.Background(), tok.ID); err != nil {
							t.Error(err)
						}
					case "kick":
						if !e.b.Kick(s.ID()) {
							t.Error("kick: no such session")
						}
					}
				}
				var current atomic.Pointer[Session]
				e.b.hookSubscribing = func(s *Session, i int) {
					current.Store(s)
					if i == at {
						closeIt(s)
					}
				}
				router.onAdd = func(string) {
					if at == -1 {
						closeIt(current.Load())
					}
				}
				c := &recConn{}
				s, err := e.b.Connect(c, ConnectRequest{Secret: []byte(secret), Tags: filters, Protocol: "seed"})
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				if !fired.Load() {
					t.Fatal("the close did not run during the admission")
				}
				want := map[string]uint16{"disable": CloseTokenChanged, "kick": CloseKicked}[closer]
				if !s.closed.Load() || c.code() != want {
					t.Fatalf("session closed=%v code %d, want closed with %d", s.closed.Load(), c.code(), want)
				}
				if n := e.b.index.Count(); n != 0 {
					t.Fatalf("the index holds %d subscriptions of the closed session", n)
				}
				if n := e.b.SessionCount(); n != 0 {
					t.Fatalf("%d sessions left", n)
				}
				if v := testutil.ToFloat64(e.b.metrics.subscriptions); v != 0 {
					t.Fatalf("gatecast_subscriptions = %v, want 0", v)
				}
				waitUntil(t, "route removals and slot release (background)", func() bool {
					return router.balanced() && limiter.released.Load() == limiter.acquired.Load()
				})
				if a, r := limiter.acquired.Load(), limiter.released.Load(); a != 1 || r != 1 {
					t.Fatalf("cluster slot acquired %d, released %d times", a, r)
				}
			})
		}
	}
}

// Grants are checked before the token's lock is taken. A rights change
// landing in between is seen under the lock (the grants pointer changed)
// and the filters are checked again against the new grants, both ways.
func TestGrantChangeRacingAdmission(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		before acl.Permission // on "g/#" when the connect checks
		after  acl.Permission // set while it has checked but not locked
		admit  bool
	}{
		{"revoked meanwhile: refused", acl.PermRead, acl.PermNone, false},
		{"granted meanwhile: admitted", acl.PermNone, acl.PermRead, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			grants := map[string]acl.Permission{"other/#": acl.PermRead}
			if tc.before != acl.PermNone {
				grants["g/#"] = tc.before
			}
			tok, secret := e.token(t, 0, grants)
			e.connect(t, secret, "other/x") // caches the token
			tag, err := e.store.CreateTag(ctx, "g/#")
			if errors.Is(err, acl.ErrConflict) {
				tags, _ := e.store.ListTags(ctx)
				for _, tg := range tags {
					if tg.Pattern == "g/#" {
						tag = tg
					}
				}
			} else if err != nil {
				t.Fatal(err)
			}
			var once sync.Once
			e.b.hookChecked = func() {
				once.Do(func() {
					if tc.after == acl.PermNone {
						err = e.store.DeletePermission(ctx, tok.ID, tag.ID)
					} else {
						err = e.store.SetPermission(ctx, tok.ID, tag.ID, tc.after)
					}
					if err != nil {
						t.Error(err)
					}
					if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
						t.Error(err)
					}
				})
			}
			c := &recConn{}
			_, err = e.b.Connect(c, ConnectRequest{Secret: []byte(secret), Tags: []string{"g/x"}})
			if tc.admit {
				if err != nil {
					t.Fatalf("refused by grants that changed before it was admitted: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("admitted with a grant revoked before it was registered")
			}
			if rej := rejectionOf(t, err); rej.Code != CloseForbidden || !strings.Contains(rej.Reason, "not permitted") {
				t.Fatalf("rejection %+v", rej)
			}
		})
	}
}

// Caps are applied before any other per-tag work, with reasons that say
// what was exceeded; exactly at a cap is fine.
func TestSubscriptionCaps(t *testing.T) {
	e := newEnv(t)
	_, secret := e.token(t, 0, map[string]acl.Permission{"#": acl.PermRead})
	many := func(n int) []string {
		tags := make([]string, n)
		for i := range tags {
			tags[i] = fmt.Sprintf("t/%d", i)
		}
		return tags
	}
	over := many(1100)
	over[0] = "a/#/b" // invalid, but the count is judged first
	deep := strings.Repeat("l/", DefaultMaxTopicLevels-1) + "l"
	long := "a/" + strings.Repeat("x", DefaultMaxTopicBytes-2)
	for _, tc := range []struct {
		name   string
		secret string
		tags   []string
		reason string // "" = admitted
	}{
		{"at the tag cap", secret, many(DefaultMaxSubscriptions), ""},
		{"over the tag cap", secret, over, "too many tags: 1100 > 100"},
		{"over the tag cap, bad token", "wrong", over, "too many tags: 1100 > 100"},
		{"duplicates count", secret, append(many(DefaultMaxSubscriptions), "t/0"), "too many tags: 101 > 100"},
		{"at the level cap", secret, []string{deep}, ""},
		{"over the level cap", secret, []string{deep + "/l"}, `tag "l/l/l/l/l/l/l/l/l/l/l/l/l/l/l/l/l/l"… has too many levels: 33 > 32`},
		{"at the byte cap", secret, []string{long}, ""},
		{"over the byte cap", secret, []string{long + "x"}, `tag "a/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"… is too long: 1025 > 1024 bytes`},
	} {
		c := &recConn{}
		s, err := e.b.Connect(c, ConnectRequest{Secret: []byte(tc.secret), Tags: tc.tags, Protocol: "seed"})
		if tc.reason == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			} else {
				s.OnClose()
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: admitted", tc.name)
			continue
		}
		if rej := rejectionOf(t, err); rej.Code != CloseForbidden || rej.Reason != tc.reason {
			t.Errorf("%s: %d %q, want 4003 %q", tc.name, rej.Code, rej.Reason, tc.reason)
		}
	}

	// Raised caps are honoured; caps beyond the topic syntax are refused.
	e2 := newEnvConfig(t, Config{MaxSubscriptions: 1100, MaxTopicLevels: 64, MaxTopicBytes: 2048})
	_, secret2 := e2.token(t, 0, map[string]acl.Permission{"#": acl.PermRead})
	e2.connect(t, secret2, many(1100)...)
	e2.connect(t, secret2, deep+"/l", long+"x")
	for _, cfg := range []Config{{MaxTopicBytes: 4096}, {MaxTopicLevels: 65}, {MaxSubscriptions: -1}} {
		cfg.Store = e.store
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// A publish over the topic caps is dropped and counted as a bad topic; the
// connection stays open.
func TestPublishTopicCaps(t *testing.T) {
	e := newEnv(t)
	_, rw := e.token(t, 0, map[string]acl.Permission{"#": acl.PermReadWrite})
	pub, pc := e.connect(t, rw, "none")
	_, sub := e.connect(t, rw, "#")
	deep := strings.Repeat("l/", DefaultMaxTopicLevels-1) + "l"
	long := strings.Repeat("x", DefaultMaxTopicBytes)
	for _, tc := range []struct {
		topic string
		ok    bool
	}{{deep, true}, {deep + "/l", false}, {long, true}, {long + "x", false}} {
		before, dropped := sub.sent.Load(), testutil.ToFloat64(e.b.metrics.rejected[rejectTopic])
		pub.OnMessage(true, []byte(`{"tag":"`+tc.topic+`","message":1}`))
		delivered := sub.sent.Load() - before
		counted := testutil.ToFloat64(e.b.metrics.rejected[rejectTopic]) - dropped
		if tc.ok && (delivered != 1 || counted != 0) || !tc.ok && (delivered != 0 || counted != 1) {
			t.Errorf("topic of %d bytes, %d levels: delivered %d, counted as bad topic %v", len(tc.topic), strings.Count(tc.topic, "/")+1, delivered, counted)
		}
	}
	if pc.closed.Load() {
		t.Fatal("a dropped publish closed the publisher")
	}
}

// Seed tags with spaces or control characters are refused with a reason
// that says why; reasons echoing client bytes are valid UTF-8.
func TestTagReasons(t *testing.T) {
	e := newEnv(t)
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermRead})
	for _, tc := range []struct{ tag, reason string }{
		{"a/ /x", `invalid tag "a/ /x": spaces and control characters are not allowed (encode '+' as %2B)`},
		{"a/\tx", `invalid tag "a/\tx": spaces and control characters are not allowed (encode '+' as %2B)`},
		{"a/\u0085", `invalid tag "a/\u0085": spaces and control characters are not allowed (encode '+' as %2B)`},
		{"a/\xff", `invalid tag "a/\xff": topic or filter is not valid UTF-8`},
		{"a/#/b", `invalid tag "a/#/b": '+' must be a whole level and '#' a whole last level`},
		{"b/\xff\xfe", `invalid tag "b/\xff\xfe": topic or filter is not valid UTF-8`},
		{"b/é", `tag not permitted: "b/é"`},
		{"a/x\x00", `invalid tag "a/x\x00": spaces and control characters are not allowed (encode '+' as %2B)`},
	} {
		_, err := e.b.Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: []string{tc.tag}, Protocol: "seed"})
		rej := rejectionOf(t, err)
		if rej.Code != CloseForbidden || rej.Reason != tc.reason {
			t.Errorf("%q: %d %q, want 4003 %q", tc.tag, rej.Code, rej.Reason, tc.reason)
		}
		if !utf8.ValidString(rej.Reason) || len(rej.Reason) > maxReason {
			t.Errorf("%q: reason %q is not a valid close reason", tc.tag, rej.Reason)
		}
	}
}

func TestCloseReason(t *testing.T) {
	long := strings.Repeat("a", 200)
	for _, tc := range []struct{ in, want string }{
		{"token disabled", "token disabled"},
		{"", ""},
		{long, long[:maxReason]},
		{"bad \xff byte", `bad \xff byte`},
		{"tab\there", `tab\there`},
		{"c1 \u0085 nul \x00", `c1 \u0085 nul \x00`},
		{"é ü 日本", "é ü 日本"},
		// cut between characters, never inside one: 122 ASCII bytes and a
		// 2-byte é do not fit 123, so the é goes
		{strings.Repeat("a", maxReason-1) + "é", strings.Repeat("a", maxReason-1)},
		// nor inside an escape: \xff (4 bytes) does not fit after 120
		{strings.Repeat("a", maxReason-3) + "\xff", strings.Repeat("a", maxReason-3)},
	} {
		got := closeReason(tc.in)
		if got != tc.want {
			t.Errorf("closeReason(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !utf8.ValidString(got) || len(got) > maxReason {
			t.Errorf("closeReason(%q) = %q: not a valid close reason", tc.in, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = closeReason("connection limit lowered") }); n != 0 {
		t.Errorf("closeReason of a fine reason allocates %.0f times", n)
	}
}

func TestTagReason(t *testing.T) {
	suffix := ": spaces and control characters are not allowed (encode '+' as %2B)"
	for _, tc := range []struct{ prefix, tag, suffix, want string }{
		{"tag not permitted: ", "a/b", "", `tag not permitted: "a/b"`},
		{"tag not permitted: ", `q"\`, "", `tag not permitted: "q\"\\"`},
		{"invalid tag ", "x/ " + strings.Repeat("y", 100), suffix, `invalid tag "x/ ` + strings.Repeat("y", 36) + `"…` + suffix}, // 123 bytes
		// shortened between escapes: \xff is never cut in half
		{"invalid tag ", strings.Repeat("\xff", 40), suffix, `invalid tag "` + strings.Repeat(`\xff`, 9) + `"…` + suffix},
		{strings.Repeat("p", 130), "t", "", strings.Repeat("p", maxReason)},
	} {
		got := tagReason(tc.prefix, tc.tag, tc.suffix)
		if got != tc.want {
			t.Errorf("tagReason(%q, %q, %q) =\n%q, want\n%q", tc.prefix, tc.tag, tc.suffix, got, tc.want)
		}
		if !utf8.ValidString(got) || len(got) > maxReason {
			t.Errorf("tagReason(%q): %q is not a valid close reason", tc.tag, got)
		}
	}
}

// FuzzTagReason: whatever the client's tag, the reason naming it is a valid
// close reason that keeps the explanation.
func FuzzTagReason(f *testing.F) {
	f.Add("a/\xff")
	f.Add(strings.Repeat("é", 80))
	f.Fuzz(func(t *testing.T, tag string) {
		const suffix = ": not allowed"
		got := tagReason("invalid tag ", tag, suffix)
		if !utf8.ValidString(got) || len(got) > maxReason || !strings.HasSuffix(got, suffix) || !strings.HasPrefix(got, `invalid tag "`) {
			t.Fatalf("tagReason(%q) = %q", tag, got)
		}
	})
}

func TestDedupFilters(t *testing.T) {
	long := make([]string, 0, 300)
	for i := range 300 {
		long = append(long, fmt.Sprintf("t/%d", i%150))
	}
	for _, tc := range []struct{ in, want []string }{
		{[]string{"a", "b", "a", "c", "b"}, []string{"a", "b", "c"}},
		{[]string{"x"}, []string{"x"}},
		{long, long[:150]},
	} {
		if got := dedupFilters(tc.in); strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("dedupFilters(%d tags) = %d tags %q…", len(tc.in), len(got), got[:min(len(got), 5)])
		}
	}
}

// Refusals over the caps are logged, but clients trigger them at will: one
// line per interval, carrying how many were held back.
func TestCapRefusalLogSampled(t *testing.T) {
	var buf syncBuffer
	e := newEnvConfig(t, Config{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	_, secret := e.token(t, 0, map[string]acl.Permission{"#": acl.PermRead})
	tags := make([]string, 101)
	for i := range tags {
		tags[i] = fmt.Sprint(i)
	}
	for range 50 {
		if _, err := e.b.Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: tags}); err == nil {
			t.Fatal("admitted over the cap")
		}
	}
	if n := strings.Count(buf.String(), "over a subscription cap"); n != 1 {
		t.Fatalf("%d log lines for 50 refusals, want 1:\n%s", n, buf.String())
	}
	e.b.capLog.Expire() // the interval has passed
	e.b.Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: tags})
	if out := buf.String(); strings.Count(out, "over a subscription cap") != 2 || !strings.Contains(out, "suppressed_since_last_line=49") {
		t.Fatalf("after the interval:\n%s", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
