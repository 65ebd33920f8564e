package netpoll

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	cwnetpoll "github.com/cloudwego/netpoll"

	"github.com/gatecast/gatecast/proto"
)

// frameCounter reads a stream of fixed-size server frames and signals each
// complete one on got.
func frameCounter(r io.Reader, frameLen int, got chan<- struct{}) {
	buf := make([]byte, 64<<10)
	pending := 0
	for {
		n, err := r.Read(buf)
		if err != nil {
			return
		}
		pending += n
		for pending >= frameLen {
			pending -= frameLen
			got <- struct{}{}
		}
	}
}

// TestSendDrainAllocs: Send of a frame and its drain (Malloc + copy into
// netpoll's buffer, Release, Flush to the socket) allocate nothing in
// steady state, over a real loopback connection.
func TestSendDrainAllocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("real socket; allocation counts need a build without -race")
	}
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	c := dialManual(t, s)
	sess := h.waitOpened(t)
	payload := []byte(`{"tag":"sensors/room1/temperature","message":21.5}`)
	frameLen := len(AppendFrame(nil, true, payload))
	got := make(chan struct{}, 16)
	go frameCounter(c.r, frameLen, got)

	timeout := time.NewTimer(time.Hour) // reused: time.After would allocate
	send := func() {
		f := proto.AcquireFrame()
		f.B = AppendFrame(f.B[:0], true, payload)
		if !sess.c.Send(f) {
			t.Fatal("Send refused")
		}
		timeout.Reset(5 * time.Second)
		select {
		case <-got:
		case <-timeout.C:
			t.Fatal("frame not received")
		}
	}
	for range 200 { // warm pools and goroutine free lists
		send()
	}
	if allocs := testing.AllocsPerRun(500, send); allocs != 0 {
		t.Fatalf("Send + drain: %v allocations per frame, want 0", allocs)
	}
}

// TestReceiveAllocs: decoding a complete small masked text frame from
// netpoll's input buffer and delivering it to the Session (the whole
// per-connection read path: frame reader, Conn, metrics) allocates nothing
// in steady state. The buffer is a netpoll LinkBuffer, the same type a
// connection's Reader is, fed by the test instead of the poller.
func TestReceiveAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race")
	}
	h := newTestHandler()
	delivered := 0
	h.onMessage = func(*testSession, bool, []byte) { delivered++ }
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}}, h)
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{srv: s, mode: modeFrames}
	c.sess = &testSession{h: h, c: c, closed: make(chan struct{})}
	c.flags.Store(fUpgraded)
	frame := clientFrame(true, 0, opText, []byte(`{"tag":"sensors/room1/temperature","message":21.5}`))
	lb := cwnetpoll.NewLinkBuffer()
	recv := func() {
		buf, _ := lb.Malloc(len(frame))
		copy(buf, frame)
		_ = lb.Flush()
		c.readFrames(lb)
		_ = lb.Release()
	}
	for range 100 {
		recv()
	}
	if allocs := testing.AllocsPerRun(1000, recv); allocs != 0 {
		t.Fatalf("receive: %v allocations per message, want 0", allocs)
	}
	if delivered != 100+1000+1 || // AllocsPerRun adds a warm-up call
		c.mode != modeFrames || lb.Len() != 0 {
		t.Fatalf("delivered %d, mode %d, %d bytes left", delivered, c.mode, lb.Len())
	}
}

