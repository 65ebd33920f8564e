package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/topic"
)

// The JSON documents of the admin API, shared by the server and the client.

// Token is a token as the API shows it. Secret is set only in the answer
// to a creation or a rotation: the API never shows a secret again.
type Token struct {
	ID             int64     `json:"id"`
	Name           string    `json:"name"`
	MaxConnections int       `json:"max_connections"`
	Disabled       bool      `json:"disabled"`
	CreatedAt      time.Time `json:"created_at"`
	// WeakSecret: the token's secret was imported and is weak
	// (acl.IsWeakSecret); it authenticates, but should be rotated.
	WeakSecret bool `json:"weak_secret"`
	// Warning is WeakSecretWarning for a weak secret, else empty.
	Warning string `json:"warning,omitempty"`
	Secret  string `json:"token,omitempty"`
}

// WeakSecretWarning is the Warning of a token with a weak secret.
const WeakSecretWarning = "weak secret: rotate"

// Tag is a topic pattern that permissions refer to.
type Tag struct {
	ID      int64  `json:"id"`
	Pattern string `json:"pattern"`
}

// Grant is one permission of a token: "read" or "readwrite" on a tag.
type Grant struct {
	TagID      int64  `json:"tag_id"`
	Pattern    string `json:"pattern"`
	Permission string `json:"permission"`
}

// CreateTokenRequest is the body of POST /api/v1/tokens. Secret (JSON
// "token") imports an existing secret, e.g. from the seed's database;
// empty means generate one.
type CreateTokenRequest struct {
	Name           string `json:"name"`
	MaxConnections int    `json:"max_connections"`
	Secret         string `json:"token,omitempty"`
}

// UpdateTokenRequest is the body of PATCH /api/v1/tokens/{id}; a nil field
// is left unchanged.
type UpdateTokenRequest struct {
	Name           *string `json:"name,omitempty"`
	MaxConnections *int    `json:"max_connections,omitempty"`
	Disabled       *bool   `json:"disabled,omitempty"`
}

// TagRequest is the body of POST /api/v1/tags and PATCH /api/v1/tags/{id}.
type TagRequest struct {
	Pattern string `json:"pattern"`
}

// PermissionRequest is the body of PUT /api/v1/tokens/{id}/permissions/{tag_id}.
type PermissionRequest struct {
	Permission string `json:"permission"`
}

// errorBody is the shape of every error answer.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Limits on request fields.
const (
	maxBodyBytes      = 1 << 20
	maxNameBytes      = acl.MaxTokenNameLen
	maxConnectionsCap = 1_000_000_000
	minSecretLen      = 1 // shorter than acl.MinStrongSecretLen is accepted, flagged weak
	maxSecretLen      = 512
)

// Error codes of the API (the "code" of an error answer).
const (
	codeInvalidJSON       = "invalid_json"
	codeInvalidValue      = "invalid_value"
	codeUnauthorized      = "unauthorized"
	codeNotFound          = "not_found"
	codeMethodNotAllowed  = "method_not_allowed"
	codeConflict          = "conflict"
	codeBodyTooLarge      = "body_too_large"
	codeUnsupportedMedia  = "unsupported_media_type"
	codeInternal          = "internal"
	codeEnforcementFailed = "enforcement_failed"
	codeUnavailable       = "unavailable"
	codeHostNotAllowed    = "host_not_allowed"
)

// apiError is an error with its HTTP status and API code. Its message is
// shown to the caller, so it never carries internals or secrets.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

func invalid(format string, args ...any) *apiError {
	return &apiError{status: 400, code: codeInvalidValue, message: fmt.Sprintf(format, args...)}
}

