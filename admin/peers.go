package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gatecast/gatecast/broker"
)

// Peer is another node of the cluster, reachable on its admin listener
// with the same admin key.
type Peer struct {
	ID        string
	AdminAddr string // host:port
}

// clusterConnection is a connection as listed cluster-wide: connection IDs
// are per node, so each carries the node that holds it.
type clusterConnection struct {
	broker.ConnectionInfo
	Node string `json:"node"`
}

// peerTimeout bounds one call to another node.
const peerTimeout = 5 * time.Second

var peerHTTP = &http.Client{Timeout: peerTimeout}

// scopeLocal is the query parameter that keeps a node from fanning out a
// request it received from a peer.
func scopeLocal(r *http.Request) bool { return r.URL.Query().Get("scope") == "local" }

// peerGET lists one peer's own connections.
func (h *handler) peerConnections(ctx context.Context, p Peer, tokenID int64) ([]clusterConnection, error) {
	q := url.Values{"scope": {"local"}}
	if tokenID != 0 {
		q.Set("token_id", strconv.FormatInt(tokenID, 10))
	}
	var out []broker.ConnectionInfo
	if err := h.peerCall(ctx, p, http.MethodGet, "/api/v1/connections?"+q.Encode(), &out); err != nil {
		return nil, err
	}
	res := make([]clusterConnection, len(out))
	for i, c := range out {
		res[i] = clusterConnection{ConnectionInfo: c, Node: p.ID}
	}
	return res, nil
}

func (h *handler) peerCall(ctx context.Context, p Peer, method, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+p.AdminAddr+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+h.peerKey)
	resp, err := peerHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return &peerStatus{resp.StatusCode}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(out)
}

type peerStatus struct{ code int }

func (e *peerStatus) Error() string { return fmt.Sprintf("peer answered HTTP %d", e.code) }

// clusterConnections lists this node's connections and every peer's, in
// parallel. A peer that does not answer is reported in unreachable.
func (h *handler) clusterConnections(ctx context.Context, tokenID int64) (all []clusterConnection, unreachable []string, err error) {
	for _, c := range h.enf.Connections(tokenID) {
		all = append(all, clusterConnection{ConnectionInfo: c, Node: h.nodeID})
	}
	peers, err := h.peers(ctx)
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers {
		if p.ID == h.nodeID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns, err := h.peerConnections(ctx, p, tokenID)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				h.log.Warn("listing a peer's connections failed", "node", p.ID, "err", err)
				unreachable = append(unreachable, p.ID)
				return
			}
			all = append(all, conns...)
		}()
	}
	wg.Wait()
	return all, unreachable, nil
}
