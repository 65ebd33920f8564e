package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gatecast/gatecast/acl"
)

// The audit log: every admin write that reached a route with the right
// key is recorded in the store of record (acl.Store.AppendAudit) after its
// handler answered, with what the handler noted through audit(): the
// credential (never the key), the action and its target, the HTTP status
// and the enforcement outcome. GET /api/v1/audit lists it, newest first.
// Nothing a handler notes is a secret; the client's User-Agent is the only
// caller-chosen text kept, sanitized, and dropped if it holds the key.

// routeActions names the action of each write route.
var routeActions = map[string]string{
	"POST /api/v1/tokens":                             "token.create",
	"PATCH /api/v1/tokens/{id}":                       "token.update",
	"DELETE /api/v1/tokens/{id}":                      "token.delete",
	"POST /api/v1/tokens/{id}/rotate":                 "token.rotate",
	"PUT /api/v1/tokens/{id}/permissions/{tag_id}":    "permission.set",
	"DELETE /api/v1/tokens/{id}/permissions/{tag_id}": "permission.delete",
	"POST /api/v1/tags":                               "tag.create",
	"PATCH /api/v1/tags/{id}":                         "tag.update",
	"DELETE /api/v1/tags/{id}":                        "tag.delete",
	"DELETE /api/v1/connections/{id}":                 "connection.kick",
	"POST /api/v1/publish":                            "publish",
}

// auditTimeout bounds the store write of one audit entry.
const auditTimeout = 5 * time.Second

// maxClientBytes bounds the User-Agent kept in an entry.
const maxClientBytes = 200

type actorKey struct{}

type actorValue struct{ actor, source string }

// withActor marks a request made with another credential than the admin
// key (the web console's session: actor "console:<session id>", source
// "console"), for its audit entry.
func withActor(ctx context.Context, actor, source string) context.Context {
	return context.WithValue(ctx, actorKey{}, actorValue{actor, source})
}

// actorOf is the credential and kind of client of an authorized request.
// A request reaching a write route presented the admin key unless
// withActor says otherwise; the kind of client comes from the User-Agent
// that Gatecast's own clients send.
func actorOf(r *http.Request) (actor, source string) {
	if v, ok := r.Context().Value(actorKey{}).(actorValue); ok {
		return v.actor, v.source
	}
	ua := r.Header.Get("User-Agent")
	switch {
	case isAgent(ua, cliUserAgent):
		return "admin_key", "cli"
	case isAgent(ua, peerUserAgent):
		return "admin_key", "peer"
	}
	return "admin_key", "api"
}

// isAgent reports whether ua is product name, alone or with a /version.
func isAgent(ua, name string) bool {
	rest, ok := strings.CutPrefix(ua, name)
	return ok && (rest == "" || rest[0] == '/' || rest[0] == ' ')
}

// sanitizeClient keeps a User-Agent as printable ASCII of bounded length,
// and drops it if it holds the admin key.
func (h *handler) sanitizeClient(ua string) string {
	if h.peerKey != "" && strings.Contains(ua, h.peerKey) {
		return "[redacted: held the admin key]"
	}
	b := make([]byte, 0, min(len(ua), maxClientBytes))
	for i := 0; i < len(ua) && len(b) < maxClientBytes; i++ {
		if c := ua[i]; c >= ' ' && c <= '~' {
			b = append(b, c)
		}
	}
	return string(b)
}

