package netpoll

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/proto"
)

// streamHandler opens a streamSession per stream connection.
type streamHandler struct {
	opened chan *streamSession
	// onOpen, when set, runs in OpenStream; false rejects (nil Session).
	onOpen func(c *Conn) bool
	// onData, when set, replaces the echo.
	onData func(s *streamSession, p []byte)
	// noRecord: sessions keep no copy of their input (which allocates).
	noRecord bool
}

func newStreamHandler() *streamHandler {
	return &streamHandler{opened: make(chan *streamSession, 64)}
}

// streamSession records every chunk it gets and, by default, echoes it.
type streamSession struct {
	h *streamHandler
	c *Conn

	mu       sync.Mutex
	data     []byte
	chunks   int
	maxChunk int
	text     bool // a chunk came with text=true (must not)
	closes   int
	closed   chan struct{}
}

func (h *streamHandler) OpenStream(c *Conn) Session {
	if h.onOpen != nil && !h.onOpen(c) {
		return nil
	}
	s := &streamSession{h: h, c: c, closed: make(chan struct{})}
	h.opened <- s
	return s
}

func (s *streamSession) OnMessage(text bool, p []byte) {
	if s.h.noRecord {
		s.h.onData(s, p)
		return
	}
	s.mu.Lock()
	s.text = s.text || text
	s.data = append(s.data, p...)
	s.chunks++
	s.maxChunk = max(s.maxChunk, len(p))
	s.mu.Unlock()
	if s.h.onData != nil {
		s.h.onData(s, p)
		return
	}
	s.send(p)
}

func (s *streamSession) OnClose() {
	s.mu.Lock()
	s.closes++
	n := s.closes
	s.mu.Unlock()
	if n == 1 {
		close(s.closed)
	}
}

// send queues a copy of p, raw.
func (s *streamSession) send(p []byte) bool {
	f := proto.AcquireFrame()
	f.B = append(f.B[:0], p...)
	return s.c.Send(f)
}

func (s *streamSession) received() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.data...)
}

func (s *streamSession) closeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closes
}

func (s *streamSession) waitClosed(t testing.TB) {
	t.Helper()
	select {
	case <-s.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("OnClose not called within 5s")
	}
}

func (h *streamHandler) waitOpened(t testing.TB) *streamSession {
	t.Helper()
	select {
	case s := <-h.opened:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no stream opened within 5s")
		return nil
	}
}

// startStream starts a Server (WebSocket on /ws, served by th, or a
// testHandler when th is nil) that also serves raw streams with sh on a
// listener of its own, and returns that listener's address.
func startStream(t testing.TB, cfg Config, sh StreamHandler, th Handler) (*Server, *prometheus.Registry, string) {
	t.Helper()
	if th == nil {
		th = newTestHandler()
	}
	s, reg := startServer(t, cfg, th)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.ServeStream(ln, sh) }()
	t.Cleanup(func() { // runs before startServer's (LIFO): Shutdown here, the second call there waits for it
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("ServeStream returned %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("ServeStream did not return after Shutdown")
		}
	})
	return s, reg, ln.Addr().String()
}

func dialStream(t testing.TB, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dialStreamSlow connects with a small receive buffer, so a client that
// does not read fills up quickly.
func dialStreamSlow(t testing.TB, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func writeAll(t testing.TB, conn net.Conn, p []byte) {
	t.Helper()
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(p); err != nil {
		t.Fatalf("client write: %v", err)
	}
}

func readExactly(t testing.TB, conn net.Conn, n int) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, n)
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return buf
}

// readToEOF reads until the server's EOF, failing if it has not come
// within d.
func readToEOF(t testing.TB, conn net.Conn, d time.Duration) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	all, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("no EOF within %v (read %d bytes)", d, len(all))
	}
	return all
}

// TestConnSizeClass: the Conn is what this package adds to an idle
// connection (doc.go, "Memory of an idle connection"); it must stay within
// the 320-byte malloc size class. Stream support added no field: its state
// lives in flag bits and in padding.
func TestConnSizeClass(t *testing.T) {
	var c Conn
	if n := unsafe.Sizeof(c); n > 320 {
		t.Fatalf("Conn is %d bytes, past the 320-byte size class", n)
	}
}

