package topic

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// litShard is one shard of the literal-filter map: an open-addressing hash
// table (linear probing) from filter to subscriber list. Lookups take no
// lock and allocate nothing; writers hold mu.
//
// It is tuned for the dominant case - a million device-specific filters
// with one subscriber each, looked up in random order - where the cost of
// Match is the number of dependent cache misses:
//   - a slot holds the full hash next to the entry pointer, so probing past
//     other keys never dereferences their entries;
//   - an entry carries its key bytes (when short) and, while it has only
//     one, its subscriber, so a hit costs the slot line plus the entry
//     instead of slot, entry, key bytes, list header and list array.
//
// Entries are never copied or moved: growing, shrinking or purging
// tombstones builds a new slot array of the same entry pointers and
// publishes it with one atomic store. A reader still probing an old array
// sees the map as of that moment (writers never touch an array again after
// replacing it). A slot's hash is stored before its pointer, so a reader
// that sees a pointer sees the hash written with it; a slot reused after a
// delete can at worst make a racing reader miss the key being deleted.
type litShard[S comparable] struct {
	mu      sync.Mutex
	tab     atomic.Pointer[litTable[S]]
	live    int // entries; writer only
	used    int // entries + tombstones; writer only
	tomb    *litEntry[S]
	filters atomic.Int64 // for Stats; written under mu
	pairs   atomic.Int64
	_       [8]byte // 64 bytes: writers of one shard do not evict another's tab
}

type litTable[S comparable] struct {
	slots []litSlot[S]
}

type litSlot[S comparable] struct {
	hash atomic.Uint64
	e    atomic.Pointer[litEntry[S]] // nil: never used; tomb: deleted
}

// litInlineKey is the longest filter stored inside its entry; a UUID device
// topic ("devices/<36-char uuid>/cmd") fits, and the entry of a pointer-sized
// S is 96 bytes. Longer keys get their own copy.
const litInlineKey = 56

// litEntry is one literal filter. Everything a lookup reads - key bytes and,
// while the filter has had a single subscriber, that subscriber - sits in
// the entry itself.
type litEntry[S comparable] struct {
	key  string                     // views buf when it fits, else an owned copy
	more atomic.Pointer[subList[S]] // nil: the subscribers are exactly {one}
	one  S                          // immutable; meaningful only while more is nil
	hash uint64
	buf  [litInlineKey]byte
}

const litMinSlots = 16

func newLitEntry[S comparable](hash uint64, filter string, s S) *litEntry[S] {
	e := &litEntry[S]{hash: hash, one: s}
	if len(filter) <= litInlineKey {
		n := copy(e.buf[:], filter)
		// The entry owns buf and never changes it, so the string is immutable.
		e.key = unsafe.String(&e.buf[0], n)
	} else {
		e.key = string([]byte(filter))
	}
	return e
}

// appendTo appends the entry's subscribers to dst. Any goroutine.
func (e *litEntry[S]) appendTo(dst []S) []S {
	if l := e.more.Load(); l != nil {
		return l.appendTo(dst)
	}
	return append(dst, e.one)
}

// add adds s and reports whether it was absent. Writer only.
func (e *litEntry[S]) add(s S) bool {
	l := e.more.Load()
	if l == nil {
		if e.one == s {
			return false
		}
		e.more.Store((*subList[S])(nil).with(e.one).with(s))
		return true
	}
	if l.indexOf(s) >= 0 {
		return false
	}
	e.more.Store(l.with(s))
	return true
}

// del removes s. It reports whether s was present and whether the entry is
// now empty (and must be removed from the table instead). Writer only.
func (e *litEntry[S]) del(s S) (found, empty bool) {
	l := e.more.Load()
	if l == nil {
		return e.one == s, e.one == s
	}
	i := l.indexOf(s)
	if i < 0 {
		return false, false
	}
	nl := l.without(i)
	if nl == nil {
		return true, true
	}
	e.more.Store(nl)
	return true, false
}

// get returns the entry of key, or nil. Any goroutine; no lock.
func (sh *litShard[S]) get(hash uint64, key string) *litEntry[S] {
	return sh.finish(sh.start(hash), hash, key)
}

// litProbe is a lookup split in two, see Index.Match: start loads the first
// slot a key can be in (on a large map, a cache miss), finish completes the
// probe from it.
type litProbe[S comparable] struct {
	t *litTable[S]
	i uint64
	e *litEntry[S]
}

func (sh *litShard[S]) start(hash uint64) litProbe[S] {
	t := sh.tab.Load()
	if t == nil {
		return litProbe[S]{}
	}
	i := hash & uint64(len(t.slots)-1)
	return litProbe[S]{t, i, t.slots[i].e.Load()}
}

func (sh *litShard[S]) finish(p litProbe[S], hash uint64, key string) *litEntry[S] {
	if p.e == nil {
		return nil
	}
	mask := uint64(len(p.t.slots) - 1)
	for i, e := p.i, p.e; ; {
		if p.t.slots[i].hash.Load() == hash && e.key == key && e != sh.tomb {
			return e
		}
		i = (i + 1) & mask
		if e = p.t.slots[i].e.Load(); e == nil {
			return nil
		}
	}
}

// find returns the entry of key, or nil. Writer only.
func (sh *litShard[S]) find(hash uint64, key string) (*litEntry[S], *litSlot[S]) {
	t := sh.tab.Load()
	if t == nil {
		return nil, nil
	}
	mask := uint64(len(t.slots) - 1)
	for i := hash & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		e := s.e.Load()
		if e == nil {
			return nil, nil
		}
		if e != sh.tomb && e.hash == hash && e.key == key {
			return e, s
		}
	}
}

// insert adds e, whose key must be absent. Writer only.
func (sh *litShard[S]) insert(e *litEntry[S]) {
	t := sh.tab.Load()
	if t == nil || 4*(sh.used+1) > 3*len(t.slots) {
		t = sh.rebuild(sh.live + 1)
	}
	mask := uint64(len(t.slots) - 1)
	for i := e.hash & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		old := s.e.Load()
		if old != nil && old != sh.tomb {
			continue
		}
		if old == nil {
			sh.used++
		}
		s.hash.Store(e.hash)
		s.e.Store(e) // publishes e and, with it, the hash above
		sh.live++
		return
	}
}

// remove deletes the entry in slot s. Writer only.
func (sh *litShard[S]) remove(s *litSlot[S]) {
	s.e.Store(sh.tomb)
	sh.live--
	if t := sh.tab.Load(); len(t.slots) > litMinSlots && 8*sh.live < len(t.slots) {
		sh.rebuild(sh.live)
	}
}

// rebuild publishes a new slot array sized for n live entries (load at most
// one half after the rebuild) holding every live entry, without tombstones.
func (sh *litShard[S]) rebuild(n int) *litTable[S] {
	size := litMinSlots
	for size < 2*n {
		size <<= 1
	}
	nt := &litTable[S]{slots: make([]litSlot[S], size)}
	mask := uint64(size - 1)
	if t := sh.tab.Load(); t != nil {
		for j := range t.slots {
			e := t.slots[j].e.Load()
			if e == nil || e == sh.tomb {
				continue
			}
			i := e.hash & mask
			for nt.slots[i].e.Load() != nil {
				i = (i + 1) & mask
			}
			nt.slots[i].hash.Store(e.hash)
			nt.slots[i].e.Store(e)
		}
	}
	sh.used = sh.live
	sh.tab.Store(nt)
	return nt
}
