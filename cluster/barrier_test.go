package cluster

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

type applied struct {
	mu  sync.Mutex
	ids []int64
	err error
}

func (a *applied) apply(_ context.Context, ids []int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	a.ids = append(a.ids, ids...)
	return nil
}

func (a *applied) got() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.ids)
}

func TestBarrierWaitsForEveryNode(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		ctx := ctxT(t)
		recs := map[string]*applied{"a": {}, "b": {}, "c": {}}
		bars := map[string]*Barrier{}
		for _, id := range []string{"a", "b", "c"} {
			bar, err := OpenBarrier(ctx, BarrierConfig{Client: newClient(), NodeID: id, Apply: recs[id].apply})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(bar.Close)
			bars[id] = bar
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		left, err := bars["a"].Enforce(wctx, []int64{7, 9}, []string{"a", "b", "c"})
		cancel()
		if err != nil || left != nil {
			t.Fatalf("unconfirmed %v, err %v", left, err)
		}
		// When Enforce returns, b and c have applied it; a (the sender) not again.
		if !slices.Equal(recs["b"].got(), []int64{7, 9}) || !slices.Equal(recs["c"].got(), []int64{7, 9}) || len(recs["a"].got()) != 0 {
			t.Fatalf("applied: a %v b %v c %v", recs["a"].got(), recs["b"].got(), recs["c"].got())
		}

		// A node listed as live that never answers, and one whose apply
		// fails, are reported when the wait ends.
		recs["c"].mu.Lock()
		recs["c"].err = errors.New("store down")
		recs["c"].mu.Unlock()
		wctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
		left, err = bars["b"].Enforce(wctx, []int64{3}, []string{"a", "b", "c", "ghost"})
		cancel()
		if err != nil || !slices.Equal(left, []string{"c", "ghost"}) {
			t.Fatalf("unconfirmed %v (err %v), want [c ghost]", left, err)
		}
		if !slices.Contains(recs["a"].got(), 3) {
			t.Fatal("node a did not apply the change")
		}
	})
}

func tv(pairs ...int64) []TokenVersion {
	out := make([]TokenVersion, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, TokenVersion{ID: pairs[i], Version: pairs[i+1]})
	}
	return out
}

