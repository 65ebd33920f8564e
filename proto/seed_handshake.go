package proto

import (
	"bytes"
	"errors"
	"net/url"
)

// The handshake helpers run once per connection attempt, on whichever
// goroutine performs the upgrade; they are pure and safe for concurrent use.
// They parse, and ValidateSeedTag states the seed's own rule on what a tag
// may contain (an encoding rule of this protocol, not topic syntax): whether
// a missing secret, a missing tag list or a refused tag closes the
// connection, and with which code and reason, is the broker's decision.

// isOWS reports HTTP optional whitespace (RFC 9110 §5.6.3).
func isOWS(c byte) bool { return c == ' ' || c == '\t' }

func trimOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isOWS(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// SeedSecret extracts the secret from an Authorization header value:
// "Token <secret>", "Bearer <secret>" (the scheme word in any case) or a
// bare "<secret>", with surrounding spaces and tabs trimmed. A scheme word
// alone ("Token") yields no secret. An empty result means the secret is
// missing. The result aliases authorization; copy it to keep it beyond the
// header's lifetime. Any other first word ("Basic abc") is not a scheme the
// seed knew, so the whole value is returned as a bare secret and will
// simply not match any token.
func SeedSecret(authorization []byte) []byte {
	v := trimOWS(authorization)
	word := v
	if sp := bytes.IndexAny(v, " \t"); sp >= 0 {
		word = v[:sp]
	}
	if !bytes.EqualFold(word, []byte("token")) && !bytes.EqualFold(word, []byte("bearer")) {
		return v
	}
	return trimOWS(v[len(word):])
}

// AppendTags splits a comma-separated tag list
// ("sensors/+/temp, alerts/#,devices/room1/status"), trims spaces and tabs
// around each item, skips empty items and appends copies of the rest to
// dst as strings. It does not judge the tags: ValidateSeedTag applies the
// seed protocol's character rule and the topic package the filter syntax.
func AppendTags(dst []string, list []byte) []string {
	for len(list) > 0 {
		item := list
		if c := bytes.IndexByte(list, ','); c >= 0 {
			item, list = list[:c], list[c+1:]
		} else {
			list = nil
		}
		if item = trimOWS(item); len(item) > 0 {
			dst = append(dst, string(item))
		}
	}
	return dst
}

// ErrBadQuery is returned by ParseQuery for a malformed percent escape.
var ErrBadQuery = errors.New("proto: malformed percent escape in query string")

// ParseQuery extracts the browser forms of the handshake from a raw URL
// query (with or without the leading '?'): `token` (the secret) and `tags`
// (a comma-separated list, split as by AppendTags; the parameter may also be
// repeated, and all its items are concatenated in order). Keys and values
// are form-decoded (percent escapes, '+' for space: an unencoded
// ?tags=a/+/x yields the tag "a/ /x", which ValidateSeedTag refuses, so
// the client learns to send %2B). If `token` appears more
// than once the first wins, like url.Values.Get. Absent parameters give
// empty results. Any malformed escape, in any parameter, is an error: the
// query is then not trusted at all.
func ParseQuery(rawQuery []byte) (token string, tags []string, err error) {
	q := rawQuery
	if len(q) > 0 && q[0] == '?' {
		q = q[1:]
	}
	haveToken := false
	for len(q) > 0 {
		pair := q
		if a := bytes.IndexByte(q, '&'); a >= 0 {
			pair, q = q[:a], q[a+1:]
		} else {
			q = nil
		}
		if len(pair) == 0 {
			continue
		}
		k, v := pair, []byte(nil)
		if e := bytes.IndexByte(pair, '='); e >= 0 {
			k, v = pair[:e], pair[e+1:]
		}
		key, kerr := url.QueryUnescape(string(k))
		val, verr := url.QueryUnescape(string(v))
		if kerr != nil || verr != nil {
			return "", nil, ErrBadQuery
		}
		switch key {
		case "token":
			if !haveToken {
				token, haveToken = val, true
			}
		case "tags":
			tags = AppendTags(tags, []byte(val))
		}
	}
	return token, tags, nil
}

// ErrSeedTagChars is returned by ValidateSeedTag for a tag containing a
// space or a control character. Its message is safe to send to a client.
var ErrSeedTagChars = errors.New("spaces and control characters are not allowed in a tag")

// ValidateSeedTag applies the seed protocol's own rule on top of the topic
// syntax (which, as in MQTT, allows any UTF-8 but NUL): a subscription tag
// contains no space (U+0020) and no control character (U+0000–U+001F,
// U+007F, the C1 controls U+0080–U+009F).
//
// The rule exists because a tag never legitimately holds them here but
// often does by accident: '+' in an unencoded query (?tags=a/+/x) decodes
// to a space, so the client asked for "a/+/x" and would silently get the
// literal subscription "a/ /x", which nothing ever matches; and an item
// separator mistyped in a header ("a b") would do the same. Refusing the
// tag tells the client what went wrong instead. Items are already trimmed
// by AppendTags, so this only concerns characters inside a tag.
//
// It works on bytes, allocation-free: every character it refuses is ASCII
// or, for C1, the two bytes 0xC2 0x80–0x9F (0xC2 is never a continuation
// byte, so the pair can only be that character). Invalid UTF-8 is not its
// concern: topic.ValidateFilter refuses it.
func ValidateSeedTag(tag string) error {
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		switch {
		case c <= ' ' || c == 0x7f:
			return ErrSeedTagChars
		case c == 0xc2 && i+1 < len(tag) && tag[i+1] >= 0x80 && tag[i+1] <= 0x9f:
			return ErrSeedTagChars
		}
	}
	return nil
}