// TestReceiveJoinedAllocs: the same for a ByteStreamSession, whose binary
// messages of one read are joined (16 per read here): nothing allocates once
// the join buffer's size class is pooled.
func TestReceiveJoinedAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race")
	}
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}}, newTestHandler())
	if err != nil {
		t.Fatal(err)
	}
	sess := &byteStreamSession{}
	c := &Conn{srv: s, mode: modeFrames, sess: sess}
	c.flags.Store(fUpgraded | fJoin)
	var frames []byte
	for range 16 {
		frames = append(frames, clientFrame(true, 0, opBinary, bytes.Repeat([]byte{'m'}, 85))...)
	}
	lb := cwnetpoll.NewLinkBuffer()
	recv := func() {
		buf, _ := lb.Malloc(len(frames))
		copy(buf, frames)
		_ = lb.Flush()
		c.readFrames(lb)
		_ = lb.Release()
		sess.binary = sess.binary[:0]
	}
	for range 100 {
		recv()
	}
	if allocs := testing.AllocsPerRun(1000, recv); allocs != 0 {
		t.Fatalf("receive: %v allocations per read of 16 messages, want 0", allocs)
	}
	if sess.calls != 100+1000+1 || lb.Len() != 0 {
		t.Fatalf("%d deliveries for %d reads of 16 messages, %d bytes left", sess.calls, 100+1000+1, lb.Len())
	}
}

// TestReceiveAllocsSocket measures the same over a real socket, netpoll's
// poller and scheduling included. netpoll v0.7.2 allocates one closure per
// wakeup (the task in connection.onProcess); nothing else may allocate.
func TestReceiveAllocsSocket(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("real socket; allocation counts need a build without -race")
	}
	delivered := make(chan struct{}, 16)
	h := newTestHandler()
	h.onMessage = func(*testSession, bool, []byte) { delivered <- struct{}{} }
	s, _ := startServer(t, Config{}, h)
	c := dialManual(t, s)
	h.waitOpened(t)
	frame := clientFrame(true, 0, opText, []byte(`{"tag":"sensors/room1/temperature","message":21.5}`))
	timeout := time.NewTimer(time.Hour) // reused: time.After would allocate
	recv := func() {
		if _, err := c.conn.Write(frame); err != nil {
			t.Fatal(err)
		}
		timeout.Reset(5 * time.Second)
		select {
		case <-delivered:
		case <-timeout.C:
			t.Fatal("message not delivered")
		}
	}
	for range 200 {
		recv()
	}
	const netpollPerWakeup = 1
	if allocs := testing.AllocsPerRun(500, recv); allocs > netpollPerWakeup {
		t.Fatalf("receive over a socket: %v allocations per message, want at most %d (netpoll's own)", allocs, netpollPerWakeup)
	}
}

// BenchmarkSendFlush measures Send + batched drain throughput to one
// client over loopback (the client reads and discards).
func BenchmarkSendFlush(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			h := newTestHandler()
			s, _ := startServer(b, Config{CloseTimeout: 50 * time.Millisecond}, h)
			c := dialManual(b, s)
			sess := h.waitOpened(b)
			frame := AppendFrame(nil, false, bytes.Repeat([]byte{'x'}, size))
			var received atomic.Int64
			go func() {
				buf := make([]byte, 256<<10)
				for {
					n, err := c.r.Read(buf)
					if err != nil {
						return
					}
					received.Add(int64(n))
				}
			}()
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			f := proto.AcquireFrame()
			f.B = append(f.B[:0], frame...)
			b.ResetTimer()
			for range b.N {
				f.Retain()
				for !sess.c.Send(f) {
					f.Retain() // refused: Send released that reference; retry with a new one
					runtime.Gosched()
				}
			}
			want := int64(b.N) * int64(len(frame))
			for received.Load() < want {
				runtime.Gosched()
			}
			b.StopTimer()
			f.Release()
		})
	}
}

