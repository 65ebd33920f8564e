package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatecast/gatecast/broker"
)

// Issue 9, finding 5: GET /api/v1/connections answered every session in
// one response and ignored limit/page. It answers pages with an opaque
// cursor and a total.

func conn(id uint64, token int64) broker.ConnectionInfo {
	return broker.ConnectionInfo{ID: id, TokenID: token, RemoteAddr: "127.0.0.1:1", Protocol: "seed",
		Subscriptions: []string{fmt.Sprintf("t/%d", id)}, ConnectedAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

// setConns replaces the sessions the enforcer reports (in any order).
func (e *recEnforcer) setConns(cs []broker.ConnectionInfo) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.conns = slices.Clone(cs)
}

func (e *recEnforcer) editConns(fn func([]broker.ConnectionInfo) []broker.ConnectionInfo) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.conns = fn(e.conns)
}

// page fetches one page and checks the envelope's shape.
func (f *fixture) page(query string) ConnectionsPage {
	f.t.Helper()
	raw := f.must(200, "GET", "/api/v1/connections"+query, "", nil)
	var m map[string]json.RawMessage
	json.Unmarshal(raw, &m)
	if m["connections"] == nil || m["total"] == nil || m["next_cursor"] == nil {
		f.t.Fatalf("%s: not {connections, total, next_cursor}", raw)
	}
	var pg ConnectionsPage
	if err := json.Unmarshal(raw, &pg); err != nil {
		f.t.Fatal(err)
	}
	return pg
}

func ids(cs []Connection) []uint64 {
	out := make([]uint64, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

func TestConnectionsPaging(t *testing.T) {
	f := newFixture(t)
	var cs []broker.ConnectionInfo
	for i := uint64(1); i <= 250; i++ {
		cs = append(cs, conn(i*2, int64(1+i%2))) // ids 2..500, tokens 1 and 2
	}
	rand.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] }) // the broker's order is not relied on
	f.enf.setConns(cs)

	// default limit 100: three pages, ordered by id, total on each
	var got []uint64
	q, pages := "", 0
	for {
		pg := f.page(q)
		pages++
		if pg.Total != 250 {
			t.Fatalf("page %d: total %d", pages, pg.Total)
		}
		if len(pg.Connections) > DefaultConnectionsLimit {
			t.Fatalf("page %d: %d connections", pages, len(pg.Connections))
		}
		got = append(got, ids(pg.Connections)...)
		if pg.NextCursor == "" {
			break
		}
		q = "?cursor=" + url.QueryEscape(pg.NextCursor)
	}
	if pages != 3 || len(got) != 250 || !slices.IsSorted(got) || slices.Compact(slices.Clone(got))[249] != 500 {
		t.Fatalf("%d pages, %d ids", pages, len(got))
	}

	// an exact multiple of the limit: the last full page has no cursor
	pg := f.page("?limit=125")
	if len(pg.Connections) != 125 || pg.NextCursor == "" {
		t.Fatalf("limit 125: %d, cursor %q", len(pg.Connections), pg.NextCursor)
	}
	pg = f.page("?limit=125&cursor=" + url.QueryEscape(pg.NextCursor))
	if len(pg.Connections) != 125 || pg.NextCursor != "" {
		t.Fatalf("second half: %d, cursor %q", len(pg.Connections), pg.NextCursor)
	}
	// limit 0 counts; the maximum is accepted
	if pg := f.page("?limit=0"); pg.Total != 250 || len(pg.Connections) != 0 || pg.NextCursor != "" {
		t.Fatalf("limit 0: %+v", pg)
	}
	if pg := f.page(fmt.Sprintf("?limit=%d", MaxConnectionsLimit)); len(pg.Connections) != 250 || pg.NextCursor != "" {
		t.Fatalf("max limit: %d", len(pg.Connections))
	}
	// the token filter pages too, and its cursor only fits it
	pg = f.page("?token_id=2&limit=50")
	if pg.Total != 125 || len(pg.Connections) != 50 || pg.Connections[0].TokenID != 2 {
		t.Fatalf("token 2: total %d, %d", pg.Total, len(pg.Connections))
	}
	cur := url.QueryEscape(pg.NextCursor)
	if pg2 := f.page("?token_id=2&limit=50&cursor=" + cur); pg2.Connections[0].ID <= pg.Connections[49].ID {
		t.Fatal("the token's second page does not follow its first")
	}
	for _, q := range []string{
		"?cursor=" + cur,                        // cursor of another filter
		"?token_id=1&cursor=" + cur,             // idem
		"?token_id=2&node=x&cursor=" + cur,      // idem
		"?cursor=nonsense", "?cursor=c1.%21%21", // not issued by the API
		"?cursor=c1." + strings.Repeat("A", 2000),
		"?limit=-1", "?limit=1001", "?limit=x", "?limit=1.5", "?limit=",
		"?page=2", "?offset=100", // offsets are not how it pages
		"?node=", "?node=%ff",
		"?token_id=0",
	} {
		msg := f.mustError(400, "invalid_value", "GET", "/api/v1/connections"+q, "")
		if !utf8ValidNoReplacement(msg) {
			t.Errorf("%s: message %q", q, msg)
		}
	}
	// a cursor is opaque and carries no secret, but must not be editable
	// into another listing: a cluster cursor is refused by a single node
	cluster := encodeCursor(cursorData{Node: "n1", ID: 4})
	f.mustError(400, "invalid_value", "GET", "/api/v1/connections?cursor="+url.QueryEscape(cluster), "")
	// a single node answers ?node= for itself (empty node ID here) only
	if pg := f.page("?node=elsewhere"); pg.Total != 0 || len(pg.Connections) != 0 {
		t.Fatalf("node filter on a single node: %+v", pg)
	}
}

