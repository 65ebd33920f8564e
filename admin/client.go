package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls the admin API. Its zero HTTP field uses a client with
// ClientTimeout. A Client is safe for concurrent use if HTTP is.
//
// A rights change the broker saved but whose enforcement on live sessions
// it could not confirm in time (HTTP 202 pending) returns a
// *PendingChangeError together with the result it would have returned
// (a rotated token carries its new secret): the change is in effect for
// new connections, and live ones follow when the enforcement ends.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8081
	Key     string // the admin key
	HTTP    *http.Client
	// UserAgent is sent as the User-Agent header; empty sends
	// "gatecast-client". The audit log tells the CLI ("gatecast-cli…")
	// from other API clients by it.
	UserAgent string
}

// The User-Agent prefixes of Gatecast's own admin clients, which the
// audit log records as the source "cli" and "peer" (another node).
const (
	cliUserAgent    = "gatecast-cli"
	peerUserAgent   = "gatecast-peer"
	clientUserAgent = "gatecast-client"
)

// APIError is an error answer of the admin API.
type APIError struct {
	Status  int    // HTTP status
	Code    string // API error code, e.g. "not_found"
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
}

// PendingChangeError is a 202 pending answer to a rights change: the change
// is saved, but its enforcement on live sessions was still running when the
// broker answered (UnconfirmedNodes empty), or in cluster mode these nodes
// had not confirmed it when the revocation barrier's wait ended.
type PendingChangeError struct {
	Message          string
	UnconfirmedNodes []string
	TokenIDs         []int64 // the tokens whose sessions are being re-evaluated
}

func (e *PendingChangeError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "the change is saved; its enforcement on live sessions is not confirmed yet"
	}
	if len(e.UnconfirmedNodes) > 0 {
		msg += " (unconfirmed nodes: " + strings.Join(e.UnconfirmedNodes, ", ") + ")"
	}
	return msg + " (HTTP 202 pending)"
}

// pendingAnswer is how the client reads a 202 body.
type pendingAnswer struct {
	Status           string          `json:"status"`
	Message          string          `json:"message"`
	UnconfirmedNodes []string        `json:"unconfirmed_nodes"`
	TokenIDs         []int64         `json:"token_ids"`
	Result           json.RawMessage `json:"result"`
}

// maxAnswerBytes bounds what the client reads: a page of connections is
// bounded, but a broker of an older version lists all of them at once.
const maxAnswerBytes = 512 << 20

// ClientTimeout is the default Client's timeout: longer than anything the
// admin listener takes to answer (its write timeout is 2 minutes; a rights
// change answers within about a minute, 202 pending if its enforcement
// runs longer), so the client hears the answer rather than giving up on a
// change that was saved.
const ClientTimeout = 3 * time.Minute

var defaultHTTP = &http.Client{Timeout: ClientTimeout}

// do sends one request; in (if not nil) is the JSON body, out (if not nil)
// receives the JSON answer.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	ua := c.UserAgent
	if ua == "" {
		ua = clientUserAgent
	}
	req.Header.Set("User-Agent", ua)
	if c.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		msg := strings.TrimSpace(string(raw))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &APIError{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: msg}
	}
	if resp.StatusCode == http.StatusAccepted {
		var p pendingAnswer
		if json.Unmarshal(raw, &p) == nil && p.Status == "pending" {
			if out != nil && len(p.Result) > 0 {
				if err := json.Unmarshal(p.Result, out); err != nil {
					return fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
				}
			}
			return &PendingChangeError{Message: p.Message, UnconfirmedNodes: p.UnconfirmedNodes, TokenIDs: p.TokenIDs}
		}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
		}
	}
	return nil
}

func id(n int64) string { return strconv.FormatInt(n, 10) }

// CreateToken creates a token. The answer's Secret is shown only here.
func (c *Client) CreateToken(ctx context.Context, req CreateTokenRequest) (Token, error) {
	var t Token
	err := c.do(ctx, "POST", "/api/v1/tokens", req, &t)
	return t, err
}

// ListTokens lists every token (without secrets).
func (c *Client) ListTokens(ctx context.Context) ([]Token, error) {
	var ts []Token
	err := c.do(ctx, "GET", "/api/v1/tokens", nil, &ts)
	return ts, err
}

