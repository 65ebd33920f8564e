package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatecast/gatecast/acl"
)

func aclQuery(limit int) acl.AuditQuery { return acl.AuditQuery{Limit: limit} }

// auditPage reads GET /api/v1/audit?query.
func (f *fixture) auditPage(query string) AuditPage {
	f.t.Helper()
	var p AuditPage
	f.must(200, "GET", "/api/v1/audit?"+query, "", &p)
	return p
}

// lastEntry is the newest entry of the audit log.
func (f *fixture) lastEntry() AuditEntry {
	f.t.Helper()
	p := f.auditPage("limit=1")
	if len(p.Entries) != 1 {
		f.t.Fatalf("audit log empty")
	}
	return p.Entries[0]
}

func detailOf(t *testing.T, e AuditEntry) map[string]any {
	t.Helper()
	m := map[string]any{}
	if len(e.Detail) > 0 {
		if err := json.Unmarshal(e.Detail, &m); err != nil {
			t.Fatalf("detail %s: %v", e.Detail, err)
		}
	}
	return m
}

// Every write through the API is an entry: action, target, status, the
// enforcement outcome, the credential and the client kind.
func TestAuditRecordsEveryWrite(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.NodeID = "node-x" })
	f.enf.kickable[7] = true
	before := time.Now()

	tok := f.createToken("dev", 2)
	e := f.lastEntry()
	if e.Action != "token.create" || e.TokenID != tok.ID || e.Status != 201 || e.Actor != "admin_key" || e.Source != "api" ||
		e.Node != "node-x" || e.Target != fmt.Sprintf("token %d", tok.ID) || e.Enforcement != "" || e.Remote == "" {
		t.Fatalf("token.create entry %+v", e)
	}
	if e.At.Before(before.Add(-time.Second)) || e.At.After(time.Now().Add(time.Second)) {
		t.Errorf("entry time %v", e.At)
	}
	if d := detailOf(t, e); d["imported_secret"] != false || d["weak_secret"] != false {
		t.Errorf("token.create detail %v", d)
	}
	tag := f.createTag("sensors/#")
	f.must(200, "PATCH", "/api/v1/tokens/"+id(tok.ID), `{"name":"dev2","max_connections":3}`, nil)
	e = f.lastEntry()
	if e.Action != "token.update" || e.TokenID != tok.ID || e.Status != 200 || e.Enforcement != "enforced" {
		t.Fatalf("token.update entry %+v", e)
	}
	if d := detailOf(t, e); d["fields"] != "name,max_connections" || d["refreshed_tokens"] != id(tok.ID) || d["enforce_ms"] == nil {
		t.Errorf("token.update detail %v", d)
	}
	f.must(200, "PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), `{"permission":"readwrite"}`, nil)
	e = f.lastEntry()
	if e.Action != "permission.set" || e.TokenID != tok.ID || e.TagID != tag.ID || e.Enforcement != "enforced" ||
		e.Target != fmt.Sprintf("token %d, tag %d", tok.ID, tag.ID) || detailOf(t, e)["permission"] != "readwrite" {
		t.Fatalf("permission.set entry %+v", e)
	}
	f.must(200, "PATCH", "/api/v1/tags/"+id(tag.ID), `{"pattern":"sensors/+/temp"}`, nil)
	if e = f.lastEntry(); e.Action != "tag.update" || e.TagID != tag.ID || e.Enforcement != "enforced" {
		t.Fatalf("tag.update entry %+v", e)
	}
	f.must(204, "DELETE", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), "", nil)
	if e = f.lastEntry(); e.Action != "permission.delete" || e.Status != 204 || e.TokenID != tok.ID || e.TagID != tag.ID {
		t.Fatalf("permission.delete entry %+v", e)
	}
	// A tag no token holds: nothing to enforce.
	f.must(204, "DELETE", "/api/v1/tags/"+id(tag.ID), "", nil)
	if e = f.lastEntry(); e.Action != "tag.delete" || e.Enforcement != "none" {
		t.Fatalf("tag.delete entry %+v", e)
	}
	f.must(204, "DELETE", "/api/v1/connections/7", "", nil)
	if e = f.lastEntry(); e.Action != "connection.kick" || e.Target != "connection 7" || e.Status != 204 {
		t.Fatalf("connection.kick entry %+v", e)
	}
	var rotated Token
	f.must(200, "POST", "/api/v1/tokens/"+id(tok.ID)+"/rotate", "", &rotated)
	if e = f.lastEntry(); e.Action != "token.rotate" || e.TokenID != tok.ID || e.Enforcement != "enforced" {
		t.Fatalf("token.rotate entry %+v", e)
	}
	f.must(204, "DELETE", "/api/v1/tokens/"+id(tok.ID), "", nil)
	if e = f.lastEntry(); e.Action != "token.delete" || e.Status != 204 {
		t.Fatalf("token.delete entry %+v", e)
	}

	// Refused writes are recorded with their status; a request without the
	// key is not (it is no credential's write, and anyone could flood it).
	f.mustError(400, "invalid_value", "POST", "/api/v1/tokens", `{"name":"x","max_connections":-1}`)
	if e = f.lastEntry(); e.Action != "token.create" || e.Status != 400 {
		t.Fatalf("refused write entry %+v", e)
	}
	f.mustError(404, "not_found", "PATCH", "/api/v1/tokens/999", `{"name":"x"}`)
	if e = f.lastEntry(); e.Action != "token.update" || e.Status != 404 || e.TokenID != 999 {
		t.Fatalf("404 write entry %+v", e)
	}
	n := len(f.auditPage("limit=1000").Entries)
	code, _ := f.callWith("POST", "/api/v1/tags", `{"pattern":"a/#"}`, map[string]string{"Authorization": "Bearer wrong"})
	if code != 401 {
		t.Fatalf("wrong key: %d", code)
	}
	f.callWith("POST", "/api/v1/nope", `{}`, map[string]string{"Authorization": "Bearer " + testKey})
	if got := len(f.auditPage("limit=1000").Entries); got != n {
		t.Fatalf("an unauthorized write or an unknown route was recorded: %d entries, want %d", got, n)
	}
	// Reads are not recorded.
	f.must(200, "GET", "/api/v1/tokens", "", nil)
	if got := len(f.auditPage("limit=1000").Entries); got != n {
		t.Fatalf("a read was recorded")
	}
}

