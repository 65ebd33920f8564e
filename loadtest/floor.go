package loadtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// The socket floor of `loadtest revoke --kind`: what this machine needs to
// get one small close frame to each of N loopback WebSocket clients, with
// no broker at all.
//
// A revocation ends with the broker writing one 4-byte close frame per
// affected socket. On loopback, Linux delivers a write to the receiving
// socket in the sender's context (the whole TCP receive path runs inside
// the write system call, ~6-7 µs on the 2-core VM of docs/PERFORMANCE.md),
// so N closes cost N times that in kernel time, on cores the clients'
// readers share. socketFloor measures it in the same run, before the
// workers start, so that the report can put the machine's part next to the
// broker's:
//
//   - N TCP socket pairs on 127.0.0.1 in this process, made with raw system
//     calls (no Go netpoller, no finalizers);
//   - GOMAXPROCS writer goroutines, each writing the close frame
//     {0x88, 0x02, 0x0f, 0xa2} (close 4002) once to its share of the server
//     sides (i, i+W, …), as the broker's writer pool does;
//   - GOMAXPROCS reader goroutines, each in an epoll_wait loop over its
//     share of the client sides (non-blocking, EPOLLIN, level-triggered),
//     recording for each socket the time at which its 4 bytes were read
//     (time.Since the start, Go's monotonic clock: CLOCK_MONOTONIC) and
//     then removing it from the epoll set.
//
// It needs 2N open files. When they do not fit under RLIMIT_NOFILE (the
// soft limit) with floorMargin to spare, beside the files already open
// (/proc/self/fd), it measures the largest N' that fits and multiplies
// every figure by N/N' (Scaled, Scale): the cost is per socket, so the
// floor grows linearly with N.

// floorFrame is the close frame the floor writes: FIN + close, 2 bytes of
// payload, code 4002, unmasked (server to client).
var floorFrame = [4]byte{0x88, 0x02, 0x0f, 0xa2}

// floorDeadline bounds the floor of a revoke --kind run, set-up included
// (~10,000 pairs are made in well under a second here).
const floorDeadline = 20 * time.Second

// floorMargin is the open files left free beside the floor's sockets.
const floorMargin = 500

// floorClock names the clock of the read times.
const floorClock = "time.Since the first write was released (Go's monotonic clock, CLOCK_MONOTONIC)"

// FloorReport is the socket floor of a run, in ms. With Scaled, the
// figures are those measured on MeasuredPairs sockets multiplied by Scale
// (Pairs / MeasuredPairs).
type FloorReport struct {
	Pairs         int     `json:"pairs"`          // sockets the floor is for (the affected sessions)
	MeasuredPairs int     `json:"measured_pairs"` // sockets measured
	Scaled        bool    `json:"scaled"`
	Scale         float64 `json:"scale,omitempty"` // the figures' factor when scaled
	Writers       int     `json:"writers"`
	Readers       int     `json:"readers"`
	P50Ms         float64 `json:"p50_ms"`   // first write released → a socket's frame read
	P99Ms         float64 `json:"p99_ms"`   //
	LastMs        float64 `json:"last_ms"`  // … the last socket's frame read
	WriteMs       float64 `json:"write_ms"` // first write released → the last write returned
	FDLimit       int     `json:"fd_limit"` // RLIMIT_NOFILE (soft) at the measurement
	FDsOpen       int     `json:"fds_open"` // files open before it
	Clock         string  `json:"clock"`
	Error         string  `json:"error,omitempty"` // the floor could not be measured (the figures are then 0)

	times []time.Duration // per measured socket, unscaled
}

