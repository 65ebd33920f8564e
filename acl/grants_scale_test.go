package acl

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gatecast/gatecast/topic"
)

// naive is the definition Grants must implement: the last grant per tag,
// valid ones only, scanned with topic.Match and topic.Contains.
type naive map[int64]Grant

func (n naive) canPublish(t string) bool {
	if topic.ValidateTopic(t) != nil {
		return false
	}
	for _, g := range n {
		if g.Permission == PermReadWrite && topic.Match(g.Pattern, t) {
			return true
		}
	}
	return false
}

func (n naive) canSubscribe(f string) bool {
	if topic.ValidateFilter(f) != nil {
		return false
	}
	for _, g := range n {
		if topic.Contains(g.Pattern, f) {
			return true
		}
	}
	return false
}

func (n naive) apply(g Grant) {
	if validGrant(g) {
		n[g.TagID] = g
	} else {
		delete(n, g.TagID)
	}
}

func (n naive) sorted() []Grant {
	out := make([]Grant, 0, len(n))
	for _, g := range n {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Grant) int { return int(a.TagID - b.TagID) })
	return out
}

// bigGrants returns n grants over several pattern families (literal
// device topics, '+' and '#' at various depths, '$' topics, empty levels),
// with mixed permissions and overlaps, in tag order.
func bigGrants(rng *rand.Rand, n int) []Grant {
	gs := make([]Grant, n)
	for i := range gs {
		var p string
		switch i % 8 {
		case 0:
			p = fmt.Sprintf("dev/%d/#", i)
		case 1:
			p = fmt.Sprintf("dev/%d/cmd", i)
		case 2:
			p = fmt.Sprintf("fleet/site%d/+/telemetry/#", i%97)
		case 3:
			p = fmt.Sprintf("u/%d/+/x%d", i, i%5)
		case 4:
			p = fmt.Sprintf("$SYS/n%d/#", i%13)
		case 5:
			p = fmt.Sprintf("+/r%d/+", i%31)
		case 6:
			p = fmt.Sprintf("a//%d", i%17)
		default:
			p = fmt.Sprintf("dev/%d", i)
		}
		perm := PermRead
		if rng.IntN(2) == 0 {
			perm = PermReadWrite
		}
		gs[i] = Grant{TagID: int64(i + 1), Pattern: p, Permission: perm}
	}
	return gs
}

// subjects derives topics and filters from the grants' patterns: the
// pattern itself, concrete topics it matches, near misses, wider and
// narrower filters, '$' variants.
func subjects(rng *rand.Rand, gs []Grant, n int) []string {
	words := []string{"a", "b", "", "$x", "cmd", "telemetry", "x1", "r3"}
	var out []string
	for range n {
		levels := strings.Split(gs[rng.IntN(len(gs))].Pattern, "/")
		for j := range levels {
			switch r := rng.IntN(10); {
			case levels[j] == "#" && r < 5:
				levels = append(levels[:j], words[rng.IntN(len(words))], "z")
			case levels[j] == "+" && r < 6:
				levels[j] = words[rng.IntN(len(words))]
			case r == 0:
				levels[j] = "+"
			case r == 1:
				levels[j] = words[rng.IntN(len(words))]
			}
			if j >= len(levels)-1 {
				break
			}
		}
		switch rng.IntN(6) {
		case 0:
			levels = levels[:max(1, len(levels)-1)]
		case 1:
			levels = append(levels, "#")
		case 2:
			levels = append(levels, words[rng.IntN(len(words))])
		}
		out = append(out, strings.Join(levels, "/"))
	}
	return append(out, "#", "+", "+/#", "$SYS/#", "$SYS/n3/a", "dev/+/cmd", "dev/#", "a//3", "/#", "a/#/b", "")
}

