package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/postgres"
	"github.com/gatecast/gatecast/broker"
	"github.com/gatecast/gatecast/cluster"
	"github.com/gatecast/gatecast/internal/testserver"
)

// startCluster runs three real nodes sharing one real Postgres and one
// real Redis — standalone, or a 3-master Redis Cluster — each with its own
// listeners, as three processes would. It returns the Redis addresses.
func startCluster(t *testing.T, redisCluster bool) ([]*testNode, []string) {
	t.Helper()
	dsn := testserver.PostgresDB(t)
	addrs := []string{testserver.Redis(t)}
	if redisCluster {
		addrs = testserver.RedisCluster(t, 3)
	}
	redis := strings.Join(addrs, ",")
	// Node C advertises its admin API at a relay's address, as a node
	// behind NAT or listening on 0.0.0.0 would: the other nodes must call
	// it there.
	relay := startRelay(t)
	var nodes []*testNode
	for _, id := range []string{"node-a", "node-b", "node-c"} {
		nodes = append(nodes, startNode(t, func(c *Config) {
			c.Store, c.Redis, c.NodeID = dsn, redis, id
			c.AdminKey = "cluster-test-admin-key"
			c.RevocationWait = 500 * time.Millisecond
			if id == "node-c" {
				c.AdvertiseAdmin = relay.addr()
			}
		}))
	}
	relay.target.Store(nodes[2].AdminAddr())
	nodes[2].relay = relay
	return nodes, addrs
}

// relay is a TCP forwarder standing in for the network path to an
// advertised admin address; it counts the connections it carried.
type relay struct {
	ln     net.Listener
	target atomic.Value // string, host:port
	conns  atomic.Int64
}

func startRelay(t *testing.T) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			target, _ := r.target.Load().(string)
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			r.conns.Add(1)
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func TestClusterEndToEnd(t *testing.T) {
	t.Run("standalone Redis", func(t *testing.T) { testClusterEndToEnd(t, false) })
	t.Run("Redis Cluster", func(t *testing.T) {
		if testing.Short() {
			t.Skip("Redis Cluster skipped in -short")
		}
		testClusterEndToEnd(t, true)
	})
}

