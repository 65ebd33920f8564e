package topic

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
)

// Index maps filters to subscribers and answers "who is subscribed to this
// topic". S is whatever the caller uses to name a subscriber (a session
// pointer, a node id); it must be comparable and is never inspected.
//
// Concurrency: every method is safe for concurrent use from any goroutine.
// Match takes no lock and allocates nothing in steady state. Subscribe and
// Unsubscribe of literal filters lock one of litShards shards chosen by the
// filter's hash; wildcard filters share one mutex (they are the small part).
//
// Design:
//   - Literal filters (no '+' or '#': the vast majority, e.g. one command
//     topic per device) can only match the identical topic, so they live in
//     litShards open-addressing tables keyed by the filter (see litShard);
//     Match does one lookup with the topic's hash. An entry holds its key
//     and, while it has one, its subscriber inline; larger subscriber sets
//     are immutable subLists replaced by copy-on-write. A change costs O(1)
//     amortised whatever the number of filters: tables grow by doubling,
//     per shard, without copying entries.
//   - Wildcard filters live in a level trie. Nodes are shared, not path
//     copied: a node's literal children are a small copy-on-write slice or
//     an hmap (lock-free reads either way), and its '+' child and
//     subscriber lists are atomic pointers, so a change touches only the
//     nodes on its own path.
//   - A match cache keyed by topic holds the wildcard part of a result, as
//     the list of matched subLists (not a flattened copy, so memory stays
//     bounded by the number of matching filters, not subscribers). Entries
//     are tagged with a generation bumped after every wildcard change; a
//     stale entry is simply ignored (literal changes need no invalidation).
//     The cache is a fixed array of slots indexed by the topic hash, two-way
//     set associative, so bounded by construction (a new entry evicts a
//     stale or random one of its pair); it is read and written with atomic
//     pointers only. A topic is admitted on its second miss within a short
//     window (a "doorkeeper" array of hash fingerprints), so streams of
//     distinct topics - a million devices each publishing to its own topic -
//     neither thrash the cache nor allocate on every miss.
//   - Generation counts every change (literal ones too), for callers that
//     keep a whole Match result of their own; see Generation.
type Index[S comparable] struct {
	seed  maphash.Seed
	lit   [litShards]litShard[S]
	cache *matchCache[S] // nil when disabled

	// Wildcard part.
	wmu       sync.Mutex
	root      node[S]
	wildCount atomic.Int64  // distinct wildcard filters
	wildPairs atomic.Int64  // (wildcard filter, subscriber) pairs
	gen       atomic.Uint64 // bumped after every wildcard change

	// changes is Generation: bumped after every change of any kind. It
	// has a cache line to itself: literal subscribes (a connect storm)
	// write it, and Match reads the fields above on every call.
	_       [64]byte
	changes atomic.Uint64
	_       [56]byte
}

const (
	litShardBits = 6
	litShards    = 1 << litShardBits
)

// Option configures NewIndex.
type Option func(*options)

type options struct {
	cacheSize int
}

// DefaultCacheSize is the number of topics the match cache holds by default.
const DefaultCacheSize = 4096

// WithoutCache disables the wildcard match cache (every Match walks the
// trie). Useful when wildcard subscriptions change constantly.
func WithoutCache() Option { return func(o *options) { o.cacheSize = 0 } }

// WithCacheSize sets the number of cached topics, rounded up to a power of
// two; n <= 0 disables the cache.
func WithCacheSize(n int) Option { return func(o *options) { o.cacheSize = n } }

// NewIndex returns an empty index.
func NewIndex[S comparable](opts ...Option) *Index[S] {
	o := options{cacheSize: DefaultCacheSize}
	for _, f := range opts {
		f(&o)
	}
	x := &Index[S]{seed: maphash.MakeSeed()}
	tomb := new(litEntry[S]) // shared deleted-slot marker; its key "" is no topic
	for i := range x.lit {
		x.lit[i].tomb = tomb
	}
	if o.cacheSize > 0 {
		x.cache = newMatchCache[S](o.cacheSize)
	}
	return x
}

func (x *Index[S]) shard(h uint64) *litShard[S] {
	return &x.lit[h>>(64-litShardBits)]
}

