package topic

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
)

// naiveSet is the reference a PatternSet must agree with: a map scanned
// with Match and Contains.
type naiveSet map[string]Classes

func (m naiveSet) match(topic string, want Classes) bool {
	for p, c := range m {
		if c&want != 0 && Match(p, topic) {
			return true
		}
	}
	return false
}

func (m naiveSet) contains(filter string, want Classes) bool {
	for p, c := range m {
		if c&want != 0 && Contains(p, filter) {
			return true
		}
	}
	return false
}

// checkSet compares s with the reference m: size, lookups, and Match and
// Contains for every subject (topics are only asked for Match, since
// Match's precondition is a valid topic), for each class and both.
func checkSet(t *testing.T, s *PatternSet[int], m naiveSet, subjects []string) {
	t.Helper()
	if s.Len() != len(m) {
		t.Fatalf("Len = %d, want %d", s.Len(), len(m))
	}
	for p, c := range m {
		if _, gc, ok := s.Get(p); !ok || gc != c {
			t.Fatalf("Get(%q) = %v, %v; want %v, true", p, gc, ok, c)
		}
	}
	seen := 0
	s.Range(func(p string, _ int, c Classes) bool {
		seen++
		if m[p] != c {
			t.Fatalf("Range gave %q with %v, reference has %v", p, c, m[p])
		}
		return true
	})
	if seen != len(m) {
		t.Fatalf("Range gave %d patterns, want %d", seen, len(m))
	}
	for _, want := range []Classes{1, 2, 3} {
		for _, x := range subjects {
			if ValidateTopic(x) == nil {
				if got := s.Match(x, want); got != m.match(x, want) {
					t.Fatalf("patterns %v: Match(%q, %b) = %v, reference %v", m, x, want, got, !got)
				}
			}
			if ValidateFilter(x) == nil {
				if got := s.Contains(x, want); got != m.contains(x, want) {
					t.Fatalf("patterns %v: Contains(%q, %b) = %v, reference %v", m, x, want, got, !got)
				}
			}
		}
	}
}

// TestPatternSetSingleExhaustive checks, for every pattern of up to 3
// levels over {a, "", $s, +, #}, that the one-pattern set agrees with Match
// and Contains on every topic and filter of up to 4 levels (one more, so
// '#' shows).
func TestPatternSetSingleExhaustive(t *testing.T) {
	patterns := enumerate([]string{"a", "", "$s", "+"}, 3, true)
	subjects := enumerate([]string{"a", "b", "", "$s", "+"}, 4, true)
	for _, p := range patterns {
		s := (*PatternSet[int])(nil).Put(p, 0, 1)
		checkSet(t, s, naiveSet{p: 1}, subjects)
	}
	t.Logf("%d patterns × %d subjects", len(patterns), len(subjects))
}

// TestPatternSetRandomSets checks random multi-pattern sets, built with a
// builder and changed one pattern at a time with Put and Delete, against
// the reference after every change; older snapshots must not move.
func TestPatternSetRandomSets(t *testing.T) {
	patterns := enumerate([]string{"a", "", "$s", "+"}, 3, true)
	subjects := enumerate([]string{"a", "b", "", "$s", "+"}, 3, true)
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 40 {
		m := naiveSet{}
		var b PatternSetBuilder[int]
		for range 1 + rng.IntN(12) {
			p := patterns[rng.IntN(len(patterns))]
			c := Classes(1 + rng.IntN(3))
			b.Put(p, 0, c)
			m[p] = c
		}
		s := b.Build()
		checkSet(t, s, m, subjects)
		for range 10 {
			before, beforeM := s, maps(m)
			p := patterns[rng.IntN(len(patterns))]
			if rng.IntN(2) == 0 {
				c := Classes(1 + rng.IntN(3))
				s = s.Put(p, round, c)
				m[p] = c
			} else {
				s = s.Delete(p)
				delete(m, p)
			}
			checkSet(t, s, m, subjects)
			checkSet(t, before, beforeM, subjects)
		}
	}
}