// TestStreamEcho: raw bytes go to the Session in chunks (never text, at most
// the read budget each) and Send writes raw bytes back, in order.
func TestStreamEcho(t *testing.T) {
	sh := newStreamHandler()
	var info struct {
		stream bool
		remote string
	}
	sh.onOpen = func(c *Conn) bool {
		info.stream, info.remote = c.Stream(), c.RemoteAddr()
		return true
	}
	s, reg, addr := startStream(t, Config{}, sh, nil)
	conn := dialStream(t, addr)
	writeAll(t, conn, []byte("hello"))
	sess := sh.waitOpened(t)
	if got := readExactly(t, conn, 5); string(got) != "hello" {
		t.Fatalf("echo %q", got)
	}
	if !info.stream || info.remote != conn.LocalAddr().String() {
		t.Errorf("Stream() = %v, RemoteAddr() = %q (client %s)", info.stream, info.remote, conn.LocalAddr())
	}
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	go func() { _, _ = conn.Write(big) }()
	if got := readExactly(t, conn, len(big)); !bytes.Equal(got, big) {
		t.Fatal("300 KiB echo differs")
	}
	sess.mu.Lock()
	chunks, maxChunk, text := sess.chunks, sess.maxChunk, sess.text
	sess.mu.Unlock()
	if text || maxChunk > readBudget || chunks < 2 {
		t.Errorf("chunks %d, largest %d (budget %d), text %v", chunks, maxChunk, readBudget, text)
	}
	if got := counterValue(t, reg, "gatecast_ws_connections", "transport", "tcp"); got != 1 || s.ConnCount() != 1 {
		t.Errorf("tcp connections gauge = %v, ConnCount = %d", got, s.ConnCount())
	}
	if got := counterValue(t, reg, "gatecast_ws_connections", "transport", "ws"); got != 0 {
		t.Errorf("ws connections gauge = %v", got)
	}
	if got := counterValue(t, reg, "gatecast_ws_handshakes_total", "result", "ok"); got != 0 {
		t.Errorf("a stream counted as a WebSocket handshake: %v", got)
	}
	eventually(t, "byte counters", func() bool {
		in := counterValue(t, reg, "gatecast_ws_bytes_received_total")
		out := counterValue(t, reg, "gatecast_ws_bytes_sent_total")
		return in == float64(5+len(big)) && out == in
	})
	conn.Close()
	sess.waitClosed(t)
	eventually(t, "gauge back to 0", func() bool {
		return counterValue(t, reg, "gatecast_ws_connections", "transport", "tcp") == 0 && s.ConnCount() == 0
	})
}

// TestStreamPacketSplitAcrossReads: a packet that arrives in several reads
// reaches the Session as several chunks, which it reassembles; several
// packets in one read come as one chunk.
func TestStreamPacketSplitAcrossReads(t *testing.T) {
	sh := newStreamHandler()
	var (
		mu      sync.Mutex
		partial []byte
		packets [][]byte
	)
	// Packets are a 2-byte big-endian length and that many bytes.
	sh.onData = func(_ *streamSession, p []byte) {
		mu.Lock()
		defer mu.Unlock()
		partial = append(partial, p...) // p is valid only during the call
		for len(partial) >= 2 {
			n := int(binary.BigEndian.Uint16(partial))
			if len(partial) < 2+n {
				break
			}
			packets = append(packets, append([]byte(nil), partial[2:2+n]...))
			partial = partial[2+n:]
		}
	}
	_, _, addr := startStream(t, Config{}, sh, nil)
	conn := dialStream(t, addr)
	conn.(*net.TCPConn).SetNoDelay(true)
	payload := bytes.Repeat([]byte("0123456789"), 300)
	pkt := binary.BigEndian.AppendUint16(nil, uint16(len(payload)))
	pkt = append(pkt, payload...)
	sess := (*streamSession)(nil)
	for i, cut := range [][2]int{{0, 1}, {1, 103}, {103, 2000}, {2000, len(pkt)}} {
		writeAll(t, conn, pkt[cut[0]:cut[1]])
		if i == 0 {
			sess = sh.waitOpened(t)
		}
		want := cut[1]
		eventually(t, "piece delivered", func() bool { return len(sess.received()) == want })
	}
	mu.Lock()
	if len(packets) != 1 || !bytes.Equal(packets[0], payload) {
		t.Fatalf("reassembled %d packets", len(packets))
	}
	mu.Unlock()
	sess.mu.Lock()
	chunks := sess.chunks
	sess.mu.Unlock()
	if chunks != 4 {
		t.Fatalf("%d chunks for 4 separate reads", chunks)
	}
	var three []byte
	for _, s := range []string{"a", "bc", "def"} {
		three = binary.BigEndian.AppendUint16(three, uint16(len(s)))
		three = append(three, s...)
	}
	writeAll(t, conn, three)
	eventually(t, "three packets", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(packets) == 4
	})
	mu.Lock()
	defer mu.Unlock()
	if string(packets[1]) != "a" || string(packets[2]) != "bc" || string(packets[3]) != "def" || len(partial) != 0 {
		t.Fatalf("packets %q, partial %q", packets[1:], partial)
	}
}

