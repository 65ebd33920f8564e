package mqtt

import (
	"sync"

	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/proto"
)

// Server → client topic aliases (MQTT 5 §3.3.2.3.4), for a client that
// announced a Topic Alias Maximum. They are used for the PUBLISH packets
// the adapter encodes for one subscriber anyway (QoS 1 and 2, subscription
// identifiers, retained messages, queued copies), never for the QoS 0
// encoding every subscriber of a variant shares: that would cost the
// sharing. The first packet on a topic carries the topic and a new alias;
// later ones carry the alias alone. Encoding and queueing happen under mu,
// so a packet that uses an alias can never overtake the one that set it.
// When every alias is taken, other topics go without one.
type aliasOut struct {
	mu   sync.Mutex
	max  uint16
	next uint16
	m    map[string]uint16
}

// sendOwn encodes one PUBLISH for this connection alone — with a topic
// alias when the client allows them — and queues it.
func (c *Conn) sendOwn(m *broker.Message, qos byte, id uint16, retain, dup bool, subIDs []uint32) (n int, ok, tooLarge bool, backlog <-chan struct{}) {
	a := c.aliases5
	if a == nil {
		f := proto.AcquireFrame() // scratch: the transport copies the packet
		f.B = appendPublish(f.B, c.version, false, m, qos, id, retain, dup, subIDs)
		n, ok, tooLarge, backlog = c.sendPacket(f.B)
		f.Release()
		return n, ok, tooLarge, backlog
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	alias, known := a.m[m.Topic]
	if !known && a.next < a.max {
		a.next++
		alias = a.next
		if a.m == nil {
			a.m = make(map[string]uint16)
		}
		a.m[string([]byte(m.Topic))] = alias
	}
	f := proto.AcquireFrame() // scratch: the transport copies the packet
	f.B = appendPublishAlias(f.B, c.version, false, m, qos, id, retain, dup, subIDs, alias, known)
	n, ok, tooLarge, backlog = c.sendPacket(f.B)
	f.Release()
	if !ok && !known && alias != 0 {
		// the packet that would have taught the client this alias was not
		// sent: forget it, so the next one on the topic teaches it again
		delete(a.m, m.Topic)
		if alias == a.next {
			a.next--
		}
	}
	return n, ok, tooLarge, backlog
}
