package acl

import (
	"cmp"
	"slices"

	"github.com/gatecast/gatecast/acl/internal/idmap"
	"github.com/gatecast/gatecast/topic"
)

// Grants is the compiled, immutable permission set of one token: what the
// hot path consults on every subscribe and publish. Build it with
// CompileGrants from Store.ListGrants; after that nothing mutates it, so any
// number of goroutines may call its methods concurrently without locks. To
// change a token's grants, derive a new Grants (CompileGrants again, or With
// and Without for one tag) and swap the pointer (for example with
// atomic.Pointer[Grants]).
//
// Overlapping patterns are allowed: a topic is readable when at least one
// read or readwrite grant covers it, and writable when at least one
// readwrite grant covers it. A nil *Grants allows nothing.
//
// Checks cost one walk of the subject's levels whatever the number of
// grants: the patterns are compiled into a topic.PatternSet, the same
// matcher routing uses, with one class for "some grant names this pattern"
// and one for "some readwrite grant does". Deriving a set with one tag's
// grant changed (With, Without) costs O(levels × log n) and shares the rest
// with the set it came from, so a single admin change need not recompile a
// token's 10,000 grants.
type Grants struct {
	// set holds each distinct pattern of the accepted grants with how many
	// grants of each permission name it; its classes follow those counts.
	set *topic.PatternSet[grantCount]
	// tags holds the accepted grants by tag ID: for display, for Len, and so
	// that a change to one tag knows which pattern it takes back.
	tags *idmap.Map[Grant]
}

// grantCount counts the grants naming one pattern, by permission. Counting
// (rather than keeping the strongest) lets a change to one tag's grant take
// its share back without looking at the other grants.
type grantCount struct{ read, readWrite uint32 }

// The classes of a pattern in Grants.set.
const (
	classRead  topic.Classes = 1 << iota // some grant names the pattern: it may be subscribed under
	classWrite                           // some readwrite grant does: it may be published under
)

func (c grantCount) classes() topic.Classes {
	var k topic.Classes
	if c.read+c.readWrite > 0 {
		k |= classRead
	}
	if c.readWrite > 0 {
		k |= classWrite
	}
	return k
}

// counted returns c with d (1 or -1) more grants of permission p.
func (c grantCount) counted(p Permission, d int) grantCount {
	if p == PermReadWrite {
		c.readWrite = uint32(int(c.readWrite) + d)
	} else {
		c.read = uint32(int(c.read) + d)
	}
	return c
}

// adjust adds d (1 or -1) grants of permission p on pattern to b, dropping
// the pattern when no grant names it any more. It reports false, changing
// nothing, when pattern is not a valid filter.
func adjust(b *topic.PatternSetBuilder[grantCount], pattern string, p Permission, d int) bool {
	c, _, _ := b.Get(pattern)
	c = c.counted(p, d)
	if c == (grantCount{}) {
		b.Delete(pattern)
		return true
	}
	return b.Put(pattern, c, c.classes()) // validates the pattern
}

func validGrant(gr Grant) bool {
	return ValidatePermission(gr.Permission) == nil && topic.ValidateFilter(gr.Pattern) == nil
}

// CompileGrants builds the permission set of grants. Grants whose pattern is
// not a valid filter or whose permission is neither read nor readwrite are
// dropped (failing closed); stores never return such grants. A tag has one
// grant: when grants names a tag ID more than once (stores never do), the
// last one given counts, as if applied one by one with With. The slice is
// copied: the caller may reuse it. O(n × levels).
func CompileGrants(grants []Grant) *Grants {
	// Visit grants by ascending tag ID, the last grant of each tag only.
	// Stores give them in that order already: then no index is needed.
	var order []int
	if !slices.IsSortedFunc(grants, func(a, b Grant) int { return cmp.Compare(a.TagID, b.TagID) }) {
		order = make([]int, len(grants))
		for i := range order {
			order[i] = i
		}
		slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(grants[a].TagID, grants[b].TagID) })
	}
	at := func(j int) Grant {
		if order != nil {
			return grants[order[j]]
		}
		return grants[j]
	}
	accepted := make([]Grant, 0, len(grants))
	var b topic.PatternSetBuilder[grantCount]
	for j := range grants {
		gr := at(j)
		if j+1 < len(grants) && at(j+1).TagID == gr.TagID {
			continue // a later grant of the same tag replaces this one
		}
		if ValidatePermission(gr.Permission) != nil || !adjust(&b, gr.Pattern, gr.Permission, 1) {
			continue
		}
		accepted = append(accepted, gr)
	}
	return &Grants{set: b.Build(), tags: idmap.FromSorted(accepted, func(g Grant) int64 { return g.TagID })}
}

