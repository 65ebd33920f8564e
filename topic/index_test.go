package topic

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"unsafe"
)

// indexModes runs f against an index with the default cache, a tiny cache
// (evictions and slot collisions all the time) and no cache, nats style.
func indexModes(t *testing.T, f func(t *testing.T, newIndex func() *Index[int])) {
	t.Helper()
	modes := []struct {
		name string
		opts []Option
	}{
		{"cache", nil},
		{"tinycache", []Option{WithCacheSize(2)}},
		{"nocache", []Option{WithoutCache()}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f(t, func() *Index[int] { return NewIndex[int](m.opts...) })
		})
	}
}

// matchSorted matches topic several times (so the cache admits and then
// serves it) and checks every answer is the same; it returns it sorted.
func matchSorted(t *testing.T, x *Index[int], topic string) []int {
	t.Helper()
	var first []int
	for i := 0; i < 3; i++ {
		got := x.Match(topic, nil)
		slices.Sort(got)
		if i == 0 {
			first = got
		} else if !slices.Equal(got, first) {
			t.Fatalf("Match(%q) attempt %d = %v, first attempt %v", topic, i, got, first)
		}
	}
	return first
}

func TestIndexBasic(t *testing.T) {
	indexModes(t, func(t *testing.T, newIndex func() *Index[int]) {
		x := newIndex()
		subs := []struct {
			filter string
			s      int
		}{
			{"devices/1/cmd", 1},
			{"devices/2/cmd", 2},
			{"devices/+/cmd", 10},
			{"devices/#", 11},
			{"#", 12},
			{"+/+/+", 13},
			{"$SYS/#", 14},
			{"devices/1/cmd", 15},
			{"a/#", 16},
			{"/+", 17},
			{"a//b", 18},
		}
		for _, s := range subs {
			if !x.Subscribe(s.filter, s.s) {
				t.Fatalf("Subscribe(%q, %d) = false", s.filter, s.s)
			}
		}
		if x.Subscribe("devices/1/cmd", 1) || x.Subscribe("#", 12) {
			t.Fatal("duplicate Subscribe returned true")
		}
		if x.Count() != len(subs) {
			t.Fatalf("Count = %d, want %d", x.Count(), len(subs))
		}
		st := x.Stats()
		if st.LiteralFilters != 3 || st.WildcardFilters != 7 || st.Subscriptions != len(subs) {
			t.Fatalf("Stats = %+v", st)
		}
		tests := []struct {
			topic string
			want  []int
		}{
			{"devices/1/cmd", []int{1, 10, 11, 12, 13, 15}},
			{"devices/2/cmd", []int{2, 10, 11, 12, 13}},
			{"devices/3/cmd", []int{10, 11, 12, 13}},
			{"devices", []int{11, 12}},
			{"devices/3", []int{11, 12}},
			{"$SYS/x", []int{14}},
			{"$SYS", []int{14}},
			{"$other/a/b", nil},
			{"a", []int{12, 16}},
			{"a/b/c", []int{12, 13, 16}},
			{"/x", []int{12, 17}},
			{"a//b", []int{12, 13, 16, 18}},
			{"zzz", []int{12}},
		}
		for _, tt := range tests {
			if got := matchSorted(t, x, tt.topic); !slices.Equal(got, tt.want) {
				t.Errorf("Match(%q) = %v, want %v", tt.topic, got, tt.want)
			}
		}
		for _, s := range subs {
			if !x.Unsubscribe(s.filter, s.s) {
				t.Fatalf("Unsubscribe(%q, %d) = false", s.filter, s.s)
			}
			if x.Unsubscribe(s.filter, s.s) {
				t.Fatalf("second Unsubscribe(%q, %d) = true", s.filter, s.s)
			}
		}
		if x.Count() != 0 {
			t.Fatalf("Count = %d after unsubscribing everything", x.Count())
		}
		if st := x.Stats(); st.LiteralFilters != 0 || st.WildcardFilters != 0 {
			t.Fatalf("Stats = %+v after unsubscribing everything", st)
		}
		if !x.root.empty() {
			t.Fatal("trie not pruned back to an empty root")
		}
		for _, tt := range tests {
			if got := x.Match(tt.topic, nil); len(got) != 0 {
				t.Errorf("Match(%q) = %v on an empty index", tt.topic, got)
			}
		}
	})
}