// Subscribe adds the pair (filter, s) and reports whether it was new. It
// returns false, changing nothing, when the pair is already present or the
// filter is invalid (callers validate first to tell the client why). The
// filter string is copied, so it may be a view of a reused buffer.
func (x *Index[S]) Subscribe(filter string, s S) bool {
	if ValidateFilter(filter) != nil {
		return false
	}
	if IsWildcard(filter) {
		return x.subscribeWild(filter, s)
	}
	h := maphash.String(x.seed, filter)
	sh := x.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, _ := sh.find(h, filter); e != nil {
		if !e.add(s) {
			return false
		}
	} else {
		sh.insert(newLitEntry(h, filter, s))
		sh.filters.Add(1)
	}
	sh.pairs.Add(1)
	x.changes.Add(1) // after the change is visible: see Generation
	return true
}

// Unsubscribe removes the pair (filter, s) and reports whether it was there.
// filter may be a view of a reused buffer; it is not retained.
func (x *Index[S]) Unsubscribe(filter string, s S) bool {
	if ValidateFilter(filter) != nil {
		return false
	}
	if IsWildcard(filter) {
		return x.unsubscribeWild(filter, s)
	}
	h := maphash.String(x.seed, filter)
	sh := x.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, slot := sh.find(h, filter)
	if e == nil {
		return false
	}
	found, empty := e.del(s)
	if !found {
		return false
	}
	if empty {
		sh.remove(slot)
		sh.filters.Add(-1)
	}
	sh.pairs.Add(-1)
	x.changes.Add(1) // after the change is visible: see Generation
	return true
}

func (x *Index[S]) subscribeWild(filter string, s S) bool {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	n := &x.root
	var target *atomic.Pointer[subList[S]]
	for i := 0; ; {
		level, end := nextLevel(filter, i)
		if level == "#" {
			target = &n.hashSubs
			break
		}
		var c *node[S]
		if level == "+" {
			if c = n.plus.Load(); c == nil {
				c = new(node[S])
				n.plus.Store(c)
			}
		} else {
			if c = n.child(x.seed, level); c == nil {
				c = new(node[S])
				n.addChild(x.seed, strings.Clone(level), c)
			}
		}
		n = c
		if end == len(filter) {
			target = &n.subs
			break
		}
		i = end + 1
	}
	l := target.Load()
	if l.indexOf(s) >= 0 {
		return false // the path existed, so no empty node was created
	}
	target.Store(l.with(s))
	if l == nil {
		x.wildCount.Add(1)
	}
	x.wildPairs.Add(1)
	// After the change is visible: a Match that reads the new generation
	// is guaranteed to see the change in its walk.
	x.gen.Add(1)
	x.changes.Add(1)
	return true
}

func (x *Index[S]) unsubscribeWild(filter string, s S) bool {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	var (
		path   [MaxLevels]*node[S] // path[d] is the parent of the node at depth d+1
		levels [MaxLevels]string
		depth  int
		target *atomic.Pointer[subList[S]]
	)
	n := &x.root
	for i := 0; ; {
		level, end := nextLevel(filter, i)
		if level == "#" {
			target = &n.hashSubs
			break
		}
		var c *node[S]
		if level == "+" {
			c = n.plus.Load()
		} else {
			c = n.child(x.seed, level)
		}
		if c == nil {
			return false
		}
		path[depth], levels[depth] = n, level
		depth++
		n = c
		if end == len(filter) {
			target = &n.subs
			break
		}
		i = end + 1
	}
	l := target.Load()
	i := l.indexOf(s)
	if i < 0 {
		return false
	}
	nl := l.without(i)
	target.Store(nl)
	if nl == nil {
		x.wildCount.Add(-1)
	}
	x.wildPairs.Add(-1)
	// Prune nodes left empty, deepest first. Readers standing on a pruned
	// node only see it empty.
	for d := depth - 1; d >= 0 && n.empty(); d-- {
		parent, level := path[d], levels[d]
		if level == "+" {
			parent.plus.Store(nil)
		} else {
			parent.delChild(x.seed, level)
		}
		n = parent
	}
	x.gen.Add(1)
	x.changes.Add(1)
	return true
}

// Generation returns the index's change counter, for callers that keep a
// Match result to reuse it (the broker's per-publisher match memo). Every
// Subscribe and Unsubscribe that changes the index - literal or wildcard,
// adding or removing a subscriber - increments it after its change is
// visible to Match and before it returns; calls that change nothing leave
// it alone, and Match never writes it.
//
// The order that makes a kept result safe: load Generation BEFORE calling
// Match, and tag the result with that value g; the result may stand in for
// Match(topic) exactly while Generation() == g. A change whose increment
// the first load missed may or may not be in the result, but then a later
// load returns a different value, so the result is dropped; a change whose
// increment the first load saw is in the result (it was visible before the
// increment). A Subscribe that has returned is therefore seen by every
// reuse that starts afterwards, as it is by every Match. One atomic load;
// any goroutine; no lock.
func (x *Index[S]) Generation() uint64 { return x.changes.Load() }

