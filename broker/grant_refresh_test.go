package broker

import (
	"context"
	"fmt"
	"testing"

	"github.com/gatecast/gatecast/acl"
)

// TestRefreshGrant: a single grant change enforced without re-reading the
// token's grants has the same effect as a full refresh.
func TestRefreshGrant(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok, secret := e.token(t, 0, map[string]acl.Permission{"a/#": acl.PermReadWrite, "b/#": acl.PermRead})
	tags, _ := e.store.ListTags(ctx)
	byPattern := map[string]int64{}
	for _, tg := range tags {
		byPattern[tg.Pattern] = tg.ID
	}
	pubA, _ := e.connect(t, secret, "a/x")
	_, subB := e.connect(t, secret, "b/y")
	_, subA := e.connect(t, secret, "a/#")

	// Downgrade a/# to read: nobody closed, the next publish is refused.
	if err := e.store.SetPermission(ctx, tok.ID, byPattern["a/#"], acl.PermRead); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshGrant(ctx, tok.ID, byPattern["a/#"]); err != nil {
		t.Fatal(err)
	}
	pubA.OnMessage(true, []byte(`{"tag":"a/z","message":1}`))
	if subA.sent.Load() != 0 || subA.closed.Load() {
		t.Fatalf("after downgrade: delivered %d, closed %v", subA.sent.Load(), subA.closed.Load())
	}
	// A new grant widens: c/# becomes subscribable.
	tagC, err := e.store.CreateTag(ctx, "c/#")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetPermission(ctx, tok.ID, tagC.ID, acl.PermReadWrite); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshGrant(ctx, tok.ID, tagC.ID); err != nil {
		t.Fatal(err)
	}
	e.connect(t, secret, "c/1")
	// Re-pattern b/# to b/q/#: the b/y subscription is no longer covered.
	if _, err := e.store.UpdateTag(ctx, byPattern["b/#"], "b/q/#"); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshGrant(ctx, tok.ID, byPattern["b/#"]); err != nil {
		t.Fatal(err)
	}
	if subB.code() != CloseForbidden {
		t.Fatalf("b/y after re-pattern: close %d", subB.code())
	}
	// Remove a/#: the a/# and a/x sessions are closed with 4003.
	if err := e.store.DeletePermission(ctx, tok.ID, byPattern["a/#"]); err != nil {
		t.Fatal(err)
	}
	if err := e.b.RefreshGrant(ctx, tok.ID, byPattern["a/#"]); err != nil {
		t.Fatal(err)
	}
	if subA.code() != CloseForbidden {
		t.Fatalf("a/# after removal: close %d", subA.code())
	}
	// The derived grants equal a fresh compile of the store's.
	grants, _ := e.store.ListGrants(ctx, tok.ID)
	if !acl.CompileGrants(grants).Equal(e.b.tokens.byIDGet(tok.ID).grants.Load()) {
		t.Fatal("derived grants differ from the store's")
	}
}

// TestRefreshGrantBuildsLargeTokens: 2,000 grants added one by one through
// RefreshGrant, with a session live, end up exactly as a full compile.
func TestRefreshGrantBuildsLargeTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok, secret := e.token(t, 0, map[string]acl.Permission{"base/#": acl.PermRead})
	e.connect(t, secret, "base/x")
	for i := range 2000 {
		tag, err := e.store.CreateTag(ctx, fmt.Sprintf("dev/%d/#", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.store.SetPermission(ctx, tok.ID, tag.ID, acl.PermReadWrite); err != nil {
			t.Fatal(err)
		}
		if err := e.b.RefreshGrant(ctx, tok.ID, tag.ID); err != nil {
			t.Fatal(err)
		}
	}
	grants, _ := e.store.ListGrants(ctx, tok.ID)
	got := e.b.tokens.byIDGet(tok.ID).grants.Load()
	if !acl.CompileGrants(grants).Equal(got) || !got.CanPublish("dev/1999/t") {
		t.Fatal("grants built one by one differ from the store's")
	}
}