// floorLine is the line printed under the revoke --kind table.
func floorLine(f *FloorReport) string {
	if f.Error != "" {
		return fmt.Sprintf("socket floor (%d raw loopback sockets): not measured: %s", f.Pairs, f.Error)
	}
	scaled := ""
	if f.Scaled {
		scaled = fmt.Sprintf("; scaled: %d measured (the open files allow no more), figures ×%.2f", f.MeasuredPairs, f.Scale)
	}
	return fmt.Sprintf("socket floor (%d raw loopback sockets, %d writers, same machine%s): p50 %.1f p99 %.1f last %.1f ms (writes %.1f ms)",
		f.Pairs, f.Writers, scaled, f.P50Ms, f.P99Ms, f.LastMs, f.WriteMs)
}

// socketFloor measures the floor for n sockets; deadline bounds the whole
// measurement (set-up included). Every file it opens is closed on return.
func socketFloor(ctx context.Context, n int, deadline time.Duration) (FloorReport, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return FloorReport{Pairs: n}, fmt.Errorf("socket floor: RLIMIT_NOFILE: %w", err)
	}
	return socketFloorLimit(ctx, n, deadline, int(min(rl.Cur, 1<<30)))
}

// floorFit is the number of socket pairs, at most n, that fit under limit
// open files beside open ones, with floorMargin and the floor's own other
// files (the listener, one epoll per reader) to spare.
func floorFit(n, limit, open, readers int) int {
	room := limit - open - floorMargin - 1 - readers
	return max(0, min(n, room/2))
}

// openFDs counts this process's open files (the directory read's own is
// left out).
func openFDs() (int, error) {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	return max(0, len(es)-1), nil
}

// socketFloorLimit is socketFloor with the open files limit given.
func socketFloorLimit(ctx context.Context, n int, deadline time.Duration, limit int) (FloorReport, error) {
	procs := runtime.GOMAXPROCS(0)
	rep := FloorReport{Pairs: n, Writers: procs, Readers: procs, FDLimit: limit, Clock: floorClock}
	if n <= 0 {
		return rep, errors.New("socket floor: no sockets")
	}
	open, err := openFDs()
	if err != nil {
		return rep, fmt.Errorf("socket floor: %w", err)
	}
	rep.FDsOpen = open
	m := floorFit(n, limit, open, procs)
	if m == 0 {
		return rep, fmt.Errorf("socket floor: no room for a socket pair: %d files open, limit %d", open, limit)
	}
	rep.MeasuredPairs = m
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()

	fs := &floorSockets{listener: -1}
	defer fs.close()
	if err := fs.open(ctx, m); err != nil {
		return rep, fmt.Errorf("socket floor: %w", err)
	}
	times, writeEnd, err := fs.measure(ctx, procs, procs)
	if err != nil {
		return rep, fmt.Errorf("socket floor: %w", err)
	}
	rep.times = times
	ns := make([]int64, len(times))
	for i, d := range times {
		ns[i] = int64(d)
	}
	lat := exactLatency(ns)
	scale := 1.0
	if m < n {
		rep.Scaled, scale = true, float64(n)/float64(m)
		rep.Scale = round3(scale)
	}
	rep.P50Ms, rep.P99Ms, rep.LastMs = round3(lat.P50*scale), round3(lat.P99*scale), round3(lat.Max*scale)
	rep.WriteMs = round3(float64(writeEnd) / 1e6 * scale)
	return rep, nil
}

// floorSockets are the floor's files: the listener, the pairs (client i is
// connected to server i) and the readers' epolls.
type floorSockets struct {
	listener        int
	clients, server []int
	epolls          []int
}

// close closes every file (the client sides first; with SO_LINGER 0 each
// close resets the connection, which leaves no TIME_WAIT behind to hold
// ports the workers' connections may want).
func (fs *floorSockets) close() {
	for _, fds := range [][]int{fs.clients, fs.server, fs.epolls} {
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}
	if fs.listener >= 0 {
		syscall.Close(fs.listener)
	}
	fs.clients, fs.server, fs.epolls, fs.listener = nil, nil, nil, -1
}