func utf8ValidNoReplacement(s string) bool {
	return !strings.ContainsRune(s, '\ufffd') && strings.ToValidUTF8(s, "") == s
}

// Sessions that close or open between pages: every session that stays
// open during the whole listing is listed exactly once, and nothing is
// listed twice.
func TestConnectionsPagingWhileSessionsChange(t *testing.T) {
	f := newFixture(t)
	rng := rand.New(rand.NewPCG(9, 9))
	for round := range 30 {
		next := uint64(1)
		var live []broker.ConnectionInfo
		for range 40 + rng.IntN(200) {
			live = append(live, conn(next, 1))
			next += 1 + uint64(rng.IntN(3))
		}
		f.enf.setConns(live)
		stayed := map[uint64]bool{} // open from the first page to the last
		for _, c := range live {
			stayed[c.ID] = true
		}
		seen := map[uint64]int{}
		limit := 1 + rng.IntN(40)
		q := fmt.Sprintf("?limit=%d", limit)
		for pages := 0; ; pages++ {
			if pages > 1000 {
				t.Fatal("the listing does not end")
			}
			pg := f.page(q)
			for _, c := range pg.Connections {
				seen[c.ID]++
			}
			if pg.NextCursor == "" {
				break
			}
			q = fmt.Sprintf("?limit=%d&cursor=%s", limit, url.QueryEscape(pg.NextCursor))
			// between pages: some sessions close (listed or not yet), some open
			f.enf.editConns(func(cs []broker.ConnectionInfo) []broker.ConnectionInfo {
				cs = slices.DeleteFunc(cs, func(c broker.ConnectionInfo) bool {
					if rng.IntN(6) == 0 {
						delete(stayed, c.ID)
						return true
					}
					return false
				})
				for range rng.IntN(4) {
					cs = append(cs, conn(next, 1))
					next += 1 + uint64(rng.IntN(3))
				}
				rng.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
				return cs
			})
		}
		for id, n := range seen {
			if n > 1 {
				t.Fatalf("round %d: session %d listed %d times", round, id, n)
			}
		}
		for id := range stayed {
			if seen[id] != 1 {
				t.Fatalf("round %d (limit %d): session %d stayed open but was listed %d times", round, limit, id, seen[id])
			}
		}
	}
}

// cluster is a few admin handlers that are each other's peers, each with
// its own sessions.
type cluster struct {
	nodes map[string]*fixture
	mu    sync.Mutex
	peers []Peer
}

func newCluster(t *testing.T, names ...string) *cluster {
	c := &cluster{nodes: map[string]*fixture{}}
	for _, n := range names {
		f := newFixture(t, func(cfg *Config) {
			cfg.NodeID = n
			cfg.Peers = c.listPeers
		})
		c.nodes[n] = f
		c.addPeer(Peer{ID: n, AdminAddr: strings.TrimPrefix(f.srv.URL, "http://")})
	}
	return c
}

func (c *cluster) addPeer(p Peer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.peers = append(c.peers, p)
}

func (c *cluster) listPeers(context.Context) ([]Peer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.peers), nil
}

// all follows the cursors from node via, returning (node, id) pairs.
func (c *cluster) all(t *testing.T, via, query string, limit int, between func()) (got []string, total int) {
	t.Helper()
	f := c.nodes[via]
	q := fmt.Sprintf("?limit=%d%s", limit, query)
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("the listing does not end")
		}
		pg := f.page(q)
		total = pg.Total
		for _, cn := range pg.Connections {
			if cn.Node == "" {
				t.Fatalf("a cluster listing item without its node: %+v", cn)
			}
			got = append(got, fmt.Sprintf("%s/%04d", cn.Node, cn.ID))
		}
		if pg.NextCursor == "" {
			return got, total
		}
		if between != nil {
			between()
		}
		q = fmt.Sprintf("?limit=%d%s&cursor=%s", limit, query, url.QueryEscape(pg.NextCursor))
	}
}

