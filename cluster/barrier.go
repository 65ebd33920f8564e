package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// Revocation barrier channels: one broadcast channel every node listens
// on, and one acknowledgement channel per node. Plain (not sharded) pub/sub:
// on a Redis Cluster a PUBLISH reaches subscribers on every master, and
// admin changes are rare enough that the broadcast costs nothing.
const (
	barrierChannel   = "gc:rev"
	barrierAckPrefix = "gc:revack:"
	barrierMaxTokens = 100000
	// barrierMsgVersion carries id:version pairs; barrierMsgV1 (token IDs
	// only) is still sent when no version is known, and still parsed.
	barrierMsgVersion = "r2"
	barrierMsgV1      = "r1"
)

// TokenVersion names a token and the version of it in the store of record
// a node must have applied; 0 when unknown (apply whatever the store of
// record holds now).
type TokenVersion struct {
	ID, Version int64
}

// Barrier makes a rights change wait until every live node has applied it.
// Enforce broadcasts the changed token IDs; every other node applies them
// (re-reads them from the store of record and enforces the result on its
// sessions) and acknowledges; Enforce returns when all expected nodes have
// acknowledged, or when ctx ends with the list of nodes that have not.
//
// Apply runs on a goroutine of Barrier's, one change at a time, never on
// the Redis reading goroutine. Enforce may be called from any goroutine.
//
// # Versions and rolling upgrades
//
// EnforceVersions also tells every node the version of each token it must
// reach (so it can take the rights from the projection when its copy is
// that new, instead of reading the store of record). Messages:
//
//	r1|<from>|<barrier id>|<id>,<id>,…            no versions (the previous format)
//	r2|<from>|<barrier id>|<id>:<ver>,<id>:<ver>,…
//
// This version parses both (r1 as versions 0). A node of the previous
// version parses only r1: it drops an r2 broadcast as malformed (logging
// "dropping a malformed revocation broadcast"), neither applies nor
// acknowledges it, so the sender waits until its ctx ends and reports that
// node unconfirmed (the node still hears the change through the Rights
// counters if the writer calls Changed). An r2 is sent only when some
// version is not 0: Enforce, and EnforceVersions with all versions 0, send
// r1, which every node understands. So during a rolling upgrade from a
// version without r2, callers pass versions 0 (or call Enforce) until
// every live node runs a version that parses r2 (e.g. judged from
// NodeInfo.Version in the Registry).
type Barrier struct {
	c   rueidis.Client
	cfg BarrierConfig

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	work   chan revocation

	mu    sync.Mutex
	waits map[string]map[string]bool // barrier ID -> nodes not yet acknowledged
	sig   chan struct{}              // closed and replaced on every acknowledgement
}

// BarrierConfig configures a Barrier.
type BarrierConfig struct {
	Client rueidis.Client // not closed by Close
	NodeID string
	// Apply enforces a change made on another node. Required unless
	// ApplyVersions is set.
	Apply func(ctx context.Context, ids []int64) error
	// ApplyVersions, when set, is used instead of Apply and also gets the
	// version each token must reach (0 when the sender sent none).
	ApplyVersions func(ctx context.Context, tokens []TokenVersion) error
	Logger        *slog.Logger
}

// revocation is one broadcast change.
type revocation struct {
	from, id string
	tokens   []TokenVersion
}