func TestIndexInvalid(t *testing.T) {
	x := NewIndex[int]()
	for _, f := range []string{"", "a/#/b", "a+", "a\x00", "\xff"} {
		if x.Subscribe(f, 1) {
			t.Errorf("Subscribe(%q) accepted an invalid filter", f)
		}
		if x.Unsubscribe(f, 1) {
			t.Errorf("Unsubscribe(%q) = true", f)
		}
	}
	if x.Count() != 0 {
		t.Fatalf("Count = %d", x.Count())
	}
	x.Subscribe("#", 1)
	x.Subscribe("a/+", 2)
	// Invalid topics give some answer without panicking.
	for _, tp := range []string{"", "a/+", "#", "\xff/a", "a\x00"} {
		_ = x.Match(tp, nil)
	}
}

// TestIndexManySubscribers drives one literal and one wildcard filter through
// thousands of subscribers added and removed in random order, checking the
// chunked subscriber lists against a set at each step.
func TestIndexManySubscribers(t *testing.T) {
	indexModes(t, func(t *testing.T, newIndex func() *Index[int]) {
		x := newIndex()
		r := rand.New(rand.NewPCG(1, 2))
		want := map[int]bool{}
		const n = 700
		check := func() {
			for _, topic := range []string{"big/x", "big/y"} {
				got := x.Match(topic, nil)
				var lit, wild []int
				for _, s := range got {
					if s >= n {
						wild = append(wild, s-n)
					} else {
						lit = append(lit, s)
					}
				}
				slices.Sort(wild)
				slices.Sort(lit)
				var exp []int
				for s := range want {
					exp = append(exp, s)
				}
				slices.Sort(exp)
				if !slices.Equal(wild, exp) {
					t.Fatalf("wildcard part for %q: got %d subscribers, want %d", topic, len(wild), len(exp))
				}
				if topic == "big/x" && !slices.Equal(lit, exp) {
					t.Fatalf("literal part: got %d subscribers, want %d", len(lit), len(exp))
				}
				if topic == "big/y" && len(lit) != 0 {
					t.Fatalf("literal part for big/y: %v", lit)
				}
			}
		}
		for step := 0; step < 4000; step++ {
			s := r.IntN(n)
			add := r.IntN(3) != 0 // grow on average, then shrink below
			if step > 2500 {
				add = r.IntN(4) == 0
			}
			if add {
				if x.Subscribe("big/x", s) == want[s] || x.Subscribe("big/+", s+n) == want[s] {
					t.Fatalf("step %d: Subscribe(%d) disagreed with the model", step, s)
				}
				want[s] = true
			} else {
				if x.Unsubscribe("big/x", s) != want[s] || x.Unsubscribe("big/+", s+n) != want[s] {
					t.Fatalf("step %d: Unsubscribe(%d) disagreed with the model", step, s)
				}
				delete(want, s)
			}
			if step%97 == 0 {
				check()
			}
		}
		check()
		if x.Count() != 2*len(want) {
			t.Fatalf("Count = %d, want %d", x.Count(), 2*len(want))
		}
	})
}

