package netpoll

import (
	"fmt"
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
		time.Sleep(2 * time.Millisecond) // > parkAfter: the next wait parks
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
