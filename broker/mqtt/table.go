package mqtt

import (
	"hash/maphash"
	"sync"
)

// sessionTable maps client keys (token, client identifier) to sessions,
// live or offline, for takeover and resume. A node holds one entry per
// session, a million of them, so it is not a Go map (whose entries here
// would be a 24-byte key and a pointer, about 80 bytes a session with the
// table's slack): each shard is an open-addressing table of session
// pointers with linear probing, 8 bytes a slot, at most three quarters
// full, and the key is read from the session itself. Sharding bounds the
// work of one resize and lets connects on different shards proceed in
// parallel.
type sessionTable struct {
	seed   maphash.Seed
	shards [tableShards]tableShard
}

const (
	tableShards   = 64
	tableMinSlots = 8
)

// tableShard is one shard: slots has a power-of-two length (0 before the
// first put), nil for an empty slot; n counts the sessions in it.
type tableShard struct {
	mu    sync.Mutex
	slots []*session
	n     int
	_     [24]byte // one shard per cache line
}

func (t *sessionTable) hash(token int64, id string) uint64 {
	h := maphash.String(t.seed, id) ^ uint64(token)*0x9E3779B97F4A7C15
	return h ^ h>>29
}

func (t *sessionTable) hashOf(s *session) uint64 { return t.hash(s.token, s.id()) }

func (t *sessionTable) shard(h uint64) *tableShard { return &t.shards[h>>(64-6)] }

// find returns the slot of the session with key k, or the empty slot that
// ends its probe sequence (-1 when the shard has no slots). sh.mu must be
// held.
func (sh *tableShard) find(h uint64, k clientKey) int {
	if len(sh.slots) == 0 {
		return -1
	}
	mask := len(sh.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := sh.slots[i]
		if s == nil || s.token == k.token && s.id() == k.id {
			return i
		}
	}
}

func (t *sessionTable) get(k clientKey) *session {
	h := t.hash(k.token, k.id)
	sh := t.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i := sh.find(h, k); i >= 0 {
		return sh.slots[i]
	}
	return nil
}

// put registers s under its own key k and returns the session it replaces.
func (t *sessionTable) put(k clientKey, s *session) *session {
	h := t.hash(k.token, k.id)
	sh := t.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i := sh.find(h, k)
	if i >= 0 && sh.slots[i] != nil {
		old := sh.slots[i]
		sh.slots[i] = s
		return old
	}
	if (sh.n+1)*4 > len(sh.slots)*3 {
		t.resize(sh, max(2*len(sh.slots), tableMinSlots))
		i = sh.find(h, k)
	}
	sh.slots[i] = s
	sh.n++
	return nil
}

// drop unregisters s, if its key k is still its own.
func (t *sessionTable) drop(k clientKey, s *session) {
	h := t.hash(k.token, k.id)
	sh := t.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i := sh.find(h, k)
	if i < 0 || sh.slots[i] != s {
		return
	}
	// Backward-shift deletion (no tombstones): move later members of the
	// probe run into the hole unless their home slot lies cyclically in
	// (hole, their slot].
	mask := len(sh.slots) - 1
	for j := (i + 1) & mask; sh.slots[j] != nil; j = (j + 1) & mask {
		home := int(t.hashOf(sh.slots[j])) & mask
		if i <= j {
			if i < home && home <= j {
				continue
			}
		} else if i < home || home <= j {
			continue
		}
		sh.slots[i] = sh.slots[j]
		i = j
	}
	sh.slots[i] = nil
	sh.n--
	if len(sh.slots) > tableMinSlots && sh.n*8 < len(sh.slots) {
		t.resize(sh, len(sh.slots)/2) // a table that emptied gives its memory back
	}
}

// resize rehashes a shard into size slots. sh.mu must be held.
func (t *sessionTable) resize(sh *tableShard, size int) {
	old := sh.slots
	sh.slots = make([]*session, size)
	mask := size - 1
	for _, s := range old {
		if s == nil {
			continue
		}
		i := int(t.hashOf(s)) & mask
		for sh.slots[i] != nil {
			i = (i + 1) & mask
		}
		sh.slots[i] = s
	}
}

// count is the number of sessions in the table.
func (t *sessionTable) count() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}
