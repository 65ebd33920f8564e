package netpoll

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/gatecast/gatecast/proto"
)

// sendPattern queues, on c, n pieces of sizes cycling through sizes with a
// Send of a complete frame (frame(i)) every frameEvery pieces, and returns
// the bytes the peer must receive as the stream's payload (frames' bytes
// counted in it only when rawFrames). It holds the writer meanwhile, so
// that everything is queued before the first drain.
func sendPattern(t *testing.T, c *Conn, n int, sizes []int, frameEvery int, frame func(i int) []byte, rawFrames bool) []byte {
	t.Helper()
	c.mu.Lock()
	c.flags.Store(c.flags.Load() | fHold)
	c.mu.Unlock()
	var want []byte
	for i := range n {
		if frameEvery > 0 && i%frameEvery == frameEvery-1 {
			f := proto.AcquireFrame()
			f.B = append(f.B[:0], frame(i)...)
			if !c.Send(f) {
				t.Fatalf("Send %d refused", i)
			}
			if rawFrames {
				want = append(want, f.B...)
			}
			continue
		}
		p := bytes.Repeat([]byte{byte('a' + i%26)}, sizes[i%len(sizes)])
		if ok, _ := c.SendBytes(p); !ok {
			t.Fatalf("SendBytes %d refused", i)
		}
		p[0] = '!' // the caller may reuse its buffer at once
		want = append(want, bytes.Repeat([]byte{byte('a' + i%26)}, sizes[i%len(sizes)])...)
	}
	c.mu.Lock()
	fl := c.flags.Load() &^ fHold
	c.flags.Store(fl | fDraining)
	c.mu.Unlock()
	go c.drainFn()
	return want
}

// TestSendBytesStream: bytes sent with SendBytes and frames sent with Send
// reach the peer of a stream in order, byte for byte, through chunks that
// grow past maxChunk and pieces larger than a chunk.
func TestSendBytesStream(t *testing.T) {
	sh := newStreamHandler()
	sh.onData = func(*streamSession, []byte) {}
	_, _, addr := startStream(t, Config{}, sh, nil)
	conn := dialStream(t, addr)
	writeAll(t, conn, []byte("x"))
	sess := sh.waitOpened(t)
	frame := func(i int) []byte { return []byte{'<', byte(i), '>'} }
	want := sendPattern(t, sess.c, 600, []int{1, 85, 300, 40 << 10, 7}, 37, frame, true)
	if got := readExactly(t, conn, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("received %d bytes, not what was sent (%d)", len(got), len(want))
	}
	eventually(t, "outbox empty", func() bool {
		sess.c.mu.Lock()
		defer sess.c.mu.Unlock()
		return sess.c.head == nil && sess.c.inflight == 0 && sess.c.srv.outboxTotal.Load() == 0
	})
}

// TestSendBytesWebSocket: on a WebSocket, SendBytes pieces arrive as binary
// messages whose payloads, concatenated, are the pieces in order; frames
// sent with Send between them arrive whole, in their place.
func TestSendBytesWebSocket(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	cl, _ := dial(t, s, "/ws", nil)
	sess := h.waitOpened(t)
	frame := func(i int) []byte { return AppendFrame(nil, true, []byte{'#', byte('0' + i%10)}) }
	want := sendPattern(t, sess.c, 800, []int{3, 90, 20 << 10, 120}, 50, frame, false)
	var got []byte
	texts := 0
	for len(got) < len(want) || texts < 800/50 {
		f := cl.expectMessage()
		switch f.Header.OpCode {
		case ws.OpBinary:
			if len(f.Payload) > maxChunk && len(f.Payload) != 20<<10 {
				t.Fatalf("a binary message of %d bytes: chunks are at most %d, or one piece", len(f.Payload), maxChunk)
			}
			got = append(got, f.Payload...)
		case ws.OpText:
			if string(f.Payload) != string([]byte{'#', byte('0' + (texts*50+49)%10)}) {
				t.Fatalf("text frame %d: %q", texts, f.Payload)
			}
			texts++
		default:
			t.Fatalf("opcode %v", f.Header.OpCode)
		}
	}
	if !bytes.Equal(got, want) || texts != 800/50 {
		t.Fatalf("binary payloads differ (%d of %d bytes), %d text frames", len(got), len(want), texts)
	}
}

