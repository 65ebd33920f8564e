package netpoll

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/gatecast/gatecast/proto"
)

func TestUpgradeAndEcho(t *testing.T) {
	h := newTestHandler()
	s, reg := startServer(t, Config{Paths: []string{"/ws", "/ws/brocker/"}, CaptureHeaders: []string{"tag", "X-Absent"}}, h)
	hdr := http.Header{}
	hdr.Set("Authorization", "Token s3cret")
	hdr.Add("Tag", "a/b")
	hdr.Add("Tag", "c/#")
	c, _ := dial(t, s, "/ws/brocker/?token=x&tags=y", hdr)
	sess := h.waitOpened(t)

	if got := string(sess.hs.Path); got != "/ws/brocker/" {
		t.Errorf("Path = %q", got)
	}
	if got := string(sess.hs.RawQuery); got != "token=x&tags=y" {
		t.Errorf("RawQuery = %q", got)
	}
	if got := string(sess.hs.Authorization); got != "Token s3cret" {
		t.Errorf("Authorization = %q", got)
	}
	if len(sess.hs.Headers) != 2 || string(sess.hs.Headers[0]) != "a/b,c/#" || sess.hs.Headers[1] != nil {
		t.Errorf("Headers = %q, want [\"a/b,c/#\" nil]", sess.hs.Headers)
	}
	if sess.hs.Protocol != nil || sess.hs.Subprotocol != "" {
		t.Errorf("Protocol = %q, Subprotocol = %q, want none", sess.hs.Protocol, sess.hs.Subprotocol)
	}
	if !strings.HasPrefix(sess.hs.RemoteAddr, "127.0.0.1:") || sess.c.RemoteAddr() != sess.hs.RemoteAddr {
		t.Errorf("RemoteAddr = %q / %q", sess.hs.RemoteAddr, sess.c.RemoteAddr())
	}

	c.send(true, []byte("hello"))
	if f := c.expectMessage(); f.Header.OpCode != ws.OpText || string(f.Payload) != "hello" {
		t.Fatalf("echo = op %v %q", f.Header.OpCode, f.Payload)
	}
	bin := bytes.Repeat([]byte{0, 1, 2, 0xff}, 5000) // 20000 bytes: 16-bit length
	c.send(false, bin)
	if f := c.expectMessage(); f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, bin) {
		t.Fatalf("binary echo: op %v, %d bytes", f.Header.OpCode, len(f.Payload))
	}
	if got := counterValue(t, reg, "gatecast_ws_handshakes_total", "result", "ok"); got != 1 {
		t.Errorf("handshakes ok = %v", got)
	}
	if got := counterValue(t, reg, "gatecast_ws_connections", "transport", "ws"); got != 1 || s.ConnCount() != 1 {
		t.Errorf("connections gauge = %v, ConnCount = %d", got, s.ConnCount())
	}
	// Counted after OnMessage returns, so possibly after the echo arrived.
	eventually(t, "messages received metric", func() bool {
		return counterValue(t, reg, "gatecast_ws_messages_received_total") == 2
	})
}

func TestSubprotocolSelection(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{Subprotocols: []string{"mqtt", "gatecast.bearer"}}, h)
	_, hs := dial(t, s, "/ws", nil, "gatecast.bearer", "tok123")
	sess := h.waitOpened(t)
	if hs.Protocol != "gatecast.bearer" || sess.hs.Subprotocol != "gatecast.bearer" {
		t.Errorf("selected %q (client saw %q), want gatecast.bearer", sess.hs.Subprotocol, hs.Protocol)
	}
	if got := string(sess.hs.Protocol); got != "gatecast.bearer, tok123" {
		t.Errorf("offered = %q", got)
	}

	// Nothing configured: nothing selected, offers still reported.
	h2 := newTestHandler()
	s2, _ := startServer(t, Config{}, h2)
	_, hs2 := dial(t, s2, "/ws", nil, "chat")
	sess2 := h2.waitOpened(t)
	if hs2.Protocol != "" || sess2.hs.Subprotocol != "" || string(sess2.hs.Protocol) != "chat" {
		t.Errorf("selected %q / %q, offered %q", hs2.Protocol, sess2.hs.Subprotocol, sess2.hs.Protocol)
	}
}

