package idmap

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// check verifies m against the reference: contents, order, and the treap
// invariants (search order on keys, heap order on priorities).
func check(t *testing.T, m *Map[int], want map[int64]int) {
	t.Helper()
	if m.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", m.Len(), len(want))
	}
	var keys []int64
	for k, v := range m.All() {
		if want[k] != v {
			t.Fatalf("All gave %d → %d, want %d", k, v, want[k])
		}
		keys = append(keys, k)
	}
	if !slices.Equal(keys, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("All keys %v not the sorted reference keys", keys)
	}
	for k, v := range want {
		if got, ok := m.Get(k); !ok || got != v {
			t.Fatalf("Get(%d) = %d, %v; want %d", k, got, ok, v)
		}
	}
	if m != nil {
		var rec func(n *node[int], lo, hi int64) int
		rec = func(n *node[int], lo, hi int64) int {
			if n == nil {
				return 0
			}
			if n.key <= lo || n.key >= hi || n.prio != prio(n.key) {
				t.Fatalf("node %d out of order or with a wrong priority", n.key)
			}
			for _, c := range []*node[int]{n.left, n.right} {
				if c != nil && c.prio > n.prio {
					t.Fatalf("heap order broken under %d", n.key)
				}
			}
			return 1 + max(rec(n.left, lo, n.key), rec(n.right, n.key, hi))
		}
		depth := rec(m.root, -1<<63, 1<<63-1)
		if len(want) > 1000 && depth > 60 {
			t.Fatalf("depth %d for %d keys", depth, len(want))
		}
	}
}

func TestMapRandomOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var m *Map[int]
	want := map[int64]int{}
	type snap struct {
		m    *Map[int]
		want map[int64]int
	}
	var snaps []snap
	for i := range 3000 {
		k := int64(rng.IntN(500)) - 100
		if rng.IntN(3) == 0 {
			m = m.Delete(k)
			delete(want, k)
		} else {
			m = m.Put(k, i)
			want[k] = i
		}
		if i%300 == 0 {
			snaps = append(snaps, snap{m, maps.Clone(want)})
			check(t, m, want)
		}
	}
	check(t, m, want)
	for _, s := range snaps {
		check(t, s.m, s.want) // later changes never reach an older map
	}
	if m.Delete(1_000_000) != m {
		t.Error("deleting an absent key made a new map")
	}
	var empty *Map[int]
	if _, ok := empty.Get(1); ok || empty.Len() != 0 || empty.Delete(1) != nil {
		t.Error("nil map not empty")
	}
	for range empty.All() {
		t.Error("nil map yields")
	}
}

func TestFromSorted(t *testing.T) {
	for _, n := range []int{0, 1, 2, 10, 10_000} {
		keys := make([]int64, n)
		vals := make([]int, n)
		want := map[int64]int{}
		var built *Map[int]
		for i := range n {
			keys[i], vals[i] = int64(3*i+1), i
			want[keys[i]] = i
			built = built.Put(keys[i], i)
		}
		m := FromSorted(vals, func(v int) int64 { return keys[v] })
		check(t, m, want)
		// The shape depends on the keys only: bulk and one-by-one agree.
		if n > 0 && !sameShape(m.root, built.root) {
			t.Fatalf("n=%d: FromSorted and Put built different trees", n)
		}
		// Changing a bulk-built map leaves it unchanged.
		if n > 0 {
			m2 := m.Put(keys[n/2], -1).Delete(keys[0])
			check(t, m, want)
			want[keys[n/2]] = -1
			delete(want, keys[0])
			check(t, m2, want)
		}
	}
	for _, bad := range [][]int64{{1, 1}, {2, 1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("FromSorted(%v) did not panic", bad)
				}
			}()
			FromSorted([]int{0, 1}, func(i int) int64 { return bad[i] })
		}()
	}
}

func sameShape(a, b *node[int]) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.key == b.key && a.val == b.val && sameShape(a.left, b.left) && sameShape(a.right, b.right)
}

func TestGetAllocs(t *testing.T) {
	m := FromSorted([]int64{1, 5, 9}, func(k int64) int64 { return k }).Put(3, 3)
	if n := testing.AllocsPerRun(100, func() { m.Get(5); m.Get(6) }); n != 0 {
		t.Errorf("Get allocates %v times", n)
	}
}
