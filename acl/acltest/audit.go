package acltest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatecast/gatecast/acl"
)

// testWeakSecretFlag: the flag is stored, read back by every read, counted,
// left alone by UpdateToken and cleared by a rotation.
func testWeakSecretFlag(t *testing.T, s acl.Store) {
	if n, err := s.CountWeakSecrets(bg); err != nil || n != 0 {
		t.Fatalf("CountWeakSecrets on an empty store = %d, %v", n, err)
	}
	weak, err := s.CreateTokenWith(bg, acl.NewToken{Name: "legacy", MaxConnections: 2, Hash: hash("weak"), WeakSecret: true})
	if err != nil {
		t.Fatal(err)
	}
	if !weak.WeakSecret || weak.Name != "legacy" || weak.MaxConnections != 2 || weak.Hash != hash("weak") || weak.ID <= 0 {
		t.Fatalf("CreateTokenWith returned %+v", weak)
	}
	strong := mustToken(t, s, "strong", 0)
	if strong.WeakSecret {
		t.Fatalf("CreateToken made a weak token: %+v", strong)
	}
	plain, err := s.CreateTokenWith(bg, acl.NewToken{Name: "plain", Hash: hash("plain")})
	if err != nil || plain.WeakSecret {
		t.Fatalf("CreateTokenWith without the flag = %+v, %v", plain, err)
	}
	got, err := s.GetToken(bg, weak.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "GetToken of a weak token", got, weak)
	got, err = s.GetTokenByHash(bg, weak.Hash)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "GetTokenByHash of a weak token", got, weak)
	ts, err := s.ListTokens(bg)
	if err != nil || len(ts) != 3 || !ts[0].WeakSecret || ts[1].WeakSecret || ts[2].WeakSecret {
		t.Fatalf("ListTokens = %+v, %v; want the first weak only", ts, err)
	}
	if n, err := s.CountWeakSecrets(bg); err != nil || n != 1 {
		t.Fatalf("CountWeakSecrets = %d, %v; want 1", n, err)
	}
	name, limit, off := "renamed", 5, true
	upd, err := s.UpdateToken(bg, weak.ID, acl.TokenUpdate{Name: &name, MaxConnections: &limit, Disabled: &off})
	if err != nil || !upd.WeakSecret {
		t.Fatalf("UpdateToken of a weak token = %+v, %v; want it still weak", upd, err)
	}
	rot, err := s.SetTokenHash(bg, weak.ID, hash("rotated"))
	if err != nil || rot.WeakSecret {
		t.Fatalf("SetTokenHash = %+v, %v; want the flag cleared", rot, err)
	}
	got, err = s.GetToken(bg, weak.ID)
	if err != nil || got.WeakSecret {
		t.Fatalf("GetToken after rotation = %+v, %v; want not weak", got, err)
	}
	if n, err := s.CountWeakSecrets(bg); err != nil || n != 0 {
		t.Fatalf("CountWeakSecrets after rotation = %d, %v; want 0", n, err)
	}
	// A deleted weak token is not counted.
	w2, err := s.CreateTokenWith(bg, acl.NewToken{Hash: hash("weak2"), WeakSecret: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteToken(bg, w2.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountWeakSecrets(bg); err != nil || n != 0 {
		t.Fatalf("CountWeakSecrets after delete = %d, %v; want 0", n, err)
	}
	// CreateTokenWith validates as CreateToken does.
	for _, bad := range []acl.NewToken{
		{Name: strings.Repeat("x", acl.MaxTokenNameLen+1), Hash: hash("b1")},
		{MaxConnections: -1, Hash: hash("b2")},
		{},
		{Hash: hash("b3"), Origin: &acl.Origin{Source: "", ID: 1}},
		{Hash: hash("b4"), Origin: &acl.Origin{Source: "seed", ID: 0}},
		{Hash: hash("b5"), Origin: &acl.Origin{Source: "se ed", ID: 1}},
	} {
		_, err := s.CreateTokenWith(bg, bad)
		wantErr(t, fmt.Sprintf("CreateTokenWith(%.40v)", bad), err, acl.ErrInvalid)
	}
	_, err = s.CreateTokenWith(bg, acl.NewToken{Hash: strong.Hash})
	wantErr(t, "CreateTokenWith of a hash in use", err, acl.ErrConflict)
}

// testCreateTokenWithOrigin: import records are written with their token,
// listed per source, refused twice, and outlive the token.
func testCreateTokenWithOrigin(t *testing.T, s acl.Store) {
	if ims, err := s.ListImported(bg, "seed"); err != nil || ims == nil || len(ims) != 0 {
		t.Fatalf("ListImported on an empty store = %v, %v; want an empty non-nil slice", ims, err)
	}
	before := time.Now()
	b, err := s.CreateTokenWith(bg, acl.NewToken{Name: "b", Hash: hash("o2"), Origin: &acl.Origin{Source: "seed", ID: 20}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.CreateTokenWith(bg, acl.NewToken{Name: "a", Hash: hash("o1"), WeakSecret: true, Origin: &acl.Origin{Source: "seed", ID: 3}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.CreateTokenWith(bg, acl.NewToken{Name: "o", Hash: hash("o3"), Origin: &acl.Origin{Source: "other-system", ID: 3}})
	if err != nil {
		t.Fatal(err)
	}
	ims, err := s.ListImported(bg, "seed")
	if err != nil {
		t.Fatal(err)
	}
	if len(ims) != 2 || ims[0].ID != 3 || ims[0].TokenID != a.ID || ims[1].ID != 20 || ims[1].TokenID != b.ID ||
		ims[0].Source != "seed" || ims[1].Source != "seed" {
		t.Fatalf("ListImported(seed) = %+v; want seed 3 → %d, seed 20 → %d", ims, a.ID, b.ID)
	}
	for _, im := range ims {
		if im.ImportedAt.Before(before.Add(-time.Minute)) || im.ImportedAt.After(time.Now().Add(time.Minute)) {
			t.Errorf("ImportedAt %v is not about now", im.ImportedAt)
		}
	}
	if ims, _ := s.ListImported(bg, "other-system"); len(ims) != 1 || ims[0].TokenID != other.ID {
		t.Fatalf("ListImported(other-system) = %+v", ims)
	}

	// The same origin again is a conflict and writes nothing, token included.
	_, err = s.CreateTokenWith(bg, acl.NewToken{Name: "again", Hash: hash("o4"), Origin: &acl.Origin{Source: "seed", ID: 3}})
	wantErr(t, "CreateTokenWith of an origin imported before", err, acl.ErrConflict)
	_, err = s.GetTokenByHash(bg, hash("o4"))
	wantErr(t, "the token of a refused origin", err, acl.ErrNotFound)
	// A hash in use with a new origin: conflict, and the origin is not recorded.
	_, err = s.CreateTokenWith(bg, acl.NewToken{Name: "dup", Hash: hash("o1"), Origin: &acl.Origin{Source: "seed", ID: 99}})
	wantErr(t, "CreateTokenWith of a hash in use", err, acl.ErrConflict)
	if ims, _ := s.ListImported(bg, "seed"); len(ims) != 2 {
		t.Fatalf("a refused token left an import record: %+v", ims)
	}
	if ts, _ := s.ListTokens(bg); len(ts) != 3 {
		t.Fatalf("tokens after refused imports: %+v", ts)
	}

	// The record outlives its token.
	if err := s.DeleteToken(bg, a.ID); err != nil {
		t.Fatal(err)
	}
	ims, err = s.ListImported(bg, "seed")
	if err != nil || len(ims) != 2 || ims[0].TokenID != a.ID {
		t.Fatalf("ListImported after deleting the token = %+v, %v; want the record kept", ims, err)
	}
	_, err = s.CreateTokenWith(bg, acl.NewToken{Name: "resurrected", Hash: hash("o1"), Origin: &acl.Origin{Source: "seed", ID: 3}})
	wantErr(t, "re-importing a deleted token's origin", err, acl.ErrConflict)
}

func sameEntry(t *testing.T, what string, got, want acl.AuditEntry) {
	t.Helper()
	if got.ID != want.ID || !got.At.Equal(want.At) || got.Actor != want.Actor || got.Source != want.Source ||
		got.Client != want.Client || got.Remote != want.Remote || got.Node != want.Node || got.Action != want.Action ||
		got.TokenID != want.TokenID || got.TagID != want.TagID || got.Target != want.Target ||
		got.Status != want.Status || got.Enforcement != want.Enforcement || got.Detail != want.Detail {
		t.Errorf("%s: got %+v, want %+v", what, got, want)
	}
}

// testAuditAppendList: entries come back as written, newest first, with
// growing IDs and microsecond times; BeforeID and Limit page them.
func testAuditAppendList(t *testing.T, s acl.Store) {
	if es, err := s.ListAudit(bg, acl.AuditQuery{Limit: 10}); err != nil || es == nil || len(es) != 0 {
		t.Fatalf("ListAudit on an empty store = %v, %v; want an empty non-nil slice", es, err)
	}
	at := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	full := acl.AuditEntry{
		At: at, Actor: "admin_key", Source: "cli", Client: "gatecast-cli", Remote: "127.0.0.1:5000", Node: "node-a",
		Action: "token.update", TokenID: 7, TagID: 9, Target: "token 7", Status: 200, Enforcement: "enforced",
		Detail: `{"fields":"name","refreshed_tokens":[7]}`,
	}
	e1, err := s.AppendAudit(bg, full)
	if err != nil {
		t.Fatal(err)
	}
	if e1.ID <= 0 || !e1.At.Equal(at.Truncate(time.Microsecond)) {
		t.Fatalf("AppendAudit returned %+v; want an ID and the time to the microsecond", e1)
	}
	want1 := full
	want1.ID, want1.At = e1.ID, at.Truncate(time.Microsecond)
	sameEntry(t, "AppendAudit's answer", e1, want1)

	before := time.Now()
	e2, err := s.AppendAudit(bg, acl.AuditEntry{Actor: "import", Source: "import", Action: "import.seed", Status: 200})
	if err != nil {
		t.Fatal(err)
	}
	if e2.ID <= e1.ID {
		t.Fatalf("second entry ID %d not after %d", e2.ID, e1.ID)
	}
	if e2.At.Before(before.Add(-time.Minute)) || e2.At.After(time.Now().Add(time.Minute)) || e2.At.Truncate(time.Microsecond) != e2.At {
		t.Fatalf("a zero At became %v; want now, to the microsecond", e2.At)
	}
	e3, err := s.AppendAudit(bg, acl.AuditEntry{Actor: "admin_key", Source: "api", Action: "tag.create", TagID: 9, Status: 201})
	if err != nil {
		t.Fatal(err)
	}

	es, err := s.ListAudit(bg, acl.AuditQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 {
		t.Fatalf("ListAudit: %d entries, want 3", len(es))
	}
	sameEntry(t, "newest", es[0], e3)
	sameEntry(t, "middle", es[1], e2)
	sameEntry(t, "oldest", es[2], want1)

	page, err := s.ListAudit(bg, acl.AuditQuery{Limit: 2})
	if err != nil || len(page) != 2 || page[0].ID != e3.ID || page[1].ID != e2.ID {
		t.Fatalf("first page of 2 = %+v, %v", page, err)
	}
	page, err = s.ListAudit(bg, acl.AuditQuery{Limit: 2, BeforeID: page[1].ID})
	if err != nil || len(page) != 1 || page[0].ID != e1.ID {
		t.Fatalf("second page = %+v, %v", page, err)
	}
	page, err = s.ListAudit(bg, acl.AuditQuery{Limit: 2, BeforeID: e1.ID})
	if err != nil || len(page) != 0 {
		t.Fatalf("past the oldest = %+v, %v", page, err)
	}
	// Entries are not tied to rows: deleting the token or tag they name
	// changes nothing.
	tok := mustToken(t, s, "audited", 0)
	if _, err := s.AppendAudit(bg, acl.AuditEntry{Action: "token.delete", TokenID: tok.ID, Status: 204}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteToken(bg, tok.ID); err != nil {
		t.Fatal(err)
	}
	if es, err := s.ListAudit(bg, acl.AuditQuery{Limit: 10, TokenID: tok.ID}); err != nil || len(es) != 1 {
		t.Fatalf("entry of a deleted token = %+v, %v", es, err)
	}
}

func testAuditFilters(t *testing.T, s acl.Store) {
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	type spec struct {
		actor, source, action string
		token, tag            int64
	}
	specs := []spec{
		{"admin_key", "cli", "token.create", 1, 0},
		{"admin_key", "api", "token.update", 1, 0},
		{"import", "import", "token.create", 2, 0},
		{"admin_key", "cli", "tag.create", 0, 5},
		{"admin_key", "cli", "permission.set", 2, 5},
		{"console:abc", "console", "token.delete", 1, 0},
		{"admin_key", "api", "publish", 0, 0},
		{"admin_key", "api", "tokenish.x", 0, 0},
		{"admin_key", "api", "to%en.create", 0, 0},
	}
	ids := make([]int64, len(specs))
	for i, sp := range specs {
		e, err := s.AppendAudit(bg, acl.AuditEntry{At: base.Add(time.Duration(i) * time.Hour), Actor: sp.actor, Source: sp.source,
			Action: sp.action, TokenID: sp.token, TagID: sp.tag, Status: 200})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = e.ID
	}
	pick := func(idx ...int) []int64 {
		out := make([]int64, 0, len(idx))
		for i := len(idx) - 1; i >= 0; i-- { // newest first
			out = append(out, ids[idx[i]])
		}
		return out
	}
	cases := []struct {
		name string
		q    acl.AuditQuery
		want []int64
	}{
		{"actor", acl.AuditQuery{Actor: "import"}, pick(2)},
		{"source", acl.AuditQuery{Source: "cli"}, pick(0, 3, 4)},
		{"action exact", acl.AuditQuery{Action: "token.create"}, pick(0, 2)},
		{"action prefix", acl.AuditQuery{Action: "token."}, pick(0, 1, 2, 5)},
		{"action prefix is literal", acl.AuditQuery{Action: "to%en."}, pick(8)},
		{"action prefix needs the dot", acl.AuditQuery{Action: "token"}, pick()},
		{"token", acl.AuditQuery{TokenID: 1}, pick(0, 1, 5)},
		{"tag", acl.AuditQuery{TagID: 5}, pick(3, 4)},
		{"token and tag", acl.AuditQuery{TokenID: 2, TagID: 5}, pick(4)},
		{"since", acl.AuditQuery{Since: base.Add(6 * time.Hour)}, pick(6, 7, 8)},
		{"until", acl.AuditQuery{Until: base.Add(2 * time.Hour)}, pick(0, 1)},
		{"since and until", acl.AuditQuery{Since: base.Add(time.Hour), Until: base.Add(3 * time.Hour)}, pick(1, 2)},
		{"combined", acl.AuditQuery{Actor: "admin_key", Action: "token.", TokenID: 1}, pick(0, 1)},
		{"before and filter", acl.AuditQuery{Action: "token.", BeforeID: ids[2]}, pick(0, 1)},
		{"nothing", acl.AuditQuery{Actor: "nobody"}, pick()},
	}
	for _, c := range cases {
		c.q.Limit = 100
		es, err := s.ListAudit(bg, c.q)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		got := make([]int64, len(es))
		for i, e := range es {
			got[i] = e.ID
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: ids %v, want %v", c.name, got, c.want)
		}
	}
	es, err := s.ListAudit(bg, acl.AuditQuery{Source: "cli", Limit: 2})
	if err != nil || len(es) != 2 || es[0].ID != ids[4] || es[1].ID != ids[3] {
		t.Errorf("filtered page of 2 = %+v, %v", es, err)
	}
}

func testAuditInvalid(t *testing.T, s acl.Store) {
	for name, e := range map[string]acl.AuditEntry{
		"no action":         {Actor: "admin_key", Status: 200},
		"detail not JSON":   {Action: "x", Detail: "not json"},
		"detail not object": {Action: "x", Detail: "[1,2]"},
		"detail null":       {Action: "x", Detail: "null"},
		"NUL":               {Action: "x", Target: "a\x00b"},
		"bad UTF-8":         {Action: "x", Client: "bad\xff"},
		"long field":        {Action: "x", Target: strings.Repeat("t", acl.MaxAuditFieldBytes+1)},
		"long detail":       {Action: "x", Detail: `{"a":"` + strings.Repeat("d", acl.MaxAuditDetailBytes) + `"}`},
		"status":            {Action: "x", Status: 1000},
		"negative token":    {Action: "x", TokenID: -1},
	} {
		_, err := s.AppendAudit(bg, e)
		wantErr(t, "AppendAudit: "+name, err, acl.ErrInvalid)
	}
	for name, q := range map[string]acl.AuditQuery{
		"limit 0":        {},
		"limit too high": {Limit: acl.MaxAuditLimit + 1},
		"negative":       {Limit: 1, BeforeID: -1},
		"bad actor":      {Limit: 1, Actor: "\xff"},
	} {
		_, err := s.ListAudit(bg, q)
		wantErr(t, "ListAudit: "+name, err, acl.ErrInvalid)
	}
	es, err := s.ListAudit(bg, acl.AuditQuery{Limit: acl.MaxAuditLimit})
	if err != nil || len(es) != 0 {
		t.Fatalf("refused entries were stored: %+v, %v", es, err)
	}
	// A detail at the limit, with any JSON in it, is kept as given.
	d, _ := json.Marshal(map[string]any{"nested": map[string]any{"a": []int{1, 2}}, "s": "é\"\\"})
	e, err := s.AppendAudit(bg, acl.AuditEntry{Action: "x", Detail: string(d)})
	if err != nil {
		t.Fatal(err)
	}
	es, err = s.ListAudit(bg, acl.AuditQuery{Limit: 1})
	if err != nil || len(es) != 1 || es[0].Detail != string(d) || es[0].ID != e.ID {
		t.Fatalf("detail round trip = %+v, %v", es, err)
	}
}

// testAuditConcurrent: appends from several goroutines each get a
// distinct ID, and all are listed.
func testAuditConcurrent(t *testing.T, s acl.Store) {
	const workers, each = 6, 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int64]bool{}
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				e, err := s.AppendAudit(bg, acl.AuditEntry{Action: "concurrent", Target: fmt.Sprintf("%d/%d", w, i), Status: 200})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[e.ID] {
					t.Errorf("ID %d handed out twice", e.ID)
				}
				seen[e.ID] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	es, err := s.ListAudit(bg, acl.AuditQuery{Limit: acl.MaxAuditLimit, Action: "concurrent"})
	if err != nil || len(es) != workers*each {
		t.Fatalf("ListAudit after concurrent appends: %d entries, %v; want %d", len(es), err, workers*each)
	}
	for i := 1; i < len(es); i++ {
		if es[i].ID >= es[i-1].ID {
			t.Fatalf("entries not newest first at %d: %d then %d", i, es[i-1].ID, es[i].ID)
		}
	}
}
