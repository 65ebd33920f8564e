package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// FloodReport is the flood scenario: connections that stream small frames
// as fast as the broker takes them.
type FloodReport struct {
	Conns       int     `json:"conns"`
	ValidToken  bool    `json:"valid_token"`
	Frame       string  `json:"frame"`
	FrameBytes  int     `json:"frame_bytes"`
	WriteBytes  int     `json:"write_bytes"`
	Upgraded    int     `json:"upgraded"`
	ClosedByBkr int     `json:"closed_by_broker"`  // the broker ended the TCP connection (FIN or RST) before we did
	StillOpen   int     `json:"still_open_at_end"` // open after the stream and the drain: closed by us
	CloseFrames int     `json:"close_frames"`      // connections that got a close frame
	CloseCodes  []int   `json:"close_codes"`       // the distinct codes seen
	Written     int64   `json:"written_bytes"`     // in all
	WrittenPS   int64   `json:"written_bytes_per_second"`
	Frames      int64   `json:"frames_written"`                  // whole frames written, in all
	AfterClose  int64   `json:"written_after_close_frame_bytes"` // written after the close frame arrived, in all
	StreamSecs  float64 `json:"stream_seconds"`
	// Lifetime of each connection that the broker closed, from the
	// completed upgrade to our TCP seeing EOF or RST (read or write side,
	// whichever first), in seconds.
	LifetimeMin  float64     `json:"lifetime_min_seconds"`
	LifetimeMax  float64     `json:"lifetime_max_seconds"`
	CloseFrameAt float64     `json:"close_frame_max_seconds"` // latest close frame, from its connection's upgrade
	Connections  []FloodConn `json:"connections"`
}

// FloodConn is one flooding connection.
type FloodConn struct {
	Index        int     `json:"index"`
	Upgraded     bool    `json:"upgraded"`
	Error        string  `json:"error,omitempty"`
	CloseCode    int     `json:"close_code,omitempty"`
	CloseReason  string  `json:"close_reason,omitempty"`
	CloseFrameAt float64 `json:"close_frame_after_seconds"` // from the upgrade
	// EndedAt: from the upgrade until the connection ended (by the
	// broker: EOF/RST on read, or a write error; by us: StillOpen).
	EndedAt    float64 `json:"ended_after_seconds"`
	EndedBy    string  `json:"ended_by"` // eof, reset, write_error, error, client
	ReadEnd    string  `json:"read_end"`
	WriteError string  `json:"write_error,omitempty"`
	Written    int64   `json:"written_bytes"`
	AfterClose int64   `json:"written_after_close_frame_bytes"`
	FramesRead int64   `json:"frames_read"`
	Upgrade    float64 `json:"upgraded_at_seconds"` // from the start of the run
	// CloseSentToEnd (valid token): from our close frame, written when
	// the stream stopped, until the broker closed: how long it took to
	// work through what it had buffered.
	CloseSentToEnd float64 `json:"close_sent_to_end_seconds,omitempty"`
}

type floodConn struct {
	idx        int
	rc         *rawConn
	written    atomic.Int64
	afterClose atomic.Int64
	gotClose   atomic.Bool
	writeErrAt time.Time
	writeErr   error
	read       readEnd
	readDone   chan struct{}
	writeDone  atomic.Bool // the stream ended with a write error
	byUs       atomic.Bool
	// closeSentAt: when our close frame was written (valid token, after
	// the stream).
	closeSentAt time.Time
}

// ended reports whether the connection is known to be closed.
func (fc *floodConn) ended() bool {
	if fc.rc == nil || fc.writeDone.Load() {
		return true
	}
	select {
	case <-fc.readDone:
		return true
	default:
		return false
	}
}

// floodPayload is the frame a flood streams.
func (r *attackRun) floodPayload(topic string) (ws.OpCode, []byte) {
	switch r.o.Frame {
	case "ping":
		return ws.OpPing, nil
	case "text":
		return ws.OpText, []byte("{}")
	case "publish":
		return ws.OpText, []byte(`{"tag":"` + topic + `","message":1}`)
	}
	return ws.OpText, nil
}

