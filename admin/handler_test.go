package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/broker"
)

func TestAuthRequired(t *testing.T) {
	f := newFixture(t)
	routes := [][2]string{
		{"GET", "/api/v1/tokens"}, {"POST", "/api/v1/tokens"}, {"GET", "/api/v1/tokens/1"},
		{"PATCH", "/api/v1/tokens/1"}, {"DELETE", "/api/v1/tokens/1"}, {"POST", "/api/v1/tokens/1/rotate"},
		{"GET", "/api/v1/tokens/1/permissions"}, {"PUT", "/api/v1/tokens/1/permissions/1"},
		{"DELETE", "/api/v1/tokens/1/permissions/1"}, {"POST", "/api/v1/tags"}, {"GET", "/api/v1/tags"},
		{"GET", "/api/v1/tags/1"}, {"PATCH", "/api/v1/tags/1"}, {"DELETE", "/api/v1/tags/1"},
		{"GET", "/api/v1/connections"}, {"DELETE", "/api/v1/connections/1"},
		// unknown routes and methods under /api are not revealed without the key
		{"GET", "/api/v1/nope"}, {"PUT", "/api/v1/tokens"}, {"GET", "/api"},
	}
	auths := []string{"", "Bearer", "Bearer ", "Bearer wrong", "Basic " + testKey, "Bearer " + testKey + "x",
		"Bearer " + testKey[:len(testKey)-1], testKey}
	for _, rt := range routes {
		for _, auth := range auths {
			h := map[string]string{}
			if auth != "" {
				h["Authorization"] = auth
			}
			code, raw := f.callWith(rt[0], rt[1], `{"name":"x"}`, h)
			checkError(t, code, raw, 401, "unauthorized", fmt.Sprintf("%s %s with %q", rt[0], rt[1], auth))
		}
	}
	// the scheme is case-insensitive, as RFC 9110 says
	code, _ := f.callWith("GET", "/api/v1/tokens", "", map[string]string{"Authorization": "bearer " + testKey})
	if code != 200 {
		t.Fatalf("lowercase scheme: HTTP %d", code)
	}
	if n := len(f.enf.takeCalls()); n != 0 {
		t.Fatalf("unauthorized requests reached the enforcer %d times", n)
	}
	toks, _ := f.store.ListTokens(t.Context())
	if len(toks) != 0 {
		t.Fatalf("unauthorized POST created %d tokens", len(toks))
	}
	if !strings.Contains(f.logs.String(), "admin request refused") {
		t.Fatal("refused requests are not logged")
	}
}

func TestAuthChallengeHeader(t *testing.T) {
	f := newFixture(t)
	resp, err := f.srv.Client().Get(f.srv.URL + "/api/v1/tokens")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("HTTP %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// An empty key fails closed instead of opening the API.
func TestEmptyKeyRefusesEverything(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Key = "" })
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer  "} {
		code, raw := f.callWith("GET", "/api/v1/tokens", "", map[string]string{"Authorization": auth})
		checkError(t, code, raw, 401, "unauthorized", fmt.Sprintf("auth %q", auth))
	}
}

func TestProbesNeedNoKey(t *testing.T) {
	var mu sync.Mutex
	healthErr := error(nil)
	f := newFixture(t, func(c *Config) {
		c.Health = func() error { mu.Lock(); defer mu.Unlock(); return healthErr }
		c.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintln(w, "gatecast_connections 3")
		})
	})
	code, raw := f.callWith("GET", "/healthz", "", nil)
	if code != 200 || !strings.Contains(string(raw), `"ok"`) {
		t.Fatalf("healthz: HTTP %d %s", code, raw)
	}
	code, raw = f.callWith("GET", "/metrics", "", nil)
	if code != 200 || !strings.Contains(string(raw), "gatecast_connections 3") {
		t.Fatalf("metrics: HTTP %d %s", code, raw)
	}
	mu.Lock()
	healthErr = errors.New("store: open /secret/path/gatecast.db: disk I/O error")
	mu.Unlock()
	code, raw = f.callWith("GET", "/healthz", "", nil)
	checkError(t, code, raw, 503, "unavailable", "unhealthy healthz")
	if strings.Contains(string(raw), "/secret/path") || strings.Contains(string(raw), "disk") {
		t.Fatalf("healthz leaks the cause to unauthenticated callers: %s", raw)
	}
	if !strings.Contains(f.logs.String(), "disk I/O error") {
		t.Fatal("the health failure's cause is not logged")
	}
	f.mustError(405, "method_not_allowed", "POST", "/healthz", `{}`)
}

func TestProbesDefaults(t *testing.T) {
	f := newFixture(t) // no Health, no Metrics
	code, _ := f.callWith("GET", "/healthz", "", nil)
	if code != 200 {
		t.Fatalf("healthz without a Health func: HTTP %d", code)
	}
	code, raw := f.callWith("GET", "/metrics", "", nil)
	checkError(t, code, raw, 404, "not_found", "metrics without a handler")
}

func TestTokenLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()

	// create: 201, the secret once, the store holds its hash
	var created Token
	raw := f.must(201, "POST", "/api/v1/tokens", `{"name":"fleet-a","max_connections":5}`, &created)
	if created.ID <= 0 || created.Name != "fleet-a" || created.MaxConnections != 5 || created.Disabled {
		t.Fatalf("created %+v", created)
	}
	if !strings.HasPrefix(created.Secret, acl.SecretPrefix) || len(created.Secret) < 40 {
		t.Fatalf("generated secret %q", created.Secret)
	}
	if time.Since(created.CreatedAt) > time.Minute || created.CreatedAt.Location() != time.UTC {
		t.Fatalf("created_at %v", created.CreatedAt)
	}
	stored, err := f.store.GetTokenByHash(ctx, acl.HashSecret([]byte(created.Secret)))
	if err != nil || stored.ID != created.ID {
		t.Fatalf("store lookup by the secret's hash: %+v %v", stored, err)
	}
	assertFields(t, raw, "id", "name", "max_connections", "disabled", "created_at", "weak_secret", "token")
	if calls := f.enf.takeCalls(); len(calls) != 0 {
		t.Fatalf("creating a token refreshed %v", calls)
	}

	// the secret never again: list, get
	raw = f.must(200, "GET", "/api/v1/tokens", "", nil)
	if strings.Contains(string(raw), created.Secret) || strings.Contains(string(raw), `"token"`) {
		t.Fatalf("list shows a secret: %s", raw)
	}
	var list []Token
	json.Unmarshal(raw, &list)
	if len(list) != 1 || list[0].ID != created.ID || list[0].Name != "fleet-a" {
		t.Fatalf("list %+v", list)
	}
	raw = f.must(200, "GET", fmt.Sprintf("/api/v1/tokens/%d", created.ID), "", nil)
	if strings.Contains(string(raw), created.Secret) {
		t.Fatalf("get shows the secret: %s", raw)
	}
	assertFields(t, raw, "id", "name", "max_connections", "disabled", "created_at", "weak_secret")

	// patch: the store changes, then that token is refreshed
	var patched Token
	f.must(200, "PATCH", fmt.Sprintf("/api/v1/tokens/%d", created.ID), `{"name":"fleet-b","max_connections":2,"disabled":true}`, &patched)
	if patched.Name != "fleet-b" || patched.MaxConnections != 2 || !patched.Disabled {
		t.Fatalf("patched %+v", patched)
	}
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{created.ID}}) {
		t.Fatalf("PATCH refreshed %v, want [[%d]]", calls, created.ID)
	}
	f.must(200, "PATCH", fmt.Sprintf("/api/v1/tokens/%d", created.ID), `{"disabled":false}`, &patched)
	if patched.Disabled || patched.Name != "fleet-b" || patched.MaxConnections != 2 {
		t.Fatalf("partial patch changed other fields: %+v", patched)
	}
	f.enf.takeCalls()

	// rotate: a new secret, the old one stops working
	var rotated Token
	f.must(200, "POST", fmt.Sprintf("/api/v1/tokens/%d/rotate", created.ID), "", &rotated)
	if rotated.Secret == "" || rotated.Secret == created.Secret || rotated.ID != created.ID {
		t.Fatalf("rotated %+v", rotated)
	}
	if _, err := f.store.GetTokenByHash(ctx, acl.HashSecret([]byte(created.Secret))); !errors.Is(err, acl.ErrNotFound) {
		t.Fatalf("old secret still found: %v", err)
	}
	if tok, err := f.store.GetTokenByHash(ctx, acl.HashSecret([]byte(rotated.Secret))); err != nil || tok.ID != created.ID {
		t.Fatalf("new secret: %+v %v", tok, err)
	}
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{created.ID}}) {
		t.Fatalf("rotate refreshed %v", calls)
	}
	raw = f.must(200, "GET", "/api/v1/tokens", "", nil)
	if strings.Contains(string(raw), rotated.Secret) {
		t.Fatal("list shows the rotated secret")
	}

	// delete: 204, refresh, then 404
	f.must(204, "DELETE", fmt.Sprintf("/api/v1/tokens/%d", created.ID), "", nil)
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{created.ID}}) {
		t.Fatalf("delete refreshed %v", calls)
	}
	f.mustError(404, "not_found", "GET", fmt.Sprintf("/api/v1/tokens/%d", created.ID), "")
	f.mustError(404, "not_found", "PATCH", fmt.Sprintf("/api/v1/tokens/%d", created.ID), `{"name":"x"}`)
	f.mustError(404, "not_found", "POST", fmt.Sprintf("/api/v1/tokens/%d/rotate", created.ID), "")
	f.mustError(404, "not_found", "GET", fmt.Sprintf("/api/v1/tokens/%d/permissions", created.ID), "")
	// deleting again is 404, yet still enforces: the retry after a failed
	// enforcement must close the deleted token's sessions
	f.enf.takeCalls()
	f.mustError(404, "not_found", "DELETE", fmt.Sprintf("/api/v1/tokens/%d", created.ID), "")
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{created.ID}}) {
		t.Fatalf("repeated delete refreshed %v", calls)
	}
	raw = f.must(200, "GET", "/api/v1/tokens", "", nil)
	if string(raw) != "[]\n" {
		t.Fatalf("empty list is %q, want []", raw)
	}
}

// assertFields checks the JSON object has exactly these keys.
func assertFields(t *testing.T, raw []byte, keys ...string) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Fatalf("fields %v, want %v in %s", got, keys, raw)
	}
}

