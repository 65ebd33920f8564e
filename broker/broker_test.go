package broker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/sqlite"
	"github.com/gatecast/gatecast/proto"
)

// recConn is a transport that keeps what it is sent. Unit tests of the
// broker use it; the real transport is covered end to end in package server.
type recConn struct {
	mu        sync.Mutex
	frames    [][]byte
	closeCode uint16
	reason    string
	closed    atomic.Bool
	keep      bool // copy frames (false: just count them, allocation-free)
	sent      atomic.Int64
}

func (c *recConn) Send(f *proto.Frame) bool {
	defer f.Release()
	if c.closed.Load() {
		return false
	}
	c.sent.Add(1)
	if c.keep {
		c.mu.Lock()
		c.frames = append(c.frames, append([]byte(nil), f.B...))
		c.mu.Unlock()
	}
	return true
}

func (c *recConn) Close(code uint16, reason string) {
	if c.closed.CompareAndSwap(false, true) {
		c.mu.Lock()
		c.closeCode, c.reason = code, reason
		c.mu.Unlock()
	}
}

func (c *recConn) code() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}

type env struct {
	store *sqlite.Store
	b     *Broker
}

func newEnv(t testing.TB) *env {
	return newEnvRegistered(t, nil)
}

// newEnvRegistered is newEnv with the broker's metrics registered on reg.
func newEnvRegistered(t testing.TB, reg prometheus.Registerer) *env {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "acl.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b, err := New(Config{Store: st, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return &env{store: st, b: b}
}

// token creates a token with the given grants ("pattern" → perm).
func (e *env) token(tb testing.TB, maxConns int, grants map[string]acl.Permission) (acl.Token, string) {
	ctx := context.Background()
	secret, err := acl.NewSecret()
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := e.store.CreateToken(ctx, "t", maxConns, acl.HashSecret([]byte(secret)))
	if err != nil {
		tb.Fatal(err)
	}
	for pattern, p := range grants {
		tag, err := e.store.CreateTag(ctx, pattern)
		if errors.Is(err, acl.ErrConflict) {
			tags, _ := e.store.ListTags(ctx)
			for _, tg := range tags {
				if tg.Pattern == pattern {
					tag = tg
				}
			}
		} else if err != nil {
			tb.Fatal(err)
		}
		if err := e.store.SetPermission(ctx, tok.ID, tag.ID, p); err != nil {
			tb.Fatal(err)
		}
	}
	return tok, secret
}

func (e *env) connect(tb testing.TB, secret string, tags ...string) (*SeedSession, *recConn) {
	tb.Helper()
	c := &recConn{keep: true}
	s, err := e.b.Connect(c, ConnectRequest{Secret: []byte(secret), Tags: tags, Protocol: "seed"})
	if err != nil {
		tb.Fatalf("connect %v: %v", tags, err)
	}
	return s, c
}

func rejection(t *testing.T, err error) uint16 {
	t.Helper()
	var rej *Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("want a *Rejection, got %v", err)
	}
	return rej.Code
}

func TestConnectRejections(t *testing.T) {
	e := newEnv(t)
	_, secret := e.token(t, 1, map[string]acl.Permission{"a/#": acl.PermRead})
	cases := []struct {
		secret string
		tags   []string
		code   uint16
	}{
		{"", []string{"a/#"}, CloseBadRequest},
		{secret, nil, CloseBadRequest},
		{"wrong", []string{"a/#"}, CloseForbidden},
		{secret, []string{"b"}, CloseForbidden},
		{secret, []string{"a/+/#", "#"}, CloseForbidden},
		{secret, []string{"a/#/b"}, CloseForbidden},
	}
	for _, tc := range cases {
		_, err := e.b.Connect(&recConn{}, ConnectRequest{Secret: []byte(tc.secret), Tags: tc.tags})
		if got := rejection(t, err); got != tc.code {
			t.Errorf("%q %v: code %d, want %d", tc.secret, tc.tags, got, tc.code)
		}
	}
	e.connect(t, secret, "a/b")
	_, err := e.b.Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: []string{"a/c"}})
	if got := rejection(t, err); got != CloseLimit {
		t.Errorf("over limit: code %d", got)
	}
}

func TestPublishRoutesOnceEncodedOnce(t *testing.T) {
	e := newEnv(t)
	_, rw := e.token(t, 0, map[string]acl.Permission{"s/#": acl.PermReadWrite})
	pub, pc := e.connect(t, rw, "s/x")
	_, c1 := e.connect(t, rw, "s/+")
	_, c2 := e.connect(t, rw, "s/#", "s/+", "s/x") // overlapping: once
	_, c3 := e.connect(t, rw, "s/y")
	pub.OnMessage(true, []byte(`{"tag":"s/x","message":{"v":1}}`))
	want := string(proto.AppendSeedFrame(nil, "s/x", []byte(`{"v":1}`)))
	for i, c := range []*recConn{c1, c2} {
		if len(c.frames) != 1 || string(c.frames[0]) != want {
			t.Errorf("subscriber %d got %q", i, c.frames)
		}
	}
	if len(c3.frames) != 0 || len(pc.frames) != 0 {
		t.Errorf("non-matching or publisher received: %q %q", c3.frames, pc.frames)
	}
}