// TestStreamReceiveAllocs: handing a stream's input to its Session (the
// whole per-connection read path of a stream: chunk, Conn, metrics)
// allocates nothing, from the same netpoll LinkBuffer type as a
// connection's Reader.
func TestStreamReceiveAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race")
	}
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}}, newTestHandler())
	if err != nil {
		t.Fatal(err)
	}
	sh := newStreamHandler()
	sh.noRecord = true
	delivered := 0
	sh.onData = func(ss *streamSession, p []byte) {
		delivered += len(p)
		ss.c.AdmitInbound()
	}
	c := &Conn{srv: s, mode: modeStream}
	c.sess = &streamSession{h: sh, c: c, closed: make(chan struct{})}
	c.flags.Store(fUpgraded | fEstablished | fStream)
	chunk := []byte("\x30\x2a\x00\x1fsensors/room1/temperature21.5 celsius")
	lb := cwnetpoll.NewLinkBuffer()
	recv := func() {
		buf, _ := lb.Malloc(len(chunk))
		copy(buf, chunk)
		_ = lb.Flush()
		c.readStream(lb)
		_ = lb.Release()
	}
	for range 100 {
		recv()
	}
	if allocs := testing.AllocsPerRun(1000, recv); allocs != 0 {
		t.Fatalf("stream receive: %v allocations per chunk, want 0", allocs)
	}
	if delivered != (100+1000+1)*len(chunk) || c.mode != modeStream || lb.Len() != 0 {
		t.Fatalf("delivered %d, mode %d, %d bytes left", delivered, c.mode, lb.Len())
	}
}

// TestStreamSendDrainAllocs: Send of raw bytes to a stream and its drain
// allocate nothing in steady state, over a real loopback connection.
func TestStreamSendDrainAllocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("real socket; allocation counts need a build without -race")
	}
	sh := newStreamHandler()
	sh.noRecord = true
	sh.onData = func(*streamSession, []byte) {}
	_, _, addr := startStream(t, Config{}, sh, nil)
	conn := dialStream(t, addr)
	writeAll(t, conn, []byte("x"))
	sess := sh.waitOpened(t)
	packet := []byte("\x30\x2a\x00\x1fsensors/room1/temperature21.5 celsius")
	got := make(chan struct{}, 16)
	go frameCounter(conn, len(packet), got)
	timeout := time.NewTimer(time.Hour) // reused: time.After would allocate
	send := func() {
		f := proto.AcquireFrame()
		f.B = append(f.B[:0], packet...)
		if !sess.c.Send(f) {
			t.Fatal("Send refused")
		}
		timeout.Reset(5 * time.Second)
		select {
		case <-got:
		case <-timeout.C:
			t.Fatal("packet not received")
		}
	}
	for range 200 {
		send()
	}
	if allocs := testing.AllocsPerRun(500, send); allocs != 0 {
		t.Fatalf("stream Send + drain: %v allocations per packet, want 0", allocs)
	}
}

// TestStreamEchoAllocsSocket: a chunk read from a real socket, delivered to
// the Session and echoed back (Send + drain) allocates only netpoll's own
// closure per wakeup (see TestReceiveAllocsSocket).
func TestStreamEchoAllocsSocket(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("real socket; allocation counts need a build without -race")
	}
	sh := newStreamHandler()
	sh.noRecord = true
	sh.onData = func(s *streamSession, p []byte) {
		s.c.AdmitInbound()
		f := proto.AcquireFrame()
		f.B = append(f.B[:0], p...)
		s.c.Send(f)
	}
	_, _, addr := startStream(t, Config{}, sh, nil)
	conn := dialStream(t, addr)
	packet := []byte("\x30\x2a\x00\x1fsensors/room1/temperature21.5 celsius")
	writeAll(t, conn, packet)
	sh.waitOpened(t)
	got := make(chan struct{}, 16)
	go frameCounter(conn, len(packet), got)
	<-got
	timeout := time.NewTimer(time.Hour)
	echo := func() {
		if _, err := conn.Write(packet); err != nil {
			t.Fatal(err)
		}
		timeout.Reset(5 * time.Second)
		select {
		case <-got:
		case <-timeout.C:
			t.Fatal("echo not received")
		}
	}
	for range 200 {
		echo()
	}
	const netpollPerWakeup = 1
	if allocs := testing.AllocsPerRun(500, echo); allocs > netpollPerWakeup {
		t.Fatalf("stream echo over a socket: %v allocations per packet, want at most %d (netpoll's own)", allocs, netpollPerWakeup)
	}
}