// Match appends to dst every subscriber whose filter matches topic and
// returns the extended slice. A subscriber subscribed with several matching
// filters appears once per filter; deduplicate if that matters. topic must
// be a valid publish topic; it is never retained, so it may be a view of a
// reused buffer. Match takes no lock and, when dst has room, allocates
// nothing unless it admits a new topic into the match cache. Any goroutine.
func (x *Index[S]) Match(topic string, dst []S) []S {
	if len(topic) == 0 {
		return dst
	}
	h := maphash.String(x.seed, topic)
	// The literal lookup is split around the wildcard part on purpose. On a
	// large index it costs two dependent cache misses (slot, then entry)
	// while the wildcard part touches few, hot lines. Loading the slot
	// first lets the wildcard work run while that miss is outstanding, and
	// ending on the entry load lets the CPU start the next Match (its hash
	// and slot load) while this one's last miss is still in flight.
	sh := x.shard(h)
	p := sh.start(h)
	if x.wildCount.Load() != 0 {
		if x.cache != nil {
			dst = x.cache.match(x, h, topic, dst)
		} else {
			var buf [8]*subList[S]
			for _, l := range x.walk(&x.root, topic, 0, false, buf[:0]) {
				dst = l.appendTo(dst)
			}
		}
	}
	if e := sh.finish(p, h, topic); e != nil {
		dst = e.appendTo(dst)
	}
	return dst
}

// walk appends to out the subscriber lists of the wildcard filters under n
// that match topic from byte i on (done: the topic is fully consumed).
// At the root (i == 0) the '$' rule applies. It loops down the trie and
// recurses only where both a literal child and a '+' child match: Match
// runs it for every topic the cache cannot serve, so it is kept short.
func (x *Index[S]) walk(n *node[S], topic string, i int, done bool, out []*subList[S]) []*subList[S] {
	for {
		blocked := i == 0 && topic[0] == '$'
		if l := n.hashSubs.Load(); l != nil && !blocked {
			out = append(out, l) // "p/#" matches p itself and everything below
		}
		if done {
			if l := n.subs.Load(); l != nil {
				out = append(out, l)
			}
			return out
		}
		end := len(topic)
		if j := strings.IndexByte(topic[i:], '/'); j >= 0 {
			end = i + j
		}
		last := end == len(topic)
		c := n.child(x.seed, topic[i:end])
		if p := n.plus.Load(); p != nil && !blocked {
			if c != nil {
				out = x.walk(c, topic, end+1, last, out)
			}
			c = p
		}
		if c == nil {
			return out
		}
		n, i, done = c, end+1, last
	}
}

// Count returns the number of (filter, subscriber) pairs.
func (x *Index[S]) Count() int {
	n := x.wildPairs.Load()
	for i := range x.lit {
		n += x.lit[i].pairs.Load()
	}
	return int(n)
}

// Stats is a snapshot of the index's size and cache effectiveness, for
// metrics. Counters are monotonic; sizes are current values.
type Stats struct {
	LiteralFilters  int    // distinct filters without wildcards
	WildcardFilters int    // distinct filters with '+' or '#'
	Subscriptions   int    // (filter, subscriber) pairs, as Count
	CacheSlots      int    // capacity of the match cache, 0 when disabled
	CacheHits       uint64 // Match calls answered from the cache
	CacheMisses     uint64 // Match calls that walked the trie with the cache enabled
}

// Stats returns current figures. Any goroutine; no lock.
func (x *Index[S]) Stats() Stats {
	st := Stats{WildcardFilters: int(x.wildCount.Load())}
	for i := range x.lit {
		st.LiteralFilters += int(x.lit[i].filters.Load())
	}
	st.Subscriptions = x.Count()
	if c := x.cache; c != nil {
		st.CacheSlots = len(c.slots)
		st.CacheHits, st.CacheMisses = c.stats()
	}
	return st
}

// CacheStats returns the match cache's counters: Match calls answered from
// the cache (hits) and Match calls that walked the wildcard trie although
// the cache is enabled (misses). Both are monotonic and count only calls
// that had wildcard work to do: while the index holds no wildcard filter,
// Match consults neither the trie nor the cache and counts nothing. Both
// are 0 when the cache is disabled. It costs one atomic load per counter
// stripe (a few dozen), so it is meant for metric scrapes, not hot paths.
// Any goroutine; no lock.
func (x *Index[S]) CacheStats() (hits, misses uint64) {
	if c := x.cache; c != nil {
		return c.stats()
	}
	return 0, 0
}