// GetToken returns one token (without its secret).
func (c *Client) GetToken(ctx context.Context, tokenID int64) (Token, error) {
	var t Token
	err := c.do(ctx, "GET", "/api/v1/tokens/"+id(tokenID), nil, &t)
	return t, err
}

// UpdateToken changes the non-nil fields of req.
func (c *Client) UpdateToken(ctx context.Context, tokenID int64, req UpdateTokenRequest) (Token, error) {
	var t Token
	err := c.do(ctx, "PATCH", "/api/v1/tokens/"+id(tokenID), req, &t)
	return t, err
}

// RotateToken replaces the token's secret; the answer's Secret is the new one.
func (c *Client) RotateToken(ctx context.Context, tokenID int64) (Token, error) {
	var t Token
	err := c.do(ctx, "POST", "/api/v1/tokens/"+id(tokenID)+"/rotate", nil, &t)
	return t, err
}

// DeleteToken deletes a token and its permissions.
func (c *Client) DeleteToken(ctx context.Context, tokenID int64) error {
	return c.do(ctx, "DELETE", "/api/v1/tokens/"+id(tokenID), nil, nil)
}

// CreateTag creates a tag.
func (c *Client) CreateTag(ctx context.Context, pattern string) (Tag, error) {
	var t Tag
	err := c.do(ctx, "POST", "/api/v1/tags", TagRequest{Pattern: pattern}, &t)
	return t, err
}

// ListTags lists every tag.
func (c *Client) ListTags(ctx context.Context) ([]Tag, error) {
	var ts []Tag
	err := c.do(ctx, "GET", "/api/v1/tags", nil, &ts)
	return ts, err
}

// GetTag returns one tag.
func (c *Client) GetTag(ctx context.Context, tagID int64) (Tag, error) {
	var t Tag
	err := c.do(ctx, "GET", "/api/v1/tags/"+id(tagID), nil, &t)
	return t, err
}

// UpdateTag changes a tag's pattern.
func (c *Client) UpdateTag(ctx context.Context, tagID int64, pattern string) (Tag, error) {
	var t Tag
	err := c.do(ctx, "PATCH", "/api/v1/tags/"+id(tagID), TagRequest{Pattern: pattern}, &t)
	return t, err
}

// DeleteTag deletes a tag and every permission on it.
func (c *Client) DeleteTag(ctx context.Context, tagID int64) error {
	return c.do(ctx, "DELETE", "/api/v1/tags/"+id(tagID), nil, nil)
}

// SetPermission grants "read" or "readwrite" on a tag to a token,
// replacing any previous permission of that token on that tag.
func (c *Client) SetPermission(ctx context.Context, tokenID, tagID int64, permission string) (Grant, error) {
	var g Grant
	err := c.do(ctx, "PUT", "/api/v1/tokens/"+id(tokenID)+"/permissions/"+id(tagID), PermissionRequest{Permission: permission}, &g)
	return g, err
}

// DeletePermission removes a token's permission on a tag.
func (c *Client) DeletePermission(ctx context.Context, tokenID, tagID int64) error {
	return c.do(ctx, "DELETE", "/api/v1/tokens/"+id(tokenID)+"/permissions/"+id(tagID), nil, nil)
}

// ListPermissions lists a token's permissions, ordered by tag ID.
func (c *Client) ListPermissions(ctx context.Context, tokenID int64) ([]Grant, error) {
	var gs []Grant
	err := c.do(ctx, "GET", "/api/v1/tokens/"+id(tokenID)+"/permissions", nil, &gs)
	return gs, err
}

// ConnectionsQuery selects a page of GET /api/v1/connections. Zero fields
// are left out: every token, every node, the first page of
// DefaultConnectionsLimit sessions. Limit -1 asks for the count only
// (limit=0).
type ConnectionsQuery struct {
	TokenID int64
	Node    string // cluster mode: that node's sessions only
	Limit   int
	Cursor  string // a previous page's NextCursor
}

