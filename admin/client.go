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

	"github.com/gatecast/gatecast/broker"
)

// Client calls the admin API. Its zero HTTP field uses a client with a
// 60-second timeout. A Client is safe for concurrent use if HTTP is.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8081
	Key     string // the admin key
	HTTP    *http.Client
}

// APIError is an error answer of the admin API.
type APIError struct {
	Status  int    // HTTP status
	Code    string // API error code, e.g. "not_found"
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
}

// maxAnswerBytes bounds what the client reads: a connection list of a
// large node is big, but not unbounded.
const maxAnswerBytes = 512 << 20

var defaultHTTP = &http.Client{Timeout: 60 * time.Second}

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

// ListConnections lists live connections, of one token or (tokenID 0) all.
func (c *Client) ListConnections(ctx context.Context, tokenID int64) ([]broker.ConnectionInfo, error) {
	p := "/api/v1/connections"
	if tokenID != 0 {
		p += "?" + url.Values{"token_id": {id(tokenID)}}.Encode()
	}
	var cs []broker.ConnectionInfo
	err := c.do(ctx, "GET", p, nil, &cs)
	return cs, err
}

// KickConnection closes a live connection with 4005.
func (c *Client) KickConnection(ctx context.Context, connID uint64) error {
	return c.do(ctx, "DELETE", "/api/v1/connections/"+strconv.FormatUint(connID, 10), nil, nil)
}

// Health calls GET /healthz; nil means healthy.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, "GET", "/healthz", nil, nil)
}
