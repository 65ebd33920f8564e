package acl

import (
	"slices"

	"github.com/gatecast/gatecast/topic"
)

// Grants is the compiled, immutable permission set of one token: what the
// hot path consults on every subscribe and publish. Build it with
// CompileGrants from Store.ListGrants; after that nothing mutates it, so any
// number of goroutines may call its methods concurrently without locks. To
// change a token's grants, compile a new Grants and swap the pointer (for
// example with atomic.Pointer[Grants]).
//
// Overlapping patterns are allowed: a topic is readable when at least one
// read or readwrite grant covers it, and writable when at least one
// readwrite grant covers it. A nil *Grants allows nothing.
type Grants struct {
	// read holds the patterns of every read and readwrite grant, write those
	// of readwrite grants only; both are deduplicated and in grant order.
	read  []string
	write []string
	// list is the accepted grants as given, for display and comparison.
	list []Grant
}

// CompileGrants builds the permission set of grants. Grants whose pattern is
// not a valid filter or whose permission is neither read nor readwrite are
// dropped (failing closed); stores never return such grants. The slice is
// copied: the caller may reuse it.
func CompileGrants(grants []Grant) *Grants {
	g := &Grants{list: make([]Grant, 0, len(grants))}
	seen := make(map[string]Permission, len(grants)) // strongest permission per pattern so far
	for _, gr := range grants {
		if ValidatePermission(gr.Permission) != nil || topic.ValidateFilter(gr.Pattern) != nil {
			continue
		}
		g.list = append(g.list, gr)
		prev, ok := seen[gr.Pattern]
		if !ok {
			g.read = append(g.read, gr.Pattern)
		}
		if gr.Permission == PermReadWrite && prev != PermReadWrite {
			g.write = append(g.write, gr.Pattern)
		}
		seen[gr.Pattern] = max(prev, gr.Permission)
	}
	return g
}

// CanSubscribe reports whether filter may be subscribed to: whether some
// read or readwrite pattern contains every topic filter can match
// (topic.Contains). An invalid filter (topic.ValidateFilter) is never
// allowed. It allocates nothing.
func (g *Grants) CanSubscribe(filter string) bool {
	if g == nil || topic.ValidateFilter(filter) != nil {
		return false
	}
	for _, p := range g.read {
		if topic.Contains(p, filter) {
			return true
		}
	}
	return false
}

// CanPublish reports whether a message may be published to topicName:
// whether some readwrite pattern matches it (topic.Match). A name that is
// not a valid topic (topic.ValidateTopic), such as one holding a wildcard,
// is never allowed. It allocates nothing.
func (g *Grants) CanPublish(topicName string) bool {
	if g == nil || topic.ValidateTopic(topicName) != nil {
		return false
	}
	for _, p := range g.write {
		if topic.Match(p, topicName) {
			return true
		}
	}
	return false
}

// Len is the number of grants in the set.
func (g *Grants) Len() int {
	if g == nil {
		return 0
	}
	return len(g.list)
}

// Patterns returns a copy of the grants in the set, in the order given to
// CompileGrants (stores give them ordered by tag ID). For display.
func (g *Grants) Patterns() []Grant {
	if g == nil {
		return nil
	}
	return slices.Clone(g.list)
}

// Equal reports whether g and o allow exactly the same patterns with the
// same permissions (tag IDs are ignored). A caller that reloads grants after
// a store change can use it to skip re-checking live sessions when nothing
// security-relevant changed.
func (g *Grants) Equal(o *Grants) bool {
	return slices.Equal(g.readSet(), o.readSet()) && slices.Equal(g.writeSet(), o.writeSet())
}

func (g *Grants) readSet() []string {
	if g == nil {
		return nil
	}
	return sortedSet(g.read)
}

func (g *Grants) writeSet() []string {
	if g == nil {
		return nil
	}
	return sortedSet(g.write)
}

func sortedSet(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
