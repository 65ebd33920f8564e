package cluster

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// Key layout of the lease table. Both keys of a token share the hash tag
// {t<id>}, so every script below touches exactly one Redis Cluster slot.
//
//	gc:{t<id>}:n  HASH  node ID -> slots this node holds for the token
//	gc:{t<id>}:e  ZSET  node ID -> expiry of that share, ms of the Redis server clock
//
// A share is live while its expiry is later than the server's TIME. Both
// keys carry a PEXPIRE a little past the latest share expiry, so a token
// nobody renews disappears by itself.
const (
	leaseKeyPrefix  = "gc:{t"
	leaseCountsTail = "}:n"
	leaseExpiryTail = "}:e"
	// keySlackMS is how long the keys outlive their latest share. Any
	// value >= 0 is correct (keys never expire before a live share); a
	// little slack keeps an idle token's keys across one late heartbeat.
	keySlackMS = "1000"
	// execChunk bounds one pipelined DoMulti of Heartbeat and Reset.
	execChunk = 1000
	// leaseShards spreads the local share table over independent locks so
	// concurrent Acquire/Release of different tokens never meet on one.
	leaseShards = 64
)

func leaseKeys(tokenID int64) (counts, expiry string) {
	id := strconv.FormatInt(tokenID, 10)
	return leaseKeyPrefix + id + leaseCountsTail, leaseKeyPrefix + id + leaseExpiryTail
}

// luaPrelude holds the helpers every lease script starts with. Time is the
// Redis server's own clock (TIME), never the caller's: all shares of a token
// live on one server, so one clock judges them all.
const luaPrelude = `
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- sweep drops every share whose expiry is not later than now.
local function sweep(n, e, now)
  local dead = redis.call('ZRANGEBYSCORE', e, '-inf', now)
  if #dead > 0 then
    for _, m in ipairs(dead) do redis.call('HDEL', n, m) end
    redis.call('ZREMRANGEBYSCORE', e, '-inf', now)
  end
end
-- live_sum adds the counts of the shares that are still live.
local function live_sum(n, e, now)
  local sum = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', e, '(' .. now, '+inf')) do
    sum = sum + (tonumber(redis.call('HGET', n, m)) or 0)
  end
  return sum
end
-- keep sets both keys to expire a little after their latest share.
local function keep(n, e, now, slack)
  local last = redis.call('ZRANGE', e, -1, -1, 'WITHSCORES')
  if last[2] == nil then
    redis.call('DEL', n)
    return
  end
  local ms = tonumber(last[2]) - now + slack
  if ms < 1 then ms = 1 end
  redis.call('PEXPIRE', n, ms)
  redis.call('PEXPIRE', e, ms)
end
-- own_lost says whether this node's share is absent or already expired.
local function own_lost(e, node, now)
  local own = redis.call('ZSCORE', e, node)
  return (not own) or tonumber(own) <= now
end
`

// acquireLua: KEYS counts, expiry; ARGV node, max, ttl ms, base, slack ms.
// base is the number of slots the node knows it holds; when its share was
// lost (expired, or Redis restarted empty) the share is re-instated to base
// before comparing, because those connections are still open.
// Returns {acquired 0|1, live count after, lost 0|1}.
const acquireLua = luaPrelude + `
local n, e, node = KEYS[1], KEYS[2], ARGV[1]
local max, ttl, base, slack = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local lost = 0
if base > 0 and own_lost(e, node, now) then lost = 1 end
sweep(n, e, now)
if lost == 1 then
  redis.call('HSET', n, node, base)
  redis.call('ZADD', e, now + ttl, node)
end
local sum = live_sum(n, e, now)
local ok = 0
if sum < max then
  redis.call('HINCRBY', n, node, 1)
  redis.call('ZADD', e, now + ttl, node)
  sum = sum + 1
  ok = 1
end
keep(n, e, now, slack)
return {ok, sum, lost}
`