// OpenBarrier subscribes this node to the barrier channels and returns once
// both subscriptions are confirmed by Redis.
func OpenBarrier(ctx context.Context, cfg BarrierConfig) (*Barrier, error) {
	if cfg.Client == nil || cfg.NodeID == "" || (cfg.Apply == nil && cfg.ApplyVersions == nil) {
		return nil, errors.New("cluster: OpenBarrier: Client, NodeID and Apply (or ApplyVersions) are required")
	}
	if strings.ContainsAny(cfg.NodeID, "| ") {
		return nil, fmt.Errorf("cluster: OpenBarrier: node ID %q must not contain '|' or spaces", cfg.NodeID)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Barrier{c: cfg.Client, cfg: cfg, work: make(chan revocation, 1024),
		waits: map[string]map[string]bool{}, sig: make(chan struct{})}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	ready := make(chan struct{}, 4)
	b.wg.Add(3)
	go b.receive(barrierChannel, b.onRevocation, ready)
	go b.receive(barrierAckPrefix+cfg.NodeID, b.onAck, ready)
	go b.applyLoop()
	for range 2 {
		select {
		case <-ready:
		case <-ctx.Done():
			b.Close()
			return nil, fmt.Errorf("cluster: OpenBarrier: subscribing: %w", ctx.Err())
		}
	}
	return b, nil
}

func (b *Barrier) receive(ch string, onMsg func(string), ready chan<- struct{}) {
	defer b.wg.Done()
	keepSubscribed(b.ctx, b.c, false, ch, onMsg, func() {
		select {
		case ready <- struct{}{}:
		default:
		}
	}, b.cfg.Logger)
}

// encodeRevocation: r2 with id:version pairs, or r1 (IDs only) when every
// version is 0, so a node of the previous version understands it.
func encodeRevocation(from, id string, tokens []TokenVersion) string {
	versions := slices.ContainsFunc(tokens, func(t TokenVersion) bool { return t.Version != 0 })
	var sb strings.Builder
	if versions {
		sb.WriteString(barrierMsgVersion)
	} else {
		sb.WriteString(barrierMsgV1)
	}
	sb.WriteString("|" + from + "|" + id + "|")
	for i, t := range tokens {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.FormatInt(t.ID, 10))
		if versions {
			sb.WriteByte(':')
			sb.WriteString(strconv.FormatInt(t.Version, 10))
		}
	}
	return sb.String()
}

// parseRevocation decodes a broadcast, r1 or r2; anything malformed is an
// error (token IDs > 0, versions >= 0, at most barrierMaxTokens).
func parseRevocation(s string) (revocation, error) {
	parts := strings.SplitN(s, "|", 4)
	if len(parts) != 4 || (parts[0] != barrierMsgV1 && parts[0] != barrierMsgVersion) ||
		parts[1] == "" || parts[2] == "" || parts[3] == "" {
		return revocation{}, errors.New("malformed revocation")
	}
	versions := parts[0] == barrierMsgVersion
	items := strings.Split(parts[3], ",")
	if len(items) > barrierMaxTokens {
		return revocation{}, errors.New("too many tokens in one revocation")
	}
	r := revocation{from: parts[1], id: parts[2], tokens: make([]TokenVersion, 0, len(items))}
	for _, p := range items {
		var t TokenVersion
		idStr := p
		if versions {
			var verStr string
			var ok bool
			if idStr, verStr, ok = strings.Cut(p, ":"); !ok {
				return revocation{}, errors.New("token without a version in an r2 revocation")
			}
			v, err := strconv.ParseInt(verStr, 10, 64)
			if err != nil || v < 0 {
				return revocation{}, errors.New("malformed token version in revocation")
			}
			t.Version = v
		}
		id, err := strconv.ParseInt(idStr, 10, 64)
		if err != nil || id <= 0 {
			return revocation{}, errors.New("malformed token ID in revocation")
		}
		t.ID = id
		r.tokens = append(r.tokens, t)
	}
	return r, nil
}

func (b *Barrier) onRevocation(s string) {
	r, err := parseRevocation(s)
	if err != nil {
		b.cfg.Logger.Warn("dropping a malformed revocation broadcast", "err", err)
		return
	}
	if r.from == b.cfg.NodeID {
		return // the sender enforced it before broadcasting
	}
	select {
	case b.work <- r:
	default:
		// Never block Redis' reader: apply on a goroutine of its own.
		b.wg.Add(1)
		go func() { defer b.wg.Done(); b.apply(r) }()
	}
}