func TestImportSecret(t *testing.T) {
	f := newFixture(t)
	const seedSecret = "3f7a9c1e5b2d4f6a8c0e1b3d5f7a9c1e5b2d4f6a" // a seed-style token
	var tok Token
	f.must(201, "POST", "/api/v1/tokens", `{"name":"imported","max_connections":3,"token":"`+seedSecret+`"}`, &tok)
	if tok.Secret != seedSecret {
		t.Fatalf("answer secret %q, want the imported one", tok.Secret)
	}
	stored, err := f.store.GetTokenByHash(t.Context(), acl.HashSecret([]byte(seedSecret)))
	if err != nil || stored.ID != tok.ID || stored.MaxConnections != 3 {
		t.Fatalf("store by hash of the imported secret: %+v %v", stored, err)
	}
	// the same secret twice: 409, without echoing it
	msg := f.mustError(409, "conflict", "POST", "/api/v1/tokens", `{"name":"again","token":"`+seedSecret+`"}`)
	if strings.Contains(msg, seedSecret) {
		t.Fatalf("conflict message echoes the secret: %q", msg)
	}
	for _, bad := range []string{"has space inside", "tab\there12345", "ünïcödé-secret", strings.Repeat("x", maxSecretLen+1)} {
		b, _ := json.Marshal(map[string]any{"name": "bad", "token": bad})
		msg := f.mustError(400, "invalid_value", "POST", "/api/v1/tokens", string(b))
		if strings.Contains(msg, bad) {
			t.Fatalf("error message echoes the secret %q: %q", bad, msg)
		}
	}
	if tok.WeakSecret || tok.Warning != "" {
		t.Fatalf("a strong imported secret is flagged weak: %+v", tok)
	}
	// A short secret (the seed's sample database holds 3-character ones)
	// is accepted and flagged weak, in every answer that shows the token.
	var weak Token
	f.must(201, "POST", "/api/v1/tokens", `{"name":"min","token":"x7q"}`, &weak)
	if !weak.WeakSecret || weak.Warning != WeakSecretWarning || weak.Secret != "x7q" {
		t.Fatalf("short imported secret: %+v", weak)
	}
	var got Token
	f.must(200, "GET", "/api/v1/tokens/"+id(weak.ID), "", &got)
	if !got.WeakSecret || got.Warning != WeakSecretWarning {
		t.Fatalf("GET of a weak token: %+v", got)
	}
	var list []Token
	f.must(200, "GET", "/api/v1/tokens", "", &list)
	if len(list) != 2 || list[0].WeakSecret || !list[1].WeakSecret {
		t.Fatalf("list: %+v", list)
	}
	var rotated Token
	f.must(200, "POST", "/api/v1/tokens/"+id(weak.ID)+"/rotate", "", &rotated)
	if rotated.WeakSecret || rotated.Warning != "" {
		t.Fatalf("a rotated token is still flagged weak: %+v", rotated)
	}
	var generated Token
	f.must(201, "POST", "/api/v1/tokens", `{"name":"gen"}`, &generated)
	if generated.WeakSecret {
		t.Fatalf("a generated secret is flagged weak: %+v", generated)
	}
	if strings.Contains(f.logs.String(), seedSecret) || strings.Contains(f.logs.String(), "x7q") {
		t.Fatalf("an imported secret reached the log:\n%s", f.logs.String())
	}
}

func TestTokenValidation(t *testing.T) {
	f := newFixture(t)
	for _, body := range []string{
		`{"name":"x","max_connections":-1}`,
		`{"name":"x","max_connections":1000000001}`,
		`{"name":"` + strings.Repeat("n", 201) + `"}`,
		`{"name":"tab\there"}`,
		`{"name":"nul\u0000"}`,
		`{"name":" padded "}`,
	} {
		f.mustError(400, "invalid_value", "POST", "/api/v1/tokens", body)
	}
	for _, body := range []string{
		`{"name":5}`, `{"max_connections":"5"}`, `{"max_connections":1.5}`, `{"max_connections":1e100}`,
		`{"name":"x","secret":"abcdefghij"}`, `{"name":"x"} {}`, `{"name":"x"}]`, `null`, `[]`, `"x"`, `{`, ``, `   `,
	} {
		f.mustError(400, "invalid_json", "POST", "/api/v1/tokens", body)
	}
	// an empty name is allowed (names are optional, as in the seed)
	f.must(201, "POST", "/api/v1/tokens", `{}`, nil)

	tok := f.createToken("t", 0)
	path := fmt.Sprintf("/api/v1/tokens/%d", tok.ID)
	f.mustError(400, "invalid_value", "PATCH", path, `{}`)
	f.mustError(400, "invalid_value", "PATCH", path, `{"max_connections":-3}`)
	f.mustError(400, "invalid_json", "PATCH", path, `{"disabled":"yes"}`)
	f.mustError(400, "invalid_json", "PATCH", path, `{"token":"abcdefghijkl"}`) // secrets change only by rotation
	f.mustError(400, "invalid_json", "PATCH", path, ``)
	if calls := f.enf.takeCalls(); len(calls) != 0 {
		t.Fatalf("refused writes refreshed %v", calls)
	}
}

