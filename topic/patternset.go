package topic

import (
	"hash/maphash"
	"strings"
	"sync/atomic"
)

// Classes is a bit set of caller-defined pattern classes. Each pattern of a
// PatternSet carries one, and a query names the classes it asks about: a
// pattern takes part in a query when its classes and the query's intersect.
// acl uses two, "readable" and "writable", so one trie answers both its
// subscribe and its publish checks.
type Classes uint32

// PatternSet is an immutable set of filters ("patterns"), each with a value
// of type V and Classes, compiled into a level trie so that the questions
// "does some pattern match this topic" (Match) and "does some pattern
// contain this filter" (Contains) cost one walk of the topic's levels,
// whatever the number of patterns. It is what acl.Grants compiles a token's
// grants into: the same matcher as routing, not a second one.
//
// It is immutable once built: every method may be called from any number of
// goroutines at once without locks, and queries allocate nothing. Changing
// it (Put, Delete, or a PatternSetBuilder started from it) returns a new set
// that shares every node off the changed pattern's path (path copying), so a
// single change costs O(levels × log children), never O(patterns), and the
// old set stays valid for readers still holding it. A nil *PatternSet is the
// empty set.
//
// Why not Index: Index is one shared, mutable structure updated in place
// with atomics (many writers, subscribers per filter, a cache). A token's
// grants instead need snapshots — the broker swaps a token's whole grant set
// with one pointer store — and cheap derived versions, which a persistent
// trie gives for free. The level walk and the '$' rule are the same as
// Index.walk's; children are kept the same two ways (a short slice while few,
// a hash table once many), the table here being a persistent hash array
// mapped trie instead of the Index's lock-free hmap.
type PatternSet[V any] struct {
	root *pnode[V] // nil when empty
	n    int
}

// editor marks the nodes a PatternSetBuilder created or copied since its
// last Build: only those may be modified in place. Every published set's
// nodes belong to an editor that is retired, so they are never written
// again. Editors are numbered (an integer, not a pointer, so that marking a
// node costs no write barrier and the collector has nothing to scan); 0 is
// no editor.
type editor uint64

var lastEditor atomic.Uint64

func newEditor() editor { return editor(lastEditor.Add(1)) }

// pnode is a trie node: the pattern prefix of its depth.
type pnode[V any] struct {
	own   editor
	kids  []pkid[V] // literal children while at most smallKids; nil when big is used
	big   *hnode[V] // literal children once more than smallKids
	nkids int32
	plus  *pnode[V] // '+' next level
	end   pslot[V]  // the pattern that ends here
	hash  pslot[V]  // the pattern made of this node's prefix and a last level "#"
}

type pkid[V any] struct {
	level string // owned (a substring of an owned pattern copy)
	n     *pnode[V]
}

// pslot is one pattern of the set. The pattern itself is the node's path
// (Range rebuilds it): not storing it keeps nodes small, and most nodes are
// inner ones.
type pslot[V any] struct {
	has bool
	c   Classes
	v   V
}

func (n *pnode[V]) empty() bool {
	return n.nkids == 0 && n.plus == nil && !n.end.has && !n.hash.has
}

// levelSeed hashes literal levels for the children tables of every
// PatternSet. It is shared by all sets because derived sets share tables.
var levelSeed = maphash.MakeSeed()

// child returns the child for a literal level, or nil.
func (n *pnode[V]) child(level string) *pnode[V] {
	if n.big != nil {
		return n.big.get(maphash.String(levelSeed, level), level)
	}
	for i := range n.kids {
		if n.kids[i].level == level {
			return n.kids[i].n
		}
	}
	return nil
}

// Len is the number of patterns in the set.
func (s *PatternSet[V]) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// Get returns the value and classes stored for pattern (an exact lookup:
// no wildcard semantics), and whether the set holds it.
func (s *PatternSet[V]) Get(pattern string) (v V, c Classes, ok bool) {
	if s == nil {
		return v, 0, false
	}
	return get(s.root, pattern)
}

func get[V any](n *pnode[V], pattern string) (v V, c Classes, ok bool) {
	if n == nil || pattern == "" {
		return v, 0, false
	}
	for i := 0; ; {
		level, end := nextLevel(pattern, i)
		if level == "#" {
			if end != len(pattern) {
				return v, 0, false
			}
			return n.hash.v, n.hash.c, n.hash.has
		}
		if level == "+" {
			n = n.plus
		} else {
			n = n.child(level)
		}
		if n == nil {
			return v, 0, false
		}
		if end == len(pattern) {
			return n.end.v, n.end.c, n.end.has
		}
		i = end + 1
	}
}