func TestClusterConnectionsPaging(t *testing.T) {
	c := newCluster(t, "node-b", "node-a", "node-c")
	var want []string
	for i, n := range []string{"node-a", "node-b", "node-c"} {
		var cs []broker.ConnectionInfo
		for id := uint64(1); id <= uint64(10+7*i); id++ { // ids overlap across nodes
			cs = append(cs, conn(id, int64(1+id%2)))
			want = append(want, fmt.Sprintf("%s/%04d", n, id))
		}
		c.nodes[n].enf.setConns(cs)
	}
	for _, via := range []string{"node-a", "node-b", "node-c"} {
		for _, limit := range []int{1, 3, 7, 10, 17, 100} {
			got, total := c.all(t, via, "", limit, nil)
			if !slices.Equal(got, want) || total != len(want) {
				t.Fatalf("via %s, limit %d: total %d, listed\n%v\nwant (ordered by node, id)\n%v", via, limit, total, got, want)
			}
		}
	}
	// filters: one token, one node, both
	got, total := c.all(t, "node-b", "&token_id=2", 4, nil)
	if total != 5+9+12 || len(got) != total { // odd ids of 10, 17 and 24
		t.Fatalf("token 2: total %d, listed %d", total, len(got))
	}
	got, total = c.all(t, "node-a", "&node=node-c", 5, nil)
	if total != 24 || len(got) != 24 || !strings.HasPrefix(got[0], "node-c/") || !strings.HasPrefix(got[23], "node-c/") {
		t.Fatalf("node-c only: total %d, %v", total, got)
	}
	got, _ = c.all(t, "node-a", "&node=node-b&token_id=1", 2, nil)
	if len(got) != 8 {
		t.Fatalf("node-b token 1: %v", got)
	}
	if pg := c.nodes["node-a"].page("?node=node-z"); pg.Total != 0 || len(pg.Connections) != 0 {
		t.Fatalf("unknown node: %+v", pg)
	}
	// a local cursor is not a cluster one
	local := encodeCursor(cursorData{ID: 3})
	c.nodes["node-a"].mustError(400, "invalid_value", "GET", "/api/v1/connections?cursor="+url.QueryEscape(local), "")
}

// Between pages of a cluster listing, sessions close and open on every
// node (including the node the cursor points into, and whole nodes
// emptying): no session that stayed is skipped or repeated.
func TestClusterConnectionsPagingWhileSessionsChange(t *testing.T) {
	names := []string{"n1", "n2", "n3"}
	c := newCluster(t, names...)
	rng := rand.New(rand.NewPCG(4, 2))
	for round := range 12 {
		next := map[string]uint64{}
		stayed := map[string]bool{}
		for _, n := range names {
			var cs []broker.ConnectionInfo
			for range rng.IntN(30) {
				next[n] += 1 + uint64(rng.IntN(3))
				cs = append(cs, conn(next[n], 1))
				stayed[fmt.Sprintf("%s/%04d", n, next[n])] = true
			}
			c.nodes[n].enf.setConns(cs)
		}
		between := func() {
			for _, n := range names {
				c.nodes[n].enf.editConns(func(cs []broker.ConnectionInfo) []broker.ConnectionInfo {
					cs = slices.DeleteFunc(cs, func(cn broker.ConnectionInfo) bool {
						if rng.IntN(5) == 0 {
							delete(stayed, fmt.Sprintf("%s/%04d", n, cn.ID))
							return true
						}
						return false
					})
					for range rng.IntN(3) {
						next[n] += 1 + uint64(rng.IntN(3))
						cs = append(cs, conn(next[n], 1))
					}
					return cs
				})
			}
		}
		limit := 1 + rng.IntN(12)
		got, _ := c.all(t, names[rng.IntN(3)], "", limit, between)
		seen := map[string]int{}
		for _, g := range got {
			if seen[g]++; seen[g] > 1 {
				t.Fatalf("round %d: %s listed twice", round, g)
			}
		}
		for s := range stayed {
			if seen[s] != 1 {
				t.Fatalf("round %d (limit %d): %s stayed open but was not listed", round, limit, s)
			}
		}
	}
}

