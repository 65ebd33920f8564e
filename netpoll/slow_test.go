package netpoll

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/gatecast/gatecast/proto"
)

// dialSlow upgrades over a socket whose receive buffer is pinned small
// before connecting, so a client that does not read fills up quickly.
func dialSlow(t *testing.T, s *Server) *client {
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
	conn, err := d.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte(upgradeRequest("/ws", ""))); err != nil {
		t.Fatal(err)
	}
	// Read exactly the 101 response (it ends the input for now).
	resp := make([]byte, 0, 256)
	buf := make([]byte, 1)
	for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(buf); err != nil {
			t.Fatal(err)
		}
		resp = append(resp, buf[0])
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) {
		t.Fatalf("response %q", resp)
	}
	return &client{t: t, conn: conn, r: conn}
}

// countFrames reads data frames on c until stop, counting them and checking
// their size; it returns the close frame if one arrives.
func countFrames(c *client, size int, got *atomic.Int64) (closeFrame *ws.Frame) {
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := ws.ReadFrame(c.r)
		if err != nil {
			return nil
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			return &f
		case ws.OpBinary:
			if len(f.Payload) != size {
				return nil
			}
			got.Add(1)
		}
	}
}

func TestSlowConsumer(t *testing.T) {
	const (
		frameSize = 16 << 10
		burst     = 16
		bursts    = 64
	)
	payload := bytes.Repeat([]byte{0xab}, frameSize)
	for _, policy := range []SlowConsumerPolicy{DropNewest} {
		t.Run(policy.String(), func(t *testing.T) {
			h := newTestHandler()
			s, reg := startServer(t, Config{OutboxLimit: 32 * frameSize, SlowConsumer: policy, WriteTimeout: time.Minute}, h)
			fast := dialManual(t, s)
			fastSess := h.waitOpened(t)
			slow := dialSlow(t, s)
			slowSess := h.waitOpened(t)

			var fastGot atomic.Int64
			fastDone := make(chan struct{})
			go func() {
				defer close(fastDone)
				countFrames(fast, frameSize, &fastGot)
			}()

			slowAccepted, slowRefused := 0, 0
			sent := make(chan struct{})
			go func() {
				defer close(sent)
				for b := range bursts {
					for range burst {
						f := proto.AcquireFrame()
						f.B = AppendFrame(f.B[:0], false, payload)
						f.Retain()
						if !fastSess.c.Send(f) {
							t.Error("fast client's frame refused")
						}
						if slowSess.c.Send(f) {
							slowAccepted++
						} else {
							slowRefused++
						}
					}
					want := int64((b + 1) * burst)
					deadline := time.Now().Add(10 * time.Second)
					for fastGot.Load() < want && time.Now().Before(deadline) {
						time.Sleep(100 * time.Microsecond)
					}
				}
			}()
			select {
			case <-sent:
			case <-time.After(60 * time.Second):
				t.Fatal("Send blocked")
			}
			if got := fastGot.Load(); got != bursts*burst {
				t.Fatalf("fast client received %d of %d frames", got, bursts*burst)
			}
			if slowRefused == 0 {
				t.Fatal("slow client never refused a frame: the test did not fill its outbox")
			}
			dropped := counterValue(t, reg, "gatecast_ws_frames_dropped_total", "reason", "slow_consumer")
			slowClosed := counterValue(t, reg, "gatecast_ws_slow_consumers_closed_total")

			switch policy {
			case DropNewest:
				if dropped != float64(slowRefused) || slowClosed != 0 {
					t.Fatalf("dropped metric %v (refused %d), slow closed %v", dropped, slowRefused, slowClosed)
				}
				if slowSess.closeCount() != 0 {
					t.Fatal("DropNewest closed the slow client")
				}
				// The slow client catches up and receives later frames.
				var slowGot atomic.Int64
				go countFrames(slow, frameSize, &slowGot)
				eventually(t, "slow client drains its backlog", func() bool { return slowGot.Load() == int64(slowAccepted) })
				f := proto.AcquireFrame()
				f.B = AppendFrame(f.B[:0], false, payload)
				if !slowSess.c.Send(f) {
					t.Fatal("caught-up client still refused")
				}
				eventually(t, "new frame", func() bool { return slowGot.Load() == int64(slowAccepted)+1 })
			}
			fast.conn.Close()
			<-fastDone
		})
	}
}

