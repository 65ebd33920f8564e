// Package topic owns Gatecast's topic and filter syntax (MQTT rules), topic
// matching, filter containment, the subscription index and the compiled
// pattern sets that grants are checked against. It is the one matcher of
// Gatecast: message routing and ACL checks both use it, so a topic is never
// matched by two implementations that could disagree.
//
// The package must not know about sessions, tokens, permissions or the
// network: subscribers in the Index are an opaque comparable type chosen by
// the caller, and a PatternSet's values and classes mean whatever its user
// (acl) decides.
//
// Syntax (MQTT 3.1.1/5 rules):
//   - a topic or filter is 1..MaxBytes bytes of UTF-8 without NUL, split into
//     at most MaxLevels levels on '/'; empty levels are valid ("a//b", "/a");
//   - in a filter '+' is a whole level and matches exactly one level (possibly
//     empty); '#' is a whole level, must be the last one, and matches the
//     parent level and any number of levels below it ("a/#" matches "a",
//     "a/b" and "a/b/c"; "#" matches every topic but see the next rule);
//   - a topic whose first level starts with '$' is not matched by a filter
//     whose first level is a wildcard ("#", "+/x"), so "$SYS/x" is matched by
//     "$SYS/#" but not by "#";
//   - a publish topic contains no '+' and no '#'.
//
// ValidateFilter, ValidateTopic, Match and Contains are pure, allocation-free
// and safe for concurrent use. Index (index.go) is the subscription index:
// Match on it takes no lock and allocates nothing in steady state, so any
// goroutine - typically the one that decoded a publish - may call it.
// PatternSet (patternset.go) is an immutable, persistent set of patterns
// that answers "does some pattern match this topic" and "does some pattern
// contain this filter" - Match and Contains over the whole set - in one walk
// of the subject's levels, whatever the number of patterns; acl compiles a
// token's grants into one.
package topic

import (
	"errors"
	"strings"
	"unicode/utf8"
)

const (
	// MaxBytes is the maximum length of a topic or filter in bytes.
	MaxBytes = 2048
	// MaxLevels is the maximum number of '/'-separated levels.
	MaxLevels = 64
)

// Validation errors. Each is distinct so callers can map them to protocol
// error codes; the messages are safe to send to clients.
var (
	ErrEmpty             = errors.New("topic: empty topic or filter")
	ErrTooLong           = errors.New("topic: topic or filter longer than 2048 bytes")
	ErrTooManyLevels     = errors.New("topic: topic or filter has more than 64 levels")
	ErrInvalidUTF8       = errors.New("topic: topic or filter is not valid UTF-8")
	ErrNul               = errors.New("topic: topic or filter contains a NUL character")
	ErrWildcardPlacement = errors.New("topic: '+' must be a whole level and '#' a whole last level")
	ErrWildcardInTopic   = errors.New("topic: wildcard '+' or '#' not allowed in a publish topic")
)

// checkCommon applies the rules shared by topics and filters: length,
// NUL and UTF-8. It returns the number of levels, and whether a wildcard
// character appears (placement is the caller's to judge).
func checkCommon(s string) (levels int, wild bool, err error) {
	if len(s) == 0 {
		return 0, false, ErrEmpty
	}
	if len(s) > MaxBytes {
		return 0, false, ErrTooLong
	}
	levels = 1
	ascii := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == 0:
			return 0, false, ErrNul
		case c == '/':
			levels++
		case c == '+' || c == '#':
			wild = true
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(s) {
		return 0, false, ErrInvalidUTF8
	}
	if levels > MaxLevels {
		return 0, false, ErrTooManyLevels
	}
	return levels, wild, nil
}

// ValidateFilter reports whether f is a valid subscription filter or grant
// pattern. '+' must be a whole level; '#' must be a whole level and the last.
func ValidateFilter(f string) error {
	if _, _, err := checkCommon(f); err != nil {
		return err
	}
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '+' && c != '#' {
			continue
		}
		if i > 0 && f[i-1] != '/' {
			return ErrWildcardPlacement
		}
		if c == '+' {
			if i+1 < len(f) && f[i+1] != '/' {
				return ErrWildcardPlacement
			}
		} else if i+1 != len(f) {
			return ErrWildcardPlacement
		}
	}
	return nil
}