// releaseLua: KEYS counts, expiry; ARGV node, slack ms. Takes one slot off
// this node's share, never below zero. Returns the share left, or -1 when the
// share was already lost (the caller then repairs it from its local count).
const releaseLua = luaPrelude + `
local n, e, node, slack = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local now = now_ms()
if own_lost(e, node, now) then
  redis.call('HDEL', n, node)
  redis.call('ZREM', e, node)
  keep(n, e, now, slack)
  return -1
end
local c = (tonumber(redis.call('HGET', n, node)) or 0) - 1
if c <= 0 then
  c = 0
  redis.call('HDEL', n, node)
  redis.call('ZREM', e, node)
else
  redis.call('HSET', n, node, c)
end
keep(n, e, now, slack)
return c
`

// renewLua: KEYS counts, expiry; ARGV node, ttl ms, slack ms. Extends a live
// share; returns 1, or 0 when the share is lost (never re-created here: only
// a repair, which knows no local operation is in flight, may set a count).
const renewLua = luaPrelude + `
local n, e, node = KEYS[1], KEYS[2], ARGV[1]
local ttl, slack = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
if own_lost(e, node, now) then return 0 end
redis.call('ZADD', e, now + ttl, node)
keep(n, e, now, slack)
return 1
`

// setLua: KEYS counts, expiry; ARGV node, ttl ms, slack ms, count. Sets this
// node's share to count (0 removes it). Idempotent.
const setLua = luaPrelude + `
local n, e, node = KEYS[1], KEYS[2], ARGV[1]
local ttl, slack, c = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
if c > 0 then
  redis.call('HSET', n, node, c)
  redis.call('ZADD', e, now + ttl, node)
else
  redis.call('HDEL', n, node)
  redis.call('ZREM', e, node)
end
keep(n, e, now, slack)
return c
`

// adoptLua: KEYS counts, expiry; ARGV node, k, ttl ms, base, slack ms. Adds
// k slots to this node's share without comparing with any limit: the
// connections are already open (admitted while the token had no limit).
// base and the lost flag work as in acquireLua. Returns {live count after,
// lost 0|1}.
const adoptLua = luaPrelude + `
local n, e, node = KEYS[1], KEYS[2], ARGV[1]
local k, ttl, base, slack = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local lost = 0
if base > 0 and own_lost(e, node, now) then lost = 1 end
sweep(n, e, now)
if lost == 1 then redis.call('HSET', n, node, base) end
redis.call('HINCRBY', n, node, k)
redis.call('ZADD', e, now + ttl, node)
local sum = live_sum(n, e, now)
keep(n, e, now, slack)
return {sum, lost}
`

// trimLua: KEYS counts, expiry; ARGV node, max, held, slack ms. When the live
// cluster-wide count exceeds max, takes the excess from THIS node's share (as
// much as it holds) and returns how many slots it took: the node closes that
// many connections. held, the node's local count, stands for its share in
// the sum, because the share may still include slots whose Release is in
// flight. Returns -1 (changing nothing) when this node's share was lost: its
// Heartbeat must repair it first.
const trimLua = luaPrelude + `
local n, e, node = KEYS[1], KEYS[2], ARGV[1]
local max, held, slack = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
if held > 0 and own_lost(e, node, now) then return -1 end
sweep(n, e, now)
local own = tonumber(redis.call('HGET', n, node)) or 0
local sum = live_sum(n, e, now) - own + held
local take = math.min(sum - max, held)
if take <= 0 then return 0 end
own = own - take
if own > 0 then
  redis.call('HSET', n, node, own)
else
  redis.call('HDEL', n, node)
  redis.call('ZREM', e, node)
end
keep(n, e, now, slack)
return take
`

// countLua: KEYS counts, expiry. Live cluster-wide count; writes nothing.
const countLua = luaPrelude + `
return live_sum(KEYS[1], KEYS[2], now_ms())
`

