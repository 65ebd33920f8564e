package server

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/redis/rueidis"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/postgres"
	"github.com/gatecast/gatecast/internal/testserver"
)

// projectionNodes starts n cluster nodes on one Postgres (dsn) and one
// standalone Redis.
func projectionNodes(t *testing.T, dsn, redis string, names ...string) []*testNode {
	t.Helper()
	var nodes []*testNode
	for _, id := range names {
		nodes = append(nodes, startNode(t, func(c *Config) {
			c.Store, c.Redis, c.NodeID = dsn, redis, id
			c.AdminKey = "cluster-test-admin-key"
			c.RevocationWait = 2 * time.Second
		}))
	}
	return nodes
}

// storeReads sums gatecast_rights_store_reads_total over its reasons: how
// often the node read token rights from Postgres instead of Redis.
func storeReads(t *testing.T, n *testNode) float64 {
	t.Helper()
	var sum float64
	for _, reason := range []string{"missing", "stale", "redis_error", "corrupt"} {
		sum += metricValue(t, n, `gatecast_rights_store_reads_total{reason="`+reason+`"}`)
	}
	return sum
}

func projectionKey(secret string) string {
	h := acl.HashSecret([]byte(secret))
	return "gc:r:" + hex.EncodeToString(h[:])
}

func rawRedis(t *testing.T, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Token rights travel through their projection in Redis: a node that never
// saw a token admits it without reading Postgres, every kind of change made
// on one node is enforced on the others from the projection, a rotated
// secret is refused everywhere (its projection retired by a tombstone), and
// a Redis that lost everything gets its projection rebuilt.
func TestClusterRightsProjection(t *testing.T) {
	dsn := testserver.PostgresDB(t)
	redis := testserver.Redis(t)
	nodes := projectionNodes(t, dsn, redis, "node-a", "node-b", "node-c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	rc := rawRedis(t, redis)

	tok := a.createToken("sensor", 0)
	tag := a.createTag("sensors/#")
	a.grant(tok, tag, "readwrite")
	eventually(t, "the token's projection in Redis", func() bool {
		v, err := rc.Do(context.Background(), rc.B().Get().Key(projectionKey(tok.Token)).Build()).ToString()
		return err == nil && len(v) > 20
	})

	before := storeReads(t, b)
	sub := b.dialOK(t, tok.Token, "sensors/#")
	if got := storeReads(t, b) - before; got != 0 {
		t.Fatalf("a first connect on node b read Postgres %v times, want 0 (rights from Redis)", got)
	}
	pub := c.dialOK(t, tok.Token, "sensors/#")
	pub.publish("sensors/t", `"hello"`)
	sub.expectMessage("sensors/t", `"hello"`)

	// Downgrade on a: c's next publish is refused, b's session stays.
	a.mustAPI("PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), map[string]any{"permission": "read"}, nil)
	pub.publish("sensors/t", `"refused"`)
	pub.publish("sensors/t", `"refused again"`)
	if ev := sub.next(300 * time.Millisecond); ev.err == nil {
		t.Fatalf("after the downgrade a publish was delivered: %+v", ev)
	}

	// Rotation on a: sessions on b and c close with 4002; the old secret is
	// refused on every node, including one that never cached the token.
	var rotated tokenOut
	a.mustAPI("POST", fmt.Sprintf("/api/v1/tokens/%d/rotate", tok.ID), nil, &rotated)
	sub = b.dial(t, tok.Token, "sensors/#") // may race the rotation's broadcast: refused either way
	_ = sub
	pub.expectClose(4002)
	d := projectionNodes(t, dsn, redis, "node-d")[0]
	for _, n := range []*testNode{a, b, c, d} {
		expectInvalidToken(t, n.dial(t, tok.Token, "sensors/#"))
	}
	before = storeReads(t, d)
	d.dialOK(t, rotated.Token, "sensors/#")
	if got := storeReads(t, d) - before; got != 0 {
		t.Fatalf("the rotated token's first connect on node d read Postgres %v times, want 0", got)
	}

	// Redis loses everything: the nodes re-validate and rebuild the
	// projection; node e, started after, admits the token from Redis.
	if err := rc.Do(context.Background(), rc.B().Flushall().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the projection rebuilt after FLUSHALL", func() bool {
		v, err := rc.Do(context.Background(), rc.B().Get().Key(projectionKey(rotated.Token)).Build()).ToString()
		return err == nil && len(v) > 20
	})
	e := projectionNodes(t, dsn, redis, "node-e")[0]
	before = storeReads(t, e)
	e.dialOK(t, rotated.Token, "sensors/#")
	if got := storeReads(t, e) - before; got != 0 {
		t.Fatalf("a connect after the rebuild read Postgres %v times, want 0", got)
	}
	// And the rebuilt projection still carries revocations.
	a.mustAPI("DELETE", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), nil, nil)
	for _, n := range []*testNode{b, c, e} {
		expectInvalidToken(t, n.dial(t, rotated.Token, "sensors/#"))
	}
}

// expectInvalidToken reads the seed protocol's refusal of an unknown
// secret: close 4003 "invalid token".
func expectInvalidToken(t *testing.T, cl *client) {
	t.Helper()
	if reason := cl.expectClose(4003); reason != "invalid token" {
		t.Fatalf("refusal reason %q, want \"invalid token\"", reason)
	}
}

// With Postgres down, tokens whose rights are in Redis still connect, on a
// node that never saw them; a secret in neither is refused.
func TestClusterConnectsWhilePostgresIsDown(t *testing.T) {
	pg := testserver.StartPostgres(t)
	dsn := pg.DSN()
	redis := testserver.Redis(t)
	n := projectionNodes(t, dsn, redis, "node-p")[0]
	tag := n.createTag("dev/#")
	var toks []tokenOut
	for i := range 5 {
		tok := n.createToken("dev-"+strconv.Itoa(i), 0)
		n.grant(tok, tag, "read")
		toks = append(toks, tok)
	}
	// One token written straight into the store: never projected.
	st, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	hidden, err := st.CreateToken(context.Background(), "hidden", 0, acl.HashSecret([]byte("hidden-secret-0123456789")))
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	_ = hidden

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Start() })
	for _, tok := range toks {
		n.dialOK(t, tok.Token, "dev/#")
	}
	for _, secret := range []string{"hidden-secret-0123456789", "never-issued-secret-000000"} {
		cl := n.dial(t, secret, "dev/#")
		ev := cl.next(10 * time.Second)
		if !ev.closed {
			t.Fatalf("secret %q with Postgres down: want a refusal, got %+v", secret, ev)
		}
	}
}

