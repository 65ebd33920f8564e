package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// workerEnv marks a process started as a fleet worker. The parent sets it
// when it re-runs its own executable; gatecast's main reaches the worker
// through RunCLI's hidden workerArg, a test binary through TestMain.
const workerEnv = "GATECAST_LOADTEST_WORKER"

// workerArg is the hidden scenario name of worker mode:
// `gatecast loadtest __worker` (stdin: commands, stdout: events).
const workerArg = "__worker"

// runWorkerProcess is a worker process's whole life: commands on stdin,
// events on stdout, errors on stderr. It returns the exit code.
func runWorkerProcess(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) int {
	if err := runWorker(ctx, stdin, stdout); err != nil {
		fmt.Fprintln(stderr, "gatecast loadtest worker:", err)
		return 1
	}
	return 0
}

// workerHandle is the parent's side of one worker.
type workerHandle struct {
	i     int
	in    io.WriteCloser
	enc   *json.Encoder
	dones chan event
	gone  chan struct{} // closed when the worker's event stream ended
	err   error         // why the stream ended early, set before gone is closed
	cmd   *exec.Cmd     // nil for an in-process worker
	exit  chan error    // in-process: runWorker's result
}

// fleet is the parent's handle on all workers. Its methods are called by
// the scenario goroutine only.
type fleet struct {
	hs  []*workerHandle
	agg *aggregator
	seq int
}

// startFleet starts one worker per spec: processes running this executable
// in worker mode, or goroutines when inProcess.
func startFleet(ctx context.Context, specs []workerSpec, inProcess bool, stderr io.Writer, agg *aggregator) (*fleet, error) {
	f := &fleet{agg: agg}
	if _, isFile := stderr.(*os.File); !isFile {
		// exec copies each worker's stderr from its own goroutine.
		stderr = &lockedWriter{w: stderr}
	}
	var exe string
	if !inProcess {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("finding this executable to start workers: %w", err)
		}
	}
	for i, spec := range specs {
		h := &workerHandle{i: i, dones: make(chan event, 4), gone: make(chan struct{})}
		var out io.ReadCloser
		if inProcess {
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			h.in, out, h.exit = inW, outR, make(chan error, 1)
			go func() {
				err := runWorker(ctx, inR, outW)
				_ = inR.CloseWithError(errors.New("worker stopped"))
				_ = outW.Close()
				h.exit <- err
			}()
		} else {
			cmd := exec.Command(exe, "loadtest", workerArg)
			cmd.Env = append(os.Environ(), workerEnv+"=1")
			cmd.Stderr = stderr
			// Own process group: a Ctrl-C in the terminal reaches the
			// parent only, which then stops the workers in order. If the
			// parent dies, the kernel kills the worker.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			var err error
			if h.in, err = cmd.StdinPipe(); err != nil {
				f.abort()
				return nil, err
			}
			if out, err = cmd.StdoutPipe(); err != nil {
				f.abort()
				return nil, err
			}
			if err := cmd.Start(); err != nil {
				f.abort()
				return nil, fmt.Errorf("starting worker %d: %w", i, err)
			}
			h.cmd = cmd
		}
		h.enc = json.NewEncoder(h.in)
		f.hs = append(f.hs, h)
		go f.read(h, out)
		if err := h.enc.Encode(spec); err != nil {
			f.abort()
			return nil, fmt.Errorf("worker %d: %w", i, err)
		}
	}
	return f, nil
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// read dispatches one worker's events until its stream ends.
func (f *fleet) read(h *workerHandle, out io.Reader) {
	defer func() {
		f.agg.workerGone(h.i)
		close(h.gone)
	}()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 256<<10), 64<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			h.err = fmt.Errorf("worker %d: bad event: %w", h.i, err)
			return
		}
		switch ev.Ev {
		case "tick":
			if ev.Tick != nil {
				f.agg.addTick(h.i, ev.Tick)
			}
		case "done":
			h.dones <- ev
		}
	}
	h.err = sc.Err()
}

// do sends each worker its command (mk(i)) and waits for every answer.
func (f *fleet) do(ctx context.Context, mk func(i int) command) ([]status, error) {
	f.seq++
	for i, h := range f.hs {
		c := mk(i)
		c.Seq = f.seq
		if err := h.enc.Encode(c); err != nil {
			return nil, fmt.Errorf("worker %d: %w", i, err)
		}
	}
	out := make([]status, len(f.hs))
	for i, h := range f.hs {
		var ev event
		// Answers to commands abandoned earlier (the context ended while
		// a worker was still busy) arrive first: skip them.
		for ev.Seq < f.seq {
			select {
			case ev = <-h.dones:
			case <-h.gone:
				select {
				case ev = <-h.dones:
				default:
					return nil, fmt.Errorf("worker %d stopped: %v", i, h.err)
				}
			case <-ctx.Done():
				// Cut the workers' command short; their answers come
				// later and are skipped by the next command.
				for _, h := range f.hs {
					_ = h.enc.Encode(command{Op: "abort"})
				}
				return nil, ctx.Err()
			}
		}
		if ev.Seq != f.seq || ev.Status == nil {
			return nil, fmt.Errorf("worker %d: answer out of order", i)
		}
		if ev.Err != "" {
			return nil, fmt.Errorf("worker %d: %s", i, ev.Err)
		}
		out[i] = *ev.Status
	}
	return out, nil
}

// all sends the same command to every worker.
func (f *fleet) all(ctx context.Context, c command) ([]status, error) {
	return f.do(ctx, func(int) command { return c })
}

// close stops every worker in order (connections closed, last tick sent)
// and returns their final state. Workers that do not finish in time are
// killed (they are this process's children).
func (f *fleet) close(ctx context.Context) ([]status, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := f.all(ctx, command{Op: "close"})
	for _, h := range f.hs {
		_ = h.in.Close()
	}
	for _, h := range f.hs {
		if werr := f.wait(h, 10*time.Second); werr != nil && err == nil {
			err = werr
		}
	}
	return st, err
}

// abort stops the workers started so far without ceremony.
func (f *fleet) abort() {
	for _, h := range f.hs {
		_ = h.in.Close()
	}
	for _, h := range f.hs {
		_ = f.wait(h, 5*time.Second)
	}
}

// wait waits for a worker to end after its input was closed.
func (f *fleet) wait(h *workerHandle, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	if h.cmd == nil {
		select {
		case err := <-h.exit:
			<-h.gone
			return err
		case <-t.C:
			return fmt.Errorf("worker %d did not stop", h.i)
		}
	}
	select {
	case <-h.gone:
	case <-t.C:
		_ = h.cmd.Process.Kill()
		<-h.gone
	}
	if err := h.cmd.Wait(); err != nil {
		return fmt.Errorf("worker %d: %w", h.i, err)
	}
	return nil
}
