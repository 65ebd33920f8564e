package netpoll

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/gatecast/gatecast/proto"
)

// holdOutput stops c's drain, so that what is queued stays queued; the
// returned func lets it drain again.
func holdOutput(c *Conn) (release func()) {
	c.mu.Lock()
	c.flags.Store(c.flags.Load() | fHold)
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		fl := c.flags.Load() &^ fHold
		c.flags.Store(fl | fDraining)
		c.mu.Unlock()
		go c.drain()
	}
}

// TestSendBacklogRun: a run of shared frames is admitted frame by frame,
// as Sends one by one would be: queued up to the hard limit (a prefix),
// the newest refused and released, the backlog reported past the soft
// limit; the peer receives the queued ones in order; on a closed
// connection every frame is released and none queued.
func TestSendBacklogRun(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{OutboxSoftLimit: 4 << 10, OutboxLimit: 8 << 10}, h)
	cl, _ := dial(t, s, "/ws", nil)
	c := h.waitOpened(t).c
	release := holdOutput(c)
	payload := func(i int) []byte { return append([]byte(fmt.Sprintf("%04d", i)), bytes.Repeat([]byte{'x'}, 1020)...) }
	var counts []*atomic.Int32
	run := func(from, n int) []*proto.Frame {
		fs := make([]*proto.Frame, n)
		for i := range fs {
			var k *atomic.Int32
			fs[i], k = newTrackedFrame(true, payload(from+i))
			counts = append(counts, k)
		}
		return fs
	}
	if n, bl := c.SendBacklogRun(run(0, 5)); n != 5 || bl == nil {
		t.Fatalf("first run: queued %d, backlog %v; want 5 and a backlog (past the 4 KiB soft limit)", n, bl)
	}
	// 5 frames are charged 5 × (1028 + 16): two more fit under 8 KiB.
	if n, bl := c.SendBacklogRun(run(5, 5)); n != 2 || bl != nil {
		t.Fatalf("second run: queued %d of 5, backlog %v; want 2 (the hard limit), no backlog (overflowing)", n, bl)
	}
	for i := 7; i < 10; i++ {
		if got := counts[i].Load(); got != 1 {
			t.Fatalf("refused frame %d released %d times, want 1", i, got)
		}
	}
	for i := range 7 {
		if got := counts[i].Load(); got != 0 {
			t.Fatalf("queued frame %d released %d times before it was written", i, got)
		}
	}
	if n, _ := c.SendBacklogRun(nil); n != 0 {
		t.Fatalf("an empty run queued %d", n)
	}
	release()
	for i := range 7 {
		f := cl.expectMessage()
		if !bytes.Equal(f.Payload, payload(i)) {
			t.Fatalf("message %d: %.8q…, want %.8q…", i, f.Payload, payload(i))
		}
	}
	eventually(t, "the written frames released", func() bool {
		for i := range 7 {
			if counts[i].Load() != 1 {
				return false
			}
		}
		return true
	})
	c.Close(1000, "")
	fs := run(10, 3)
	if n, bl := c.SendBacklogRun(fs); n != 0 || bl != nil {
		t.Fatalf("closing connection: queued %d, backlog %v", n, bl)
	}
	for i := 10; i < 13; i++ {
		if got := counts[i].Load(); got != 1 {
			t.Fatalf("frame %d sent to a closing connection released %d times, want 1", i, got)
		}
	}
}

// TestSendFramesRun: a run of copied frames is admitted piece by piece
// (a prefix up to the hard limit), coalesced into the outbox's chunks, and
// received in order; the caller's buffers are not kept.
func TestSendFramesRun(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{OutboxSoftLimit: 4 << 10, OutboxLimit: 8 << 10}, h)
	cl, _ := dial(t, s, "/ws", nil)
	c := h.waitOpened(t).c
	release := holdOutput(c)
	msg := func(i int) []byte { return append([]byte(fmt.Sprintf("%04d", i)), bytes.Repeat([]byte{'y'}, 500)...) }
	var parts [][]byte
	for i := range 40 {
		parts = append(parts, AppendFrame(nil, true, msg(i)))
	}
	n1, bl := c.SendFramesRun(parts[:6])
	if n1 != 6 || bl != nil {
		t.Fatalf("first run: queued %d, backlog %v; want 6, none (under the soft limit)", n1, bl)
	}
	n2, bl := c.SendFramesRun(parts[6:])
	// refused at the hard limit: the connection overflows, which releases
	// its waiters instead of stalling them (see outbox.go)
	if n2 < 2 || n2 >= 34 || bl != nil {
		t.Fatalf("second run: queued %d of 34, backlog %v; want a prefix cut by the 8 KiB limit, and no backlog", n2, bl)
	}
	for _, p := range parts {
		clear(p) // nothing of them is kept
	}
	c.mu.Lock()
	entries := c.queued
	c.mu.Unlock()
	if entries > 5 { // chunks double in size as the outbox fills
		t.Fatalf("%d frames took %d outbox entries: the run was not coalesced", n1+n2, entries)
	}
	release()
	for i := range n1 + n2 {
		f := cl.expectMessage()
		if !bytes.Equal(f.Payload, msg(i)) {
			t.Fatalf("message %d: %.8q…, want %.8q…", i, f.Payload, msg(i))
		}
	}
	c.Close(1000, "")
	if n, _ := c.SendFramesRun(parts[:1]); n != 0 {
		t.Fatalf("closing connection: queued %d", n)
	}
}
