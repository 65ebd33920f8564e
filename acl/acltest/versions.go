package acltest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/gatecast/gatecast/acl"
)

// The rights-version contract of acl.Store (Token.Version, RightsVersion,
// TokenVersions).

func mustRightsVersion(t *testing.T, s acl.Store) int64 {
	t.Helper()
	v, err := s.RightsVersion(bg)
	if err != nil {
		t.Fatalf("RightsVersion: %v", err)
	}
	return v
}

// tokenVersions returns the Version of every token, by ID, as ListTokens
// reads them, after checking that GetToken, GetTokenByHash and
// TokenVersions read the same and that RightsVersion is no less than any.
func tokenVersions(t *testing.T, s acl.Store) map[int64]int64 {
	t.Helper()
	ts, err := s.ListTokens(bg)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int64]int64, len(ts))
	for _, tk := range ts {
		if tk.Version < 1 {
			t.Errorf("token %d has version %d, want at least 1", tk.ID, tk.Version)
		}
		out[tk.ID] = tk.Version
		if got, err := s.GetToken(bg, tk.ID); err != nil || got.Version != tk.Version {
			t.Errorf("GetToken(%d) = version %d, %v; ListTokens read %d", tk.ID, got.Version, err, tk.Version)
		}
		if got, err := s.GetTokenByHash(bg, tk.Hash); err != nil || got.Version != tk.Version {
			t.Errorf("GetTokenByHash(token %d) = version %d, %v; ListTokens read %d", tk.ID, got.Version, err, tk.Version)
		}
	}
	ids := slices.Collect(maps.Keys(out))
	got, err := s.TokenVersions(bg, ids)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, out) {
		t.Errorf("TokenVersions(%v) = %v; ListTokens read %v", ids, got, out)
	}
	rv := mustRightsVersion(t, s)
	for id, v := range out {
		if v > rv {
			t.Errorf("token %d has version %d, above RightsVersion %d", id, v, rv)
		}
	}
	return out
}

