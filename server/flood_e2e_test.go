package server

import (
	"bytes"
	"errors"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Issue 9, finding 1, end to end through the seed endpoint: input floods,
// with and without a valid token, against the default configuration.

// floodFrames is 64 KiB of 6-byte masked empty text frames.
func floodFrames() []byte {
	var one bytes.Buffer
	_ = ws.WriteHeader(&one, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: [4]byte{1, 2, 3, 4}})
	return bytes.Repeat(one.Bytes(), (64<<10)/one.Len())
}

// floodConn writes chunk until the connection fails or stop closes; a write
// the server does not take within 200 ms (reads paused) is retried from
// where it stopped.
func floodConn(conn net.Conn, chunk []byte, stop <-chan struct{}, written *atomic.Int64) error {
	rest := chunk
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		if len(rest) == 0 {
			rest = chunk
		}
		_ = conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := conn.Write(rest)
		rest = rest[n:]
		written.Add(int64(n))
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return err
		}
	}
}

func heapMiB() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse >> 20
}

// TestUnauthenticatedFloodIsCutOff: clients with an invalid token that
// stream frames right after the upgrade get 4003 and are gone within the
// close timeout; the broker's heap does not grow with what they send.
func TestUnauthenticatedFloodIsCutOff(t *testing.T) {
	n := startNode(t)
	base := heapMiB()
	const conns = 4
	stop := make(chan struct{})
	defer close(stop)
	var written atomic.Int64
	done := make(chan error, conns)
	clients := make([]*client, conns)
	start := time.Now()
	for i := range clients {
		clients[i] = n.dial(t, "not-a-token", "sensors/#")
		go func(c *client) { done <- floodConn(c.conn, floodFrames(), stop, &written) }(clients[i])
	}
	for range conns {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("a refused client flooding its input was still connected after 10s (close timeout 500ms); heap %d MiB", heapMiB())
		}
	}
	took := time.Since(start)
	peak := heapMiB()
	t.Logf("4 refused flooding clients cut off after %v having written %d MiB; heap %d -> %d MiB", took.Round(time.Millisecond), written.Load()>>20, base, peak)
	if peak > base+64 {
		t.Fatalf("heap grew from %d to %d MiB", base, peak)
	}
	for _, c := range clients {
		// What the server sent before dropping: the 4003 close frame.
		_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		f, err := ws.ReadFrame(c.r)
		if err != nil || f.Header.OpCode != ws.OpClose {
			t.Fatalf("want the 4003 close frame first, got %v %v", f.Header.OpCode, err)
		}
		if code, reason := ws.ParseCloseFrameData(f.Payload); code != 4003 || reason != "invalid token" {
			t.Fatalf("close %d %q, want 4003 invalid token", code, reason)
		}
	}
}

// TestAuthenticatedFloodIsRateLimited: a valid token streaming empty frames
// (which the seed protocol ignores) is rate limited and then closed with
// 1008, while the broker's heap stays flat and another client of the same
// node is served throughout.
func TestAuthenticatedFloodIsRateLimited(t *testing.T) {
	n := startNode(t)
	tok := n.createToken("flooder", 0)
	tag := n.createTag("sensors/#")
	n.grant(tok, tag, "readwrite")
	other := n.dialOK(t, tok.Token, "sensors/#")
	flooder := n.dialOK(t, tok.Token, "sensors/x")
	base := heapMiB()
	stop := make(chan struct{})
	defer close(stop)
	var written atomic.Int64
	done := make(chan error, 1)
	go func() { done <- floodConn(flooder.conn, floodFrames(), stop, &written) }()

	// The other client keeps being served while the flood runs.
	pub := n.dialOK(t, tok.Token, "sensors/y")
	pub.publish("sensors/a", `{"n":1}`)
	other.expectMessage("sensors/a", `{"n":1}`)

	reason := flooder.expectClose(1008)
	peak := heapMiB()
	t.Logf("flooder closed with 1008 %q after writing %d MiB; heap %d -> %d MiB", reason, written.Load()>>20, base, peak)
	if reason != "inbound message rate exceeded" {
		t.Fatalf("close reason %q", reason)
	}
	if peak > base+64 {
		t.Fatalf("heap grew from %d to %d MiB", base, peak)
	}
	pub.publish("sensors/b", `{"n":2}`)
	other.expectMessage("sensors/b", `{"n":2}`)
}