func testClusterEndToEnd(t *testing.T, redisCluster bool) {
	nodes, redisAddrs := startCluster(t, redisCluster)
	a, b, c := nodes[0], nodes[1], nodes[2]

	t.Run("nodes", func(t *testing.T) {
		var out []struct {
			ID        string `json:"id"`
			WSAddr    string `json:"ws_addr"`
			AdminAddr string `json:"admin_addr"`
		}
		c.mustAPI("GET", "/api/v1/nodes", nil, &out)
		if len(out) != 3 || out[0].ID != "node-a" || out[2].ID != "node-c" || out[1].WSAddr != b.WSAddr() {
			t.Fatalf("nodes %+v", out)
		}
		if out[2].AdminAddr != c.relay.addr() || out[0].AdminAddr != a.AdminAddr() {
			t.Fatalf("admin addresses %+v: want C's --advertise-admin and A's listener", out)
		}
	})

	// Rights written through A are used by B and C (one store of record).
	rw := a.createToken("writer", 0)
	sensors := a.createTag("sensors/#")
	a.grant(rw, sensors, "readwrite")

	t.Run("cross-node delivery with wildcards, once, no echo", func(t *testing.T) {
		onB := b.dialOK(t, rw.Token, "sensors/+/temp")
		onC := c.dialOK(t, rw.Token, "sensors/#", "sensors/room1/temp")
		localA := a.dialOK(t, rw.Token, "sensors/room1/#")
		pub := a.dialOK(t, rw.Token, "sensors/room9/temp")
		pub.publish("sensors/room1/temp", `{"c":21.5}`)
		for _, cl := range []*client{onB, onC, localA} {
			cl.expectMessage("sensors/room1/temp", `{"c":21.5}`)
		}
		// a second message proves there was no duplicate of the first
		pub.publish("sensors/room2/temp", `{"c":3}`)
		onB.expectMessage("sensors/room2/temp", `{"c":3}`)
		onC.expectMessage("sensors/room2/temp", `{"c":3}`)
		// the publisher gets nothing of its own: its next frame is the pong
		pub.expectOpen()
	})

	t.Run("connection limit exact across nodes", func(t *testing.T) {
		lim := a.createToken("limited", 2)
		a.grant(lim, sensors, "read")
		first := a.dialOK(t, lim.Token, "sensors/#")
		b.dialOK(t, lim.Token, "sensors/#")
		c.dial(t, lim.Token, "sensors/#").expectClose(4004)
		first.closeNormally()
		eventually(t, "the freed slot is usable on node C", func() bool {
			cl := c.dial(t, lim.Token, "sensors/#")
			if err := cl.ping(); err != nil {
				return false
			}
			ev := cl.next(5e9)
			return ev.pong
		})
	})

	t.Run("a lowered limit holds across nodes", func(t *testing.T) {
		tok := a.createToken("lowered", 0)
		a.grant(tok, sensors, "read")
		var clients []*client
		for _, n := range []*testNode{a, b, c, a, b, c} {
			clients = append(clients, n.dialOK(t, tok.Token, "sensors/#"))
		}
		a.mustAPI("PATCH", "/api/v1/tokens/"+itoa(tok.ID), map[string]any{"max_connections": 3}, nil)
		// The barrier: when the call returns every node has applied it.
		live := 0
		for _, n := range []*testNode{a, b, c} {
			live += len(n.Broker().Connections(tok.ID))
		}
		if live != 3 {
			t.Fatalf("%d sessions live across the cluster after lowering the limit to 3", live)
		}
		closed := 0
		for _, cl := range clients {
			if ev := cl.next(300 * time.Millisecond); ev.closed {
				if ev.code != 4004 {
					t.Fatalf("closed with %d %q, want 4004", ev.code, ev.reason)
				}
				closed++
			}
		}
		if closed != 3 {
			t.Fatalf("%d clients closed with 4004, want exactly 3", closed)
		}
		for _, n := range []*testNode{a, b, c} {
			n.dial(t, tok.Token, "sensors/#").expectClose(4004)
		}
	})

	t.Run("admin writes through any node wait for the cluster write lock", func(t *testing.T) {
		tok := a.createToken("locked", 0)
		// Another node's write in progress, as Postgres sees it: a session
		// holding the advisory lock.
		conn, err := pgx.Connect(context.Background(), a.cfg.Store)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "SELECT pg_advisory_lock($1)", adminLockKey); err != nil {
			t.Fatal(err)
		}
		done := make(chan int, 1)
		go func() {
			done <- b.api("PATCH", "/api/v1/tokens/"+itoa(tok.ID), map[string]any{"name": "renamed"}, nil)
		}()
		select {
		case code := <-done:
			t.Fatalf("a write through B finished (%d) while another node held the write lock", code)
		case <-time.After(300 * time.Millisecond):
		}
		var got struct {
			Name string `json:"name"`
		}
		a.mustAPI("GET", "/api/v1/tokens/"+itoa(tok.ID), nil, &got)
		if got.Name != "locked" {
			t.Fatalf("the write happened while the lock was held: name %q", got.Name)
		}
		if _, err := conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", adminLockKey); err != nil {
			t.Fatal(err)
		}
		if code := <-done; code != 200 {
			t.Fatalf("write after the lock was released: %d", code)
		}
	})

	t.Run("revoke through A closes the session on C", func(t *testing.T) {
		victim := a.createToken("victim", 0)
		a.grant(victim, sensors, "read")
		onC := c.dialOK(t, victim.Token, "sensors/#")
		onB := b.dialOK(t, victim.Token, "sensors/#")
		a.mustAPI("PATCH", "/api/v1/tokens/"+itoa(victim.ID), map[string]any{"disabled": true}, nil)
		// The barrier: when the call returns, B and C have already enforced it.
		if n := len(c.Broker().Connections(victim.ID)) + len(b.Broker().Connections(victim.ID)); n != 0 {
			t.Fatalf("%d sessions of the disabled token still live on B and C after the call returned", n)
		}
		onC.expectClose(4002)
		onB.expectClose(4002)
		c.dial(t, victim.Token, "sensors/#").expectClose(4003)
	})

	t.Run("a node that does not confirm makes the call answer 202", func(t *testing.T) {
		client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: redisAddrs, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		ghost := cluster.NewRegistry(client, time.Minute)
		if err := ghost.Heartbeat(context.Background(), cluster.NodeInfo{ID: "node-ghost"}); err != nil {
			t.Fatal(err)
		}
		defer ghost.Leave(context.Background(), "node-ghost")
		tok := a.createToken("pending", 0)
		a.grant(tok, sensors, "read")
		var out struct {
			Status      string   `json:"status"`
			Unconfirmed []string `json:"unconfirmed_nodes"`
		}
		if code := a.api("DELETE", "/api/v1/tokens/"+itoa(tok.ID), nil, &out); code != 202 {
			t.Fatalf("status %d, want 202", code)
		}
		if out.Status != "pending" || len(out.Unconfirmed) != 1 || out.Unconfirmed[0] != "node-ghost" {
			t.Fatalf("answer %+v", out)
		}
	})

	t.Run("connections listed and kicked across the cluster", func(t *testing.T) {
		tok := a.createToken("listed", 0)
		a.grant(tok, sensors, "read")
		onC := c.dialOK(t, tok.Token, "sensors/room7/#")
		onA := a.dialOK(t, tok.Token, "sensors/#")
		var conns []struct {
			ID   uint64   `json:"id"`
			Node string   `json:"node"`
			Subs []string `json:"subscriptions"`
		}
		b.mustAPI("GET", "/api/v1/connections?token_id="+itoa(tok.ID), nil, &struct {
			Connections any `json:"connections"`
		}{&conns})
		if len(conns) != 2 {
			t.Fatalf("listed %+v, want the sessions on A and C", conns)
		}
		if c.relay.conns.Load() == 0 {
			t.Fatal("B did not call C at its advertised admin address")
		}
		var onCID uint64
		for _, cn := range conns {
			if cn.Node == "node-c" && len(cn.Subs) == 1 && cn.Subs[0] == "sensors/room7/#" {
				onCID = cn.ID
			}
		}
		if onCID == 0 {
			t.Fatalf("the session on C is not listed with its node: %+v", conns)
		}
		a.mustAPI("DELETE", "/api/v1/connections/"+strconv.FormatUint(onCID, 10)+"?node=node-c", nil, nil)
		onC.expectClose(4005)
		onA.expectOpen()
		// Without ?node=: resolved to the one node holding the ID, or 409.
		var onAID uint64
		for _, cn := range conns {
			if cn.Node == "node-a" {
				onAID = cn.ID
			}
		}
		path := "/api/v1/connections/" + strconv.FormatUint(onAID, 10)
		var holders int
		for _, n := range []*testNode{a, b, c} {
			holders += len(filterID(n.Broker().Connections(0), onAID))
		}
		want := 204
		if holders > 1 {
			want = 409
		}
		if code := b.api("DELETE", path, nil, nil); code != want {
			t.Fatalf("DELETE %s without node: %d, want %d (%d holders)", path, code, want, holders)
		}
		if want == 204 {
			onA.expectClose(4005)
		}
	})

	t.Run("cluster metrics", func(t *testing.T) {
		if v := metricValue(t, a, "gatecast_cluster_forwarded_total"); v < 1 {
			t.Fatalf("forwarded %v", v)
		}
		if v := metricValue(t, b, "gatecast_cluster_received_total"); v < 1 {
			t.Fatalf("received %v", v)
		}
		if v := metricValue(t, a, `gatecast_revocation_barrier_seconds_count{outcome="confirmed"}`); v < 1 {
			t.Fatalf("barrier observations %v", v)
		}
		if v := metricValue(t, c, "gatecast_cluster_redis_up"); v != 1 {
			t.Fatalf("redis_up %v", v)
		}
		if v := metricValue(t, b, "gatecast_redis_request_seconds_count"); v < 1 {
			t.Fatalf("redis request observations %v", v)
		}
		if v := metricValue(t, a, "gatecast_revocation_seconds_count"); v < 1 {
			t.Fatalf("revocation observations %v", v)
		}
	})

	t.Run("downgrade through B refuses the next publish on C", func(t *testing.T) {
		w := a.createToken("downgraded", 0)
		a.grant(w, sensors, "readwrite")
		pubC := c.dialOK(t, w.Token, "sensors/#")
		watcher := a.dialOK(t, rw.Token, "sensors/#")
		// before: C's publishes reach A (so silence below means refusal)
		pubC.publish("sensors/x/temp", `{"n":0}`)
		watcher.expectMessage("sensors/x/temp", `{"n":0}`)
		b.grant(w, sensors, "read")
		eventually(t, "node C applies the downgrade", func() bool {
			pubC.publish("sensors/x/temp", `{"n":1}`)
			ev := watcher.next(300e6)
			return ev.err != nil // nothing delivered: the publish was refused
		})
		pubC.expectOpen() // still connected: its subscription is covered
	})
}