// script is a Lua script with its SHA-1, for Exec (one call, EVALSHA with an
// EVAL fallback) and for hand-built pipelines of EVALSHA.
type script struct {
	lua  *rueidis.Lua
	body string
	sha  string
}

func newScript(body string, retryable bool) *script {
	sum := sha1.Sum([]byte(body))
	s := &script{body: body, sha: hex.EncodeToString(sum[:])}
	if retryable {
		s.lua = rueidis.NewLuaScriptRetryable(body)
	} else {
		s.lua = rueidis.NewLuaScript(body)
	}
	return s
}

var (
	acquireScript = newScript(acquireLua, false) // never retried: a retry could count twice
	releaseScript = newScript(releaseLua, false)
	renewScript   = newScript(renewLua, true)
	setScript     = newScript(setLua, true)
	countScript   = newScript(countLua, true)
	adoptScript   = newScript(adoptLua, false) // never retried: a retry could count twice
	trimScript    = newScript(trimLua, false)  // never retried: a retry could take twice
)

type scriptCall struct {
	keys, args []string
}

// execMany runs s once per call, pipelined in chunks. Calls answered with
// NOSCRIPT (a restarted or flushed Redis) are retried once after loading the
// script on every node, so the steady state is one EVALSHA per call.
func execMany(ctx context.Context, c rueidis.Client, s *script, calls []scriptCall) []rueidis.RedisResult {
	out := make([]rueidis.RedisResult, 0, len(calls))
	for start := 0; start < len(calls); start += execChunk {
		chunk := calls[start:min(start+execChunk, len(calls))]
		res := c.DoMulti(ctx, evalshaCmds(c, s, chunk)...)
		var retry []int
		for i, r := range res {
			if e, ok := rueidis.IsRedisErr(r.Error()); ok && e.IsNoScript() {
				retry = append(retry, i)
			}
		}
		if len(retry) > 0 {
			if err := loadEverywhere(ctx, c, s); err != nil {
				for _, i := range retry {
					res[i] = rueidis.NewErrorResult(err)
				}
			} else {
				again := make([]scriptCall, len(retry))
				for j, i := range retry {
					again[j] = chunk[i]
				}
				for j, r := range c.DoMulti(ctx, evalshaCmds(c, s, again)...) {
					res[retry[j]] = r
				}
			}
		}
		out = append(out, res...)
	}
	return out
}

func evalshaCmds(c rueidis.Client, s *script, calls []scriptCall) rueidis.Commands {
	cmds := make(rueidis.Commands, len(calls))
	for i, k := range calls {
		cmds[i] = c.B().Evalsha().Sha1(s.sha).Numkeys(int64(len(k.keys))).Key(k.keys...).Arg(k.args...).Build()
	}
	return cmds
}