func maps(m naiveSet) naiveSet {
	c := make(naiveSet, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func TestPatternSetBasics(t *testing.T) {
	var s *PatternSet[string]
	if s.Len() != 0 || s.Match("a", 1) || s.Contains("a", 1) {
		t.Fatal("nil set not empty")
	}
	if _, _, ok := s.Get("a"); ok {
		t.Fatal("nil set holds a pattern")
	}
	if s.Put("a/#/b", "x", 1) != nil || s.Put("", "x", 1) != nil {
		t.Fatal("invalid pattern added")
	}
	s1 := s.Put("sensors/+/temp", "t", 1).Put("sensors/#", "all", 2).Put("$SYS/#", "sys", 1)
	if v, c, ok := s1.Get("sensors/#"); !ok || v != "all" || c != 2 {
		t.Fatalf("Get = %q %v %v", v, c, ok)
	}
	if _, _, ok := s1.Get("sensors/+"); ok {
		t.Fatal("Get of an absent pattern (a prefix of a present one) found it")
	}
	if _, _, ok := s1.Get("sensors"); ok {
		t.Fatal("Get(sensors) found sensors/#")
	}
	for _, c := range []struct {
		topic string
		want  Classes
		match bool
	}{
		{"sensors/r1/temp", 1, true},
		{"sensors/r1/hum", 1, false},
		{"sensors/r1/hum", 2, true},
		{"sensors", 2, true},
		{"$SYS/x", 1, true},
		{"$SYS/x", 2, false},
	} {
		if got := s1.Match(c.topic, c.want); got != c.match {
			t.Errorf("Match(%q, %d) = %v", c.topic, c.want, got)
		}
	}
	if s1.Delete("nope") != s1 || s1.Delete("sensors/+") != s1 {
		t.Fatal("deleting an absent pattern made a new set")
	}
	s2 := s1.Delete("sensors/#").Delete("sensors/+/temp").Delete("$SYS/#")
	if s2 != nil {
		t.Fatalf("set emptied by deletes is %v, want nil", s2)
	}
	if s1.Len() != 3 {
		t.Fatal("deletes changed the original set")
	}
	// A builder keeps working after Build without touching what it built.
	var b PatternSetBuilder[string]
	b.Put("x/+", "1", 1)
	b.Put("x/y/#", "2", 1)
	built := b.Build()
	b.Delete("x/+")
	b.Put("x/y/#", "3", 2)
	b.Put("x/z", "4", 1)
	later := b.Build()
	if v, c, ok := built.Get("x/y/#"); built.Len() != 2 || !ok || v != "2" || c != 1 || !built.Match("x/q", 1) {
		t.Fatal("changes after Build reached the built set")
	}
	if _, _, ok := built.Get("x/z"); ok {
		t.Fatal("changes after Build reached the built set")
	}
	if later.Len() != 2 || later.Match("x/q", 1) || !later.Match("x/y/q", 2) || !later.Match("x/z", 1) {
		t.Fatal("builder lost changes made after Build")
	}
}

// TestPatternSetManyChildren grows one node far past the small-children
// slice into the hash trie and back, checking every pattern stays
// reachable and every snapshot keeps its contents.
func TestPatternSetManyChildren(t *testing.T) {
	const n = 3000
	var s *PatternSet[int]
	var snaps []*PatternSet[int]
	check := func(s *PatternSet[int], present func(i int) bool) {
		t.Helper()
		for i := 0; i < n; i += 7 {
			tp := "dev/" + strconv.Itoa(i) + "/x"
			if got := s.Match(tp, 1); got != present(i) {
				t.Fatalf("Match(%s) = %v", tp, got)
			}
			if got := s.Contains("dev/"+strconv.Itoa(i)+"/+", 1); got != present(i) {
				t.Fatalf("Contains(dev/%d/+) = %v", i, got)
			}
		}
	}
	for i := range n {
		s = s.Put("dev/"+strconv.Itoa(i)+"/#", i, 1)
		if i%500 == 0 {
			snaps = append(snaps, s)
		}
	}
	check(s, func(int) bool { return true })
	if nd := s.root.child("dev"); nd.big == nil || nd.kids != nil || nd.nkids != n {
		t.Fatal("node with many children did not switch to the hash trie")
	}
	for i := range n - 2 {
		s = s.Delete("dev/" + strconv.Itoa(i) + "/#")
	}
	check(s, func(i int) bool { return i >= n-2 })
	if nd := s.root.child("dev"); nd.big != nil || len(nd.kids) != 2 {
		t.Fatal("node with few children did not switch back to a slice")
	}
	for k, snap := range snaps {
		check(snap, func(i int) bool { return i <= k*500 })
	}
	// A builder's bulk build gives the same answers.
	var b PatternSetBuilder[int]
	for i := range n {
		b.Put("dev/"+strconv.Itoa(i)+"/#", i, 1)
	}
	check(b.Build(), func(int) bool { return true })
}

// TestHnodeCollisions drives the hash trie with chosen hashes: keys that
// share every bit (list nodes past the 64 bits), keys that share long
// prefixes, and removal down to nothing, against a map.
func TestHnodeCollisions(t *testing.T) {
	hashes := []uint64{0, 0, 0, 1, 1 << 60, 1<<60 | 1, 32, 32 << 5, ^uint64(0), ^uint64(0)}
	a := new(arena[int])
	var h *hnode[int]
	want := map[string]*pnode[int]{}
	for i, hv := range hashes {
		k := fmt.Sprint("k", i)
		kid := new(pnode[int])
		h = h.set(a, 0, hv, k, kid)
		want[k] = kid
	}
	// Replace one in place.
	nk := new(pnode[int])
	h = h.set(a, 0, hashes[1], "k1", nk)
	want["k1"] = nk
	verify := func() {
		t.Helper()
		for i, hv := range hashes {
			k := fmt.Sprint("k", i)
			if got := h.get(hv, k); got != want[k] {
				t.Fatalf("get(%s) = %p, want %p", k, got, want[k])
			}
			if h.get(hv, k+"x") != nil {
				t.Fatalf("get(%sx) found something", k)
			}
		}
		n := 0
		h.each(func(k string, kid *pnode[int]) bool {
			n++
			if want[k] != kid {
				t.Fatalf("each gave %s → %p, want %p", k, kid, want[k])
			}
			return true
		})
		if n != len(want) {
			t.Fatalf("each gave %d children, want %d", n, len(want))
		}
	}
	verify()
	for _, i := range []int{0, 4, 8, 1, 3, 9, 2, 5, 6, 7} {
		k := fmt.Sprint("k", i)
		old := h
		h = h.del(new(arena[int]), 0, hashes[i], k) // a fresh editor: a persistent delete
		delete(want, k)
		if len(want) == 0 {
			if h != nil {
				t.Fatal("emptied table not nil")
			}
			break
		}
		verify()
		if old.get(hashes[i], k) == nil {
			t.Fatalf("persistent delete of %s changed the old table", k)
		}
	}
}

func TestPatternSetAllocs(t *testing.T) {
	var b PatternSetBuilder[int]
	for i := range 1000 {
		b.Put("dev/"+strconv.Itoa(i)+"/#", i, 1)
	}
	b.Put("fleet/+/temp", 0, 3)
	b.Put("$SYS/#", 0, 1)
	s := b.Build()
	for _, x := range []string{"dev/42/x/y", "fleet/a/temp", "nope", "$SYS/a", "dev/+/x", "fleet/#", "a/#/b", ""} {
		if n := testing.AllocsPerRun(100, func() { s.Match(x, 1) }); n != 0 {
			t.Errorf("Match(%q) allocates %v times", x, n)
		}
		if n := testing.AllocsPerRun(100, func() { s.Contains(x, 1) }); n != 0 {
			t.Errorf("Contains(%q) allocates %v times", x, n)
		}
		if n := testing.AllocsPerRun(100, func() { s.Get(x) }); n != 0 {
			t.Errorf("Get(%q) allocates %v times", x, n)
		}
	}
}

// Readers query published sets while a writer derives new ones from them;
// run with -race: a published set is never written again.
func TestPatternSetConcurrent(t *testing.T) {
	var (
		mu  sync.Mutex
		cur = (*PatternSet[int])(nil).Put("keep/#", 0, 1)
	)
	load := func() *PatternSet[int] { mu.Lock(); defer mu.Unlock(); return cur }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := load()
				if !s.Match("keep/a", 1) || !s.Contains("keep/+", 1) {
					t.Error("keep/# lost")
					return
				}
				s.Match("d/"+strconv.Itoa(s.Len())+"/x", 1)
				s.Contains("d/+/x", 1)
			}
		})
	}
	s := load()
	for i := range 2000 {
		if i%3 == 2 {
			s = s.Delete("d/" + strconv.Itoa(i-1) + "/#")
		} else {
			s = s.Put("d/"+strconv.Itoa(i)+"/#", i, 1)
		}
		mu.Lock()
		cur = s
		mu.Unlock()
	}
	close(stop)
	wg.Wait()
}