// TestSeveralPathsCapturedHeadersAndMQTTSubprotocol: one Server accepts the
// seed paths and /mqtt side by side; a client offering "mqtt" gets it back
// in Sec-WebSocket-Protocol, the configured headers are captured for any
// path, and a path outside Config.Paths still gets 404.
func TestSeveralPathsCapturedHeadersAndMQTTSubprotocol(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{
		Paths:          []string{"/ws/brocker/", "/ws/brocker", "/mqtt"},
		Subprotocols:   []string{"mqtt"},
		CaptureHeaders: []string{"Tag", "X-Client"},
	}, h)

	hdr := http.Header{}
	hdr.Add("X-Client", "sensor-7")
	c, hs := dial(t, s, "/mqtt", hdr, "mqtt")
	sess := h.waitOpened(t)
	if hs.Protocol != "mqtt" || sess.hs.Subprotocol != "mqtt" || string(sess.hs.Protocol) != "mqtt" {
		t.Errorf("client saw %q, session selected %q (offered %q); want mqtt", hs.Protocol, sess.hs.Subprotocol, sess.hs.Protocol)
	}
	if string(sess.hs.Path) != "/mqtt" || sess.hs.Headers[0] != nil || string(sess.hs.Headers[1]) != "sensor-7" {
		t.Errorf("path %q, headers %q", sess.hs.Path, sess.hs.Headers)
	}
	c.send(false, []byte{0xc0, 0x00}) // an MQTT PINGREQ in a binary message: netpoll does not look inside
	if f := c.expectMessage(); f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, []byte{0xc0, 0x00}) {
		t.Fatalf("echo = op %v %x", f.Header.OpCode, f.Payload)
	}

	hdr = http.Header{}
	hdr.Add("Tag", "a/b")
	hdr.Add("Tag", "c/d")
	_, hs = dial(t, s, "/ws/brocker", hdr)
	sess = h.waitOpened(t)
	if hs.Protocol != "" || sess.hs.Subprotocol != "" || string(sess.hs.Path) != "/ws/brocker" ||
		string(sess.hs.Headers[0]) != "a/b,c/d" || sess.hs.Headers[1] != nil {
		t.Errorf("seed path: protocol %q/%q, path %q, headers %q", hs.Protocol, sess.hs.Subprotocol, sess.hs.Path, sess.hs.Headers)
	}
	if got := httpExchange(t, s, upgradeRequest("/mqtt/", "Sec-WebSocket-Protocol: mqtt\r\n")); !strings.HasPrefix(got, "HTTP/1.1 404") {
		t.Errorf("unlisted path: %q, want 404", got)
	}
}

// httpExchange writes raw request bytes and returns the response status
// line and whether the server then closed the connection.
func httpExchange(t *testing.T, s *Server, req string) (status string) {
	t.Helper()
	conn := dialRaw(t, s)
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, err := io.ReadAll(conn)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("server did not close after the HTTP error; got %q", all)
		}
	}
	line, _, _ := strings.Cut(string(all), "\r\n")
	return line
}