// metricValue reads one unlabelled-or-labelled sample from a node's /metrics.
func metricValue(t *testing.T, n *testNode, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no sample %s in /metrics", sample)
	return 0
}

func TestRedisNeedsSharedStore(t *testing.T) {
	cfg := Defaults()
	cfg.Redis = "127.0.0.1:6379"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "postgres") {
		t.Fatalf("--redis with SQLite: %v", err)
	}
	cfg.Store = "postgres://x@127.0.0.1/db"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSingleNodeListsItself(t *testing.T) {
	n := startNode(t)
	req, _ := http.NewRequest("GET", "http://"+n.AdminAddr()+"/api/v1/nodes", nil)
	req.Header.Set("Authorization", "Bearer "+n.AdminKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || len(out) != 1 {
		t.Fatalf("status %d, %v, %v", resp.StatusCode, out, err)
	}
}

// Redis goes away: past --revocation-staleness nodes refuse new
// connections with 1013 (and, with --on-redis-loss=close, close existing
// ones); a revoke made while they are cut off is enforced within the
// staleness bound from the store; publishing continues across the Redis
// restart and cross-node delivery resumes; then they admit again.
func TestClusterRedisLoss(t *testing.T) {
	dsn := testserver.PostgresDB(t)
	srv := testserver.StartRedis(t)
	mk := func(id, onLoss string) *testNode {
		return startNode(t, func(c *Config) {
			c.Store, c.Redis, c.NodeID = dsn, srv.Addr(), id
			c.AdminKey = "cluster-test-admin-key"
			c.Staleness = 300 * time.Millisecond
			c.OnRedisLoss = onLoss
		})
	}
	a, b, c := mk("node-a", "refuse"), mk("node-b", "refuse"), mk("node-c", "close")
	keep := a.createToken("keep", 0)
	victim := a.createToken("victim", 0)
	sensors := a.createTag("sensors/#")
	a.grant(keep, sensors, "read")
	a.grant(victim, sensors, "read")
	keepOnB := b.dialOK(t, keep.Token, "sensors/#")
	victimOnB := b.dialOK(t, victim.Token, "sensors/#")
	onC := c.dialOK(t, keep.Token, "sensors/#")
	pub := a.createToken("pub", 0)
	a.grant(pub, a.createTag("traffic/#"), "readwrite")
	pubOnA := a.dialOK(t, pub.Token, "traffic/none")
	subOnB := b.dialOK(t, pub.Token, "traffic/#")
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() { // publishes from before the outage until after Redis returns
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-time.After(20 * time.Millisecond):
			}
			// not sendText: Fatal is for the test's own goroutine
			if err := wsutil.WriteClientText(pubOnA.conn, []byte(`{"tag":"traffic/x","message":`+strconv.Itoa(i)+`}`)); err != nil {
				t.Errorf("publishing on A: %v", err)
				return
			}
		}
	}()
	subOnB.expectMessage("traffic/x", "0")

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	onC.expectClose(1013) // close mode
	eventually(t, "node B refuses new connections with 1013", func() bool {
		ev := b.dial(t, keep.Token, "sensors/#").next(5 * time.Second)
		return ev.closed && ev.code == 1013
	})
	keepOnB.expectOpen() // refuse mode keeps existing sessions

	// A revoke while every node is cut off: saved, reported as not applied
	// cluster-wide; B, deaf to Redis, polls Postgres once per staleness
	// period, so the revoked session does not outlive the bound.
	revokedAt := time.Now()
	if code := a.api("PATCH", "/api/v1/tokens/"+itoa(victim.ID), map[string]any{"disabled": true}, nil); code < 500 {
		t.Fatalf("revoke during the outage answered %d, want a 5xx saying it was not applied", code)
	}
	victimOnB.expectClose(4002)
	if v := metricValue(t, b, "gatecast_redis_errors_total"); v < 1 {
		t.Fatalf("node B counted %v Redis errors during the outage", v)
	}
	if d := time.Since(revokedAt); d > 5*time.Second {
		t.Fatalf("revoked session closed %v after the revoke, with Redis still down", d)
	}
	keepOnB.expectOpen()

	// Traffic across the restart: A has published throughout; once Redis is
	// back (empty: its route table is gone) B's subscriber receives A's
	// messages again, routes re-announced by their nodes.
	for subOnB.next(300*time.Millisecond).text != "" { // what arrived before the outage
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		ev := subOnB.next(time.Second)
		if ev.text != "" {
			break // a message published on A reached B after the restart
		}
		if ev.closed || time.Now().After(deadline) {
			t.Fatalf("no cross-node delivery after Redis returned: %+v", ev)
		}
	}
	close(stopPub)
	<-pubDone
	pubOnA.expectOpen()
	eventually(t, "node B admits again", func() bool {
		cl := b.dial(t, keep.Token, "sensors/#")
		if cl.ping() != nil {
			return false
		}
		return cl.next(5 * time.Second).pong
	})
	keepOnB.expectOpen()
	b.dial(t, victim.Token, "sensors/#").expectClose(4003)
}