func TestBadPathIDs(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"abc", "0", "-1", "1.5", "99999999999999999999", "0x10"} {
		f.mustError(400, "invalid_value", "GET", "/api/v1/tokens/"+p, "")
		f.mustError(400, "invalid_value", "DELETE", "/api/v1/tags/"+p, "")
		f.mustError(400, "invalid_value", "PUT", "/api/v1/tokens/1/permissions/"+p, `{"permission":"read"}`)
		f.mustError(400, "invalid_value", "DELETE", "/api/v1/connections/"+p, "")
	}
	f.mustError(404, "not_found", "GET", "/api/v1/tokens/424242", "")
	f.mustError(404, "not_found", "GET", "/api/v1/tags/424242", "")
}

func TestTags(t *testing.T) {
	f := newFixture(t)
	a := f.createTag("sensors/#")
	b := f.createTag("sensors/+/temp") // overlapping patterns are allowed
	if a.ID <= 0 || b.ID <= 0 || a.ID == b.ID || a.Pattern != "sensors/#" {
		t.Fatalf("tags %+v %+v", a, b)
	}
	f.mustError(409, "conflict", "POST", "/api/v1/tags", `{"pattern":"sensors/#"}`)
	for _, bad := range []string{`{"pattern":""}`, `{"pattern":"a/#/b"}`, `{"pattern":"a+"}`, `{}`} {
		f.mustError(400, "invalid_value", "POST", "/api/v1/tags", bad)
	}
	f.mustError(400, "invalid_json", "POST", "/api/v1/tags", `{"pattern":"a","id":3}`)

	var tags []Tag
	f.must(200, "GET", "/api/v1/tags", "", &tags)
	if !reflect.DeepEqual(tags, []Tag{a, b}) {
		t.Fatalf("list %+v", tags)
	}
	var got Tag
	raw := f.must(200, "GET", fmt.Sprintf("/api/v1/tags/%d", a.ID), "", &got)
	assertFields(t, raw, "id", "pattern")
	if got != a {
		t.Fatalf("get %+v", got)
	}
	if calls := f.enf.takeCalls(); len(calls) != 0 {
		t.Fatalf("creating tags refreshed %v", calls)
	}

	// a tag without permissions: edits refresh nobody
	f.must(200, "PATCH", fmt.Sprintf("/api/v1/tags/%d", b.ID), `{"pattern":"sensors/+/humidity"}`, &got)
	if got.Pattern != "sensors/+/humidity" {
		t.Fatalf("patched %+v", got)
	}
	if calls := f.enf.takeCalls(); len(calls) != 0 {
		t.Fatalf("editing an unused tag refreshed %v", calls)
	}
	f.mustError(409, "conflict", "PATCH", fmt.Sprintf("/api/v1/tags/%d", b.ID), `{"pattern":"sensors/#"}`)
	f.mustError(400, "invalid_value", "PATCH", fmt.Sprintf("/api/v1/tags/%d", b.ID), `{"pattern":"#/x"}`)
	f.mustError(404, "not_found", "PATCH", "/api/v1/tags/777", `{"pattern":"x"}`)
	f.mustError(404, "not_found", "DELETE", "/api/v1/tags/777", "")
	f.must(204, "DELETE", fmt.Sprintf("/api/v1/tags/%d", b.ID), "", nil)
	f.mustError(404, "not_found", "GET", fmt.Sprintf("/api/v1/tags/%d", b.ID), "")
}

// Editing or deleting a tag refreshes exactly the tokens holding it, and
// for a delete that set is read before the delete removes the permissions.
func TestTagWritesRefreshHolders(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	t1, t2, t3 := f.createToken("one", 0), f.createToken("two", 0), f.createToken("three", 0)
	tag := f.createTag("farm/#")
	other := f.createTag("other/#")
	f.must(200, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", t1.ID, tag.ID), `{"permission":"read"}`, nil)
	f.must(200, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", t3.ID, tag.ID), `{"permission":"readwrite"}`, nil)
	f.must(200, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", t2.ID, other.ID), `{"permission":"read"}`, nil)
	f.enf.takeCalls()

	// at enforcement time the store already holds the edit
	var seen []string
	f.enf.hook = func(ids []int64) {
		g, err := f.store.GetTag(ctx, tag.ID)
		if err != nil {
			seen = append(seen, "gone")
			return
		}
		seen = append(seen, g.Pattern)
	}
	f.must(200, "PATCH", fmt.Sprintf("/api/v1/tags/%d", tag.ID), `{"pattern":"farm/field7/#"}`, nil)
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{t1.ID, t3.ID}}) {
		t.Fatalf("tag PATCH refreshed %v, want [[%d %d]]", calls, t1.ID, t3.ID)
	}
	if !reflect.DeepEqual(seen, []string{"farm/field7/#"}) {
		t.Fatalf("the enforcer saw %v: the refresh ran before the write", seen)
	}

	// delete: the tokens are those that held the tag before the delete,
	// while at enforcement time the tag (and its permissions) are gone
	seen = nil
	var holdersAtRefresh [][]int64
	f.enf.hook = func(ids []int64) {
		_, err := f.store.GetTag(ctx, tag.ID)
		seen = append(seen, fmt.Sprint(errors.Is(err, acl.ErrNotFound)))
		for _, id := range ids {
			gs, _ := f.store.ListGrants(ctx, id)
			holdersAtRefresh = append(holdersAtRefresh, []int64{id, int64(len(gs))})
		}
	}
	f.must(204, "DELETE", fmt.Sprintf("/api/v1/tags/%d", tag.ID), "", nil)
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{t1.ID, t3.ID}}) {
		t.Fatalf("tag DELETE refreshed %v, want [[%d %d]]", calls, t1.ID, t3.ID)
	}
	if !reflect.DeepEqual(seen, []string{"true"}) {
		t.Fatalf("at refresh time tag deleted = %v", seen)
	}
	if !reflect.DeepEqual(holdersAtRefresh, [][]int64{{t1.ID, 0}, {t3.ID, 0}}) {
		t.Fatalf("grants at refresh time %v: the permissions should be gone already", holdersAtRefresh)
	}
	f.enf.hook = nil
	// t2's grant on the other tag is untouched
	var gs []Grant
	f.must(200, "GET", fmt.Sprintf("/api/v1/tokens/%d/permissions", t2.ID), "", &gs)
	if len(gs) != 1 || gs[0].TagID != other.ID {
		t.Fatalf("t2 grants %+v", gs)
	}
}

