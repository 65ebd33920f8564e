package loadtest

import (
	"syscall"
	"time"
	"unsafe"
)

// A clock shared by the parent and its worker processes, for timing an
// event (an admin call) in one process against frames read in others.
//
// Linux's CLOCK_MONOTONIC is one clock for the whole system: every
// process reads the same value at the same instant, and, unlike the wall
// clock (time.Now().UnixNano(), CLOCK_REALTIME), NTP never steps it. Go's
// own monotonic readings come from the same clock but are exposed only
// relative to the process's start, so monoNow anchors them once to a
// clock_gettime(CLOCK_MONOTONIC) read at start-up: later reads cost what
// time.Now costs (vDSO, no system call) and agree across processes to
// within the anchoring read (a microsecond or so).

// clockMonotonic is CLOCK_MONOTONIC of <linux/time.h>.
const clockMonotonic = 1

var monoBase, monoAnchor = anchorMono()

// anchorMono returns a Go time and the CLOCK_MONOTONIC nanoseconds of the
// same instant (the middle of the system call).
func anchorMono() (time.Time, int64) {
	var ts syscall.Timespec
	before := time.Now()
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	after := time.Now()
	if errno != 0 {
		// Cannot happen on Linux; the clock is then per process (still
		// monotonic), which in-process workers share anyway.
		return before, 0
	}
	mid := before.Add(after.Sub(before) / 2)
	return mid, ts.Nano()
}

// monoNow returns CLOCK_MONOTONIC in nanoseconds: the same value in every
// process of the machine at the same instant.
func monoNow() int64 {
	return monoAnchor + int64(time.Since(monoBase))
}
