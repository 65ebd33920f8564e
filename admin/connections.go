package admin

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/gatecast/gatecast/broker"
)

// GET /api/v1/connections answers one page of the live sessions, ordered
// by (node, id), with an opaque cursor to the next page. A cursor is a
// position in that order, not an offset: a session that stays open from
// one page to the next is listed exactly once however many others close
// or open meanwhile (connection IDs only grow on a node), and a session
// opened after the listing started appears if its position is still
// ahead.

// Page sizes of GET /api/v1/connections.
const (
	DefaultConnectionsLimit = 100
	MaxConnectionsLimit     = 1000
)

// ConnectionsPage is the answer of GET /api/v1/connections.
type ConnectionsPage struct {
	Connections []Connection `json:"connections"`
	// Total counts the sessions matching the filters (token_id, node) on
	// the nodes that answered, on every page together, when this page was
	// made.
	Total int `json:"total"`
	// NextCursor, given as ?cursor=, lists the next page; empty on the
	// last page (and for ?limit=0, which only counts).
	NextCursor string `json:"next_cursor"`
	// UnreachableNodes (cluster mode) did not answer: their sessions are
	// neither listed nor counted in this page (also in the
	// Gatecast-Unreachable-Nodes header).
	UnreachableNodes []string `json:"unreachable_nodes,omitempty"`
}

// Connection is one live session as listed. Node is the node holding it,
// set in cluster mode only (connection IDs are per node).
type Connection struct {
	broker.ConnectionInfo
	Node string `json:"node,omitempty"`
}

// connQuery is a parsed GET /api/v1/connections request.
type connQuery struct {
	tokenID int64
	node    string // ?node=: that node's sessions only
	limit   int
	// the cursor's position: after (afterNode, afterID)
	hasCursor bool
	afterNode string
	afterID   uint64
}

// cursorData is what a cursor encodes. TokenID and Filter repeat the
// listing's filters, so that a cursor cannot be used with other ones.
type cursorData struct {
	Node    string `json:"n,omitempty"` // cluster listings only
	ID      uint64 `json:"i"`
	TokenID int64  `json:"t,omitempty"`
	Filter  string `json:"f,omitempty"`
}

const (
	cursorPrefix   = "c1."
	maxCursorBytes = 1024
	maxNodeIDBytes = 256
)

func encodeCursor(c cursorData) string {
	b, _ := json.Marshal(c) // plain fields: always encodes
	return cursorPrefix + base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursorData, bool) {
	var c cursorData
	rest, ok := strings.CutPrefix(s, cursorPrefix)
	if !ok || len(s) > maxCursorBytes {
		return c, false
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || !utf8.Valid(b) {
		return c, false
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if dec.Decode(&c) != nil || dec.More() {
		return c, false
	}
	return c, true
}

// parseConnQuery reads token_id, node, limit and cursor. cluster tells
// which kind of listing answers (a cursor of the other kind is refused).
func parseConnQuery(v url.Values, cluster bool) (connQuery, *apiError) {
	q := connQuery{limit: DefaultConnectionsLimit}
	if s := v.Get("token_id"); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			return q, invalid("token_id must be a positive integer")
		}
		q.tokenID = id
	}
	if v.Has("node") {
		q.node = v.Get("node")
		if q.node == "" || len(q.node) > maxNodeIDBytes || !utf8.ValidString(q.node) {
			return q, invalid("node must be a node ID (see GET /api/v1/nodes)")
		}
	}
	if v.Has("page") || v.Has("offset") {
		return q, invalid("page and offset are not supported: follow next_cursor (?cursor=…)")
	}
	if v.Has("limit") {
		n, err := strconv.Atoi(v.Get("limit"))
		if err != nil || n < 0 || n > MaxConnectionsLimit {
			return q, invalid("limit must be an integer from 0 (count only) to %d", MaxConnectionsLimit)
		}
		q.limit = n
	}
	if s := v.Get("cursor"); s != "" {
		c, ok := decodeCursor(s)
		if !ok {
			return q, invalid("cursor is not one this API issued (pass next_cursor unchanged)")
		}
		if c.TokenID != q.tokenID || c.Filter != q.node || (c.Node != "") != cluster {
			return q, invalid("cursor belongs to another listing (other token_id, node or scope); start again without it")
		}
		q.hasCursor, q.afterNode, q.afterID = true, c.Node, c.ID
	}
	return q, nil
}