// TestIndexManyFilters grows literal shards and trie children through several
// table resizes, then shrinks them again.
func TestIndexManyFilters(t *testing.T) {
	indexModes(t, func(t *testing.T, newIndex func() *Index[int]) {
		x := newIndex()
		const n = 3000
		for i := range n {
			x.Subscribe(fmt.Sprintf("dev/%d/cmd", i), i)
			x.Subscribe(fmt.Sprintf("dash/%d/#", i), i)
		}
		if st := x.Stats(); st.LiteralFilters != n || st.WildcardFilters != n {
			t.Fatalf("Stats = %+v", st)
		}
		for i := 0; i < n; i += 7 {
			if got := x.Match(fmt.Sprintf("dev/%d/cmd", i), nil); !slices.Equal(got, []int{i}) {
				t.Fatalf("Match(dev/%d/cmd) = %v", i, got)
			}
			if got := x.Match(fmt.Sprintf("dash/%d/a/b", i), nil); !slices.Equal(got, []int{i}) {
				t.Fatalf("Match(dash/%d/a/b) = %v", i, got)
			}
		}
		for i := range n {
			if i%10 == 0 {
				continue
			}
			if !x.Unsubscribe(fmt.Sprintf("dev/%d/cmd", i), i) || !x.Unsubscribe(fmt.Sprintf("dash/%d/#", i), i) {
				t.Fatalf("Unsubscribe %d failed", i)
			}
		}
		for i := range n {
			want := []int(nil)
			if i%10 == 0 {
				want = []int{i}
			}
			if got := x.Match(fmt.Sprintf("dev/%d/cmd", i), nil); !slices.Equal(got, want) {
				t.Fatalf("after removals Match(dev/%d/cmd) = %v, want %v", i, got, want)
			}
			if got := x.Match(fmt.Sprintf("dash/%d", i), nil); !slices.Equal(got, want) {
				t.Fatalf("after removals Match(dash/%d) = %v, want %v", i, got, want)
			}
		}
		if x.Count() != 2*n/10 {
			t.Fatalf("Count = %d", x.Count())
		}
	})
}

// TestIndexDoesNotRetainTopic matches through a string that views a reused
// buffer, then rewrites the buffer: cached entries must hold their own copy.
func TestIndexDoesNotRetainTopic(t *testing.T) {
	x := NewIndex[int]()
	x.Subscribe("fleet/1/+", 1)
	x.Subscribe("fleet/2/+", 2)
	buf := []byte("fleet/1/temp")
	view := unsafe.String(&buf[0], len(buf))
	for range 3 {
		if got := x.Match(view, nil); !slices.Equal(got, []int{1}) {
			t.Fatalf("Match(fleet/1/temp) = %v", got)
		}
	}
	copy(buf, "fleet/2/temp")
	for range 3 {
		if got := x.Match(view, nil); !slices.Equal(got, []int{2}) {
			t.Fatalf("Match(fleet/2/temp) through the rewritten buffer = %v", got)
		}
	}
	copy(buf, "fleet/1/temp")
	if got := x.Match("fleet/1/temp", nil); !slices.Equal(got, []int{1}) {
		t.Fatalf("Match(fleet/1/temp) after rewrites = %v", got)
	}
	// Subscribe copies its filter too.
	fbuf := []byte("own/filter")
	x.Subscribe(unsafe.String(&fbuf[0], len(fbuf)), 3)
	copy(fbuf, "xxx/xxxxxx")
	if got := x.Match("own/filter", nil); !slices.Equal(got, []int{3}) {
		t.Fatalf("Match(own/filter) after the filter buffer changed = %v", got)
	}
	wbuf := []byte("own/+/x")
	x.Subscribe(unsafe.String(&wbuf[0], len(wbuf)), 4)
	copy(wbuf, "zzz/+/z")
	if got := x.Match("own/a/x", nil); !slices.Equal(got, []int{4}) {
		t.Fatalf("Match(own/a/x) after the filter buffer changed = %v", got)
	}
}

// TestIndexCacheInvalidation checks that a wildcard change is seen by the very
// next Match even for a topic the cache serves.
func TestIndexCacheInvalidation(t *testing.T) {
	x := NewIndex[int]()
	x.Subscribe("a/+", 1)
	for range 3 {
		x.Match("a/b", nil)
	}
	before := x.Stats()
	if got := x.Match("a/b", nil); !slices.Equal(got, []int{1}) {
		t.Fatalf("Match = %v", got)
	}
	if x.Stats().CacheHits != before.CacheHits+1 {
		t.Fatalf("hot topic not served from the cache: %+v then %+v", before, x.Stats())
	}
	x.Subscribe("a/#", 2)
	if got := matchSorted(t, x, "a/b"); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("after Subscribe Match = %v", got)
	}
	x.Unsubscribe("a/+", 1)
	if got := matchSorted(t, x, "a/b"); !slices.Equal(got, []int{2}) {
		t.Fatalf("after Unsubscribe Match = %v", got)
	}
	// A literal change needs no invalidation and must still show.
	x.Subscribe("a/b", 3)
	if got := matchSorted(t, x, "a/b"); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("after literal Subscribe Match = %v", got)
	}
}

