package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Issue 11: backpressure before loss, end to end through the seed endpoint.

// publishBurst sends n seed publishes on c as fast as the socket takes
// them, in writes of many frames each.
func publishBurst(t *testing.T, c *client, tag string, from, n, pad int) error {
	var buf bytes.Buffer
	padding := strings.Repeat("x", pad)
	for i := from; i < from+n; i++ {
		frame := fmt.Sprintf(`{"tag":%q,"message":{"n":%d,"pad":"%s"}}`, tag, i, padding)
		if err := wsutil.WriteClientText(&buf, []byte(frame)); err != nil {
			return err
		}
		if buf.Len() > 32<<10 || i == from+n-1 {
			_ = c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.conn.Write(buf.Bytes()); err != nil {
				return err
			}
			buf.Reset()
		}
	}
	return nil
}

// TestFanInSlowSubscriberLosesNothing: 20 publishers blast 2,000 messages
// each at one subscriber that reads slowly, through an outbox of only
// 256 KiB. Publishers are slowed (producer stalls), the subscriber gets
// every message, and an unrelated publisher/subscriber pair keeps being
// served meanwhile.
func TestFanInSlowSubscriberLosesNothing(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.OutboxLimit = 256 << 10
		c.MaxInboundRate = 0
	})
	tok := n.createToken("fleet", 0)
	n.grant(tok, n.createTag("tele/#"), "readwrite")
	n.grant(tok, n.createTag("other/#"), "readwrite")
	sub := n.dialOK(t, tok.Token, "tele/#")
	otherSub := n.dialOK(t, tok.Token, "other/#")
	otherPub := n.dialOK(t, tok.Token, "other/x")

	const pubs, each = 20, 2000
	var wg sync.WaitGroup
	errs := make(chan error, pubs)
	for p := range pubs {
		c := n.dialOK(t, tok.Token, fmt.Sprintf("other/none%d", p))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := publishBurst(t, c, fmt.Sprintf("tele/dev%d", p), 0, each, 64); err != nil {
				errs <- err
			}
		}()
	}

	// The unrelated pair is served while the fan-in runs.
	otherPub.publish("other/a", `{"k":1}`)
	otherSub.expectMessage("other/a", `{"k":1}`)

	// The slow subscriber: a short pause every 200 messages.
	seen := make(map[string]bool, pubs*each)
	for len(seen) < pubs*each {
		ev := sub.next(20 * time.Second)
		if ev.err != nil || ev.closed {
			t.Fatalf("after %d of %d messages: %+v (dropped %v)", len(seen), pubs*each, ev,
				n.metric("gatecast_ws_frames_dropped_total"))
		}
		seen[ev.text] = true
		if len(seen)%200 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if d := n.metric("gatecast_ws_frames_dropped_total"); d != 0 {
		t.Fatalf("%v frames dropped", d)
	}
	if s := n.metric("gatecast_producer_stalls_total"); s == 0 {
		t.Fatal("publishers were never slowed: the test did not fill the subscriber's outbox")
	}
	t.Logf("%d messages delivered, producer stalls %v (%.2fs)", len(seen),
		n.metric("gatecast_producer_stalls_total"), n.metric("gatecast_producer_stall_seconds_total"))
}

// TestNonReadingSubscriberReleasesPublishers: a subscriber that never reads
// overflows its outbox; its publishers are released (they finish sending)
// and it is cut off (write timeout), while other subscribers get everything.
func TestNonReadingSubscriberReleasesPublishers(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.OutboxLimit = 256 << 10
		c.MaxInboundRate = 0
		c.WriteTimeout = time.Second
	})
	tok := n.createToken("fleet", 0)
	n.grant(tok, n.createTag("tele/#"), "readwrite")
	stuck := n.dialOK(t, tok.Token, "tele/#")
	_ = stuck // never read again
	reader := n.dialOK(t, tok.Token, "tele/#")
	pub := n.dialOK(t, tok.Token, "tele/pub")

	// 30,000 × 1 KiB: far more than the socket buffers and the outbox hold.
	const total = 30000
	done := make(chan error, 1)
	go func() { done <- publishBurst(t, pub, "tele/x", 0, total, 1024) }()
	got := 0
	for got < total {
		ev := reader.next(30 * time.Second)
		if ev.err != nil || ev.closed {
			t.Fatalf("reader after %d of %d: %+v", got, total, ev)
		}
		got++
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stuck subscriber cut off", func() bool {
		return n.metric("gatecast_ws_closes_total", "reason", "write_timeout") == 1
	})
}

// metric sums the samples of a metric on n's /metrics, keeping those whose
// labels include every given name/value pair.
func (n *testNode) metric(name string, labels ...string) float64 {
	n.t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/metrics")
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		lbl := ""
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				continue
			}
			lbl, rest = rest[:end+1], rest[end+1:]
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(lbl, labels[i]+`="`+labels[i+1]+`"`) {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// TestOutboxTotalLimitHolds: 2,000 subscribers that never read, each able to
// queue 256 KiB (512 MiB together), cannot make the node hold more pending
// output than --outbox-total-limit (16 MiB here), and the publisher is
// released.
func TestOutboxTotalLimitHolds(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 connections")
	}
	const limit = 16 << 20
	n := startNode(t, func(c *Config) {
		c.OutboxLimit = 256 << 10
		c.OutboxTotalLimit = limit
		c.MaxInboundRate = 0
		c.WriteTimeout = time.Minute // the byte limits act, not the write timeout
	})
	tok := n.createToken("fleet", 0)
	n.grant(tok, n.createTag("tele/#"), "readwrite")
	const subs = 2000
	dialer := ws.Dialer{Timeout: 10 * time.Second, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		return d.DialContext(ctx, network, addr)
	}, Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Token " + tok.Token}, "Tag": {"tele/#"}})}
	for range subs {
		conn, _, _, err := dialer.Dial(context.Background(), n.seedURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
	}
	pub := n.dialOK(t, tok.Token, "tele/pub")
	done := make(chan error, 1)
	// 1,000 × 8 KiB to each: more than the kernel's socket buffers take.
	go func() { done <- publishBurst(t, pub, "tele/x", 0, 1000, 8192) }()
	peak := 0.0
	deadline := time.After(60 * time.Second)
	for finished := false; !finished; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		case <-deadline:
			t.Fatal("the publisher was not released within 60s")
		case <-time.After(50 * time.Millisecond):
		}
		peak = max(peak, n.metric("gatecast_ws_outbox_bytes"))
	}
	// The hard bound: 1.25 × the limit, plus one first frame per connection.
	if bound := float64(limit + limit/4 + subs*(8192+256)); peak > bound {
		t.Fatalf("pending output peaked at %.1f MiB, over the %d MiB total limit (+ one frame per connection)", peak/(1<<20), limit>>20)
	}
	if n.metric("gatecast_ws_frames_dropped_total", "reason", "outbox_total") == 0 {
		t.Fatal("the total limit never acted")
	}
	t.Logf("pending output peaked at %.1f MiB (limit %d MiB); dropped at the total limit: %v", peak/(1<<20), limit>>20,
		n.metric("gatecast_ws_frames_dropped_total", "reason", "outbox_total"))
}
