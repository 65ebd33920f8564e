package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
)

// The rights projection: one key per token secret hash,
//
//	gc:r:<64 lowercase hex of the hash>  STRING  <version, 20 digits><payload>
//
// One key per token, so any slot works on a Redis Cluster. The version is
// the token's version in the store of record, written as a zero-padded
// 20-digit decimal so the script orders versions by comparing strings
// (Lua numbers are doubles and would lose precision above 2^53). The
// payload is opaque here (package acl encodes it).
const (
	projectionKeyPrefix = "gc:r:"
	projectionKeyLen    = len(projectionKeyPrefix) + 64
	versionDigits       = 20
)

// ProjectionEntry is one token's compiled rights to put into the projection.
type ProjectionEntry struct {
	Hash    [32]byte // the token secret's hash
	Version int64    // the token's version in the store of record; > 0
	Payload []byte   // opaque (acl.AppendRights)
	// TTL, when > 0, makes Redis drop the entry after it (tombstones use
	// one); 0 means no expiry, and clears any expiry the key had.
	TTL time.Duration
}

// ProjectionValue is what the projection holds for one hash.
type ProjectionValue struct {
	Found   bool
	Version int64
	Payload []byte // the caller's own copy
}

// ProjectionError is the failure of one hash of a batch (Projections,
// PutProjection); a batch's error joins them (errors.Join).
type ProjectionError struct {
	Hash [32]byte
	Err  error
}

func (e *ProjectionError) Error() string {
	return fmt.Sprintf("rights projection %x: %v", e.Hash[:4], e.Err)
}

func (e *ProjectionError) Unwrap() error { return e.Err }

func projectionKey(hash [32]byte) string {
	var b [projectionKeyLen]byte
	copy(b[:], projectionKeyPrefix)
	hex.Encode(b[len(projectionKeyPrefix):], hash[:])
	return string(b[:])
}

// parseProjectionKey returns the hash of a projection key (lowercase hex
// only: the only spelling projectionKey writes).
func parseProjectionKey(k string) ([32]byte, bool) {
	var h [32]byte
	if len(k) != projectionKeyLen || k[:len(projectionKeyPrefix)] != projectionKeyPrefix {
		return h, false
	}
	for _, c := range k[len(projectionKeyPrefix):] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return h, false
		}
	}
	_, err := hex.Decode(h[:], []byte(k[len(projectionKeyPrefix):]))
	return h, err == nil
}

// formatVersion writes v as versionDigits zero-padded digits (v >= 0).
func formatVersion(v int64) string {
	var b [versionDigits]byte
	for i := range b {
		b[i] = '0'
	}
	s := strconv.AppendInt(nil, v, 10)
	copy(b[versionDigits-len(s):], s)
	return string(b[:])
}

// parseProjectionValue decodes a stored value; anything that is not 20
// digits of a positive int64 followed by the payload is an error.
func parseProjectionValue(s string) (ProjectionValue, error) {
	if len(s) < versionDigits {
		return ProjectionValue{}, fmt.Errorf("value of %d bytes is shorter than its version", len(s))
	}
	for i := range versionDigits {
		if s[i] < '0' || s[i] > '9' {
			return ProjectionValue{}, errors.New("version is not a decimal number")
		}
	}
	v, err := strconv.ParseInt(s[:versionDigits], 10, 64)
	if err != nil || v <= 0 {
		return ProjectionValue{}, fmt.Errorf("version %q is not a positive int64", s[:versionDigits])
	}
	return ProjectionValue{Found: true, Version: v, Payload: []byte(s[versionDigits:])}, nil
}

// putProjectionLua: KEYS key; ARGV version (20 digits), payload, ttl ms
// ("0" = none). Writes version..payload when no value is stored, the stored
// one is not a well-formed version (a corrupt value is repaired), or its
// version is strictly lower; an equal or newer version is kept. SET without
// PX clears any expiry the old value had (a live entry replacing a
// tombstone never expires). Returns 1 when written, 0 when not.
const putProjectionLua = `
local cur = redis.call('GET', KEYS[1])
if cur and #cur >= 20 then
  local v = string.sub(cur, 1, 20)
  if not string.find(v, '%D') and v >= ARGV[1] then return 0 end
end
local ttl = tonumber(ARGV[3])
if ttl and ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2])
end
return 1
`

