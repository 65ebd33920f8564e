package broker

import (
	"context"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/sqlite"
)

// scriptedRights is a RightsSource that answers Current with what the test
// set (a projection read, say), and reads the store otherwise.
type scriptedRights struct {
	storeRights
	mu     sync.Mutex
	answer *acl.Rights
	asked  []int64 // minVersion of each Current call
	forgot []acl.Hash
}

func (s *scriptedRights) Current(ctx context.Context, id int64, hash acl.Hash, min int64) (acl.Rights, error) {
	s.mu.Lock()
	s.asked = append(s.asked, min)
	a := s.answer
	s.mu.Unlock()
	if a != nil {
		return *a, nil
	}
	return s.storeRights.Current(ctx, id, hash, min)
}

func (s *scriptedRights) Forget(id int64, hash acl.Hash) {
	s.mu.Lock()
	s.forgot = append(s.forgot, hash)
	s.mu.Unlock()
}

func newScriptedEnv(t *testing.T) (*env, *scriptedRights) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "acl.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	src := &scriptedRights{storeRights: storeRights{store: st}}
	b, err := New(Config{Store: st, Rights: src})
	if err != nil {
		t.Fatal(err)
	}
	return &env{store: st, b: b}, src
}

// A rights read older than, or as old as, what is in force changes nothing
// (a reordered or late projection read); a newer one is enforced.
func TestRefreshAppliesOnlyNewerVersions(t *testing.T) {
	e, src := newScriptedEnv(t)
	tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite})
	_, conn := e.connect(t, secret, "a/x")
	cached := e.b.CachedVersions()
	if len(cached) != 1 || cached[0].ID != tok.ID || cached[0].Version == 0 {
		t.Fatalf("CachedVersions = %+v, want token %d with its store version", cached, tok.ID)
	}
	inForce := cached[0].Version
	for _, v := range []int64{inForce - 1, inForce} {
		src.answer = &acl.Rights{ID: tok.ID, Version: v, Hash: tok.Hash} // no grants: would close the session
		if err := e.b.RefreshTokens(context.Background(), tok.ID); err != nil {
			t.Fatal(err)
		}
		if conn.code() != 0 {
			t.Fatalf("a read at version %d (in force: %d) closed the session with %d", v, inForce, conn.code())
		}
	}
	src.answer = &acl.Rights{ID: tok.ID, Version: inForce + 1, Hash: tok.Hash}
	if err := e.b.RefreshVersions(context.Background(), []TokenVersion{{ID: tok.ID, Version: inForce + 1}}); err != nil {
		t.Fatal(err)
	}
	if conn.code() != 4003 {
		t.Fatalf("a newer version without the grant: close %d, want 4003", conn.code())
	}
	if got := src.asked[len(src.asked)-1]; got != inForce+1 {
		t.Fatalf("RefreshVersions asked the source for version %d, want %d", got, inForce+1)
	}
}

// A tombstone closes the token's sessions with the reason it carries, and
// the broker forgets the hash; a hash no cached token has is forgotten too.
func TestRefreshTombstones(t *testing.T) {
	for _, tc := range []struct {
		gone   acl.GoneReason
		reason string
	}{{acl.GoneDeleted, reasonTokenDeleted}, {acl.GoneRotated, reasonTokenRotated}} {
		e, src := newScriptedEnv(t)
		tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermRead})
		_, conn := e.connect(t, secret, "a/x")
		src.answer = &acl.Rights{ID: tok.ID, Version: 1, Hash: tok.Hash, Gone: tc.gone}
		if err := e.b.RefreshHashes(context.Background(), []acl.Hash{tok.Hash, {1, 2, 3}}); err != nil {
			t.Fatal(err)
		}
		if conn.code() != 4002 || conn.closeReason() != tc.reason {
			t.Fatalf("tombstone %d: close %d %q, want 4002 %q", tc.gone, conn.code(), conn.reason, tc.reason)
		}
		if len(src.forgot) != 2 {
			t.Fatalf("forgotten hashes %d, want 2 (the unknown one and the tombstoned one)", len(src.forgot))
		}
		if _, ok := e.b.CachedHash(tok.ID); ok {
			t.Fatal("the tombstoned token is still cached")
		}
	}
}

func (c *recConn) closeReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// BenchmarkRevoke2000 measures the broker's side of a permission deletion
// that closes 2,000 sessions of one token, each on its own topic (the
// issue's revocation figure, without sockets): the store read, the
// coverage check of every session and the 2,000 closes.
func BenchmarkRevoke2000(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b)
		tok, secret := e.token(b, 0, map[string]acl.Permission{"dev/#": acl.PermRead})
		tags, _ := e.store.ListTags(ctx)
		conns := make([]*recConn, 2000)
		for i := range conns {
			_, conns[i] = e.connect(b, secret, "dev/"+strconv.Itoa(i)+"/cmd")
		}
		if err := e.store.DeletePermission(ctx, tok.ID, tags[0].ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := e.b.RefreshTokens(ctx, tok.ID); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for _, c := range conns {
			if c.code() != 4003 {
				b.Fatalf("close %d, want 4003", c.code())
			}
		}
		b.StartTimer()
	}
}

// A token load in flight is discarded by a refresh of its own hash's shard
// (a projection invalidation) or by a store-wide refresh, never by the
// invalidation of a hash in another shard: in a reconnect storm other
// tokens' backfills must not make every first connect read again.
func TestInstallGenerations(t *testing.T) {
	e, _ := newScriptedEnv(t)
	c := &e.b.tokens
	h1, h2 := acl.Hash{1}, acl.Hash{2} // shards 1 and 2
	fresh := func(id int64, h acl.Hash) *tokenState {
		return &tokenState{id: id, hash: h, sessions: map[*Session]struct{}{}}
	}
	snap := func(h acl.Hash) (uint64, uint64) { return c.gen.Load(), c.byHash[hashShard(h)].gen.Load() }
	ctx := context.Background()

	g, hg := snap(h1)
	if err := e.b.RefreshHashes(ctx, []acl.Hash{h2}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.install(fresh(101, h1), g, hg); !ok {
		t.Fatal("an invalidation of another shard's hash discarded the load")
	}

	h3 := acl.Hash{1, 9} // shard 1, like h1
	g, hg = snap(h3)
	if err := e.b.RefreshHashes(ctx, []acl.Hash{h1}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.install(fresh(102, h3), g, hg); ok {
		t.Fatal("an invalidation of a hash of the same shard did not discard the load")
	}

	h4 := acl.Hash{4}
	g, hg = snap(h4)
	if err := e.b.RefreshTokens(ctx, 999); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.install(fresh(103, h4), g, hg); ok {
		t.Fatal("a store-wide refresh did not discard the load")
	}
}