// TestIndexCacheStats checks the counters behind the match-cache metrics:
// a Match with wildcard work is exactly one hit or one miss, whichever
// buffer the caller passes (counters are striped by buffer), a Match
// without wildcard work counts nothing, and concurrent callers lose no
// count.
func TestIndexCacheStats(t *testing.T) {
	x := NewIndex[int]()
	want := func(step string, hits, misses uint64) {
		t.Helper()
		h, m := x.CacheStats()
		if h != hits || m != misses {
			t.Fatalf("%s: CacheStats = (%d hits, %d misses), want (%d, %d)", step, h, m, hits, misses)
		}
		if st := x.Stats(); st.CacheHits != h || st.CacheMisses != m {
			t.Fatalf("%s: Stats %+v disagrees with CacheStats (%d, %d)", step, st, h, m)
		}
	}
	x.Subscribe("devices/1/cmd", 1)
	x.Match("devices/1/cmd", nil)
	want("no wildcard filter", 0, 0)

	x.Subscribe("alerts/#", 2)
	buf := make([]int, 0, 4)
	other := make([]int, 0, 4)
	x.Match("alerts/a", nil)
	want("first sight (not admitted)", 0, 1)
	x.Match("alerts/a", buf[:0])
	want("second sight (admitted)", 0, 2)
	x.Match("alerts/a", buf[:0])
	want("cached", 1, 2)
	x.Match("alerts/a", other[:0])
	x.Match("alerts/a", nil)
	want("cached, other callers", 3, 2)
	x.Match("devices/1/cmd", buf[:0]) // walked: no wildcard matches, still a miss
	want("literal topic with wildcards present", 3, 3)

	// A wildcard change makes the entry stale: one miss refreshes it.
	x.Subscribe("alerts/+", 3)
	if got := x.Match("alerts/a", buf[:0]); len(got) != 2 {
		t.Fatalf("Match after Subscribe = %v", got)
	}
	want("stale entry", 3, 4)
	x.Match("alerts/a", buf[:0])
	want("refreshed entry", 4, 4)

	// Concurrent callers, each with its own buffer or none.
	const workers, perWorker = 8, 500
	h0, m0 := x.CacheStats()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var dst []int
			if w%2 == 0 {
				dst = make([]int, 0, 8)
			}
			for i := range perWorker {
				dst = x.Match("alerts/"+strconv.Itoa(i%50), dst[:0])
			}
		}()
	}
	wg.Wait()
	h1, m1 := x.CacheStats()
	if got := (h1 - h0) + (m1 - m0); got != workers*perWorker {
		t.Fatalf("concurrent Match calls counted %d times, want %d", got, workers*perWorker)
	}
	if h1 == h0 {
		t.Fatal("50 topics matched 4,000 times: no cache hit counted")
	}

	// Without a cache nothing is counted.
	y := NewIndex[int](WithoutCache())
	y.Subscribe("alerts/#", 1)
	for range 3 {
		y.Match("alerts/a", buf[:0])
	}
	if h, m := y.CacheStats(); h != 0 || m != 0 {
		t.Fatalf("uncached index: CacheStats = (%d, %d), want (0, 0)", h, m)
	}
}

