package netpoll

import (
	"bytes"
	"syscall"
	"testing"
	"time"

	"github.com/gatecast/gatecast/proto"
)

// TestFullSocketDoesNotHoldBackCloses: the writers of the pool never wait
// on a socket. A client that stopped reading, whose socket is full and
// whose flush is stuck, is closed first; the close frames of 40 other
// connections closed right after it still arrive while its flush is stuck.
func TestFullSocketDoesNotHoldBackCloses(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{OutboxLimit: 8 << 20, WriteTimeout: time.Minute}, h)
	slow := dialSlow(t, s)
	_ = slow
	slowSess := h.waitOpened(t)
	payload := bytes.Repeat([]byte{0xcd}, 16<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Stuck: a flush started and still the same one a moment later
		// (a write that completes sets flushStart only while it runs).
		if at := slowSess.c.flushStart.Load(); at != 0 {
			time.Sleep(20 * time.Millisecond)
			if slowSess.c.flushStart.Load() == at {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the non-reading client's flush never got stuck")
		}
		f := proto.AcquireFrame()
		f.B = AppendFrame(f.B[:0], false, payload)
		slowSess.c.Send(f)
		time.Sleep(time.Millisecond)
	}
	const n = 40
	clients := make([]*client, n)
	sessions := make([]*testSession, n)
	for i := range n {
		clients[i] = dialManual(t, s)
		sessions[i] = h.waitOpened(t)
	}
	slowSess.c.Close(4002, "revoked")
	for _, ss := range sessions {
		ss.c.Close(4002, "revoked")
	}
	for _, c := range clients {
		c.expectClose(4002, "revoked")
	}
	if slowSess.c.flushStart.Load() == 0 {
		t.Fatal("the non-reading client's flush completed: the test proves nothing")
	}
	// CloseWritten tells the two apart (gatecast_revocation_delivered_seconds).
	for _, ss := range sessions {
		eventually(t, "close written", ss.c.CloseWritten)
	}
	if slowSess.c.CloseWritten() {
		t.Fatal("CloseWritten is true for the close stuck behind a full socket")
	}
}

// TestWriterPoolWritesEveryClose: many connections closed at once, from
// several goroutines, each get their close frame after every frame queued
// before it, in order.
func TestWriterPoolWritesEveryClose(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	const n = 200
	clients := make([]*client, n)
	sessions := make([]*testSession, n)
	for i := range n {
		clients[i] = dialManual(t, s)
		sessions[i] = h.waitOpened(t)
	}
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := g; i < n; i += 4 {
				for k := range 3 {
					f := proto.AcquireFrame()
					f.B = AppendFrame(f.B[:0], true, []byte{byte('a' + k)})
					if !sessions[i].c.Send(f) {
						t.Errorf("session %d: frame %d refused", i, k)
					}
				}
				sessions[i].c.Close(4003, "forbidden")
			}
		}()
	}
	for range 4 {
		<-done
	}
	for i, c := range clients {
		for k := range 3 {
			f := c.expectMessage()
			if string(f.Payload) != string(rune('a'+k)) {
				t.Fatalf("client %d: message %d = %q", i, k, f.Payload)
			}
		}
		c.expectClose(4003, "forbidden")
	}
}

// TestWriteSome checks the writers' raw write(2): what a non-blocking
// socket takes is written, a full socket is a short count with no error,
// and a bad descriptor is an error.
func TestWriteSome(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	if n, err := writeSome(fds[0], []byte("hello")); n != 5 || err != nil {
		t.Fatalf("writeSome = %d, %v; want 5, nil", n, err)
	}
	got := make([]byte, 5)
	if n, err := syscall.Read(fds[1], got); n != 5 || err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %d, %v", got[:max(n, 0)], n, err)
	}
	big := make([]byte, 16<<20) // more than a socket buffer holds
	n, err := writeSome(fds[0], big)
	if err != nil || n <= 0 || n >= len(big) {
		t.Fatalf("writeSome on a filling socket = %d, %v; want a short count and no error", n, err)
	}
	if n, err := writeSome(fds[0], []byte("x")); n != 0 || err != nil {
		t.Fatalf("writeSome on a full socket = %d, %v; want 0, nil", n, err)
	}
	if _, err := writeSome(-1, []byte("x")); err != syscall.EBADF {
		t.Fatalf("writeSome on fd -1: %v, want EBADF", err)
	}
}
