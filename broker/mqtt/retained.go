package mqtt

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Retained is one retained message: the last message published with the
// retain flag on its topic.
type Retained struct {
	Topic   string
	Payload []byte
	// Props are the MQTT 5 properties that travel with it (wire form, no
	// length prefix), without the Message Expiry Interval, which is
	// recomputed from ExpiresAt at each delivery.
	Props     []byte
	QoS       byte
	ExpiresAt time.Time // zero: never
}

// RetainStore persists retained messages in the store of record, so they
// survive a restart. The adapter holds them in memory and writes through
// it in the background: a publisher never waits for the disk.
type RetainStore interface {
	LoadRetained(ctx context.Context) ([]Retained, error)
	PutRetained(ctx context.Context, r Retained) error
	DeleteRetained(ctx context.Context, topic string) error
}

// retainedSet is the node's retained messages, indexed by topic level for
// the filter queries a SUBSCRIBE makes. Bounded in count and bytes.
type retainedSet struct {
	mu       sync.Mutex
	root     retainNode
	count    int
	bytes    int
	maxCount int
	maxBytes int

	store  RetainStore
	writes chan retainWrite // to the store, in order
	log    *slog.Logger
}

type retainNode struct {
	children map[string]*retainNode
	msg      *Retained
}

type retainWrite struct {
	r      Retained
	delete bool
}

func newRetainedSet(maxCount, maxBytes int, store RetainStore, log *slog.Logger) *retainedSet {
	rs := &retainedSet{maxCount: maxCount, maxBytes: maxBytes, store: store, log: log}
	if store != nil {
		rs.writes = make(chan retainWrite, 4096)
		go rs.writer()
	}
	return rs
}

// load fills the set from the store at start-up.
func (rs *retainedSet) load(ctx context.Context) error {
	if rs.store == nil {
		return nil
	}
	all, err := rs.store.LoadRetained(ctx)
	if err != nil {
		return err
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for i := range all {
		r := all[i]
		rs.putLocked(&r)
	}
	return nil
}

func size(r *Retained) int { return len(r.Topic) + len(r.Payload) + len(r.Props) + 64 }

// fits reports whether a retained message of n bytes on topic can be kept.
func (rs *retainedSet) fits(topic string, n int) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	old := rs.find(topic)
	count, bytes := rs.count, rs.bytes
	if old != nil {
		count--
		bytes -= size(old)
	}
	return count < rs.maxCount && bytes+n <= rs.maxBytes
}

func (rs *retainedSet) find(topic string) *Retained {
	n := &rs.root
	for level := range strings.SplitSeq(topic, "/") {
		if n = n.children[level]; n == nil {
			return nil
		}
	}
	return n.msg
}

// set stores r (an empty payload clears the topic) and queues the write.
func (rs *retainedSet) set(r *Retained) {
	rs.mu.Lock()
	if len(r.Payload) == 0 {
		rs.deleteLocked(r.Topic)
	} else {
		rs.putLocked(r)
	}
	rs.mu.Unlock()
	rs.queueWrite(retainWrite{r: *r, delete: len(r.Payload) == 0})
}

// queueWrite hands a write to the store's writer without ever blocking
// the caller (a publisher, a subscriber's event goroutine).
func (rs *retainedSet) queueWrite(w retainWrite) {
	if rs.writes == nil {
		return
	}
	select {
	case rs.writes <- w:
	default:
		go func() { rs.writes <- w }() // a burst: keep the caller moving
	}
}

func (rs *retainedSet) putLocked(r *Retained) {
	n := &rs.root
	for level := range strings.SplitSeq(r.Topic, "/") {
		if n.children == nil {
			n.children = make(map[string]*retainNode)
		}
		c := n.children[level]
		if c == nil {
			c = &retainNode{}
			n.children[level] = c
		}
		n = c
	}
	if n.msg != nil {
		rs.count--
		rs.bytes -= size(n.msg)
	}
	n.msg = r
	rs.count++
	rs.bytes += size(r)
}

func (rs *retainedSet) deleteLocked(topic string) {
	var path []*retainNode
	var names []string
	n := &rs.root
	for level := range strings.SplitSeq(topic, "/") {
		path = append(path, n)
		names = append(names, level)
		if n = n.children[level]; n == nil {
			return
		}
	}
	if n.msg == nil {
		return
	}
	rs.count--
	rs.bytes -= size(n.msg)
	n.msg = nil
	for i := len(path) - 1; i >= 0 && n.msg == nil && len(n.children) == 0; i-- {
		delete(path[i].children, names[i])
		n = path[i]
	}
}

// match calls fn for every retained message whose topic matches filter, by
// the MQTT rules ('+' one level, '#' the rest; wildcards at the first level
// do not match topics starting with '$'). Expired messages are skipped and
// dropped. fn runs outside the set's lock.
func (rs *retainedSet) match(filter string, now time.Time, fn func(*Retained)) {
	var out []*Retained
	rs.mu.Lock()
	levels := strings.Split(filter, "/")
	rs.walk(&rs.root, levels, 0, &out)
	var expired []string
	kept := out[:0]
	for _, r := range out {
		if !r.ExpiresAt.IsZero() && now.After(r.ExpiresAt) {
			expired = append(expired, r.Topic)
			continue
		}
		kept = append(kept, r)
	}
	for _, t := range expired {
		rs.deleteLocked(t)
	}
	rs.mu.Unlock()
	for _, t := range expired {
		rs.queueWrite(retainWrite{r: Retained{Topic: t}, delete: true})
	}
	for _, r := range kept {
		fn(r)
	}
}

func (rs *retainedSet) walk(n *retainNode, levels []string, i int, out *[]*Retained) {
	if i == len(levels) {
		if n.msg != nil {
			*out = append(*out, n.msg)
		}
		return
	}
	switch l := levels[i]; l {
	case "#":
		if n.msg != nil && i > 0 {
			*out = append(*out, n.msg) // "a/#" matches "a" too
		}
		rs.all(n, i == 0, out)
	case "+":
		for name, c := range n.children {
			if i == 0 && strings.HasPrefix(name, "$") {
				continue
			}
			rs.walk(c, levels, i+1, out)
		}
	default:
		if c := n.children[l]; c != nil {
			rs.walk(c, levels, i+1, out)
		}
	}
}

// all collects every message below n; top: skip '$' topics.
func (rs *retainedSet) all(n *retainNode, top bool, out *[]*Retained) {
	for name, c := range n.children {
		if top && strings.HasPrefix(name, "$") {
			continue
		}
		if c.msg != nil {
			*out = append(*out, c.msg)
		}
		rs.all(c, false, out)
	}
}

// writer applies queued writes to the store, in order, for the life of
// the process. Failures are logged: the in-memory set stays right, and the
// next write of the topic repairs the store.
func (rs *retainedSet) writer() {
	for w := range rs.writes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		if w.delete {
			err = rs.store.DeleteRetained(ctx, w.r.Topic)
		} else {
			err = rs.store.PutRetained(ctx, w.r)
		}
		cancel()
		if err != nil {
			rs.log.Warn("writing a retained message to the store failed", "err", err)
		}
	}
}