func TestHTTPRejections(t *testing.T) {
	h := newTestHandler()
	s, reg := startServer(t, Config{MaxHeaderBytes: 1024}, h)
	cases := []struct {
		name   string
		req    string
		status string
	}{
		{
			name:   "unknown path",
			req:    upgradeRequest("/nope", ""),
			status: "HTTP/1.1 404",
		},
		{
			name:   "path with query still checked without it",
			req:    upgradeRequest("/wsx?a=b", ""),
			status: "HTTP/1.1 404",
		},
		{
			name:   "plain GET",
			req:    "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
			status: "HTTP/1.1 400",
		},
		{
			name:   "wrong version",
			req:    strings.Replace(upgradeRequest("/ws", ""), "Version: 13", "Version: 8", 1),
			status: "HTTP/1.1 426",
		},
		{
			name:   "POST",
			req:    strings.Replace(upgradeRequest("/ws", ""), "GET", "POST", 1),
			status: "HTTP/1.1 405",
		},
		{
			name:   "headers too large",
			req:    upgradeRequest("/ws", "X-Big: "+strings.Repeat("a", 2000)+"\r\n"),
			status: "HTTP/1.1 431",
		},
		{
			name:   "garbage without a blank line",
			req:    strings.Repeat("\x00\x01garbage", 200),
			status: "HTTP/1.1 431",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := httpExchange(t, s, tc.req); !strings.HasPrefix(got, tc.status) {
				t.Fatalf("status line %q, want %s", got, tc.status)
			}
		})
	}
	if got := counterValue(t, reg, "gatecast_ws_handshakes_total", "result", "not_found"); got != 2 {
		t.Errorf("not_found = %v", got)
	}
	if got := counterValue(t, reg, "gatecast_ws_handshakes_total", "result", "bad_request"); got != 3 {
		t.Errorf("bad_request = %v", got)
	}
	if got := counterValue(t, reg, "gatecast_ws_handshakes_total", "result", "too_large"); got != 2 {
		t.Errorf("too_large = %v", got)
	}
	if s.ConnCount() != 0 {
		t.Errorf("ConnCount = %d after rejections", s.ConnCount())
	}
	select {
	case <-h.opened:
		t.Error("Open called for a rejected request")
	default:
	}
}

