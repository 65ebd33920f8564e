package topic

import (
	"hash/maphash"
	"sync/atomic"
)

// hmap is a string-keyed hash map whose reads take no lock and never
// allocate, while writes are serialised by a lock the owner holds (the
// wildcard trie's mutex). It holds the children of trie nodes that have
// many; literal filters have their own, more compact table (litShard).
//
// Readers walk immutable-from-their-point-of-view bucket chains: a writer
// publishes a fully built entry with one atomic store of a bucket head or of
// a predecessor's next pointer, and unlinks an entry the same way, so a
// reader standing on an unlinked entry can still follow its next pointer.
// Growing or shrinking builds a complete new table from copies of the
// entries and publishes it with one atomic store; a reader still on the old
// table sees the map as it was at that moment, which is a valid snapshot.
// Resizing doubles or halves, so the cost of a write is amortised O(1) and
// never depends on the size of other shards.
//
// Entry keys must be owned strings (never views of reused buffers); lookup
// keys may be anything, they are only compared.
type hmap[V any] struct {
	tab atomic.Pointer[htable[V]]
	n   int // number of entries; written and read by the writer only
}

type htable[V any] struct {
	buckets []atomic.Pointer[hentry[V]]
}

type hentry[V any] struct {
	hash uint64
	key  string
	next atomic.Pointer[hentry[V]]
	val  atomic.Pointer[V]
}

const hmapMinBuckets = 8

// get returns the value stored under key, or nil. Safe for any goroutine,
// concurrently with writers; no lock, no allocation.
func (m *hmap[V]) get(hash uint64, key string) *V {
	t := m.tab.Load()
	if t == nil {
		return nil
	}
	for e := t.buckets[hash&uint64(len(t.buckets)-1)].Load(); e != nil; e = e.next.Load() {
		if e.hash == hash && e.key == key {
			return e.val.Load()
		}
	}
	return nil
}

// getKey is get for callers that have not hashed the key yet; it skips the
// hash entirely when the map has never held anything.
func (m *hmap[V]) getKey(seed maphash.Seed, key string) *V {
	if m.tab.Load() == nil {
		return nil
	}
	return m.get(maphash.String(seed, key), key)
}

// put adds key, which must be absent and owned by the map from now on.
// Writer only.
func (m *hmap[V]) put(hash uint64, key string, v *V) {
	t := m.tab.Load()
	if t == nil {
		t = &htable[V]{buckets: make([]atomic.Pointer[hentry[V]], hmapMinBuckets)}
		m.tab.Store(t)
	} else if m.n+1 > len(t.buckets) {
		t = m.rebuild(t, 2*len(t.buckets))
	}
	e := &hentry[V]{hash: hash, key: key}
	e.val.Store(v)
	b := &t.buckets[hash&uint64(len(t.buckets)-1)]
	e.next.Store(b.Load())
	b.Store(e) // publishes the fully built entry
	m.n++
}

// del removes key and reports whether it was present. Writer only.
func (m *hmap[V]) del(hash uint64, key string) bool {
	t := m.tab.Load()
	if t == nil {
		return false
	}
	b := &t.buckets[hash&uint64(len(t.buckets)-1)]
	var prev *hentry[V]
	for e := b.Load(); e != nil; prev, e = e, e.next.Load() {
		if e.hash != hash || e.key != key {
			continue
		}
		if prev == nil {
			b.Store(e.next.Load())
		} else {
			prev.next.Store(e.next.Load())
		}
		m.n--
		switch {
		case m.n == 0:
			// Drop the table so an emptied trie node costs nothing to
			// probe and holds no memory.
			m.tab.Store(nil)
		case len(t.buckets) > hmapMinBuckets && m.n < len(t.buckets)/8:
			m.rebuild(t, len(t.buckets)/2)
		}
		return true
	}
	return false
}

// rebuild publishes a new table of nb buckets holding copies of every entry
// of t (entries of t are left untouched for readers still walking t). The
// copies share one slab allocation, so a rebuild costs two allocations.
func (m *hmap[V]) rebuild(t *htable[V], nb int) *htable[V] {
	nt := &htable[V]{buckets: make([]atomic.Pointer[hentry[V]], nb)}
	slab := make([]hentry[V], m.n)
	j := 0
	for i := range t.buckets {
		for e := t.buckets[i].Load(); e != nil; e = e.next.Load() {
			ne := &slab[j]
			j++
			ne.hash, ne.key = e.hash, e.key
			ne.val.Store(e.val.Load())
			b := &nt.buckets[e.hash&uint64(nb-1)]
			ne.next.Store(b.Load())
			b.Store(ne)
		}
	}
	m.tab.Store(nt)
	return nt
}

// forEach calls f for every entry. Writer only.
func (m *hmap[V]) forEach(f func(key string, v *V)) {
	t := m.tab.Load()
	if t == nil {
		return
	}
	for i := range t.buckets {
		for e := t.buckets[i].Load(); e != nil; e = e.next.Load() {
			f(e.key, e.val.Load())
		}
	}
}