func (r *attackRun) flood() error {
	o := r.o
	ctx := r.abortCtx
	fr := &FloodReport{Conns: o.Conns, ValidToken: o.ValidToken, Frame: o.Frame}
	r.rep.Flood = fr

	// Credentials: an invalid token (refused with 4003 after the upgrade),
	// or a token that may read one topic and write none.
	secret := "gc_" + "invalidinvalidinvalidinvalidinvalidinvali" + "d"
	sub := "atk-" + r.stamp + "/sub"
	deny := "atk-" + r.stamp + "/denied"
	if o.ValidToken {
		tok, err := r.createToken(ctx, "flood")
		if err != nil {
			return err
		}
		if err := r.grant(ctx, tok, "atk-"+r.stamp+"/sub", "read"); err != nil {
			return err
		}
		secret = tok.Secret
	}
	op, payload := r.floodPayload(deny)
	fr.FrameBytes = len(appendClientFrame(nil, op, payload, [4]byte{}))
	req := upgradeRequest(r.target, secret, sub)

	conns := make([]*floodConn, o.Conns)
	var written, frames atomic.Int64
	r.watch.setStatus(func(p *AttackPoint) string {
		p.Written = written.Load()
		for _, fc := range conns {
			if fc != nil && !fc.ended() {
				p.Open++
			}
		}
		return fmt.Sprintf("flood %d/%d open, written %s (%s/s)", p.Open, o.Conns, fmtSize(p.Written), fmtSize(int64(float64(p.Written)/max(p.T, 0.001))))
	})

	// Connect all first, then stream from all at once.
	var dialErr error
	for i := range conns {
		fc := &floodConn{idx: i, readDone: make(chan struct{})}
		conns[i] = fc
		rc, err := dialRaw(ctx, r.target, nil, req, o.DialTimeout)
		if err != nil {
			r.errs.add(upgradeError(err))
			dialErr = errors.Join(dialErr, fmt.Errorf("connection %d: %w", i, err))
			close(fc.readDone)
			continue
		}
		fc.rc = rc
		fr.Upgraded++
		go func() {
			defer close(fc.readDone)
			fc.read = readFrames(rc.r, nil, func(int, string) { fc.gotClose.Store(true) })
		}()
	}
	if fr.Upgraded == 0 {
		return fmt.Errorf("flood: no connection was upgraded: %w", dialErr)
	}

	streamStart := time.Now()
	streamCtx, stopStream := context.WithTimeout(ctx, o.Duration)
	defer stopStream()
	var wg sync.WaitGroup
	for _, fc := range conns {
		if fc.rc == nil {
			continue
		}
		buf := repeatFrames(op, payload, int(o.WriteSize))
		fr.WriteBytes = len(buf)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fc.stream(streamCtx, buf, fr.FrameBytes, o.MaxBytes, &written, &frames)
		}()
	}
	wg.Wait()
	streamEnd := time.Now()
	fr.StreamSecs = round3(streamEnd.Sub(streamStart).Seconds())

	// The stream is over (duration, --max-bytes, or the broker closed).
	// A valid session says goodbye with a close frame (the broker reaches
	// it once it has worked through what it buffered); a refused one does
	// not, as an attacker would not. Either way the broker gets --drain to
	// close the connection, unless a ceiling was passed (closed at once).
	if o.ValidToken && !r.aborted() {
		for _, fc := range conns {
			if fc.rc != nil && !fc.ended() {
				_ = fc.rc.c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = fc.rc.c.Write(closeFrame(ws.StatusNormalClosure))
				fc.closeSentAt = time.Now()
			}
		}
	}
	drain := o.Drain
	if r.aborted() {
		drain = 0
	}
	drainCtx, cancelDrain := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancelDrain()
	for _, fc := range conns {
		if fc.rc == nil {
			continue
		}
		select {
		case <-fc.readDone:
			continue
		case <-drainCtx.Done():
		}
		// Not closed by the broker in time: close it ourselves (a
		// reset, so that the broker has nothing left to flush).
		fc.byUs.Store(true)
		_ = closeRST(fc.rc.c)
		<-fc.readDone
	}
	for _, fc := range conns {
		if fc.rc != nil {
			fc.rc.c.Close()
		}
	}

	// The broker's RSS once the stream is over and every connection is
	// gone: what it kept.
	time.Sleep(500 * time.Millisecond)
	r.watch.now()

	r.floodReport(fr, conns, written.Load(), frames.Load(), streamEnd.Sub(streamStart))
	if r.aborted() {
		return context.Cause(ctx)
	}
	return nil
}