func byID(a, b broker.ConnectionInfo) int { return cmp.Compare(a.ID, b.ID) }

// pageAfter takes up to limit sessions with an ID above after from conns
// (sorted here if need be); more tells whether some are left beyond them.
// limit 0 only counts: more is then false.
func pageAfter(conns []broker.ConnectionInfo, after uint64, limit int) (page []broker.ConnectionInfo, more bool) {
	if !slices.IsSortedFunc(conns, byID) {
		slices.SortFunc(conns, byID)
	}
	i := sort.Search(len(conns), func(i int) bool { return conns[i].ID > after })
	rest := conns[i:]
	n := min(limit, len(rest))
	return rest[:n], limit > 0 && len(rest) > n
}

// localPage is this node's part of a listing.
func (h *handler) localPage(tokenID int64, after uint64, limit int) nodePage {
	conns := h.enf.Connections(tokenID)
	page, more := pageAfter(conns, after, limit)
	out := make([]Connection, len(page))
	for i, c := range page {
		out[i] = Connection{ConnectionInfo: c}
	}
	return nodePage{items: out, total: len(conns), more: more}
}

// nodePage is one node's answer to a listing.
type nodePage struct {
	items []Connection
	total int
	more  bool // sessions beyond items (never for a count-only request)
	err   error
}

func (h *handler) listConnections(w http.ResponseWriter, r *http.Request) {
	cluster := h.peers != nil && !scopeLocal(r)
	q, e := parseConnQuery(r.URL.Query(), cluster)
	if e != nil {
		writeError(w, e)
		return
	}
	var page ConnectionsPage
	if cluster {
		var err error
		page, err = h.clusterPage(r.Context(), q)
		if err != nil {
			h.log.Error("listing cluster nodes failed", "err", err)
			writeError(w, &apiError{http.StatusServiceUnavailable, codeUnavailable, "the cluster registry is unavailable"})
			return
		}
		if len(page.UnreachableNodes) > 0 {
			w.Header().Set("Gatecast-Unreachable-Nodes", strings.Join(page.UnreachableNodes, ","))
		}
	} else {
		np := nodePage{}
		if q.node == "" || q.node == h.nodeID {
			np = h.localPage(q.tokenID, q.afterID, q.limit)
		}
		page = ConnectionsPage{Connections: np.items, Total: np.total}
		if h.peers != nil { // a cluster node asked for its own sessions
			for i := range page.Connections {
				page.Connections[i].Node = h.nodeID
			}
		}
		if np.more {
			last := np.items[len(np.items)-1]
			page.NextCursor = encodeCursor(cursorData{ID: last.ID, TokenID: q.tokenID, Filter: q.node})
		}
	}
	if page.Connections == nil {
		page.Connections = []Connection{}
	}
	for i := range page.Connections {
		if page.Connections[i].Subscriptions == nil {
			page.Connections[i].Subscriptions = []string{}
		}
	}
	writeJSON(w, http.StatusOK, page)
}

