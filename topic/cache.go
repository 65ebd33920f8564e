package topic

import (
	"math/bits"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"unsafe"
)

// matchCache caches the wildcard part of Match results by topic. See Index
// for the design. Every field is accessed with atomics only; entries are
// immutable once published.
type matchCache[S comparable] struct {
	slots []atomic.Pointer[cacheEntry[S]]
	door  []atomic.Uint32 // fingerprints of recently missed topics
	// stripes are the hit and miss counters, in their own allocation so
	// that no counter shares a cache line with the read-only fields above
	// or with another stripe. len is a power of two.
	stripes    []cacheCounters
	stripeBits uint8 // log2(len(stripes))
}

type cacheEntry[S comparable] struct {
	hash  uint64
	gen   uint64
	topic string // owned copy
	lists []*subList[S]
}

// Hit and miss counters are striped by caller, not by topic: Match counts
// into the stripe chosen by the address of the caller's result buffer
// (dst's backing array). Two Match calls running at once necessarily pass
// different buffers (both write into them), and a caller that reuses its
// buffer - the broker's scratch comes from a sync.Pool, whose fast path is
// per P (per core) - keeps writing the same stripe, so that stripe's line
// stays in its core's cache. Striping by topic instead bounces every
// stripe's line between cores that publish to the same topics (measured:
// BenchmarkIndexMatchParallelHot). A caller without a buffer (cap 0) counts
// into the stripe of the topic's hash.
//
// Each stripe is 128 bytes: two stripes never share a 64-byte line, nor an
// adjacent-line prefetch pair. The stripes' allocation is a power-of-two
// multiple of 128 bytes, which Go's allocator places on a boundary of its
// size class (a multiple of 128), so the layout holds in memory.
type cacheCounters struct {
	hits, misses atomic.Uint64
	_            [128 - 16]byte
}

// minStripes and maxStripes bound the number of counter stripes, chosen as
// 8 x GOMAXPROCS at construction (rounded up to a power of two) so that two
// busy callers rarely draw the same stripe: with P cores publishing at
// once, about P/16 pairs of them share one. At most 32 KiB per Index.
const (
	minStripes = 16
	maxStripes = 256
)

// maxCachedLists bounds one entry: a topic matching more wildcard filters
// than this is walked every time rather than pinning a large entry.
const maxCachedLists = 256

func newMatchCache[S comparable](size int) *matchCache[S] {
	n := 1
	for n < size {
		n <<= 1
	}
	stripes := min(max(8*runtime.GOMAXPROCS(0), minStripes), maxStripes)
	stripeBits := bits.Len(uint(stripes - 1))
	return &matchCache[S]{
		slots:      make([]atomic.Pointer[cacheEntry[S]], n),
		door:       make([]atomic.Uint32, 4*n),
		stripes:    make([]cacheCounters, 1<<stripeBits),
		stripeBits: uint8(stripeBits),
	}
}

// stripe returns the counters Match counts into for a caller whose result
// buffer is dst (see cacheCounters), h being the topic's hash.
func (c *matchCache[S]) stripe(dst []S, h uint64) *cacheCounters {
	k := h
	if cap(dst) > 0 {
		// Fibonacci hashing of the buffer's address; the low bits are
		// alignment, the multiply spreads the rest into the top bits.
		k = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(dst)))) * 0x9E3779B97F4A7C15
	}
	return &c.stripes[k>>(64-uint(c.stripeBits))]
}

// stats sums the counters of every stripe. Concurrent Match calls may or
// may not be included; each counter is read atomically.
func (c *matchCache[S]) stats() (hits, misses uint64) {
	for i := range c.stripes {
		hits += c.stripes[i].hits.Load()
		misses += c.stripes[i].misses.Load()
	}
	return hits, misses
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
	var victim *atomic.Pointer[cacheEntry[S]]
	refresh := false
	for _, slot := range pair {
		e := slot.Load()
		if e != nil && e.hash == h && e.topic == topic {
			if e.gen == gen {
				c.stripe(dst, h).hits.Add(1)
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
	c.stripe(dst, h).misses.Add(1)
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
