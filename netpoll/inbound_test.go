package netpoll

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	cwnetpoll "github.com/cloudwego/netpoll"

	"github.com/gatecast/gatecast/proto"
)

// floodChunk is 64 KiB of 6-byte masked empty text frames: the cheapest
// frames a client can make the server decode.
func floodChunk() []byte {
	one := clientFrame(true, 0, opText, nil)
	return bytes.Repeat(one, (64<<10)/len(one))
}

// flood writes chunk to conn until it fails or stop is closed, and returns
// how many bytes went out. Each write has a deadline, so a server that stops
// reading (TCP window closed) ends it too.
func flood(conn net.Conn, chunk []byte, stop <-chan struct{}, written *atomic.Int64) error {
	rest := chunk
	for {
		select {
		case <-stop:
			// Finish the frame a partial write left open (the chunk is whole
			// 6-byte frames), so that every byte written belongs to a frame.
			if r := len(rest) % 6; r != 0 {
				_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
				n, err := conn.Write(rest[:r])
				written.Add(int64(n))
				return err
			}
			return nil
		default:
		}
		if len(rest) == 0 {
			rest = chunk
		}
		_ = conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := conn.Write(rest)
		rest = rest[n:] // a partial write continues mid-frame, or the stream would be garbage
		written.Add(int64(n))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // window closed: the server paused reading; keep pushing
			}
			return err
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestRefusedFloodGoneWithinCloseTimeout is issue 9's critical finding: a
// client refused at Open (invalid token: 4003) that streams frames as fast
// as it can must be gone within the close timeout, not live on while the
// server decodes its input, and must not grow the server's memory.
func TestRefusedFloodGoneWithinCloseTimeout(t *testing.T) {
	h := newTestHandler()
	h.onOpen = func(c *Conn, _ *Handshake) bool {
		c.Close(4003, "invalid token")
		return false
	}
	s, _ := startServer(t, Config{CloseTimeout: 500 * time.Millisecond}, h)
	base := heapInUse()
	const conns = 4
	done := make(chan error, conns)
	stop := make(chan struct{})
	var written atomic.Int64
	start := time.Now()
	for range conns {
		c := dialManual(t, s)
		go func() { done <- flood(c.conn, floodChunk(), stop, &written) }()
	}
	var peak uint64
	ended := 0
	deadline := time.After(10 * time.Second)
	for ended < conns {
		select {
		case <-done:
			ended++
		case <-deadline:
			close(stop)
			t.Fatalf("%d of %d refused flooding connections still open after 10s (close timeout 500ms)", conns-ended, conns)
		case <-time.After(20 * time.Millisecond):
			if h := heapInUse(); h > peak {
				peak = h
			}
		}
	}
	close(stop)
	took := time.Since(start)
	t.Logf("refused connections gone after %v; client wrote %d MiB; heap in use %d -> peak %d MiB",
		took.Round(time.Millisecond), written.Load()>>20, base>>20, peak>>20)
	if peak > base+64<<20 {
		t.Fatalf("heap grew from %d to %d MiB under the flood of refused connections", base>>20, peak>>20)
	}
	eventually(t, "connections gone", func() bool { return s.reg.len() == 0 })
}

// TestAuthenticatedFloodPushesBack: a session whose client sends faster than
// it is served has its reads paused at the input limit: the client's writes
// stall (TCP pushes back) instead of the server buffering them, and every
// byte the client managed to write is eventually decoded.
func TestAuthenticatedFloodPushesBack(t *testing.T) {
	h := newTestHandler()
	var got atomic.Int64
	var slow atomic.Bool
	slow.Store(true)
	h.onMessage = func(_ *testSession, _ bool, _ []byte) {
		got.Add(1)
		if slow.Load() {
			time.Sleep(20 * time.Microsecond) // a slow consumer of its own input
		}
	}
	s, reg := startServer(t, Config{MaxInboundRate: Unlimited, InputBufferLimit: 64 << 10}, h)
	c := dialManual(t, s)
	h.waitOpened(t)
	base := heapInUse()
	stop := make(chan struct{})
	var written atomic.Int64
	errc := make(chan error, 1)
	go func() { errc <- flood(c.conn, floodChunk(), stop, &written) }()
	var peak uint64
	for range 50 {
		time.Sleep(40 * time.Millisecond)
		if h := heapInUse(); h > peak {
			peak = h
		}
	}
	slow.Store(false) // the flooder's last partial frame must be able to go out
	close(stop)
	if err := <-errc; err != nil {
		t.Fatalf("flood: %v", err)
	}
	// Without read pausing the client writes at memory speed (gigabytes in
	// two seconds); paused, only the kernel's socket buffers and the input
	// limit hold what the session has not decoded yet.
	w := written.Load()
	t.Logf("client wrote %d MiB in 2s, session decoded %d frames; heap %d -> peak %d MiB", w>>20, got.Load(), base>>20, peak>>20)
	if peak > base+32<<20 {
		t.Fatalf("heap grew from %d to %d MiB: input is not bounded", base>>20, peak>>20)
	}
	frames := w / 6
	deadline := time.Now().Add(20 * time.Second)
	for got.Load() != frames && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := got.Load(); n != frames {
		t.Fatalf("decoded %d frames of the %d written", n, frames)
	}
	if counterValue(t, reg, "gatecast_ws_input_paused_total") == 0 {
		t.Fatal("reads were never paused at the input limit")
	}
}

// TestInboundRateLimit: beyond its rate a connection's messages are dropped
// and counted; sustained, it is closed with 1008.
func TestInboundRateLimit(t *testing.T) {
	h := newTestHandler()
	var got atomic.Int64
	h.onMessage = func(_ *testSession, _ bool, _ []byte) { got.Add(1) }
	s, reg := startServer(t, Config{MaxInboundRate: 1000, InboundBurst: 500, InboundRateGrace: 300 * time.Millisecond}, h)
	c := dialManual(t, s)
	h.waitOpened(t)
	// A burst within the bucket passes whole.
	one := clientFrame(true, 0, opText, []byte("x"))
	c.write(bytes.Repeat(one, 400))
	eventually(t, "burst delivered", func() bool { return got.Load() == 400 })
	if d := counterValue(t, reg, "gatecast_ws_inbound_dropped_total", "reason", "rate_limit"); d != 0 {
		t.Fatalf("dropped %v within the burst", d)
	}
	// Far over the rate for longer than the grace: drops, then 1008.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		chunk := bytes.Repeat(one, 1000)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.conn.Write(chunk); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	c.expectClose(1008, "inbound message rate exceeded")
	if d := counterValue(t, reg, "gatecast_ws_inbound_dropped_total", "reason", "rate_limit"); d == 0 {
		t.Fatal("no message counted as dropped")
	}
	eventually(t, "close counted", func() bool {
		return counterValue(t, reg, "gatecast_ws_closes_total", "reason", "rate_limit") == 1
	})
}

// TestRateLimitPing: pings count against the rate (each would cost a pong).
func TestRateLimitPing(t *testing.T) {
	h := newTestHandler()
	s, reg := startServer(t, Config{MaxInboundRate: 10, InboundBurst: 5}, h)
	c := dialManual(t, s)
	h.waitOpened(t)
	c.write(bytes.Repeat(clientFrame(true, 0, opPing, []byte("p")), 50))
	eventually(t, "pings dropped", func() bool {
		return counterValue(t, reg, "gatecast_ws_inbound_dropped_total", "reason", "rate_limit") >= 40
	})
}

// TestOutboxByteLimit: a subscriber that does not read is cut off by bytes,
// not only by frame count.
func TestOutboxByteLimit(t *testing.T) {
	h := newTestHandler()
	s, reg := startServer(t, Config{OutboxLimit: 1 << 20, SlowConsumer: CloseSlow, WriteTimeout: 300 * time.Millisecond}, h)
	c := dialManual(t, s)
	ts := h.waitOpened(t)
	_ = c
	payload := bytes.Repeat([]byte("x"), 32<<10)
	// Keep sending (as a publisher would) until the connection goes: the
	// socket buffers take a few MiB, then the outbox fills to its byte
	// limit and frames are refused.
	refused := 0
	for i := 0; i < 20000 && ts.closeCount() == 0; i++ {
		f := proto.AcquireFrame()
		f.B = AppendFrame(f.B[:0], true, payload)
		if !ts.c.Send(f) {
			refused++
			time.Sleep(time.Millisecond)
		}
	}
	if refused == 0 {
		t.Fatal("nothing refused to a subscriber that does not read")
	}
	if counterValue(t, reg, "gatecast_ws_frames_dropped_total", "reason", "slow_consumer") == 0 {
		t.Fatal("no frame dropped at the byte limit")
	}
	// It does not read at all: its socket makes no progress, and the write
	// timeout drops it.
	eventually(t, "stuck consumer dropped", func() bool {
		return counterValue(t, reg, "gatecast_ws_closes_total", "reason", "write_timeout") == 1
	})
}

// TestReadPauseAvailable guards the netpoll/upstream patch: the connection
// netpoll hands us must offer the input limit, or input is unbounded again.
func TestReadPauseAvailable(t *testing.T) {
	h := newTestHandler()
	var ok atomic.Bool
	h.onOpen = func(c *Conn, _ *Handshake) bool {
		_, isLimiter := c.nc.(inputLimiter)
		_, isPauser := c.nc.(interface {
			PauseRead() error
			ResumeRead() error
		})
		ok.Store(isLimiter && isPauser)
		return true
	}
	s, _ := startServer(t, Config{}, h)
	dialManual(t, s)
	h.waitOpened(t)
	if !ok.Load() {
		t.Fatalf("netpoll connection lacks the read-pause patch (is the replace directive in go.mod?)")
	}
	var _ cwnetpoll.Connection // the patched module is the one imported
}

// TestAcceptPausedNearFDLimit: with the open-files reserve reached, new
// clients wait in the accept queue (their upgrade gets no answer) instead of
// taking the descriptors the admin listener needs; once connections close,
// the waiting client is served.
func TestAcceptPausedNearFDLimit(t *testing.T) {
	h := newTestHandler()
	s, reg := startServer(t, Config{}, h)
	if s.fds.limit.Load() == 0 || countOpenFiles() < 0 {
		t.Skip("no RLIMIT_NOFILE or /proc/self/fd")
	}
	var clients []*client
	for range 2 {
		clients = append(clients, dialManual(t, s))
		h.waitOpened(t)
	}
	// Leave no headroom: the reserve is everything not open now.
	s.recountFDs()
	s.fds.reserve.Store(s.fds.limit.Load() - s.fds.other.Load() - int64(s.reg.len()))
	// The next ones wait: TCP connects (kernel backlog), no 101 comes.
	late := dialRaw(t, s)
	if _, err := late.Write([]byte(upgradeRequest("/ws", ""))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "accepting paused", func() bool { return counterValue(t, reg, "gatecast_ws_accept_paused_total") >= 1 })
	_ = late.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _ := late.Read(make([]byte, 1)); n != 0 {
		t.Fatal("a connection was served past the open-files reserve")
	}
	for _, c := range clients {
		c.conn.Close()
	}
	_ = late.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 12)
	if _, err := io.ReadFull(late, buf); err != nil || string(buf) != "HTTP/1.1 101" {
		t.Fatalf("waiting client not served after room came back: %q %v", buf, err)
	}
}

