package netpoll

import (
	"bufio"
	"bytes"
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatecast/gatecast/proto"
)

// Output flow control. A connection's pending output — frames queued in its
// outbox plus the batch its drain is writing — is charged in bytes
// (frameCharge: the frame's bytes plus its share of bookkeeping).
//
//   - Up to OutboxSoftLimit: nothing happens.
//   - Past it, the connection is backlogged: SendBacklog returns a channel
//     that closes when the pending output is back under the soft limit. The
//     broker makes the publisher whose message caused it wait on that
//     channel (bounded in time) before it decodes its next message, so a
//     subscriber that reads slowly slows the publishers that feed it — their
//     input buffers fill, netpoll pauses their reads, and TCP pushes back to
//     the devices — instead of losing messages. This is NATS's producer
//     stall.
//   - A frame that would pass OutboxLimit is dropped (counted) and the
//     connection overflows: the backlog channel is released at once, so a
//     consumer that does not read stops slowing anyone. If it is still
//     overflowing WriteTimeout later, the slow-consumer policy applies
//     (CloseSlow: close 1008 "slow consumer"). The overflow ends when the
//     pending output is back under the soft limit.
//   - All connections together: past OutboxTotalLimit, a backlogged
//     connection is treated as at its hard limit, so the slowest consumers
//     are cut first; past a quarter more, every connection with output
//     pending is, so the process's pending output never exceeds 1.25 ×
//     OutboxTotalLimit plus one frame (or one chunk: at most 16 KiB, or one
//     larger piece, see chunk.go) per connection. The total is charged in
//     blocks (creditBlock, see pushEntry), so it may count up to 1 KiB more
//     than is queued per connection with output pending: the bound errs on
//     the safe side.
//
// An idle connection holds no outbox at all: segments come from a pool
// when the first frame is queued and go back when it is written.

// frameOverhead is what a queued frame costs besides its bytes: its slot in
// an outbox segment and its share of the segment header.
const frameOverhead = 16

func frameCharge(f *proto.Frame) int { return len(f.B) + frameOverhead }

// admitOutput decides whether n more bytes may be queued. It returns nil
// when they may, or the counter to increment for the drop. c.mu must be
// held.
func (c *Conn) admitOutput(n int) prometheus.Counter {
	reason := c.refusal(n)
	if reason == nil {
		return nil
	}
	s := c.srv
	c.refused = true
	c.refusals.Add(1)
	if c.overflowAt.Load() == 0 {
		c.overflowAt.Store(s.now())
		c.releaseStallLocked()
	}
	return reason
}

// refusal is admitOutput's decision alone, without its effects: nil when n
// more bytes may be queued, else the counter of the limit they would pass.
// c.mu must be held.
func (c *Conn) refusal(n int) prometheus.Counter {
	pending := c.queuedBytes + c.inflight
	if pending == 0 {
		return nil // a first frame always goes, whatever its size
	}
	s := c.srv
	total := s.outboxTotal.Load() + int64(n)
	switch {
	case pending+n > s.cfg.OutboxLimit:
		return s.m.dropped
	case pending+n > s.cfg.OutboxSoftLimit && total > s.cfg.OutboxTotalLimit:
		return s.m.droppedTotal // the slowest consumers first
	case total > s.cfg.OutboxTotalLimit+s.cfg.OutboxTotalLimit/4:
		return s.m.droppedTotal // then everyone but a first frame: the bound is hard
	}
	return nil
}

// backlogLocked returns the channel senders wait on while the connection is
// backlogged and not overflowing, nil otherwise. c.mu must be held.
func (c *Conn) backlogLocked() chan struct{} {
	if c.queuedBytes+c.inflight <= c.srv.cfg.OutboxSoftLimit || c.overflowAt.Load() != 0 {
		return nil
	}
	if c.stall == nil {
		c.stall = make(chan struct{}) // only when crossing the soft limit
		c.srv.m.backlogged.Inc()
	}
	return c.stall
}

// wroteLocked accounts for a batch the drain has written (or dropped).
// c.mu must be held.
func (c *Conn) wroteLocked(batch int) {
	c.inflight -= batch
	give := batch
	if c.queuedBytes+c.inflight == 0 {
		give += c.credit // nothing pending: the credit goes back too
		c.credit = 0
	}
	c.srv.outboxTotal.Add(int64(-give))
	// The overflow ends only when a whole batch went out without a frame
	// refused meanwhile: a consumer that drains each batch but never keeps
	// up would otherwise look caught up between batches.
	caughtUp := batch > 0 && !c.refused
	c.refused = false
	c.settleLocked(caughtUp)
}

// settleLocked updates the pending mirror and, once the pending output is
// under the soft limit (or the connection is gone), ends the backlog and,
// when clearOverflow, the overflow. c.mu must be held.
func (c *Conn) settleLocked(clearOverflow bool) {
	pending := c.queuedBytes + c.inflight
	c.pending.Store(int64(pending))
	gone := c.flags.Load()&fGone != 0
	if pending <= c.srv.cfg.OutboxSoftLimit || gone {
		c.releaseStallLocked()
		if clearOverflow || gone {
			c.overflowAt.Store(0)
		}
	}
}

func (c *Conn) releaseStallLocked() {
	if c.stall != nil {
		close(c.stall)
		c.stall = nil
	}
}

// DefaultOutboxTotalLimit is a quarter of the machine's memory
// (/proc/meminfo MemTotal), or 1 GiB when that cannot be read.
func DefaultOutboxTotalLimit() int64 {
	const fallback = 1 << 30
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return fallback
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("MemTotal:")) {
			continue
		}
		fields := bytes.Fields(line[len("MemTotal:"):])
		if len(fields) == 0 {
			break
		}
		kib, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil || kib <= 0 {
			break
		}
		return kib << 10 / 4
	}
	return fallback
}

// stillRefusing is the sweeper's look at an overflow: it lasts while frames
// keep being refused, at least one between two sweeps. Atomic loads only:
// the sweeper calls it while walking a registry shard. Sweeper only.
func (c *Conn) stillRefusing() bool {
	r := c.refusals.Load()
	if r == c.sweptRefusals {
		return false
	}
	c.sweptRefusals = r
	return true
}

// endOverflow ends an overflow in which no frame was refused for a whole
// sweep (the consumer caught up, or nothing is sent to it any more), unless
// one was refused since the sweeper looked. Sweeper only, after the walk.
func (c *Conn) endOverflow() {
	c.mu.Lock()
	if c.refusals.Load() == c.sweptRefusals {
		c.overflowAt.Store(0)
	}
	c.mu.Unlock()
}