// ListConnectionsPage lists one page of live connections.
func (c *Client) ListConnectionsPage(ctx context.Context, q ConnectionsQuery) (ConnectionsPage, error) {
	v := url.Values{}
	if q.TokenID != 0 {
		v.Set("token_id", id(q.TokenID))
	}
	if q.Node != "" {
		v.Set("node", q.Node)
	}
	switch {
	case q.Limit < 0:
		v.Set("limit", "0")
	case q.Limit > 0:
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Cursor != "" {
		v.Set("cursor", q.Cursor)
	}
	p := "/api/v1/connections"
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	var raw json.RawMessage
	if err := c.do(ctx, "GET", p, nil, &raw); err != nil {
		return ConnectionsPage{}, err
	}
	var pg ConnectionsPage
	if bytes.HasPrefix(bytes.TrimLeft(raw, " \t\r\n"), []byte("[")) {
		// a broker of an older version: one array of every session
		err := json.Unmarshal(raw, &pg.Connections)
		pg.Total = len(pg.Connections)
		return pg, err
	}
	err := json.Unmarshal(raw, &pg)
	return pg, err
}

// ListConnections lists every live connection, of one token or (tokenID 0)
// all, following the pages' cursors; unreachable lists the cluster nodes
// that did not answer some page.
func (c *Client) ListConnections(ctx context.Context, tokenID int64) (conns []Connection, unreachable []string, err error) {
	q := ConnectionsQuery{TokenID: tokenID, Limit: MaxConnectionsLimit}
	seen := map[string]bool{}
	for {
		pg, err := c.ListConnectionsPage(ctx, q)
		if err != nil {
			return nil, nil, err
		}
		conns = append(conns, pg.Connections...)
		for _, n := range pg.UnreachableNodes {
			if !seen[n] {
				seen[n] = true
				unreachable = append(unreachable, n)
			}
		}
		if pg.NextCursor == "" {
			return conns, unreachable, nil
		}
		if pg.NextCursor == q.Cursor || len(pg.Connections) == 0 {
			return nil, nil, fmt.Errorf("GET /api/v1/connections: the listing does not advance (cursor %q)", pg.NextCursor)
		}
		q.Cursor = pg.NextCursor
	}
}

// KickConnection closes a live connection with 4005.
func (c *Client) KickConnection(ctx context.Context, connID uint64) error {
	return c.do(ctx, "DELETE", "/api/v1/connections/"+strconv.FormatUint(connID, 10), nil, nil)
}

// Health calls GET /healthz; nil means healthy.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, "GET", "/healthz", nil, nil)
}

// AuditQuery selects a page of GET /api/v1/audit. Zero fields are left
// out: every entry, the newest DefaultAuditLimit first.
type AuditQuery struct {
	Actor   string
	Source  string
	Action  string // exact, or a prefix ending with '.' ("token.")
	TokenID int64
	TagID   int64
	Since   time.Time
	Until   time.Time
	Limit   int
	Cursor  string // a previous page's NextCursor (with the same filters)
}

// ListAuditPage lists one page of the audit log, newest first.
func (c *Client) ListAuditPage(ctx context.Context, q AuditQuery) (AuditPage, error) {
	v := url.Values{}
	for k, s := range map[string]string{"actor": q.Actor, "source": q.Source, "action": q.Action, "cursor": q.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.TokenID != 0 {
		v.Set("token_id", id(q.TokenID))
	}
	if q.TagID != 0 {
		v.Set("tag_id", id(q.TagID))
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	p := "/api/v1/audit"
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	var pg AuditPage
	err := c.do(ctx, "GET", p, nil, &pg)
	return pg, err
}

// ListAudit lists up to max entries of the audit log (0: all), newest
// first, following the pages' cursors.
func (c *Client) ListAudit(ctx context.Context, q AuditQuery, max int) ([]AuditEntry, error) {
	var out []AuditEntry
	for {
		q.Limit = MaxAuditLimit
		if max > 0 {
			q.Limit = min(MaxAuditLimit, max-len(out))
		}
		pg, err := c.ListAuditPage(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, pg.Entries...)
		if pg.NextCursor == "" || (max > 0 && len(out) >= max) {
			return out, nil
		}
		if pg.NextCursor == q.Cursor || len(pg.Entries) == 0 {
			return nil, fmt.Errorf("GET /api/v1/audit: the listing does not advance (cursor %q)", pg.NextCursor)
		}
		q.Cursor = pg.NextCursor
	}
}
