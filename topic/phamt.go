package topic

import (
	"math/bits"
	"slices"
)

// hnode is a node of a persistent hash array mapped trie holding the
// literal children of a PatternSet node that has many ("dev/<id>/#" for
// 10,000 devices). Each level consumes hbits bits of the level's hash, so a
// lookup visits about log32(children) nodes (3 for 10,000) and allocates
// nothing, and a change copies only those nodes: O(log children), where a
// copy-on-write slice or map would copy all of them. Past the 64 bits of
// the hash (distinct levels with equal hashes) a node is a plain list.
//
// Nodes owned by the builder's editor are modified in place, as pnodes are;
// all others are copied before any change. Slot arrays come from the
// builder's arena.
type hnode[V any] struct {
	own    editor
	bitmap uint32     // which of the 32 positions are used (not in a list node)
	slots  []hslot[V] // one per set bit, in bit order
}

// hslot is a child (kid set) or a deeper node (sub set).
type hslot[V any] struct {
	hash uint64
	key  string
	kid  *pnode[V]
	sub  *hnode[V]
}

const hbits = 5

// listShift is the first shift at which no hash bits are left.
const listShift = 64

func hpos(hash uint64, shift uint) (bit uint32) { return 1 << ((hash >> shift) & (1<<hbits - 1)) }

// get returns the child stored under key, or nil.
func (h *hnode[V]) get(hash uint64, key string) *pnode[V] {
	for shift := uint(0); h != nil; shift += hbits {
		if shift >= listShift {
			for i := range h.slots {
				if h.slots[i].key == key {
					return h.slots[i].kid
				}
			}
			return nil
		}
		bit := hpos(hash, shift)
		if h.bitmap&bit == 0 {
			return nil
		}
		s := &h.slots[bits.OnesCount32(h.bitmap&(bit-1))]
		if s.sub != nil {
			h = s.sub
			continue
		}
		if s.hash == hash && s.key == key {
			return s.kid
		}
		return nil
	}
	return nil
}

// editable returns h if a's editor may modify it, else a copy it may
// modify (a new node when h is nil), with room for one more slot.
func (h *hnode[V]) editable(a *arena[V]) *hnode[V] {
	e := a.editor()
	if h == nil {
		return &hnode[V]{own: e, slots: a.slotSlice(2)}
	}
	if h.own == e {
		return h
	}
	return &hnode[V]{own: e, bitmap: h.bitmap, slots: append(a.slotSlice(len(h.slots)+1), h.slots...)}
}

// grow makes room for one more slot in h, which a's editor owns: capacities
// double (up to the 32 positions of a bitmap node), so a bulk build copies
// each slot O(1) times.
func (h *hnode[V]) grow(a *arena[V]) {
	if len(h.slots) < cap(h.slots) {
		return
	}
	c := 2 * len(h.slots)
	if h.bitmap != 0 {
		c = min(c, 1<<hbits)
	}
	h.slots = append(a.slotSlice(max(c, len(h.slots)+1)), h.slots...)
}

// set stores kid under key (inserting or replacing) and returns the node
// that replaces h.
func (h *hnode[V]) set(a *arena[V], shift uint, hash uint64, key string, kid *pnode[V]) *hnode[V] {
	h = h.editable(a)
	if shift >= listShift {
		for i := range h.slots {
			if h.slots[i].key == key {
				h.slots[i].kid = kid
				return h
			}
		}
		h.grow(a)
		h.slots = append(h.slots, hslot[V]{hash: hash, key: key, kid: kid})
		return h
	}
	bit := hpos(hash, shift)
	i := bits.OnesCount32(h.bitmap & (bit - 1))
	if h.bitmap&bit == 0 {
		h.grow(a)
		h.slots = slices.Insert(h.slots, i, hslot[V]{hash: hash, key: key, kid: kid})
		h.bitmap |= bit
		return h
	}
	s := &h.slots[i]
	switch {
	case s.sub != nil:
		s.sub = s.sub.set(a, shift+hbits, hash, key, kid)
	case s.hash == hash && s.key == key:
		s.kid = kid
	default:
		// Two keys at this position: push the resident one down a level.
		var sub *hnode[V]
		sub = sub.set(a, shift+hbits, s.hash, s.key, s.kid)
		sub = sub.set(a, shift+hbits, hash, key, kid)
		*s = hslot[V]{sub: sub}
	}
	return h
}

// del removes key, which must be present, and returns the node that
// replaces h (nil when it is left empty). A deeper node left with a single
// child is folded into its parent, so a shrinking table gets shallower.
func (h *hnode[V]) del(a *arena[V], shift uint, hash uint64, key string) *hnode[V] {
	h = h.editable(a)
	if shift >= listShift {
		for i := range h.slots {
			if h.slots[i].key == key {
				h.slots = slices.Delete(h.slots, i, i+1)
				break
			}
		}
	} else {
		bit := hpos(hash, shift)
		i := bits.OnesCount32(h.bitmap & (bit - 1))
		s := &h.slots[i]
		if s.sub != nil {
			sub := s.sub.del(a, shift+hbits, hash, key)
			switch {
			case sub == nil:
				h.slots = slices.Delete(h.slots, i, i+1)
				h.bitmap &^= bit
			case len(sub.slots) == 1 && sub.slots[0].sub == nil:
				*s = sub.slots[0]
			default:
				s.sub = sub
			}
		} else {
			h.slots = slices.Delete(h.slots, i, i+1)
			h.bitmap &^= bit
		}
	}
	if len(h.slots) == 0 {
		return nil
	}
	return h
}

// each calls f for every child until f returns false, and reports whether
// it went through all of them.
func (h *hnode[V]) each(f func(key string, kid *pnode[V]) bool) bool {
	if h == nil {
		return true
	}
	for i := range h.slots {
		s := &h.slots[i]
		if s.sub != nil {
			if !s.sub.each(f) {
				return false
			}
		} else if !f(s.key, s.kid) {
			return false
		}
	}
	return true
}