// TestSendBytesLimits: SendBytes obeys the outbox limits as Send does (a
// first piece always goes, the hard limit refuses), refuses once closing,
// and chunks still queued when the connection dies are freed.
func TestSendBytesLimits(t *testing.T) {
	sh := newStreamHandler()
	sh.onData = func(*streamSession, []byte) {}
	s, _, addr := startStream(t, Config{OutboxSoftLimit: 4 << 10, OutboxLimit: 8 << 10}, sh, nil)
	conn := dialStream(t, addr)
	writeAll(t, conn, []byte("x"))
	sess := sh.waitOpened(t)
	c := sess.c
	c.mu.Lock()
	c.flags.Store(c.flags.Load() | fHold) // nothing drains: the outbox only fills
	c.mu.Unlock()
	if ok, bl := c.SendBytes(make([]byte, 3<<10)); !ok || bl != nil {
		t.Fatalf("first piece: ok %v, backlog %v", ok, bl)
	}
	ok, bl := c.SendBytes(make([]byte, 2<<10))
	if !ok || bl == nil {
		t.Fatalf("past the soft limit: ok %v, backlog %v; want queued and backlogged", ok, bl)
	}
	if ok, _ := c.SendBytes(make([]byte, 4<<10)); ok {
		t.Fatal("past the hard limit: queued")
	}
	c.mu.Lock()
	queued := c.queuedBytes
	c.mu.Unlock()
	if queued != 5<<10+2*frameOverhead {
		t.Fatalf("charged %d bytes, want %d", queued, 5<<10+2*frameOverhead)
	}
	if got := s.outboxTotal.Load(); got != int64(queued) {
		t.Fatalf("process total %d, want %d", got, queued)
	}
	conn.Close()
	sess.waitClosed(t)
	select {
	case <-bl:
	case <-time.After(5 * time.Second):
		t.Fatal("backlog not released when the connection went")
	}
	if got := s.outboxTotal.Load(); got != 0 {
		t.Fatalf("process total %d after the close", got)
	}
	if ok, _ := c.SendBytes([]byte("late")); ok {
		t.Fatal("SendBytes queued on a closed connection")
	}
	_, _ = io.Copy(io.Discard, conn)
}

// TestSendBytesAllocs: coalescing allocates nothing once its buffers are
// pooled, drains included.
func TestSendBytesAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race")
	}
	sh := newStreamHandler()
	sh.onData = func(*streamSession, []byte) {}
	_, _, addr := startStream(t, Config{}, sh, nil)
	conn := dialStream(t, addr)
	writeAll(t, conn, []byte("x"))
	sess := sh.waitOpened(t)
	go func() { _, _ = io.Copy(io.Discard, conn) }()
	p := make([]byte, 85)
	send := func() {
		for range 64 {
			for ok, _ := sess.c.SendBytes(p); !ok; ok, _ = sess.c.SendBytes(p) {
			}
		}
		for {
			sess.c.mu.Lock()
			idle := sess.c.head == nil && sess.c.flags.Load()&fDraining == 0
			sess.c.mu.Unlock()
			if idle {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	for range 10 {
		send()
	}
	// A drain goroutine is started per burst (its closure is bound once,
	// at accept), and netpoll's flush may allocate on its own; SendBytes
	// and the chunks themselves must not.
	if allocs := testing.AllocsPerRun(50, send); allocs > 2 {
		t.Fatalf("64 SendBytes and their drain: %.1f allocations", allocs)
	}
}
