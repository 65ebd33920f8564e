package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// adminAPI is the small part of the admin API a load run needs to set
// itself up: plain HTTP and JSON, as any outside tool would use it.
type adminAPI struct {
	base, key string
	http      *http.Client
}

func newAdminAPI(base, key string) *adminAPI {
	return &adminAPI{base: strings.TrimRight(base, "/"), key: key, http: &http.Client{Timeout: 60 * time.Second}}
}

func (a *adminAPI) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

type ltToken struct {
	ID     int64  `json:"id"`
	Secret string `json:"token"`
}

// tokenOnTag creates a token (limit 0) holding perm on the tag tagID.
func (a *adminAPI) tokenOnTag(ctx context.Context, name string, tagID int64, perm string) (ltToken, error) {
	var tok ltToken
	if err := a.do(ctx, "POST", "/api/v1/tokens", map[string]any{"name": name, "max_connections": 0}, &tok); err != nil {
		return tok, err
	}
	err := a.do(ctx, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tagID), map[string]any{"permission": perm}, nil)
	return tok, err
}

// tagID returns the id of the tag with pattern, creating it if needed.
func (a *adminAPI) tagID(ctx context.Context, pattern string) (int64, error) {
	var tags []struct {
		ID      int64  `json:"id"`
		Pattern string `json:"pattern"`
	}
	if err := a.do(ctx, "GET", "/api/v1/tags", nil, &tags); err != nil {
		return 0, err
	}
	for _, t := range tags {
		if t.Pattern == pattern {
			return t.ID, nil
		}
	}
	var t struct {
		ID int64 `json:"id"`
	}
	err := a.do(ctx, "POST", "/api/v1/tags", map[string]any{"pattern": pattern}, &t)
	return t.ID, err
}

// disableToken disables a token: the broker closes its sessions with 4002
// before answering.
func (a *adminAPI) disableToken(ctx context.Context, id int64) error {
	return a.do(ctx, "PATCH", fmt.Sprintf("/api/v1/tokens/%d", id), map[string]any{"disabled": true}, nil)
}

// deleteToken deletes a token.
func (a *adminAPI) deleteToken(ctx context.Context, id int64) error {
	return a.do(ctx, "DELETE", fmt.Sprintf("/api/v1/tokens/%d", id), nil, nil)
}

// memory is the broker's own account of its memory, from /metrics, taken
// right after a forced garbage collection (pprof's heap?gc=1), and its
// count of offline (persistent) sessions.
type memory struct {
	HeapInuse, StackInuse, RSS, Goroutines float64
	OfflineSessions                        float64 // gatecast_sessions_offline
}

func (a *adminAPI) memory(ctx context.Context) (memory, error) {
	// A heap profile request with gc=1 runs a full GC first, so the
	// figures below are live memory, not garbage waiting to be collected.
	if err := a.do(ctx, "GET", "/debug/pprof/heap?gc=1", nil, nil); err != nil {
		return memory{}, fmt.Errorf("forcing a GC through /debug/pprof/heap?gc=1: %w", err)
	}
	return a.scrape(ctx)
}

// scrape reads /metrics without forcing a collection first.
func (a *adminAPI) scrape(ctx context.Context) (memory, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", a.base+"/metrics", nil)
	resp, err := a.http.Do(req)
	if err != nil {
		return memory{}, err
	}
	defer resp.Body.Close()
	var m memory
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			m.HeapInuse = v
		case "go_memstats_stack_inuse_bytes":
			m.StackInuse = v
		case "process_resident_memory_bytes":
			m.RSS = v
		case "go_goroutines":
			m.Goroutines = v
		case "gatecast_sessions_offline":
			m.OfflineSessions = v
		}
	}
	return m, sc.Err()
}