// Match reports whether some pattern whose classes intersect want matches
// topic, exactly as Match(pattern, topic) would: '+' is one level, '#' the
// parent level and everything below, and a topic whose first level starts
// with '$' is not matched by a leading wildcard. topic must be a valid
// publish topic (ValidateTopic); on anything else Match returns some answer
// without panicking. It takes no lock, allocates nothing and visits only
// trie nodes whose prefix matches the topic's leading levels, so its cost
// is bounded by the topic's levels, not by the number of patterns.
func (s *PatternSet[V]) Match(topic string, want Classes) bool {
	if s == nil || s.root == nil || topic == "" {
		return false
	}
	return s.root.match(topic, 0, false, want)
}

// match walks the patterns under n against topic from byte i on (done: the
// topic is fully consumed). It is Index.walk with an early exit: it loops
// down the trie and recurses only where both a literal child and a '+'
// child match.
func (n *pnode[V]) match(topic string, i int, done bool, want Classes) bool {
	for {
		blocked := i == 0 && topic[0] == '$' // the '$' rule, at the root only
		if n.hash.c&want != 0 && !blocked {
			return true // "p/#" matches p itself and everything below
		}
		if done {
			return n.end.c&want != 0
		}
		end := len(topic)
		if j := strings.IndexByte(topic[i:], '/'); j >= 0 {
			end = i + j
		}
		last := end == len(topic)
		c := n.child(topic[i:end])
		if p := n.plus; p != nil && !blocked {
			if c != nil && c.match(topic, end+1, last, want) {
				return true
			}
			c = p
		}
		if c == nil {
			return false
		}
		n, i, done = c, end+1, last
	}
}

// Contains reports whether some pattern whose classes intersect want
// contains filter, exactly as Contains(pattern, filter) would: every topic
// filter matches is matched by that pattern. A literal filter level can be
// covered by a literal or a '+' pattern level, a filter '+' only by a '+',
// a filter '#' only by a '#' (or, when its parent would be the empty topic,
// by "+/#"); a pattern '#' covers whatever follows, and "p/#" also covers
// the filter p. filter must be valid (ValidateFilter); on anything else
// Contains returns some answer without panicking. No lock, no allocation,
// cost bounded by the filter's levels.
func (s *PatternSet[V]) Contains(filter string, want Classes) bool {
	if s == nil || s.root == nil || filter == "" {
		return false
	}
	return s.root.contains(filter, 0, false, want)
}

// contains walks the patterns under n against filter from byte i on (done:
// the filter is fully consumed). Each case mirrors a case of the function
// Contains.
func (n *pnode[V]) contains(filter string, i int, done bool, want Classes) bool {
	for {
		if done {
			// Same length: the pattern ends here, or goes on with just "/#".
			return (n.end.c|n.hash.c)&want != 0
		}
		level, end := nextLevel(filter, i)
		last := end == len(filter)
		// A literal first level starting with '$' is never matched by a
		// first-level wildcard.
		dollar := i == 0 && level != "" && level[0] == '$'
		if n.hash.c&want != 0 && !dollar {
			return true
		}
		switch level {
		case "#":
			// The filter matches its parent and every depth below; only a
			// '#' covers that (checked above). When the parent is the empty
			// string (filter "#" or "/#"), which is no topic, "+/#" does too.
			if i <= 1 {
				if p := n.plus; p != nil && p.hash.c&want != 0 {
					return true
				}
			}
			return false
		case "+":
			n = n.plus
			if n == nil {
				return false
			}
		default:
			c := n.child(level)
			if p := n.plus; p != nil && !dollar {
				if c != nil && c.contains(filter, end+1, last, want) {
					return true
				}
				c = p
			}
			if c == nil {
				return false
			}
			n = c
		}
		i, done = end+1, last
	}
}

// Range calls f for every pattern of the set, in no particular order, until
// f returns false. It builds each pattern string, so it allocates: for
// display and comparison, not for hot paths.
func (s *PatternSet[V]) Range(f func(pattern string, v V, c Classes) bool) {
	if s != nil && s.root != nil {
		s.root.rangeSlots(nil, true, f)
	}
}

// rangeSlots calls f for the patterns under n, whose prefix is path
// (depth levels: the root has none, while a path of one empty level is
// also empty, hence the flag).
func (n *pnode[V]) rangeSlots(path []byte, root bool, f func(pattern string, v V, c Classes) bool) bool {
	if n.end.has && !f(string(path), n.end.v, n.end.c) {
		return false
	}
	prefix := path[:len(path):len(path)] // appends below never write into a sibling's path
	if !root {
		prefix = append(prefix, '/')
	}
	if n.hash.has && !f(string(append(prefix, '#')), n.hash.v, n.hash.c) {
		return false
	}
	down := func(level string, c *pnode[V]) bool {
		return c.rangeSlots(append(prefix[:len(prefix):len(prefix)], level...), false, f)
	}
	if n.plus != nil && !down("+", n.plus) {
		return false
	}
	for _, k := range n.kids {
		if !down(k.level, k.n) {
			return false
		}
	}
	return n.big.each(down)
}

