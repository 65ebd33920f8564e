// Package acltest holds the conformance suite every acl.Store must pass, so
// that the SQLite and Postgres stores (and any later one) keep one contract:
// the one documented on acl.Store.
//
// It owns nothing but tests; it must not know which store it tests.
package acltest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/topic"
)

// RunStoreSuite runs the conformance suite against the stores made by open.
// open is called once per subtest and must return a new, empty store (a
// store backed by a shared server may truncate its tables instead); it
// arranges the store's Close itself, typically with t.Cleanup. Subtests run
// one after the other, never in parallel with each other.
func RunStoreSuite(t *testing.T, open func(t *testing.T) acl.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s acl.Store)
	}{
		{"TokenCRUD", testTokenCRUD},
		{"TokenInvalid", testTokenInvalid},
		{"TokenConflict", testTokenConflict},
		{"TokenNotFound", testTokenNotFound},
		{"UpdateTokenPartial", testUpdateTokenPartial},
		{"SetTokenHash", testSetTokenHash},
		{"IDsNotReused", testIDsNotReused},
		{"TagCRUD", testTagCRUD},
		{"TagInvalid", testTagInvalid},
		{"TagConflictAndOverlap", testTagConflictAndOverlap},
		{"Permissions", testPermissions},
		{"PermissionErrors", testPermissionErrors},
		{"TokensWithTag", testTokensWithTag},
		{"CascadeDeleteToken", testCascadeDeleteToken},
		{"CascadeDeleteTag", testCascadeDeleteTag},
		{"UpdateTagChangesGrants", testUpdateTagChangesGrants},
		{"GetGrant", testGetGrant},
		{"CancelledContext", testCancelledContext},
		{"Concurrent", testConcurrent},
		{"ConcurrentSameTag", testConcurrentSameTag},
		{"WeakSecretFlag", testWeakSecretFlag},
		{"CreateTokenWithOrigin", testCreateTokenWithOrigin},
		{"VersionsEveryWrite", testVersionsEveryWrite},
		{"VersionsRefusedWrites", testVersionsRefusedWrites},
		{"VersionsGlobalSequence", testVersionsGlobalSequence},
		{"RightsVersionAfterDeletes", testRightsVersionAfterDeletes},
		{"TokenVersions", testTokenVersions},
		{"TokenVersionsManyIDs", testTokenVersionsManyIDs},
		{"VersionsConcurrent", testVersionsConcurrent},
		{"AuditAppendList", testAuditAppendList},
		{"AuditFilters", testAuditFilters},
		{"AuditInvalid", testAuditInvalid},
		{"AuditConcurrent", testAuditConcurrent},
		{"RetainedPutReplaceDelete", testRetainedPutReplaceDelete},
		{"RetainedEmptyProps", testRetainedEmptyProps},
		{"RetainedExpiry", testRetainedExpiry},
		{"RetainedBinary", testRetainedBinary},
		{"RetainedInvalid", testRetainedInvalid},
		{"RetainedCancelled", testRetainedCancelled},
		{"RetainedConcurrent", testRetainedConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			tc.fn(t, s)
		})
	}
}

var bg = context.Background()

// hash returns a distinct, non-zero hash per label.
func hash(label string) acl.Hash { return acl.HashSecret([]byte("acltest secret " + label)) }

func mustToken(t *testing.T, s acl.Store, name string, maxConns int) acl.Token {
	t.Helper()
	tok, err := s.CreateToken(bg, name, maxConns, hash(name))
	if err != nil {
		t.Fatalf("CreateToken(%q): %v", name, err)
	}
	return tok
}

func mustTag(t *testing.T, s acl.Store, pattern string) acl.Tag {
	t.Helper()
	tag, err := s.CreateTag(bg, pattern)
	if err != nil {
		t.Fatalf("CreateTag(%q): %v", pattern, err)
	}
	return tag
}

func mustSet(t *testing.T, s acl.Store, tokenID, tagID int64, p acl.Permission) {
	t.Helper()
	if err := s.SetPermission(bg, tokenID, tagID, p); err != nil {
		t.Fatalf("SetPermission(%d, %d, %v): %v", tokenID, tagID, p, err)
	}
}

func mustGrants(t *testing.T, s acl.Store, tokenID int64) []acl.Grant {
	t.Helper()
	gs, err := s.ListGrants(bg, tokenID)
	if err != nil {
		t.Fatalf("ListGrants(%d): %v", tokenID, err)
	}
	if gs == nil {
		t.Fatalf("ListGrants(%d) returned a nil slice", tokenID)
	}
	return gs
}

func mustTokensWithTag(t *testing.T, s acl.Store, tagID int64) []int64 {
	t.Helper()
	ids, err := s.TokensWithTag(bg, tagID)
	if err != nil {
		t.Fatalf("TokensWithTag(%d): %v", tagID, err)
	}
	if ids == nil {
		t.Fatalf("TokensWithTag(%d) returned a nil slice", tagID)
	}
	return ids
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want one wrapping %v", what, err, target)
	}
}

func sameToken(t *testing.T, what string, got, want acl.Token) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || got.Hash != want.Hash ||
		got.MaxConnections != want.MaxConnections || got.Disabled != want.Disabled ||
		got.WeakSecret != want.WeakSecret || !got.CreatedAt.Equal(want.CreatedAt) || got.Version != want.Version {
		t.Errorf("%s: got %+v, want %+v", what, got, want)
	}
}