// decodeJSON decodes one JSON object into dst, refusing anything else
// (null, arrays, unknown fields, trailing data) with a 400 whose message
// says what is wrong without quoting the input.
func decodeJSON(body []byte, dst any) *apiError {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return &apiError{400, codeInvalidJSON, "a JSON object is required as the request body"}
	}
	if trimmed[0] != '{' {
		return &apiError{400, codeInvalidJSON, "the request body must be a JSON object"}
	}
	// encoding/json silently turns invalid UTF-8 and lone UTF-16 surrogate
	// escapes ("\ud800") into U+FFFD: a name or pattern would be stored as
	// something other than what was sent. Refuse such bodies instead.
	if e := checkJSONText(trimmed); e != nil {
		return e
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return &apiError{400, codeInvalidJSON, describeJSONError(err)}
	}
	if err := dec.Decode(new(json.RawMessage)); !errors.Is(err, io.EOF) {
		return &apiError{400, codeInvalidJSON, "unexpected data after the JSON object"}
	}
	return nil
}

// checkJSONText refuses a body that is not valid UTF-8 or whose strings
// hold a \u escape of a lone surrogate (a high one not followed by a low
// one, or a low one alone). It only looks at string escapes; everything
// else about the syntax is left to the decoder, so a malformed body gets
// the decoder's message.
func checkJSONText(body []byte) *apiError {
	if !utf8.Valid(body) {
		off := 0
		for off < len(body) {
			r, n := utf8.DecodeRune(body[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		return &apiError{400, codeInvalidJSON, fmt.Sprintf("the request body is not valid UTF-8 (at byte %d)", off)}
	}
	inString := false
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !inString {
			if c == '"' {
				inString = true
			}
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 >= len(body) {
				return nil // truncated: the decoder says so
			}
			i++
			if body[i] != 'u' {
				continue
			}
			r, ok := hex4(body, i+1)
			if !ok {
				return nil // malformed escape: the decoder says so
			}
			at := i - 1
			i += 4
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return loneSurrogate(at)
			case r >= 0xD800 && r <= 0xDBFF:
				// must be followed at once by \uDC00-\uDFFF
				if i+2 >= len(body) || body[i+1] != '\\' || body[i+2] != 'u' {
					return loneSurrogate(at)
				}
				lo, ok := hex4(body, i+3)
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return loneSurrogate(at)
				}
				i += 6
			}
		}
	}
	return nil
}

// hex4 parses the 4 hex digits at body[at:], as a \u escape has them.
func hex4(body []byte, at int) (rune, bool) {
	if at+4 > len(body) {
		return 0, false
	}
	var r rune
	for _, c := range body[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

func loneSurrogate(at int) *apiError {
	return &apiError{400, codeInvalidJSON, fmt.Sprintf("the request body has a \\u escape of a lone UTF-16 surrogate at byte %d (not a character)", at)}
}

// describeJSONError names the problem, never the offending input (which may
// be a secret).
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("field %q must be %s", typ.Field, jsonKind(typ.Type.Kind().String()))
		}
		return "the request body has the wrong JSON type"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated JSON"
	}
	// json reports unknown fields as `json: unknown field "x"`; the field
	// name is the caller's own key, safe to repeat (bounded).
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		name := strings.TrimPrefix(msg, "json: unknown field ")
		if len(name) > 66 || !utf8.ValidString(name) {
			return "unknown field"
		}
		return "unknown field " + name
	}
	return "invalid JSON"
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64":
		return "an integer"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	}
	return "of another type"
}

// checkName validates a token name: printable UTF-8, bounded.
func checkName(name string) *apiError {
	if len(name) > maxNameBytes {
		return invalid("name must be at most %d bytes", maxNameBytes)
	}
	if !utf8.ValidString(name) {
		return invalid("name must be valid UTF-8")
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return invalid("name must not contain control or non-printable characters")
		}
	}
	if strings.TrimSpace(name) != name {
		return invalid("name must not start or end with spaces")
	}
	if err := acl.ValidateTokenName(name); err != nil {
		return invalid("name is not valid")
	}
	return nil
}