// Put returns a set that also holds pattern with value v and classes c
// (replacing what the set held for it). It returns s itself when pattern
// is not a valid filter (ValidateFilter). O(levels × log children); s is
// unchanged. To add many patterns at once use a PatternSetBuilder. The set
// keeps pattern: it must not be a view of a buffer that is modified later
// (ordinary Go strings never are).
func (s *PatternSet[V]) Put(pattern string, v V, c Classes) *PatternSet[V] {
	b := s.Builder()
	if !b.Put(pattern, v, c) {
		return s
	}
	return b.Build()
}

// Delete returns a set without pattern, or s itself when s does not hold
// it. O(levels × log children); s is unchanged.
func (s *PatternSet[V]) Delete(pattern string) *PatternSet[V] {
	b := s.Builder()
	if !b.Delete(pattern) {
		return s
	}
	return b.Build()
}

// Builder returns a builder that starts from the patterns of s (nil: from
// none). s itself is never modified.
func (s *PatternSet[V]) Builder() *PatternSetBuilder[V] {
	b := &PatternSetBuilder[V]{}
	if s != nil {
		b.root, b.n = s.root, s.n
	}
	return b
}

// PatternSetBuilder accumulates changes to a PatternSet. Nodes it creates
// or copies are modified in place until Build, so building a set of n
// patterns costs O(n × levels) - no path copy per pattern - and its
// allocations come in chunks (see arena). The zero value starts from the
// empty set. A builder is not safe for concurrent use; the sets it builds
// are.
type PatternSetBuilder[V any] struct {
	a    arena[V]
	root *pnode[V]
	n    int
}

// arena is what a builder allocates from, and the editor it marks what it
// allocates with. Nodes, children slices and hash-trie slot arrays are
// carved from chunks that double from a few entries up to a bound, so a
// bulk build makes one allocation per few hundred of them while a single
// change (a few nodes) allocates small chunks only. Slices are carved with
// their capacity capped, so a later append reallocates instead of writing
// into a neighbour.
type arena[V any] struct {
	own                 editor // 0 until the first change after Build
	nodes               []pnode[V]
	kids                []pkid[V]
	slots               []hslot[V]
	nmade, kmade, smade int
}

func carve[T any](chunk *[]T, made *int, c int) []T {
	if len(*chunk) < c {
		n := max(min(max(*made, 4), 256), c)
		*chunk = make([]T, n)
		*made += n
	}
	s := (*chunk)[:0:c]
	*chunk = (*chunk)[c:]
	return s
}

func (a *arena[V]) node() *pnode[V] { return &carve(&a.nodes, &a.nmade, 1)[:1][0] }

func (a *arena[V]) kidSlice(c int) []pkid[V] { return carve(&a.kids, &a.kmade, c) }

func (a *arena[V]) slotSlice(c int) []hslot[V] { return carve(&a.slots, &a.smade, c) }

func (a *arena[V]) editor() editor {
	if a.own == 0 {
		a.own = newEditor()
	}
	return a.own
}

// Len is the number of patterns the builder holds.
func (b *PatternSetBuilder[V]) Len() int { return b.n }

// Get is PatternSet.Get on the builder's current patterns.
func (b *PatternSetBuilder[V]) Get(pattern string) (v V, c Classes, ok bool) {
	return get(b.root, pattern)
}

// Build returns the set of the builder's current patterns. The builder
// stays usable: later changes copy what they touch, so the returned set
// never changes.
func (b *PatternSetBuilder[V]) Build() *PatternSet[V] {
	b.a.own = 0 // retire the editor: the nodes it marked now belong to a published set
	if b.root == nil {
		return nil
	}
	return &PatternSet[V]{root: b.root, n: b.n}
}

// edit returns n if the builder may modify it, else a copy it may modify
// (a new node when n is nil).
func (b *PatternSetBuilder[V]) edit(n *pnode[V]) *pnode[V] {
	own := b.a.editor()
	if n != nil && n.own == own {
		return n
	}
	c := b.a.node()
	if n != nil {
		*c = *n
		if n.kids != nil {
			// The slice is modified in place from now on; the original
			// node keeps its own.
			c.kids = append(b.a.kidSlice(len(n.kids)+1), n.kids...)
		}
	}
	c.own = own
	return c
}

