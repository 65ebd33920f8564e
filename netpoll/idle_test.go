package netpoll

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// idleClientEnv switches the test binary into the idle client used by
// TestIdleConnectionMemory: its value is "addr,count".
const idleClientEnv = "GATECAST_IDLE_CLIENT"

// idleSession ignores everything: the measured server holds connections only.
type idleSession struct{}

func (idleSession) OnMessage(bool, []byte) {}
func (idleSession) OnClose()               {}

type idleHandler struct{}

func (idleHandler) Open(*Conn, *Handshake) Session { return idleSession{} }

func (idleHandler) OpenStream(c *Conn) Session {
	c.Established()
	return idleSession{}
}

// userSpaceBytes is the memory the Go runtime holds for live objects and
// goroutine stacks, plus its span and per-P cache metadata.
func userSpaceBytes() (total, heapLive uint64) {
	for range 3 {
		runtime.GC()
	}
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse + ms.MSpanInuse + ms.MCacheInuse, ms.HeapAlloc
}

// TestIdleConnectionMemory measures user-space bytes per idle, upgraded
// WebSocket connection in this (server) process, with the clients in a
// separate process (this test binary re-executed as an idle client).
//
//	GATECAST_MEASURE_IDLE=1 GATECAST_IDLE_CONNS=15000 go test -run TestIdleConnectionMemory -v ./netpoll/
//
// With GATECAST_IDLE_STREAM=1 the connections are raw TCP streams
// (ServeStream) that sent one byte, instead of upgraded WebSockets.
//
// The goal (issue 2) is at most 4 KiB per connection; the test fails above it.
//
// Without GATECAST_MEASURE_IDLE it runs in make test with 1,000 connections
// and checks the live heap per connection only (the figure the runtime's
// span rounding disturbs least at that count): at most idleLiveHeapLimit,
// which a connection holding netpoll's per-connection iovec barrier again
// (~1.3 KB, see sendOutput in upstream/connection_impl.go) exceeds.
func TestIdleConnectionMemory(t *testing.T) {
	measure := os.Getenv("GATECAST_MEASURE_IDLE") == "1"
	n := 5000
	if !measure {
		if raceEnabled {
			t.Skip("the race detector's bookkeeping doubles the heap: make test checks this in its pass without -race")
		}
		n = 1000
	}
	if v := os.Getenv("GATECAST_IDLE_CONNS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			t.Fatalf("GATECAST_IDLE_CONNS=%q", v)
		}
	}
	// No pings or idle closes during the measurement.
	cfg := Config{PingInterval: time.Hour, IdleTimeout: 2 * time.Hour}
	var s *Server
	addr, kind := "", "ws"
	if os.Getenv("GATECAST_IDLE_STREAM") == "1" {
		s, _, addr = startStream(t, cfg, idleHandler{}, idleHandler{})
		kind = "stream"
	} else {
		s, _ = startServer(t, cfg, idleHandler{})
		addr = s.Addr().String()
	}
	before, beforeLive := userSpaceBytes()

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%s", idleClientEnv, addr, n, kind))
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = child.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("idle client: %q, %v", line, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.ConnCount() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.ConnCount() != n {
		t.Fatalf("%d of %d connections upgraded", s.ConnCount(), n)
	}
	time.Sleep(200 * time.Millisecond) // let event goroutines finish
	after, afterLive := userSpaceBytes()
	per := float64(after-before) / float64(n)
	t.Logf("%d idle %s connections: %.0f bytes/connection (HeapInuse+StackInuse+MSpanInuse+MCacheInuse), live heap %.0f bytes/connection, goroutines %d",
		n, kind, per, float64(afterLive-beforeLive)/float64(n), runtime.NumGoroutine())
	if !measure {
		if live := float64(afterLive-beforeLive) / float64(n); live > idleLiveHeapLimit {
			t.Errorf("%.0f bytes of live heap per idle connection, at most %d expected", live, idleLiveHeapLimit)
		}
		return
	}
	if per > 4096 {
		t.Errorf("%.0f bytes per idle connection, goal is at most 4096", per)
	}
}

// idleLiveHeapLimit bounds the live heap of one idle WebSocket connection in
// the network layer: ~1,850 B measured (2026-12-02, 15,000 connections), ~3,200 B
// while each connection held its own iovec barrier.
const idleLiveHeapLimit = 2400

// runIdleClient is the client process: it opens count upgraded connections
// (or, with kind "stream", raw streams that send one byte) to addr, prints
// "ready", and holds them until stdin closes.
func runIdleClient() int {
	addr, rest, _ := strings.Cut(os.Getenv(idleClientEnv), ",")
	countStr, kind, _ := strings.Cut(rest, ",")
	count, err := strconv.Atoi(countStr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "idle client: bad count", countStr)
		return 2
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	req := []byte(upgradeRequest("/ws", "Authorization: Token 0123456789abcdef0123456789abcdef\r\nTag: devices/device-00001/cmd\r\n"))
	conns := make([]net.Conn, 0, count)
	buf := make([]byte, 512)
	for i := range count {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "idle client: dial %d: %v\n", i, err)
			return 1
		}
		if kind == "stream" {
			if _, err := c.Write([]byte{0}); err != nil {
				fmt.Fprintf(os.Stderr, "idle client: write %d: %v\n", i, err)
				return 1
			}
			conns = append(conns, c)
			continue
		}
		if _, err := c.Write(req); err != nil {
			fmt.Fprintf(os.Stderr, "idle client: write %d: %v\n", i, err)
			return 1
		}
		var resp []byte
		for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
			k, err := c.Read(buf)
			if err != nil {
				fmt.Fprintf(os.Stderr, "idle client: read %d: %v\n", i, err)
				return 1
			}
			resp = append(resp, buf[:k]...)
		}
		if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) {
			fmt.Fprintf(os.Stderr, "idle client: response %q\n", resp)
			return 1
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return 0
}
