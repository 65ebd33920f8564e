package grafana

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/gatecast/gatecast/server"
)

// Limits of the test nodes (startCluster), small enough for hostileTraffic
// to trip them and far above what the regular traffic of the live test
// (10 small publishes a second) needs.
const (
	testOutboxLimit = 64 << 10 // --outbox-limit; the soft limit is half of it
	testInputBuffer = 16 << 10 // --max-input-buffer
	testInboundRate = 500      // --max-inbound-rate; bursts of twice that

	// The bulk publish, about 29 MB: far more than a non-reading
	// subscriber's outbox and socket buffers hold (loopback send buffers
	// grow to tcp_wmem's maximum, 4 MiB by default, some systems 16 MiB),
	// in fewer messages than the inbound burst.
	bulkMessages = 900
	bulkPad      = 32 << 10
)

// hostileTraffic makes node's flow control and inbound limits act, so that
// the live test can check the "Flow control" and "Hostile clients" panels
// show real non-zero values:
//
//   - a subscriber that never reads (a 4 KiB receive buffer) is fed a bulk
//     publish: its outbox passes the soft limit (a backlog; the publisher
//     stalls, and its unread input reaches --max-input-buffer), then the
//     hard limit (frames dropped, reason slow_consumer), which releases the
//     publisher;
//   - a client floods pings far over --max-inbound-rate: they are dropped,
//     and 3 s later it is closed with 1008 (reason rate_limit).
//
// It dials in the calling goroutine and returns a function that waits for
// both clients to finish.
func hostileTraffic(t *testing.T, api adminClient, node *server.Node, fleetToken string) (wait func()) {
	t.Helper()
	tagID := api.createTag("bulk/#")
	bulk := api.createToken("bulk", 10)
	api.grant(bulk.ID, tagID, "readwrite")

	stuck := dialStuck(t, node.WSAddr(), bulk.Token, "bulk/#")
	// The broker must have subscribed the stuck client before the publish.
	api.waitConnections(bulk.ID, 1)
	pub := dialSeed(t, node.WSAddr(), bulk.Token, "bulk/none")
	flood := dialSeed(t, node.WSAddr(), fleetToken, "sensors/flood")

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := publishBulk(pub, "bulk/x", bulkMessages, bulkPad); err != nil {
			t.Errorf("bulk publish to a non-reading subscriber: %v (the publisher was not released)", err)
		}
	}()
	go func() {
		defer wg.Done()
		if code, err := floodPings(flood, 15*time.Second); err != nil || code != ws.StatusPolicyViolation {
			t.Errorf("ping flood over --max-inbound-rate: close code %d, err %v; want %d", code, err, ws.StatusPolicyViolation)
		}
	}()
	return func() {
		wg.Wait()
		stuck.Close()
	}
}

// dialStuck opens a seed session with a 4 KiB receive buffer and never
// reads it again, so the broker's output to it piles up in its outbox.
func dialStuck(t *testing.T, wsAddr, secret, tags string) net.Conn {
	t.Helper()
	d := ws.Dialer{
		Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Token " + secret}, "Tag": {tags}}),
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) {
					_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
				})
			}}
			return nd.DialContext(ctx, network, addr)
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, _, err := d.Dial(ctx, "ws://"+wsAddr+"/ws/brocker/")
	if err != nil {
		t.Fatalf("dial %s: %v", wsAddr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// publishBulk sends n seed publishes of pad bytes each as fast as the
// socket takes them, many frames per write.
func publishBulk(c *wsClient, tag string, n, pad int) error {
	var buf bytes.Buffer
	padding := strings.Repeat("x", pad)
	for i := range n {
		frame := fmt.Sprintf(`{"tag":%q,"message":{"n":%d,"pad":%q}}`, tag, i, padding)
		if err := wsutil.WriteClientText(&buf, []byte(frame)); err != nil {
			return err
		}
		if buf.Len() >= 32<<10 || i == n-1 {
			_ = c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.conn.Write(buf.Bytes()); err != nil {
				return err
			}
			buf.Reset()
		}
	}
	return nil
}

// floodPings sends pings at about 20 times testInboundRate until the
// broker closes the connection, and returns the close code.
func floodPings(c *wsClient, timeout time.Duration) (ws.StatusCode, error) {
	stop := make(chan struct{})
	writeErr := make(chan error, 1)
	go func() {
		var batch bytes.Buffer
		for range 10 {
			if err := wsutil.WriteClientMessage(&batch, ws.OpPing, nil); err != nil {
				writeErr <- err
				return
			}
		}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				writeErr <- nil
				return
			case <-tick.C:
			}
			_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.conn.Write(batch.Bytes()); err != nil {
				writeErr <- nil // the broker closed the connection
				return
			}
		}
	}()
	code, err := c.expectClose(timeout) // pongs are skipped
	close(stop)
	if werr := <-writeErr; werr != nil && err == nil {
		err = werr
	}
	return code, err
}