func TestHandshakeTimeout(t *testing.T) {
	h := newTestHandler()
	s, reg := startServer(t, Config{HandshakeTimeout: 100 * time.Millisecond}, h)
	conn := dialRaw(t, s)
	// Slowloris: half a request, then silence.
	if _, err := conn.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(make([]byte, 16))
	if n != 0 || err == nil {
		t.Fatalf("read %d bytes, err %v; want the connection closed", n, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("handshake timeout not enforced")
	}
	eventually(t, "timeout metrics", func() bool {
		return counterValue(t, reg, "gatecast_ws_handshakes_total", "result", "timeout") == 1 &&
			counterValue(t, reg, "gatecast_ws_closes_total", "reason", "handshake_timeout") == 1
	})
}

func TestHandshakeSplitAcrossReads(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	conn := dialRaw(t, s)
	req := []byte(upgradeRequest("/ws?x=1", "Authorization: Token abc\r\n"))
	// Byte by byte, then a pipelined frame in the same write as the last
	// request byte.
	for _, b := range req[:len(req)-1] {
		if _, err := conn.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	last := append([]byte{req[len(req)-1]}, clientFrame(true, 0, opText, []byte("pipelined"))...)
	if _, err := conn.Write(last); err != nil {
		t.Fatal(err)
	}
	sess := h.waitOpened(t)
	if string(sess.hs.Authorization) != "Token abc" || string(sess.hs.RawQuery) != "x=1" {
		t.Errorf("handshake = %+v", sess.hs)
	}
	select {
	case m := <-sess.msgs:
		if string(m) != "pipelined" {
			t.Fatalf("message %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pipelined frame not delivered")
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("response %v, %v", resp, err)
	}
	c := &client{t: t, conn: conn, r: br}
	if f := c.expectMessage(); string(f.Payload) != "pipelined" {
		t.Fatalf("echo %q", f.Payload)
	}
}

// TestPartialFrames delivers frames in tiny pieces: each must produce
// exactly one OnMessage, and OnRequest must run about once per arrival (a
// busy loop on a partial frame would run it millions of times).
func TestPartialFrames(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	var calls atomic.Int64
	hook := func() { calls.Add(1) }
	s.testHookOnRequest.Store(&hook)
	c := dialManual(t, s)
	sess := h.waitOpened(t)

	cases := []struct {
		name    string
		payload []byte
		chunk   int
	}{
		{name: "7-bit length, byte by byte", payload: []byte("a small message split into single bytes"), chunk: 1},
		{name: "16-bit length, byte by byte", payload: bytes.Repeat([]byte("x"), 300), chunk: 1},
		{name: "60 KiB in 1000-byte chunks", payload: bytes.Repeat([]byte("0123456789"), 6000), chunk: 1000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frame := clientFrame(true, 0, opText, tc.payload)
			before := calls.Load()
			writes := 0
			for off := 0; off < len(frame); off += tc.chunk {
				c.write(frame[off:min(off+tc.chunk, len(frame))])
				writes++
				time.Sleep(300 * time.Microsecond)
			}
			select {
			case m := <-sess.msgs:
				if !bytes.Equal(m, tc.payload) {
					t.Fatalf("got %d bytes, want %d", len(m), len(tc.payload))
				}
			case <-time.After(5 * time.Second):
				t.Fatal("message not delivered")
			}
			if f := c.expectMessage(); !bytes.Equal(f.Payload, tc.payload) {
				t.Fatal("echo differs")
			}
			select {
			case m := <-sess.msgs:
				t.Fatalf("extra message %q", m)
			default:
			}
			if n := calls.Load() - before; n > int64(writes)+2 {
				t.Fatalf("OnRequest ran %d times for %d writes", n, writes)
			}
		})
	}
}

func TestFragmentationWithInterleavedPing(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	c := dialManual(t, s)
	sess := h.waitOpened(t)
	var all []byte
	all = append(all, clientFrame(false, 0, opText, []byte("Hel"))...)
	all = append(all, clientFrame(true, 0, opPing, []byte("p1"))...)
	all = append(all, clientFrame(false, 0, opContinuation, []byte("lo, "))...)
	all = append(all, clientFrame(false, 0, opContinuation, nil)...)
	all = append(all, clientFrame(true, 0, opPong, []byte("unsolicited"))...)
	all = append(all, clientFrame(true, 0, opContinuation, []byte("wörld"))...)
	all = append(all, clientFrame(false, 0, opBinary, []byte{1, 2})...)
	all = append(all, clientFrame(true, 0, opContinuation, []byte{3})...)
	// Split at an awkward point to cross frames and headers.
	c.write(all[:5])
	time.Sleep(time.Millisecond)
	c.write(all[5:])

	f, err := c.readFrame()
	if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "p1" {
		t.Fatalf("first frame = %v %q, %v; want pong p1", f.Header.OpCode, f.Payload, err)
	}
	if f := c.expectMessage(); f.Header.OpCode != ws.OpText || string(f.Payload) != "Hello, wörld" {
		t.Fatalf("reassembled = %v %q", f.Header.OpCode, f.Payload)
	}
	if f := c.expectMessage(); f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, []byte{1, 2, 3}) {
		t.Fatalf("binary reassembled = %v %v", f.Header.OpCode, f.Payload)
	}
	if got := len(sess.msgs); got != 2 {
		t.Fatalf("%d messages delivered, want 2", got)
	}
}

func TestProtocolViolationsClose(t *testing.T) {
	long := bytes.Repeat([]byte("z"), 600)
	cases := []struct {
		name   string
		frames [][]byte
		code   uint16
		reason string // metric label
	}{
		{
			name:   "frame over MaxFrameSize",
			frames: [][]byte{clientFrame(true, 0, opBinary, bytes.Repeat([]byte("z"), 1025))},
			code:   1009,
			reason: "too_big",
		},
		{
			name:   "fragments over MaxFrameSize",
			frames: [][]byte{clientFrame(false, 0, opText, long), clientFrame(true, 0, opContinuation, long)},
			code:   1009,
			reason: "too_big",
		},
		{
			name:   "invalid UTF-8 text",
			frames: [][]byte{clientFrame(true, 0, opText, []byte{'a', 0xff, 'b'})},
			code:   1007,
			reason: "bad_utf8",
		},
		{
			name:   "invalid UTF-8 across fragments",
			frames: [][]byte{clientFrame(false, 0, opText, []byte{0xe2, 0x82}), clientFrame(true, 0, opContinuation, []byte{'x'})},
			code:   1007,
			reason: "bad_utf8",
		},
		{
			name:   "invalid UTF-8 close reason",
			frames: [][]byte{clientFrame(true, 0, opClose, []byte{0x03, 0xe8, 0xc0})},
			code:   1007,
			reason: "bad_utf8",
		},
		{
			name:   "unmasked frame",
			frames: [][]byte{{0x81, 0x02, 'h', 'i'}},
			code:   1002,
			reason: "protocol",
		},
		{
			name:   "RSV1 without extension",
			frames: [][]byte{clientFrame(true, 4, opText, []byte("x"))},
			code:   1002,
			reason: "protocol",
		},
		{
			name:   "reserved opcode",
			frames: [][]byte{clientFrame(true, 0, 0x3, []byte("x"))},
			code:   1002,
			reason: "protocol",
		},
		{
			name:   "fragmented ping",
			frames: [][]byte{clientFrame(false, 0, opPing, []byte("x"))},
			code:   1002,
			reason: "protocol",
		},
		{
			name:   "ping over 125 bytes",
			frames: [][]byte{clientFrame(true, 0, opPing, bytes.Repeat([]byte("p"), 126))},
			code:   1002,
			reason: "protocol",
		},
		{
			name:   "continuation without a message",
			frames: [][]byte{clientFrame(true, 0, opContinuation, []byte("x"))},
			code:   1002,
			reason: "protocol",
		},
		{
			name:   "new message inside a fragmented one",
			frames: [][]byte{clientFrame(false, 0, opText, []byte("a")), clientFrame(true, 0, opText, []byte("b"))},
			code:   1002,
			reason: "protocol",
		},
		{
			name:   "close with 1-byte body",
			frames: [][]byte{clientFrame(true, 0, opClose, []byte{0x03})},
			code:   1002,
			reason: "protocol",
		},
		{
			name:   "close code 1005 on the wire",
			frames: [][]byte{clientFrame(true, 0, opClose, []byte{0x03, 0xed})},
			code:   1002,
			reason: "protocol",
		},
		{
			name:   "close code 999",
			frames: [][]byte{clientFrame(true, 0, opClose, []byte{0x03, 0xe7})},
			code:   1002,
			reason: "protocol",
		},
		{
			name:   "close code 5000",
			frames: [][]byte{clientFrame(true, 0, opClose, []byte{0x13, 0x88})},
			code:   1002,
			reason: "protocol",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler()
			s, reg := startServer(t, Config{MaxFrameSize: 1024}, h)
			c := dialManual(t, s)
			sess := h.waitOpened(t)
			for _, f := range tc.frames {
				c.write(f)
			}
			c.expectClose(tc.code, "*")
			// Answer the close: the server then drops TCP.
			c.write(clientFrame(true, 0, opClose, []byte{byte(tc.code >> 8), byte(tc.code)}))
			c.expectEOF()
			sess.waitClosed(t)
			if got := len(sess.msgs); got != 0 {
				t.Errorf("%d messages delivered from a violating stream", got)
			}
			eventually(t, "closes metric", func() bool {
				return counterValue(t, reg, "gatecast_ws_closes_total", "reason", tc.reason) == 1
			})
		})
	}
}