func TestPermissions(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken("dev", 0)
	a, b := f.createTag("b/#"), f.createTag("a/+")
	base := fmt.Sprintf("/api/v1/tokens/%d/permissions", tok.ID)

	var g Grant
	raw := f.must(200, "PUT", fmt.Sprintf("%s/%d", base, a.ID), `{"permission":"readwrite"}`, &g)
	assertFields(t, raw, "tag_id", "pattern", "permission")
	if g != (Grant{TagID: a.ID, Pattern: "b/#", Permission: "readwrite"}) {
		t.Fatalf("put %+v", g)
	}
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{tok.ID}}) {
		t.Fatalf("PUT refreshed %v", calls)
	}
	f.must(200, "PUT", fmt.Sprintf("%s/%d", base, b.ID), `{"permission":"read"}`, nil)
	// downgrade: replaces, refreshes, and the store holds read at refresh time
	var atRefresh []acl.Grant
	f.enf.hook = func([]int64) { atRefresh, _ = f.store.ListGrants(t.Context(), tok.ID) }
	f.enf.takeCalls()
	f.must(200, "PUT", fmt.Sprintf("%s/%d", base, a.ID), `{"permission":"read"}`, nil)
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{tok.ID}}) {
		t.Fatalf("downgrade refreshed %v", calls)
	}
	if len(atRefresh) != 2 || atRefresh[0].Permission != acl.PermRead {
		t.Fatalf("store at refresh time %+v", atRefresh)
	}
	f.enf.hook = nil

	var gs []Grant
	f.must(200, "GET", base, "", &gs)
	want := []Grant{{a.ID, "b/#", "read"}, {b.ID, "a/+", "read"}}
	if !reflect.DeepEqual(gs, want) {
		t.Fatalf("list %+v, want %+v", gs, want)
	}

	f.mustError(400, "invalid_value", "PUT", fmt.Sprintf("%s/%d", base, a.ID), `{"permission":"write"}`)
	f.mustError(400, "invalid_value", "PUT", fmt.Sprintf("%s/%d", base, a.ID), `{"permission":""}`)
	f.mustError(400, "invalid_json", "PUT", fmt.Sprintf("%s/%d", base, a.ID), `{"permission":1}`)
	f.mustError(400, "invalid_json", "PUT", fmt.Sprintf("%s/%d", base, a.ID), ``)
	f.mustError(404, "not_found", "PUT", fmt.Sprintf("%s/999", base), `{"permission":"read"}`)
	f.mustError(404, "not_found", "PUT", fmt.Sprintf("/api/v1/tokens/999/permissions/%d", a.ID), `{"permission":"read"}`)
	if calls := f.enf.takeCalls(); len(calls) != 0 {
		t.Fatalf("refused PUTs refreshed %v", calls)
	}

	f.must(204, "DELETE", fmt.Sprintf("%s/%d", base, a.ID), "", nil)
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{tok.ID}}) {
		t.Fatalf("DELETE refreshed %v", calls)
	}
	f.must(200, "GET", base, "", &gs)
	if !reflect.DeepEqual(gs, []Grant{{b.ID, "a/+", "read"}}) {
		t.Fatalf("after delete %+v", gs)
	}
	f.mustError(404, "not_found", "DELETE", fmt.Sprintf("%s/%d", base, a.ID), "")

	// a token without permissions lists []
	empty := f.createToken("empty", 0)
	raw = f.must(200, "GET", fmt.Sprintf("/api/v1/tokens/%d/permissions", empty.ID), "", nil)
	if string(raw) != "[]\n" {
		t.Fatalf("no permissions: %q", raw)
	}
}

