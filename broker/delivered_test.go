package broker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/gatecast/gatecast/acl"
)

// writtenConn is a recConn whose transport says when its close reached the
// socket: only when the test lets it.
type writtenConn struct {
	recConn
	written atomic.Bool
}

func (c *writtenConn) CloseWritten() bool { return c.written.Load() }

func deliveredCount(t *testing.T, e *env) uint64 {
	t.Helper()
	var m dto.Metric
	if err := e.b.metrics.delivered.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// gatecast_revocation_delivered_seconds is observed once per rights change
// that closed sessions, only when every closed session's transport says its
// last frame was written, and covers that wait; a change that closed
// nothing observes nothing.
func TestRevocationDelivered(t *testing.T) {
	e := newEnv(t)
	tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermRead})
	var conns []*writtenConn
	for range 3 {
		c := &writtenConn{}
		if _, err := e.b.Connect(c, ConnectRequest{Secret: []byte(secret), Tags: []string{"a/x"}, Protocol: "seed"}); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	ctx := context.Background()
	if err := e.b.RefreshTokens(ctx, tok.ID); err != nil { // nothing changed: nothing closed
		t.Fatal(err)
	}
	disabled := true
	if _, err := e.store.UpdateToken(ctx, tok.ID, acl.TokenUpdate{Disabled: &disabled}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if c.closeCode != 4002 {
			t.Fatalf("close %d, want 4002", c.closeCode)
		}
	}
	conns[0].written.Store(true)
	conns[1].written.Store(true)
	time.Sleep(20 * time.Millisecond)
	if n := deliveredCount(t, e); n != 0 {
		t.Fatalf("observed %d times while a close was still unwritten", n)
	}
	const held = 30 * time.Millisecond
	time.Sleep(held)
	conns[2].written.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for deliveredCount(t, e) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("never observed after every close was written")
		}
		time.Sleep(time.Millisecond)
	}
	var m dto.Metric
	_ = e.b.metrics.delivered.Write(&m)
	if n, sum := m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum(); n != 1 || sum < (20*time.Millisecond+held).Seconds() || sum > time.Since(start).Seconds() {
		t.Fatalf("count %d sum %.3f s, want 1 observation covering the wait (>= %.3f s)", n, sum, (20*time.Millisecond + held).Seconds())
	}
}
