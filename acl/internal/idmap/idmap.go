// Package idmap is a persistent (immutable, path-copying) ordered map from
// int64 IDs to values: what acl.Grants keeps its grants in, by tag ID, so
// that a grant set with one grant changed costs O(log n) to derive and
// shares everything else with the set it came from.
//
// It is a treap whose priorities are a fixed bijective hash of the key, so
// the shape depends only on the set of keys (not on insertion order), its
// expected depth is O(log n) for any keys an adversary could not choose
// against the hash (tag IDs are assigned by the store), and building from
// sorted keys takes O(n).
//
// It must not know about grants, tags or topics.
package idmap

import "iter"

// Map is an immutable map; a nil *Map is the empty map. Every method is
// safe for concurrent use.
type Map[V any] struct {
	root *node[V]
	n    int
}

type node[V any] struct {
	key         int64
	prio        uint64
	val         V
	left, right *node[V]
}

// prio is the splitmix64 finalizer: a bijection, so distinct keys never
// tie, and sequential IDs get scattered priorities.
func prio(k int64) uint64 {
	z := uint64(k) + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Len is the number of keys.
func (m *Map[V]) Len() int {
	if m == nil {
		return 0
	}
	return m.n
}

// Get returns the value under k and whether there is one. No allocation.
func (m *Map[V]) Get(k int64) (v V, ok bool) {
	if m == nil {
		return v, false
	}
	for n := m.root; n != nil; {
		switch {
		case k < n.key:
			n = n.left
		case k > n.key:
			n = n.right
		default:
			return n.val, true
		}
	}
	return v, false
}

// Put returns a map with k set to v; m is unchanged. O(log n).
func (m *Map[V]) Put(k int64, v V) *Map[V] {
	r := &Map[V]{}
	if m != nil {
		r.root, r.n = m.root, m.n
	}
	var added bool
	r.root, added = insert(r.root, k, prio(k), v)
	if added {
		r.n++
	}
	return r
}

func insert[V any](n *node[V], k int64, p uint64, v V) (*node[V], bool) {
	if n == nil {
		return &node[V]{key: k, prio: p, val: v}, true
	}
	if k == n.key {
		c := *n
		c.val = v
		return &c, false
	}
	if p > n.prio {
		// k belongs above n. It is not in n's subtree: there, every key's
		// priority is below n's.
		l, r := split(n, k)
		return &node[V]{key: k, prio: p, val: v, left: l, right: r}, true
	}
	c := *n
	var added bool
	if k < n.key {
		c.left, added = insert(n.left, k, p, v)
	} else {
		c.right, added = insert(n.right, k, p, v)
	}
	return &c, added
}

// split returns copies of the keys of n below k and above k (k is absent).
func split[V any](n *node[V], k int64) (l, r *node[V]) {
	if n == nil {
		return nil, nil
	}
	c := *n
	if k < n.key {
		l, c.left = split(n.left, k)
		return l, &c
	}
	c.right, r = split(n.right, k)
	return &c, r
}

// Delete returns a map without k, or m itself when k is absent. O(log n).
func (m *Map[V]) Delete(k int64) *Map[V] {
	if _, ok := m.Get(k); !ok {
		return m
	}
	root := remove(m.root, k)
	if root == nil {
		return nil
	}
	return &Map[V]{root: root, n: m.n - 1}
}

func remove[V any](n *node[V], k int64) *node[V] {
	switch {
	case k < n.key:
		c := *n
		c.left = remove(n.left, k)
		return &c
	case k > n.key:
		c := *n
		c.right = remove(n.right, k)
		return &c
	}
	return merge(n.left, n.right)
}

// merge joins a and b, every key of a being below every key of b.
func merge[V any](a, b *node[V]) *node[V] {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.prio > b.prio:
		c := *a
		c.right = merge(a.right, b)
		return &c
	}
	c := *b
	c.left = merge(a, b.left)
	return &c
}

// All yields every key and value in ascending key order.
func (m *Map[V]) All() iter.Seq2[int64, V] {
	return func(yield func(int64, V) bool) {
		if m != nil {
			walk(m.root, yield)
		}
	}
}

func walk[V any](n *node[V], yield func(int64, V) bool) bool {
	for n != nil {
		if !walk(n.left, yield) || !yield(n.key, n.val) {
			return false
		}
		n = n.right
	}
	return true
}

// FromSorted builds the map of key(v) → v for every v of vals in O(n),
// with one allocation for all nodes. The keys must be strictly ascending
// (it panics otherwise: the caller sorts and deduplicates).
func FromSorted[V any](vals []V, key func(V) int64) *Map[V] {
	if len(vals) == 0 {
		return nil
	}
	nodes := make([]node[V], len(vals))
	// The Cartesian tree of the priorities: a stack holds the right spine
	// of the tree built so far, priorities decreasing from bottom to top.
	spine := make([]*node[V], 0, 64)
	for i, v := range vals {
		n := &nodes[i]
		n.key, n.val = key(v), v
		n.prio = prio(n.key)
		if i > 0 && n.key <= nodes[i-1].key {
			panic("idmap: FromSorted keys not strictly ascending")
		}
		var last *node[V]
		for len(spine) > 0 && spine[len(spine)-1].prio < n.prio {
			last = spine[len(spine)-1]
			spine = spine[:len(spine)-1]
		}
		n.left = last
		if len(spine) > 0 {
			spine[len(spine)-1].right = n
		}
		spine = append(spine, n)
	}
	return &Map[V]{root: spine[0], n: len(vals)}
}