// CanSubscribe reports whether filter may be subscribed to: whether some
// read or readwrite pattern contains every topic filter can match
// (topic.Contains). An invalid filter (topic.ValidateFilter) is never
// allowed. It allocates nothing and costs one walk of filter's levels.
func (g *Grants) CanSubscribe(filter string) bool {
	if g == nil || topic.ValidateFilter(filter) != nil {
		return false
	}
	return g.set.Contains(filter, classRead)
}

// CanPublish reports whether a message may be published to topicName:
// whether some readwrite pattern matches it (topic.Match). A name that is
// not a valid topic (topic.ValidateTopic), such as one holding a wildcard,
// is never allowed. It allocates nothing and costs one walk of the topic's
// levels.
func (g *Grants) CanPublish(topicName string) bool {
	if g == nil || topic.ValidateTopic(topicName) != nil {
		return false
	}
	return g.set.Match(topicName, classWrite)
}

// Len is the number of grants in the set (one per tag).
func (g *Grants) Len() int {
	if g == nil {
		return 0
	}
	return g.tags.Len()
}

// Patterns returns a copy of the grants in the set ordered by tag ID (the
// order stores give them in). For display.
func (g *Grants) Patterns() []Grant {
	if g == nil {
		return nil
	}
	out := make([]Grant, 0, g.tags.Len())
	for _, gr := range g.tags.All() {
		out = append(out, gr)
	}
	return out
}

// Grant returns the grant of tag tagID, and whether the set has one.
// O(log n), no allocation.
func (g *Grants) Grant(tagID int64) (Grant, bool) {
	if g == nil {
		return Grant{}, false
	}
	return g.tags.Get(tagID)
}

// With returns the set in which tag gr.TagID grants gr.Permission on
// gr.Pattern, replacing the grant the tag had, if any: what a single
// SetPermission (or an UpdateTag of a tag the token holds) changes. An
// invalid gr removes the tag's grant instead (failing closed: its old right
// must not outlive the change). g is unchanged, and returned itself when
// nothing changes. O(levels × log n): the result shares everything else
// with g.
func (g *Grants) With(gr Grant) *Grants {
	if !validGrant(gr) {
		return g.Without(gr.TagID)
	}
	var set *topic.PatternSet[grantCount]
	var tags *idmap.Map[Grant]
	if g != nil {
		set, tags = g.set, g.tags
	}
	old, had := tags.Get(gr.TagID)
	if had && old == gr {
		return g
	}
	b := set.Builder()
	if had {
		adjust(b, old.Pattern, old.Permission, -1)
	}
	adjust(b, gr.Pattern, gr.Permission, 1)
	return &Grants{set: b.Build(), tags: tags.Put(gr.TagID, gr)}
}

// Without returns the set without the grant of tag tagID: what a single
// DeletePermission changes. g is unchanged, and returned itself when it has
// no grant for the tag. O(levels × log n).
func (g *Grants) Without(tagID int64) *Grants {
	old, had := g.Grant(tagID)
	if !had {
		return g
	}
	b := g.set.Builder()
	adjust(b, old.Pattern, old.Permission, -1)
	return &Grants{set: b.Build(), tags: g.tags.Delete(tagID)}
}

// Equal reports whether g and o allow exactly the same patterns with the
// same permissions (tag IDs are ignored). A caller that reloads grants after
// a store change can use it to skip re-checking live sessions when nothing
// security-relevant changed. O(distinct patterns × levels).
func (g *Grants) Equal(o *Grants) bool {
	a, b := g.patternSet(), o.patternSet()
	if a.Len() != b.Len() {
		return false
	}
	eq := true
	a.Range(func(p string, _ grantCount, c topic.Classes) bool {
		_, oc, ok := b.Get(p)
		eq = ok && oc == c
		return eq
	})
	return eq
}

func (g *Grants) patternSet() *topic.PatternSet[grantCount] {
	if g == nil {
		return nil
	}
	return g.set
}