func checkMaxConnections(n int) *apiError {
	if n < 0 || n > maxConnectionsCap {
		return invalid("max_connections must be between 0 (unlimited) and %d", maxConnectionsCap)
	}
	return nil
}

// checkSecret validates an imported secret: something a client can send in
// an Authorization header or a query parameter. A short or repetitive one
// is accepted (devices in the field present it) and the token is flagged
// weak (acl.IsWeakSecret).
func checkSecret(s string) *apiError {
	if len(s) < minSecretLen || len(s) > maxSecretLen {
		return invalid("token must be %d to %d characters long", minSecretLen, maxSecretLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return invalid("token must be printable ASCII without spaces")
		}
	}
	return nil
}

func checkPattern(p string) *apiError {
	if err := topic.ValidateFilter(p); err != nil {
		return invalid("pattern: %v", err)
	}
	return nil
}

// decodeCreateToken parses and validates the body of POST /api/v1/tokens.
func decodeCreateToken(body []byte) (CreateTokenRequest, *apiError) {
	var req CreateTokenRequest
	if e := decodeJSON(body, &req); e != nil {
		return req, e
	}
	if e := checkName(req.Name); e != nil {
		return req, e
	}
	if e := checkMaxConnections(req.MaxConnections); e != nil {
		return req, e
	}
	if req.Secret != "" {
		if e := checkSecret(req.Secret); e != nil {
			return req, e
		}
	}
	return req, nil
}

// decodeUpdateToken parses and validates the body of PATCH /api/v1/tokens/{id}.
func decodeUpdateToken(body []byte) (acl.TokenUpdate, *apiError) {
	var req UpdateTokenRequest
	if e := decodeJSON(body, &req); e != nil {
		return acl.TokenUpdate{}, e
	}
	if req.Name == nil && req.MaxConnections == nil && req.Disabled == nil {
		return acl.TokenUpdate{}, invalid("nothing to update: give name, max_connections or disabled")
	}
	if req.Name != nil {
		if e := checkName(*req.Name); e != nil {
			return acl.TokenUpdate{}, e
		}
	}
	if req.MaxConnections != nil {
		if e := checkMaxConnections(*req.MaxConnections); e != nil {
			return acl.TokenUpdate{}, e
		}
	}
	return acl.TokenUpdate{Name: req.Name, MaxConnections: req.MaxConnections, Disabled: req.Disabled}, nil
}

// decodeTag parses and validates the body of POST /api/v1/tags and
// PATCH /api/v1/tags/{id}.
func decodeTag(body []byte) (string, *apiError) {
	var req TagRequest
	if e := decodeJSON(body, &req); e != nil {
		return "", e
	}
	if req.Pattern == "" {
		return "", invalid("pattern is required")
	}
	if e := checkPattern(req.Pattern); e != nil {
		return "", e
	}
	return req.Pattern, nil
}

// decodePermission parses the body of PUT /api/v1/tokens/{id}/permissions/{tag_id}.
func decodePermission(body []byte) (acl.Permission, *apiError) {
	var req PermissionRequest
	if e := decodeJSON(body, &req); e != nil {
		return acl.PermNone, e
	}
	p, err := acl.ParsePermission(req.Permission)
	if err != nil {
		return acl.PermNone, invalid(`permission must be "read" or "readwrite"`)
	}
	return p, nil
}

func tokenJSON(t acl.Token) Token {
	out := Token{
		ID:             t.ID,
		Name:           t.Name,
		MaxConnections: t.MaxConnections,
		Disabled:       t.Disabled,
		CreatedAt:      t.CreatedAt.UTC(),
		WeakSecret:     t.WeakSecret,
	}
	if t.WeakSecret {
		out.Warning = WeakSecretWarning
	}
	return out
}

func grantJSON(g acl.Grant) Grant {
	return Grant{TagID: g.TagID, Pattern: g.Pattern, Permission: g.Permission.String()}
}