// TestSlowConsumerClosePolicy: a consumer that reads, but slower than it is
// sent to, stays at its outbox limit; after WriteTimeout there the CloseSlow
// policy closes it with 1008, after everything that was queued.
func TestSlowConsumerClosePolicy(t *testing.T) {
	h := newTestHandler()
	s, reg := startServer(t, Config{OutboxLimit: 256 << 10, SlowConsumer: CloseSlow, WriteTimeout: time.Second}, h)
	c := dialManual(t, s)
	sess := h.waitOpened(t)
	payload := bytes.Repeat([]byte{7}, 16<<10)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			f := proto.AcquireFrame()
			f.B = AppendFrame(f.B[:0], false, payload)
			if !sess.c.Send(f) {
				if sess.c.flags.Load()&fClosing != 0 {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}
	}()
	// Read slowly: 64 KiB every 20 ms.
	buf := make([]byte, 64<<10)
	var seen []byte
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.r.Read(buf)
		if err != nil {
			break
		}
		seen = append(seen, buf[:n]...)
		seen = seen[max(0, len(seen)-64):] // keep the tail: the close frame ends the stream
		time.Sleep(20 * time.Millisecond)
	}
	if i := bytes.LastIndex(seen, []byte{0x88}); i < 0 || !bytes.Contains(seen[i:], []byte("slow consumer")) {
		t.Fatalf("no 1008 slow consumer close frame at the end of the stream (last bytes %q); closes: write_timeout %v server %v peer %v; dropped %v",
			seen[max(0, len(seen)-24):], counterValue(t, reg, "gatecast_ws_closes_total", "reason", "write_timeout"),
			counterValue(t, reg, "gatecast_ws_closes_total", "reason", "server"), counterValue(t, reg, "gatecast_ws_closes_total", "reason", "peer"),
			counterValue(t, reg, "gatecast_ws_frames_dropped_total", "reason", "slow_consumer"))
	}
	if got := counterValue(t, reg, "gatecast_ws_slow_consumers_closed_total"); got != 1 {
		t.Fatalf("slow consumers closed = %v", got)
	}
	if counterValue(t, reg, "gatecast_ws_frames_dropped_total", "reason", "slow_consumer") == 0 {
		t.Fatal("no frame dropped at the limit")
	}
}

func TestWriteTimeoutDropsStuckClient(t *testing.T) {
	h := newTestHandler()
	s, reg := startServer(t, Config{WriteTimeout: 100 * time.Millisecond}, h)
	slow := dialSlow(t, s)
	sess := h.waitOpened(t)
	payload := bytes.Repeat([]byte{1}, 64<<10)
	for i := 0; i < 200 && sess.closeCount() == 0; i++ {
		f := proto.AcquireFrame()
		f.B = AppendFrame(f.B[:0], false, payload)
		sess.c.Send(f)
		time.Sleep(time.Millisecond)
	}
	sess.waitClosed(t)
	if got := counterValue(t, reg, "gatecast_ws_closes_total", "reason", "write_timeout"); got != 1 {
		t.Fatalf("write_timeout closes = %v", got)
	}
	_ = slow
}

// TestOnCloseExactlyOnce races every close path against concurrent Sends:
// each session gets exactly one OnClose, no OnMessage after it, and every
// reference handed to Send is released exactly once.
func TestOnCloseExactlyOnce(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{CloseTimeout: 100 * time.Millisecond, OutboxLimit: 64 << 10}, h)
	const conns = 40
	type conn struct {
		c     *client
		sess  *testSession
		frame *proto.Frame
		rel   *atomic.Int32
		sends atomic.Int32
	}
	all := make([]*conn, conns)
	for i := range all {
		c := dialManual(t, s)
		sess := h.waitOpened(t)
		f, rel := newTrackedFrame(true, []byte("racing frame"))
		all[i] = &conn{c: c, sess: sess, frame: f, rel: rel}
	}
	var wg sync.WaitGroup
	for i, cn := range all {
		wg.Add(3)
		go func() { // sender
			defer wg.Done()
			for range 300 {
				cn.frame.Retain()
				cn.sends.Add(1)
				if !cn.sess.c.Send(cn.frame) && rand.IntN(4) == 0 {
					return
				}
			}
		}()
		go func() { // client: reads, sends messages, then leaves one way or another
			defer wg.Done()
			go func() {
				for range 20 {
					if _, err := cn.c.conn.Write(clientFrame(true, 0, opText, []byte("msg"))); err != nil {
						return
					}
				}
			}()
			buf := make([]byte, 4096)
			for range rand.IntN(20) {
				_ = cn.c.conn.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := cn.c.conn.Read(buf); err != nil {
					break
				}
			}
			switch i % 4 {
			case 0:
				cn.c.conn.Close() // abrupt
			case 1:
				_, _ = cn.c.conn.Write(clientFrame(true, 0, opClose, []byte{0x03, 0xe8}))
			case 2:
				_, _ = cn.c.conn.Write([]byte{0x81, 0x01, 'x'}) // unmasked: protocol error
			}
			_ = cn.c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			for {
				if _, err := cn.c.conn.Read(buf); err != nil {
					return
				}
			}
		}()
		go func() { // server-side closer
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
			cn.sess.c.Close(4000, "racing close")
		}()
	}
	wg.Wait()
	for _, cn := range all {
		cn.sess.waitClosed(t)
	}
	eventually(t, "all connections gone", func() bool { return s.reg.len() == 0 })
	time.Sleep(50 * time.Millisecond) // any late (wrong) second OnClose would show now
	for i, cn := range all {
		cn.sess.mu.Lock()
		closes, after := cn.sess.closes, cn.sess.afterClose
		cn.sess.mu.Unlock()
		if closes != 1 || after != 0 {
			t.Errorf("conn %d: %d OnClose calls, %d OnMessage after OnClose", i, closes, after)
		}
		if cn.sess.concurrency.Load() > 1 {
			t.Errorf("conn %d: concurrent OnMessage calls", i)
		}
		if got, want := cn.rel.Load(), cn.sends.Load(); got != want {
			t.Errorf("conn %d: %d references released for %d Sends", i, got, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