// clusterPage lists a page of the sessions of every live node, ordered by
// (node, id): every node is asked at once for its first limit sessions
// after the cursor's position (nodes ordered before the cursor's node only
// for their count), and the answers are merged in node order.
func (h *handler) clusterPage(ctx context.Context, q connQuery) (ConnectionsPage, error) {
	peers, err := h.peers(ctx)
	if err != nil {
		return ConnectionsPage{}, err
	}
	type source struct {
		id   string
		peer *Peer // nil: this node
	}
	srcs := []source{{id: h.nodeID}}
	seen := map[string]bool{h.nodeID: true}
	for i := range peers {
		if !seen[peers[i].ID] {
			seen[peers[i].ID] = true
			srcs = append(srcs, source{id: peers[i].ID, peer: &peers[i]})
		}
	}
	if q.node != "" {
		srcs = slices.DeleteFunc(srcs, func(s source) bool { return s.id != q.node })
	}
	slices.SortFunc(srcs, func(a, b source) int { return strings.Compare(a.id, b.id) })

	pages := make([]nodePage, len(srcs))
	var wg sync.WaitGroup
	for i, s := range srcs {
		after, limit := uint64(0), q.limit
		if q.hasCursor {
			switch c := strings.Compare(s.id, q.afterNode); {
			case c < 0:
				limit = 0 // listed on earlier pages: counted only
			case c == 0:
				after = q.afterID
			}
		}
		if s.peer == nil {
			pages[i] = h.localPage(q.tokenID, after, limit)
			continue
		}
		wg.Go(func() { pages[i] = h.peerPage(ctx, *s.peer, q.tokenID, after, limit) })
	}
	wg.Wait()

	var out ConnectionsPage
	more := false
	for i, p := range pages {
		if p.err != nil {
			h.log.Warn("listing a peer's connections failed", "node", srcs[i].id, "err", p.err)
			out.UnreachableNodes = append(out.UnreachableNodes, srcs[i].id)
			continue
		}
		out.Total += p.total
		more = more || p.more
		for _, c := range p.items {
			c.Node = srcs[i].id
			out.Connections = append(out.Connections, c)
		}
	}
	if len(out.Connections) > q.limit {
		out.Connections, more = out.Connections[:q.limit], true
	}
	if more && len(out.Connections) > 0 {
		last := out.Connections[len(out.Connections)-1]
		out.NextCursor = encodeCursor(cursorData{Node: last.Node, ID: last.ID, TokenID: q.tokenID, Filter: q.node})
	}
	return out, nil
}

// peerPage asks a peer for its own sessions after an ID. A peer of an
// older version answers a bare array of all its sessions, paged here.
func (h *handler) peerPage(ctx context.Context, p Peer, tokenID int64, after uint64, limit int) nodePage {
	v := url.Values{"scope": {"local"}, "limit": {strconv.Itoa(limit)}}
	if tokenID != 0 {
		v.Set("token_id", strconv.FormatInt(tokenID, 10))
	}
	if after != 0 {
		v.Set("cursor", encodeCursor(cursorData{ID: after, TokenID: tokenID}))
	}
	var raw json.RawMessage
	if err := h.peerCall(ctx, p, http.MethodGet, "/api/v1/connections?"+v.Encode(), &raw); err != nil {
		return nodePage{err: err}
	}
	if trimmed := strings.TrimLeft(string(raw), " \t\r\n"); strings.HasPrefix(trimmed, "[") {
		var all []broker.ConnectionInfo
		if err := json.Unmarshal(raw, &all); err != nil {
			return nodePage{err: err}
		}
		page, more := pageAfter(all, after, limit)
		out := make([]Connection, len(page))
		for i, c := range page {
			out[i] = Connection{ConnectionInfo: c}
		}
		return nodePage{items: out, total: len(all), more: more}
	}
	var pg ConnectionsPage
	if err := json.Unmarshal(raw, &pg); err != nil {
		return nodePage{err: err}
	}
	if len(pg.Connections) > limit { // not ours to trust blindly
		pg.Connections, pg.NextCursor = pg.Connections[:limit], "x"
	}
	return nodePage{items: pg.Connections, total: pg.Total, more: limit > 0 && pg.NextCursor != ""}
}

// holders lists the nodes holding a session with this ID (IDs are per
// node), asking each peer for its first session from that ID on. Peers
// that do not answer are left out.
func (h *handler) holders(ctx context.Context, peers []Peer, id uint64) []string {
	var mu sync.Mutex
	var out []string
	if np := h.localPage(0, id-1, 1); len(np.items) == 1 && np.items[0].ID == id {
		out = append(out, h.nodeID)
	}
	var wg sync.WaitGroup
	for _, p := range peers {
		if p.ID == h.nodeID {
			continue
		}
		wg.Go(func() {
			np := h.peerPage(ctx, p, 0, id-1, 1)
			if np.err != nil {
				h.log.Warn("asking a peer for a connection failed", "node", p.ID, "err", np.err)
				return
			}
			if len(np.items) == 1 && np.items[0].ID == id {
				mu.Lock()
				out = append(out, p.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(out)
	return out
}