// TestStreamHandshakeTimeout: a stream that never sends, and one whose
// Session never calls Established, are closed at HandshakeTimeout; an
// established one stays.
func TestStreamHandshakeTimeout(t *testing.T) {
	sh := newStreamHandler()
	sh.onData = func(s *streamSession, p []byte) {
		if string(p) == "establish" {
			s.c.Established()
		}
		s.send(p)
	}
	s, reg, addr := startStream(t, Config{HandshakeTimeout: 150 * time.Millisecond}, sh, nil)

	silent := dialStream(t, addr)
	start := time.Now()
	talker := dialStream(t, addr)
	writeAll(t, talker, []byte("hi"))
	talkerSess := sh.waitOpened(t)
	good := dialStream(t, addr)
	writeAll(t, good, []byte("establish"))
	goodSess := sh.waitOpened(t)
	readExactly(t, good, len("establish"))

	if got := readToEOF(t, silent, 5*time.Second); len(got) != 0 {
		t.Fatalf("silent stream got %q", got)
	}
	if got := readToEOF(t, talker, 5*time.Second); string(got) != "hi" {
		t.Fatalf("unestablished stream got %q", got)
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Fatalf("closed after %v, before the handshake timeout", took)
	}
	talkerSess.waitClosed(t)
	time.Sleep(300 * time.Millisecond) // twice the handshake timeout
	writeAll(t, good, []byte("still there"))
	if got := readExactly(t, good, len("still there")); string(got) != "still there" {
		t.Fatalf("established stream: %q", got)
	}
	if goodSess.closeCount() != 0 {
		t.Fatal("established stream closed")
	}
	select {
	case <-sh.opened:
		t.Fatal("a Session opened for a stream that sent nothing")
	default:
	}
	eventually(t, "handshake timeouts counted", func() bool {
		return counterValue(t, reg, "gatecast_ws_closes_total", "reason", "handshake_timeout") == 2
	})
	if got := counterValue(t, reg, "gatecast_ws_handshakes_total", "result", "timeout"); got != 0 {
		t.Errorf("stream timeouts counted as WebSocket handshakes: %v", got)
	}
	if s.ConnCount() != 1 {
		t.Errorf("ConnCount = %d", s.ConnCount())
	}
}