// loadEverywhere loads s on every node the client knows (every master of a
// Redis Cluster), so the EVALSHA of any slot finds it.
func loadEverywhere(ctx context.Context, c rueidis.Client, s *script) error {
	var errs []error
	for addr, n := range c.Nodes() {
		if err := n.Do(ctx, n.B().ScriptLoad().Script(s.body).Build()).Error(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cluster: SCRIPT LOAD: %w", errors.Join(errs...))
	}
	return nil
}

// Leases counts each token's live connections across all nodes. A node's
// share expires unless renewed by Heartbeat within TTL, so a crashed node
// stops counting within TTL.
//
// Every method is safe for concurrent use by any goroutine, except Reset,
// which must not run concurrently with Acquire or Release (call it once at
// start, before serving). Acquire and Release take only the lock of one of
// 64 shards of the local table, for microseconds, never across a Redis call.
//
// # Exactness
//
// Acquire is one Lua script: it drops expired shares, sums the live ones,
// compares with max and increments this node's share, atomically in Redis, so
// concurrent Acquire from any number of nodes never admits more than max.
//
// The node also remembers how many slots it holds per token (its local
// count). Whenever Redis may disagree with it — an Acquire or Release whose
// outcome is unknown (timeout, lost link), or this node's share found expired
// (the node was cut off from Redis for longer than TTL, or Redis restarted
// empty) — the token is marked dirty, and the next Heartbeat sets this node's
// share to the local count. While that repair is in flight, Acquire and
// Release of that token on this node wait for it (other tokens do not), so a
// repair never overwrites an increment it has not seen. A slot whose Release
// failed is therefore freed within one heartbeat period instead of leaking.
// Caveat: a call whose ctx ended after its command was queued may still reach
// Redis later; the repair is then correct once that command has run, which in
// practice is long before the next heartbeat.
type Leases struct {
	c      rueidis.Client
	node   string
	ttlMS  string
	err    error // set by NewLeases for bad arguments; returned by every method
	hbMu   sync.Mutex
	shards [leaseShards]leaseShard
}

type leaseShard struct {
	mu sync.Mutex
	m  map[int64]*localShare
	_  [40]byte // keeps neighbouring shard locks off one cache line
}

// localShare is this node's view of one token. Guarded by its shard's mu.
type localShare struct {
	held      int           // slots this node holds (confirmed acquires - releases)
	inflight  int           // Acquire/Release calls of this node now talking to Redis
	dirty     bool          // Redis may disagree with held; Heartbeat repairs it
	repairing chan struct{} // non-nil while a repair is in flight; closed when done
}

// NewLeases returns the lease table of node nodeID on client c. ttl is how
// long a share lives without a Heartbeat (at least 1 ms; the product default
// is 30 s). Bad arguments are reported by every method of the result.
func NewLeases(c rueidis.Client, nodeID string, ttl time.Duration) *Leases {
	l := &Leases{c: c, node: nodeID, ttlMS: strconv.FormatInt(ttl.Milliseconds(), 10)}
	switch {
	case c == nil:
		l.err = errors.New("cluster: NewLeases: nil Redis client")
	case nodeID == "":
		l.err = errors.New("cluster: NewLeases: empty node ID")
	case ttl < time.Millisecond:
		l.err = fmt.Errorf("cluster: NewLeases: lease TTL must be at least 1ms, got %v", ttl)
	}
	for i := range l.shards {
		l.shards[i].m = make(map[int64]*localShare)
	}
	return l
}

func (l *Leases) shard(tokenID int64) *leaseShard {
	return &l.shards[(uint64(tokenID)*0x9E3779B97F4A7C15)>>58]
}

// begin registers one Redis call for tokenID after any repair of it has
// finished. With create false it returns nil when the node holds no slot.
// It returns the share and this node's count at the moment of sending.
func (sh *leaseShard) begin(ctx context.Context, tokenID int64, create bool) (*localShare, int, error) {
	sh.mu.Lock()
	for {
		s := sh.m[tokenID]
		if s == nil {
			if !create {
				sh.mu.Unlock()
				return nil, 0, nil
			}
			s = &localShare{}
			sh.m[tokenID] = s
		}
		if ch := s.repairing; ch != nil {
			sh.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			}
			sh.mu.Lock()
			continue
		}
		if !create && s.held == 0 {
			sh.mu.Unlock()
			return nil, 0, nil
		}
		s.inflight++
		held := s.held
		sh.mu.Unlock()
		return s, held, nil
	}
}

// forget drops s from the table once it carries no information. Caller holds mu.
func (sh *leaseShard) forget(tokenID int64, s *localShare) {
	if s.held == 0 && s.inflight == 0 && !s.dirty && s.repairing == nil && sh.m[tokenID] == s {
		delete(sh.m, tokenID)
	}
}

