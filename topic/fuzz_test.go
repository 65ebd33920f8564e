package topic

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzAlphabet is the level vocabulary FuzzIndex builds filters and topics
// from: few enough values that filters and topics collide often, including
// wildcards in wrong places ("#" not last, "a+") and '$' levels.
var fuzzAlphabet = []string{"a", "b", "", "$s", "+", "#", "c", "a+"}

// fuzzOps decodes FuzzIndex input. Each op is one byte - kind (low 2 bits:
// 0,1 subscribe, 2 unsubscribe, 3 match), subscriber id (next 3 bits),
// level count minus one (top 3 bits) - followed by one byte per level
// indexing fuzzAlphabet. A truncated last op is dropped.
type fuzzOp struct {
	kind int
	id   int
	s    string
}

func fuzzOps(data []byte) []fuzzOp {
	var ops []fuzzOp
	for i := 0; i < len(data); {
		op := data[i]
		i++
		n := int(op>>5) + 1
		if i+n > len(data) {
			break
		}
		levels := make([]string, n)
		for j := range n {
			levels[j] = fuzzAlphabet[int(data[i+j])%len(fuzzAlphabet)]
		}
		i += n
		ops = append(ops, fuzzOp{kind: int(op & 3), id: int(op>>2) & 7, s: strings.Join(levels, "/")})
	}
	return ops
}

type fuzzPair struct {
	filter string
	id     int
}

// FuzzIndex applies random subscribe/unsubscribe/match sequences to indexes
// with a normal cache, a two-slot cache and no cache, and compares every
// answer with a naive reference: a set of pairs scanned with Match.
func FuzzIndex(f *testing.F) {
	f.Add([]byte{0x20, 0, 4, 0x23, 0, 1})                   // sub a/+ ; match a/b
	f.Add([]byte{0x00, 5, 0x03, 0, 0x02, 5, 0x03, 1})       // sub # ; match a ; unsub # ; match b
	f.Add([]byte{0x20, 3, 5, 0x03, 3, 0x23, 3, 0, 0x23, 2}) // $s/# vs $s, $s/a
	f.Fuzz(func(t *testing.T, data []byte) {
		ops := fuzzOps(data)
		idx := []*Index[int]{NewIndex[int](), NewIndex[int](WithCacheSize(2)), NewIndex[int](WithoutCache())}
		model := map[fuzzPair]bool{}
		topics := map[string]bool{"a": true, "$s": true, "a/b": true, "/": true}
		check := func(topic string) {
			var want []int
			for p := range model {
				if Match(p.filter, topic) {
					want = append(want, p.id)
				}
			}
			slices.Sort(want)
			for k, x := range idx {
				for attempt := range 3 { // miss, admission, hit
					got := x.Match(topic, nil)
					slices.Sort(got)
					if !slices.Equal(got, want) {
						t.Fatalf("index %d attempt %d: Match(%q) = %v, reference %v", k, attempt, topic, got, want)
					}
				}
			}
		}
		for _, op := range ops {
			switch op.kind {
			case 0, 1:
				p := fuzzPair{op.s, op.id}
				want := ValidateFilter(op.s) == nil && !model[p]
				for k, x := range idx {
					if got := x.Subscribe(op.s, op.id); got != want {
						t.Fatalf("index %d: Subscribe(%q, %d) = %v, want %v", k, op.s, op.id, got, want)
					}
				}
				if want {
					model[p] = true
				}
			case 2:
				p := fuzzPair{op.s, op.id}
				want := model[p]
				for k, x := range idx {
					if got := x.Unsubscribe(op.s, op.id); got != want {
						t.Fatalf("index %d: Unsubscribe(%q, %d) = %v, want %v", k, op.s, op.id, got, want)
					}
				}
				delete(model, p)
			case 3:
				if ValidateTopic(op.s) != nil {
					for _, x := range idx {
						_ = x.Match(op.s, nil) // must not panic; answer unspecified
					}
					continue
				}
				topics[op.s] = true
				check(op.s)
			}
		}
		for topic := range topics {
			check(topic)
		}
		for k, x := range idx {
			if x.Count() != len(model) {
				t.Fatalf("index %d: Count = %d, want %d", k, x.Count(), len(model))
			}
		}
	})
}