func testTokenCRUD(t *testing.T, s acl.Store) {
	ts, err := s.ListTokens(bg)
	if err != nil || ts == nil || len(ts) != 0 {
		t.Fatalf("ListTokens on an empty store = %v, %v; want an empty non-nil slice", ts, err)
	}

	before := time.Now()
	a, err := s.CreateToken(bg, "device-a", 3, hash("a"))
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if a.ID <= 0 || a.Name != "device-a" || a.MaxConnections != 3 || a.Disabled || a.Hash != hash("a") {
		t.Errorf("CreateToken returned %+v", a)
	}
	if a.CreatedAt.Before(before.Add(-time.Minute)) || a.CreatedAt.After(after.Add(time.Minute)) {
		t.Errorf("CreatedAt %v is not about now (%v)", a.CreatedAt, before)
	}
	if a.CreatedAt.Truncate(time.Microsecond) != a.CreatedAt {
		t.Errorf("CreatedAt %v has sub-microsecond precision; stores keep microseconds", a.CreatedAt)
	}
	b, err := s.CreateToken(bg, "", 0, hash("b")) // names are optional, 0 = unlimited
	if err != nil {
		t.Fatal(err)
	}
	if b.ID <= a.ID {
		t.Errorf("second token ID %d not after first %d", b.ID, a.ID)
	}
	longName := strings.Repeat("é", acl.MaxTokenNameLen/2) // exactly the limit, in bytes
	c, err := s.CreateToken(bg, longName, 0, hash("c"))
	if err != nil {
		t.Fatalf("CreateToken with a %d-byte name: %v", len(longName), err)
	}

	for _, want := range []acl.Token{a, b, c} {
		got, err := s.GetToken(bg, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameToken(t, "GetToken", got, want)
		got, err = s.GetTokenByHash(bg, want.Hash)
		if err != nil {
			t.Fatal(err)
		}
		sameToken(t, "GetTokenByHash", got, want)
	}

	ts, err = s.ListTokens(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 {
		t.Fatalf("ListTokens: %d tokens, want 3", len(ts))
	}
	for i, want := range []acl.Token{a, b, c} {
		sameToken(t, fmt.Sprintf("ListTokens[%d]", i), ts[i], want)
	}

	if err := s.DeleteToken(bg, b.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetToken(bg, b.ID)
	wantErr(t, "GetToken after delete", err, acl.ErrNotFound)
	_, err = s.GetTokenByHash(bg, b.Hash)
	wantErr(t, "GetTokenByHash after delete", err, acl.ErrNotFound)
	ts, err = s.ListTokens(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].ID != a.ID || ts[1].ID != c.ID {
		t.Errorf("ListTokens after delete = %+v, want tokens %d and %d", ts, a.ID, c.ID)
	}

	// A disabled token is still found by hash: refusing it is the caller's job.
	disabled := true
	if _, err := s.UpdateToken(bg, a.ID, acl.TokenUpdate{Disabled: &disabled}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetTokenByHash(bg, a.Hash)
	if err != nil || !got.Disabled {
		t.Errorf("GetTokenByHash of a disabled token = %+v, %v; want it, disabled", got, err)
	}
}

func testTokenInvalid(t *testing.T, s acl.Store) {
	cases := []struct {
		name     string
		maxConns int
		hash     acl.Hash
	}{
		{strings.Repeat("x", acl.MaxTokenNameLen+1), 0, hash("long")},
		{"bad\xffutf8", 0, hash("utf8")},
		{"nul\x00byte", 0, hash("nul")},
		{"negative", -1, hash("neg")},
		{"zero hash", 0, acl.Hash{}},
	}
	for _, c := range cases {
		_, err := s.CreateToken(bg, c.name, c.maxConns, c.hash)
		wantErr(t, fmt.Sprintf("CreateToken(%.20q, %d)", c.name, c.maxConns), err, acl.ErrInvalid)
	}
	ts, err := s.ListTokens(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 0 {
		t.Errorf("refused tokens were stored: %+v", ts)
	}

	tok := mustToken(t, s, "ok", 1)
	_, err = s.SetTokenHash(bg, tok.ID, acl.Hash{})
	wantErr(t, "SetTokenHash(zero)", err, acl.ErrInvalid)
	got, err := s.GetToken(bg, tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "token after refused SetTokenHash", got, tok)
}

func testTokenConflict(t *testing.T, s acl.Store) {
	a := mustToken(t, s, "a", 0)
	b := mustToken(t, s, "b", 0)
	_, err := s.CreateToken(bg, "again", 0, a.Hash)
	wantErr(t, "CreateToken with a used hash", err, acl.ErrConflict)
	_, err = s.SetTokenHash(bg, b.ID, a.Hash)
	wantErr(t, "SetTokenHash to another token's hash", err, acl.ErrConflict)
	got, err := s.GetTokenByHash(bg, a.Hash)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "owner of the contested hash", got, a)
	got, err = s.GetToken(bg, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "token after refused SetTokenHash", got, b)
	// Names need not be unique.
	if _, err := s.CreateToken(bg, "a", 0, hash("a2")); err != nil {
		t.Errorf("CreateToken with a name in use: %v", err)
	}
}

func testTokenNotFound(t *testing.T, s acl.Store) {
	const missing = 987654
	_, err := s.GetToken(bg, missing)
	wantErr(t, "GetToken", err, acl.ErrNotFound)
	_, err = s.GetToken(bg, 0)
	wantErr(t, "GetToken(0)", err, acl.ErrNotFound)
	_, err = s.GetTokenByHash(bg, hash("nobody"))
	wantErr(t, "GetTokenByHash", err, acl.ErrNotFound)
	name := "x"
	_, err = s.UpdateToken(bg, missing, acl.TokenUpdate{Name: &name})
	wantErr(t, "UpdateToken", err, acl.ErrNotFound)
	_, err = s.UpdateToken(bg, missing, acl.TokenUpdate{})
	wantErr(t, "UpdateToken with no change", err, acl.ErrNotFound)
	_, err = s.SetTokenHash(bg, missing, hash("x"))
	wantErr(t, "SetTokenHash", err, acl.ErrNotFound)
	wantErr(t, "DeleteToken", s.DeleteToken(bg, missing), acl.ErrNotFound)
	_, err = s.ListGrants(bg, missing)
	wantErr(t, "ListGrants", err, acl.ErrNotFound)

	tok := mustToken(t, s, "once", 0)
	if err := s.DeleteToken(bg, tok.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "second DeleteToken", s.DeleteToken(bg, tok.ID), acl.ErrNotFound)
}

func testUpdateTokenPartial(t *testing.T, s acl.Store) {
	orig := mustToken(t, s, "orig", 5)
	other := mustToken(t, s, "other", 7)
	str := func(v string) *string { return &v }
	num := func(v int) *int { return &v }
	flag := func(v bool) *bool { return &v }

	want := orig
	steps := []struct {
		u     acl.TokenUpdate
		apply func(*acl.Token)
	}{
		{acl.TokenUpdate{}, func(*acl.Token) {}},
		{acl.TokenUpdate{Name: str("renamed")}, func(t *acl.Token) { t.Name = "renamed" }},
		{acl.TokenUpdate{MaxConnections: num(0)}, func(t *acl.Token) { t.MaxConnections = 0 }},
		{acl.TokenUpdate{Disabled: flag(true)}, func(t *acl.Token) { t.Disabled = true }},
		{acl.TokenUpdate{Name: str("")}, func(t *acl.Token) { t.Name = "" }},
		{acl.TokenUpdate{Name: str("all"), MaxConnections: num(9), Disabled: flag(false)},
			func(t *acl.Token) { t.Name, t.MaxConnections, t.Disabled = "all", 9, false }},
	}
	for i, st := range steps {
		st.apply(&want)
		got, err := s.UpdateToken(bg, orig.ID, st.u)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		// A field set, even to its value, is a new version; none is not.
		if empty := st.u == (acl.TokenUpdate{}); empty && got.Version != want.Version || !empty && got.Version <= want.Version {
			t.Errorf("step %d: UpdateToken(%+v) took the version from %d to %d", i, st.u, want.Version, got.Version)
		}
		want.Version = got.Version
		sameToken(t, fmt.Sprintf("step %d: UpdateToken result", i), got, want)
		got, err = s.GetToken(bg, orig.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameToken(t, fmt.Sprintf("step %d: GetToken", i), got, want)
	}

	// A refused update changes nothing, not even its valid fields.
	for _, u := range []acl.TokenUpdate{
		{Name: str("fine"), MaxConnections: num(-1)},
		{Name: str(strings.Repeat("n", acl.MaxTokenNameLen+1)), Disabled: flag(true)},
		{Name: str("\xfe")},
	} {
		_, err := s.UpdateToken(bg, orig.ID, u)
		wantErr(t, "invalid UpdateToken", err, acl.ErrInvalid)
	}
	got, err := s.GetToken(bg, orig.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "token after refused updates", got, want)
	got, err = s.GetToken(bg, other.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "untouched token", got, other)
}

func testSetTokenHash(t *testing.T, s acl.Store) {
	tok := mustToken(t, s, "rotating", 2)
	tag := mustTag(t, s, "r/#")
	mustSet(t, s, tok.ID, tag.ID, acl.PermRead)

	newHash := hash("rotated")
	got, err := s.SetTokenHash(bg, tok.ID, newHash)
	if err != nil {
		t.Fatal(err)
	}
	want := tok
	want.Hash = newHash
	if got.Version <= tok.Version {
		t.Errorf("SetTokenHash left the version at %d (was %d)", got.Version, tok.Version)
	}
	want.Version = got.Version
	sameToken(t, "SetTokenHash result", got, want)
	_, err = s.GetTokenByHash(bg, tok.Hash)
	wantErr(t, "GetTokenByHash(old hash)", err, acl.ErrNotFound)
	got, err = s.GetTokenByHash(bg, newHash)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "GetTokenByHash(new hash)", got, want)
	if gs := mustGrants(t, s, tok.ID); len(gs) != 1 {
		t.Errorf("grants after rotation = %+v, want the one grant kept", gs)
	}
	// Setting the hash a token already has is not a conflict with itself.
	if _, err := s.SetTokenHash(bg, tok.ID, newHash); err != nil {
		t.Errorf("SetTokenHash to its own hash: %v", err)
	}
	// The old hash is free again.
	if _, err := s.CreateToken(bg, "reuses old hash", 0, tok.Hash); err != nil {
		t.Errorf("CreateToken with a rotated-away hash: %v", err)
	}
}

func testIDsNotReused(t *testing.T, s acl.Store) {
	tok := mustToken(t, s, "first", 0)
	tag := mustTag(t, s, "first/#")
	if err := s.DeleteToken(bg, tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTag(bg, tag.ID); err != nil {
		t.Fatal(err)
	}
	tok2 := mustToken(t, s, "second", 0)
	tag2 := mustTag(t, s, "second/#")
	if tok2.ID == tok.ID {
		t.Errorf("token ID %d reused after delete", tok.ID)
	}
	if tag2.ID == tag.ID {
		t.Errorf("tag ID %d reused after delete", tag.ID)
	}
}

func testTagCRUD(t *testing.T, s acl.Store) {
	tags, err := s.ListTags(bg)
	if err != nil || tags == nil || len(tags) != 0 {
		t.Fatalf("ListTags on an empty store = %v, %v; want an empty non-nil slice", tags, err)
	}
	patterns := []string{"sensors/+/temp", "alerts/#", "#", "+", "$SYS/#", "devices/room1/status", "a//b", "/"}
	var want []acl.Tag
	for _, p := range patterns {
		tag := mustTag(t, s, p)
		if tag.ID <= 0 || tag.Pattern != p {
			t.Errorf("CreateTag(%q) = %+v", p, tag)
		}
		if len(want) > 0 && tag.ID <= want[len(want)-1].ID {
			t.Errorf("tag IDs not increasing: %d after %d", tag.ID, want[len(want)-1].ID)
		}
		want = append(want, tag)
	}
	for _, w := range want {
		got, err := s.GetTag(bg, w.ID)
		if err != nil || got != w {
			t.Errorf("GetTag(%d) = %+v, %v; want %+v", w.ID, got, err, w)
		}
	}
	tags, err = s.ListTags(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tags, want) {
		t.Errorf("ListTags = %+v, want %+v", tags, want)
	}

	upd, err := s.UpdateTag(bg, want[0].ID, "sensors/+/humidity")
	if err != nil {
		t.Fatal(err)
	}
	if upd != (acl.Tag{ID: want[0].ID, Pattern: "sensors/+/humidity"}) {
		t.Errorf("UpdateTag returned %+v", upd)
	}
	if got, err := s.GetTag(bg, want[0].ID); err != nil || got != upd {
		t.Errorf("GetTag after update = %+v, %v; want %+v", got, err, upd)
	}
	if _, err := s.UpdateTag(bg, upd.ID, upd.Pattern); err != nil {
		t.Errorf("UpdateTag to its own pattern: %v", err)
	}
	// The old pattern is free again.
	mustTag(t, s, "sensors/+/temp")

	if err := s.DeleteTag(bg, want[1].ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetTag(bg, want[1].ID)
	wantErr(t, "GetTag after delete", err, acl.ErrNotFound)
	wantErr(t, "second DeleteTag", s.DeleteTag(bg, want[1].ID), acl.ErrNotFound)
	_, err = s.UpdateTag(bg, want[1].ID, "x")
	wantErr(t, "UpdateTag of a deleted tag", err, acl.ErrNotFound)
	_, err = s.GetTag(bg, 987654)
	wantErr(t, "GetTag(missing)", err, acl.ErrNotFound)
	_, err = s.TokensWithTag(bg, 987654)
	wantErr(t, "TokensWithTag(missing)", err, acl.ErrNotFound)
}

func testTagInvalid(t *testing.T, s acl.Store) {
	cases := []struct {
		pattern string
		topic   error // topic's own reason, which the error also wraps
	}{
		{"", topic.ErrEmpty},
		{"a/#/b", topic.ErrWildcardPlacement},
		{"a+", topic.ErrWildcardPlacement},
		{"a/b#", topic.ErrWildcardPlacement},
		{"nul\x00", topic.ErrNul},
		{"bad\xff", topic.ErrInvalidUTF8},
		{strings.Repeat("x", topic.MaxBytes+1), topic.ErrTooLong},
	}
	for _, c := range cases {
		_, err := s.CreateTag(bg, c.pattern)
		wantErr(t, fmt.Sprintf("CreateTag(%.20q)", c.pattern), err, acl.ErrInvalid)
		wantErr(t, fmt.Sprintf("CreateTag(%.20q)", c.pattern), err, c.topic)
	}
	tags, err := s.ListTags(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 0 {
		t.Errorf("refused tags were stored: %+v", tags)
	}
	tag := mustTag(t, s, "ok/#")
	_, err = s.UpdateTag(bg, tag.ID, "bad/#/x")
	wantErr(t, "UpdateTag(invalid)", err, acl.ErrInvalid)
	if got, err := s.GetTag(bg, tag.ID); err != nil || got != tag {
		t.Errorf("tag after refused update = %+v, %v; want %+v", got, err, tag)
	}
}

func testTagConflictAndOverlap(t *testing.T, s acl.Store) {
	wide := mustTag(t, s, "sensors/#")
	narrow := mustTag(t, s, "sensors/+/temp") // overlapping is fine
	mustTag(t, s, "sensors/room1/temp")
	_, err := s.CreateTag(bg, "sensors/#")
	wantErr(t, "CreateTag(duplicate)", err, acl.ErrConflict)
	_, err = s.UpdateTag(bg, narrow.ID, wide.Pattern)
	wantErr(t, "UpdateTag to a used pattern", err, acl.ErrConflict)
	if got, err := s.GetTag(bg, narrow.ID); err != nil || got != narrow {
		t.Errorf("tag after refused update = %+v, %v; want %+v", got, err, narrow)
	}
	// Patterns are compared exactly: case and slashes matter.
	mustTag(t, s, "Sensors/#")
	mustTag(t, s, "/sensors/#")
}

func testPermissions(t *testing.T, s acl.Store) {
	tok := mustToken(t, s, "dev", 0)
	other := mustToken(t, s, "other", 0)
	if gs := mustGrants(t, s, tok.ID); len(gs) != 0 {
		t.Fatalf("grants of a new token = %+v", gs)
	}
	t1 := mustTag(t, s, "sensors/#")
	t2 := mustTag(t, s, "sensors/+/temp")
	t3 := mustTag(t, s, "cmd/dev")
	// Set in reverse tag order: ListGrants must still order by tag ID.
	mustSet(t, s, tok.ID, t3.ID, acl.PermReadWrite)
	mustSet(t, s, tok.ID, t2.ID, acl.PermReadWrite)
	mustSet(t, s, tok.ID, t1.ID, acl.PermRead)
	mustSet(t, s, other.ID, t2.ID, acl.PermRead)

	want := []acl.Grant{
		{TagID: t1.ID, Pattern: "sensors/#", Permission: acl.PermRead},
		{TagID: t2.ID, Pattern: "sensors/+/temp", Permission: acl.PermReadWrite},
		{TagID: t3.ID, Pattern: "cmd/dev", Permission: acl.PermReadWrite},
	}
	if gs := mustGrants(t, s, tok.ID); !slices.Equal(gs, want) {
		t.Errorf("ListGrants = %+v, want %+v", gs, want)
	}
	if gs := mustGrants(t, s, other.ID); !slices.Equal(gs, []acl.Grant{{TagID: t2.ID, Pattern: "sensors/+/temp", Permission: acl.PermRead}}) {
		t.Errorf("ListGrants(other) = %+v", gs)
	}

	// Replace: a downgrade and an upgrade, each leaving one row per pair.
	mustSet(t, s, tok.ID, t2.ID, acl.PermRead)
	mustSet(t, s, tok.ID, t1.ID, acl.PermReadWrite)
	want[0].Permission, want[1].Permission = acl.PermReadWrite, acl.PermRead
	if gs := mustGrants(t, s, tok.ID); !slices.Equal(gs, want) {
		t.Errorf("ListGrants after replace = %+v, want %+v", gs, want)
	}
	mustSet(t, s, tok.ID, t1.ID, acl.PermReadWrite) // setting the same value again is fine
	if gs := mustGrants(t, s, tok.ID); !slices.Equal(gs, want) {
		t.Errorf("ListGrants after idempotent set = %+v, want %+v", gs, want)
	}

	if err := s.DeletePermission(bg, tok.ID, t2.ID); err != nil {
		t.Fatal(err)
	}
	want = slices.Delete(want, 1, 2)
	if gs := mustGrants(t, s, tok.ID); !slices.Equal(gs, want) {
		t.Errorf("ListGrants after DeletePermission = %+v, want %+v", gs, want)
	}
	wantErr(t, "second DeletePermission", s.DeletePermission(bg, tok.ID, t2.ID), acl.ErrNotFound)
	// The other token's permission on the same tag is untouched.
	if ids := mustTokensWithTag(t, s, t2.ID); !slices.Equal(ids, []int64{other.ID}) {
		t.Errorf("TokensWithTag(%d) = %v, want [%d]", t2.ID, ids, other.ID)
	}
	// Renaming or disabling a token keeps its grants.
	name := "renamed"
	if _, err := s.UpdateToken(bg, tok.ID, acl.TokenUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if gs := mustGrants(t, s, tok.ID); !slices.Equal(gs, want) {
		t.Errorf("ListGrants after rename = %+v, want %+v", gs, want)
	}
}

func testPermissionErrors(t *testing.T, s acl.Store) {
	tok := mustToken(t, s, "dev", 0)
	tag := mustTag(t, s, "a/#")
	const missing = 987654
	wantErr(t, "SetPermission(missing token)", s.SetPermission(bg, missing, tag.ID, acl.PermRead), acl.ErrNotFound)
	wantErr(t, "SetPermission(missing tag)", s.SetPermission(bg, tok.ID, missing, acl.PermRead), acl.ErrNotFound)
	wantErr(t, "SetPermission(PermNone)", s.SetPermission(bg, tok.ID, tag.ID, acl.PermNone), acl.ErrInvalid)
	wantErr(t, "SetPermission(7)", s.SetPermission(bg, tok.ID, tag.ID, acl.Permission(7)), acl.ErrInvalid)
	wantErr(t, "DeletePermission(none set)", s.DeletePermission(bg, tok.ID, tag.ID), acl.ErrNotFound)
	wantErr(t, "DeletePermission(missing token)", s.DeletePermission(bg, missing, tag.ID), acl.ErrNotFound)
	if gs := mustGrants(t, s, tok.ID); len(gs) != 0 {
		t.Errorf("refused permissions were stored: %+v", gs)
	}
	if ids := mustTokensWithTag(t, s, tag.ID); len(ids) != 0 {
		t.Errorf("refused permissions were stored: tokens %v", ids)
	}
}

func testTokensWithTag(t *testing.T, s acl.Store) {
	tag := mustTag(t, s, "fleet/#")
	unrelated := mustTag(t, s, "other/#")
	if ids := mustTokensWithTag(t, s, tag.ID); len(ids) != 0 {
		t.Fatalf("TokensWithTag of a new tag = %v", ids)
	}
	var want []int64
	toks := make([]acl.Token, 5)
	for i := range toks {
		toks[i] = mustToken(t, s, fmt.Sprintf("t%d", i), 0)
	}
	// Grant in reverse token order; the result is ordered by token ID.
	for i := len(toks) - 1; i >= 0; i-- {
		if i == 2 {
			mustSet(t, s, toks[i].ID, unrelated.ID, acl.PermRead)
			continue
		}
		p := acl.PermRead
		if i%2 == 1 {
			p = acl.PermReadWrite
		}
		mustSet(t, s, toks[i].ID, tag.ID, p)
	}
	for i, tk := range toks {
		if i != 2 {
			want = append(want, tk.ID)
		}
	}
	if ids := mustTokensWithTag(t, s, tag.ID); !slices.Equal(ids, want) {
		t.Errorf("TokensWithTag = %v, want %v", ids, want)
	}
	if ids := mustTokensWithTag(t, s, unrelated.ID); !slices.Equal(ids, []int64{toks[2].ID}) {
		t.Errorf("TokensWithTag(unrelated) = %v, want [%d]", ids, toks[2].ID)
	}
}

func testCascadeDeleteToken(t *testing.T, s acl.Store) {
	gone := mustToken(t, s, "gone", 0)
	kept := mustToken(t, s, "kept", 0)
	a := mustTag(t, s, "a/#")
	b := mustTag(t, s, "b/#")
	mustSet(t, s, gone.ID, a.ID, acl.PermRead)
	mustSet(t, s, gone.ID, b.ID, acl.PermReadWrite)
	mustSet(t, s, kept.ID, a.ID, acl.PermReadWrite)

	if err := s.DeleteToken(bg, gone.ID); err != nil {
		t.Fatal(err)
	}
	_, err := s.ListGrants(bg, gone.ID)
	wantErr(t, "ListGrants of a deleted token", err, acl.ErrNotFound)
	if ids := mustTokensWithTag(t, s, a.ID); !slices.Equal(ids, []int64{kept.ID}) {
		t.Errorf("TokensWithTag(a) after token delete = %v, want [%d]", ids, kept.ID)
	}
	if ids := mustTokensWithTag(t, s, b.ID); len(ids) != 0 {
		t.Errorf("TokensWithTag(b) after token delete = %v, want none", ids)
	}
	// Tags survive the deletion of a token.
	if tags, err := s.ListTags(bg); err != nil || len(tags) != 2 {
		t.Errorf("ListTags after token delete = %+v, %v; want both tags", tags, err)
	}
	wantErr(t, "DeletePermission of a deleted token", s.DeletePermission(bg, gone.ID, a.ID), acl.ErrNotFound)
	if gs := mustGrants(t, s, kept.ID); len(gs) != 1 || gs[0].TagID != a.ID {
		t.Errorf("grants of the kept token = %+v", gs)
	}
}

func testCascadeDeleteTag(t *testing.T, s acl.Store) {
	tok := mustToken(t, s, "dev", 0)
	tok2 := mustToken(t, s, "dev2", 0)
	gone := mustTag(t, s, "gone/#")
	kept := mustTag(t, s, "kept/#")
	mustSet(t, s, tok.ID, gone.ID, acl.PermReadWrite)
	mustSet(t, s, tok.ID, kept.ID, acl.PermRead)
	mustSet(t, s, tok2.ID, gone.ID, acl.PermRead)

	if err := s.DeleteTag(bg, gone.ID); err != nil {
		t.Fatal(err)
	}
	want := []acl.Grant{{TagID: kept.ID, Pattern: "kept/#", Permission: acl.PermRead}}
	if gs := mustGrants(t, s, tok.ID); !slices.Equal(gs, want) {
		t.Errorf("ListGrants after tag delete = %+v, want %+v", gs, want)
	}
	if gs := mustGrants(t, s, tok2.ID); len(gs) != 0 {
		t.Errorf("ListGrants(tok2) after tag delete = %+v, want none", gs)
	}
	_, err := s.TokensWithTag(bg, gone.ID)
	wantErr(t, "TokensWithTag of a deleted tag", err, acl.ErrNotFound)
	// Tokens survive the deletion of a tag.
	if ts, err := s.ListTokens(bg); err != nil || len(ts) != 2 {
		t.Errorf("ListTokens after tag delete = %+v, %v; want both tokens", ts, err)
	}
	// A new tag with the deleted pattern starts without permissions.
	again := mustTag(t, s, "gone/#")
	if ids := mustTokensWithTag(t, s, again.ID); len(ids) != 0 {
		t.Errorf("recreated tag inherited permissions of tokens %v", ids)
	}
}

func testUpdateTagChangesGrants(t *testing.T, s acl.Store) {
	tok := mustToken(t, s, "dev", 0)
	tag := mustTag(t, s, "old/#")
	mustSet(t, s, tok.ID, tag.ID, acl.PermReadWrite)
	if _, err := s.UpdateTag(bg, tag.ID, "new/+"); err != nil {
		t.Fatal(err)
	}
	want := []acl.Grant{{TagID: tag.ID, Pattern: "new/+", Permission: acl.PermReadWrite}}
	if gs := mustGrants(t, s, tok.ID); !slices.Equal(gs, want) {
		t.Errorf("ListGrants after UpdateTag = %+v, want %+v", gs, want)
	}
	if ids := mustTokensWithTag(t, s, tag.ID); !slices.Equal(ids, []int64{tok.ID}) {
		t.Errorf("TokensWithTag after UpdateTag = %v, want [%d]", ids, tok.ID)
	}
}

// testGetGrant checks that GetGrant answers, for every (token, tag), what
// ListGrants holds for that tag, through sets, replacements, pattern
// changes and deletions.
func testGetGrant(t *testing.T, s acl.Store) {
	tok := mustToken(t, s, "dev", 0)
	other := mustToken(t, s, "other", 0)
	t1 := mustTag(t, s, "sensors/#")
	t2 := mustTag(t, s, "cmd/+")
	mustSet(t, s, tok.ID, t1.ID, acl.PermRead)
	mustSet(t, s, tok.ID, t2.ID, acl.PermReadWrite)
	mustSet(t, s, other.ID, t1.ID, acl.PermReadWrite)
	agree := func(step string) {
		t.Helper()
		for _, id := range []int64{tok.ID, other.ID} {
			held := map[int64]acl.Grant{}
			for _, g := range mustGrants(t, s, id) {
				held[g.TagID] = g
			}
			for _, tagID := range []int64{t1.ID, t2.ID} {
				g, err := s.GetGrant(bg, id, tagID)
				want, ok := held[tagID]
				switch {
				case ok && (err != nil || g != want):
					t.Errorf("%s: GetGrant(%d, %d) = %+v, %v; want %+v", step, id, tagID, g, err, want)
				case !ok:
					wantErr(t, fmt.Sprintf("%s: GetGrant(%d, %d) without a permission", step, id, tagID), err, acl.ErrNotFound)
				}
			}
		}
	}
	agree("after sets")
	mustSet(t, s, tok.ID, t1.ID, acl.PermReadWrite)
	agree("after an upgrade")
	if _, err := s.UpdateTag(bg, t2.ID, "cmd/dev/#"); err != nil {
		t.Fatal(err)
	}
	agree("after UpdateTag")
	if g, err := s.GetGrant(bg, tok.ID, t2.ID); err != nil || g.Pattern != "cmd/dev/#" {
		t.Errorf("GetGrant after UpdateTag = %+v, %v; want the new pattern", g, err)
	}
	if err := s.DeletePermission(bg, tok.ID, t1.ID); err != nil {
		t.Fatal(err)
	}
	agree("after DeletePermission")
	if err := s.DeleteTag(bg, t2.ID); err != nil {
		t.Fatal(err)
	}
	agree("after DeleteTag")
	wantErr(t, "GetGrant of a missing token", func() error { _, err := s.GetGrant(bg, 1<<40, t1.ID); return err }(), acl.ErrNotFound)
	wantErr(t, "GetGrant of a missing tag", func() error { _, err := s.GetGrant(bg, tok.ID, 1<<40); return err }(), acl.ErrNotFound)
}

func testCancelledContext(t *testing.T, s acl.Store) {
	tok := mustToken(t, s, "dev", 0)
	tag := mustTag(t, s, "a/#")
	mustSet(t, s, tok.ID, tag.ID, acl.PermRead)
	tok, err := s.GetToken(bg, tok.ID) // with the version the permission gave it
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	name := "changed"
	calls := map[string]func() error{
		"CreateToken":    func() error { _, err := s.CreateToken(ctx, "x", 0, hash("ctx")); return err },
		"GetToken":       func() error { _, err := s.GetToken(ctx, tok.ID); return err },
		"GetTokenByHash": func() error { _, err := s.GetTokenByHash(ctx, tok.Hash); return err },
		"ListTokens":     func() error { _, err := s.ListTokens(ctx); return err },
		"UpdateToken": func() error {
			_, err := s.UpdateToken(ctx, tok.ID, acl.TokenUpdate{Name: &name})
			return err
		},
		"SetTokenHash":     func() error { _, err := s.SetTokenHash(ctx, tok.ID, hash("ctx2")); return err },
		"DeleteToken":      func() error { return s.DeleteToken(ctx, tok.ID) },
		"CreateTag":        func() error { _, err := s.CreateTag(ctx, "ctx/#"); return err },
		"GetTag":           func() error { _, err := s.GetTag(ctx, tag.ID); return err },
		"ListTags":         func() error { _, err := s.ListTags(ctx); return err },
		"UpdateTag":        func() error { _, err := s.UpdateTag(ctx, tag.ID, "b/#"); return err },
		"DeleteTag":        func() error { return s.DeleteTag(ctx, tag.ID) },
		"SetPermission":    func() error { return s.SetPermission(ctx, tok.ID, tag.ID, acl.PermReadWrite) },
		"DeletePermission": func() error { return s.DeletePermission(ctx, tok.ID, tag.ID) },
		"ListGrants":       func() error { _, err := s.ListGrants(ctx, tok.ID); return err },
		"GetGrant":         func() error { _, err := s.GetGrant(ctx, tok.ID, tag.ID); return err },
		"TokensWithTag":    func() error { _, err := s.TokensWithTag(ctx, tag.ID); return err },
		"CreateTokenWith": func() error {
			_, err := s.CreateTokenWith(ctx, acl.NewToken{Name: "x", Hash: hash("ctx3"), Origin: &acl.Origin{Source: "ctx", ID: 1}})
			return err
		},
		"ListImported":     func() error { _, err := s.ListImported(ctx, "ctx"); return err },
		"CountWeakSecrets": func() error { _, err := s.CountWeakSecrets(ctx); return err },
		"AppendAudit": func() error {
			_, err := s.AppendAudit(ctx, acl.AuditEntry{Action: "ctx.test", Status: 200})
			return err
		},
		"ListAudit":     func() error { _, err := s.ListAudit(ctx, acl.AuditQuery{Limit: 10}); return err },
		"RightsVersion": func() error { _, err := s.RightsVersion(ctx); return err },
		"TokenVersions": func() error { _, err := s.TokenVersions(ctx, []int64{tok.ID}); return err },
		"TokenVersions(none)": func() error {
			_, err := s.TokenVersions(ctx, nil)
			return err
		},
	}
	for name, call := range calls {
		wantErr(t, name+" with a cancelled context", call(), context.Canceled)
	}
	// Nothing was changed.
	got, err := s.GetToken(bg, tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "token after cancelled calls", got, tok)
	want := []acl.Grant{{TagID: tag.ID, Pattern: "a/#", Permission: acl.PermRead}}
	if gs := mustGrants(t, s, tok.ID); !slices.Equal(gs, want) {
		t.Errorf("grants after cancelled calls = %+v, want %+v", gs, want)
	}
	if ts, _ := s.ListTokens(bg); len(ts) != 1 {
		t.Errorf("tokens after cancelled calls: %d, want 1", len(ts))
	}
	if tags, _ := s.ListTags(bg); len(tags) != 1 {
		t.Errorf("tags after cancelled calls: %d, want 1", len(tags))
	}
	if ims, _ := s.ListImported(bg, "ctx"); len(ims) != 0 {
		t.Errorf("imports after cancelled calls: %+v", ims)
	}
	if es, _ := s.ListAudit(bg, acl.AuditQuery{Limit: 10}); len(es) != 0 {
		t.Errorf("audit entries after cancelled calls: %+v", es)
	}
}

// testConcurrent runs writers and readers from several goroutines at once
// and then checks that every write is visible and nothing else is.
func testConcurrent(t *testing.T, s acl.Store) {
	const workers, rounds = 6, 8
	shared := mustTag(t, s, "shared/#")
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				if err := concurrentRound(s, shared, w, r); err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", w, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	// Every round kept its token when r is even and deleted it when odd.
	ts, err := s.ListTokens(bg)
	if err != nil {
		t.Fatal(err)
	}
	if want := workers * rounds / 2; len(ts) != want {
		t.Fatalf("%d tokens remain, want %d", len(ts), want)
	}
	var ids []int64
	for i, tk := range ts {
		if i > 0 && tk.ID <= ts[i-1].ID {
			t.Errorf("ListTokens not ordered by ID: %d after %d", tk.ID, ts[i-1].ID)
		}
		ids = append(ids, tk.ID)
		gs := mustGrants(t, s, tk.ID)
		if len(gs) != 2 || gs[0].TagID != shared.ID || gs[1].Pattern != "own/"+tk.Name+"/#" {
			t.Errorf("grants of %q = %+v", tk.Name, gs)
		}
	}
	if got := mustTokensWithTag(t, s, shared.ID); !slices.Equal(got, ids) {
		t.Errorf("TokensWithTag(shared) = %v, want %v", got, ids)
	}
	tags, err := s.ListTags(bg)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + workers*rounds; len(tags) != want {
		t.Errorf("%d tags, want %d", len(tags), want)
	}
}

func concurrentRound(s acl.Store, shared acl.Tag, w, r int) error {
	name := fmt.Sprintf("w%d-r%d", w, r)
	tok, err := s.CreateToken(bg, name, r, hash(name))
	if err != nil {
		return err
	}
	own, err := s.CreateTag(bg, "own/"+name+"/#")
	if err != nil {
		return err
	}
	if err := s.SetPermission(bg, tok.ID, own.ID, acl.PermReadWrite); err != nil {
		return err
	}
	if err := s.SetPermission(bg, tok.ID, shared.ID, acl.PermRead); err != nil {
		return err
	}
	got, err := s.GetTokenByHash(bg, hash(name))
	if err != nil {
		return err
	}
	if got.ID != tok.ID || got.Name != name {
		return fmt.Errorf("GetTokenByHash = %+v, want token %d", got, tok.ID)
	}
	gs, err := s.ListGrants(bg, tok.ID)
	if err != nil {
		return err
	}
	if len(gs) != 2 || gs[0].TagID != shared.ID || gs[1].TagID != own.ID {
		return fmt.Errorf("ListGrants = %+v", gs)
	}
	if _, err := s.ListTokens(bg); err != nil {
		return err
	}
	if r%2 == 1 {
		if err := s.DeleteToken(bg, tok.ID); err != nil {
			return err
		}
		if _, err := s.ListGrants(bg, tok.ID); !errors.Is(err, acl.ErrNotFound) {
			return fmt.Errorf("ListGrants after delete: %v, want ErrNotFound", err)
		}
	}
	return nil
}

// testConcurrentSameTag races creators of one pattern and setters of one
// permission: exactly one creation wins, and the permission ends as one of
// the values written.
func testConcurrentSameTag(t *testing.T, s acl.Store) {
	const racers = 6
	tok := mustToken(t, s, "dev", 0)
	var wg sync.WaitGroup
	results := make(chan error, racers)
	for range racers {
		wg.Go(func() {
			_, err := s.CreateTag(bg, "race/#")
			results <- err
		})
	}
	wg.Wait()
	close(results)
	wins := 0
	for err := range results {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, acl.ErrConflict):
			t.Errorf("racing CreateTag: %v, want success or ErrConflict", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d racing CreateTag calls succeeded, want exactly 1", wins)
	}
	tags, err := s.ListTags(bg)
	if err != nil || len(tags) != 1 {
		t.Fatalf("ListTags = %+v, %v; want the one tag", tags, err)
	}

	for i := range racers {
		wg.Go(func() {
			p := acl.PermRead
			if i%2 == 1 {
				p = acl.PermReadWrite
			}
			if err := s.SetPermission(bg, tok.ID, tags[0].ID, p); err != nil {
				t.Errorf("racing SetPermission: %v", err)
			}
		})
	}
	wg.Wait()
	gs := mustGrants(t, s, tok.ID)
	if len(gs) != 1 || gs[0].TagID != tags[0].ID || acl.ValidatePermission(gs[0].Permission) != nil {
		t.Errorf("grants after racing SetPermission = %+v, want one valid grant", gs)
	}
}
