package netpoll

import (
	"testing"

	"github.com/gatecast/gatecast/proto"
)

// TestOutboxTotalCredit: queued frames are charged to the process total in
// blocks, so the total is never below what is queued and at most
// creditBlock above it; once everything is written the total is back to
// zero, and the sweeper's pending mirror lags the queue by less than
// pendingStep while frames are queued and is exact after the write.
func TestOutboxTotalCredit(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	cl, _ := dial(t, s, "/ws", nil)
	sess := h.waitOpened(t)
	c := sess.c
	c.mu.Lock()
	c.flags.Store(c.flags.Load() | fHold) // nothing drains until released
	c.mu.Unlock()

	const frames = 200
	payload := make([]byte, 100)
	for i := range frames {
		f := proto.AcquireFrame()
		f.B = AppendFrame(f.B[:0], true, payload)
		if !c.Send(f) {
			t.Fatalf("Send %d refused", i)
		}
		c.mu.Lock()
		queued, credit, pend := c.queuedBytes, c.credit, c.pending.Load()
		c.mu.Unlock()
		total := s.outboxTotal.Load()
		if total < int64(queued) || total > int64(queued+creditBlock) {
			t.Fatalf("after %d frames: process total %d, queued %d (want queued..queued+%d)", i+1, total, queued, creditBlock)
		}
		if total != int64(queued+credit) {
			t.Fatalf("after %d frames: process total %d != queued %d + credit %d", i+1, total, queued, credit)
		}
		if lag := int64(queued) - pend; lag < 0 || lag >= pendingStep {
			t.Fatalf("after %d frames: pending mirror %d, queued %d", i+1, pend, queued)
		}
	}

	c.mu.Lock()
	fl := c.flags.Load() &^ fHold
	c.flags.Store(fl | fDraining)
	c.mu.Unlock()
	go c.drain()
	for range frames {
		cl.expectMessage()
	}
	eventually(t, "outbox empty and the process total back to zero", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.head == nil && c.inflight == 0 && c.credit == 0 && c.pending.Load() == 0 && s.outboxTotal.Load() == 0
	})
}
