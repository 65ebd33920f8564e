package cluster

import (
	"context"
	"errors"
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

func TestRevocationMessageRoundTrip(t *testing.T) {
	r, err := parseRevocation(encodeRevocation("node-1", "abc", []int64{1, 22, 333}))
	if err != nil || r.from != "node-1" || r.id != "abc" || !slices.Equal(r.tokens, []int64{1, 22, 333}) {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{"", "r1|a|b|", "r2|a|b|1", "r1||b|1", "r1|a|b|1,,2", "r1|a|b|-1", "r1|a|b|x"} {
		if _, err := parseRevocation(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func FuzzParseRevocation(f *testing.F) {
	f.Add(encodeRevocation("n", "id", []int64{1, 2}))
	f.Add("r1|a|b|9223372036854775807")
	f.Add("r1|a|b|1,2,3|4")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRevocation(s)
		if err != nil {
			return
		}
		if back := encodeRevocation(r.from, r.id, r.tokens); back != s {
			// leading zeros or '+' signs decode to the same IDs
			r2, err := parseRevocation(back)
			if err != nil || !slices.Equal(r2.tokens, r.tokens) || r2.from != r.from || r2.id != r.id {
				t.Fatalf("%q -> %+v -> %q", s, r, back)
			}
		}
	})
}
