package broker

import (
	"strconv"
	"unicode"
	"unicode/utf8"
)

// maxReason is the longest close reason: a close frame's payload is at most
// 125 bytes, two of them the code.
const maxReason = 123

// closeReason makes s fit a close frame. A reason must be valid UTF-8 (RFC
// 6455 §5.5.1, and browsers fail the whole connection - the client never
// sees our code - when it is not), and reasons often echo what the client
// sent. So invalid bytes become \xNN, non-printable characters \uNNNN, and
// the result is cut at maxReason bytes between two whole characters or
// escapes. A reason that is already fine is returned as is, without
// allocating.
func closeReason(s string) string {
	if len(s) <= maxReason && printable(s) {
		return s
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 0, maxReason)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		piece := s[i : i+n]
		switch {
		case r == utf8.RuneError && n == 1:
			piece = string([]byte{'\\', 'x', hex[s[i]>>4], hex[s[i]&15]})
		case !unicode.IsPrint(r):
			piece = escapeRune(r)
		}
		if len(b)+len(piece) > maxReason {
			break
		}
		b = append(b, piece...)
		i += n
	}
	return string(b)
}

// printable reports whether s is valid UTF-8 made of printable characters
// (unicode.IsPrint: letters, marks, numbers, punctuation, symbols and the
// ASCII space).
func printable(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < ' ' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || !unicode.IsPrint(r) {
			return false
		}
		i += n
	}
	return true
}

// escapeRune writes a non-printable character as Go does in a quoted string.
func escapeRune(r rune) string {
	q := strconv.QuoteRuneToASCII(r) // '\x00', '\u0085', '\U000e0001', or '\t'
	return q[1 : len(q)-1]
}

// tagReason builds a refusal reason that names a client's tag:
// prefix + the tag quoted + suffix, within maxReason bytes. The tag is what
// gets shortened (its quoted form is cut between whole characters or
// escapes and followed by "…"), so the explanation around it always
// survives. Quoting escapes invalid UTF-8, control characters, '"' and
// '\', so the reason is unambiguous and valid UTF-8 whatever the tag holds.
func tagReason(prefix, tag, suffix string) string {
	return tagReasonShown(prefix, tag, suffix, maxReason)
}

// tagReasonShown is tagReason showing at most shown bytes of the quoted tag
// (quotes included): for a tag refused for its size, its start is enough.
func tagReasonShown(prefix, tag, suffix string, shown int) string {
	const ellipsis = "…"
	budget := min(maxReason-len(prefix)-len(suffix), shown)
	if len(tag)+2 <= budget { // quoting never shortens: only then can it fit whole
		if q := strconv.Quote(tag); len(q) <= budget {
			return closeReason(prefix + q + suffix)
		}
	}
	if budget < len(`""`+ellipsis) {
		return closeReason(prefix + suffix)
	}
	q := []byte{'"'}
	for i := 0; i < len(tag); {
		_, n := utf8.DecodeRuneInString(tag[i:])
		before := len(q)
		q = strconv.AppendQuote(q, tag[i:i+n])
		q = append(q[:before], q[before+1:len(q)-1]...) // the escaped character, without its quotes
		if len(q)+len(`"`+ellipsis) > budget {
			q = q[:before]
			break
		}
		i += n
	}
	return closeReason(prefix + string(q) + `"` + ellipsis + suffix)
}