// record stores the audit entry of a write request that the handler for
// route has answered. A failure is logged (the write itself stands).
func (h *handler) record(r *http.Request, route string, aw *auditWriter) {
	e := acl.AuditEntry{At: time.Now(), Action: routeActions[route], Status: aw.status,
		Remote: r.RemoteAddr, Node: h.nodeID, Client: h.sanitizeClient(r.Header.Get("User-Agent"))}
	if e.Action == "" {
		e.Action = "write"
	}
	if e.Status == 0 {
		e.Status = http.StatusOK
	}
	e.Actor, e.Source = actorOf(r)
	detail := map[string]any{}
	for i := 0; i+1 < len(aw.attrs); i += 2 {
		k, _ := aw.attrs[i].(string)
		v := aw.attrs[i+1]
		switch k {
		case "token_id":
			e.TokenID, _ = v.(int64)
		case "tag_id":
			e.TagID, _ = v.(int64)
		case "enforcement":
			e.Enforcement, _ = v.(string)
		case "target":
			e.Target, _ = v.(string)
		default:
			detail[k] = v
		}
	}
	if e.TokenID == 0 && strings.Contains(route, "/api/v1/tokens/{id}") {
		e.TokenID = pathInt(r, "id")
	}
	if e.TagID == 0 {
		if strings.Contains(route, "{tag_id}") {
			e.TagID = pathInt(r, "tag_id")
		} else if strings.Contains(route, "/api/v1/tags/{id}") {
			e.TagID = pathInt(r, "id")
		}
	}
	if e.Target == "" {
		e.Target = targetOf(route, r, e)
	}
	e.Target = truncateText(e.Target, acl.MaxAuditFieldBytes)
	e.Node = truncateText(e.Node, acl.MaxAuditFieldBytes)
	e.Remote = truncateText(e.Remote, acl.MaxAuditFieldBytes)
	if len(detail) > 0 {
		if b, err := json.Marshal(detail); err == nil && len(b) <= acl.MaxAuditDetailBytes {
			e.Detail = string(b)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
	defer cancel()
	saved, err := h.store.AppendAudit(ctx, e)
	if err != nil {
		h.log.Error("admin write done but its audit log entry was not stored", "action", e.Action,
			"token_id", e.TokenID, "tag_id", e.TagID, "status", e.Status, "err", err)
	}
	aw.entryID <- saved.ID // buffered: a late enforcement refers to it
}

// truncateText cuts s to at most n bytes at a character boundary, marking
// the cut with "…".
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len("…")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// pathInt is a positive integer path value of r, or 0.
func pathInt(r *http.Request, name string) int64 {
	n, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

func targetOf(route string, r *http.Request, e acl.AuditEntry) string {
	switch {
	case strings.Contains(route, "/permissions/"):
		return fmt.Sprintf("token %s, tag %s", r.PathValue("id"), r.PathValue("tag_id"))
	case strings.Contains(route, "/api/v1/tokens"):
		if e.TokenID != 0 {
			return "token " + strconv.FormatInt(e.TokenID, 10)
		}
	case strings.Contains(route, "/api/v1/tags"):
		if e.TagID != 0 {
			return "tag " + strconv.FormatInt(e.TagID, 10)
		}
	case strings.Contains(route, "/api/v1/connections/"):
		t := "connection " + r.PathValue("id")
		if n := r.URL.Query().Get("node"); n != "" && len(n) <= maxNodeIDBytes && utf8.ValidString(n) {
			t += " on node " + n
		}
		return t
	}
	return ""
}

// recordLate stores the outcome of an enforcement that ended after its
// request was answered 202: an "enforcement.completed" entry referring to
// the request's own entry.
func (h *handler) recordLate(aw *auditWriter, route string, ids []int64, took time.Duration, outcome string, nodes []string) {
	ref := int64(0)
	select {
	case ref = <-aw.entryID:
	case <-time.After(auditTimeout + time.Second):
	}
	detail := map[string]any{"request_action": routeActions[route], "token_ids": ids, "took_ms": took.Milliseconds()}
	if len(nodes) > 0 {
		detail["unconfirmed_nodes"] = nodes
	}
	b, _ := json.Marshal(detail)
	e := acl.AuditEntry{At: time.Now(), Actor: "admin_key", Source: "server", Node: h.nodeID, Action: "enforcement.completed",
		Enforcement: outcome, Detail: string(b)}
	if ref > 0 {
		e.Target = "entry " + strconv.FormatInt(ref, 10)
	}
	if len(ids) == 1 {
		e.TokenID = ids[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
	defer cancel()
	if _, err := h.store.AppendAudit(ctx, e); err != nil {
		h.log.Error("a late enforcement's audit log entry was not stored", "route", route, "token_ids", joinIDs(ids), "err", err)
	}
}

// ---- GET /api/v1/audit ----

// Page sizes of GET /api/v1/audit.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = acl.MaxAuditLimit
)

// AuditEntry is one entry of the audit log as the API shows it.
type AuditEntry struct {
	ID          int64           `json:"id"`
	At          time.Time       `json:"at"`
	Actor       string          `json:"actor"`
	Source      string          `json:"source"`
	Client      string          `json:"client,omitempty"`
	Remote      string          `json:"remote,omitempty"`
	Node        string          `json:"node,omitempty"`
	Action      string          `json:"action"`
	TokenID     int64           `json:"token_id,omitempty"`
	TagID       int64           `json:"tag_id,omitempty"`
	Target      string          `json:"target,omitempty"`
	Status      int             `json:"status"`
	Enforcement string          `json:"enforcement,omitempty"`
	Detail      json.RawMessage `json:"detail,omitempty"`
}

// AuditPage is the answer of GET /api/v1/audit.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	// NextCursor, given as ?cursor= with the same filters, lists the next
	// (older) page; empty on the last one.
	NextCursor string `json:"next_cursor"`
}

// auditFilters are the query parameters that select entries; a cursor
// repeats them so that it cannot be used with other ones.
type auditFilters struct {
	Actor   string `json:"a,omitempty"`
	Source  string `json:"s,omitempty"`
	Action  string `json:"x,omitempty"`
	TokenID int64  `json:"t,omitempty"`
	TagID   int64  `json:"g,omitempty"`
	Since   string `json:"f,omitempty"`
	Until   string `json:"u,omitempty"`
}

type auditCursor struct {
	Before  int64        `json:"b"`
	Filters auditFilters `json:"q"`
}

const auditCursorPrefix = "a1."

func encodeAuditCursor(c auditCursor) string {
	b, _ := json.Marshal(c)
	return auditCursorPrefix + base64.RawURLEncoding.EncodeToString(b)
}

func decodeAuditCursor(s string) (auditCursor, bool) {
	var c auditCursor
	rest, ok := strings.CutPrefix(s, auditCursorPrefix)
	if !ok || len(s) > maxCursorBytes {
		return c, false
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || !utf8.Valid(b) {
		return c, false
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if dec.Decode(&c) != nil || dec.More() || c.Before <= 0 {
		return c, false
	}
	return c, true
}

// parseAuditQuery reads limit, cursor and the filters of GET /api/v1/audit.
func parseAuditQuery(v url.Values) (acl.AuditQuery, auditFilters, *apiError) {
	q := acl.AuditQuery{Limit: DefaultAuditLimit}
	var f auditFilters
	if v.Has("page") || v.Has("offset") {
		return q, f, invalid("page and offset are not supported: follow next_cursor (?cursor=…)")
	}
	if v.Has("limit") {
		n, err := strconv.Atoi(v.Get("limit"))
		if err != nil || n < 1 || n > MaxAuditLimit {
			return q, f, invalid("limit must be an integer from 1 to %d", MaxAuditLimit)
		}
		q.Limit = n
	}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"actor", &f.Actor}, {"source", &f.Source}, {"action", &f.Action}} {
		s := v.Get(p.name)
		if len(s) > acl.MaxAuditFieldBytes || !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return q, f, invalid("%s must be at most %d bytes of text", p.name, acl.MaxAuditFieldBytes)
		}
		*p.dst = s
	}
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"token_id", &f.TokenID}, {"tag_id", &f.TagID}} {
		if s := v.Get(p.name); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				return q, f, invalid("%s must be a positive integer", p.name)
			}
			*p.dst = n
		}
	}
	for _, p := range []struct {
		name string
		raw  *string
		dst  *time.Time
	}{{"since", &f.Since, &q.Since}, {"until", &f.Until, &q.Until}} {
		if s := v.Get(p.name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return q, f, invalid("%s must be an RFC 3339 time such as 2025-03-01T12:00:00Z", p.name)
			}
			*p.raw, *p.dst = s, t
		}
	}
	q.Actor, q.Source, q.Action, q.TokenID, q.TagID = f.Actor, f.Source, f.Action, f.TokenID, f.TagID
	if s := v.Get("cursor"); s != "" {
		c, ok := decodeAuditCursor(s)
		if !ok {
			return q, f, invalid("cursor is not one this API issued (pass next_cursor unchanged)")
		}
		if c.Filters != f {
			return q, f, invalid("cursor belongs to another listing (other filters); start again without it")
		}
		q.BeforeID = c.Before
	}
	return q, f, nil
}

