package proto

import (
	"bytes"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode"
)

func TestSeedSecret(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Token abc123", "abc123"},
		{"token abc123", "abc123"},
		{"TOKEN   abc123  ", "abc123"},
		{"Bearer abc123", "abc123"},
		{"bEaReR\tabc123", "abc123"},
		{"abc123", "abc123"},
		{"  abc123\t", "abc123"},
		{"Token", ""},
		{"Bearer  ", ""},
		{"", ""},
		{"   ", ""},
		{"Tokenabc", "Tokenabc"},
		{"Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"},
		{"Token a b", "a b"},
	} {
		if got := SeedSecret([]byte(tc.in)); string(got) != tc.want {
			t.Errorf("SeedSecret(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestAppendTags(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"sensors/+/temp, alerts/#,devices/room1/status", []string{"sensors/+/temp", "alerts/#", "devices/room1/status"}},
		{"a", []string{"a"}},
		{" a ,, ,\tb\t,", []string{"a", "b"}},
		{"", nil},
		{" , ,", nil},
		{"a b,c", []string{"a b", "c"}},
	} {
		got := AppendTags(nil, []byte(tc.in))
		if !slices.Equal(got, tc.want) {
			t.Errorf("AppendTags(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Appends to dst and copies: the result does not alias the input.
	in := []byte("x,y")
	got := AppendTags([]string{"w"}, in)
	in[0] = 'Z'
	if !slices.Equal(got, []string{"w", "x", "y"}) {
		t.Fatalf("AppendTags appended %q", got)
	}
}

func TestParseQuery(t *testing.T) {
	for _, tc := range []struct {
		in    string
		token string
		tags  []string
		err   bool
	}{
		{in: "token=abc&tags=a,b", token: "abc", tags: []string{"a", "b"}},
		{in: "?token=abc&tags=a,b", token: "abc", tags: []string{"a", "b"}},
		{in: "tags=sensors%2F%2B%2Ftemp%2Calerts%2F%23&token=s%20e+c", token: "s e c", tags: []string{"sensors/+/temp", "alerts/#"}},
		{in: "tags=a&tags=b,c&tags=", tags: []string{"a", "b", "c"}},
		{in: "token=first&token=second", token: "first"},
		{in: "other=1&&token&tags", token: ""},
		{in: "tok%65n=abc", token: "abc"},
		{in: "", token: ""},
		{in: "token=%zz", err: true},
		{in: "tags=a%", err: true},
		{in: "junk%=1&token=abc", err: true},
	} {
		token, tags, err := ParseQuery([]byte(tc.in))
		if (err != nil) != tc.err {
			t.Errorf("ParseQuery(%q) error = %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err != nil {
			if err != ErrBadQuery || token != "" || tags != nil {
				t.Errorf("ParseQuery(%q) = %q, %q, %v on error", tc.in, token, tags, err)
			}
			continue
		}
		if token != tc.token || !slices.Equal(tags, tc.tags) {
			t.Errorf("ParseQuery(%q) = %q, %q; want %q, %q", tc.in, token, tags, tc.token, tc.tags)
		}
	}
}

func TestValidateSeedTag(t *testing.T) {
	for _, tc := range []struct {
		tag string
		ok  bool
	}{
		{"sensors/+/temp", true},
		{"alerts/#", true},
		{"a/é/日本", true},
		{"a/\u00a0/x", true}, // NBSP is printable, not a control: allowed as MQTT allows it
		{"a/\xff", true},     // invalid UTF-8 is topic.ValidateFilter's to refuse
		{"a/\xc2", true},     // a truncated sequence, not a C1 control
		{"\u0080", false},    // C1 controls, first and last
		{"a/\u009f/b", false},
		{"a/ /x", false}, // what an unencoded ?tags=a/+/x decodes to
		{"a b", false},
		{"a\tb", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\rb", false},
		{"\x1f", false},
		{"a\x7f", false},
		{" ", false},
	} {
		err := ValidateSeedTag(tc.tag)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateSeedTag(%q) = %v, want ok=%v", tc.tag, err, tc.ok)
		}
		if err != nil && err != ErrSeedTagChars {
			t.Errorf("ValidateSeedTag(%q) = %v, want ErrSeedTagChars", tc.tag, err)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = ValidateSeedTag("sensors/room1/temp\u0085") }); n != 0 {
		t.Fatalf("ValidateSeedTag allocates %.0f times", n)
	}
}

// seedTagOK is ValidateSeedTag's definition, rune by rune: no space and no
// character unicode.IsControl reports (exactly U+0000–U+001F, U+007F–U+009F).
// Invalid bytes decode to U+FFFD, which is neither.
func seedTagOK(tag string) bool {
	for _, r := range tag {
		if r == ' ' || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// FuzzValidateSeedTag checks the byte scan against the rune definition.
func FuzzValidateSeedTag(f *testing.F) {
	f.Fuzz(func(t *testing.T, tag string) {
		if got, want := ValidateSeedTag(tag) == nil, seedTagOK(tag); got != want {
			t.Fatalf("ValidateSeedTag(%q) ok=%v, want %v", tag, got, want)
		}
	})
}

func FuzzSeedSecret(f *testing.F) {
	f.Fuzz(func(t *testing.T, h []byte) {
		got := SeedSecret(h)
		if len(got) > 0 && (got[0] == ' ' || got[0] == '\t' || got[len(got)-1] == ' ' || got[len(got)-1] == '\t') {
			t.Fatalf("SeedSecret(%q) = %q is not trimmed", h, got)
		}
		if !bytes.Contains(h, got) {
			t.Fatalf("SeedSecret(%q) = %q is not part of the header", h, got)
		}
		if w := strings.ToLower(string(got)); w == "token" || w == "bearer" {
			// Only a bare scheme word could be mistaken for a secret if it
			// followed another scheme word ("Token Bearer" is a secret).
			first := strings.Fields(strings.ToLower(string(h)))
			if len(first) < 2 || first[0] != "token" && first[0] != "bearer" {
				t.Fatalf("SeedSecret(%q) returned the scheme word %q as the secret", h, got)
			}
		}
	})
}

func FuzzAppendTags(f *testing.F) {
	f.Fuzz(func(t *testing.T, list []byte) {
		got := AppendTags(nil, list)
		var want []string
		for _, s := range strings.Split(string(list), ",") {
			if s = strings.Trim(s, " \t"); s != "" {
				want = append(want, s)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("AppendTags(%q) = %q, want %q", list, got, want)
		}
	})
}

// FuzzParseQuery compares ParseQuery with net/url.ParseQuery wherever the
// latter succeeds; where it fails for a bad escape (not for its refusal of
// ';' separators), ParseQuery must fail too.
func FuzzParseQuery(f *testing.F) {
	f.Fuzz(func(t *testing.T, q string) {
		token, tags, err := ParseQuery([]byte(q))
		ref, refErr := url.ParseQuery(strings.TrimPrefix(q, "?"))
		if refErr != nil {
			if err == nil && !strings.Contains(q, ";") {
				t.Fatalf("ParseQuery(%q) accepted what net/url refuses: %v", q, refErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("ParseQuery(%q): %v; net/url accepts it", q, err)
		}
		var wantTags []string
		for _, v := range ref["tags"] {
			wantTags = AppendTags(wantTags, []byte(v))
		}
		if token != ref.Get("token") || !slices.Equal(tags, wantTags) {
			t.Fatalf("ParseQuery(%q) = %q, %q; net/url gives %q, %q", q, token, tags, ref.Get("token"), wantTags)
		}
		// Whatever the decoding produced, the seed rule judges it exactly
		// (a decoded '+' or %20 is a space, %00-%1F a control: refused).
		for _, tag := range tags {
			if (ValidateSeedTag(tag) == nil) != seedTagOK(tag) {
				t.Fatalf("ParseQuery(%q): ValidateSeedTag(%q) disagrees with the rule", q, tag)
			}
		}
	})
}
