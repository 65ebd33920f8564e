package broker

import (
	"time"

	"github.com/gatecast/gatecast/proto"
)

// Producer stalls: backpressure before loss.
//
// A subscriber's transport reports, with each frame it queues, whether its
// pending output is past its soft limit (netpoll.Conn.SendBacklog). When one
// is, the publisher whose message it was waits — on its own transport
// goroutine, after the message was delivered and with no lock held — until
// that backlog drains or Config.MaxStall passes, before its next message is
// decoded. Its transport keeps reading meanwhile only up to its input limit,
// then stops, and TCP slows the device: a fan-in that outruns its ingesting
// subscriber slows the fleet instead of losing messages. Only publishers
// whose messages feed a backlogged subscriber wait; a subscriber that stops
// reading altogether overflows its hard limit, which releases every waiter
// at once and lets the slow-consumer policy apply. A cluster peer queue
// (cluster.Routes.Backlog) stalls publishers the same way.

// backlogSender is a Conn that reports backpressure (netpoll.Conn).
type backlogSender interface {
	SendBacklog(f *proto.Frame) (ok bool, backlog <-chan struct{})
}

// backlogger is a Router whose queues report backpressure.
type backlogger interface {
	Backlog() <-chan struct{}
}

// stall waits for backlog to close, at most b.maxStall. OnMessage only (the
// timer is the session's, reused).
func (s *Session) stall(backlog <-chan struct{}) {
	b := s.b
	if b.maxStall < 0 {
		return
	}
	start := time.Now()
	if s.stallTimer == nil {
		s.stallTimer = time.NewTimer(b.maxStall)
	} else {
		s.stallTimer.Reset(b.maxStall)
	}
	select {
	case <-backlog:
	case <-s.stallTimer.C:
	}
	s.stallTimer.Stop()
	b.metrics.stalls.Inc()
	b.metrics.stallSeconds.Add(time.Since(start).Seconds())
}