// TestIndexConcurrent runs subscribers, unsubscribers and matchers in
// parallel (meant for -race). Subscriber ids encode their filter, so every
// match result can be checked for soundness: each returned id's filter must
// match the topic. Filters that are never removed must always be found.
func TestIndexConcurrent(t *testing.T) {
	indexModes(t, func(t *testing.T, newIndex func() *Index[int]) {
		x := newIndex()
		filters := []string{"d/1/c", "d/2/c", "d/+/c", "d/#", "#", "+/+/c", "d/1/+", "$s/#", "d/3/c"}
		const stable = 1000 // ids >= stable are never unsubscribed
		x.Subscribe("d/1/c", stable+0)
		x.Subscribe("d/+/c", stable+2)
		topics := []string{"d/1/c", "d/2/c", "d/3/c", "d", "$s/x", "e/f/c"}
		const writers, readers = 4, 4
		iters := 3000
		if testing.Short() {
			iters = 500
		}
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 7))
				for range iters {
					fi := r.IntN(len(filters))
					id := fi + len(filters)*r.IntN(8) // id % len(filters) names the filter
					if r.IntN(2) == 0 {
						x.Subscribe(filters[fi], id)
					} else {
						x.Unsubscribe(filters[fi], id)
					}
				}
			}()
		}
		errs := make(chan string, readers)
		for range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dst := make([]int, 0, 64)
				for i := range iters {
					topic := topics[i%len(topics)]
					dst = x.Match(topic, dst[:0])
					var sawStable0, sawStable2 bool
					for _, id := range dst {
						switch {
						case id == stable+0:
							sawStable0 = true
						case id == stable+2:
							sawStable2 = true
						case !Match(filters[id%len(filters)], topic):
							errs <- fmt.Sprintf("Match(%q) returned id %d of filter %q", topic, id, filters[id%len(filters)])
							return
						}
					}
					if topic == "d/1/c" && !(sawStable0 && sawStable2) || topic == "d/3/c" && !sawStable2 {
						errs <- fmt.Sprintf("Match(%q) = %v lost a stable subscriber", topic, dst)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		// Quiesced: the index must agree exactly with a reference scan of
		// what it reports to hold, and with Count.
		for _, topic := range topics {
			got := matchSorted(t, x, topic)
			var want []int
			pairs := 0
			for fi, f := range filters {
				for k := range 8 {
					id := fi + len(filters)*k
					if x.Unsubscribe(f, id) {
						x.Subscribe(f, id) // it was there: put it back
						pairs++
						if Match(f, topic) {
							want = append(want, id)
						}
					}
				}
			}
			for _, id := range []int{stable + 0, stable + 2} {
				if Match(filters[id-stable], topic) {
					want = append(want, id)
				}
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("after the storm Match(%q) = %v, want %v", topic, got, want)
			}
			if x.Count() != pairs+2 {
				t.Errorf("Count = %d, want %d", x.Count(), pairs+2)
			}
		}
	})
}

func TestIndexMatchAllocs(t *testing.T) {
	x := NewIndex[int]()
	for i := range 1000 {
		x.Subscribe(fmt.Sprintf("devices/%d/cmd", i), i)
	}
	x.Subscribe("fleet/+/temp", 1)
	x.Subscribe("alerts/#", 2)
	x.Subscribe("alerts/#", 3)
	dst := make([]int, 0, 16)
	// Literal hit (the topic is also walked in the trie: no wildcard matches).
	if n := testing.AllocsPerRun(1000, func() { dst = x.Match("devices/42/cmd", dst[:0]) }); n != 0 {
		t.Errorf("literal Match allocates %v times", n)
	}
	if !slices.Equal(dst, []int{42}) {
		t.Fatalf("Match = %v", dst)
	}
	// Wildcard, served from the cache after admission.
	if n := testing.AllocsPerRun(1000, func() { dst = x.Match("alerts/fire/room1", dst[:0]) }); n != 0 {
		t.Errorf("cached wildcard Match allocates %v times", n)
	}
	if len(dst) != 2 {
		t.Fatalf("Match = %v", dst)
	}
	// Wildcard without cache: the trie walk itself allocates nothing.
	y := NewIndex[int](WithoutCache())
	y.Subscribe("fleet/+/temp", 1)
	y.Subscribe("fleet/#", 2)
	y.Subscribe("devices/7/cmd", 7)
	if n := testing.AllocsPerRun(1000, func() { dst = y.Match("fleet/7/temp", dst[:0]) }); n != 0 {
		t.Errorf("uncached wildcard Match allocates %v times", n)
	}
	if len(dst) != 2 {
		t.Fatalf("Match = %v", dst)
	}
	// A stream of distinct topics, each seen once, is not admitted to the
	// cache, so misses do not allocate either.
	topics := make([]string, 1000)
	for i := range topics {
		topics[i] = fmt.Sprintf("fleet/%d/temp", i)
	}
	i := 0
	if n := testing.AllocsPerRun(900, func() { dst = x.Match(topics[i], dst[:0]); i++ }); n != 0 {
		t.Errorf("first-seen wildcard Match allocates %v times", n)
	}
}

