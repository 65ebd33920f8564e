package netpoll

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"

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

// TestSendTextRun: a run of text payloads is admitted message by message
// (a prefix up to the hard limit), each written as a text frame straight
// into the outbox's chunks, coalesced, and received in order; the caller's
// buffers are not kept.
func TestSendTextRun(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{OutboxSoftLimit: 4 << 10, OutboxLimit: 8 << 10}, h)
	cl, _ := dial(t, s, "/ws", nil)
	c := h.waitOpened(t).c
	release := holdOutput(c)
	msg := func(i int) []byte {
		n := 500
		if i == 3 {
			n = 200 // a 4-byte header
		} else if i == 4 {
			n = 10 // a 2-byte one
		}
		return append([]byte(fmt.Sprintf("%04d", i)), bytes.Repeat([]byte{'y'}, n)...)
	}
	var parts [][]byte
	for i := range 40 {
		parts = append(parts, msg(i))
	}
	n1, bl := c.SendTextRun(parts[:6])
	if n1 != 6 || bl != nil {
		t.Fatalf("first run: queued %d, backlog %v; want 6, none (under the soft limit)", n1, bl)
	}
	// refused at the hard limit: the connection overflows, which releases
	// its waiters instead of stalling them (see outbox.go)
	n2, bl := c.SendTextRun(parts[6:])
	if n2 < 2 || n2 >= 34 || bl != nil {
		t.Fatalf("second run: queued %d of 34, backlog %v; want a prefix cut by the 8 KiB limit, and no backlog", n2, bl)
	}
	for _, p := range parts {
		clear(p) // nothing of them is kept
	}
	c.mu.Lock()
	entries, charged := int(c.queued), c.queuedBytes
	c.mu.Unlock()
	if entries > 5 { // chunks double in size as the outbox fills
		t.Fatalf("%d frames took %d outbox entries: the run was not coalesced", n1+n2, entries)
	}
	wire := 0
	for i := range n1 + n2 {
		wire += frameHeaderLen(len(msg(i))) + len(msg(i))
	}
	if charged != wire+entries*frameOverhead {
		t.Fatalf("charged %d bytes for %d bytes of frames in %d chunks, want %d", charged, wire, entries, wire+entries*frameOverhead)
	}
	release()
	for i := range n1 + n2 {
		f := cl.expectMessage()
		if f.Header.OpCode != ws.OpText || !bytes.Equal(f.Payload, msg(i)) {
			t.Fatalf("message %d: %v %.8q…, want text %.8q…", i, f.Header.OpCode, f.Payload, msg(i))
		}
	}
	c.Close(1000, "")
	if n, _ := c.SendTextRun(parts[:1]); n != 0 {
		t.Fatalf("closing connection: queued %d", n)
	}
}

// heldSession records, for each message, whether PayloadHeld said it stays
// valid until the read ends, and checks at OnReadEnd that every held payload
// still holds what it held when it came.
type heldSession struct {
	c      *Conn
	held   []bool
	kept   [][]byte // held payloads, as handed over
	copies [][]byte // their contents then
	bad    atomic.Int32
	reads  chan int // messages per read
	n      int
}

func (s *heldSession) OnMessage(_ bool, p []byte) {
	h := s.c.PayloadHeld()
	s.held = append(s.held, h)
	if h {
		s.kept = append(s.kept, p)
		s.copies = append(s.copies, bytes.Clone(p))
	}
	s.n++
}

func (s *heldSession) OnReadEnd() {
	for i, p := range s.kept {
		if !bytes.Equal(p, s.copies[i]) {
			s.bad.Add(1)
		}
	}
	s.kept, s.copies = nil, nil
	s.reads <- s.n
	s.n = 0
}

func (s *heldSession) OnClose() {}

type heldHandler struct{ opened chan *heldSession }

func (h heldHandler) Open(c *Conn, _ *Handshake) Session {
	s := &heldSession{c: c, reads: make(chan int, 64)}
	h.opened <- s
	return s
}