// The hot path — decode, grant check, match, encode once, enqueue to every
// subscriber — allocates nothing in steady state.
func TestPublishAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test runs this without it")
	}
	e := newEnv(t)
	_, rw := e.token(t, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
	pub, _ := e.connect(t, rw, "fleet/dev0/cmd")
	var conns []*recConn
	for i := range 50 {
		c := &recConn{}
		if _, err := e.b.Connect(c, ConnectRequest{Secret: []byte(rw), Tags: []string{fmt.Sprintf("fleet/dev%d/#", i%5), "fleet/+/temp"}}); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	msg := []byte(`{"tag":"fleet/dev1/temp","message":{"c":21.5,"unit":"C","seq":12345678}}`)
	pub.OnMessage(true, msg) // warm pools and the match cache
	allocs := testing.AllocsPerRun(200, func() { pub.OnMessage(true, msg) })
	if allocs != 0 {
		t.Fatalf("publish allocates %.1f times per message", allocs)
	}
	got := int64(0)
	for _, c := range conns {
		got += c.sent.Load()
	}
	// one warm-up call, AllocsPerRun's own warm-up call, then 200 runs
	if want := int64(50 * 202); got != want {
		t.Fatalf("delivered %d, want %d", got, want)
	}
}

func TestRefreshEnforcesOnlyConcernedSessions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	_, other := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermRead})
	s1, c1 := e.connect(t, secret, "a/b")
	_, c2 := e.connect(t, other, "a/#")

	// downgrade: stays, cannot publish
	tags, _ := e.store.ListTags(ctx)
	if err := e.store.SetPermission(ctx, tok.ID, tags[0].ID, acl.PermRead); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if c1.closed.Load() {
		t.Fatal("downgrade closed the session")
	}
	s1.OnMessage(true, []byte(`{"tag":"a/x","message":1}`))
	if n := c2.sent.Load(); n != 0 {
		t.Fatalf("publish after downgrade delivered %d", n)
	}
	// delete the token: 4002 for its session only
	if err := e.store.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if c1.code() != CloseTokenChanged || c2.closed.Load() {
		t.Fatalf("codes %d, other closed=%v", c1.code(), c2.closed.Load())
	}
	if _, err := e.b.Connect(&recConn{}, ConnectRequest{Secret: []byte(secret), Tags: []string{"a/b"}}); rejection(t, err) != CloseForbidden {
		t.Fatal("deleted token admitted")
	}
}

// Admission and enforcement race: whatever the interleaving, no session
// of a deleted token survives and the limit is never exceeded.
func TestConnectRacesRefresh(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok, secret := e.token(t, 3, map[string]acl.Permission{"r/#": acl.PermRead})
	var wg sync.WaitGroup
	var admitted []*recConn
	var mu sync.Mutex
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &recConn{}
			if _, err := e.b.Connect(c, ConnectRequest{Secret: []byte(secret), Tags: []string{"r/x"}}); err == nil {
				mu.Lock()
				admitted = append(admitted, c)
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.store.DeleteToken(ctx, tok.ID)
		e.b.RefreshTokens(ctx, tok.ID)
	}()
	wg.Wait()
	if len(admitted) > 3 {
		t.Fatalf("%d admitted over a limit of 3", len(admitted))
	}
	for _, c := range admitted {
		if !c.closed.Load() {
			t.Fatal("a session of the deleted token is still open")
		}
	}
	if n := e.b.SessionCount(); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

func BenchmarkPublishFanOut(b *testing.B) {
	for _, n := range []int{1, 100, 2000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			e := newEnv(b)
			_, rw := e.token(b, 0, map[string]acl.Permission{"fleet/#": acl.PermReadWrite})
			pub, _ := e.connect(b, rw, "fleet/cmd")
			for range n {
				if _, err := e.b.Connect(&recConn{}, ConnectRequest{Secret: []byte(rw), Tags: []string{"fleet/all"}}); err != nil {
					b.Fatal(err)
				}
			}
			msg := []byte(`{"tag":"fleet/all","message":"0123456789012345678901234567890123456789"}`)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				pub.OnMessage(true, msg)
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// TestCacheMetrics: the token (grant) cache counts a miss for a secret it
// had to read from the store (unknown secrets included) and a hit for one
// it held; the match-cache counters are exported from the topic index.
func TestCacheMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnvRegistered(t, reg)
	b := e.b
	_, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	value := func(name string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatalf("%s not registered", name)
		return 0
	}
	e.connect(t, secret, "a/#")
	if h, m := value("gatecast_grant_cache_hits_total"), value("gatecast_grant_cache_misses_total"); h != 0 || m != 1 {
		t.Fatalf("first connect: %v hits, %v misses; want 0, 1", h, m)
	}
	e.connect(t, secret, "a/b")
	if _, err := b.Connect(&recConn{}, ConnectRequest{Secret: []byte("wrong"), Tags: []string{"a/#"}}); err == nil {
		t.Fatal("unknown secret admitted")
	}
	if h, m := value("gatecast_grant_cache_hits_total"), value("gatecast_grant_cache_misses_total"); h != 1 || m != 2 {
		t.Fatalf("after a cached connect and an unknown secret: %v hits, %v misses; want 1, 2", h, m)
	}
	if h, m := value("gatecast_match_cache_hits_total"), value("gatecast_match_cache_misses_total"); h != 0 || m != 0 {
		t.Fatalf("match cache before any publish: %v hits, %v misses", h, m)
	}
}