// A 10,000-grant token's checks agree with the naive definition on
// thousands of derived topics and filters, whether compiled at once or
// reached by single changes.
func TestGrantsAgreeWithNaive10k(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	gs := bigGrants(rng, 10_000)
	ref := naive{}
	for _, g := range gs {
		ref.apply(g)
	}
	g := CompileGrants(gs)
	if g.Len() != 10_000 || !slices.Equal(g.Patterns(), gs) {
		t.Fatalf("Len %d / Patterns differ from the input", g.Len())
	}
	n := 1500
	if testing.Short() {
		n = 200
	}
	subs := subjects(rng, gs, n)
	allowed := [2]int{}
	check := func(g *Grants, ref naive, subs []string) {
		t.Helper()
		for _, s := range subs {
			if got, want := g.CanPublish(s), ref.canPublish(s); got != want {
				t.Fatalf("CanPublish(%q) = %v, naive %v", s, got, want)
			} else if got {
				allowed[0]++
			}
			if got, want := g.CanSubscribe(s), ref.canSubscribe(s); got != want {
				t.Fatalf("CanSubscribe(%q) = %v, naive %v", s, got, want)
			} else if got {
				allowed[1]++
			}
		}
	}
	check(g, ref, subs)
	// Both answers occur often enough for the comparison to mean something.
	if allowed[0] < n/20 || allowed[1] < n/10 || allowed[1] > len(subs)-n/10 {
		t.Fatalf("subjects too one-sided: %d publishable, %d subscribable of %d", allowed[0], allowed[1], len(subs))
	}
	t.Logf("%d subjects: %d publishable, %d subscribable", len(subs), allowed[0], allowed[1])
	// Single changes from the 10,000: downgrades, upgrades, pattern
	// changes, removals, invalid values, and new tags.
	for i := range 300 {
		old := gs[rng.IntN(len(gs))]
		var ng *Grants
		switch i % 5 {
		case 0:
			ng = g.Without(old.TagID)
			delete(ref, old.TagID)
		case 1:
			c := old
			c.Permission = 3 - c.Permission // read ↔ readwrite
			ng = g.With(c)
			ref.apply(c)
		case 2:
			c := gs[rng.IntN(len(gs))]
			c.TagID = old.TagID // the tag now has another pattern
			ng = g.With(c)
			ref.apply(c)
		case 3:
			c := Grant{TagID: old.TagID, Pattern: "bad/#/x", Permission: PermReadWrite}
			ng = g.With(c)
			ref.apply(c)
		default:
			c := Grant{TagID: int64(20_000 + i), Pattern: fmt.Sprintf("new/%d/+", i), Permission: PermReadWrite}
			ng = g.With(c)
			ref.apply(c)
		}
		g = ng
		if i%50 == 0 {
			check(g, ref, subs[:min(len(subs), 200)])
		}
	}
	check(g, ref, subs)
	if !g.Equal(CompileGrants(ref.sorted())) || !slices.Equal(g.Patterns(), ref.sorted()) {
		t.Fatal("grants after single changes differ from the same grants compiled")
	}
}

// With and Without agree with CompileGrants of the resulting grants, and
// never change the set they start from.
func TestGrantsWithWithout(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	patterns := []string{"a/#", "a/+", "a/b", "#", "+/#", "$s/#", "a/#/b", "b", "a//b", "+"}
	subs := []string{"a", "a/b", "a/c", "b", "a/+", "a/#", "#", "+", "$s", "$s/x", "/", "a//b", "+/+", "c/d"}
	var g *Grants
	ref := naive{}
	type snap struct {
		g   *Grants
		ref naive
	}
	var snaps []snap
	for i := range 500 {
		tag := int64(rng.IntN(6))
		if rng.IntN(4) == 0 {
			g = g.Without(tag)
			delete(ref, tag)
		} else {
			gr := Grant{TagID: tag, Pattern: patterns[rng.IntN(len(patterns))], Permission: Permission(rng.IntN(4))}
			ng := g.With(gr)
			if old, ok := g.Grant(tag); ok && old == gr && ng != g {
				t.Fatal("With of the grant the tag already has made a new set")
			}
			g = ng
			ref.apply(gr)
		}
		want := CompileGrants(ref.sorted())
		if !g.Equal(want) || g.Len() != len(ref) || !slices.Equal(g.Patterns(), ref.sorted()) {
			t.Fatalf("step %d: %v, want %v", i, g.Patterns(), ref.sorted())
		}
		for _, s := range subs {
			if g.CanPublish(s) != ref.canPublish(s) || g.CanSubscribe(s) != ref.canSubscribe(s) {
				t.Fatalf("step %d: %v disagrees with the naive checks on %q", i, g.Patterns(), s)
			}
		}
		for tag := range int64(6) {
			got, ok := g.Grant(tag)
			want, wok := ref[tag]
			if ok != wok || got != want {
				t.Fatalf("Grant(%d) = %v %v, want %v %v", tag, got, ok, want, wok)
			}
		}
		if i%25 == 0 {
			c := naive{}
			for k, v := range ref {
				c[k] = v
			}
			snaps = append(snaps, snap{g, c})
		}
	}
	for _, s := range snaps {
		if !slices.Equal(s.g.Patterns(), s.ref.sorted()) {
			t.Fatal("a later change altered an earlier set")
		}
	}
	var nilG *Grants
	if nilG.Without(1) != nil || nilG.With(Grant{1, "a/#/b", PermRead}) != nil {
		t.Error("removing from or adding an invalid grant to nil grants gave a set")
	}
	if g := nilG.With(Grant{1, "a", PermRead}); !g.CanSubscribe("a") || g.Len() != 1 {
		t.Error("With on nil grants")
	}
}