// ValidateTopic reports whether t is a valid publish topic: a valid filter
// without any '+' or '#'.
func ValidateTopic(t string) error {
	_, err := TopicLevels(t)
	return err
}

// TopicLevels validates t as ValidateTopic does and returns its number of
// levels, in one pass over t: the publish path checks a broker's own level
// cap with it instead of counting the separators again.
func TopicLevels(t string) (levels int, err error) {
	levels, wild, err := checkCommon(t)
	if err != nil {
		return 0, err
	}
	if wild {
		return 0, ErrWildcardInTopic
	}
	return levels, nil
}

// IsWildcard reports whether the filter contains a wildcard level. For a
// valid filter that is the same as containing '+' or '#'.
func IsWildcard(filter string) bool {
	return strings.IndexByte(filter, '+') >= 0 || strings.IndexByte(filter, '#') >= 0
}

// nextLevel returns the level of s starting at i and the index just past it
// (the index of the '/' or len(s)).
func nextLevel(s string, i int) (level string, end int) {
	if j := strings.IndexByte(s[i:], '/'); j >= 0 {
		return s[i : i+j], i + j
	}
	return s[i:], len(s)
}

// Match reports whether topic is matched by filter under MQTT semantics.
// It assumes both are valid (see ValidateFilter, ValidateTopic); on invalid
// input it returns some answer without panicking. It never allocates.
func Match(filter, topic string) bool {
	if len(filter) == 0 || len(topic) == 0 {
		return false
	}
	if topic[0] == '$' && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	fi, ti := 0, 0
	for {
		fl, fe := nextLevel(filter, fi)
		if fl == "#" {
			return true
		}
		tl, te := nextLevel(topic, ti)
		if fl != "+" && fl != tl {
			return false
		}
		filterLast, topicLast := fe == len(filter), te == len(topic)
		switch {
		case filterLast && topicLast:
			return true
		case topicLast:
			// "a/#" also matches its parent "a".
			return filter[fe+1:] == "#"
		case filterLast:
			return false
		}
		fi, ti = fe+1, te+1
	}
}

// Contains reports whether every topic matched by filter inner is also
// matched by filter outer; it is the check "may a client granted outer
// subscribe to inner". It honours the '$' rule ("#" does not contain
// "$SYS/+", "+/+" does not contain "$x/+"). It assumes valid filters and
// never panics or allocates. The MaxLevels/MaxBytes bounds on topics are
// ignored, which can only make it answer false where a bounded analysis
// would answer true (safe for access control).
func Contains(outer, inner string) bool {
	if len(outer) == 0 || len(inner) == 0 {
		return false
	}
	oi, ii := 0, 0
	first := true
	for {
		ol, oe := nextLevel(outer, oi)
		il, ie := nextLevel(inner, ii)
		// A literal first level starting with '$' is never matched by a
		// first-level wildcard.
		dollar := first && il != "+" && il != "#" && strings.HasPrefix(il, "$")
		switch {
		case ol == "#":
			return !dollar
		case il == "#":
			// inner matches its parent topic and every depth below it; only
			// '#' covers that. When the parent would be the empty string
			// (inner is "#" or "/#"), which is no topic, "+/#" covers it too.
			parentEmpty := ii == 0 || ii == 1
			return parentEmpty && ol == "+" && outer[oe:] == "/#"
		case ol == "+":
			if dollar {
				return false
			}
		case ol != il:
			return false
		}
		outerLast, innerLast := oe == len(outer), ie == len(inner)
		switch {
		case outerLast && innerLast:
			return true
		case innerLast:
			return outer[oe+1:] == "#"
		case outerLast:
			return false
		}
		oi, ii = oe+1, ie+1
		first = false
	}
}
