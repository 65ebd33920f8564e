package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/topic"
)

// FuzzDecodeBodies drives the request decoders of every body the API takes
// (token create, token update, tag, permission) with arbitrary bytes: they
// never panic, refuse with a 400 whose message never quotes a submitted
// secret, and what they accept satisfies the field rules.
func FuzzDecodeBodies(f *testing.F) {
	for _, s := range []string{
		`{"name":"fleet","max_connections":5}`,
		`{"name":"x","token":"seed-secret-123"}`,
		`{"name":null,"max_connections":null,"disabled":true}`,
		`{"pattern":"sensors/+/temp"}`,
		`{"permission":"readwrite"}`,
		`{"NAME":"case"}`,
		`{"name":"a"}{"name":"b"}`,
		`null`, `[]`, `{`, ``, `{"max_connections":1e400}`, `{"token":"\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000"}`,
		`{"name":"\ud800"}`, `{"pattern":"a/\udc00"}`, "{\"name\":\"a\xff\"}", `{"name":"\ud83d\ude00"}`, `{"name":"\\ud800"}`,
	} {
		for kind := range uint8(4) {
			f.Add(kind, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		secret := submittedSecret(body)
		var e *apiError
		switch kind % 4 {
		case 0:
			var req CreateTokenRequest
			req, e = decodeCreateToken(body)
			if e == nil {
				checkAcceptedName(t, req.Name)
				checkNotReplaced(t, body, req.Name)
				if req.MaxConnections < 0 || req.MaxConnections > maxConnectionsCap {
					t.Fatalf("accepted max_connections %d", req.MaxConnections)
				}
				if req.Secret != "" && (len(req.Secret) < minSecretLen || len(req.Secret) > maxSecretLen || strings.ContainsAny(req.Secret, " \t\r\n")) {
					t.Fatalf("accepted secret of %d bytes", len(req.Secret))
				}
			}
		case 1:
			var u acl.TokenUpdate
			u, e = decodeUpdateToken(body)
			if e == nil {
				if u.Name == nil && u.MaxConnections == nil && u.Disabled == nil {
					t.Fatal("accepted an empty update")
				}
				if u.Name != nil {
					checkAcceptedName(t, *u.Name)
					checkNotReplaced(t, body, *u.Name)
				}
				if u.MaxConnections != nil && (*u.MaxConnections < 0 || *u.MaxConnections > maxConnectionsCap) {
					t.Fatalf("accepted max_connections %d", *u.MaxConnections)
				}
			}
		case 2:
			var p string
			p, e = decodeTag(body)
			if e == nil {
				if err := topic.ValidateFilter(p); err != nil {
					t.Fatalf("accepted pattern %q: %v", p, err)
				}
				checkNotReplaced(t, body, p)
			}
		case 3:
			var p acl.Permission
			p, e = decodePermission(body)
			if e == nil && p != acl.PermRead && p != acl.PermReadWrite {
				t.Fatalf("accepted permission %d", p)
			}
		}
		if e != nil {
			if e.status != 400 || (e.code != codeInvalidJSON && e.code != codeInvalidValue) || e.message == "" {
				t.Fatalf("refusal %d %q %q", e.status, e.code, e.message)
			}
			if !utf8.ValidString(e.message) {
				t.Fatalf("message is not UTF-8: %q", e.message)
			}
			if secret != "" && strings.Contains(e.message, secret) {
				t.Fatalf("message %q quotes the submitted secret", e.message)
			}
		}
	})
}

// submittedSecret returns the "token" string of a body, if it has one long
// enough to be worth hiding.
func submittedSecret(body []byte) string {
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		return ""
	}
	for k, v := range m {
		if s, ok := v.(string); ok && strings.EqualFold(k, "token") && len(s) >= 4 {
			return s
		}
	}
	return ""
}

// checkNotReplaced fails when an accepted string holds U+FFFD that the
// body did not send (as itself or as the escape \ufffd): encoding/json's
// silent replacement of invalid UTF-8 and lone surrogates.
func checkNotReplaced(t *testing.T, body []byte, s string) {
	t.Helper()
	if !utf8.Valid(body) {
		t.Fatalf("accepted a body that is not UTF-8: %q", body)
	}
	if strings.ContainsRune(s, utf8.RuneError) && !bytes.ContainsRune(body, utf8.RuneError) &&
		!strings.Contains(strings.ToLower(string(body)), `\ufffd`) {
		t.Fatalf("accepted %q, a replacement of what %q sent", s, body)
	}
}

func checkAcceptedName(t *testing.T, name string) {
	t.Helper()
	if len(name) > maxNameBytes || !utf8.ValidString(name) || strings.TrimSpace(name) != name || acl.ValidateTokenName(name) != nil {
		t.Fatalf("accepted name %q", name)
	}
}

// FuzzHandlerBodies sends arbitrary bodies to every route that takes one,
// through the real handler and a real SQLite store: the answer is never a
// 5xx, always JSON, and an error always has the documented shape.
func FuzzHandlerBodies(f *testing.F) {
	fx := newFixture(f)
	tok, err := fx.store.CreateToken(f.Context(), "fuzz", 0, acl.HashSecret([]byte("fuzz-secret")))
	if err != nil {
		f.Fatal(err)
	}
	tag, err := fx.store.CreateTag(f.Context(), "fuzz/#")
	if err != nil {
		f.Fatal(err)
	}
	routes := []struct{ method, path string }{
		{"POST", "/api/v1/tokens"},
		{"PATCH", fmt.Sprintf("/api/v1/tokens/%d", tok.ID)},
		{"POST", "/api/v1/tags"},
		{"PATCH", fmt.Sprintf("/api/v1/tags/%d", tag.ID)},
		{"PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID)},
	}
	for _, s := range []string{
		`{"name":"n","max_connections":3}`, `{"name":"n","token":"imported-secret"}`, `{"disabled":false}`,
		`{"pattern":"a/+/b"}`, `{"pattern":"fuzz/#"}`, `{"permission":"read"}`, `{"x":1}`, `{`, ``, `null`,
	} {
		for r := range uint8(len(routes)) {
			f.Add(r, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := routes[int(route)%len(routes)]
		req := httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		fx.h.ServeHTTP(w, req)
		if w.Code >= 500 || w.Code < 200 {
			t.Fatalf("%s %s %q: HTTP %d %s", rt.method, rt.path, body, w.Code, w.Body.Bytes())
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s %q: answer is not JSON: %q", rt.method, rt.path, body, w.Body.Bytes())
		}
		if w.Code >= 400 {
			if _, err := parseError(w.Body.Bytes()); err != nil {
				t.Fatalf("%s %s %q: %v", rt.method, rt.path, body, err)
			}
		}
	})
}
