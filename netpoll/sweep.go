package netpoll

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatecast/gatecast/proto"
)

// registryShards spreads connections over independently locked lists, so
// accepts and closes on different event goroutines rarely contend, and the
// sweeper holds each lock only for a short walk.
const registryShards = 64

// registry is every live connection (all phases), as intrusive doubly
// linked lists: two pointers per connection, no map.
type registry struct {
	next   atomic.Uint32 // round-robin shard choice
	count  atomic.Int64
	shards [registryShards]registryShard
}

type registryShard struct {
	mu   sync.Mutex
	head *Conn
	_    [48]byte // keep shards on separate cache lines
}

func (r *registry) add(c *Conn) {
	c.shard = uint8(r.next.Add(1) % registryShards)
	sh := &r.shards[c.shard]
	sh.mu.Lock()
	c.next = sh.head
	if sh.head != nil {
		sh.head.prev = c
	}
	sh.head = c
	sh.mu.Unlock()
	r.count.Add(1)
}

func (r *registry) remove(c *Conn) {
	sh := &r.shards[c.shard]
	sh.mu.Lock()
	if c.prev != nil {
		c.prev.next = c.next
	} else if sh.head == c {
		sh.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
	sh.mu.Unlock()
	r.count.Add(-1)
}

func (r *registry) len() int { return int(r.count.Load()) }

// snapshot returns every registered connection (used by Shutdown).
func (r *registry) snapshot() []*Conn {
	all := make([]*Conn, 0, r.len())
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for c := sh.head; c != nil; c = c.next {
			all = append(all, c)
		}
		sh.mu.Unlock()
	}
	return all
}

// sweepAction is what the sweeper decided for one connection; it acts after
// releasing the shard lock, since acting may take the connection's lock or
// run netpoll's close path.
type sweepAction struct {
	c    *Conn
	kind uint8
}

const (
	actHandshakeTimeout uint8 = iota + 1
	actLingerDone
	actWriteTimeout
	actIdle
	actPing
	actSlowConsumer
	actOverflowEnded
)

// sweepLoop is the Server's one timer goroutine: every tick it advances the
// coarse clock and walks the registry.
func (s *Server) sweepLoop() {
	defer close(s.sweepDone)
	t := time.NewTicker(s.cfg.sweepInterval())
	defer t.Stop()
	var acts []sweepAction
	for {
		select {
		case <-s.stopSweep:
			return
		case <-t.C:
			now := s.tick()
			acts = s.sweep(now, acts[:0])
			s.sweepFDs(now)
			s.resumeHeld()
		}
	}
}

// sweep enforces every timeout at time now and sends due pings. acts is
// scratch storage, returned for reuse.
func (s *Server) sweep(now int64, acts []sweepAction) []sweepAction {
	hsTimeout := int64(s.cfg.HandshakeTimeout)
	pingEvery := int64(s.cfg.PingInterval)
	idle := int64(s.cfg.IdleTimeout)
	writeTimeout := int64(s.cfg.WriteTimeout)
	closeTimeout := int64(s.cfg.CloseTimeout)
	slowClose := s.cfg.SlowConsumer == CloseSlow
	var maxPending int64
	for i := range s.reg.shards {
		sh := &s.reg.shards[i]
		acts = acts[:0]
		sh.mu.Lock()
		for c := sh.head; c != nil; c = c.next {
			fl := c.flags.Load()
			var kind uint8
			switch {
			case fl&fGone != 0:
			case fl&(fRejected|fCloseFlushed) != 0:
				if now-c.phaseAt.Load() >= closeTimeout {
					kind = actLingerDone
				}
			case fl&fEstablished == 0 && now-c.phaseAt.Load() >= hsTimeout:
				// A WebSocket that never upgraded, a stream whose Session
				// never called Established (phaseAt is the accept time).
				kind = actHandshakeTimeout
			case fl&fUpgraded == 0:
				// Before the upgrade (a stream: before its first bytes)
				// nothing can be queued.
			default:
				maxPending = max(maxPending, c.pending.Load())
				if fs := c.flushStart.Load(); fs != 0 && now-fs >= writeTimeout {
					kind = actWriteTimeout
				} else if oa := c.overflowAt.Load(); oa != 0 && !c.stillRefusing() {
					kind = actOverflowEnded
				} else if oa != 0 && slowClose && fl&fClosing == 0 && now-oa >= writeTimeout {
					kind = actSlowConsumer
				} else if fl&(fClosing|fEstablished) == fEstablished {
					lr := c.lastRead.Load()
					connIdle, ping := idle, fl&fStream == 0
					if ms := c.idleMs.Load(); ms != 0 {
						// SetIdleTimeout: the protocol above keeps the
						// connection alive, not our pings.
						connIdle, ping = int64(ms)*int64(time.Millisecond), false
					}
					if now-lr >= connIdle {
						kind = actIdle
					} else if ping && now-max(lr, c.lastPing) >= pingEvery {
						kind = actPing
						c.lastPing = now
					}
				}
			}
			if kind != 0 {
				acts = append(acts, sweepAction{c, kind})
			}
		}
		sh.mu.Unlock()
		for _, a := range acts {
			s.act(a)
		}
		clear(acts) // drop the pointers: a gone Conn must be collectable
	}
	s.m.outboxMax.Set(float64(maxPending))
	return acts
}

func (s *Server) act(a sweepAction) {
	c := a.c
	switch a.kind {
	case actHandshakeTimeout:
		fl := c.flags.Load()
		if fl&(fEstablished|fRejected|fCloseFlushed) != 0 {
			return // the handshake finished since the walk
		}
		if fl&fStream == 0 {
			s.m.hsTimeout.Inc() // a WebSocket upgrade's result; streams have none
		}
		c.dropTCP(causeHandshakeTimeout)
	case actLingerDone:
		c.dropTCP(causeNone)
	case actWriteTimeout:
		s.cfg.Logger.Debug("closing connection: write timeout", "remote", c.RemoteAddr())
		c.dropTCP(causeWriteTimeout)
	case actIdle:
		c.closeWith(1001, "idle timeout", causeIdle)
	case actOverflowEnded:
		c.endOverflow()
	case actSlowConsumer:
		// At its outbox limit for WriteTimeout: the CloseSlow policy.
		s.m.slowClosed.Inc()
		c.closeSlow()
	case actPing:
		f := proto.AcquireFrame()
		f.B = append(f.B[:0], 0x80|opPing, 0)
		c.sendControl(f)
	}
}