// CompileGrants keeps the last grant given for a tag ID, whatever the
// order of the input (stores give each tag once, in ID order).
func TestCompileGrantsUnsortedAndRepeated(t *testing.T) {
	in := []Grant{
		{TagID: 9, Pattern: "z", Permission: PermRead},
		{TagID: 2, Pattern: "b", Permission: PermReadWrite},
		{TagID: 9, Pattern: "y", Permission: PermReadWrite}, // replaces z
		{TagID: 4, Pattern: "d", Permission: PermRead},
		{TagID: 4, Pattern: "d/#/x", Permission: PermRead}, // invalid: tag 4 grants nothing
	}
	g := CompileGrants(in)
	want := []Grant{{2, "b", PermReadWrite}, {9, "y", PermReadWrite}}
	if !slices.Equal(g.Patterns(), want) {
		t.Fatalf("Patterns = %v, want %v", g.Patterns(), want)
	}
	if g.CanSubscribe("z") || g.CanSubscribe("d") || !g.CanPublish("y") {
		t.Fatal("checks do not follow the last grant of each tag")
	}
}

func TestGrantsLargeAllocs(t *testing.T) {
	g := CompileGrants(bigGrants(rand.New(rand.NewPCG(1, 1)), 10_000))
	for _, s := range []string{"dev/5000/#", "dev/5000/x/y", "fleet/site3/d/telemetry/t", "fleet/+/d/telemetry/t", "$SYS/n1/a", "q/r3/z", "nope", "a/#/b"} {
		if n := testing.AllocsPerRun(100, func() { g.CanSubscribe(s) }); n != 0 {
			t.Errorf("CanSubscribe(%q) allocates %v times", s, n)
		}
		if n := testing.AllocsPerRun(100, func() { g.CanPublish(s) }); n != 0 {
			t.Errorf("CanPublish(%q) allocates %v times", s, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { g.Grant(77) }); n != 0 {
		t.Errorf("Grant allocates %v times", n)
	}
}

// FuzzGrantChanges applies a fuzzed sequence of single-tag changes (With,
// Without) over a small vocabulary of patterns, including invalid ones,
// and checks every step against the naive definition on a fixed set of
// subjects and against CompileGrants of the same grants. Each change is 2
// bytes: tag (low 3 bits) and permission (next 2 bits; 0 and 3 are invalid,
// 3 with a tag ≥ 6 means Without) of the first, a pattern index of the
// second.
func FuzzGrantChanges(f *testing.F) {
	patterns := []string{"a/#", "a/+", "a/b", "#", "+/#", "$s/#", "a/#/b", "b", "a//b", "+", "+/b", "a/+/#", "/#", "$s", ""}
	subs := []string{"a", "a/b", "a/c", "b", "a/+", "a/#", "#", "+", "$s", "$s/x", "/", "/#", "a//b", "+/+", "+/b", "x/b", "a/b/c", "$s/+", "/x"}
	f.Add([]byte{0x09, 0, 0x0a, 1, 0x01, 3})
	f.Add([]byte{0x0a, 4, 0x09, 3, 0x1e, 0, 0x0b, 12})
	f.Fuzz(func(t *testing.T, data []byte) {
		var g *Grants
		ref := naive{}
		for i := 0; i+1 < len(data); i += 2 {
			tag, perm := int64(data[i]&7), Permission(data[i]>>3&3)
			if perm == 3 && tag >= 6 {
				g = g.Without(tag)
				delete(ref, tag)
			} else {
				gr := Grant{TagID: tag, Pattern: patterns[int(data[i+1])%len(patterns)], Permission: perm}
				g = g.With(gr)
				ref.apply(gr)
			}
			for _, s := range subs {
				if got, want := g.CanPublish(s), ref.canPublish(s); got != want {
					t.Fatalf("grants %v: CanPublish(%q) = %v, naive %v", ref.sorted(), s, got, want)
				}
				if got, want := g.CanSubscribe(s), ref.canSubscribe(s); got != want {
					t.Fatalf("grants %v: CanSubscribe(%q) = %v, naive %v", ref.sorted(), s, got, want)
				}
			}
		}
		if !g.Equal(CompileGrants(ref.sorted())) || !slices.Equal(g.Patterns(), ref.sorted()) {
			t.Fatalf("grants %v differ from the same compiled", g.Patterns())
		}
	})
}