// Secrets — generated, imported, rotated — and the admin key never reach
// the audit log, in the API's answer or in the store.
func TestAuditNeverHoldsSecrets(t *testing.T) {
	f := newFixture(t)
	var gen, imp, rot Token
	f.must(201, "POST", "/api/v1/tokens", `{"name":"g"}`, &gen)
	f.must(201, "POST", "/api/v1/tokens", `{"name":"i","token":"imported-seed-secret-7Yq"}`, &imp)
	f.must(200, "POST", "/api/v1/tokens/"+id(gen.ID)+"/rotate", "", &rot)
	// a client that puts the key in its User-Agent
	f.callWith("POST", "/api/v1/tags", `{"pattern":"x/#"}`, map[string]string{"Authorization": "Bearer " + testKey,
		"Content-Type": "application/json", "User-Agent": "leaky " + testKey})
	_, raw := f.call("GET", "/api/v1/audit?limit=1000", "")
	entries, err := f.store.ListAudit(t.Context(), aclQuery(1000))
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := json.Marshal(entries)
	for _, s := range []string{gen.Secret, imp.Secret, rot.Secret, testKey} {
		if strings.Contains(string(raw), s) || strings.Contains(string(stored), s) {
			t.Errorf("the audit log holds %q:\n%s", s, raw)
		}
	}
	if !strings.Contains(string(raw), "[redacted: held the admin key]") {
		t.Errorf("the leaky User-Agent was not redacted:\n%s", raw)
	}
	if d := detailOf(t, f.auditPage("action=token.create&limit=1").Entries[0]); d["imported_secret"] != true {
		t.Errorf("import entry detail %v", d)
	}
}

// The CLI is told apart from other clients by its User-Agent.
func TestAuditSourceOfCLI(t *testing.T) {
	f := newFixture(t)
	f.cli("tag", "create", "cli/#")
	e := f.lastEntry()
	if e.Source != "cli" || e.Actor != "admin_key" || !strings.HasPrefix(e.Client, "gatecast-cli") || e.Action != "tag.create" {
		t.Fatalf("CLI write entry %+v", e)
	}
	if _, err := f.client().CreateTag(t.Context(), "go/#"); err != nil {
		t.Fatal(err)
	}
	if e := f.lastEntry(); e.Source != "api" || e.Client != "gatecast-client" {
		t.Fatalf("Go client entry %+v", e)
	}
	f.callWith("POST", "/api/v1/tags", `{"pattern":"peer/#"}`, map[string]string{"Authorization": "Bearer " + testKey,
		"User-Agent": peerUserAgent + "/node-b"})
	if e := f.lastEntry(); e.Source != "peer" {
		t.Fatalf("peer entry %+v", e)
	}
}

