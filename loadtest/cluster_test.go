package loadtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gatecast/gatecast/internal/testserver"
	"github.com/gatecast/gatecast/server"
)

// clusterNode is one in-process node of a test cluster, restartable on the
// same addresses.
type clusterNode struct {
	t   *testing.T
	cfg server.Config
	n   *server.Node
}

// testCluster starts n real cluster nodes in this process sharing one real
// Postgres database and one real Redis (internal/testserver), as n
// processes would. It returns them and the Redis address and DSN.
func testCluster(t *testing.T, n int) ([]*clusterNode, string, string) {
	t.Helper()
	tuneNetpoll()
	dsn := testserver.PostgresDB(t)
	redis := testserver.Redis(t)
	var nodes []*clusterNode
	for i := range n {
		cfg := server.Defaults()
		cfg.DataDir = t.TempDir()
		cfg.Listen, cfg.AdminListen, cfg.MQTTListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.LogLevel = "error"
		cfg.Store, cfg.Redis = dsn, redis
		cfg.NodeID = "lt-node-" + string(rune('a'+i))
		cfg.AdminKey = "loadtest-cluster-admin-key"
		cfg.RevocationWait = time.Second
		cfg.CloseTimeout = 500 * time.Millisecond
		cn := &clusterNode{t: t, cfg: cfg}
		cn.start()
		// A restart comes back on the same addresses.
		cn.cfg.Listen, cn.cfg.AdminListen, cn.cfg.MQTTListen = cn.n.WSAddr(), cn.n.AdminAddr(), cn.n.MQTTAddr()
		nodes = append(nodes, cn)
		t.Cleanup(cn.stop)
	}
	return nodes, redis, dsn
}

func (c *clusterNode) start() {
	c.t.Helper()
	var err error
	for attempt := 0; ; attempt++ {
		if c.n, err = server.Start(c.cfg, nil); err == nil {
			return
		}
		// The old listener's port may take a moment to be free again.
		if attempt == 20 || !strings.Contains(err.Error(), "address already in use") {
			c.t.Fatalf("start %s: %v", c.cfg.NodeID, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop shuts the node down (its clients get the shutdown close frame).
func (c *clusterNode) stop() {
	if c.n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.n.Shutdown(ctx); err != nil {
		c.t.Errorf("shutdown %s: %v", c.cfg.NodeID, err)
	}
	c.n = nil
}

// clusterOptions are smallOptions against every node of the cluster: the
// sessions spread over them, the admin calls to the first.
func clusterOptions(nodes []*clusterNode) Options {
	var ws, mq, adm []string
	for _, c := range nodes {
		ws = append(ws, "ws://"+c.n.WSAddr()+"/ws/brocker/")
		mq = append(mq, "tcp://"+c.n.MQTTAddr())
		adm = append(adm, "http://"+c.n.AdminAddr())
	}
	o := smallOptions(nodes[0].n)
	o.URL, o.MQTTURL, o.AdminURL = strings.Join(ws, ","), strings.Join(mq, ","), strings.Join(adm, ",")
	return o
}
