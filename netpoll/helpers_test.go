package netpoll

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/proto"
)

// tracked counts, per frame, the references this package released, for
// frames a test registered with track (independent of proto's pool).
var tracked sync.Map // *proto.Frame → *atomic.Int32

func TestMain(m *testing.M) {
	if os.Getenv(idleClientEnv) != "" {
		os.Exit(runIdleClient())
	}
	frameReleased = func(f *proto.Frame) {
		if v, ok := tracked.Load(f); ok {
			v.(*atomic.Int32).Add(1)
		}
	}
	os.Exit(m.Run())
}

// newTrackedFrame returns a frame outside proto's pool holding one reference
// for the test (so it never returns to the pool and is never reused) and
// the counter of releases done by this package.
func newTrackedFrame(text bool, payload []byte) (*proto.Frame, *atomic.Int32) {
	f := &proto.Frame{B: AppendFrame(nil, text, payload)}
	f.Retain()
	n := new(atomic.Int32)
	tracked.Store(f, n)
	return f, n
}

// testHandler admits every connection with a testSession.
type testHandler struct {
	mu       sync.Mutex
	sessions []*testSession
	opened   chan *testSession
	// onOpen, when set, runs in Open and may reject (return false after c.Close).
	onOpen func(c *Conn, hs *Handshake) bool
	// onMessage, when set, replaces the echo.
	onMessage func(s *testSession, text bool, payload []byte)
}

func newTestHandler() *testHandler {
	return &testHandler{opened: make(chan *testSession, 1024)}
}

type testSession struct {
	h    *testHandler
	c    *Conn
	hs   Handshake // deep copy
	msgs chan []byte

	mu          sync.Mutex
	closes      int
	afterClose  int // OnMessage calls after OnClose (must stay 0)
	inMessage   atomic.Int32
	concurrency atomic.Int32 // max observed concurrent OnMessage calls
	closed      chan struct{}
}

func (h *testHandler) Open(c *Conn, hs *Handshake) Session {
	if h.onOpen != nil && !h.onOpen(c, hs) {
		return nil
	}
	s := &testSession{h: h, c: c, msgs: make(chan []byte, 4096), closed: make(chan struct{})}
	s.hs = Handshake{
		Path:          clone(hs.Path),
		RawQuery:      clone(hs.RawQuery),
		Authorization: clone(hs.Authorization),
		Headers:       cloneAll(hs.Headers),
		Protocol:      clone(hs.Protocol),
		Subprotocol:   hs.Subprotocol,
		RemoteAddr:    hs.RemoteAddr,
	}
	h.mu.Lock()
	h.sessions = append(h.sessions, s)
	h.mu.Unlock()
	h.opened <- s
	return s
}

func cloneAll(bs [][]byte) [][]byte {
	if bs == nil {
		return nil
	}
	out := make([][]byte, len(bs))
	for i, b := range bs {
		out[i] = clone(b)
	}
	return out
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func (s *testSession) OnMessage(text bool, payload []byte) {
	if n := s.inMessage.Add(1); n > s.concurrency.Load() {
		s.concurrency.Store(n)
	}
	defer s.inMessage.Add(-1)
	s.mu.Lock()
	if s.closes > 0 {
		s.afterClose++
	}
	s.mu.Unlock()
	if s.h.onMessage != nil {
		s.h.onMessage(s, text, payload)
		return
	}
	select {
	case s.msgs <- clone(payload):
	default:
	}
	f := proto.AcquireFrame()
	f.B = AppendFrame(f.B[:0], text, payload)
	s.c.Send(f)
}

func (s *testSession) OnClose() {
	s.mu.Lock()
	s.closes++
	n := s.closes
	s.mu.Unlock()
	if n == 1 {
		close(s.closed)
	}
}

func (s *testSession) closeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closes
}

// waitOpened returns the next session opened by h.
func (h *testHandler) waitOpened(t testing.TB) *testSession {
	t.Helper()
	select {
	case s := <-h.opened:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no connection opened within 5s")
		return nil
	}
}

func (s *testSession) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-s.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("OnClose not called within 5s")
	}
}