// TestStreamIdleTimeout: once established, a silent stream is closed at the
// idle timeout (the server's, or its own SetIdleTimeout), and no WebSocket
// ping is ever written to it; input keeps it alive.
func TestStreamIdleTimeout(t *testing.T) {
	sh := newStreamHandler()
	sh.onData = func(s *streamSession, p []byte) {
		switch string(p) {
		case "establish":
			s.c.Established()
		case "short":
			s.c.Established()
			s.c.SetIdleTimeout(150 * time.Millisecond)
		}
		s.send(p)
	}
	// Pings would be due every 50 ms.
	_, reg, addr := startStream(t, Config{PingInterval: 50 * time.Millisecond, IdleTimeout: 500 * time.Millisecond, CloseTimeout: 200 * time.Millisecond}, sh, nil)
	conn := dialStream(t, addr)
	writeAll(t, conn, []byte("establish"))
	readExactly(t, conn, len("establish"))
	start := time.Now()
	if got := readToEOF(t, conn, 5*time.Second); len(got) != 0 {
		t.Fatalf("a silent stream was sent %q (a ping?)", got)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("idle close after %v, want about 500ms", took)
	}
	eventually(t, "idle close counted", func() bool {
		return counterValue(t, reg, "gatecast_ws_closes_total", "reason", "idle") == 1
	})

	// The per-connection override, far below the server's idle timeout.
	sh2 := newStreamHandler()
	sh2.onData = sh.onData
	_, _, addr2 := startStream(t, Config{PingInterval: 50 * time.Millisecond, IdleTimeout: time.Hour, CloseTimeout: 200 * time.Millisecond}, sh2, nil)
	short := dialStream(t, addr2)
	writeAll(t, short, []byte("short"))
	readExactly(t, short, len("short"))
	start = time.Now()
	long := dialStream(t, addr2)
	writeAll(t, long, []byte("establish"))
	readExactly(t, long, len("establish"))
	if got := readToEOF(t, short, 5*time.Second); len(got) != 0 {
		t.Fatalf("short idle stream was sent %q", got)
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > 2*time.Second {
		t.Fatalf("per-connection idle close after %v, want about 150ms", took)
	}
	// Input resets the per-connection timer.
	alive := dialStream(t, addr2)
	writeAll(t, alive, []byte("short"))
	readExactly(t, alive, len("short"))
	for range 8 {
		time.Sleep(50 * time.Millisecond)
		writeAll(t, alive, []byte("k"))
		readExactly(t, alive, 1)
	}
	// The server's timeout (an hour) still holds for the other one.
	writeAll(t, long, []byte("x"))
	if got := readExactly(t, long, 1); string(got) != "x" {
		t.Fatalf("long: %q", got)
	}
}

// TestIdleTimeoutOverrideWebSocket: SetIdleTimeout works on a WebSocket too:
// closed with 1001 "idle timeout", without pings (the protocol above keeps
// the connection alive).
func TestIdleTimeoutOverrideWebSocket(t *testing.T) {
	h := newTestHandler()
	h.onOpen = func(c *Conn, _ *Handshake) bool {
		c.SetIdleTimeout(150 * time.Millisecond)
		return true
	}
	s, _ := startServer(t, Config{PingInterval: 50 * time.Millisecond, IdleTimeout: time.Hour, CloseTimeout: 200 * time.Millisecond}, h)
	c := dialManual(t, s)
	h.waitOpened(t)
	start := time.Now()
	f, err := c.readFrame()
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.OpCode != ws.OpClose {
		t.Fatalf("got %v before the close, want no ping", f.Header.OpCode)
	}
	if code, reason := closeBody(f.Payload); code != 1001 || reason != "idle timeout" {
		t.Fatalf("close %d %q", code, reason)
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > 2*time.Second {
		t.Fatalf("closed after %v, want about 150ms", took)
	}
}

// TestStreamCloseOrdering: Close writes what is queued, then the peer reads
// EOF; CloseAfter's final bytes come after everything queued (more than one
// drain batch here), then EOF. The server keeps the connection until the
// peer's EOF (it only shut its write side).
func TestStreamCloseOrdering(t *testing.T) {
	sh := newStreamHandler()
	var finalReleased *atomic.Int32
	sh.onData = func(s *streamSession, p []byte) {
		switch string(p) {
		case "close":
			s.send([]byte("abc"))
			s.c.Close(0, "")
		case "close after":
			for i := range 40 { // 640 KiB: three drain batches
				s.send(bytes.Repeat([]byte{byte('A' + i%26)}, 16<<10))
			}
			final, released := newTrackedFrame(false, nil)
			final.B = append(final.B[:0], "FINAL"...)
			finalReleased = released
			s.c.CloseAfter(final, 0, "")
			if s.send([]byte("late")) {
				panic("Send accepted after CloseAfter")
			}
		}
	}
	s, reg, addr := startStream(t, Config{CloseTimeout: 5 * time.Second}, sh, nil)

	conn := dialStream(t, addr)
	writeAll(t, conn, []byte("close"))
	sess := sh.waitOpened(t)
	if got := readToEOF(t, conn, 5*time.Second); string(got) != "abc" {
		t.Fatalf("before EOF: %q, want abc", got)
	}
	if sess.closeCount() != 0 {
		t.Fatal("gone before the peer's EOF: the write side only should be shut")
	}
	conn.Close()
	sess.waitClosed(t) // at our EOF, not CloseTimeout (5s) later

	conn = dialStream(t, addr)
	writeAll(t, conn, []byte("close after"))
	sess = sh.waitOpened(t)
	var want []byte
	for i := range 40 {
		want = append(want, bytes.Repeat([]byte{byte('A' + i%26)}, 16<<10)...)
	}
	want = append(want, "FINAL"...)
	got := readToEOF(t, conn, 5*time.Second)
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes ending %q; want %d ending FINAL", len(got), got[max(0, len(got)-8):], len(want))
	}
	// The client may keep sending after our EOF: skipped, not delivered.
	writeAll(t, conn, []byte("ignored"))
	time.Sleep(50 * time.Millisecond)
	conn.Close()
	sess.waitClosed(t)
	if r := sess.received(); string(r) != "close after" {
		t.Fatalf("delivered %q after the close", r)
	}
	if n := finalReleased.Load(); n != 1 {
		t.Fatalf("final frame released %d times, want 1", n)
	}
	eventually(t, "server closes counted", func() bool {
		return counterValue(t, reg, "gatecast_ws_closes_total", "reason", "server") == 2 && s.reg.len() == 0
	})
}

// TestStreamLingerTimeout: a peer that never closes after our EOF is
// dropped CloseTimeout after the flush.
func TestStreamLingerTimeout(t *testing.T) {
	sh := newStreamHandler()
	sh.onData = func(s *streamSession, _ []byte) { s.c.Close(0, "") }
	_, _, addr := startStream(t, Config{CloseTimeout: 200 * time.Millisecond}, sh, nil)
	conn := dialStream(t, addr)
	writeAll(t, conn, []byte("x"))
	sess := sh.waitOpened(t)
	readToEOF(t, conn, 5*time.Second)
	start := time.Now()
	sess.waitClosed(t)
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Fatalf("dropped %v after EOF, before CloseTimeout", took)
	}
}