// tryAdmit connects a seed client and reports whether the broker admitted
// it (it answers a ping; a refused connection gets a close frame first).
// Safe to call from any goroutine. The connection is returned open when
// admitted.
func tryAdmit(addr, secret, tags string) (admitted bool, conn net.Conn, r io.Reader, err error) {
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Token " + secret}, "Tag": {tags}}), Timeout: 5 * time.Second}
	conn, br, _, err := d.Dial(context.Background(), "ws://"+addr+"/ws/brocker/")
	if err != nil {
		return false, nil, nil, err
	}
	r = conn
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	if err := wsutil.WriteClientMessage(conn, ws.OpPing, []byte("p")); err != nil {
		conn.Close()
		return false, nil, nil, err
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			conn.Close()
			return false, nil, nil, err
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(r, payload); err != nil {
			conn.Close()
			return false, nil, nil, err
		}
		switch h.OpCode {
		case ws.OpPong:
			return true, conn, r, nil
		case ws.OpClose:
			conn.Close()
			return false, nil, nil, nil
		}
	}
}

// waitClose reads until the close frame and returns its code (0 on error).
func waitClose(conn net.Conn, r io.Reader, timeout time.Duration) ws.StatusCode {
	conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			return 0
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(r, payload); err != nil {
			return 0
		}
		if h.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(payload)
			return code
		}
	}
}

