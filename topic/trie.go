package topic

import (
	"hash/maphash"
	"sync/atomic"
)

// node is a wildcard trie node: the filter prefix of its depth. Readers use
// it without locks; the Index's wildcard mutex serialises writers.
//
// Literal children are kept two ways. Most nodes have a handful of children
// ("fleet", "alerts", "devices" under the root), and a linear scan of an
// immutable slice of a few short strings beats hashing the level; a node
// that gathers many children ("dash/<user>/#" for every user) switches to
// an hmap. Switching publishes the new form before retiring the old one, and
// never modifies a retired form, so a reader holding either sees a valid
// snapshot.
type node[S comparable] struct {
	kids     atomic.Pointer[[]kid[S]]      // few children; nil: see big
	big      atomic.Pointer[hmap[node[S]]] // many children, used while kids is nil
	nkids    int                           // writer only
	plus     atomic.Pointer[node[S]]       // '+' next level
	subs     atomic.Pointer[subList[S]]    // filters ending here
	hashSubs atomic.Pointer[subList[S]]    // filters ending here + "/#"
}

type kid[S comparable] struct {
	level string // owned copy
	n     *node[S]
}

// smallKids is the most children kept in the linear slice.
const smallKids = 8

func (n *node[S]) empty() bool {
	return n.nkids == 0 && n.plus.Load() == nil && n.subs.Load() == nil && n.hashSubs.Load() == nil
}

// child returns the child for a literal level, or nil. Any goroutine.
func (n *node[S]) child(seed maphash.Seed, level string) *node[S] {
	if k := n.kids.Load(); k != nil {
		for i := range *k {
			if (*k)[i].level == level {
				return (*k)[i].n
			}
		}
		return nil
	}
	if b := n.big.Load(); b != nil {
		return b.getKey(seed, level)
	}
	return nil
}

// addChild adds c under level, which must be absent and owned. Writer only.
func (n *node[S]) addChild(seed maphash.Seed, level string, c *node[S]) {
	n.nkids++
	if b := n.big.Load(); b != nil {
		b.put(maphash.String(seed, level), level, c)
		return
	}
	var ks []kid[S]
	if old := n.kids.Load(); old != nil {
		ks = make([]kid[S], len(*old), len(*old)+1)
		copy(ks, *old)
	}
	ks = append(ks, kid[S]{level, c})
	if len(ks) <= smallKids {
		n.kids.Store(&ks)
		return
	}
	b := new(hmap[node[S]])
	for _, k := range ks {
		b.put(maphash.String(seed, k.level), k.level, k.n)
	}
	n.big.Store(b) // publish the new form first,
	n.kids.Store(nil)
}

// delChild removes the child under level, which must be present. Writer only.
func (n *node[S]) delChild(seed maphash.Seed, level string) {
	n.nkids--
	if old := n.kids.Load(); old != nil {
		if n.nkids == 0 {
			n.kids.Store(nil)
			return
		}
		ks := make([]kid[S], 0, len(*old)-1)
		for _, k := range *old {
			if k.level != level {
				ks = append(ks, k)
			}
		}
		n.kids.Store(&ks)
		return
	}
	b := n.big.Load()
	b.del(maphash.String(seed, level), level)
	if n.nkids > smallKids/2 {
		return
	}
	ks := make([]kid[S], 0, n.nkids)
	b.forEach(func(level string, c *node[S]) { ks = append(ks, kid[S]{level, c}) })
	if len(ks) > 0 {
		n.kids.Store(&ks) // publish the new form first,
	}
	n.big.Store(nil)
}