// A node that does not answer is named (header and body) and left out of
// the page and the total; a node of an older version, which answers a bare
// array of all its sessions, is paged by the asking node.
func TestClusterConnectionsUnreachableAndOlderPeers(t *testing.T) {
	c := newCluster(t, "a")
	c.nodes["a"].enf.setConns([]broker.ConnectionInfo{conn(1, 1), conn(2, 1)})
	var old []broker.ConnectionInfo
	for id := uint64(1); id <= 9; id++ {
		old = append(old, conn(id, 1+int64(id%2)))
	}
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var out []broker.ConnectionInfo
		for _, cn := range old {
			if tid := r.URL.Query().Get("token_id"); tid == "" || tid == fmt.Sprint(cn.TokenID) {
				out = append(out, cn)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	}))
	defer legacy.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c.addPeer(Peer{ID: "b-old", AdminAddr: strings.TrimPrefix(legacy.URL, "http://")})
	c.addPeer(Peer{ID: "c-dead", AdminAddr: strings.TrimPrefix(dead.URL, "http://")})

	f := c.nodes["a"]
	req, _ := http.NewRequest("GET", f.srv.URL+"/api/v1/connections?limit=4", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var pg ConnectionsPage
	json.NewDecoder(resp.Body).Decode(&pg)
	resp.Body.Close()
	if resp.Header.Get("Gatecast-Unreachable-Nodes") != "c-dead" || !slices.Equal(pg.UnreachableNodes, []string{"c-dead"}) {
		t.Fatalf("unreachable: header %q, body %v", resp.Header.Get("Gatecast-Unreachable-Nodes"), pg.UnreachableNodes)
	}
	if pg.Total != 11 {
		t.Fatalf("total %d, want 2 + 9 (the dead node uncounted)", pg.Total)
	}
	got, total := c.all(t, "a", "", 4, nil)
	want := []string{"a/0001", "a/0002"}
	for id := 1; id <= 9; id++ {
		want = append(want, fmt.Sprintf("b-old/%04d", id))
	}
	if !slices.Equal(got, want) || total != 11 {
		t.Fatalf("listed %v (total %d), want %v", got, total, want)
	}
	got, total = c.all(t, "a", "&token_id=2", 2, nil)
	if total != 5 || len(got) != 5 || got[0] != "b-old/0001" { // its odd ids
		t.Fatalf("token 2: %v (total %d)", got, total)
	}
}

// Kicking without ?node= still finds the one node holding the ID, and
// refuses to guess between several.
func TestClusterKickFindsHolder(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	c.nodes["a"].enf.setConns([]broker.ConnectionInfo{conn(5, 1), conn(6, 1)})
	c.nodes["b"].enf.setConns([]broker.ConnectionInfo{conn(6, 1), conn(7, 1)})
	c.nodes["c"].enf.setConns([]broker.ConnectionInfo{conn(8, 1)})
	for _, f := range c.nodes {
		for _, id := range []uint64{5, 6, 7, 8} {
			f.enf.kickable[id] = true
		}
	}
	c.nodes["a"].must(204, "DELETE", "/api/v1/connections/8", "", nil)
	if !slices.Equal(c.nodes["c"].enf.kicked, []uint64{8}) {
		t.Fatalf("c kicked %v", c.nodes["c"].enf.kicked)
	}
	c.nodes["c"].must(204, "DELETE", "/api/v1/connections/5", "", nil)
	if !slices.Equal(c.nodes["a"].enf.kicked, []uint64{5}) {
		t.Fatalf("a kicked %v", c.nodes["a"].enf.kicked)
	}
	msg := c.nodes["c"].mustError(409, "conflict", "DELETE", "/api/v1/connections/6", "")
	if !strings.Contains(msg, "a, b") {
		t.Fatalf("conflict message %q", msg)
	}
	c.nodes["c"].must(204, "DELETE", "/api/v1/connections/6?node=b", "", nil)
	c.nodes["a"].mustError(404, "not_found", "DELETE", "/api/v1/connections/9", "")
}

// The CLI and the Go client follow the cursors to the end.
func TestCLIConnectionsFollowsCursors(t *testing.T) {
	f := newFixture(t)
	var cs []broker.ConnectionInfo
	for id := uint64(1); id <= 2345; id++ {
		cs = append(cs, conn(id, 1))
	}
	f.enf.setConns(cs)
	var listed []Connection
	if err := json.Unmarshal([]byte(f.cli("conn", "list", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2345 || listed[0].ID != 1 || listed[2344].ID != 2345 {
		t.Fatalf("conn list --json: %d connections", len(listed))
	}
	out := f.cli("conn", "list")
	if n := strings.Count(out, "\n"); n != 2346 {
		t.Fatalf("conn list: %d lines", n)
	}
	got, _, err := f.client().ListConnections(t.Context(), 0)
	if err != nil || len(got) != 2345 {
		t.Fatalf("client: %d, %v", len(got), err)
	}
	pg, err := f.client().ListConnectionsPage(t.Context(), ConnectionsQuery{Limit: -1})
	if err != nil || pg.Total != 2345 || len(pg.Connections) != 0 {
		t.Fatalf("count only: %+v %v", pg.Total, err)
	}
}