// fuzzPatternOps decodes FuzzPatternSet input: each op is one byte - kind
// (low 2 bits: 0 put, 1 delete, 2 match, 3 contains), classes (next 2
// bits), level count minus one (top 3 bits, capped at 4 levels) - then one
// byte per level indexing fuzzAlphabet. A truncated last op is dropped.
func fuzzPatternOps(data []byte) []fuzzOp {
	var ops []fuzzOp
	for i := 0; i < len(data); {
		op := data[i]
		i++
		n := min(int(op>>5)+1, 4)
		if i+n > len(data) {
			break
		}
		levels := make([]string, n)
		for j := range n {
			levels[j] = fuzzAlphabet[int(data[i+j])%len(fuzzAlphabet)]
		}
		i += n
		ops = append(ops, fuzzOp{kind: int(op & 3), id: int(op>>2) & 3, s: joinLevels(levels)})
	}
	return ops
}

func joinLevels(levels []string) string {
	s := levels[0]
	for _, l := range levels[1:] {
		s += "/" + l
	}
	return s
}

// FuzzPatternSet applies random put/delete sequences to a PatternSet, over
// patterns built from a small alphabet with wildcards (also misplaced ones)
// and '$' levels, and compares every Match and Contains answer, for every
// class combination, with a naive scan using Match and Contains. A snapshot
// taken midway must keep answering as it did.
func FuzzPatternSet(f *testing.F) {
	f.Add([]byte{0x24, 0, 4, 0x22, 0, 1})             // put a/+ ; match a/b
	f.Add([]byte{0x04, 5, 0x02, 7, 0x03, 5, 0x01, 5}) // put # ; match $s ; contains # ; delete #
	f.Add([]byte{0x24, 4, 5, 0x03, 5, 0x23, 2, 5})    // put +/# ; contains # ; contains /#
	f.Fuzz(func(t *testing.T, data []byte) {
		ops := fuzzPatternOps(data)
		var s *PatternSet[int]
		m := naiveSet{}
		var snap *PatternSet[int]
		var snapM naiveSet
		var asked []string
		for i, op := range ops {
			c := Classes(op.id)
			switch op.kind {
			case 0:
				s = s.Put(op.s, i, c)
				if ValidateFilter(op.s) == nil {
					m[op.s] = c
				}
			case 1:
				s = s.Delete(op.s)
				delete(m, op.s)
			case 2, 3:
				asked = append(asked, op.s)
				for want := Classes(1); want <= 3; want++ {
					if ValidateTopic(op.s) == nil {
						if got := s.Match(op.s, want); got != m.match(op.s, want) {
							t.Fatalf("patterns %v: Match(%q, %b) = %v", m, op.s, want, got)
						}
					} else {
						s.Match(op.s, want) // must not panic
					}
					if ValidateFilter(op.s) == nil {
						if got := s.Contains(op.s, want); got != m.contains(op.s, want) {
							t.Fatalf("patterns %v: Contains(%q, %b) = %v", m, op.s, want, got)
						}
					} else {
						s.Contains(op.s, want)
					}
				}
			}
			if i == len(ops)/2 {
				snap, snapM = s, maps(m)
			}
		}
		if s.Len() != len(m) {
			t.Fatalf("Len = %d, want %d", s.Len(), len(m))
		}
		if snap != nil {
			checkSet(t, snap, snapM, slices.Compact(asked))
		}
	})
}

func BenchmarkPatternSet(b *testing.B) {
	for _, n := range []int{1, 10_000} {
		var bl PatternSetBuilder[int]
		for i := range n {
			bl.Put("fleet/site"+strconv.Itoa(i)+"/+/telemetry/#", i, 1)
		}
		s := bl.Build()
		topic := "fleet/site" + strconv.Itoa(n-1) + "/dev1/telemetry/temp"
		b.Run("Match/patterns="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !s.Match(topic, 1) {
					b.Fatal("no match")
				}
			}
		})
		b.Run("Contains/patterns="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !s.Contains("fleet/site0/+/telemetry/temp", 1) {
					b.Fatal("not contained")
				}
			}
		})
		b.Run("Put/patterns="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Put("fleet/site0/+/telemetry/#", 0, 3)
			}
		})
	}
}