// Not retryable by rueidis: a retry after a lost reply would report "not
// written" for a write that happened. Re-putting is safe for the caller
// (same version: not written again).
var putProjectionScript = newScript(putProjectionLua, false)

// PutProjection writes entries that are newer than what the projection
// holds, one script call per entry, pipelined (EVALSHA; the script is
// loaded on every node when Redis answers NOSCRIPT). written[i] says
// whether entries[i] was written; an entry whose version is not newer than
// the stored one is not, and that is not an error. Failures are
// *ProjectionError, joined; their written[i] is false although the write
// may have happened (a lost reply), so put again to be sure.
//
// Every node that read one of these keys through Projection/Projections
// (this one included: tracking is not NOLOOP, so the writer's own cached
// copy is invalidated too) hears the write through OnProjection. That
// invalidation arrives on the connection after the script's reply, so a
// Projection on this node right after PutProjection may still return the
// old value for a moment; use ProjectionFresh to read back a write.
//
// Safe for concurrent use; writers on any number of nodes may race, the
// highest version wins.
func (r *Rights) PutProjection(ctx context.Context, entries ...ProjectionEntry) (written []bool, err error) {
	if len(entries) == 0 {
		return nil, nil
	}
	calls := make([]scriptCall, len(entries))
	for i, e := range entries {
		if e.Version <= 0 {
			return nil, fmt.Errorf("cluster: PutProjection: version %d of entry %d is not positive", e.Version, i)
		}
		if e.TTL < 0 {
			return nil, fmt.Errorf("cluster: PutProjection: negative TTL %v of entry %d", e.TTL, i)
		}
		ttl := "0"
		if e.TTL > 0 {
			ttl = strconv.FormatInt(max(e.TTL.Milliseconds(), 1), 10)
		}
		calls[i] = scriptCall{keys: []string{projectionKey(e.Hash)}, args: []string{formatVersion(e.Version), string(e.Payload), ttl}}
	}
	written = make([]bool, len(entries))
	var errs []error
	for i, res := range execMany(ctx, r.c, putProjectionScript, calls) {
		n, err := res.AsInt64()
		if err != nil {
			errs = append(errs, &ProjectionError{Hash: entries[i].Hash, Err: err})
			continue
		}
		written[i] = n == 1
	}
	if err := errors.Join(errs...); err != nil {
		return written, fmt.Errorf("cluster: putting rights projections: %w", err)
	}
	return written, nil
}

// Projection reads the projection of hash through the client-side cache:
// a value this node read before (and nobody changed since) is served
// locally, without a round trip; otherwise it is one GET, after which
// Redis tracks the key for this node, even when it does not exist, so a
// later PutProjection by any node invalidates the local copy and is
// reported to OnProjection. hash stays watched (re-armed after a reset)
// until ForgetProjection, also when this read fails.
//
// A stored value that does not parse is an error. Safe for concurrent use
// by any goroutine, OnProjection and OnReset included.
func (r *Rights) Projection(ctx context.Context, hash [32]byte) (ProjectionValue, error) {
	r.watchProjections(hash)
	res := r.c.DoCache(ctx, r.c.B().Get().Key(projectionKey(hash)).Cache(), r.cfg.WatchTTL)
	v, err := r.projectionResult(res)
	if err != nil {
		return ProjectionValue{}, fmt.Errorf("cluster: reading %w", &ProjectionError{Hash: hash, Err: err})
	}
	return v, nil
}

// Projections is Projection for many hashes, in one pipelined read per
// Redis node for the hashes not cached locally (chunks of 1000). values[i]
// belongs to hashes[i]. On error the values of the hashes that failed are
// zero — not "not found": each failure is a *ProjectionError in the joined
// error, so the caller may retry or fall back for just those.
func (r *Rights) Projections(ctx context.Context, hashes [][32]byte) ([]ProjectionValue, error) {
	if len(hashes) == 0 {
		return nil, nil
	}
	r.watchProjections(hashes...)
	return r.readProjections(hashes, func(chunk [][32]byte) []rueidis.RedisResult {
		cmds := make([]rueidis.CacheableTTL, len(chunk))
		for i, h := range chunk {
			cmds[i] = rueidis.CT(r.c.B().Get().Key(projectionKey(h)).Cache(), r.cfg.WatchTTL)
		}
		return r.c.DoMultiCache(ctx, cmds...)
	})
}