// TestPayloadHeld: a whole frame in the read buffer is held until the read
// ends — several in one read, each still intact at OnReadEnd; a frame that
// came in two reads (assembled in the stash) and a fragmented message
// (assembled in the message buffer) are not.
func TestPayloadHeld(t *testing.T) {
	h := heldHandler{opened: make(chan *heldSession, 1)}
	s, _ := startServer(t, Config{}, h)
	cl := dialManual(t, s)
	sess := <-h.opened
	wait := func(want int) {
		t.Helper()
		got := 0
		for got < want {
			select {
			case n := <-sess.reads:
				got += n
			case <-time.After(10 * time.Second):
				t.Fatalf("%d of %d messages read", got, want)
			}
		}
	}
	var burst []byte
	for i := range 20 {
		burst = append(burst, clientFrame(true, 0, opText, []byte(fmt.Sprintf("message %02d of the burst", i)))...)
	}
	cl.write(burst)
	wait(20)
	split := clientFrame(true, 0, opText, bytes.Repeat([]byte{'s'}, 300))
	before := testutil.ToFloat64(s.m.bytesIn)
	cl.write(split[:100])
	eventually(t, "the first part read (and stashed) alone", func() bool { return testutil.ToFloat64(s.m.bytesIn) >= before+100 })
	cl.write(split[100:])
	wait(1)
	cl.write(append(clientFrame(false, 0, opText, []byte("frag-")), clientFrame(true, 0, opContinuation, []byte("mented"))...))
	wait(1)
	for i := range 20 {
		if !sess.held[i] {
			t.Fatalf("burst message %d: not held", i)
		}
	}
	if sess.held[20] {
		t.Fatal("a frame assembled in the stash: held")
	}
	if sess.held[21] {
		t.Fatal("a fragmented message: held")
	}
	if n := sess.bad.Load(); n != 0 {
		t.Fatalf("%d held payloads changed before the read ended", n)
	}
}

// TestSendTextRunOneChunk: runs that fit the tail chunk go into it whole
// (one entry for all of them), charged exactly, received in order.
func TestSendTextRunOneChunk(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	cl, _ := dial(t, s, "/ws", nil)
	c := h.waitOpened(t).c
	release := holdOutput(c)
	var want [][]byte
	wire := 0
	for r := range 5 {
		var run [][]byte
		for i := range 3 {
			p := []byte(fmt.Sprintf("run %d message %d", r, i))
			run = append(run, p)
			want = append(want, bytes.Clone(p))
			wire += frameHeaderLen(len(p)) + len(p)
		}
		if n, _ := c.SendTextRun(run); n != 3 {
			t.Fatalf("run %d: queued %d of 3", r, n)
		}
	}
	c.mu.Lock()
	entries, charged := int(c.queued), c.queuedBytes
	c.mu.Unlock()
	if entries != 1 || charged != wire+frameOverhead {
		t.Fatalf("5 small runs: %d entries charged %d bytes, want 1 entry of %d", entries, charged, wire+frameOverhead)
	}
	release()
	for i, p := range want {
		if f := cl.expectMessage(); !bytes.Equal(f.Payload, p) {
			t.Fatalf("message %d: %q, want %q", i, f.Payload, p)
		}
	}
}

// TestBatchesInOrder: the writer's batches — chunks that need a message
// header of their own, shared frames, a few entries or many — arrive whole
// and in order, also when the socket takes them only in part (the reader
// starts once ~9 MB are queued).
func TestBatchesInOrder(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{OutboxLimit: 64 << 20, OutboxSoftLimit: 32 << 20}, h)
	cl, _ := dial(t, s, "/ws", nil)
	c := h.waitOpened(t).c
	var want [][]byte
	release := holdOutput(c) // the first rounds go as one batch of many entries
	for round := range 2000 {
		if round == 3 {
			release() // the rest as the writer takes them
		}
		n := 1 + round%5
		if round%7 == 6 || round == 0 {
			n = 74 // more than a segment's entries
		}
		for i := range n {
			p := []byte(fmt.Sprintf("round %d entry %d %s", round, i, bytes.Repeat([]byte{'w'}, (round*3701+i*1013)%3000)))
			if i%2 == 0 {
				f := proto.AcquireFrame()
				f.B = AppendFrame(f.B[:0], true, p)
				if !c.Send(f) {
					t.Fatal("Send refused")
				}
			} else if ok, _ := c.SendBytes(p); !ok { // a binary message: a chunk with a header of its own
				t.Fatal("SendBytes refused")
			}
			want = append(want, p)
		}
	}
	for i, p := range want {
		f := cl.expectMessage()
		if !bytes.Equal(f.Payload, p) {
			t.Fatalf("message %d: %.30q…, want %.30q…", i, f.Payload, p)
		}
	}
}
