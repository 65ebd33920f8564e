package topic

import (
	"slices"
	"strings"
	"sync/atomic"
)

// matchCache caches the wildcard part of Match results by topic. See Index
// for the design. Every field is accessed with atomics only; entries are
// immutable once published.
type matchCache[S comparable] struct {
	slots   []atomic.Pointer[cacheEntry[S]]
	door    []atomic.Uint32 // fingerprints of recently missed topics
	stripes [cacheStripes]cacheCounters
}

type cacheEntry[S comparable] struct {
	hash  uint64
	gen   uint64
	topic string // owned copy
	lists []*subList[S]
}

// Hit and miss counters are striped by topic hash so that cores matching
// different topics do not fight over one cache line.
const cacheStripes = 16

type cacheCounters struct {
	hits, misses atomic.Uint64
	_            [48]byte
}

// maxCachedLists bounds one entry: a topic matching more wildcard filters
// than this is walked every time rather than pinning a large entry.
const maxCachedLists = 256

func newMatchCache[S comparable](size int) *matchCache[S] {
	n := 1
	for n < size {
		n <<= 1
	}
	return &matchCache[S]{
		slots: make([]atomic.Pointer[cacheEntry[S]], n),
		door:  make([]atomic.Uint32, 4*n),
	}
}

// match appends the wildcard subscribers of topic (whose hash is h) to dst.
// The cache is two-way set associative: a topic may sit in either slot of
// the pair h selects, so two hot topics that collide do not evict each other
// on every publish.
func (c *matchCache[S]) match(x *Index[S], h uint64, topic string, dst []S) []S {
	// Load the generation before walking: if a wildcard change lands after
	// this load, the entry we may store is tagged with the old generation
	// and ignored from then on.
	gen := x.gen.Load()
	i := h & uint64(len(c.slots)-1)
	pair := [2]*atomic.Pointer[cacheEntry[S]]{&c.slots[i], &c.slots[i^1]}
	st := &c.stripes[(h>>32)&(cacheStripes-1)]
	var victim *atomic.Pointer[cacheEntry[S]]
	refresh := false
	for _, slot := range pair {
		e := slot.Load()
		if e != nil && e.hash == h && e.topic == topic {
			if e.gen == gen {
				st.hits.Add(1)
				for _, l := range e.lists {
					dst = l.appendTo(dst)
				}
				return dst
			}
			victim, refresh = slot, true // a cached topic is hot: refresh it at once
			break
		}
		if victim == nil && (e == nil || e.gen != gen) {
			victim = slot // a free or stale slot
		}
	}
	st.misses.Add(1)
	var buf [8]*subList[S]
	lists := x.walk(&x.root, topic, 0, false, buf[:0])
	for _, l := range lists {
		dst = l.appendTo(dst)
	}
	if len(lists) > maxCachedLists || !refresh && !c.seenBefore(h) {
		return dst
	}
	if victim == nil {
		victim = pair[(h>>40)&1] // both live: evict one at random
	}
	victim.Store(&cacheEntry[S]{hash: h, gen: gen, topic: strings.Clone(topic), lists: slices.Clone(lists)})
	return dst
}

// seenBefore reports whether h missed recently, and remembers it otherwise.
func (c *matchCache[S]) seenBefore(h uint64) bool {
	fp := uint32(h>>32) | 1 // 0 marks an empty cell
	d := &c.door[(h>>8)&uint64(len(c.door)-1)]
	if d.Load() == fp {
		d.Store(0)
		return true
	}
	d.Store(fp)
	return false
}
