package netpoll

import (
	"bytes"
	"testing"

	"github.com/gatecast/gatecast/proto"
)

// BenchmarkQueueFanOut is netpoll's half of a 1 → 2,000 fan-out: one shared
// frame queued to each of 2,000 connections (SendBacklog, as the broker's
// dispatch does), every connection's outbox emptied after every 4 messages
// as a drain would. The 2,000 Conns and their segments are more than a
// core's L2 cache holds, as in the real fan-out, so what is measured is
// mostly the cache lines a delivery touches. ns/op is per delivery.
func BenchmarkQueueFanOut(b *testing.B) {
	const subscribers, perDrain = 2000, 4
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}}, newTestHandler())
	if err != nil {
		b.Fatal(err)
	}
	conns := make([]*Conn, subscribers)
	for i := range conns {
		c := &Conn{srv: s}
		c.flags.Store(fHold) // no drain starts: the loop below empties the outboxes
		conns[i] = c
	}
	f := proto.AcquireFrame()
	f.B = AppendFrame(f.B[:0], true, bytes.Repeat([]byte{'x'}, 64))
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += subscribers * perDrain {
		for range perDrain {
			for _, c := range conns {
				f.Retain()
				if ok, _ := c.SendBacklog(f); !ok {
					b.Fatal("refused")
				}
			}
		}
		for _, c := range conns {
			c.mu.Lock()
			head := c.head
			s.outboxTotal.Add(int64(-c.queuedBytes - c.credit))
			c.head, c.tail, c.queued, c.queuedBytes, c.credit = nil, nil, 0, 0, 0
			c.mu.Unlock()
			c.releaseSegments(head)
		}
	}
	b.StopTimer()
	if s.outboxTotal.Load() != 0 {
		b.Fatalf("outbox total %d after every outbox was emptied", s.outboxTotal.Load())
	}
	f.Release()
}