// stream writes buf (whole frames of frameLen bytes) as fast as the broker
// takes it until ctx ends, maxBytes are written or a write fails.
func (fc *floodConn) stream(ctx context.Context, buf []byte, frameLen int, maxBytes int64, written, frames *atomic.Int64) {
	c := fc.rc.c
	off := 0 // where in buf the next write starts: frames stay whole across short writes
	var total int64
	// The limit is whole frames: a cut frame would swallow the bytes that
	// follow it (our close frame).
	if maxBytes > 0 {
		maxBytes = max(int64(frameLen), maxBytes-maxBytes%int64(frameLen))
	}
	for ctx.Err() == nil {
		chunk := buf[off:]
		if maxBytes > 0 && total+int64(len(chunk)) >= maxBytes {
			chunk = chunk[:maxBytes-total]
			if len(chunk) == 0 {
				break
			}
		}
		// A deadline so that a broker that stops reading cannot hold us
		// past the end of the stream (TCP pushes back: writes block).
		_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Write(chunk)
		if n > 0 {
			total += int64(n)
			fc.written.Add(int64(n))
			written.Add(int64(n))
			frames.Add(int64((off+n)/frameLen - off/frameLen))
			if fc.gotClose.Load() {
				fc.afterClose.Add(int64(n))
			}
			off = (off + n) % len(buf)
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			fc.writeErrAt, fc.writeErr = time.Now(), err
			fc.writeDone.Store(true)
			return
		}
	}
	// A write cut short by its deadline may have left a frame half
	// written: complete it, so that what follows (our close frame) is
	// read as a frame.
	if rest := (frameLen - off%frameLen) % frameLen; rest > 0 {
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Write(buf[off : off+rest])
		fc.written.Add(int64(n))
		written.Add(int64(n))
		if err != nil {
			fc.writeErrAt, fc.writeErr = time.Now(), err
			fc.writeDone.Store(true)
			return
		}
		frames.Add(1)
	}
	_ = c.SetWriteDeadline(time.Time{})
}

// upgradeError names a failed dial or upgrade for the error counts.
func upgradeError(err error) string {
	var hs errHTTPStatus
	var ne net.Error
	switch {
	case errors.As(err, &hs):
		return "handshake_http_" + fmt.Sprint(hs.code)
	case errors.As(err, &ne) && ne.Timeout():
		return "handshake_timeout"
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE),
		errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return dialError(err)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "handshake_reset"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return dialError(err)
	}
	return "handshake"
}

func (r *attackRun) floodReport(fr *FloodReport, conns []*floodConn, written, frames int64, stream time.Duration) {
	fr.Written, fr.Frames = written, frames
	if s := stream.Seconds(); s > 0 {
		fr.WrittenPS = int64(float64(written) / s)
	}
	codes := map[int]bool{}
	first := true
	for _, fc := range conns {
		c := FloodConn{Index: fc.idx}
		if fc.rc == nil {
			c.Error = "not upgraded"
			fr.Connections = append(fr.Connections, c)
			continue
		}
		up := fc.rc.upgradedAt
		c.Upgraded, c.Upgrade = true, round3(r.since(up))
		c.Written, c.AfterClose = fc.written.Load(), fc.afterClose.Load()
		fr.AfterClose += c.AfterClose
		rd := fc.read
		c.FramesRead, c.ReadEnd = rd.frames, rd.how
		if rd.closeCode != 0 {
			c.CloseCode, c.CloseReason = rd.closeCode, rd.closeReason
			c.CloseFrameAt = round3(rd.closeAt.Sub(up).Seconds())
			fr.CloseFrames++
			codes[rd.closeCode] = true
			fr.CloseFrameAt = max(fr.CloseFrameAt, c.CloseFrameAt)
		}
		if fc.writeErr != nil {
			c.WriteError = fc.writeErr.Error()
		}
		// Ended: the first of the read side's end and a write error;
		// ours when we closed it at the end of the drain.
		end, by := rd.endAt, rd.how
		if fc.writeErr != nil && (end.IsZero() || fc.writeErrAt.Before(end)) && !fc.byUs.Load() {
			end, by = fc.writeErrAt, "write_error"
		}
		if fc.byUs.Load() {
			by = endClient
			fr.StillOpen++
		} else if rd.how == endError && fc.writeErr == nil {
			by = endError
		}
		c.EndedAt, c.EndedBy = round3(end.Sub(up).Seconds()), by
		if !fc.closeSentAt.IsZero() && by != endClient && end.After(fc.closeSentAt) {
			c.CloseSentToEnd = round3(end.Sub(fc.closeSentAt).Seconds())
		}
		if by != endClient {
			fr.ClosedByBkr++
			if first || c.EndedAt < fr.LifetimeMin {
				fr.LifetimeMin = c.EndedAt
			}
			fr.LifetimeMax = max(fr.LifetimeMax, c.EndedAt)
			first = false
		}
		if rd.err != nil {
			r.errs.add("read_error")
		}
		fr.Connections = append(fr.Connections, c)
	}
	for code := range codes {
		fr.CloseCodes = append(fr.CloseCodes, code)
	}
	sortInts(fr.CloseCodes)
}

func sortInts(a []int) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}
