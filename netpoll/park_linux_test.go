package netpoll

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	cwnetpoll "github.com/cloudwego/netpoll"
)

// TestIdleParkDelivers runs the server with one P, where netpoll's poller
// parks on Go's netpoller while idle instead of blocking in epoll_wait
// (netpoll/upstream/poll_park_linux.go), and checks that no wakeup is lost
// across parks: every message sent after a pause long enough to park is
// read and echoed.
func TestIdleParkDelivers(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	cl := dialManual(t, s)
	h.waitOpened(t)
	before := cwnetpoll.IdleParks()
	for i := range 40 {
		time.Sleep(2 * time.Millisecond) // the poller goes idle and parks
		msg := fmt.Sprintf("after a pause %02d", i)
		cl.send(true, []byte(msg))
		if f := cl.expectMessage(); string(f.Payload) != msg {
			t.Fatalf("echo %d: %q", i, f.Payload)
		}
	}
	if parks := cwnetpoll.IdleParks() - before; parks < 20 {
		t.Fatalf("%d parks in 40 idle waits: the test no longer covers parking", parks)
	}
}

// TestIdleParkManyConnections parks the poller while it watches many
// connections and checks that a message on any of them wakes it, and that
// parking holds no descriptor per park: the idle park's bridge (an epoll
// fd watching the poller's) is opened once and kept, so the number of
// epoll descriptors of the process stays the same across parks.
func TestIdleParkManyConnections(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	const conns = 300
	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = dialManual(t, s)
		h.waitOpened(t)
	}
	echo := func(i int) {
		t.Helper()
		time.Sleep(2 * time.Millisecond) // the poller goes idle and parks
		cl := clients[(i*37)%conns]
		msg := fmt.Sprintf("connection %03d after a pause", (i*37)%conns)
		cl.send(true, []byte(msg))
		if f := cl.expectMessage(); string(f.Payload) != msg {
			t.Fatalf("echo %d: %q", i, f.Payload)
		}
	}
	for i := range 5 { // the first parks open the bridge
		echo(i)
	}
	epolls := countEpollFDs(t)
	before := cwnetpoll.IdleParks()
	for i := 5; i < 60; i++ {
		echo(i)
	}
	if parks := cwnetpoll.IdleParks() - before; parks < 25 {
		t.Fatalf("%d parks in 55 idle waits: the test no longer covers parking", parks)
	}
	if n := countEpollFDs(t); n != epolls {
		t.Fatalf("epoll descriptors %d after the parks, %d before: parking opens or leaks descriptors", n, epolls)
	}
}

// TestBusyPollerParks checks that with one P a busy poller parks too,
// never blocking in epoll_wait: a blocking wait holds the only P while
// goroutines may still be queued on it (a writer started by the last
// read, publishers released from a stall), and they then waited until
// sysmon handed the P over, up to milliseconds later
// (netpoll/upstream/poll_park_linux.go).
func TestBusyPollerParks(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := newTestHandler()
	s, _ := startServer(t, Config{}, h)
	clients := make([]*client, 20)
	for i := range clients {
		clients[i] = dialManual(t, s)
		h.waitOpened(t)
	}
	round := func(r int) {
		t.Helper()
		for i, cl := range clients { // back to back: no pause for the poller to go idle
			cl.send(true, []byte(fmt.Sprintf("round %03d from %02d", r, i)))
		}
		for i, cl := range clients {
			if f, want := cl.expectMessage(), fmt.Sprintf("round %03d from %02d", r, i); string(f.Payload) != want {
				t.Fatalf("echo %q, want %q", f.Payload, want)
			}
		}
	}
	round(0) // the first park opens the bridge
	blocked, parks := cwnetpoll.BlockingWaits(), cwnetpoll.IdleParks()
	for r := 1; r <= 50; r++ {
		round(r)
	}
	if n := cwnetpoll.BlockingWaits() - blocked; n != 0 {
		t.Fatalf("%d blocking epoll_wait calls with one P: the poller held the P while waiting", n)
	}
	if cwnetpoll.IdleParks() == parks {
		t.Fatal("no park in 50 rounds: the test no longer covers the busy poller's wait")
	}
}

// countEpollFDs counts the process's open epoll descriptors.
func countEpollFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "anon_inode:[eventpoll]" {
			n++
		}
	}
	return n
}