// Acquire takes one slot for tokenID if the cluster-wide live count is below
// max (max > 0), atomically (one Lua script: drop expired node shares, sum
// live shares, compare, increment this node's share and set its expiry).
// Exact under concurrent Acquire from many nodes. It costs one EVALSHA.
// On error the caller must treat the slot as not taken (and not Release it).
func (l *Leases) Acquire(ctx context.Context, tokenID int64, max int) (bool, error) {
	if l.err != nil {
		return false, l.err
	}
	if max <= 0 {
		return false, fmt.Errorf("cluster: Acquire token %d: max must be > 0, got %d", tokenID, max)
	}
	sh := l.shard(tokenID)
	s, base, err := sh.begin(ctx, tokenID, true)
	if err != nil {
		return false, fmt.Errorf("cluster: Acquire token %d: %w", tokenID, err)
	}
	n, e := leaseKeys(tokenID)
	res, err := acquireScript.lua.Exec(ctx, l.c, []string{n, e},
		[]string{l.node, strconv.Itoa(max), l.ttlMS, strconv.Itoa(base), keySlackMS}).AsIntSlice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	ok := err == nil && res[0] == 1
	sh.mu.Lock()
	s.inflight--
	switch {
	case err != nil:
		s.dirty = true // the script may or may not have run
	case res[2] == 1:
		s.dirty = true // re-instated from a count that may miss concurrent calls
	}
	if ok {
		s.held++
	}
	sh.forget(tokenID, s)
	sh.mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("cluster: Acquire token %d: %w", tokenID, err)
	}
	return ok, nil
}

// Release gives back one slot of tokenID taken by this node's Acquire; this
// node's share goes down by one (never below 0). It costs one EVALSHA, or
// nothing when this node holds no slot of tokenID (e.g. after Reset). The
// local count drops even when Redis cannot be reached (the connection is gone
// either way); the next Heartbeat then corrects Redis.
func (l *Leases) Release(ctx context.Context, tokenID int64) error {
	if l.err != nil {
		return l.err
	}
	sh := l.shard(tokenID)
	s, _, err := sh.begin(ctx, tokenID, false)
	if err != nil {
		return fmt.Errorf("cluster: Release token %d: %w", tokenID, err)
	}
	if s == nil {
		return nil
	}
	sh.mu.Lock()
	s.held--
	sh.mu.Unlock()
	n, e := leaseKeys(tokenID)
	left, err := releaseScript.lua.Exec(ctx, l.c, []string{n, e}, []string{l.node, keySlackMS}).AsInt64()
	sh.mu.Lock()
	s.inflight--
	if err != nil || left < 0 {
		s.dirty = true
	}
	sh.forget(tokenID, s)
	sh.mu.Unlock()
	if err != nil {
		return fmt.Errorf("cluster: Release token %d: %w", tokenID, err)
	}
	return nil
}

// Adopt adds k slots of tokenID to this node's share without any limit
// check: for k connections that are already open but hold no slot, because
// they were admitted while the token had no limit and it now has one. The
// caller then owes one Release per adopted connection, as for Acquire.
// On error the slots are not counted as held (the caller must not Release
// them); the share is marked for repair, as the script may have run.
func (l *Leases) Adopt(ctx context.Context, tokenID int64, k int) error {
	if l.err != nil {
		return l.err
	}
	if k <= 0 {
		return nil
	}
	sh := l.shard(tokenID)
	s, base, err := sh.begin(ctx, tokenID, true)
	if err != nil {
		return fmt.Errorf("cluster: Adopt token %d: %w", tokenID, err)
	}
	n, e := leaseKeys(tokenID)
	res, err := adoptScript.lua.Exec(ctx, l.c, []string{n, e},
		[]string{l.node, strconv.Itoa(k), l.ttlMS, strconv.Itoa(base), keySlackMS}).AsIntSlice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	sh.mu.Lock()
	s.inflight--
	if err != nil || res[1] == 1 {
		s.dirty = true
	}
	if err == nil {
		s.held += k
	}
	sh.forget(tokenID, s)
	sh.mu.Unlock()
	if err != nil {
		return fmt.Errorf("cluster: Adopt token %d: %w", tokenID, err)
	}
	return nil
}