// versionStep runs write, which must succeed, and checks that exactly the
// tokens of changed (new ones included) got a new Version, each greater
// than any version handed out before the write, and that the others kept
// theirs. It returns the RightsVersion before the write.
func versionStep(t *testing.T, s acl.Store, what string, changed []int64, write func() error) int64 {
	t.Helper()
	before := tokenVersions(t, s)
	rv := mustRightsVersion(t, s)
	if err := write(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	after := tokenVersions(t, s)
	for id, v := range after {
		old, existed := before[id]
		switch {
		case slices.Contains(changed, id) && v <= rv:
			t.Errorf("%s: token %d has version %d, not above RightsVersion %d before the write", what, id, v, rv)
		case !slices.Contains(changed, id) && !existed:
			t.Errorf("%s: unexpected new token %d", what, id)
		case !slices.Contains(changed, id) && v != old:
			t.Errorf("%s: token %d, not affected, went from version %d to %d", what, id, old, v)
		}
	}
	for _, id := range changed {
		if _, ok := after[id]; !ok {
			t.Errorf("%s: token %d is missing", what, id)
		}
	}
	if rv2 := mustRightsVersion(t, s); rv2 < rv {
		t.Errorf("%s: RightsVersion went back from %d to %d", what, rv, rv2)
	}
	return rv
}

// testVersionsEveryWrite: every write kind gives the tokens it affects a
// version above every earlier one and leaves the others alone.
func testVersionsEveryWrite(t *testing.T, s acl.Store) {
	if rv := mustRightsVersion(t, s); rv < 0 {
		t.Fatalf("RightsVersion of an empty store = %d", rv)
	}
	tokenVersions(t, s)
	rv := mustRightsVersion(t, s)
	a := mustToken(t, s, "a", 0)
	if a.Version <= rv {
		t.Errorf("CreateToken: version %d, not above RightsVersion %d before", a.Version, rv)
	}
	rv = mustRightsVersion(t, s)
	b, err := s.CreateTokenWith(bg, acl.NewToken{Name: "b", Hash: hash("b"), Origin: &acl.Origin{Source: "v", ID: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Version <= rv || b.Version <= a.Version {
		t.Errorf("CreateTokenWith: version %d, not above RightsVersion %d before (a: %d)", b.Version, rv, a.Version)
	}
	c := mustToken(t, s, "c", 0)
	if got := tokenVersions(t, s); !maps.Equal(got, map[int64]int64{a.ID: a.Version, b.ID: b.Version, c.ID: c.Version}) {
		t.Errorf("versions read back %v; the creations returned %d, %d, %d", got, a.Version, b.Version, c.Version)
	}

	var t1, t2, t3 acl.Tag
	versionStep(t, s, "CreateTag", nil, func() error {
		var err error
		if t1, err = s.CreateTag(bg, "v/1/#"); err != nil {
			return err
		}
		if t2, err = s.CreateTag(bg, "v/2/#"); err != nil {
			return err
		}
		t3, err = s.CreateTag(bg, "v/3/#")
		return err
	})

	name, limit, off, on := "renamed", 4, true, false
	for _, u := range []acl.TokenUpdate{{Name: &name}, {MaxConnections: &limit}, {Disabled: &off}, {Disabled: &on}, {Name: &name}} {
		var got acl.Token
		versionStep(t, s, fmt.Sprintf("UpdateToken(%+v)", u), []int64{a.ID}, func() (err error) {
			got, err = s.UpdateToken(bg, a.ID, u)
			return err
		})
		if cur, _ := s.GetToken(bg, a.ID); got.Version != cur.Version {
			t.Errorf("UpdateToken returned version %d, GetToken reads %d", got.Version, cur.Version)
		}
	}
	versionStep(t, s, "UpdateToken with no field", nil, func() error {
		_, err := s.UpdateToken(bg, a.ID, acl.TokenUpdate{})
		return err
	})
	var rot acl.Token
	versionStep(t, s, "SetTokenHash", []int64{a.ID}, func() (err error) {
		rot, err = s.SetTokenHash(bg, a.ID, hash("a rotated"))
		return err
	})
	if cur, _ := s.GetToken(bg, a.ID); rot.Version != cur.Version {
		t.Errorf("SetTokenHash returned version %d, GetToken reads %d", rot.Version, cur.Version)
	}

	versionStep(t, s, "SetPermission", []int64{a.ID}, func() error { return s.SetPermission(bg, a.ID, t1.ID, acl.PermRead) })
	versionStep(t, s, "SetPermission again", []int64{a.ID}, func() error { return s.SetPermission(bg, a.ID, t1.ID, acl.PermRead) })
	versionStep(t, s, "SetPermission upgrade", []int64{a.ID}, func() error { return s.SetPermission(bg, a.ID, t1.ID, acl.PermReadWrite) })
	versionStep(t, s, "SetPermission (b)", []int64{b.ID}, func() error { return s.SetPermission(bg, b.ID, t1.ID, acl.PermRead) })
	versionStep(t, s, "SetPermission (a, t2)", []int64{a.ID}, func() error { return s.SetPermission(bg, a.ID, t2.ID, acl.PermRead) })
	versionStep(t, s, "SetPermission (c, t3)", []int64{c.ID}, func() error { return s.SetPermission(bg, c.ID, t3.ID, acl.PermRead) })

	versionStep(t, s, "UpdateTag", []int64{a.ID, b.ID}, func() error { _, err := s.UpdateTag(bg, t1.ID, "v/one/#"); return err })
	versionStep(t, s, "UpdateTag to its own pattern", []int64{a.ID, b.ID}, func() error { _, err := s.UpdateTag(bg, t1.ID, "v/one/#"); return err })
	versionStep(t, s, "UpdateTag of a tag nobody holds", nil, func() error {
		tag, err := s.CreateTag(bg, "v/free")
		if err == nil {
			_, err = s.UpdateTag(bg, tag.ID, "v/free/#")
		}
		return err
	})

	versionStep(t, s, "DeletePermission", []int64{a.ID}, func() error { return s.DeletePermission(bg, a.ID, t1.ID) })
	versionStep(t, s, "DeleteTag", []int64{a.ID}, func() error { return s.DeleteTag(bg, t2.ID) })
	versionStep(t, s, "DeleteTag held by two", []int64{b.ID, c.ID}, func() error {
		if err := s.SetPermission(bg, b.ID, t3.ID, acl.PermRead); err != nil {
			return err
		}
		return s.DeleteTag(bg, t3.ID)
	})
	versionStep(t, s, "DeleteToken", nil, func() error { return s.DeleteToken(bg, b.ID) })
	if _, ok := tokenVersions(t, s)[b.ID]; ok {
		t.Errorf("token %d still has a version after DeleteToken", b.ID)
	}
	// Creating and deleting a tag changes no token.
	versionStep(t, s, "CreateTag and DeleteTag", nil, func() error {
		tag, err := s.CreateTag(bg, "v/tmp")
		if err == nil {
			err = s.DeleteTag(bg, tag.ID)
		}
		return err
	})
}

// testVersionsRefusedWrites: a write that is refused or fails changes no
// version.
func testVersionsRefusedWrites(t *testing.T, s acl.Store) {
	a := mustToken(t, s, "a", 0)
	b := mustToken(t, s, "b", 0)
	tag := mustTag(t, s, "r/#")
	other := mustTag(t, s, "o/#")
	mustSet(t, s, a.ID, tag.ID, acl.PermRead)
	const missing = 987654
	bad, neg := "nul\x00", -1
	refused := map[string]func() error{
		"CreateToken(conflict)":         func() error { _, err := s.CreateToken(bg, "x", 0, a.Hash); return err },
		"UpdateToken(invalid)":          func() error { _, err := s.UpdateToken(bg, a.ID, acl.TokenUpdate{Name: &bad}); return err },
		"UpdateToken(negative)":         func() error { _, err := s.UpdateToken(bg, a.ID, acl.TokenUpdate{MaxConnections: &neg}); return err },
		"SetTokenHash(conflict)":        func() error { _, err := s.SetTokenHash(bg, a.ID, b.Hash); return err },
		"SetTokenHash(zero)":            func() error { _, err := s.SetTokenHash(bg, a.ID, acl.Hash{}); return err },
		"SetPermission(missing tag)":    func() error { return s.SetPermission(bg, a.ID, missing, acl.PermRead) },
		"SetPermission(missing token)":  func() error { return s.SetPermission(bg, missing, tag.ID, acl.PermRead) },
		"SetPermission(invalid)":        func() error { return s.SetPermission(bg, a.ID, tag.ID, acl.PermNone) },
		"DeletePermission(none)":        func() error { return s.DeletePermission(bg, b.ID, tag.ID) },
		"UpdateTag(conflict)":           func() error { _, err := s.UpdateTag(bg, tag.ID, other.Pattern); return err },
		"UpdateTag(invalid)":            func() error { _, err := s.UpdateTag(bg, tag.ID, "a/#/b"); return err },
		"UpdateTag(missing)":            func() error { _, err := s.UpdateTag(bg, missing, "m/#"); return err },
		"DeleteTag(missing)":            func() error { return s.DeleteTag(bg, missing) },
		"DeleteToken(missing)":          func() error { return s.DeleteToken(bg, missing) },
		"UpdateToken(missing)":          func() error { _, err := s.UpdateToken(bg, missing, acl.TokenUpdate{Name: &bad}); return err },
		"UpdateToken(missing, nothing)": func() error { _, err := s.UpdateToken(bg, missing, acl.TokenUpdate{}); return err },
	}
	before := tokenVersions(t, s)
	for what, call := range refused {
		if err := call(); err == nil {
			t.Errorf("%s succeeded", what)
		}
		if after := tokenVersions(t, s); !maps.Equal(after, before) {
			t.Errorf("%s: versions went from %v to %v", what, before, after)
		}
	}
}

// testVersionsGlobalSequence: one sequence numbers the versions of every
// token, so a later write of one token outranks an earlier one of another.
func testVersionsGlobalSequence(t *testing.T, s acl.Store) {
	a := mustToken(t, s, "a", 0)
	b := mustToken(t, s, "b", 0)
	if a.Version < 1 || b.Version <= a.Version {
		t.Fatalf("versions of two tokens created in turn: %d then %d", a.Version, b.Version)
	}
	name := "a2"
	a2, err := s.UpdateToken(bg, a.ID, acl.TokenUpdate{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	if a2.Version <= b.Version {
		t.Errorf("token a updated after b was created: version %d, not above b's %d", a2.Version, b.Version)
	}
	tag := mustTag(t, s, "g/#")
	mustSet(t, s, b.ID, tag.ID, acl.PermRead)
	vs := tokenVersions(t, s)
	if vs[b.ID] <= a2.Version {
		t.Errorf("token b given a permission after a was updated: version %d, not above a's %d", vs[b.ID], a2.Version)
	}
	if rv := mustRightsVersion(t, s); rv < vs[b.ID] {
		t.Errorf("RightsVersion %d below the last version handed out (%d)", rv, vs[b.ID])
	}
}

// testRightsVersionAfterDeletes: once a delete has returned, RightsVersion
// is above every version the tokens it affected had — what a tombstone of
// a deleted token needs to outrank every copy of it.
func testRightsVersionAfterDeletes(t *testing.T, s acl.Store) {
	a := mustToken(t, s, "a", 0)
	b := mustToken(t, s, "b", 0)
	tag := mustTag(t, s, "d/#")
	free := mustTag(t, s, "free/#")
	mustSet(t, s, a.ID, tag.ID, acl.PermRead)
	mustSet(t, s, b.ID, tag.ID, acl.PermRead)

	// The token with the highest version is deleted: nothing else
	// advanced the sequence since it got that version.
	last := tokenVersions(t, s)[b.ID]
	if err := s.DeleteToken(bg, b.ID); err != nil {
		t.Fatal(err)
	}
	if rv := mustRightsVersion(t, s); rv <= last {
		t.Errorf("RightsVersion after DeleteToken = %d, not above the deleted token's version %d", rv, last)
	}

	before := mustRightsVersion(t, s)
	if err := s.DeletePermission(bg, a.ID, tag.ID); err != nil {
		t.Fatal(err)
	}
	if rv := mustRightsVersion(t, s); rv <= before {
		t.Errorf("RightsVersion after DeletePermission = %d, not above %d before", rv, before)
	}

	before = mustRightsVersion(t, s)
	if err := s.DeleteTag(bg, free.ID); err != nil { // held by nobody
		t.Fatal(err)
	}
	if rv := mustRightsVersion(t, s); rv <= before {
		t.Errorf("RightsVersion after DeleteTag = %d, not above %d before", rv, before)
	}

	// A rotation: the new version is above all the old hash's copies, and
	// RightsVersion is at least that.
	old := tokenVersions(t, s)[a.ID]
	rot, err := s.SetTokenHash(bg, a.ID, hash("a2"))
	if err != nil {
		t.Fatal(err)
	}
	if rv := mustRightsVersion(t, s); rot.Version <= old || rv < rot.Version {
		t.Errorf("after SetTokenHash: version %d (was %d), RightsVersion %d", rot.Version, old, rv)
	}

	// Reads never move it.
	rv := mustRightsVersion(t, s)
	tokenVersions(t, s)
	if _, err := s.ListGrants(bg, a.ID); err != nil {
		t.Fatal(err)
	}
	if got := mustRightsVersion(t, s); got != rv {
		t.Errorf("RightsVersion moved from %d to %d over reads", rv, got)
	}
}

func mustTokenVersions(t *testing.T, s acl.Store, ids []int64) map[int64]int64 {
	t.Helper()
	got, err := s.TokenVersions(bg, ids)
	if err != nil {
		t.Fatalf("TokenVersions(%d IDs): %v", len(ids), err)
	}
	if got == nil {
		t.Fatalf("TokenVersions(%d IDs) returned a nil map", len(ids))
	}
	return got
}

// testTokenVersions: present tokens with their versions; deleted, unknown
// and invalid IDs absent.
func testTokenVersions(t *testing.T, s acl.Store) {
	if got := mustTokenVersions(t, s, nil); len(got) != 0 {
		t.Errorf("TokenVersions(nil) = %v", got)
	}
	if got := mustTokenVersions(t, s, []int64{}); len(got) != 0 {
		t.Errorf("TokenVersions([]) = %v", got)
	}
	a := mustToken(t, s, "a", 0)
	b := mustToken(t, s, "b", 0)
	gone := mustToken(t, s, "gone", 0)
	if err := s.DeleteToken(bg, gone.ID); err != nil {
		t.Fatal(err)
	}
	name := "a2"
	a, err := s.UpdateToken(bg, a.ID, acl.TokenUpdate{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	got := mustTokenVersions(t, s, []int64{gone.ID, b.ID, 987654, a.ID, 0, -1, b.ID})
	if want := map[int64]int64{a.ID: a.Version, b.ID: b.Version}; !maps.Equal(got, want) {
		t.Errorf("TokenVersions = %v, want %v", got, want)
	}
	if got := mustTokenVersions(t, s, []int64{gone.ID}); len(got) != 0 {
		t.Errorf("TokenVersions(deleted) = %v", got)
	}
}

// testTokenVersionsManyIDs: more IDs than one query reads, with tokens
// placed at the edges of the batches.
func testTokenVersionsManyIDs(t *testing.T, s acl.Store) {
	const n = 2*acl.MaxVersionBatch + 500
	positions := []int{0, acl.MaxVersionBatch - 1, acl.MaxVersionBatch, acl.MaxVersionBatch + 1,
		2*acl.MaxVersionBatch - 1, 2 * acl.MaxVersionBatch, n - 1}
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = 1<<40 + int64(i) // no such token
	}
	want := map[int64]int64{}
	for i, pos := range positions {
		tok := mustToken(t, s, fmt.Sprintf("many-%d", i), 0)
		ids[pos] = tok.ID
		want[tok.ID] = tok.Version
	}
	if got := mustTokenVersions(t, s, ids); !maps.Equal(got, want) {
		t.Errorf("TokenVersions of %d IDs = %v, want %v", n, got, want)
	}
	// Many existing tokens, more than one batch of them.
	all := slices.Collect(maps.Keys(want))
	for i := range acl.MaxVersionBatch + 10 - len(all) {
		tok := mustToken(t, s, fmt.Sprintf("more-%d", i), 0)
		all = append(all, tok.ID)
		want[tok.ID] = tok.Version
	}
	if got := mustTokenVersions(t, s, all); !maps.Equal(got, want) {
		t.Errorf("TokenVersions of %d tokens: %d versions, %d wanted (equal: %v)", len(all), len(got), len(want), maps.Equal(got, want))
	}
}

// testVersionsConcurrent races every kind of rights write: none fails or
// deadlocks, the versions UpdateToken returns for one token strictly grow
// in each goroutine and are all distinct, the token ends at the highest
// of them or later, and a delete outranks them all.
func testVersionsConcurrent(t *testing.T, s acl.Store) {
	const rounds = 12
	tok := mustToken(t, s, "raced", 0)
	other := mustToken(t, s, "other", 0)
	shared := mustTag(t, s, "shared/#")
	mustSet(t, s, other.ID, shared.ID, acl.PermRead)

	var (
		mu       sync.Mutex
		returned []int64
		wg       sync.WaitGroup
	)
	errs := make(chan error, 16*rounds)
	for w := range 2 {
		wg.Go(func() {
			var last int64
			for r := range rounds {
				name := fmt.Sprintf("w%d-r%d", w, r)
				got, err := s.UpdateToken(bg, tok.ID, acl.TokenUpdate{Name: &name})
				if err != nil {
					errs <- fmt.Errorf("UpdateToken: %w", err)
					return
				}
				if got.Version <= last {
					errs <- fmt.Errorf("UpdateToken in turn returned version %d after %d", got.Version, last)
				}
				last = got.Version
				mu.Lock()
				returned = append(returned, got.Version)
				mu.Unlock()
			}
		})
	}
	wg.Go(func() { // permissions of the raced token, on the shared tag and its own
		own, err := s.CreateTag(bg, "own/#")
		if err != nil {
			errs <- err
			return
		}
		for r := range rounds {
			p := acl.PermRead + acl.Permission(r%2)
			if err := s.SetPermission(bg, tok.ID, shared.ID, p); err != nil {
				errs <- fmt.Errorf("SetPermission: %w", err)
			}
			if err := s.SetPermission(bg, tok.ID, own.ID, p); err != nil {
				errs <- fmt.Errorf("SetPermission: %w", err)
			}
			if err := s.DeletePermission(bg, tok.ID, own.ID); err != nil {
				errs <- fmt.Errorf("DeletePermission: %w", err)
			}
		}
	})
	wg.Go(func() { // the shared tag's pattern
		for r := range rounds {
			if _, err := s.UpdateTag(bg, shared.ID, fmt.Sprintf("shared/%d/#", r)); err != nil {
				errs <- fmt.Errorf("UpdateTag: %w", err)
			}
		}
	})
	wg.Go(func() { // tags held by both tokens, deleted
		for r := range rounds {
			tag, err := s.CreateTag(bg, fmt.Sprintf("tmp/%d", r))
			if err != nil {
				errs <- err
				return
			}
			for _, id := range []int64{tok.ID, other.ID} {
				if err := s.SetPermission(bg, id, tag.ID, acl.PermReadWrite); err != nil {
					errs <- fmt.Errorf("SetPermission: %w", err)
				}
			}
			if err := s.DeleteTag(bg, tag.ID); err != nil {
				errs <- fmt.Errorf("DeleteTag: %w", err)
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	slices.Sort(returned)
	if len(slices.Compact(slices.Clone(returned))) != len(returned) {
		t.Errorf("UpdateToken returned one version twice: %v", returned)
	}
	final := tokenVersions(t, s)[tok.ID]
	if highest := returned[len(returned)-1]; final < highest {
		t.Errorf("token ends at version %d, below %d that an UpdateToken returned", final, highest)
	}
	if err := s.DeleteToken(bg, tok.ID); err != nil {
		t.Fatal(err)
	}
	if rv := mustRightsVersion(t, s); rv <= final {
		t.Errorf("RightsVersion after DeleteToken = %d, not above the token's last version %d", rv, final)
	}
	if _, err := s.GetToken(bg, tok.ID); !errors.Is(err, acl.ErrNotFound) {
		t.Errorf("GetToken after DeleteToken: %v", err)
	}
}