// timeval is the time left before ctx's deadline, at most 1 s, as a
// socket timeout (SO_RCVTIMEO bounds an accept).
func timeval(ctx context.Context) *syscall.Timeval {
	d := time.Second
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	tv := syscall.NsecToTimeval(max(int64(d), int64(time.Millisecond)))
	return &tv
}

// open makes m connected pairs: a non-blocking connect, then the accept of
// that connection, one pair at a time (the listen backlog never fills).
// The client sides are non-blocking, and so are the server sides (a 4-byte
// write to an idle socket never waits).
func (fs *floorSockets) open(ctx context.Context, m int) error {
	const flags = syscall.SOCK_STREAM | syscall.SOCK_CLOEXEC
	ln, err := syscall.Socket(syscall.AF_INET, flags, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	fs.listener = ln // closed by close if open fails
	loop := [4]byte{127, 0, 0, 1}
	if err := syscall.Bind(ln, &syscall.SockaddrInet4{Addr: loop}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := syscall.Listen(ln, 128); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	sa, err := syscall.Getsockname(ln)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	addr, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		return errors.New("getsockname: not IPv4")
	}
	linger := &syscall.Linger{Onoff: 1, Linger: 0}
	fs.clients, fs.server = make([]int, 0, m), make([]int, 0, m)
	for range m {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%d of %d pairs connected: %w", len(fs.server), m, err)
		}
		c, err := syscall.Socket(syscall.AF_INET, flags|syscall.SOCK_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		fs.clients = append(fs.clients, c)
		if err := syscall.SetsockoptLinger(c, syscall.SOL_SOCKET, syscall.SO_LINGER, linger); err != nil {
			return fmt.Errorf("SO_LINGER: %w", err)
		}
		if err := syscall.Connect(c, &syscall.SockaddrInet4{Addr: loop, Port: addr.Port}); err != nil && err != syscall.EINPROGRESS {
			return fmt.Errorf("connect: %w", err)
		}
		s, err := fs.accept(ctx, c)
		if err != nil {
			return err
		}
		fs.server = append(fs.server, s)
		if err := syscall.SetsockoptLinger(s, syscall.SOL_SOCKET, syscall.SO_LINGER, linger); err != nil {
			return fmt.Errorf("SO_LINGER: %w", err)
		}
		// As the broker's sockets (Go sets it on every TCP connection).
		if err := syscall.SetsockoptInt(s, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
			return fmt.Errorf("TCP_NODELAY: %w", err)
		}
	}
	// The listener is no longer needed.
	syscall.Close(fs.listener)
	fs.listener = -1
	return nil
}

// accept accepts the connection of client c, whose connect is under way
// (the accept queue holds it once c is established).
func (fs *floorSockets) accept(ctx context.Context, c int) (int, error) {
	local, err := syscall.Getsockname(c)
	if err != nil {
		return 0, fmt.Errorf("getsockname: %w", err)
	}
	// Bounded by ctx's deadline: each accept waits for SO_RCVTIMEO at
	// most; a signal (the runtime's preemption) interrupts it early.
	for range 10_000 {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("accept: %w", err)
		}
		if err := syscall.SetsockoptTimeval(fs.listener, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, timeval(ctx)); err != nil {
			return 0, fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		s, peer, err := syscall.Accept4(fs.listener, syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK)
		if err == syscall.EINTR || err == syscall.EAGAIN {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("accept: %w", err)
		}
		if p, ok := peer.(*syscall.SockaddrInet4); !ok || p.Port != local.(*syscall.SockaddrInet4).Port {
			syscall.Close(s)
			return 0, fmt.Errorf("accept: a connection from %v, not from the floor's client %v", peer, local)
		}
		if e, err := syscall.GetsockoptInt(c, syscall.SOL_SOCKET, syscall.SO_ERROR); err != nil || e != 0 {
			syscall.Close(s)
			return 0, fmt.Errorf("connect: SO_ERROR %d, %v", e, err)
		}
		return s, nil
	}
	return 0, errors.New("accept: interrupted 10,000 times")
}

// floorEpollWait is how long one epoll_wait of a reader blocks at most.
const floorEpollWait = 50 // ms

// measure releases the writers and waits for the readers: the time at
// which each socket's frame was read, and when the last write returned,
// both since the release.
func (fs *floorSockets) measure(ctx context.Context, writers, readers int) ([]time.Duration, time.Duration, error) {
	m := len(fs.clients)
	times := make([]time.Duration, m)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fs.epolls = make([]int, 0, readers)
	for range readers {
		ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return nil, 0, fmt.Errorf("epoll_create1: %w", err)
		}
		fs.epolls = append(fs.epolls, ep)
	}
	for i, c := range fs.clients {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(c), Pad: int32(i)}
		if err := syscall.EpollCtl(fs.epolls[i%readers], syscall.EPOLL_CTL_ADD, c, &ev); err != nil {
			return nil, 0, fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	var (
		start   = make(chan struct{})
		t0      time.Time
		wg      sync.WaitGroup
		errMu   sync.Mutex
		firstEr error
		ends    = make([]time.Duration, writers)
	)
	fail := func(err error) {
		errMu.Lock()
		if firstEr == nil {
			firstEr = err
		}
		errMu.Unlock()
		cancel() // the others stop too
	}
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fs.read(ctx, fs.epolls[r], (m-r+readers-1)/readers, times, &t0, start); err != nil {
				fail(err)
			}
		}()
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			frame := floorFrame
			for i := w; i < m; i += writers {
				if n, err := syscall.Write(fs.server[i], frame[:]); err != nil || n != len(frame) {
					fail(fmt.Errorf("write: %d bytes, %v", n, err))
					return
				}
			}
			ends[w] = time.Since(t0)
		}()
	}
	// Let the readers block in epoll_wait for longer than the 10 ms after
	// which the runtime hands a P blocked in a system call to other work:
	// the writers then find every core free when released.
	if err := sleep(ctx, 30*time.Millisecond); err != nil {
		close(start)
		wg.Wait()
		return nil, 0, err
	}
	t0 = time.Now()
	close(start)
	wg.Wait()
	if firstEr != nil {
		return nil, 0, firstEr
	}
	var last time.Duration
	for _, e := range ends {
		last = max(last, e)
	}
	return times, last, nil
}