// Trim enforces a lowered limit across the cluster, one node at a time: if
// the live cluster-wide count of tokenID exceeds max, it takes the excess
// from this node's share (as much as the node holds) and returns how many
// slots it took, in one EVALSHA. Those slots are already gone: the caller
// closes that many connections and must not Release them. Every node holding
// slots of the token calls Trim once it learns the new limit; the scripts
// run one after another in Redis, so whatever the order, the nodes that
// apply the change first give up their connections until the count is max,
// and no more are closed than the excess. (A Release in flight on another
// node at that moment still counts, so a close racing a limit change can
// cost one extra close per racing connection.)
//
// It returns 0 when this node holds no slot, and an error (changing
// nothing) when its share is lost and awaiting repair: the caller may then
// enforce max on its local count only.
func (l *Leases) Trim(ctx context.Context, tokenID int64, max int) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if max <= 0 {
		return 0, fmt.Errorf("cluster: Trim token %d: max must be > 0, got %d", tokenID, max)
	}
	sh := l.shard(tokenID)
	s, held, err := sh.begin(ctx, tokenID, false)
	if err != nil {
		return 0, fmt.Errorf("cluster: Trim token %d: %w", tokenID, err)
	}
	if s == nil {
		return 0, nil
	}
	n, e := leaseKeys(tokenID)
	took, err := trimScript.lua.Exec(ctx, l.c, []string{n, e},
		[]string{l.node, strconv.Itoa(max), strconv.Itoa(held), keySlackMS}).AsInt64()
	if err == nil && took < 0 {
		err = errors.New("this node's share is lost and awaits repair")
	}
	sh.mu.Lock()
	s.inflight--
	if err != nil {
		s.dirty = true // the script may have run; the repair sets the share to held
		took = 0
	}
	took = min(took, int64(s.held))
	s.held -= int(took)
	sh.forget(tokenID, s)
	sh.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("cluster: Trim token %d: %w", tokenID, err)
	}
	return int(took), nil
}

// Count returns the live cluster-wide count of tokenID (one EVALSHA).
func (l *Leases) Count(ctx context.Context, tokenID int64) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	n, e := leaseKeys(tokenID)
	v, err := countScript.lua.Exec(ctx, l.c, []string{n, e}, nil).AsInt64()
	if err != nil {
		return 0, fmt.Errorf("cluster: Count token %d: %w", tokenID, err)
	}
	return int(v), nil
}

