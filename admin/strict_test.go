package admin

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gatecast/gatecast/acl"
)

// Issue 9, finding 5: encoding/json turns invalid UTF-8 and lone UTF-16
// surrogate escapes into U+FFFD; the API refuses such bodies (400
// invalid_json, the usual error shape) on every route that takes a body,
// and stores nothing.
func TestWriteBodiesMustBeValidText(t *testing.T) {
	f := newFixture(t)
	tok, err := f.store.CreateToken(t.Context(), "keep", 0, acl.HashSecret([]byte("strict-secret")))
	if err != nil {
		t.Fatal(err)
	}
	tag, err := f.store.CreateTag(t.Context(), "keep/#")
	if err != nil {
		t.Fatal(err)
	}
	routes := []struct {
		method, path, field string
	}{
		{"POST", "/api/v1/tokens", "name"},
		{"PATCH", fmt.Sprintf("/api/v1/tokens/%d", tok.ID), "name"},
		{"POST", "/api/v1/tags", "pattern"},
		{"PATCH", fmt.Sprintf("/api/v1/tags/%d", tag.ID), "pattern"},
		{"PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID), "permission"},
	}
	bad := []struct{ name, value string }{
		{"invalid byte", "a/\xff"},
		{"truncated sequence", "a/\xe2\x82"},
		{"overlong encoding", "a/\xc0\xaf"},
		{"encoded surrogate", "a/\xed\xa0\x80"},
		{"lone high surrogate", `a/\ud800`},
		{"lone high surrogate, upper case", `a/\uD800`},
		{"lone low surrogate", `a/\udc00`},
		{"high surrogate then a letter", `a/\ud800x`},
		{"high surrogate then another escape", `a/\ud800\u0041`},
		{"two high surrogates", `a/\ud800\ud800`},
		{"reversed pair", `a/\ude00\ud83d`},
		{"high surrogate at the end", `\udbff`},
	}
	for _, rt := range routes {
		for _, b := range bad {
			body := `{"` + rt.field + `":"` + b.value + `"}`
			code, raw := f.call(rt.method, rt.path, body)
			msg := checkError(t, code, raw, 400, "invalid_json", fmt.Sprintf("%s %s with %s", rt.method, rt.path, b.name))
			if !utf8.Valid(raw) || strings.Contains(msg, "\ufffd") {
				t.Errorf("%s %s with %s: error answer %q is not clean UTF-8", rt.method, rt.path, b.name, raw)
			}
		}
		// the same in a key: the body as a whole must be text
		code, raw := f.call(rt.method, rt.path, `{"`+rt.field+"\xff"+`":"x"}`)
		checkError(t, code, raw, 400, "invalid_json", rt.method+" "+rt.path+" with a key of invalid UTF-8")
	}
	toks, _ := f.store.ListTokens(t.Context())
	tags, _ := f.store.ListTags(t.Context())
	if len(toks) != 1 || toks[0].Name != "keep" || len(tags) != 1 || tags[0].Pattern != "keep/#" {
		t.Fatalf("refused bodies changed the store: %+v %+v", toks, tags)
	}
	if n := len(f.enf.takeCalls()); n != 0 {
		t.Fatalf("refused bodies were enforced %d times", n)
	}

	// What is text stays accepted, exactly as sent.
	for _, ok := range []struct{ json, want string }{
		{`\ud83d\ude00`, "😀"},   // a surrogate pair is one character
		{`\uD83D\uDE00`, "😀"},   // in either case
		{"😀", "😀"},              // raw UTF-8
		{"\ufffd", "\ufffd"},    // U+FFFD sent as itself is a character
		{`\ufffd`, "\ufffd"},    // and as an escape
		{`a\\ud800`, `a\ud800`}, // an escaped backslash, then text
	} {
		var got Token
		f.must(201, "POST", "/api/v1/tokens", `{"name":"`+ok.json+`"}`, &got)
		if got.Name != ok.want {
			t.Errorf("name %s: stored %q, want %q", ok.json, got.Name, ok.want)
		}
	}
	var tg Tag
	f.must(201, "POST", "/api/v1/tags", `{"pattern":"caf\u00e9/\ud83d\ude00/#"}`, &tg)
	if tg.Pattern != "café/😀/#" {
		t.Fatalf("pattern stored as %q", tg.Pattern)
	}
}

// The body stays bounded (1 MiB) on every route that reads one.
func TestWriteBodiesAreBounded(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken("x", 0)
	tag := f.createTag("x/#")
	big := `{"name":"` + strings.Repeat("a", maxBodyBytes) + `"}`
	for _, rt := range [][2]string{
		{"POST", "/api/v1/tokens"},
		{"PATCH", fmt.Sprintf("/api/v1/tokens/%d", tok.ID)},
		{"POST", "/api/v1/tags"},
		{"PATCH", fmt.Sprintf("/api/v1/tags/%d", tag.ID)},
		{"PUT", fmt.Sprintf("/api/v1/tokens/%d/permissions/%d", tok.ID, tag.ID)},
	} {
		f.mustError(413, "body_too_large", rt[0], rt[1], big)
	}
}

func TestCheckJSONText(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"a":"b"}`, true},
		{`{"a":"\u00e9\ud83d\ude00"}`, true},
		{`{"a":"\\ud800"}`, true},               // backslash, then text
		{`{"a":"\\\ud83d\ude00"}`, true},        // backslash, then a pair
		{`{"a":"\"\ud83d\ude00\""}`, true},      // escaped quotes around a pair
		{`{"\ud83d\ude00":1}`, true},            // keys too
		{`{"a":"\u12"}`, true},                  // malformed: left to the decoder
		{`{"a":"\`, true},                       // truncated: left to the decoder
		{`{"a":1, "b":"\udfff"}`, false},        // lone low surrogate
		{`{"a":"\ud800\\u0000"}`, false},        // high, then a backslash escape
		{`{"a":"\ud800"}`, false},               // lone high
		{`{"a":"x\ud800`, false},                // lone high at the end of a truncated body
		{`{"a":"\ud800\udbff"}`, false},         // high, high
		{"{\"a\":\"\xf4\x90\x80\x80\"}", false}, // above U+10FFFF
		{"{\"a\":\"\x80\"}", false},
	} {
		e := checkJSONText([]byte(tc.body))
		if (e == nil) != tc.ok {
			t.Errorf("%q: error %v, want ok %v", tc.body, e, tc.ok)
		}
		if e != nil && (e.status != 400 || e.code != codeInvalidJSON || !utf8.ValidString(e.message)) {
			t.Errorf("%q: refusal %+v", tc.body, e)
		}
	}
}