// The refresh happens before anything of the answer is written.
func TestRefreshBeforeAnswer(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken("x", 0)
	tag := f.createTag("x/#")
	f.must(200, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), `{"permission":"read"}`, nil)

	var events []string
	w := &eventWriter{ResponseWriter: httptest.NewRecorder(), events: &events}
	f.enf.hook = func(ids []int64) { events = append(events, fmt.Sprint("refresh", ids)) }
	for _, rq := range []struct{ method, path, body string }{
		{"PATCH", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), `{"max_connections":1}`},
		{"PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), `{"permission":"readwrite"}`},
		{"PATCH", fmt.Sprintf("/api/v1/tags/%d", tag.ID), `{"pattern":"y/#"}`},
		{"POST", fmt.Sprintf("/api/v1/tokens/%d/rotate", tok.ID), ``},
		{"DELETE", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), ``},
		{"PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), `{"permission":"read"}`},
		{"DELETE", fmt.Sprintf("/api/v1/tags/%d", tag.ID), ``},
		{"DELETE", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), ``},
	} {
		events = events[:0]
		req := httptest.NewRequest(rq.method, rq.path, strings.NewReader(rq.body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		f.h.ServeHTTP(w, req)
		if len(events) != 2 || !strings.HasPrefix(events[0], "refresh") || !strings.HasPrefix(events[1], "answer 2") {
			t.Fatalf("%s %s: events %v, want a refresh then a 2xx answer", rq.method, rq.path, events)
		}
	}
}

type eventWriter struct {
	http.ResponseWriter
	events *[]string
}

func (e *eventWriter) WriteHeader(code int) {
	*e.events = append(*e.events, fmt.Sprint("answer ", code))
	e.ResponseWriter.WriteHeader(code)
}

func (e *eventWriter) Write(b []byte) (int, error) {
	return e.ResponseWriter.Write(b)
}

// When enforcement fails, the caller learns it (500) and that the write
// itself happened; no internals leak.
func TestRefreshFailure(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken("x", 0)
	f.enf.err = errors.New("acl/sqlite: reading token 1: database is locked")
	msg := f.mustError(500, "enforcement_failed", "PATCH", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), `{"disabled":true}`)
	if !strings.Contains(msg, "saved") || strings.Contains(msg, "locked") || strings.Contains(msg, "sqlite") {
		t.Fatalf("message %q", msg)
	}
	got, _ := f.store.GetToken(t.Context(), tok.ID)
	if !got.Disabled {
		t.Fatal("the store write did not happen")
	}
	if !strings.Contains(f.logs.String(), "database is locked") {
		t.Fatal("the enforcement failure's cause is not logged")
	}
	// a retried delete enforces again once the broker recovers
	f.mustError(500, "enforcement_failed", "DELETE", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), "")
	f.enf.err = nil
	f.enf.takeCalls()
	f.mustError(404, "not_found", "DELETE", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), "")
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{tok.ID}}) {
		t.Fatalf("retry refreshed %v", calls)
	}
}

// A failing store is a 503 (retry later) without its error text.
func TestStoreFault(t *testing.T) {
	f := newFixture(t)
	f.store.Close()
	for _, rq := range [][3]string{
		{"GET", "/api/v1/tokens", ""}, {"POST", "/api/v1/tokens", `{"name":"x"}`},
		{"GET", "/api/v1/tags", ""}, {"POST", "/api/v1/tags", `{"pattern":"x"}`},
	} {
		msg := f.mustError(503, "unavailable", rq[0], rq[1], rq[2])
		if strings.Contains(msg, "sql") || strings.Contains(msg, "closed") {
			t.Fatalf("%s %s leaks %q", rq[0], rq[1], msg)
		}
	}
	if !strings.Contains(f.logs.String(), "closed") {
		t.Fatalf("the store error is not logged:\n%s", f.logs.String())
	}
}

func TestConnections(t *testing.T) {
	f := newFixture(t)
	since := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.enf.conns = []broker.ConnectionInfo{
		{ID: 7, TokenID: 1, RemoteAddr: "127.0.0.1:5000", Protocol: "seed", Subscriptions: []string{"a/#"}, ConnectedAt: since},
		{ID: 9, TokenID: 2, RemoteAddr: "127.0.0.1:5001", Protocol: "seed", ConnectedAt: since},
	}
	f.enf.kickable[7] = true
	raw := f.must(200, "GET", "/api/v1/connections", "", nil)
	var all struct {
		Connections []map[string]any `json:"connections"`
		Total       int              `json:"total"`
		NextCursor  *string          `json:"next_cursor"`
	}
	json.Unmarshal(raw, &all)
	if len(all.Connections) != 2 || all.Total != 2 || all.NextCursor == nil || *all.NextCursor != "" ||
		all.Connections[0]["remote_addr"] != "127.0.0.1:5000" || all.Connections[0]["connected_since"] != "2025-03-01T12:00:00Z" {
		t.Fatalf("list %s", raw)
	}
	if _, ok := all.Connections[0]["node"]; ok {
		t.Fatalf("a single node's connections carry a node: %s", raw)
	}
	if subs, ok := all.Connections[1]["subscriptions"].([]any); !ok || len(subs) != 0 {
		t.Fatalf("no subscriptions must be [], got %s", raw)
	}
	var one ConnectionsPage
	f.must(200, "GET", "/api/v1/connections?token_id=2", "", &one)
	if len(one.Connections) != 1 || one.Connections[0].ID != 9 || one.Total != 1 {
		t.Fatalf("filtered %+v", one)
	}
	if f.enf.listed[len(f.enf.listed)-1] != 2 {
		t.Fatalf("enforcer asked for %v", f.enf.listed)
	}
	raw = f.must(200, "GET", "/api/v1/connections?token_id=3", "", nil)
	if string(raw) != `{"connections":[],"total":0,"next_cursor":""}`+"\n" {
		t.Fatalf("none: %q", raw)
	}
	for _, q := range []string{"x", "0", "-2", "1.0"} {
		f.mustError(400, "invalid_value", "GET", "/api/v1/connections?token_id="+q, "")
	}

	f.must(204, "DELETE", "/api/v1/connections/7", "", nil)
	if !reflect.DeepEqual(f.enf.kicked, []uint64{7}) {
		t.Fatalf("kicked %v", f.enf.kicked)
	}
	f.mustError(404, "not_found", "DELETE", "/api/v1/connections/7", "")
	f.mustError(404, "not_found", "DELETE", "/api/v1/connections/18446744073709551615", "")
	if !strings.Contains(f.logs.String(), "connection_id=7") {
		t.Fatal("the kick is not in the audit log")
	}
}

