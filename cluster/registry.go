package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Registry keys share the hash tag {nodes}: one slot, one script.
//
//	gc:{nodes}:e  ZSET  node ID -> expiry, ms of the Redis server clock
//	gc:{nodes}:i  HASH  node ID -> NodeInfo as JSON
const (
	nodesExpiryKey = "gc:{nodes}:e"
	nodesInfoKey   = "gc:{nodes}:i"
)

// NodeInfo is what a node publishes about itself with every heartbeat.
type NodeInfo struct {
	ID          string    `json:"id"`
	WSAddr      string    `json:"ws_addr,omitempty"`
	AdminAddr   string    `json:"admin_addr,omitempty"`
	Version     string    `json:"version,omitempty"`
	StartedAt   time.Time `json:"started_at"`
	Connections int       `json:"connections"`
	// Features names what the node understands beyond what every version
	// does, so that a node only uses a feature once every live node has it
	// (rolling upgrades). FeatureBarrierVersions: r2 barrier messages.
	Features []string `json:"features,omitempty"`
	// ExpiresAt is when the node counts as gone unless it heartbeats again
	// (filled in by Nodes, from the Redis clock).
	ExpiresAt time.Time `json:"expires_at"`
}

// Features a node can announce in NodeInfo.Features.
const (
	// FeatureBarrierVersions: the node acknowledges barrier messages that
	// carry versions (Barrier.EnforceVersions).
	FeatureBarrierVersions = "barrier-versions"
)

// HasFeature reports whether n announced feature f.
func (n NodeInfo) HasFeature(f string) bool {
	for _, g := range n.Features {
		if g == f {
			return true
		}
	}
	return false
}

// heartbeatLua: KEYS expiry, info; ARGV node, ttl ms, info JSON. Sweeps
// expired nodes, then records this one.
const heartbeatLua = luaPrelude + `
local e, i, node, ttl = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local now = now_ms()
for _, m in ipairs(redis.call('ZRANGEBYSCORE', e, '-inf', now)) do redis.call('HDEL', i, m) end
redis.call('ZREMRANGEBYSCORE', e, '-inf', now)
redis.call('ZADD', e, now + ttl, node)
redis.call('HSET', i, node, ARGV[3])
return now
`

// nodesLua: KEYS expiry, info. Returns {node, expiry, info, ...} of live nodes.
const nodesLua = luaPrelude + `
local e, i = KEYS[1], KEYS[2]
local now = now_ms()
local out = {}
local live = redis.call('ZRANGEBYSCORE', e, '(' .. now, '+inf', 'WITHSCORES')
for k = 1, #live, 2 do
  out[#out + 1] = live[k]
  out[#out + 1] = live[k + 1]
  out[#out + 1] = redis.call('HGET', i, live[k]) or ''
end
return out
`

// leaveLua: KEYS expiry, info; ARGV node.
const leaveLua = `
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`

var (
	heartbeatScript = rueidis.NewLuaScriptRetryable(heartbeatLua)
	nodesScript     = rueidis.NewLuaScriptReadOnly(nodesLua)
	leaveScript     = rueidis.NewLuaScriptRetryable(leaveLua)
)

// Registry is the set of live nodes. A node is live while its last
// Heartbeat is younger than the TTL; a node killed without Leave drops out
// by itself. Safe for concurrent use.
type Registry struct {
	c     rueidis.Client
	ttlMS string
	err   error
}

// NewRegistry returns the registry on client c; ttl is how long a node
// stays listed after its last heartbeat (heartbeat at most every ttl/3).
func NewRegistry(c rueidis.Client, ttl time.Duration) *Registry {
	r := &Registry{c: c, ttlMS: strconv.FormatInt(ttl.Milliseconds(), 10)}
	switch {
	case c == nil:
		r.err = errors.New("cluster: NewRegistry: nil Redis client")
	case ttl < time.Millisecond:
		r.err = fmt.Errorf("cluster: NewRegistry: TTL must be at least 1ms, got %v", ttl)
	}
	return r
}

// Heartbeat records info as live for one TTL. One EVALSHA.
func (r *Registry) Heartbeat(ctx context.Context, info NodeInfo) error {
	if r.err != nil {
		return r.err
	}
	if info.ID == "" {
		return errors.New("cluster: Heartbeat: empty node ID")
	}
	info.ExpiresAt = time.Time{}
	body, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("cluster: Heartbeat: %w", err)
	}
	if err := heartbeatScript.Exec(ctx, r.c, []string{nodesExpiryKey, nodesInfoKey}, []string{info.ID, r.ttlMS, string(body)}).Error(); err != nil {
		return fmt.Errorf("cluster: Heartbeat: %w", err)
	}
	return nil
}

// Nodes lists the live nodes, sorted by ID.
func (r *Registry) Nodes(ctx context.Context) ([]NodeInfo, error) {
	if r.err != nil {
		return nil, r.err
	}
	vals, err := nodesScript.Exec(ctx, r.c, []string{nodesExpiryKey, nodesInfoKey}, nil).ToArray()
	if err != nil {
		return nil, fmt.Errorf("cluster: Nodes: %w", err)
	}
	out := make([]NodeInfo, 0, len(vals)/3)
	for k := 0; k+2 < len(vals); k += 3 {
		id, err1 := vals[k].ToString()
		score, err2 := vals[k+1].ToString()
		body, err3 := vals[k+2].ToString()
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("cluster: Nodes: %w", err)
		}
		info := NodeInfo{ID: id}
		if body != "" {
			if err := json.Unmarshal([]byte(body), &info); err != nil {
				return nil, fmt.Errorf("cluster: Nodes: node %q: %w", id, err)
			}
		}
		if ms, err := strconv.ParseFloat(score, 64); err == nil {
			info.ExpiresAt = time.UnixMilli(int64(ms)).UTC()
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Leave removes a node at once (graceful shutdown).
func (r *Registry) Leave(ctx context.Context, id string) error {
	if r.err != nil {
		return r.err
	}
	if err := leaveScript.Exec(ctx, r.c, []string{nodesExpiryKey, nodesInfoKey}, []string{id}).Error(); err != nil {
		return fmt.Errorf("cluster: Leave: %w", err)
	}
	return nil
}

// NewNodeID returns a node ID unique across restarts: the host name (for
// operators) and 6 random bytes (so a restarted node never inherits the
// leases of its previous life).
func NewNodeID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, host)
	if len(host) > 40 {
		host = host[:40]
	}
	if host == "" {
		host = "node"
	}
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return host + "-" + hex.EncodeToString(b[:])
}