// TestIndexTrieChildren grows one trie node past the small-children slice
// into a hash map and back, checking every child stays reachable throughout.
func TestIndexTrieChildren(t *testing.T) {
	x := NewIndex[int](WithoutCache())
	const n = 3 * smallKids
	check := func(present func(i int) bool) {
		t.Helper()
		for i := range n {
			got := x.Match("n/c"+strconv.Itoa(i)+"/x", nil)
			want := []int(nil)
			if present(i) {
				want = []int{i}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("Match(n/c%d/x) = %v, want %v", i, got, want)
			}
		}
	}
	for i := range n {
		x.Subscribe("n/c"+strconv.Itoa(i)+"/+", i)
		check(func(j int) bool { return j <= i })
	}
	if x.root.child(x.seed, "n").big.Load() == nil {
		t.Fatal("node with many children did not switch to a map")
	}
	for i := range n - 2 {
		x.Unsubscribe("n/c"+strconv.Itoa(i)+"/+", i)
		check(func(j int) bool { return j > i })
	}
	if nd := x.root.child(x.seed, "n"); nd.big.Load() != nil || nd.kids.Load() == nil {
		t.Fatal("node with few children did not switch back to a slice")
	}
}

// TestIndexConcurrentResize makes writers grow and shrink literal tables and
// switch trie nodes between their two child forms while readers check that
// filters present throughout are never missed (meant for -race).
func TestIndexConcurrentResize(t *testing.T) {
	x := NewIndex[int]()
	const stable = 50
	for i := range stable {
		x.Subscribe("dev/s"+strconv.Itoa(i)+"/c", i)
		x.Subscribe("dash/s"+strconv.Itoa(i)+"/#", i)
	}
	rounds := 4
	if testing.Short() {
		rounds = 1
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				for i := range 1500 {
					id := 1000 + w*10000 + i
					x.Subscribe("dev/w"+strconv.Itoa(id)+"/c", id)
					x.Subscribe("dash/w"+strconv.Itoa(id)+"/#", id)
				}
				for i := range 1500 {
					id := 1000 + w*10000 + i
					x.Unsubscribe("dev/w"+strconv.Itoa(id)+"/c", id)
					x.Unsubscribe("dash/w"+strconv.Itoa(id)+"/#", id)
				}
			}
		}()
	}
	errs := make(chan string, 2)
	var readers sync.WaitGroup
	for r := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			dst := make([]int, 0, 4)
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s := i % stable
				if dst = x.Match("dev/s"+strconv.Itoa(s)+"/c", dst[:0]); !slices.Equal(dst, []int{s}) {
					errs <- fmt.Sprintf("Match(dev/s%d/c) = %v during resizes", s, dst)
					return
				}
				if dst = x.Match("dash/s"+strconv.Itoa(s)+"/x", dst[:0]); !slices.Equal(dst, []int{s}) {
					errs <- fmt.Sprintf("Match(dash/s%d/x) = %v during resizes", s, dst)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if st := x.Stats(); st.LiteralFilters != stable || st.WildcardFilters != stable || x.Count() != 2*stable {
		t.Errorf("after the storm Stats = %+v, Count = %d", st, x.Count())
	}
}
