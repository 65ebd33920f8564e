package topic

import (
	"errors"
	"math/bits"
	"strings"
	"testing"
)

// refMatch is the obviously-correct reference matcher: split both into
// levels and compare recursively. Used by the exhaustive and fuzz tests.
func refMatch(filter, topic string) bool {
	if filter == "" || topic == "" {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	if strings.HasPrefix(t[0], "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	var rec func(f, t []string) bool
	rec = func(f, t []string) bool {
		switch {
		case len(f) == 0:
			return len(t) == 0
		case f[0] == "#":
			return true
		case len(t) == 0:
			return false
		case f[0] == "+" || f[0] == t[0]:
			return rec(f[1:], t[1:])
		}
		return false
	}
	return rec(f, t)
}

func TestValidate(t *testing.T) {
	long := strings.Repeat("a", MaxBytes)
	deep := strings.Repeat("a/", MaxLevels-1) + "a"
	tests := []struct {
		s              string
		filter, topic_ error
	}{
		{"a", nil, nil},
		{"a/b/c", nil, nil},
		{"/", nil, nil},
		{"/a", nil, nil},
		{"a/", nil, nil},
		{"a//b", nil, nil},
		{"$SYS/x", nil, nil},
		{"ünïcode/ключ", nil, nil},
		{"a b/c", nil, nil},
		{long, nil, nil},
		{long + "a", ErrTooLong, ErrTooLong},
		{deep, nil, nil},
		{deep + "/a", ErrTooManyLevels, ErrTooManyLevels},
		{"", ErrEmpty, ErrEmpty},
		{"a\x00b", ErrNul, ErrNul},
		{"a/\xff", ErrInvalidUTF8, ErrInvalidUTF8},
		{"\xed\xa0\x80", ErrInvalidUTF8, ErrInvalidUTF8}, // surrogate half
		{"#", nil, ErrWildcardInTopic},
		{"+", nil, ErrWildcardInTopic},
		{"a/#", nil, ErrWildcardInTopic},
		{"a/+/b", nil, ErrWildcardInTopic},
		{"+/+/#", nil, ErrWildcardInTopic},
		{"/+", nil, ErrWildcardInTopic},
		{"+/", nil, ErrWildcardInTopic},
		{"a/#/b", ErrWildcardPlacement, ErrWildcardInTopic},
		{"#/", ErrWildcardPlacement, ErrWildcardInTopic},
		{"a#", ErrWildcardPlacement, ErrWildcardInTopic},
		{"a/b#", ErrWildcardPlacement, ErrWildcardInTopic},
		{"a+", ErrWildcardPlacement, ErrWildcardInTopic},
		{"+a", ErrWildcardPlacement, ErrWildcardInTopic},
		{"a/++/b", ErrWildcardPlacement, ErrWildcardInTopic},
		{"##", ErrWildcardPlacement, ErrWildcardInTopic},
		{"+#", ErrWildcardPlacement, ErrWildcardInTopic},
	}
	for _, tt := range tests {
		name := tt.s
		if len(name) > 40 {
			name = name[:40] + "…"
		}
		if got := ValidateFilter(tt.s); !errors.Is(got, tt.filter) || (got == nil) != (tt.filter == nil) {
			t.Errorf("ValidateFilter(%q) = %v, want %v", name, got, tt.filter)
		}
		if got := ValidateTopic(tt.s); !errors.Is(got, tt.topic_) || (got == nil) != (tt.topic_ == nil) {
			t.Errorf("ValidateTopic(%q) = %v, want %v", name, got, tt.topic_)
		}
	}
}

func TestErrorsDistinct(t *testing.T) {
	errs := []error{ErrEmpty, ErrTooLong, ErrTooManyLevels, ErrInvalidUTF8, ErrNul, ErrWildcardPlacement, ErrWildcardInTopic}
	seen := map[string]bool{}
	for _, e := range errs {
		if seen[e.Error()] {
			t.Errorf("duplicate message %q", e)
		}
		seen[e.Error()] = true
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a", "a", true},
		{"a", "b", false},
		{"a", "a/b", false},
		{"a/b", "a", false},
		{"a/b/c", "a/b/c", true},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a//c", true},
		{"a/+/c", "a/b/d", false},
		{"a/+/c", "a/b/c/d", false},
		{"a/+", "a", false},
		{"a/+", "a/", true},
		{"+", "a", true},
		{"+", "", false},
		{"+", "/", false},
		{"+/+", "/", true},
		{"/+", "/a", true},
		{"/+", "a", false},
		{"+/b", "a/b", true},
		{"a/#", "a", true},
		{"a/#", "a/", true},
		{"a/#", "a/b", true},
		{"a/#", "a/b/c", true},
		{"a/#", "b", false},
		{"a/#", "ab", false},
		{"a/b/#", "a", false},
		{"a/+/#", "a", false},
		{"a/+/#", "a/b", true},
		{"#", "a", true},
		{"#", "/", true},
		{"#", "a/b/c", true},
		{"a//b", "a//b", true},
		{"a//b", "a/b", false},
		// The '$' rule.
		{"#", "$SYS", false},
		{"#", "$SYS/x", false},
		{"+", "$SYS", false},
		{"+/x", "$SYS/x", false},
		{"+/#", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"$SYS/#", "$SYS", true},
		{"$SYS/+", "$SYS/x", true},
		{"$SYS", "$SYS", true},
		{"a/+", "a/$x", true},
		{"a/#", "a/$x", true},
		{"#", "a/$x", true},
		// Invalid inputs give an answer, not a panic.
		{"", "a", false},
		{"a", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if got := Match(tt.filter, tt.topic); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
		if tt.filter != "" && tt.topic != "" {
			if ref := refMatch(tt.filter, tt.topic); ref != tt.want {
				t.Errorf("refMatch(%q, %q) = %v, table says %v", tt.filter, tt.topic, ref, tt.want)
			}
		}
	}
}

func TestContains(t *testing.T) {
	tests := []struct {
		outer, inner string
		want         bool
	}{
		{"a", "a", true},
		{"a", "b", false},
		{"#", "a", true},
		{"#", "a/b/c", true},
		{"#", "+/#", true},
		{"+/#", "#", true},
		{"#", "#", true},
		{"a/#", "a", true},
		{"a/#", "a/#", true},
		{"a/#", "a/b/#", true},
		{"a/#", "a/+", true},
		{"a/#", "#", false},
		{"a/+", "a/#", false},
		{"a/+/#", "a/#", false},
		{"a/+", "a/b", true},
		{"a/+", "a/+", true},
		{"a/b", "a/+", false},
		{"+/+", "a/b", true},
		{"+/+", "a/+", true},
		{"+/+", "+/b", true},
		{"+/b", "+/+", false},
		{"+", "a/b", false},
		{"+/+", "a", false},
		{"a/b/#", "a/#", false},
		{"sensors/+/temp", "sensors/room1/temp", true},
		{"sensors/#", "sensors/+/temp", true},
		// The '$' rule: first-level wildcards never cover '$' topics.
		{"#", "$SYS/+", false},
		{"#", "$SYS", false},
		{"#", "$SYS/#", false},
		{"+/+", "$x/+", false},
		{"+/#", "$x", false},
		{"$SYS/#", "$SYS/+", true},
		{"$SYS/#", "$SYS", true},
		{"$SYS/+", "$SYS/x", true},
		{"#", "+", true},
		{"+", "+", true},
		{"a/#", "a/$x", true},
		// Invalid input: an answer, not a panic.
		{"", "a", false},
		{"a", "", false},
	}
	for _, tt := range tests {
		if got := Contains(tt.outer, tt.inner); got != tt.want {
			t.Errorf("Contains(%q, %q) = %v, want %v", tt.outer, tt.inner, got, tt.want)
		}
	}
}

// enumerate returns every sequence of 1..maxLevels levels from alphabet,
// joined with '/'; with hash, also every such sequence of up to maxLevels-1
// levels followed by a final "#".
func enumerate(alphabet []string, maxLevels int, hash bool) []string {
	var out []string
	var rec func(prefix string, depth int)
	rec = func(prefix string, depth int) {
		if depth == maxLevels {
			return
		}
		sep := ""
		if depth > 0 {
			sep = "/"
		}
		if hash {
			out = append(out, prefix+sep+"#")
		}
		for _, l := range alphabet {
			s := prefix + sep + l
			if s != "" { // the empty string is no topic, but "/" is
				out = append(out, s)
			}
			rec(s, depth+1)
		}
	}
	rec("", 0)
	return out
}

// TestMatchContainsExhaustive checks Match against refMatch, and Contains for
// soundness and completeness, over every filter of up to 4 levels built from
// {a, "", $s, +, #} and every topic of up to 5 levels built from
// {a, b, "", $s}. "b" appears in no filter, so it is the fresh level a
// counterexample needs, and one level more than the longest filter is
// enough for '#' to show.
func TestMatchContainsExhaustive(t *testing.T) {
	filters := enumerate([]string{"a", "", "$s", "+"}, 4, true)
	topics := enumerate([]string{"a", "b", "", "$s"}, 5, false)
	words := (len(topics) + 63) / 64
	sets := make([][]uint64, len(filters))
	for i, f := range filters {
		if err := ValidateFilter(f); err != nil {
			t.Fatalf("enumerated filter %q invalid: %v", f, err)
		}
		sets[i] = make([]uint64, words)
		for j, tp := range topics {
			got := Match(f, tp)
			if got != refMatch(f, tp) {
				t.Fatalf("Match(%q, %q) = %v, reference says %v", f, tp, got, !got)
			}
			if got {
				sets[i][j/64] |= 1 << (j % 64)
			}
		}
	}
	checked := 0
	for o := range filters {
		for i := range filters {
			got := Contains(filters[o], filters[i])
			// inner ⊆ outer over the enumerated topics?
			subset, witness := true, -1
			for w := 0; w < words; w++ {
				if extra := sets[i][w] &^ sets[o][w]; extra != 0 {
					subset, witness = false, w*64+bits.TrailingZeros64(extra)
					break
				}
			}
			if got && !subset {
				t.Fatalf("Contains(%q, %q) = true but %q matches the inner and not the outer", filters[o], filters[i], topics[witness])
			}
			if !got && subset {
				t.Fatalf("Contains(%q, %q) = false but no enumerated topic tells them apart", filters[o], filters[i])
			}
			checked++
		}
	}
	t.Logf("checked %d filters × %d topics, %d containment pairs", len(filters), len(topics), checked)
}

func TestMatchAllocs(t *testing.T) {
	var sink bool
	n := testing.AllocsPerRun(100, func() {
		sink = Match("sensors/+/temp/#", "sensors/room1/temp/c") && Match("#", "x") && !Match("a/b", "a/c")
		sink = sink && Contains("sensors/#", "sensors/+/temp") && !Contains("#", "$SYS/+")
	})
	if n != 0 {
		t.Errorf("Match/Contains allocate %v times per run", n)
	}
	if !sink {
		t.Error("unexpected results")
	}
	n = testing.AllocsPerRun(100, func() {
		_ = ValidateFilter("sensors/+/temp/#")
		_ = ValidateTopic("sensors/ünï/temp")
		_ = ValidateTopic("a/#")
	})
	if n != 0 {
		t.Errorf("Validate allocates %v times per run", n)
	}
}