// path descends pattern, making every node on the way editable (creating
// missing ones when create), and returns the slot of pattern, the parents
// of the nodes on the path and the levels leading to them. It returns a nil
// slot when create is false and a node is missing.
func (b *PatternSetBuilder[V]) path(pattern string, create bool, parents *[MaxLevels + 1]*pnode[V], levels *[MaxLevels + 1]string) (slot *pslot[V], n *pnode[V], depth int) {
	b.root = b.edit(b.root)
	n = b.root
	for i := 0; ; {
		level, end := nextLevel(pattern, i)
		if level == "#" {
			return &n.hash, n, depth
		}
		var old *pnode[V]
		if level == "+" {
			old = n.plus
		} else {
			old = n.child(level)
		}
		if old == nil && !create {
			return nil, nil, 0
		}
		c := b.edit(old)
		if c != old {
			if level == "+" {
				n.plus = c
			} else {
				b.setChild(n, level, c, old == nil)
			}
		}
		if parents != nil {
			parents[depth], levels[depth] = n, level
		}
		depth++
		n = c
		if end == len(pattern) {
			return &n.end, n, depth
		}
		i = end + 1
	}
}

// Put adds pattern with value v and classes c, or replaces what the builder
// held for it, and reports whether pattern is valid (ValidateFilter); an
// invalid one changes nothing. The builder keeps pattern (and levels of new
// nodes are substrings of it): it must not be a view of a buffer that is
// modified later.
func (b *PatternSetBuilder[V]) Put(pattern string, v V, c Classes) bool {
	if ValidateFilter(pattern) != nil {
		return false
	}
	slot, _, _ := b.path(pattern, true, nil, nil)
	if !slot.has {
		b.n++
		slot.has = true
	}
	slot.c, slot.v = c, v
	return true
}

// Delete removes pattern and reports whether the builder held it. Nodes
// left empty are pruned.
func (b *PatternSetBuilder[V]) Delete(pattern string) bool {
	if _, _, ok := get(b.root, pattern); !ok {
		return false // nothing copied for a miss
	}
	var (
		parents [MaxLevels + 1]*pnode[V]
		levels  [MaxLevels + 1]string
	)
	slot, n, depth := b.path(pattern, false, &parents, &levels)
	*slot = pslot[V]{}
	b.n--
	for d := depth - 1; d >= 0 && n.empty(); d-- {
		parent := parents[d]
		if levels[d] == "+" {
			parent.plus = nil
		} else {
			b.delChild(parent, levels[d])
		}
		n = parent
	}
	if b.root.empty() {
		b.root = nil
	}
	return true
}

// setChild stores c under level in n, which the builder may modify; added
// says level is new in n.
func (b *PatternSetBuilder[V]) setChild(n *pnode[V], level string, c *pnode[V], added bool) {
	if added {
		n.nkids++
	}
	if n.big != nil {
		n.big = n.big.set(&b.a, 0, maphash.String(levelSeed, level), level, c)
		return
	}
	if !added {
		for i := range n.kids {
			if n.kids[i].level == level {
				n.kids[i].n = c
				return
			}
		}
	}
	if len(n.kids) == cap(n.kids) {
		n.kids = append(b.a.kidSlice(min(2*len(n.kids)+1, smallKids+1)), n.kids...)
	}
	n.kids = append(n.kids, pkid[V]{level, c})
	if len(n.kids) <= smallKids {
		return
	}
	var h *hnode[V]
	for _, k := range n.kids {
		h = h.set(&b.a, 0, maphash.String(levelSeed, k.level), k.level, k.n)
	}
	n.big, n.kids = h, nil
}

// delChild removes the child under level from n, which the builder may
// modify; the child must be present.
func (b *PatternSetBuilder[V]) delChild(n *pnode[V], level string) {
	n.nkids--
	if n.big == nil {
		for i := range n.kids {
			if n.kids[i].level == level {
				n.kids = append(n.kids[:i], n.kids[i+1:]...)
				break
			}
		}
		if len(n.kids) == 0 {
			n.kids = nil
		}
		return
	}
	n.big = n.big.del(&b.a, 0, maphash.String(levelSeed, level), level)
	if n.nkids > smallKids/2 {
		return
	}
	ks := b.a.kidSlice(int(n.nkids) + 1)
	n.big.each(func(level string, c *pnode[V]) bool {
		ks = append(ks, pkid[V]{level, c})
		return true
	})
	n.big, n.kids = nil, ks
	if len(ks) == 0 {
		n.kids = nil
	}
}