func TestRevocationMessageRoundTrip(t *testing.T) {
	// No version known: r1, which nodes of the previous version parse.
	msg := encodeRevocation("node-1", "abc", tv(1, 0, 22, 0, 333, 0))
	if msg != "r1|node-1|abc|1,22,333" {
		t.Fatalf("encoded %q", msg)
	}
	r, err := parseRevocation(msg)
	if err != nil || r.from != "node-1" || r.id != "abc" || !slices.Equal(r.tokens, tv(1, 0, 22, 0, 333, 0)) {
		t.Fatalf("%+v %v", r, err)
	}
	// Versions: r2, id:version pairs (a 0 among them stays 0).
	msg = encodeRevocation("node-1", "abc", tv(1, 7, 22, 0, 333, 9223372036854775807))
	if msg != "r2|node-1|abc|1:7,22:0,333:9223372036854775807" {
		t.Fatalf("encoded %q", msg)
	}
	r, err = parseRevocation(msg)
	if err != nil || r.from != "node-1" || r.id != "abc" || !slices.Equal(r.tokens, tv(1, 7, 22, 0, 333, 9223372036854775807)) {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{"", "r1|a|b|", "r2|a|b|1", "r1||b|1", "r1|a|b|1,,2", "r1|a|b|-1", "r1|a|b|x",
		"r1|a|b|1:2", "r2|a|b|", "r2|a|b|1:", "r2|a|b|:1", "r2|a|b|1:-1", "r2|a|b|1:x", "r2|a|b|0:1", "r2|a|b|1:2,3",
		"r2|a|b|1:2:3", "r3|a|b|1:1", "r2||b|1:1", "r2|a||1:1"} {
		if _, err := parseRevocation(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// The bound on tokens holds for both formats.
	many := make([]TokenVersion, barrierMaxTokens+1)
	for i := range many {
		many[i] = TokenVersion{ID: int64(i + 1), Version: 1}
	}
	if _, err := parseRevocation(encodeRevocation("a", "b", many)); err == nil {
		t.Error("r2 over barrierMaxTokens parsed")
	}
	for i := range many {
		many[i].Version = 0
	}
	if _, err := parseRevocation(encodeRevocation("a", "b", many)); err == nil {
		t.Error("r1 over barrierMaxTokens parsed")
	}
}

type appliedVersions struct {
	mu     sync.Mutex
	tokens []TokenVersion
}

func (a *appliedVersions) apply(_ context.Context, tokens []TokenVersion) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens = append(a.tokens, tokens...)
	return nil
}

func (a *appliedVersions) got() []TokenVersion {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.tokens)
}

// EnforceVersions carries versions to ApplyVersions (r2); Enforce and a
// broadcast of a node of the previous version (r1) arrive as versions 0; a
// node configured with the old Apply gets the IDs of both.
func TestBarrierVersions(t *testing.T) {
	redisBackends(t, func(t *testing.T, newClient func() rueidis.Client) {
		ctx := ctxT(t)
		var vb appliedVersions
		var oc applied
		a, err := OpenBarrier(ctx, BarrierConfig{Client: newClient(), NodeID: "a", Apply: func(context.Context, []int64) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		b, err := OpenBarrier(ctx, BarrierConfig{Client: newClient(), NodeID: "b", ApplyVersions: vb.apply})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		c, err := OpenBarrier(ctx, BarrierConfig{Client: newClient(), NodeID: "c", Apply: oc.apply})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		all := []string{"a", "b", "c"}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		left, err := a.EnforceVersions(wctx, tv(7, 3, 9, 0), all)
		cancel()
		if err != nil || left != nil {
			t.Fatalf("unconfirmed %v, err %v", left, err)
		}
		if got := vb.got(); !slices.Equal(got, tv(7, 3, 9, 0)) {
			t.Fatalf("b applied %v", got)
		}
		if got := oc.got(); !slices.Equal(got, []int64{7, 9}) {
			t.Fatalf("c applied %v", got)
		}
		wctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		left, err = a.Enforce(wctx, []int64{11}, all)
		cancel()
		if err != nil || left != nil {
			t.Fatalf("unconfirmed %v, err %v", left, err)
		}
		if got := vb.got(); !slices.Equal(got[2:], tv(11, 0)) {
			t.Fatalf("b applied %v", got)
		}
		// A node of the previous version publishes r1 by hand and hears
		// b's acknowledgement.
		raw := newClient()
		acked := make(chan string, 4)
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		subscribed := make(chan struct{}, 1)
		go keepSubscribed(sctx, raw, false, barrierAckPrefix+"old", func(m string) { acked <- m }, func() {
			select {
			case subscribed <- struct{}{}:
			default:
			}
		}, slog.New(slog.DiscardHandler))
		<-subscribed
		if err := raw.Do(ctx, raw.B().Publish().Channel(barrierChannel).Message("r1|old|xyz|5,6").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for len(seen) < 3 {
			select {
			case m := <-acked:
				seen[m] = true
			case <-time.After(5 * time.Second):
				t.Fatalf("acknowledgements %v, want xyz|a, xyz|b and xyz|c", seen)
			}
		}
		if !seen["xyz|a"] || !seen["xyz|b"] || !seen["xyz|c"] {
			t.Fatalf("acknowledgements %v", seen)
		}
		if got := vb.got(); !slices.Equal(got[3:], tv(5, 0, 6, 0)) {
			t.Fatalf("b applied %v", got)
		}
		// Invalid input is refused before anything is broadcast.
		if _, err := a.EnforceVersions(ctx, tv(0, 1), all); err == nil {
			t.Fatal("token ID 0 accepted")
		}
		if _, err := a.EnforceVersions(ctx, tv(1, -1), all); err == nil {
			t.Fatal("negative version accepted")
		}
	})
}

func FuzzParseRevocation(f *testing.F) {
	f.Add(encodeRevocation("n", "id", tv(1, 0, 2, 0)))
	f.Add(encodeRevocation("n", "id", tv(1, 5, 2, 0)))
	f.Add("r1|a|b|9223372036854775807")
	f.Add("r2|a|b|9223372036854775807:9223372036854775807")
	f.Add("r1|a|b|1,2,3|4")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRevocation(s)
		if err != nil {
			return
		}
		if back := encodeRevocation(r.from, r.id, r.tokens); back != s {
			// leading zeros or '+' signs decode to the same IDs, and an
			// r2 with every version 0 encodes as r1
			r2, err := parseRevocation(back)
			if err != nil || !slices.Equal(r2.tokens, r.tokens) || r2.from != r.from || r2.id != r.id {
				t.Fatalf("%q -> %+v -> %q", s, r, back)
			}
		}
	})
}
