package broker

import (
	"sync"
	"time"
)

// gatecast_revocation_delivered_seconds: gatecast_revocation_seconds ends
// when every affected session is closed and its last frame queued; what a
// client sees is when that frame reached its socket. For the two to be
// compared on a dashboard, the sessions a rights change ends are watched
// until each endpoint reports its last frame written (or the connection
// gone), polling, on a goroutine that exists only while a watch runs.

// CloseWriter is an Endpoint whose transport tells when the last frame it
// wrote after End (a close frame, a DISCONNECT) reached the socket, or the
// connection is gone. Endpoints without it count as written at once.
type CloseWriter interface {
	CloseWritten() bool
}

// closeWatch collects the endpoints a rights change ended (closeLocked),
// for the watcher the change's end starts (deliveredAfter).
type closeWatch struct {
	mu  sync.Mutex    // leaf: taken under tokenState.mu by closeLocked
	eps []CloseWriter // guarded by mu
}

// deliveredPoll is the watcher's polling interval, and deliveredMax how
// long it watches at most (a client that never reads keeps its close in the
// kernel's buffer: it is counted at deliveredMax, the histogram's top).
const (
	deliveredPoll = 500 * time.Microsecond
	deliveredMax  = 5 * time.Second
)

// watchClose records ep, ended by a rights change (closeLocked).
func (b *Broker) watchClose(ep Endpoint) {
	cw, ok := ep.(CloseWriter)
	if !ok {
		return
	}
	w := &b.closes
	w.mu.Lock()
	w.eps = append(w.eps, cw)
	w.mu.Unlock()
}

// deliveredAfter ends a rights change that started at start: when it
// closed sessions, a goroutine waits for their last frames to be written
// and observes gatecast_revocation_delivered_seconds. Never blocks.
func (b *Broker) deliveredAfter(start time.Time) {
	w := &b.closes
	w.mu.Lock()
	eps := w.eps
	w.eps = nil
	w.mu.Unlock()
	if len(eps) == 0 {
		return
	}
	go func() {
		deadline := start.Add(deliveredMax)
		for len(eps) > 0 && time.Now().Before(deadline) {
			n := 0
			for _, cw := range eps {
				if !cw.CloseWritten() {
					eps[n] = cw
					n++
				}
			}
			clear(eps[n:])
			eps = eps[:n]
			if n > 0 {
				time.Sleep(deliveredPoll)
			}
		}
		b.metrics.delivered.Observe(time.Since(start).Seconds())
	}()
}