// TestInputTotalLimit: past the process-wide bound, connections with input
// are paused until the total drains, and nothing is lost.
func TestInputTotalLimit(t *testing.T) {
	h := newTestHandler()
	var got atomic.Int64
	var slow atomic.Bool
	slow.Store(true)
	h.onMessage = func(_ *testSession, _ bool, _ []byte) {
		got.Add(1)
		if slow.Load() {
			time.Sleep(10 * time.Microsecond)
		}
	}
	s, reg := startServer(t, Config{MaxInboundRate: Unlimited, InputBufferLimit: 64 << 10, InputTotalLimit: 96 << 10}, h)
	stop := make(chan struct{})
	var written atomic.Int64
	errc := make(chan error, 3)
	for range 3 {
		c := dialManual(t, s)
		h.waitOpened(t)
		go func() { errc <- flood(c.conn, floodChunk(), stop, &written) }()
	}
	eventually(t, "a connection paused for the total", func() bool {
		s.inputMu.Lock()
		defer s.inputMu.Unlock()
		return len(s.inputPaused) > 0
	})
	if counterValue(t, reg, "gatecast_ws_input_paused_total") == 0 {
		t.Fatal("pause not counted")
	}
	slow.Store(false)
	close(stop)
	for range 3 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	frames := written.Load() / 6
	deadline := time.Now().Add(20 * time.Second)
	for got.Load() != frames && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := got.Load(); n != frames {
		t.Fatalf("decoded %d of %d frames", n, frames)
	}
	eventually(t, "nothing held", func() bool { return s.inputHeld.Load() == 0 })
}