// ProjectionFresh reads hash from Redis, bypassing (and not filling) the
// local cache, for a caller that needs at least version V and holds an
// older one locally because the invalidation is still on its way. It
// neither watches hash nor arms tracking.
func (r *Rights) ProjectionFresh(ctx context.Context, hash [32]byte) (ProjectionValue, error) {
	v, err := r.projectionResult(r.c.Do(ctx, r.c.B().Get().Key(projectionKey(hash)).Build()))
	if err != nil {
		return ProjectionValue{}, fmt.Errorf("cluster: reading %w", &ProjectionError{Hash: hash, Err: err})
	}
	return v, nil
}

// ProjectionsFresh is ProjectionFresh for many hashes, pipelined (chunks
// of 1000), e.g. to compare the projection with the store of record; errors
// as in Projections.
func (r *Rights) ProjectionsFresh(ctx context.Context, hashes [][32]byte) ([]ProjectionValue, error) {
	if len(hashes) == 0 {
		return nil, nil
	}
	return r.readProjections(hashes, func(chunk [][32]byte) []rueidis.RedisResult {
		cmds := make(rueidis.Commands, len(chunk))
		for i, h := range chunk {
			cmds[i] = r.c.B().Get().Key(projectionKey(h)).Build()
		}
		return r.c.DoMulti(ctx, cmds...)
	})
}

func (r *Rights) readProjections(hashes [][32]byte, read func(chunk [][32]byte) []rueidis.RedisResult) ([]ProjectionValue, error) {
	out := make([]ProjectionValue, len(hashes))
	var errs []error
	for start := 0; start < len(hashes); start += execChunk {
		chunk := hashes[start:min(start+execChunk, len(hashes))]
		for i, res := range read(chunk) {
			v, err := r.projectionResult(res)
			if err != nil {
				errs = append(errs, &ProjectionError{Hash: chunk[i], Err: err})
				continue
			}
			out[start+i] = v
		}
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("cluster: reading rights projections: %w", err)
	}
	return out, nil
}

// ForgetProjection stops re-arming hash (the node no longer caches the
// token). Redis keeps tracking it until its next change, which is then
// not reported.
func (r *Rights) ForgetProjection(hash [32]byte) {
	r.mu.Lock()
	delete(r.projWatched, hash)
	r.mu.Unlock()
}

func (r *Rights) watchProjections(hashes ...[32]byte) {
	r.mu.Lock()
	for _, h := range hashes {
		r.projWatched[h] = struct{}{}
	}
	r.mu.Unlock()
}

// watchedProjections keeps the hashes still watched, in place.
func (r *Rights) watchedProjections(hashes [][32]byte) [][32]byte {
	out := hashes[:0]
	r.mu.Lock()
	for _, h := range hashes {
		if _, ok := r.projWatched[h]; ok {
			out = append(out, h)
		}
	}
	r.mu.Unlock()
	return out
}

func (r *Rights) projectionResult(res rueidis.RedisResult) (ProjectionValue, error) {
	s, err := res.ToString()
	if err != nil {
		if rueidis.IsRedisNil(err) {
			r.reads.missing.Inc()
			return ProjectionValue{}, nil
		}
		r.reads.errors.Inc()
		return ProjectionValue{}, err
	}
	v, err := parseProjectionValue(s)
	switch {
	case err != nil:
		r.reads.errors.Inc()
	case res.IsCacheHit():
		r.reads.local.Inc()
	default:
		r.reads.redis.Inc()
	}
	return v, err
}

// projectionReads counts projection reads by outcome. No per-token labels.
type projectionReads struct {
	local, redis, missing, errors prometheus.Counter
}

func newProjectionReads(reg prometheus.Registerer) (*projectionReads, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatecast_rights_projection_reads_total",
		Help: "Rights projection reads of this node: local (a value served from the client-side cache), " +
			"redis (a value read from Redis), missing (no value stored, locally cached or not), error (failed, or a value that does not parse).",
	}, []string{"result"})
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			return nil, err
		}
	}
	return &projectionReads{
		local:   vec.WithLabelValues("local"),
		redis:   vec.WithLabelValues("redis"),
		missing: vec.WithLabelValues("missing"),
		errors:  vec.WithLabelValues("error"),
	}, nil
}