// startServer starts a Server on 127.0.0.1:0 serving /ws (unless cfg.Paths
// is set) with its own registry, shut down at test end.
func startServer(t testing.TB, cfg Config, h Handler) (*Server, *prometheus.Registry) {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Paths == nil {
		cfg.Paths = []string{"/ws"}
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	s, err := NewServer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Shutdown")
		}
	})
	return s, reg
}

func wsURL(s *Server, pathAndQuery string) string {
	return "ws://" + s.Addr().String() + pathAndQuery
}

// client is a test WebSocket client over a raw connection, reading
// server frames with gobwas's reference decoder.
type client struct {
	t    testing.TB
	conn net.Conn
	r    io.Reader
}

// dial upgrades with gobwas's Dialer.
func dial(t testing.TB, s *Server, pathAndQuery string, header http.Header, protocols ...string) (*client, ws.Handshake) {
	t.Helper()
	d := ws.Dialer{Timeout: 5 * time.Second, Protocols: protocols}
	if header != nil {
		d.Header = ws.HandshakeHeaderHTTP(header)
	}
	conn, br, hs, err := d.Dial(context.Background(), wsURL(s, pathAndQuery))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	return &client{t: t, conn: conn, r: r}, hs
}

// dialRaw opens a TCP connection without any handshake.
func dialRaw(t testing.TB, s *Server) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func upgradeRequest(path string, extra string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
}

// dialManual upgrades over a raw connection by writing the request itself,
// so tests control exactly how bytes are split.
func dialManual(t testing.TB, s *Server) *client {
	t.Helper()
	conn := dialRaw(t, s)
	if _, err := conn.Write([]byte(upgradeRequest("/ws", ""))); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade status %d", resp.StatusCode)
	}
	return &client{t: t, conn: conn, r: br}
}

// clientFrame encodes a masked client frame with explicit header bits.
func clientFrame(fin bool, rsv byte, op byte, payload []byte) []byte {
	h := ws.Header{Fin: fin, Rsv: rsv, OpCode: ws.OpCode(op), Masked: true, Mask: [4]byte{0x11, 0x22, 0x33, 0x44}, Length: int64(len(payload))}
	hb := make([]byte, ws.MaxHeaderSize)
	n := headerInto(hb, h)
	out := append(hb[:n], payload...)
	ws.Cipher(out[n:], h.Mask, 0)
	return out
}

// headerInto writes h with gobwas's encoder.
func headerInto(dst []byte, h ws.Header) int {
	w := &sliceWriter{b: dst[:0]}
	if err := ws.WriteHeader(w, h); err != nil {
		panic(err)
	}
	return len(w.b)
}

type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func (c *client) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

func (c *client) send(text bool, payload []byte) {
	c.t.Helper()
	op := byte(opBinary)
	if text {
		op = opText
	}
	c.write(clientFrame(true, 0, op, payload))
}

// readFrame reads one server frame (must be unmasked) within 5s.
func (c *client) readFrame() (ws.Frame, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := ws.ReadFrame(c.r)
	if err == nil && f.Header.Masked {
		return f, errors.New("server frame is masked")
	}
	return f, err
}

// expectMessage reads frames, skipping pings, until a data frame.
func (c *client) expectMessage() ws.Frame {
	c.t.Helper()
	for {
		f, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("reading message: %v", err)
		}
		if f.Header.OpCode == ws.OpPing {
			continue
		}
		return f
	}
}

// expectClose reads frames until a close frame and checks its code and,
// when reason != "*", its reason.
func (c *client) expectClose(code uint16, reason string) {
	c.t.Helper()
	for {
		f, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("waiting for close %d: %v", code, err)
		}
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		got, why := closeBody(f.Payload)
		if got != code || (reason != "*" && why != reason) {
			c.t.Fatalf("close frame = %d %q, want %d %q", got, why, code, reason)
		}
		return
	}
}

func closeBody(p []byte) (uint16, string) {
	if len(p) < 2 {
		return 0, ""
	}
	return binary.BigEndian.Uint16(p), string(p[2:])
}

// expectEOF reads until EOF (or reset), failing if it takes over 5s.
func (c *client) expectEOF() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("connection not closed by the server within 5s")
	}
}

func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return 0
}

// eventually polls cond for up to 5s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second) // generous: the suite shares 2 CPUs under -race
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
