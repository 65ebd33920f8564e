package testserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	redisStartTimeout   = 10 * time.Second
	redisStopGrace      = 5 * time.Second
	clusterReadyTimeout = 30 * time.Second
	// ClusterNodeTimeout is the cluster-node-timeout of RedisCluster
	// nodes: how long a node may be unreachable before it is marked failed.
	ClusterNodeTimeout = 5 * time.Second
)

// RedisServer is one throwaway redis-server listening on 127.0.0.1 only,
// with persistence off (no RDB snapshots, no AOF): a restart starts empty,
// as a crashed cache would.
type RedisServer struct {
	port    int
	busPort int // cluster bus port; 0 when not a cluster node
	dir     string
	proc    *process
}

// Redis starts a standalone redis-server for this test and returns its
// host:port. It is stopped and its directory removed when the test ends.
func Redis(t testing.TB) (addr string) {
	t.Helper()
	return StartRedis(t).Addr()
}

// StartRedis is Redis returning the server, for tests that stop and restart
// it.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	ensureRedis(t)
	s, err := startRedis(false)
	if err != nil {
		t.Fatalf("testserver: %v", err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Errorf("testserver: %v", err)
		}
	})
	return s
}

// Addr returns host:port.
func (s *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// PID returns the server's PID (0 when stopped).
func (s *RedisServer) PID() int {
	if !s.proc.running() {
		return 0
	}
	return s.proc.pid()
}

// Stop stops the server (SIGTERM, then SIGKILL if it lingers) and
// returns once it is gone and its port is free.
func (s *RedisServer) Stop() error { return s.proc.stop(step{syscall.SIGTERM, redisStopGrace}) }

// Kill stops the server with SIGKILL, as a crash would.
func (s *RedisServer) Kill() error { return s.proc.stop() }

// Start starts a stopped server again on the same port (and, for a cluster
// node, with the same node identity from its nodes.conf). Its data is gone.
func (s *RedisServer) Start() error {
	if s.proc.running() {
		return errors.New("testserver: redis already running")
	}
	return s.launch(false)
}

// Restart is Stop then Start.
func (s *RedisServer) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.Start()
}

func (s *RedisServer) close() error {
	err := s.Stop()
	if rerr := os.RemoveAll(s.dir); err == nil && rerr != nil {
		err = rerr
	}
	return err
}

func ensureRedis(tb testing.TB) {
	tb.Helper()
	ensure(tb, "redis-server", "redis-server and redis-cli",
		func() bool { _, _, ok := redisBins(); return ok })
}

func startRedis(cluster bool) (*RedisServer, error) {
	server, _, ok := redisBins()
	if !ok {
		return nil, errors.New("redis-server not found")
	}
	dir, marker, err := newDir("redis")
	if err != nil {
		return nil, err
	}
	s := &RedisServer{dir: dir}
	if cluster {
		s.busPort = -1 // launch picks one
	}
	s.proc = &process{
		name:    "redis-server",
		path:    server,
		dir:     dir,
		logPath: filepath.Join(dir, "redis.log"),
		marker:  marker,
		// SIGTERM: redis exits at once (nothing to save); SIGQUIT
		// would make it dump core.
		deathSig: syscall.SIGTERM,
	}
	if err := s.launch(true); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// launch starts redis-server and waits for PONG. See PostgresServer.launch
// for the port handling.
func (s *RedisServer) launch(newPort bool) error {
	for attempt := 1; ; attempt++ {
		if newPort {
			p, err := freePort()
			if err != nil {
				return err
			}
			s.port = p
			for s.busPort != 0 { // a cluster node: a bus port too, not the same one
				b, err := freePort()
				if err != nil {
					return err
				}
				if b != s.port {
					s.busPort = b
					break
				}
			}
		}
		s.proc.args = []string{
			"--port", strconv.Itoa(s.port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", s.dir,
			"--daemonize", "no",
			"--logfile", "",
		}
		if s.busPort != 0 {
			s.proc.args = append(s.proc.args,
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-port", strconv.Itoa(s.busPort),
				"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout/time.Millisecond)),
			)
		}
		if err := s.proc.start(); err != nil {
			return err
		}
		err := waitFor(s.proc, redisStartTimeout, func() error {
			r, err := redisCmd(s.Addr(), time.Second, "PING")
			if err == nil && r != "PONG" {
				err = fmt.Errorf("PING answered %q", r)
			}
			return err
		})
		if err == nil {
			return nil
		}
		log := s.proc.log()
		s.proc.stop()
		if addrInUse(log) && attempt < 4 {
			if !newPort {
				time.Sleep(500 * time.Millisecond)
			}
			continue
		}
		return fmt.Errorf("%v\nredis log:\n%s", err, log)
	}
}

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	Nodes []*RedisServer
}

// Addrs returns the host:port of every node.
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		a[i] = n.Addr()
	}
	return a
}

// RedisCluster starts a Redis Cluster of `masters` nodes (at least 3, no
// replicas), waits until every node reports cluster_state:ok, and returns
// the node addresses. The nodes are stopped when the test ends.
func RedisCluster(t testing.TB, masters int) []string {
	t.Helper()
	return StartRedisCluster(t, masters).Addrs()
}

// StartRedisCluster is RedisCluster returning the nodes, for tests that stop
// or restart one.
func StartRedisCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("testserver: a Redis Cluster needs at least 3 masters, got %d", masters)
	}
	ensureRedis(t)
	c := &Cluster{}
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			if err := n.close(); err != nil {
				t.Errorf("testserver: %v", err)
			}
		}
	})
	for i := 0; i < masters; i++ {
		n, err := startRedis(true)
		if err != nil {
			t.Fatalf("testserver: cluster node %d: %v", i, err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	if err := c.create(); err != nil {
		t.Fatalf("testserver: %v", err)
	}
	return c
}

// create joins the nodes with redis-cli --cluster create and waits until
// each of them sees all nodes and all slots.
func (c *Cluster) create() error {
	_, cli, _ := redisBins()
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	cmd := exec.CommandContext(ctx, cli, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	return c.WaitReady(clusterReadyTimeout)
}

// WaitReady waits until every running node reports cluster_state:ok and
// knows every node, e.g. after restarting one.
func (c *Cluster) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	want := "cluster_known_nodes:" + strconv.Itoa(len(c.Nodes))
	for _, n := range c.Nodes {
		if !n.proc.running() {
			continue
		}
		for {
			info, err := redisCmd(n.Addr(), time.Second, "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, want+"\r\n") {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("cluster node %s not ready after %v: %v %q", n.Addr(), timeout, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// ---- a minimal RESP client, enough to probe the servers ----

// redisError is an error reply (-ERR …, -MOVED …) from a server.
type redisError string

func (e redisError) Error() string { return string(e) }

// redisCmd sends one command on a fresh connection and returns a simple,
// integer or bulk-string reply as a string. An error reply is a redisError.
func redisCmd(addr string, timeout time.Duration, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(c))
}

// readReply decodes one simple, error, integer or bulk-string reply. Arrays
// and RESP3 types are refused; the probes here never need them.
func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", redisError(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < -1 || n > 1<<20 {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n == -1 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return "", errors.New("bulk string not terminated by CRLF")
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unsupported reply %q", line)
}