// raceRevocation hammers connects of one token from many goroutines, on
// every node, while the token is deleted through the first node: no
// connect that began after the DELETE returned may be admitted, and every
// session admitted before it is closed with 4002.
func raceRevocation(t *testing.T, nodes []*testNode) {
	tok := nodes[0].createToken("raced", 0)
	tag := nodes[0].createTag("race/#")
	nodes[0].grant(tok, tag, "read")
	var returned atomic.Int64 // unix ns the DELETE returned; 0 before
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var late []string
	var admitted []struct {
		conn net.Conn
		r    io.Reader
	}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodes[g%len(nodes)]
			for i := 0; i < 400; i++ {
				select {
				case <-stop:
					return
				default:
				}
				began := time.Now().UnixNano()
				ok, conn, r, err := tryAdmit(n.WSAddr(), tok.Token, "race/#")
				if err != nil || !ok {
					continue
				}
				mu.Lock()
				if ret := returned.Load(); ret != 0 && began > ret {
					late = append(late, fmt.Sprintf("a connect begun %v after the DELETE returned was admitted by %s", time.Duration(began-ret), n.cfg.NodeID))
				}
				admitted = append(admitted, struct {
					conn net.Conn
					r    io.Reader
				}{conn, r})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	nodes[0].mustAPI("DELETE", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), nil, nil)
	returned.Store(time.Now().UnixNano())
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(late) > 0 {
		t.Fatalf("%d late admissions, first: %s", len(late), late[0])
	}
	if len(admitted) == 0 {
		t.Fatal("no connect was admitted before the DELETE: the race was not exercised")
	}
	for _, a := range admitted {
		if code := waitClose(a.conn, a.r, 5*time.Second); code != 4002 {
			t.Fatalf("a session admitted before the DELETE ended with %d, want 4002", code)
		}
		a.conn.Close()
	}
	t.Logf("%d sessions admitted before the DELETE, all closed with 4002", len(admitted))
}

func TestRevocationRaceAdmissions(t *testing.T) {
	t.Run("single node", func(t *testing.T) {
		raceRevocation(t, []*testNode{startNode(t)})
	})
	t.Run("cluster", func(t *testing.T) {
		dsn := testserver.PostgresDB(t)
		redis := testserver.Redis(t)
		raceRevocation(t, projectionNodes(t, dsn, redis, "race-a", "race-b", "race-c"))
	})
}

// racePublishes publishes numbered messages as fast as the socket takes
// them while the publisher's write access is withdrawn through the first
// node: a subscriber on another node must receive no message written after
// the admin call returned.
func racePublishes(t *testing.T, nodes []*testNode) {
	pubNode, subNode := nodes[0], nodes[len(nodes)-1]
	tok := nodes[0].createToken("writer", 0)
	reader := nodes[0].createToken("reader", 0)
	tag := nodes[0].createTag("tele/#")
	nodes[0].grant(tok, tag, "readwrite")
	nodes[0].grant(reader, tag, "read")
	sub := subNode.dialOK(t, reader.Token, "tele/#")
	ok, conn, _, err := tryAdmit(pubNode.WSAddr(), tok.Token, "tele/#")
	if err != nil || !ok {
		t.Fatalf("publisher not admitted: %v", err)
	}
	defer conn.Close()
	var sent atomic.Int64 // messages fully written
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := bufio.NewWriterSize(conn, 512)
		for i := int64(1); i <= 200000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			frame := []byte(`{"tag":"tele/x","message":` + strconv.FormatInt(i, 10) + `}`)
			if err := wsutil.WriteClientText(w, frame); err != nil {
				return
			}
			if err := w.Flush(); err != nil {
				return
			}
			sent.Store(i)
		}
	}()
	// Let some messages through first.
	for got := 0; got < 50; {
		ev := sub.next(5 * time.Second)
		if ev.err != nil {
			t.Fatalf("no message before the downgrade: %v", ev.err)
		}
		if ev.text != "" {
			got++
		}
	}
	nodes[0].mustAPI("PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), map[string]any{"permission": "read"}, nil)
	atReturn := sent.Load()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	var last int64
	for {
		ev := sub.next(500 * time.Millisecond)
		if ev.err != nil {
			break
		}
		if i := strings.LastIndexByte(ev.text, ':'); i > 0 {
			n, _ := strconv.ParseInt(strings.TrimSuffix(ev.text[i+1:], "}"), 10, 64)
			last = max(last, n)
		}
	}
	// Message atReturn+1 may have been on the wire when the call returned.
	if last > atReturn+1 {
		t.Fatalf("message %d was delivered; %d had been written when the downgrade returned", last, atReturn)
	}
	if sent.Load() <= atReturn+1 {
		t.Fatalf("the publisher wrote nothing after the downgrade (%d, %d): the race was not exercised", sent.Load(), atReturn)
	}
	t.Logf("written at return %d, last delivered %d, written in all %d", atReturn, last, sent.Load())
}

func TestRevocationRacePublishes(t *testing.T) {
	t.Run("single node", func(t *testing.T) {
		racePublishes(t, []*testNode{startNode(t)})
	})
	t.Run("cluster", func(t *testing.T) {
		dsn := testserver.PostgresDB(t)
		redis := testserver.Redis(t)
		racePublishes(t, projectionNodes(t, dsn, redis, "pub-a", "pub-b"))
	})
}