func (b *Barrier) applyLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case r := <-b.work:
			b.apply(r)
		}
	}
}

// apply enforces r and acknowledges it; a change that failed to apply is
// not acknowledged, so its sender reports this node as unconfirmed.
func (b *Barrier) apply(r revocation) {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	var err error
	if b.cfg.ApplyVersions != nil {
		err = b.cfg.ApplyVersions(ctx, r.tokens)
	} else {
		ids := make([]int64, len(r.tokens))
		for i, t := range r.tokens {
			ids[i] = t.ID
		}
		err = b.cfg.Apply(ctx, ids)
	}
	if err != nil {
		b.cfg.Logger.Error("applying a rights change from another node failed", "from", r.from, "err", err)
		return
	}
	ack := r.id + "|" + b.cfg.NodeID
	if err := b.c.Do(ctx, b.c.B().Publish().Channel(barrierAckPrefix+r.from).Message(ack).Build()).Error(); err != nil {
		b.cfg.Logger.Warn("acknowledging a rights change failed", "from", r.from, "err", err)
	}
}

func (b *Barrier) onAck(s string) {
	id, node, ok := strings.Cut(s, "|")
	if !ok {
		return
	}
	b.mu.Lock()
	if pending := b.waits[id]; pending != nil && pending[node] {
		delete(pending, node)
		close(b.sig)
		b.sig = make(chan struct{})
	}
	b.mu.Unlock()
}

// Enforce broadcasts that the rights of tokens changed and waits until
// every node in expect (this node excluded) has applied the change. It
// returns the nodes that had not when ctx ended, sorted; nil when all did.
// The caller must have enforced the change locally already. It sends r1,
// which nodes of every version understand.
func (b *Barrier) Enforce(ctx context.Context, tokens []int64, expect []string) ([]string, error) {
	tv := make([]TokenVersion, len(tokens))
	for i, id := range tokens {
		tv[i] = TokenVersion{ID: id}
	}
	return b.EnforceVersions(ctx, tv, expect)
}

// EnforceVersions is Enforce telling every node the version of each token
// it must reach (ApplyVersions receives them). It sends r2 when some
// version is not 0, which nodes of the previous version drop and so never
// confirm: see "Versions and rolling upgrades" on Barrier.
func (b *Barrier) EnforceVersions(ctx context.Context, tokens []TokenVersion, expect []string) ([]string, error) {
	if len(tokens) == 0 {
		return nil, nil
	}
	if len(tokens) > barrierMaxTokens {
		return nil, fmt.Errorf("cluster: a rights change of %d tokens exceeds %d per broadcast", len(tokens), barrierMaxTokens)
	}
	for _, t := range tokens {
		if t.ID <= 0 || t.Version < 0 {
			return nil, fmt.Errorf("cluster: invalid token %d version %d in a rights change", t.ID, t.Version)
		}
	}
	var raw [12]byte
	_, _ = rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	pending := map[string]bool{}
	for _, n := range expect {
		if n != b.cfg.NodeID {
			pending[n] = true
		}
	}
	b.mu.Lock()
	b.waits[id] = pending
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.waits, id)
		b.mu.Unlock()
	}()
	msg := encodeRevocation(b.cfg.NodeID, id, tokens)
	if err := b.c.Do(ctx, b.c.B().Publish().Channel(barrierChannel).Message(msg).Build()).Error(); err != nil {
		return b.left(id), fmt.Errorf("cluster: broadcasting a rights change: %w", err)
	}
	for {
		b.mu.Lock()
		n, sig := len(pending), b.sig
		b.mu.Unlock()
		if n == 0 {
			return nil, nil
		}
		select {
		case <-sig:
		case <-ctx.Done():
			return b.left(id), nil
		}
	}
}

func (b *Barrier) left(id string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for n := range b.waits[id] {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Close stops listening and waits for changes being applied.
func (b *Barrier) Close() {
	b.cancel()
	b.wg.Wait()
}