func TestPingPong(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	c := dialManual(t, s)
	h.waitOpened(t)
	c.write(clientFrame(true, 0, opPing, []byte("are you there")))
	f, err := c.readFrame()
	if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "are you there" {
		t.Fatalf("got %v %q %v, want pong with the ping's payload", f.Header.OpCode, f.Payload, err)
	}
	c.write(clientFrame(true, 0, opPing, nil))
	if f, err := c.readFrame(); err != nil || f.Header.OpCode != ws.OpPong || len(f.Payload) != 0 {
		t.Fatalf("empty ping answered with %v %q %v", f.Header.OpCode, f.Payload, err)
	}
}

func TestIdleTimeoutAndPings(t *testing.T) {
	h := newTestHandler()
	s, reg := startServer(t, Config{PingInterval: 100 * time.Millisecond, IdleTimeout: time.Second, CloseTimeout: 200 * time.Millisecond}, h)

	// A client that answers pings stays open past IdleTimeout.
	alive := dialManual(t, s)
	aliveSess := h.waitOpened(t)
	aliveData := make(chan []byte, 16)
	go func() {
		for {
			f, err := ws.ReadFrame(alive.r) // no deadline: a timeout mid-frame would desync the stream
			if err != nil {
				close(aliveData)
				return
			}
			switch f.Header.OpCode {
			case ws.OpPing:
				_, _ = alive.conn.Write(clientFrame(true, 0, opPong, f.Payload))
			case ws.OpText, ws.OpBinary, ws.OpClose:
				aliveData <- f.Payload
			}
		}
	}()

	// A silent client gets pings, then 1001 "idle timeout".
	silent := dialManual(t, s)
	silentSess := h.waitOpened(t)
	pings := 0
	for {
		f, err := silent.readFrame()
		if err != nil {
			t.Fatalf("silent client: %v", err)
		}
		if f.Header.OpCode == ws.OpPing {
			pings++
			continue
		}
		if f.Header.OpCode != ws.OpClose {
			t.Fatalf("unexpected %v", f.Header.OpCode)
		}
		code, reason := closeBody(f.Payload)
		if code != 1001 || reason != "idle timeout" {
			t.Fatalf("close %d %q", code, reason)
		}
		break
	}
	if pings == 0 {
		t.Error("silent client got no ping before the idle close")
	}
	silent.expectEOF() // no close reply: dropped after CloseTimeout
	silentSess.waitClosed(t)

	if aliveSess.closeCount() != 0 {
		t.Fatal("a client answering pings was closed")
	}
	alive.send(true, []byte("still here"))
	select {
	case p := <-aliveData:
		if string(p) != "still here" {
			t.Fatalf("echo %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no echo")
	}
	if got := counterValue(t, reg, "gatecast_ws_closes_total", "reason", "idle"); got != 1 {
		t.Errorf("idle closes = %v", got)
	}
}

func TestPeerCloseEchoed(t *testing.T) {
	h := newTestHandler()
	s, reg := startServer(t, Config{}, h)

	c := dialManual(t, s)
	sess := h.waitOpened(t)
	c.write(clientFrame(true, 0, opClose, append([]byte{0x0f, 0xa3}, "bye"...))) // 4003
	c.expectClose(4003, "")
	c.expectEOF()
	sess.waitClosed(t)

	// A close without a body is echoed without a body.
	c2 := dialManual(t, s)
	sess2 := h.waitOpened(t)
	c2.write(clientFrame(true, 0, opClose, nil))
	f, err := c2.readFrame()
	if err != nil || f.Header.OpCode != ws.OpClose || len(f.Payload) != 0 {
		t.Fatalf("echo of empty close = %v %q %v", f.Header.OpCode, f.Payload, err)
	}
	c2.expectEOF()
	sess2.waitClosed(t)
	eventually(t, "peer closes", func() bool {
		return counterValue(t, reg, "gatecast_ws_closes_total", "reason", "peer") == 2
	})
	if sess.closeCount() != 1 || sess2.closeCount() != 1 {
		t.Fatalf("OnClose counts %d, %d", sess.closeCount(), sess2.closeCount())
	}
}

// TestCloseReachesBusyClient: our close frame arrives with its exact code
// and reason although the client keeps sending (unread input at close time
// must not turn into a RST that destroys the close frame).
func TestCloseReachesBusyClient(t *testing.T) {
	h := newTestHandler()
	h.onMessage = func(s *testSession, text bool, payload []byte) {
		if string(payload) == "close me" {
			s.c.Close(4003, "reason")
		}
		select {
		case s.msgs <- clone(payload):
		default:
		}
	}
	// CloseTimeout leaves the client ample time to read the close frame
	// before the server drops TCP with the client's noise unread (a RST).
	s, _ := startServer(t, Config{CloseTimeout: time.Second}, h)
	c := dialManual(t, s)
	sess := h.waitOpened(t)

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		frame := clientFrame(true, 0, opText, []byte("noise"))
		first := true
		for {
			select {
			case <-stop:
				return
			default:
			}
			if first {
				_, _ = c.conn.Write(clientFrame(true, 0, opText, []byte("close me")))
				first = false
			}
			if _, err := c.conn.Write(frame); err != nil {
				return
			}
		}
	}()
	c.expectClose(4003, "reason")
	close(stop)
	<-done
	sess.waitClosed(t)
	// Nothing after the closing message reached the session.
	for len(sess.msgs) > 0 {
		if m := <-sess.msgs; string(m) != "noise" && string(m) != "close me" {
			t.Fatalf("unexpected %q", m)
		}
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.afterClose != 0 {
		t.Fatalf("%d OnMessage calls after OnClose", sess.afterClose)
	}
}

func TestOpenRejectsWithCloseFrame(t *testing.T) {
	h := newTestHandler()
	h.onOpen = func(c *Conn, hs *Handshake) bool {
		if len(hs.Authorization) == 0 {
			c.Close(4001, "missing Authorization")
			return false
		}
		return true
	}
	s, reg := startServer(t, Config{}, h)
	c, _ := dial(t, s, "/ws", nil)
	c.expectClose(4001, "missing Authorization")
	c.write(clientFrame(true, 0, opClose, []byte{0x0f, 0xa1}))
	c.expectEOF()
	eventually(t, "connection gone", func() bool { return s.ConnCount() == 0 })
	if got := counterValue(t, reg, "gatecast_ws_closes_total", "reason", "server"); got != 1 {
		t.Errorf("server closes = %v", got)
	}
}

func TestSendAfterCloseReleases(t *testing.T) {
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	c := dialManual(t, s)
	sess := h.waitOpened(t)

	f, released := newTrackedFrame(true, []byte("queued before close"))
	f.Retain() // the reference handed to Send
	if !sess.c.Send(f) {
		t.Fatal("Send on an open connection refused")
	}
	sess.c.Close(4000, "done")
	sess.c.Close(4999, "ignored: Close is idempotent")
	g, releasedAfter := newTrackedFrame(true, []byte("after close"))
	g.Retain()
	if sess.c.Send(g) {
		t.Fatal("Send after Close accepted")
	}
	if n := releasedAfter.Load(); n != 1 {
		t.Fatalf("refused frame released %d times, want 1", n)
	}
	if m := c.expectMessage(); string(m.Payload) != "queued before close" {
		t.Fatalf("got %q", m.Payload)
	}
	c.expectClose(4000, "done")
	eventually(t, "queued frame released", func() bool { return released.Load() == 1 })
	c.write(clientFrame(true, 0, opClose, nil))
	c.expectEOF()
	sess.waitClosed(t)
	if released.Load() != 1 || releasedAfter.Load() != 1 {
		t.Fatalf("releases %d, %d; want 1, 1", released.Load(), releasedAfter.Load())
	}
}

func TestShutdownClosesClients(t *testing.T) {
	h := newTestHandler()
	cfg := Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}, CloseTimeout: 200 * time.Millisecond}
	s, err := NewServer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()

	polite := dialManual(t, s) // answers the close
	mute := dialManual(t, s)   // never answers: dropped after CloseTimeout
	s1, s2 := h.waitOpened(t), h.waitOpened(t)

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	polite.expectClose(1001, "server shutting down")
	polite.write(clientFrame(true, 0, opClose, []byte{0x03, 0xe9}))
	polite.expectEOF()
	mute.expectClose(1001, "server shutting down")
	mute.expectEOF()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if s1.closeCount() != 1 || s2.closeCount() != 1 || s.ConnCount() != 0 {
		t.Fatalf("OnClose %d %d, ConnCount %d", s1.closeCount(), s2.closeCount(), s.ConnCount())
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepting after Shutdown")
	}
}

