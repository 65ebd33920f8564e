package broker

import (
	"strings"
	"sync"
	"sync/atomic"
)

// Shared subscriptions ($share/{group}/{filter}, MQTT 5 §4.8.2, accepted
// from every protocol that can ask for one): the members of a group share
// its messages, each message going to one member. The index holds one
// entry per group (a Subscription whose group is set), not one per member;
// dispatch picks the member: round robin over the members whose client is
// connected, or over all of them (their sessions queue) when none is.
// Groups are per node: in a cluster each node's group gets a copy (cluster-
// wide groups are a later step).

// SharePrefix starts a shared subscription's filter.
const SharePrefix = "$share/"

// ParseShared splits "$share/{group}/{filter}"; ok is false when f is not a
// shared subscription. A malformed one (empty or wildcard group, no filter)
// returns ok with an empty filter.
func ParseShared(f string) (group, filter string, ok bool) {
	rest, ok := strings.CutPrefix(f, SharePrefix)
	if !ok {
		return "", "", false
	}
	group, filter, found := strings.Cut(rest, "/")
	if !found || group == "" || strings.ContainsAny(group, "+#") {
		return "", "", true
	}
	return group, filter, true
}

// shareGroup is one group's members on this node. Its index entry is a
// Subscription with no session (s nil) whose shared.g points here.
type shareGroup struct {
	key     shareKey
	entry   *Subscription                   // the group's index entry
	members atomic.Pointer[[]*Subscription] // copy on write, under Broker.groups.mu
	next    atomic.Uint32
}

type shareKey struct{ group, filter string }

// pick returns the member to deliver to, nil when there is none.
func (g *shareGroup) pick() *Subscription {
	ms := g.members.Load()
	if ms == nil || len(*ms) == 0 {
		return nil
	}
	all := *ms
	start := g.next.Add(1)
	var fallback *Subscription
	for i := range all {
		m := all[(int(start)+i)%len(all)]
		if m.s.closed.Load() {
			continue
		}
		if !m.s.away.Load() {
			return m
		}
		if fallback == nil {
			fallback = m
		}
	}
	return fallback
}

// shareGroups is the node's groups.
type shareGroups struct {
	mu sync.Mutex
	m  map[shareKey]*shareGroup
}

// indexAdd puts sub in the index: directly, or as a member of its group.
func (b *Broker) indexAdd(sub *Subscription) {
	if sub.shared == nil {
		b.index.Subscribe(sub.filter, sub)
		return
	}
	k := shareKey{sub.shared.group, sub.shared.match}
	b.groups.mu.Lock()
	defer b.groups.mu.Unlock()
	if b.groups.m == nil {
		b.groups.m = make(map[shareKey]*shareGroup)
	}
	g := b.groups.m[k]
	if g == nil {
		g = &shareGroup{key: k}
		g.entry = &Subscription{filter: SharePrefix + k.group + "/" + k.filter, shared: &shareRef{group: k.group, match: k.filter, g: g}}
		b.groups.m[k] = g
		b.index.Subscribe(k.filter, g.entry)
	}
	var ms []*Subscription
	if p := g.members.Load(); p != nil {
		ms = append(ms, *p...)
	}
	ms = append(ms, sub)
	g.members.Store(&ms)
}

// indexRemove takes sub out of the index (or of its group).
func (b *Broker) indexRemove(sub *Subscription) {
	if sub.shared == nil {
		b.index.Unsubscribe(sub.filter, sub)
		return
	}
	k := shareKey{sub.shared.group, sub.shared.match}
	b.groups.mu.Lock()
	defer b.groups.mu.Unlock()
	g := b.groups.m[k]
	if g == nil {
		return
	}
	var ms []*Subscription
	if p := g.members.Load(); p != nil {
		for _, m := range *p {
			if m != sub {
				ms = append(ms, m)
			}
		}
	}
	if len(ms) == 0 {
		delete(b.groups.m, k)
		b.index.Unsubscribe(k.filter, g.entry)
		g.members.Store(nil)
		return
	}
	g.members.Store(&ms)
}