// FuzzMatch checks that Match and Contains never panic, that Match agrees
// with the reference matcher, and that Contains is sound and consistent with
// Match on the fuzzed topic.
func FuzzMatch(f *testing.F) {
	f.Add("a/+/c", "a/b/c", "a/b/c")
	f.Add("#", "$SYS/+", "$SYS/x")
	f.Add("a/#", "a", "a")
	f.Add("+/#", "#", "/")
	f.Add("/+/#", "/#", "//x")
	f.Add("+/+", "$x/+", "$x/y")
	f.Fuzz(func(t *testing.T, outer, inner, topic string) {
		m := Match(outer, topic)
		c := Contains(outer, inner)
		_ = Match(inner, topic)
		_ = Contains(inner, outer)
		fo, fi, tv := ValidateFilter(outer) == nil, ValidateFilter(inner) == nil, ValidateTopic(topic) == nil
		if fo && tv && m != refMatch(outer, topic) {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", outer, topic, m, !m)
		}
		if fo && !Contains(outer, outer) {
			t.Fatalf("Contains(%q, itself) = false", outer)
		}
		if tv {
			if !Match(topic, topic) {
				t.Fatalf("Match(%q, itself) = false", topic)
			}
			// A topic used as a filter matches exactly itself.
			if fo && Contains(outer, topic) != m {
				t.Fatalf("Contains(%q, %q) = %v but Match = %v", outer, topic, !m, m)
			}
		}
		if fo && fi && tv && c && Match(inner, topic) && !m {
			t.Fatalf("Contains(%q, %q) but %q matches only the inner", outer, inner, topic)
		}
	})
}

// refValid is the reference validator: levels must each be '+', '#' (last
// only) or free of both; the shared rules are checked separately.
func refValid(s string, filter bool) bool {
	if s == "" || len(s) > MaxBytes || !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return false
	}
	levels := strings.Split(s, "/")
	if len(levels) > MaxLevels {
		return false
	}
	for i, l := range levels {
		if !strings.ContainsAny(l, "+#") {
			continue
		}
		if !filter {
			return false
		}
		if l != "+" && !(l == "#" && i == len(levels)-1) {
			return false
		}
	}
	return true
}

// FuzzValidate checks that validation never panics, returns only the
// documented errors, agrees with the reference validator, and that whatever
// it accepts Match handles sensibly.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a/b", "a/+/#", "#", "a/#/b", "a+", "\xff", "a\x00", "", "/", "$SYS/x", strings.Repeat("a/", 70)} {
		f.Add(s)
	}
	known := []error{ErrEmpty, ErrTooLong, ErrTooManyLevels, ErrInvalidUTF8, ErrNul, ErrWildcardPlacement, ErrWildcardInTopic}
	f.Fuzz(func(t *testing.T, s string) {
		ef, et := ValidateFilter(s), ValidateTopic(s)
		for _, err := range []error{ef, et} {
			if err != nil && !slices.ContainsFunc(known, func(k error) bool { return errors.Is(err, k) }) {
				t.Fatalf("undocumented error %v", err)
			}
		}
		if (ef == nil) != refValid(s, true) {
			t.Fatalf("ValidateFilter(%q) = %v, reference valid=%v", s, ef, !(ef == nil))
		}
		if (et == nil) != refValid(s, false) {
			t.Fatalf("ValidateTopic(%q) = %v, reference valid=%v", s, et, !(et == nil))
		}
		if ef == nil && et != nil && et != ErrWildcardInTopic {
			t.Fatalf("%q is a valid filter but ValidateTopic says %v", s, et)
		}
		if n, err := TopicLevels(s); err != et || (err == nil && n != strings.Count(s, "/")+1) {
			t.Fatalf("TopicLevels(%q) = %d, %v; ValidateTopic says %v, levels %d", s, n, err, et, strings.Count(s, "/")+1)
		}
		if et == nil && (!Match(s, s) || IsWildcard(s)) {
			t.Fatalf("valid topic %q does not match itself", s)
		}
		if ef == nil && !Contains(s, s) {
			t.Fatalf("valid filter %q does not contain itself", s)
		}
	})
}
