// Copyright 2026 the Gatecast authors. Gatecast patch: not in upstream
// netpoll (see README.md, "Idle park").

package netpoll

import (
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// idleParks counts the pollers' parks (IdleParks); blockingWaits their
// waits blocked in epoll_wait (BlockingWaits).
var idleParks, blockingWaits atomic.Uint64

// IdleParks returns how many times the pollers parked on Go's netpoller
// instead of blocking in epoll_wait (for tests).
func IdleParks() uint64 { return idleParks.Load() }

// BlockingWaits returns how many times the pollers blocked in epoll_wait
// (for tests: with one P, none should once the bridge is open).
func BlockingWaits() uint64 { return blockingWaits.Load() }

// idleParker is how the poller waits once a non-blocking epoll_wait found
// nothing. Why: a goroutine blocked in a system call keeps its P, and with
// GOMAXPROCS=1 (a one-CPU machine or container, or a broker pinned to one
// core) that is the only P:
//   - idle, sysmon takes the P back 20 µs into every wait and hands it to
//     a spinning thread that finds nothing: each message reaching an idle
//     broker cost two thread wakeups more than on Go's own netpoller (5.4
//     context switches per message at 1,000 msg/s, NATS 3.1);
//   - busy, the P's run queue may still hold goroutines when the poller
//     comes back to wait (Gosched put the poller on the global queue,
//     which the scheduler serves ahead of the local one now and then): a
//     writer started by the last read's publishes, publishers released
//     from a stall. They wait until sysmon hands the P over, and sysmon,
//     which backs off to a 10 ms sleep on a server whose one P is always
//     running, took up to 5.5 ms to: in a seed fan-in at
//     6 M msg/s offered the broker's core was 23 % idle in gaps of 1-5 ms
//     while 200 MB waited in its sockets (docs/PERFORMANCE.md).
//
// A parked goroutine holds no P: what is runnable runs, and the runtime
// reports the events when its queues are empty. So with one P the poller
// always parks; with more, an idle P exists to run what is queued and
// sysmon leaves a P waiting in a system call alone for 10 ms, so it blocks
// as upstream does (a park costs two system calls more than blocking).
//
// It parks on a bridge: an epoll fd of its own that watches the poller's
// epoll fd with EPOLLONESHOT and is registered with the runtime's poller
// once, for good. A park arms the bridge (EPOLL_CTL_MOD), waits for the
// runtime to report it readable and takes its one event, which disarms it
// again. Why not simpler:
//   - the poller's epoll fd registered with the runtime directly, for
//     good: every event of every socket then reaches the runtime's epoll
//     too and wakes whichever thread waits there, busy or not (10-20 %
//     more CPU in a seed fan-in at 1.25 M msg/s, docs/PERFORMANCE.md);
//   - registered for the time of each park (a duplicate fd added, then
//     closed): adding an epoll fd to another makes the kernel walk every
//     fd it watches (the loop and path checks of epoll_ctl), so each park
//     cost time in proportion to the connections (7 % of the broker's core
//     in a fan-out to 2,000 subscribers; 70-90 % of it with 10,000
//     connections at 1,000 msg/s, docs/PERFORMANCE.md).
//
// Disarmed, the bridge costs each socket event one nested callback that
// finds nothing to do; it is added once, when the first park comes.
//
// Only the poller's goroutine (defaultPoll.Wait and, for close, its
// handler) uses it.
type idleParker struct {
	broken bool     // the bridge failed once: block from then on
	bridge *os.File // nil until the first park
	rc     syscall.RawConn
	bfd    int           // bridge's fd
	probe  [1]epollevent // takes the bridge's event
	err    error         // of the last probe
	tryFn  func(uintptr) bool
}

// wait returns the next events of epfd (or an error, as EpollWait),
// parking or blocking until there are some.
func (ip *idleParker) wait(epfd int, events []epollevent) (n int, err error) {
	if !ip.broken && runtime.GOMAXPROCS(0) == 1 && ip.park(epfd) {
		return EpollWait(epfd, events, 0)
	}
	blockingWaits.Add(1)
	return EpollWait(epfd, events, -1)
}

// park returns once epfd has events, or false at once if it cannot park
// (the bridge is then given up: broken).
func (ip *idleParker) park(epfd int) bool {
	if ip.bridge == nil && !ip.open(epfd) {
		ip.broken = true
		return false
	}
	arm := epollevent{events: syscall.EPOLLIN | syscall.EPOLLONESHOT}
	if EpollCtl(ip.bfd, syscall.EPOLL_CTL_MOD, epfd, &arm) != nil {
		ip.fail()
		return false
	}
	idleParks.Add(1)
	ip.err = nil
	if err := ip.rc.Read(ip.tryFn); err != nil || ip.err != nil {
		ip.fail()
		return false
	}
	return true
}

// try takes the bridge's event without blocking; done once it has one
// (the bridge is disarmed again) or the bridge failed.
func (ip *idleParker) try(uintptr) bool {
	n, err := EpollWait(ip.bfd, ip.probe[:], 0)
	if err != nil && err != syscall.EINTR {
		ip.err = err
		return true
	}
	return n > 0
}

// open makes the bridge watching epfd, disarmed, and registers it with
// the runtime's poller.
func (ip *idleParker) open(epfd int) bool {
	fd, err := EpollCreate(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	// The runtime registers only a non-blocking fd.
	if syscall.SetNonblock(fd, true) != nil {
		_ = syscall.Close(fd)
		return false
	}
	f := os.NewFile(uintptr(fd), "netpoll-bridge")
	rc, err := f.SyscallConn()
	// SetReadDeadline fails on a file the runtime did not register.
	if err != nil || f.SetReadDeadline(time.Time{}) != nil {
		_ = f.Close()
		return false
	}
	// Added with no event but EPOLLONESHOT: disarmed until a park arms it.
	// The bridge is registered with the runtime first, while it is empty,
	// so that this add is the only one that walks epfd's fds.
	off := epollevent{events: syscall.EPOLLONESHOT}
	if EpollCtl(fd, syscall.EPOLL_CTL_ADD, epfd, &off) != nil {
		_ = f.Close()
		return false
	}
	ip.bridge, ip.rc, ip.bfd = f, rc, fd
	ip.tryFn = ip.try
	return true
}

// fail gives the bridge up: the poller blocks as upstream from then on.
func (ip *idleParker) fail() {
	ip.broken = true
	ip.close()
}

// close releases the bridge (the poller is closing, or the bridge failed).
func (ip *idleParker) close() {
	if ip.bridge != nil {
		_ = ip.bridge.Close()
		ip.bridge, ip.rc = nil, nil
	}
}
