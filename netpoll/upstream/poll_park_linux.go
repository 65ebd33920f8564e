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

// idleParks counts the pollers' parks (IdleParks).
var idleParks atomic.Uint64

// IdleParks returns how many times the pollers parked on Go's netpoller
// instead of blocking in epoll_wait (for tests).
func IdleParks() uint64 { return idleParks.Load() }

// parkAfter: the poller parks instead of blocking in epoll_wait when its
// last blocking wait took this long or longer (an idle or lightly loaded
// poller). A busy one, whose next event is a moment away, blocks as
// upstream does.
const parkAfter = 200 * time.Microsecond

// idleParker is how the poller waits once a non-blocking epoll_wait found
// nothing. Why: a goroutine blocked in a system call keeps its P, and with
// GOMAXPROCS=1 (a one-CPU machine or container, or a broker pinned to one
// core) sysmon takes that P back 20 µs into every idle wait and hands it
// to a spinning thread that finds nothing: each message reaching an idle
// broker cost two thread wakeups more than on Go's own netpoller (5.4
// context switches per message at 1,000 msg/s, NATS 3.1). A parked
// goroutine holds no P.
//
// It parks by registering a duplicate of the epoll fd (readable while any
// fd it watches has an event) with the runtime's poller for the time of
// the wait only: a registration kept for good costs the kernel a nested
// wakeup callback on every event of every socket, busy or not (10-20 %
// more CPU in a seed fan-in at 1.25 M msg/s, docs/PERFORMANCE.md).
//
// Only the poller's goroutine (defaultPoll.Wait) uses it.
type idleParker struct {
	blocked  time.Duration // how long the last wait took
	broken   bool          // the runtime refused the fd once: block from then on
	nonblock bool          // O_NONBLOCK set on the epoll file (shared by its duplicates)
	// The state of one park, kept here so that try is bound once (tryFn).
	epfd   int
	events []epollevent
	n      int
	err    error
	tryFn  func(uintptr) bool
}

// wait returns the next events of epfd (or an error, as EpollWait),
// parking or blocking until there are some.
func (ip *idleParker) wait(epfd int, events []epollevent) (n int, err error) {
	start := time.Now()
	parked := false
	// Only with one P: with more, an idle P exists and sysmon leaves a P
	// waiting in a system call alone for 10 ms, so there is nothing to
	// save, and a park costs five system calls and three small allocations
	// (the os.File and its RawConn).
	if ip.blocked >= parkAfter && !ip.broken && runtime.GOMAXPROCS(0) == 1 {
		n, err, parked = ip.park(epfd, events)
	}
	if !parked {
		n, err = EpollWait(epfd, events, -1)
	}
	ip.blocked = time.Since(start)
	return n, err
}

// park waits on the runtime's poller; parked=false when it could not.
func (ip *idleParker) park(epfd int, events []epollevent) (n int, err error, parked bool) {
	r0, _, e0 := syscall.Syscall(syscall.SYS_FCNTL, uintptr(epfd), syscall.F_DUPFD_CLOEXEC, 0)
	if e0 != 0 {
		return 0, nil, false
	}
	fd := int(r0)
	if !ip.nonblock {
		if syscall.SetNonblock(fd, true) != nil {
			_ = syscall.Close(fd)
			ip.broken = true
			return 0, nil, false
		}
		ip.nonblock = true
	}
	f := os.NewFile(uintptr(fd), "epoll")
	rc, rerr := f.SyscallConn()
	// SetReadDeadline fails on a file the runtime did not register.
	if rerr != nil || f.SetReadDeadline(time.Time{}) != nil {
		_ = f.Close()
		ip.broken = true
		return 0, nil, false
	}
	if ip.tryFn == nil {
		ip.tryFn = ip.try
	}
	ip.epfd, ip.events = epfd, events
	idleParks.Add(1)
	rerr = rc.Read(ip.tryFn)
	n, err = ip.n, ip.err
	ip.events, ip.err = nil, nil
	_ = f.Close()
	if err == nil && rerr != nil {
		err = rerr
	}
	return n, err, true
}

// try is one non-blocking epoll_wait; done once it found events or failed.
func (ip *idleParker) try(uintptr) bool {
	ip.n, ip.err = EpollWait(ip.epfd, ip.events, 0)
	return ip.n > 0 || ip.err != nil && ip.err != syscall.EINTR
}