// Held returns how many slots of tokenID this node holds by its own count.
func (l *Leases) Held(tokenID int64) int {
	sh := l.shard(tokenID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s := sh.m[tokenID]; s != nil {
		return s.held
	}
	return 0
}

type repairItem struct {
	id   int64
	held int
	s    *localShare
}

// Heartbeat renews the expiry of this node's share of every token it holds
// slots of (pipelined; cost proportional to the number of tokens with local
// slots, not connections: one EVALSHA each). Run it every TTL/3. It also
// repairs dirty tokens (see Leases) and re-instates shares found lost.
// Calls are serialised; any goroutine may call it.
func (l *Leases) Heartbeat(ctx context.Context) error {
	if l.err != nil {
		return l.err
	}
	l.hbMu.Lock()
	defer l.hbMu.Unlock()
	var renew []int64
	var repair []repairItem
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for id, s := range sh.m {
			switch {
			case s.repairing != nil:
			case s.dirty && s.inflight == 0:
				s.repairing = make(chan struct{})
				repair = append(repair, repairItem{id, s.held, s})
			default:
				renew = append(renew, id)
			}
		}
		sh.mu.Unlock()
	}
	var errs []error
	if err := l.repair(ctx, repair); err != nil {
		errs = append(errs, err)
	}
	calls := make([]scriptCall, len(renew))
	for i, id := range renew {
		n, e := leaseKeys(id)
		calls[i] = scriptCall{[]string{n, e}, []string{l.node, l.ttlMS, keySlackMS}}
	}
	repair = repair[:0]
	failed := 0
	var firstErr error
	for i, r := range execMany(ctx, l.c, renewScript, calls) {
		v, err := r.AsInt64()
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if v == 1 {
			continue
		}
		// Lost: this node's share expired or vanished while it still holds
		// slots. Re-instate it now if no call of ours is in flight.
		sh := l.shard(renew[i])
		sh.mu.Lock()
		if s := sh.m[renew[i]]; s != nil && s.repairing == nil {
			s.dirty = true
			if s.inflight == 0 {
				s.repairing = make(chan struct{})
				repair = append(repair, repairItem{renew[i], s.held, s})
			}
		}
		sh.mu.Unlock()
	}
	if failed > 0 {
		errs = append(errs, fmt.Errorf("cluster: lease heartbeat: %d of %d renewals failed: %w", failed, len(renew), firstErr))
	}
	if err := l.repair(ctx, repair); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// repair sets this node's share of each item to its local count. Every item
// has its repairing channel set, which is closed here whatever the outcome.
func (l *Leases) repair(ctx context.Context, items []repairItem) error {
	if len(items) == 0 {
		return nil
	}
	calls := make([]scriptCall, len(items))
	for i, it := range items {
		n, e := leaseKeys(it.id)
		calls[i] = scriptCall{[]string{n, e}, []string{l.node, l.ttlMS, keySlackMS, strconv.Itoa(it.held)}}
	}
	failed := 0
	var firstErr error
	for i, r := range execMany(ctx, l.c, setScript, calls) {
		err := r.Error()
		it := items[i]
		sh := l.shard(it.id)
		sh.mu.Lock()
		if err == nil {
			it.s.dirty = false
		} else {
			failed++
			if firstErr == nil {
				firstErr = err
			}
		}
		close(it.s.repairing)
		it.s.repairing = nil
		sh.forget(it.id, it.s)
		sh.mu.Unlock()
	}
	if failed > 0 {
		return fmt.Errorf("cluster: lease repair: %d of %d failed: %w", failed, len(items), firstErr)
	}
	return nil
}

// Reset drops this node's shares of every token (used at start, e.g. after a
// restart with the same node ID) and forgets its local counts. It scans the
// lease keys of every Redis node (SCAN), then removes this node's share from
// each token found (pipelined): cost proportional to all tokens in Redis, so
// it belongs at start-up, not on a timer. A node whose ID is new (NewNodeID)
// has nothing to reset.
func (l *Leases) Reset(ctx context.Context) error {
	if l.err != nil {
		return l.err
	}
	l.hbMu.Lock()
	defer l.hbMu.Unlock()
	seen := make(map[string]struct{})
	var calls []scriptCall
	for addr, nc := range l.c.Nodes() {
		var cursor uint64
		for {
			entry, err := nc.Do(ctx, nc.B().Scan().Cursor(cursor).Match(leaseKeyPrefix+"*"+leaseExpiryTail).Count(1000).Build()).AsScanEntry()
			if err != nil {
				return fmt.Errorf("cluster: Reset: SCAN %s: %w", addr, err)
			}
			for _, k := range entry.Elements {
				id, ok := strings.CutSuffix(strings.TrimPrefix(k, leaseKeyPrefix), leaseExpiryTail)
				if _, err := strconv.ParseInt(id, 10, 64); !ok || err != nil || !strings.HasPrefix(k, leaseKeyPrefix) {
					continue
				}
				if _, dup := seen[k]; dup {
					continue
				}
				seen[k] = struct{}{}
				calls = append(calls, scriptCall{
					[]string{leaseKeyPrefix + id + leaseCountsTail, k},
					[]string{l.node, l.ttlMS, keySlackMS, "0"},
				})
			}
			cursor = entry.Cursor
			if cursor == 0 {
				break
			}
		}
	}
	for _, r := range execMany(ctx, l.c, setScript, calls) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("cluster: Reset: %w", err)
		}
	}
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		sh.m = make(map[int64]*localShare)
		sh.mu.Unlock()
	}
	return nil
}