func TestAuditOutcomes(t *testing.T) {
	t.Run("unconfirmed", func(t *testing.T) {
		f := newFixture(t)
		tok := f.createToken("u", 0)
		f.enf.err = &PendingError{Nodes: []string{"node-b", "node-c"}}
		code, _ := f.call("PATCH", "/api/v1/tokens/"+id(tok.ID), `{"disabled":true}`)
		if code != 202 {
			t.Fatalf("HTTP %d", code)
		}
		e := f.lastEntry()
		if e.Status != 202 || e.Enforcement != "unconfirmed" || detailOf(t, e)["unconfirmed_nodes"] != "node-b,node-c" {
			t.Fatalf("entry %+v", e)
		}
	})
	t.Run("failed", func(t *testing.T) {
		f := newFixture(t)
		tok := f.createToken("x", 0)
		f.enf.err = errors.New("broker on fire")
		f.mustError(500, "enforcement_failed", "DELETE", "/api/v1/tokens/"+id(tok.ID), "")
		e := f.lastEntry()
		if e.Status != 500 || e.Enforcement != "failed" || strings.Contains(string(e.Detail), "fire") {
			t.Fatalf("entry %+v", e)
		}
	})
	t.Run("pending then completed", func(t *testing.T) {
		var blk *blockingEnforcer
		f := newFixture(t, func(c *Config) {
			blk = newBlockingEnforcer(c.Enforcer.(*recEnforcer))
			c.Enforcer = blk
			c.EnforceDeadline = time.Millisecond
		})
		tok := f.createToken("slow", 0)
		if code, raw := f.call("PATCH", "/api/v1/tokens/"+id(tok.ID), `{"disabled":true}`); code != 202 {
			close(blk.release)
			t.Fatalf("HTTP %d %s", code, raw)
		}
		e := f.lastEntry()
		if e.Status != 202 || e.Enforcement != "pending" || e.Action != "token.update" {
			close(blk.release)
			t.Fatalf("entry %+v", e)
		}
		close(blk.release)
		var late AuditEntry
		deadline := time.Now().Add(10 * time.Second)
		for {
			if late = f.lastEntry(); late.Action == "enforcement.completed" || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if late.Action != "enforcement.completed" || late.Enforcement != "enforced" || late.Target != fmt.Sprintf("entry %d", e.ID) ||
			late.TokenID != tok.ID || late.Source != "server" {
			t.Fatalf("late entry %+v (request entry %d)", late, e.ID)
		}
		if d := detailOf(t, late); d["request_action"] != "token.update" {
			t.Errorf("late detail %v", d)
		}
	})
}

// GET /api/v1/audit pages newest first by cursor, filters, and refuses
// what it does not understand.
func TestAuditListing(t *testing.T) {
	f := newFixture(t)
	a := f.createToken("a", 0)
	b := f.createToken("b", 0)
	for i := range 3 {
		f.must(200, "PATCH", "/api/v1/tokens/"+id(a.ID), fmt.Sprintf(`{"max_connections":%d}`, i+1), nil)
	}
	f.createTag("t/#")
	f.must(200, "PATCH", "/api/v1/tokens/"+id(b.ID), `{"name":"bb"}`, nil)
	// 7 entries: create a, create b, 3 updates of a, create tag, update b.
	all := f.auditPage("limit=1000").Entries
	if len(all) != 7 {
		t.Fatalf("%d entries, want 7", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID >= all[i-1].ID {
			t.Fatalf("not newest first: %d then %d", all[i-1].ID, all[i].ID)
		}
	}
	var seen []int64
	p := f.auditPage("limit=3")
	pages := 1
	for {
		for _, e := range p.Entries {
			seen = append(seen, e.ID)
		}
		if p.NextCursor == "" {
			break
		}
		p = f.auditPage("limit=3&cursor=" + url.QueryEscape(p.NextCursor))
		pages++
	}
	if pages != 3 || len(seen) != 7 || seen[0] != all[0].ID || seen[6] != all[6].ID {
		t.Fatalf("paging: %d pages, ids %v", pages, seen)
	}
	if p := f.auditPage("limit=7"); p.NextCursor != "" || len(p.Entries) != 7 {
		t.Fatalf("an exact page has a next cursor: %+v", p)
	}

	byToken := f.auditPage("token_id=" + id(a.ID)).Entries
	if len(byToken) != 4 {
		t.Fatalf("entries of token a: %d, want 4", len(byToken))
	}
	if got := f.auditPage("action=token.").Entries; len(got) != 6 {
		t.Fatalf("action=token.: %d entries, want 6", len(got))
	}
	if got := f.auditPage("action=token.update&token_id=" + id(a.ID)).Entries; len(got) != 3 {
		t.Fatalf("updates of a: %d", len(got))
	}
	if got := f.auditPage("actor=admin_key&source=api").Entries; len(got) != 7 {
		t.Fatalf("actor and source: %d", len(got))
	}
	since := url.QueryEscape(all[2].At.Format(time.RFC3339Nano))
	if got := f.auditPage("since=" + since).Entries; len(got) < 3 {
		t.Fatalf("since: %d entries", len(got))
	}
	if got := f.auditPage("until=2000-01-01T00:00:00Z").Entries; len(got) != 0 {
		t.Fatalf("until 2000: %d entries", len(got))
	}
	// A filtered page's cursor goes with its filters only.
	p = f.auditPage("limit=2&token_id=" + id(a.ID))
	if p.NextCursor == "" {
		t.Fatal("no cursor")
	}
	f.mustError(400, "invalid_value", "GET", "/api/v1/audit?limit=2&cursor="+url.QueryEscape(p.NextCursor), "")
	next := f.auditPage("limit=2&token_id=" + id(a.ID) + "&cursor=" + url.QueryEscape(p.NextCursor))
	if len(next.Entries) != 2 || next.NextCursor != "" {
		t.Fatalf("second filtered page %+v", next)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "token_id=0", "tag_id=-1", "since=yesterday",
		"cursor=bogus", "cursor=a1.eyJ9", "page=2", "offset=3", "action=" + url.QueryEscape("bad\xff")} {
		f.mustError(400, "invalid_value", "GET", "/api/v1/audit?"+q, "")
	}
	f.mustError(405, "method_not_allowed", "POST", "/api/v1/audit", "{}")
	if code, _ := f.callWith("GET", "/api/v1/audit", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("audit without the key: %d", code)
	}
}

func TestCLIAudit(t *testing.T) {
	f := newFixture(t)
	f.cli("token", "create", "--name", "dev")
	f.cli("grant", "dev", "sensors/#", "read")
	f.cli("token", "update", "dev", "--max-connections", "4")
	out := f.cli("audit")
	for _, want := range []string{"ID", "ENFORCEMENT", "token.create", "tag.create", "permission.set", "token.update", "enforced", "cli"} {
		if !strings.Contains(out, want) {
			t.Errorf("gatecast audit lacks %q:\n%s", want, out)
		}
	}
	var es []AuditEntry
	if err := json.Unmarshal([]byte(f.cli("audit", "--json", "--token", "dev", "--action", "token.")), &es); err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Action != "token.update" || es[1].Action != "token.create" {
		t.Fatalf("audit --token dev --action token.: %+v", es)
	}
	if err := json.Unmarshal([]byte(f.cli("audit", "--json", "--limit", "1", "--since", "1h")), &es); err != nil || len(es) != 1 {
		t.Fatalf("audit --limit 1: %+v %v", es, err)
	}
	if err := json.Unmarshal([]byte(f.cli("audit", "--json", "--tag", "sensors/#")), &es); err != nil || len(es) != 2 {
		t.Fatalf("audit --tag: %+v %v", es, err)
	}
	f.cliFail(2, "audit", "--since", "last tuesday")
	f.cliFail(2, "audit", "--limit", "-1")
	f.cliFail(2, "audit", "extra")
	if out := f.cli("help", "audit"); !strings.Contains(out, "--since TIME") {
		t.Errorf("help audit: %s", out)
	}
}