func TestHandlerMisbehaviour(t *testing.T) {
	h := newTestHandler()
	h.onOpen = func(c *Conn, hs *Handshake) bool {
		return string(hs.RawQuery) != "nil" // returns nil without closing
	}
	h.onMessage = func(s *testSession, text bool, payload []byte) {
		if string(payload) == "panic" {
			panic("session bug")
		}
	}
	s, _ := startServer(t, Config{}, h)

	c, _ := dial(t, s, "/ws?nil", nil)
	c.expectClose(1011, "internal error")

	p := dialManual(t, s)
	sess := h.waitOpened(t)
	p.send(true, []byte("panic"))
	p.expectEOF() // the connection is dropped, the process survives
	sess.waitClosed(t)

	ok := dialManual(t, s)
	h.waitOpened(t)
	ok.write(clientFrame(true, 0, opPing, []byte("x")))
	if f, err := ok.readFrame(); err != nil || f.Header.OpCode != ws.OpPong {
		t.Fatalf("server unusable after a handler panic: %v %v", f.Header.OpCode, err)
	}
}

// TestShutdownDeadline: a client that never reads keeps a drain stuck in
// Flush; Shutdown must still return at its deadline, dropping it.
func TestShutdownDeadline(t *testing.T) {
	h := newTestHandler()
	cfg := Config{Addr: "127.0.0.1:0", Paths: []string{"/ws"}, WriteTimeout: time.Minute, CloseTimeout: time.Minute}
	s, err := NewServer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	eventually(t, "listening", func() bool { return s.Addr() != nil })
	stuck := dialSlow(t, s)
	sess := h.waitOpened(t)
	payload := bytes.Repeat([]byte{1}, 64<<10)
	for range 100 {
		f := proto.AcquireFrame()
		f.B = AppendFrame(f.B[:0], false, payload)
		sess.c.Send(f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("Shutdown took %v past its deadline", waited)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	sess.waitClosed(t)
	// A second Shutdown returns the first one's result at once.
	if err := s.Shutdown(context.Background()); err != context.DeadlineExceeded {
		t.Fatalf("second Shutdown = %v", err)
	}
	_ = stuck
}

// TestStreamIntegrity streams many frames of random sizes in random write
// chunks: every message arrives, in order, intact. (Bytes arriving while
// the event goroutine runs must be left for its next pass, never dropped.)
func TestStreamIntegrity(t *testing.T) {
	h := newTestHandler()
	h.onMessage = func(s *testSession, text bool, payload []byte) { s.msgs <- clone(payload) }
	s, _ := startServer(t, Config{}, h)
	c := dialManual(t, s)
	sess := h.waitOpened(t)
	rng := rand.New(rand.NewPCG(1, 2))
	const count = 2000
	var stream []byte
	want := make([][]byte, count)
	for i := range want {
		p := make([]byte, 1+rng.IntN(3000))
		for j := range p {
			p[j] = byte(i + j)
		}
		want[i] = p
		stream = append(stream, clientFrame(true, 0, opBinary, p)...)
	}
	go func() {
		for len(stream) > 0 {
			n := min(len(stream), 1+rng.IntN(5000))
			if _, err := c.conn.Write(stream[:n]); err != nil {
				return
			}
			stream = stream[n:]
		}
	}()
	for i := range want {
		select {
		case got := <-sess.msgs:
			if !bytes.Equal(got, want[i]) {
				t.Fatalf("message %d: %d bytes, want %d", i, len(got), len(want[i]))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d of %d never arrived", i, count)
		}
	}
}