// read is one reader: epoll_wait over its share of the client sides until
// want of them have their frame (or ctx ends). t0 is read once start is
// closed.
func (fs *floorSockets) read(ctx context.Context, ep, want int, times []time.Duration, t0 *time.Time, start <-chan struct{}) error {
	events := make([]syscall.EpollEvent, 128)
	partial := map[int32][]byte{} // the bytes so far of a frame read in pieces
	var buf [len(floorFrame)]byte
	done := 0
	for done < want {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%d of %d frames read: %w", done, want, err)
		}
		k, err := syscall.EpollWait(ep, events, floorEpollWait)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:k] {
			fd, i := int(ev.Fd), ev.Pad
			have := partial[i]
			n, err := syscall.Read(fd, buf[:len(floorFrame)-len(have)])
			if err == syscall.EAGAIN || err == syscall.EINTR {
				continue
			}
			if err != nil || n == 0 {
				return fmt.Errorf("read socket %d: %d bytes, %v", i, n, err)
			}
			frame := buf[:n]
			if len(have) > 0 || n < len(floorFrame) {
				if have = append(have, frame...); len(have) < len(floorFrame) {
					partial[i] = have
					continue
				}
				frame = have
			}
			now := time.Now()
			<-start // closed before any write: never blocks here
			times[i] = now.Sub(*t0)
			if [len(floorFrame)]byte(frame) != floorFrame {
				return fmt.Errorf("socket %d: read % x, want % x", i, frame, floorFrame[:])
			}
			delete(partial, i)
			if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, fd, nil); err != nil {
				return fmt.Errorf("epoll_ctl del: %w", err)
			}
			done++
		}
	}
	return nil
}