// startNodeProcess runs a node as a separate process (this test binary
// re-executed) and returns its WebSocket and admin addresses. The process
// dies with the test (Pdeathsig) and is killed at cleanup.
func startNodeProcess(t *testing.T, env ...string) (*exec.Cmd, string, string) {
	t.Helper()
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	wsAddr, adminAddr := free(), free()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "GATECAST_LISTEN="+wsAddr, "GATECAST_ADMIN_LISTEN="+adminAddr,
		"GATECAST_DATA_DIR="+t.TempDir(), "GATECAST_LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, env...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &syncWriter{w: &logs}, &syncWriter{w: &logs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("node process output:\n%s", logs.String())
		}
	})
	eventually(t, "the node process serves", func() bool {
		resp, err := http.Get("http://" + adminAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return cmd, wsAddr, adminAddr
}

// A node killed with SIGKILL: its leases expire within --lease-ttl and the
// other node admits up to the limit again; it leaves the node list; the
// surviving node keeps serving.
func TestClusterNodeKilled(t *testing.T) {
	dsn := testserver.PostgresDB(t)
	redis := testserver.Redis(t)
	const key = "cluster-test-admin-key"
	a := startNode(t, func(c *Config) {
		c.Store, c.Redis, c.NodeID, c.AdminKey = dsn, redis, "node-a", key
		c.LeaseTTL = time.Second
	})
	victim, wsK, _ := startNodeProcess(t, "GATECAST_STORE="+dsn, "GATECAST_REDIS="+redis,
		"GATECAST_NODE_ID=node-k", "GATECAST_ADMIN_KEY="+key, "GATECAST_LEASE_TTL=1s")
	lim := a.createToken("limited", 2)
	a.grant(lim, a.createTag("sensors/#"), "readwrite")
	urlK := "ws://" + wsK + "/ws/brocker/"
	for range 2 {
		cl := a.dialHeaders(t, urlK, map[string]string{"Authorization": "Token " + lim.Token, "Tag": "sensors/#"})
		cl.expectOpen()
	}
	a.dial(t, lim.Token, "sensors/#").expectClose(4004)
	var nodes []map[string]any
	a.mustAPI("GET", "/api/v1/nodes", nil, &nodes)
	if len(nodes) != 2 {
		t.Fatalf("nodes %v", nodes)
	}

	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	victim.Wait()
	eventually(t, "the killed node's leases expire", func() bool {
		cl := a.dial(t, lim.Token, "sensors/#")
		if cl.ping() != nil {
			return false
		}
		return cl.next(5 * time.Second).pong
	})
	a.dialOK(t, lim.Token, "sensors/#")
	a.dial(t, lim.Token, "sensors/#").expectClose(4004)
	eventually(t, "the killed node leaves the node list", func() bool {
		var nodes []map[string]any
		a.mustAPI("GET", "/api/v1/nodes", nil, &nodes)
		return len(nodes) == 1 && nodes[0]["id"] == "node-a"
	})
}

func filterID(conns []broker.ConnectionInfo, id uint64) []broker.ConnectionInfo {
	var out []broker.ConnectionInfo
	for _, c := range conns {
		if c.ID == id {
			out = append(out, c)
		}
	}
	return out
}

// A change whose signal never reached Redis (written straight into the
// store, as if the announcement was lost) is enforced by the periodic
// reconciler.
func TestClusterReconcilerEnforcesLostChange(t *testing.T) {
	dsn := testserver.PostgresDB(t)
	redis := testserver.Redis(t)
	n := startNode(t, func(c *Config) {
		c.Store, c.Redis, c.NodeID, c.AdminKey = dsn, redis, "node-r", "cluster-test-admin-key"
		c.Reconcile = time.Second
	})
	tok := n.createToken("quiet", 0)
	n.grant(tok, n.createTag("sensors/#"), "read")
	cl := n.dialOK(t, tok.Token, "sensors/#")
	st, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.UpdateToken(context.Background(), tok.ID, acl.TokenUpdate{Disabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	cl.expectClose(4002) // within about one --reconcile-interval
}

func ptr[T any](v T) *T { return &v }