func (h *handler) listAudit(w http.ResponseWriter, r *http.Request) {
	q, f, e := parseAuditQuery(r.URL.Query())
	if e != nil {
		writeError(w, e)
		return
	}
	limit := q.Limit
	if q.Limit < MaxAuditLimit {
		q.Limit++ // one more tells whether there is a next page
	}
	entries, err := h.store.ListAudit(r.Context(), q)
	if err != nil {
		h.storeError(w, r, err, "", "")
		return
	}
	page := AuditPage{Entries: make([]AuditEntry, 0, min(len(entries), limit))}
	more := len(entries) > limit || (limit == MaxAuditLimit && len(entries) == limit)
	if len(entries) > limit {
		entries = entries[:limit]
	}
	for _, en := range entries {
		page.Entries = append(page.Entries, auditJSON(en))
	}
	if more && len(entries) > 0 {
		page.NextCursor = encodeAuditCursor(auditCursor{Before: entries[len(entries)-1].ID, Filters: f})
	}
	writeJSON(w, http.StatusOK, page)
}

func auditJSON(e acl.AuditEntry) AuditEntry {
	out := AuditEntry{ID: e.ID, At: e.At.UTC(), Actor: e.Actor, Source: e.Source, Client: e.Client, Remote: e.Remote,
		Node: e.Node, Action: e.Action, TokenID: e.TokenID, TagID: e.TagID, Target: e.Target, Status: e.Status,
		Enforcement: e.Enforcement}
	if e.Detail != "" && json.Valid([]byte(e.Detail)) {
		out.Detail = json.RawMessage(e.Detail)
	}
	return out
}