// TestCloseAfterAtHardLimit: the final frame is queued even when the outbox
// is at its hard limit (Send refuses), written last, and released once;
// after the close a final frame is released unwritten.
func TestCloseAfterAtHardLimit(t *testing.T) {
	sh := newStreamHandler()
	sh.onData = func(*streamSession, []byte) {}
	sh.onOpen = func(c *Conn) bool {
		// A small send buffer (no autotuning) on our side too: the drain
		// gets stuck after a few KiB.
		if fd, ok := c.nc.(interface{ Fd() int }); ok {
			_ = syscall.SetsockoptInt(fd.Fd(), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
		}
		return true
	}
	_, reg, addr := startStream(t, Config{OutboxLimit: 64 << 10, WriteTimeout: 5 * time.Second}, sh, nil)
	conn := dialStreamSlow(t, addr)
	writeAll(t, conn, []byte("x"))
	sess := sh.waitOpened(t)
	frame := bytes.Repeat([]byte("d"), 8<<10)
	// Send until refused, and still refused after a pause: the socket is
	// full and the drain stuck, so nothing queued can go out now.
	accepted := 0
	for stuck := false; !stuck; {
		if accepted > 100000 {
			t.Fatal("Send never refused to a client that does not read")
		}
		if sess.send(frame) {
			accepted++
			continue
		}
		time.Sleep(100 * time.Millisecond)
		if sess.send(frame) {
			accepted++
		} else {
			stuck = true
		}
	}
	if counterValue(t, reg, "gatecast_ws_frames_dropped_total", "reason", "slow_consumer") == 0 {
		t.Fatal("no frame dropped at the hard limit")
	}
	final, released := newTrackedFrame(false, nil)
	final.B = append(final.B[:0], "FINAL"...)
	sess.c.CloseAfter(final, 0, "")
	if n := released.Load(); n != 0 {
		t.Fatalf("final frame released %d times at the hard limit: refused", n)
	}
	got := readToEOF(t, conn, 10*time.Second)
	if len(got) != accepted*len(frame)+5 || !bytes.HasSuffix(got, []byte("FINAL")) || bytes.Count(got, []byte("F")) != 1 {
		t.Fatalf("read %d bytes ending %q; want %d ending FINAL", len(got), got[max(0, len(got)-8):], accepted*len(frame)+5)
	}
	eventually(t, "final released", func() bool { return released.Load() == 1 })

	again, releasedAgain := newTrackedFrame(false, nil)
	sess.c.CloseAfter(again, 0, "")
	if n := releasedAgain.Load(); n != 1 {
		t.Fatalf("final frame after the close released %d times, want 1", n)
	}
	conn.Close()
	sess.waitClosed(t)
}

// TestCloseAfterWebSocket: in WebSocket mode the final frame comes after the
// queued ones (more than one drain batch of them) and before the close
// frame.
func TestCloseAfterWebSocket(t *testing.T) {
	h := newTestHandler()
	h.onMessage = func(s *testSession, _ bool, p []byte) {
		for i := range 40 { // 640 KiB: three drain batches
			f := proto.AcquireFrame()
			f.B = AppendFrame(f.B[:0], false, bytes.Repeat([]byte{byte('A' + i%26)}, 16<<10))
			s.c.Send(f)
		}
		f := proto.AcquireFrame()
		f.B = AppendFrame(f.B[:0], false, []byte("queued"))
		s.c.Send(f)
		final := proto.AcquireFrame()
		final.B = AppendFrame(final.B[:0], false, []byte("last words"))
		s.c.CloseAfter(final, 4000, "bye")
	}
	s, _ := startServer(t, Config{}, h)
	c := dialManual(t, s)
	sess := h.waitOpened(t)
	c.send(false, []byte("go"))
	for i := range 40 {
		if m := c.expectMessage(); len(m.Payload) != 16<<10 || m.Payload[0] != byte('A'+i%26) {
			t.Fatalf("message %d: %d bytes of %q", i, len(m.Payload), m.Payload[:min(1, len(m.Payload))])
		}
	}
	if m := c.expectMessage(); string(m.Payload) != "queued" {
		t.Fatalf("first %q", m.Payload)
	}
	if m := c.expectMessage(); m.Header.OpCode != ws.OpBinary || string(m.Payload) != "last words" {
		t.Fatalf("second %v %q, want the final frame", m.Header.OpCode, m.Payload)
	}
	c.expectClose(4000, "bye")
	c.write(clientFrame(true, 0, opClose, []byte{0x0f, 0xa0}))
	c.expectEOF()
	sess.waitClosed(t)
}

// TestStreamAdmitInbound: a stream Session counts its messages with
// AdmitInbound: within the burst all pass; sustained over the rate they are
// dropped and counted, and the stream is closed (TCP) after the grace.
func TestStreamAdmitInbound(t *testing.T) {
	sh := newStreamHandler()
	var admitted, dropped atomic.Int64
	sh.onData = func(s *streamSession, p []byte) {
		for range p { // one message per byte
			if s.c.AdmitInbound() {
				admitted.Add(1)
			} else {
				dropped.Add(1)
			}
		}
	}
	_, reg, addr := startStream(t, Config{MaxInboundRate: 1000, InboundBurst: 500, InboundRateGrace: 300 * time.Millisecond}, sh, nil)
	conn := dialStream(t, addr)
	writeAll(t, conn, bytes.Repeat([]byte("m"), 400))
	sess := sh.waitOpened(t)
	eventually(t, "burst admitted", func() bool { return admitted.Load() == 400 })
	if d := counterValue(t, reg, "gatecast_ws_inbound_dropped_total", "reason", "rate_limit"); d != 0 || dropped.Load() != 0 {
		t.Fatalf("dropped %v (%d) within the burst", d, dropped.Load())
	}
	eventually(t, "admitted messages counted", func() bool {
		return counterValue(t, reg, "gatecast_ws_messages_received_total") == 400
	})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		chunk := bytes.Repeat([]byte("m"), 1000)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := conn.Write(chunk); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	readToEOF(t, conn, 5*time.Second)
	sess.waitClosed(t)
	if dropped.Load() == 0 || counterValue(t, reg, "gatecast_ws_inbound_dropped_total", "reason", "rate_limit") == 0 {
		t.Fatal("no message dropped")
	}
	eventually(t, "rate-limit close counted", func() bool {
		return counterValue(t, reg, "gatecast_ws_closes_total", "reason", "rate_limit") == 1
	})
}

// TestAdmitInboundWebSocketNoDoubleCount: a WebSocket message took its token
// on receipt; AdmitInbound from OnMessage takes none.
func TestAdmitInboundWebSocketNoDoubleCount(t *testing.T) {
	h := newTestHandler()
	var admitted, refused atomic.Int64
	h.onMessage = func(s *testSession, _ bool, _ []byte) {
		if s.c.AdmitInbound() {
			admitted.Add(1)
		} else {
			refused.Add(1)
		}
	}
	s, reg := startServer(t, Config{MaxInboundRate: 10, InboundBurst: 5}, h)
	c := dialManual(t, s)
	h.waitOpened(t)
	c.write(bytes.Repeat(clientFrame(true, 0, opText, []byte("x")), 5)) // exactly the burst
	eventually(t, "messages delivered", func() bool { return admitted.Load()+refused.Load() == 5 })
	if refused.Load() != 0 || counterValue(t, reg, "gatecast_ws_inbound_dropped_total", "reason", "rate_limit") != 0 {
		t.Fatalf("refused %d: a message was counted twice", refused.Load())
	}
	if got := counterValue(t, reg, "gatecast_ws_messages_received_total"); got != 5 {
		t.Fatalf("messages received %v, want 5", got)
	}
}

// TestStreamInputPause: a stream Session that does not keep up with its
// client has its reads paused at InputBufferLimit: the client's writes
// stall instead of the server buffering them, and every byte it wrote is
// eventually delivered, in order.
func TestStreamInputPause(t *testing.T) {
	sh := newStreamHandler()
	sh.noRecord = true // the heap is measured
	var got atomic.Int64
	var slow atomic.Bool
	var bad atomic.Bool
	slow.Store(true)
	sh.onData = func(_ *streamSession, p []byte) {
		off := got.Load()
		for i, b := range p {
			if b != byte((off+int64(i))%251) {
				bad.Store(true)
			}
		}
		got.Add(int64(len(p)))
		if slow.Load() {
			time.Sleep(2 * time.Millisecond)
		}
	}
	_, reg, addr := startStream(t, Config{MaxInboundRate: Unlimited, InputBufferLimit: 64 << 10}, sh, nil)
	conn := dialStream(t, addr)
	chunk := make([]byte, 251*256) // whole periods: the pattern continues across chunks
	for i := range chunk {
		chunk[i] = byte(i % 251)
	}
	base := heapInUse()
	stop := make(chan struct{})
	var written atomic.Int64
	errc := make(chan error, 1)
	go func() { errc <- flood(conn, chunk, stop, &written) }()
	// flood finishes a 6-byte frame at stop; that only adds bytes of the pattern.
	sh.waitOpened(t)
	var peak uint64
	for range 25 {
		time.Sleep(40 * time.Millisecond)
		if h := heapInUse(); h > peak {
			peak = h
		}
	}
	slow.Store(false)
	close(stop)
	if err := <-errc; err != nil {
		t.Fatalf("flood: %v", err)
	}
	w := written.Load()
	t.Logf("client wrote %d MiB in 1s, session got %d MiB; heap %d -> peak %d MiB", w>>20, got.Load()>>20, base>>20, peak>>20)
	if peak > base+32<<20 {
		t.Fatalf("heap grew from %d to %d MiB: input is not bounded", base>>20, peak>>20)
	}
	eventually(t, "every byte delivered", func() bool { return got.Load() == w })
	if bad.Load() {
		t.Fatal("bytes delivered out of order")
	}
	if counterValue(t, reg, "gatecast_ws_input_paused_total") == 0 {
		t.Fatal("reads were never paused at the input limit")
	}
}

// TestShutdownClosesStreams: Shutdown flushes and closes every stream (no
// close frame: queued bytes, then EOF), drops the ones without a Session,
// closes WebSocket connections with 1001, and makes Serve and ServeStream
// return nil.
func TestShutdownClosesStreams(t *testing.T) {
	h := newTestHandler()
	sh := newStreamHandler()
	sh.onData = func(s *streamSession, p []byte) { s.c.Established() }
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}, CloseTimeout: 300 * time.Millisecond}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served, streamServed := make(chan error, 1), make(chan error, 1)
	go func() { served <- s.Serve() }()
	go func() { streamServed <- s.ServeStream(ln, sh) }()

	wsc := dialManual(t, s)
	wsSess := h.waitOpened(t)
	polite := dialStream(t, ln.Addr().String()) // closes at our EOF
	writeAll(t, polite, []byte("hello"))
	politeSess := sh.waitOpened(t)
	mute := dialStream(t, ln.Addr().String()) // never closes: dropped after CloseTimeout
	writeAll(t, mute, []byte("hello"))
	muteSess := sh.waitOpened(t)
	silent := dialStream(t, ln.Addr().String()) // no bytes: no Session
	eventually(t, "all accepted", func() bool { return s.reg.len() == 4 })

	queued := bytes.Repeat([]byte("q"), 100<<10)
	if !politeSess.send(queued) {
		t.Fatal("Send refused")
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	if got := readToEOF(t, polite, 5*time.Second); !bytes.Equal(got, queued) {
		t.Fatalf("polite stream read %d bytes before EOF, want the %d queued", len(got), len(queued))
	}
	polite.Close()
	wsc.expectClose(1001, "server shutting down")
	wsc.write(clientFrame(true, 0, opClose, []byte{0x03, 0xe9}))
	wsc.expectEOF()
	if got := readToEOF(t, mute, 5*time.Second); len(got) != 0 {
		t.Fatalf("mute stream read %q", got)
	}
	readToEOF(t, silent, 5*time.Second)
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for name, ch := range map[string]chan error{"Serve": served, "ServeStream": streamServed} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("%s returned %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s did not return", name)
		}
	}
	if wsSess.closeCount() != 1 || politeSess.closeCount() != 1 || muteSess.closeCount() != 1 || s.ConnCount() != 0 {
		t.Fatalf("OnClose %d %d %d, ConnCount %d", wsSess.closeCount(), politeSess.closeCount(), muteSess.closeCount(), s.ConnCount())
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("stream listener still accepting after Shutdown")
	}
	// After Shutdown, ServeStream returns at once and closes its listener.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServeStream(ln2, sh); err != nil {
		t.Fatalf("ServeStream after Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln2.Addr().String(), time.Second); err == nil {
		t.Error("listener handed to ServeStream after Shutdown still open")
	}
}