func TestErrorShapes(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken("x", 0)

	// 404 and 405 in JSON, with Allow
	f.mustError(404, "not_found", "GET", "/api/v1/nothing", "")
	f.mustError(404, "not_found", "GET", "/nothing", "")
	f.mustError(404, "not_found", "GET", "/api/v2/tokens", "")
	req, _ := http.NewRequest("PUT", f.srv.URL+"/api/v1/tokens", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || !strings.Contains(resp.Header.Get("Allow"), "POST") || !strings.Contains(resp.Header.Get("Allow"), "GET") {
		t.Fatalf("405: HTTP %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	f.mustError(405, "method_not_allowed", "PUT", "/api/v1/tokens", "")
	f.mustError(405, "method_not_allowed", "POST", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), `{}`)
	f.mustError(405, "method_not_allowed", "GET", fmt.Sprintf("/api/v1/tokens/%d/rotate", tok.ID), "")
	f.mustError(405, "method_not_allowed", "POST", "/api/v1/connections/1", "")

	// 413 for bodies over 1 MiB, without reading them all into a token
	big := `{"name":"` + strings.Repeat("a", maxBodyBytes) + `"}`
	f.mustError(413, "body_too_large", "POST", "/api/v1/tokens", big)
	// a body just under the cap is read (and refused for its content)
	f.mustError(400, "invalid_value", "POST", "/api/v1/tokens", `{"name":"`+strings.Repeat("a", maxBodyBytes-20)+`"}`)

	// 415 for a declared non-JSON body; no Content-Type is accepted
	code, raw := f.callWith("POST", "/api/v1/tags", `{"pattern":"p/#"}`, map[string]string{"Authorization": "Bearer " + testKey, "Content-Type": "text/plain"})
	checkError(t, code, raw, 415, "unsupported_media_type", "text/plain")
	code, raw = f.callWith("POST", "/api/v1/tags", `pattern=p`, map[string]string{"Authorization": "Bearer " + testKey, "Content-Type": "application/x-www-form-urlencoded"})
	checkError(t, code, raw, 415, "unsupported_media_type", "form")
	code, _ = f.callWith("POST", "/api/v1/tags", `{"pattern":"p/#"}`, map[string]string{"Authorization": "Bearer " + testKey, "Content-Type": "application/json; charset=utf-8"})
	if code != 201 {
		t.Fatalf("application/json; charset=utf-8: HTTP %d", code)
	}
	req, _ = http.NewRequest("POST", f.srv.URL+"/api/v1/tags", strings.NewReader(`{"pattern":"q/#"}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err = f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("no Content-Type: HTTP %d", resp.StatusCode)
	}
	// answers that may carry a secret are not cached
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}

	// unknown fields, named in the message
	msg := f.mustError(400, "invalid_json", "POST", "/api/v1/tags", `{"pattern":"a","colour":"red"}`)
	if !strings.Contains(msg, "colour") {
		t.Fatalf("unknown field message %q", msg)
	}
}

// Every write leaves one audit line with its route and ids, and no secret.
func TestAuditLog(t *testing.T) {
	f := newFixture(t)
	var tok Token
	f.must(201, "POST", "/api/v1/tokens", `{"name":"audited"}`, &tok)
	var imported Token
	f.must(201, "POST", "/api/v1/tokens", `{"name":"imp","token":"seed-secret-abcdef"}`, &imported)
	tag := f.createTag("audit/#")
	f.must(200, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), `{"permission":"read"}`, nil)
	var rotated Token
	f.must(200, "POST", fmt.Sprintf("/api/v1/tokens/%d/rotate", tok.ID), "", &rotated)
	f.must(204, "DELETE", fmt.Sprintf("/api/v1/tags/%d", tag.ID), "", nil)
	f.mustError(400, "invalid_json", "POST", "/api/v1/tokens", `{"token":"also-a-secret-123","bogus":1}`)

	logs := f.logs.String()
	for _, secret := range []string{tok.Secret, imported.Secret, rotated.Secret, "also-a-secret-123"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("secret %q in the log:\n%s", secret, logs)
		}
	}
	for _, want := range []string{
		fmt.Sprintf(`route="POST /api/v1/tokens" status=201 remote=127.0.0.1`),
		fmt.Sprintf("token_id=%d imported_secret=false", tok.ID),
		fmt.Sprintf("token_id=%d imported_secret=true", imported.ID),
		fmt.Sprintf(`route="PUT /api/v1/tokens/{id}/permissions/{tag_id}" status=200`),
		fmt.Sprintf("token_id=%d tag_id=%d permission=read refreshed_tokens=%d", tok.ID, tag.ID, tok.ID),
		fmt.Sprintf(`route="POST /api/v1/tokens/{id}/rotate" status=200`),
		fmt.Sprintf(`route="DELETE /api/v1/tags/{id}" status=204`),
		fmt.Sprintf("tag_id=%d refreshed_tokens=%d", tag.ID, tok.ID),
		`route="POST /api/v1/tokens" status=400`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	// reads are not audited
	before := strings.Count(logs, "admin write")
	f.must(200, "GET", "/api/v1/tokens", "", nil)
	if strings.Count(f.logs.String(), "admin write") != before {
		t.Fatal("a read was logged as a write")
	}
}

// Concurrent rights changes on one tag: every token granted on it before
// it disappears is refreshed by someone after its grant is gone.
func TestConcurrentGrantAndTagDelete(t *testing.T) {
	for round := 0; round < 10; round++ {
		f := newFixture(t)
		tag := f.createTag("race/#")
		toks := make([]Token, 6)
		for i := range toks {
			toks[i] = f.createToken(fmt.Sprint("t", i), 0)
		}
		var mu sync.Mutex
		granted := map[int64]bool{}    // grant committed (PUT returned 200)
		lastRefresh := map[int64]int{} // per token: grants the store held at its last refresh
		f.enf.hook = func(ids []int64) {
			for _, id := range ids {
				gs, _ := f.store.ListGrants(context.Background(), id)
				mu.Lock()
				lastRefresh[id] = len(gs)
				mu.Unlock()
			}
		}
		var wg sync.WaitGroup
		for _, tk := range toks {
			wg.Go(func() {
				code, _ := f.call("PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tk.ID, tag.ID), `{"permission":"read"}`)
				if code == 200 {
					mu.Lock()
					granted[tk.ID] = true
					mu.Unlock()
				}
			})
		}
		wg.Go(func() { f.call("DELETE", fmt.Sprintf("/api/v1/tags/%d", tag.ID), "") })
		wg.Wait()
		for id := range granted {
			if lastRefresh[id] != 0 {
				t.Fatalf("round %d: token %d was last refreshed while it still held the deleted tag", round, id)
			}
		}
	}
}

func TestNewHandlerNeedsStoreAndEnforcer(t *testing.T) {
	f := newFixture(t)
	for _, cfg := range []Config{{}, {Enforcer: &recEnforcer{}}, {Store: f.store}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("NewHandler(%+v) did not refuse", cfg)
				}
			}()
			NewHandler(cfg)
		}()
	}
}

// A caller that hangs up does not interrupt a rights change halfway: the
// enforcement runs with a context that is not canceled with the request.
func TestEnforcementOutlivesCaller(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken("x", 0)
	var refreshErr error
	refreshed := false
	f.enf.hook = func([]int64) { refreshed = true }
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := &ctxEnforcer{recEnforcer: f.enf, seen: &refreshErr}
	h := NewHandler(Config{Store: f.store, Enforcer: rec, Key: testKey})
	req := httptest.NewRequest("PATCH", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), strings.NewReader(`{"disabled":true}`)).WithContext(ctx)
	req.Header.Set("Authorization", "Bearer "+testKey)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 || !refreshed || refreshErr != nil {
		t.Fatalf("HTTP %d, refreshed %v, refresh context error %v", w.Code, refreshed, refreshErr)
	}
	if got, _ := f.store.GetToken(t.Context(), tok.ID); !got.Disabled {
		t.Fatal("the write did not happen")
	}
}

// ctxEnforcer records the context error RefreshTokens sees.
type ctxEnforcer struct {
	*recEnforcer
	seen *error
}

func (c *ctxEnforcer) RefreshTokens(ctx context.Context, ids ...int64) error {
	*c.seen = ctx.Err()
	return c.recEnforcer.RefreshTokens(ctx, ids...)
}

// In cluster mode every rights change runs inside the cluster-wide write
// lock (taken before the store is touched, released after enforcement);
// when the lock cannot be taken the write is refused with 503 and nothing
// is written.
func TestClusterWriteLock(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken("x", 0)
	var held, taken, released int
	var lockErr error
	f.enf.hook = func([]int64) {
		if held != 1 {
			t.Errorf("enforcement ran with the lock held %d times", held)
		}
	}
	h := NewHandler(Config{Store: f.store, Enforcer: f.enf, Key: testKey,
		WriteLock: func(ctx context.Context) (func(), error) {
			if lockErr != nil {
				return nil, lockErr
			}
			if _, ok := ctx.Deadline(); !ok {
				t.Error("lock wait has no deadline")
			}
			held++
			taken++
			return func() { held--; released++ }, nil
		}})
	patch := func(body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("PATCH", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	if w := patch(`{"max_connections":3}`); w.Code != 200 || taken != 1 || released != 1 || held != 0 {
		t.Fatalf("HTTP %d, lock taken %d released %d", w.Code, taken, released)
	}
	lockErr = errors.New("postgres: connection refused")
	w := patch(`{"disabled":true}`)
	if w.Code != 503 || !strings.Contains(w.Body.String(), `"unavailable"`) {
		t.Fatalf("HTTP %d %s, want 503 unavailable", w.Code, w.Body)
	}
	if got, _ := f.store.GetToken(t.Context(), tok.ID); got.Disabled {
		t.Fatal("the write happened without the cluster lock")
	}
}
