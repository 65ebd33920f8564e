package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Peer is another node of the cluster, reachable on its admin listener
// with the same admin key.
type Peer struct {
	ID        string
	AdminAddr string // host:port
}

// peerTimeout bounds one call to another node.
const peerTimeout = 5 * time.Second

// maxPeerAnswerBytes bounds a peer's answer: a page is at most
// MaxConnectionsLimit sessions, but a peer of an older version answers
// all of its sessions at once.
const maxPeerAnswerBytes = 256 << 20

var peerHTTP = &http.Client{Timeout: peerTimeout}

// scopeLocal is the query parameter that keeps a node from fanning out a
// request it received from a peer.
func scopeLocal(r *http.Request) bool { return r.URL.Query().Get("scope") == "local" }

func (h *handler) peerCall(ctx context.Context, p Peer, method, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+p.AdminAddr+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+h.peerKey)
	req.Header.Set("User-Agent", peerUserAgent+"/"+h.nodeID)
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
	return json.NewDecoder(io.LimitReader(resp.Body, maxPeerAnswerBytes)).Decode(out)
}

type peerStatus struct{ code int }

func (e *peerStatus) Error() string { return fmt.Sprintf("peer answered HTTP %d", e.code) }