// TestStreamOpenRejects: OpenStream returning nil closes the stream; what
// the handler queued first is still written.
func TestStreamOpenRejects(t *testing.T) {
	sh := newStreamHandler()
	sh.onOpen = func(c *Conn) bool {
		f := proto.AcquireFrame()
		f.B = append(f.B[:0], "no"...)
		c.CloseAfter(f, 0, "")
		return false
	}
	s, _, addr := startStream(t, Config{}, sh, nil)
	conn := dialStream(t, addr)
	writeAll(t, conn, []byte("let me in"))
	if got := readToEOF(t, conn, 5*time.Second); string(got) != "no" {
		t.Fatalf("rejected stream read %q", got)
	}
	conn.Close()
	eventually(t, "connection gone", func() bool { return s.reg.len() == 0 && s.ConnCount() == 0 })
}

// TestConnSendFieldsShareALine: what queuing a frame touches sits in the
// Conn's first 64 bytes (a Conn starts on a line: 320 = 5 × 64), so a
// fan-out misses one line per connection; see Conn.
func TestConnSendFieldsShareALine(t *testing.T) {
	var c Conn
	for name, end := range map[string]uintptr{
		"srv":         unsafe.Offsetof(c.srv) + unsafe.Sizeof(c.srv),
		"mu":          unsafe.Offsetof(c.mu) + unsafe.Sizeof(c.mu),
		"tail":        unsafe.Offsetof(c.tail) + unsafe.Sizeof(c.tail),
		"queued":      unsafe.Offsetof(c.queued) + unsafe.Sizeof(c.queued),
		"flags":       unsafe.Offsetof(c.flags) + unsafe.Sizeof(c.flags),
		"queuedBytes": unsafe.Offsetof(c.queuedBytes) + unsafe.Sizeof(c.queuedBytes),
		"inflight":    unsafe.Offsetof(c.inflight) + unsafe.Sizeof(c.inflight),
		"credit":      unsafe.Offsetof(c.credit) + unsafe.Sizeof(c.credit),
	} {
		if end > 64 {
			t.Errorf("Conn.%s ends at byte %d, past the first cache line", name, end)
		}
	}
	if n := unsafe.Sizeof(c); n%64 != 0 {
		t.Errorf("Conn is %d bytes: not a whole number of lines, so a Conn may not start on one", n)
	}
	var s outSegment
	if unsafe.Sizeof(s) != 128 || unsafe.Offsetof(s.frames) != 16 {
		t.Errorf("outSegment is %d bytes with frames at %d: want 128 with the header first", unsafe.Sizeof(s), unsafe.Offsetof(s.frames))
	}
}
