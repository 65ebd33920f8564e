package loadtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The storm for real, small: 200 devices with 200 tokens over a 3-node
// cluster (in-process nodes sharing a real Postgres and a real Redis);
// once the run says ready, the test restarts every node (shutdown, then a
// fresh node on the same addresses: caches cold), and every device must
// come back, with the store counters read around the storm.
func TestStormCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postgres, Redis and three nodes")
	}
	nodes, redis, dsn := testCluster(t, 3)
	o := clusterOptions(nodes)
	o.Conns = 200
	o.Timeout = 2 * time.Minute
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	ready := filepath.Join(t.TempDir(), "ready")
	o.Storm = StormOptions{TokensFile: tokens, ReadyFile: ready, Timeout: 30 * time.Second, Wait: 30 * time.Second,
		RedisAddrs: redis, PGDSN: dsn, Baseline: 200 * time.Millisecond, AdminConcurrency: 8}
	var stderr strings.Builder
	o.Stderr = &lockedWriter{w: &stderr}
	restart := func() {
		for _, n := range nodes {
			n.stop()
		}
		for _, n := range nodes {
			n.start()
		}
	}
	run := func(t *testing.T) *Report {
		t.Helper()
		readyCh := make(chan struct{})
		o.Storm.OnReady = func() { close(readyCh) }
		type result struct {
			r   *Report
			err error
		}
		done := make(chan result, 1)
		go func() {
			r, err := Run(context.Background(), "storm", o)
			done <- result{r, err}
		}()
		select {
		case <-readyCh:
		case res := <-done:
			t.Fatalf("ended before ready: %v (stderr %s)", res.err, stderr.String())
		case <-time.After(90 * time.Second):
			t.Fatal("not ready within 90 s")
		}
		if _, err := os.Stat(ready); err != nil {
			t.Errorf("ready file: %v", err)
		}
		restart()
		res := <-done
		if res.err != nil {
			t.Fatalf("%v (report %+v)\nstderr:\n%s", res.err, res.r, stderr.String())
		}
		return res.r
	}

	r := run(t)
	s := r.Storm
	if s == nil || s.Devices != 200 || s.Nodes != 3 {
		t.Fatalf("storm report %+v", s)
	}
	if s.Tokens.Count != 200 || s.Tokens.Created != 200 || s.Tokens.Reused != 0 || !s.Tokens.Kept {
		t.Errorf("tokens %+v", s.Tokens)
	}
	checkStorm(t, r)
	var table strings.Builder
	writeStormTable(&table, r)
	t.Log(table.String())
	if !strings.Contains(stderr.String(), "storm: ready") {
		t.Errorf("no ready line on stderr:\n%s", stderr.String())
	}
	// Redis: the nodes' calls, without our own INFO.
	rr := s.Redis
	if rr == nil || rr.Error != "" || rr.Calls <= 0 || len(rr.Commands) == 0 || rr.WindowSeconds <= 0 || rr.BaselineSeconds <= 0 {
		t.Errorf("redis %+v", rr)
	} else {
		for _, c := range rr.Commands {
			if c.Command == "info" || c.Calls <= 0 || c.Net < 0 {
				t.Errorf("redis command %+v", c)
			}
		}
	}
	pg := s.Postgres
	if pg == nil || pg.Error != "" || pg.XactCommit < 0 || pg.TupFetched < 0 || (pg.Statements == nil) == (pg.StatementsUnavailable == "") {
		t.Errorf("postgres %+v", pg)
	}

	// Again, with the tokens of the file: nothing to create.
	rm := func() { os.Remove(ready) }
	rm()
	stderr.Reset()
	r = run(t)
	if s := r.Storm; s.Tokens.Reused != 200 || s.Tokens.Created != 0 {
		t.Errorf("second run tokens %+v", s.Tokens)
	}
	checkStorm(t, r)
}

func checkStorm(t *testing.T, r *Report) {
	t.Helper()
	s := r.Storm
	if s.Dropped != 200 || s.Back != 200 || s.Failed != 0 || s.Drops < 200 {
		t.Errorf("dropped %d, back %d, gave up %d, drops %d", s.Dropped, s.Back, s.Failed, s.Drops)
	}
	var causes int64
	for _, v := range s.Causes {
		causes += v
	}
	if causes < s.Drops {
		t.Errorf("drop causes %v for %d drops", s.Causes, s.Drops)
	}
	if s.AllBackSinceDrop <= 0 || s.AllBackSinceFirstBack < 0 || s.AllBackSinceFirstBack > s.AllBackSinceDrop || s.Downtime < 0 {
		t.Errorf("times: since drop %v, since first back %v, downtime %v", s.AllBackSinceDrop, s.AllBackSinceFirstBack, s.Downtime)
	}
	if s.SinceDrop.Count != 200 || s.Reconnect.Count != 200 || s.Reconnect.Max > s.SinceDrop.Max || s.Handshake.Count < 200 {
		t.Errorf("latencies: since drop %+v, reconnect %+v, handshake %+v", s.SinceDrop, s.Reconnect, s.Handshake)
	}
	if s.Attempts.Total < 200 || s.Attempts.P50 < 1 || s.Attempts.Max < s.Attempts.P99 {
		t.Errorf("attempts %+v", s.Attempts)
	}
	// All back, and connected at the end.
	if r.Connections.OpenAtEnd != 200 {
		t.Errorf("open at end %d", r.Connections.OpenAtEnd)
	}
	// Failed attempts are counted by kind; a drop is no error.
	for k := range r.Errors {
		if strings.HasPrefix(k, "dropped") || strings.HasPrefix(k, "closed_") {
			t.Errorf("error %s: %v", k, r.Errors)
		}
	}
}
