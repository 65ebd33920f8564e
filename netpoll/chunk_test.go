package netpoll

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
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
	go c.drain()
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
	queued, credit := c.queuedBytes, c.credit
	c.mu.Unlock()
	if queued != 5<<10+2*frameOverhead {
		t.Fatalf("charged %d bytes, want %d", queued, 5<<10+2*frameOverhead)
	}
	// the process total counts the two chunks' whole buffers (4 and 8 KiB)
	// and the credit charged ahead of use (at most creditBlock)
	if credit < 0 || credit > creditBlock {
		t.Fatalf("credit %d, want 0..%d", credit, creditBlock)
	}
	if got, want := s.outboxTotal.Load(), int64(4<<10+8<<10+2*frameOverhead+credit); got != want {
		t.Fatalf("process total %d, want %d", got, want)
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

// BenchmarkSendBytes measures SendBytes of 85-byte packets (a QoS 0 MQTT
// delivery of a 64-byte payload) and their batched drain to one stream
// client over loopback (the client reads and discards).
func BenchmarkSendBytes(b *testing.B) {
	sh := newStreamHandler()
	sh.onData = func(*streamSession, []byte) {}
	_, _, addr := startStream(b, Config{}, sh, nil)
	conn := dialStream(b, addr)
	writeAll(b, conn, []byte("x"))
	sess := sh.waitOpened(b)
	var received atomic.Int64
	go func() {
		buf := make([]byte, 256<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			received.Add(int64(n))
		}
	}()
	p := bytes.Repeat([]byte{'x'}, 85)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		for ok, _ := sess.c.SendBytes(p); !ok; ok, _ = sess.c.SendBytes(p) {
			runtime.Gosched()
		}
	}
	want := int64(b.N) * int64(len(p))
	for received.Load() < want {
		runtime.Gosched()
	}
}

// byteStreamSession is a ByteStreamSession that records what it gets.
type byteStreamSession struct {
	mu     sync.Mutex
	binary []byte
	calls  int
	events []string // "b" for a binary delivery, the text of a text one
	opened chan struct{}
}

func (s *byteStreamSession) ByteStream() bool { return true }

func (s *byteStreamSession) OnMessage(text bool, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if text {
		s.events = append(s.events, string(p))
		return
	}
	s.binary = append(s.binary, p...)
	s.calls++
	if len(s.events) == 0 || s.events[len(s.events)-1] != "b" {
		s.events = append(s.events, "b")
	}
}

func (s *byteStreamSession) OnClose() {}

type byteStreamHandler struct{ s *byteStreamSession }

func (h byteStreamHandler) Open(*Conn, *Handshake) Session {
	close(h.s.opened)
	return h.s
}

// TestByteStreamJoined: a ByteStreamSession gets the binary messages of one
// read joined in order, in fewer calls than messages, every one of them
// counted; a text message between them comes alone, in its place, and so
// does a fragmented binary message.
func TestByteStreamJoined(t *testing.T) {
	sess := &byteStreamSession{opened: make(chan struct{})}
	s, reg := startServer(t, Config{}, byteStreamHandler{sess})
	cl, _ := dial(t, s, "/ws", nil)
	<-sess.opened
	var burst, want []byte
	for i := range 200 {
		p := bytes.Repeat([]byte{byte(i)}, i%90)
		burst = append(burst, clientFrame(true, 0, opBinary, p)...)
		want = append(want, p...)
		if i == 99 {
			burst = append(burst, clientFrame(true, 0, opText, []byte("middle"))...)
			burst = append(burst, clientFrame(false, 0, opBinary, []byte("frag"))...)
			burst = append(burst, clientFrame(true, 0, opContinuation, []byte("mented"))...)
			want = append(want, "fragmented"...)
		}
	}
	cl.write(burst)
	eventually(t, "every byte delivered", func() bool {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		return len(sess.binary) >= len(want)
	})
	sess.mu.Lock()
	got, calls, events := sess.binary, sess.calls, sess.events
	sess.mu.Unlock()
	if !bytes.Equal(got, want) {
		t.Fatalf("joined payloads differ from the messages sent (%d of %d bytes)", len(got), len(want))
	}
	if calls >= 150 || len(events) != 3 || events[1] != "middle" {
		t.Fatalf("%d binary calls for 201 binary messages, events %q; want them joined around the text message", calls, events)
	}
	eventually(t, "messages counted", func() bool {
		return counterValue(t, reg, "gatecast_ws_messages_received_total") == 202
	})
}

// TestSendFramesWebSocket: whole frames queued with SendFrames share chunks
// (a burst of 300 takes a few outbox entries, not 300) and still reach a
// WebSocket client one message each, in order, with SendBytes pieces (binary
// messages) and Send frames between them in their places.
func TestSendFramesWebSocket(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	cl, _ := dial(t, s, "/ws", nil)
	sess := h.waitOpened(t)
	c := sess.c
	c.mu.Lock()
	c.flags.Store(c.flags.Load() | fHold)
	c.mu.Unlock()
	text := func(i int) []byte { return AppendFrame(nil, true, []byte(fmt.Sprintf("frame %d", i))) }
	const n = 300
	var bin []byte
	for i := range n {
		if ok, _ := c.SendFrames(text(i)); !ok {
			t.Fatalf("SendFrames %d refused", i)
		}
		switch i % 100 {
		case 40:
			p := bytes.Repeat([]byte{byte('a' + i%26)}, 70)
			if ok, _ := c.SendBytes(p); !ok {
				t.Fatalf("SendBytes %d refused", i)
			}
			bin = append(bin, p...)
		case 80:
			f := proto.AcquireFrame()
			f.B = AppendFrame(f.B[:0], true, []byte(fmt.Sprintf("sent %d", i)))
			if !c.Send(f) {
				t.Fatalf("Send %d refused", i)
			}
		}
	}
	c.mu.Lock()
	entries := c.queued
	fl := c.flags.Load() &^ fHold
	c.flags.Store(fl | fDraining)
	c.mu.Unlock()
	if entries > 20 {
		t.Fatalf("%d frames and 6 other sends took %d outbox entries: SendFrames did not coalesce", n, entries)
	}
	go c.drain()
	var got []byte
	next := 0
	for next < n {
		f := cl.expectMessage()
		switch f.Header.OpCode {
		case ws.OpBinary:
			got = append(got, f.Payload...)
		case ws.OpText:
			p := string(f.Payload)
			if strings.HasPrefix(p, "sent ") {
				if want := fmt.Sprintf("sent %d", next-1); p != want || (next-1)%100 != 80 {
					t.Fatalf("after frame %d: %q", next-1, p)
				}
				continue
			}
			if want := fmt.Sprintf("frame %d", next); p != want {
				t.Fatalf("message %q, want %q", p, want)
			}
			next++
		default:
			t.Fatalf("opcode %v", f.Header.OpCode)
		}
	}
	for len(got) < len(bin) {
		f := cl.expectMessage()
		if f.Header.OpCode != ws.OpBinary {
			t.Fatalf("opcode %v after the last frame", f.Header.OpCode)
		}
		got = append(got, f.Payload...)
	}
	if !bytes.Equal(got, bin) {
		t.Fatalf("binary payloads differ: %d of %d bytes", len(got), len(bin))
	}
}
