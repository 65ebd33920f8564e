package acl

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gatecast/gatecast/topic"
)

func grants(pairs ...any) *Grants {
	var gs []Grant
	for i := 0; i < len(pairs); i += 2 {
		gs = append(gs, Grant{TagID: int64(i/2 + 1), Pattern: pairs[i].(string), Permission: pairs[i+1].(Permission)})
	}
	return CompileGrants(gs)
}

func TestGrants(t *testing.T) {
	type check struct {
		subject string
		sub     bool // CanSubscribe(subject)
		pub     bool // CanPublish(subject)
	}
	tests := []struct {
		name   string
		g      *Grants
		checks []check
	}{
		{
			name: "fleet",
			g: grants(
				"sensors/#", PermRead,
				"sensors/+/temp", PermReadWrite,
				"cmd/dev1", PermReadWrite,
				"$SYS/broker/#", PermRead,
			),
			checks: []check{
				{"sensors/+/temp", true, false}, // ⊆ sensors/# (and its own grant); a filter is never published to
				{"sensors/#", true, false},
				{"sensors", true, false}, // sensors/# covers its parent
				{"sensors/room1/temp", true, true},
				{"sensors/room1/humidity", true, false}, // only read covers it
				{"sensors/+/+", true, false},
				{"sensors/room1/temp/raw", true, false}, // + is one level: rw does not reach it
				{"other/x", false, false},
				{"#", false, false},
				{"+/temp", false, false},
				{"+/+/temp", false, false},
				{"cmd/dev1", true, true}, // readwrite implies read
				{"cmd/dev2", false, false},
				{"cmd/+", false, false},
				{"cmd/dev1/x", false, false},
				{"$SYS/broker/load", true, false},
				{"$SYS/#", false, false},
				{"$SYS/broker/#", true, false},
			},
		},
		{
			name: "hash grant and $ topics",
			g:    grants("#", PermReadWrite),
			checks: []check{
				{"a/b", true, true},
				{"a", true, true},
				{"/", true, true},
				{"+/#", true, false},
				{"#", true, false},
				{"$SYS/x", false, false}, // MQTT: a leading wildcard never reaches $-topics
				{"$SYS/#", false, false},
				{"$SYS/+", false, false},
				{"a/$x", true, true}, // only a leading $ is special
			},
		},
		{
			name: "explicit $ grant",
			g:    grants("$SYS/#", PermReadWrite, "+/x", PermRead),
			checks: []check{
				{"$SYS/x", true, true},
				{"$SYS", true, true},
				{"$SYS/+/y", true, false},
				{"a/x", true, false},
				{"$foo/x", false, false},
			},
		},
		{
			name: "overlapping read and readwrite",
			g:    grants("a/#", PermRead, "a/b", PermReadWrite, "a/+/c", PermReadWrite),
			checks: []check{
				{"a/b", true, true},
				{"a/c", true, false},
				{"a/x/c", true, true},
				{"a/x/d", true, false},
				{"a/+", true, false},
				{"b", false, false},
			},
		},
		{
			name:   "same pattern read then readwrite",
			g:      grants("p/#", PermRead, "p/#", PermReadWrite),
			checks: []check{{"p/1", true, true}},
		},
		{
			name:   "same pattern readwrite then read",
			g:      grants("p/#", PermReadWrite, "p/#", PermRead),
			checks: []check{{"p/1", true, true}},
		},
		{
			name: "read only",
			g:    grants("r/#", PermRead),
			checks: []check{
				{"r/1", true, false},
				{"r", true, false},
			},
		},
		{
			name: "invalid input is refused",
			g:    grants("#", PermReadWrite),
			checks: []check{
				{"", false, false},
				{"a/#/b", false, false},
				{"a+", false, false},
				{"a\x00b", false, false},
				{"bad\xff", false, false},
			},
		},
		{
			name: "invalid grants are dropped",
			g:    grants("a/#/b", PermReadWrite, "x/#", PermNone, "y/#", Permission(9), "", PermReadWrite),
			checks: []check{
				{"a/#/b", false, false},
				{"x/1", false, false},
				{"y/1", false, false},
				{"z", false, false},
			},
		},
		{name: "empty", g: CompileGrants(nil), checks: []check{{"a", false, false}}},
		{name: "nil", g: nil, checks: []check{{"a", false, false}, {"#", false, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range tc.checks {
				if got := tc.g.CanSubscribe(c.subject); got != c.sub {
					t.Errorf("CanSubscribe(%q) = %v, want %v", c.subject, got, c.sub)
				}
				if got := tc.g.CanPublish(c.subject); got != c.pub {
					t.Errorf("CanPublish(%q) = %v, want %v", c.subject, got, c.pub)
				}
			}
		})
	}
}

func TestGrantsDowngrade(t *testing.T) {
	before := grants("d/#", PermReadWrite)
	after := grants("d/#", PermRead)
	if !before.CanPublish("d/1") || after.CanPublish("d/1") || !after.CanSubscribe("d/1") {
		t.Error("downgrade readwrite → read not reflected")
	}
}

func TestGrantsLenAndPatterns(t *testing.T) {
	in := []Grant{
		{TagID: 3, Pattern: "a/#", Permission: PermRead},
		{TagID: 5, Pattern: "bad/#/x", Permission: PermRead},
		{TagID: 7, Pattern: "b", Permission: PermReadWrite},
	}
	g := CompileGrants(in)
	in[0].Pattern = "mutated" // the compiled set owns its copy
	if g.Len() != 2 {
		t.Errorf("Len = %d, want 2 (the invalid grant dropped)", g.Len())
	}
	ps := g.Patterns()
	want := []Grant{{3, "a/#", PermRead}, {7, "b", PermReadWrite}}
	if fmt.Sprint(ps) != fmt.Sprint(want) {
		t.Errorf("Patterns = %v, want %v", ps, want)
	}
	ps[0].Pattern = "#"
	if g.CanSubscribe("x") || g.Patterns()[0].Pattern != "a/#" {
		t.Error("changing the result of Patterns changed the grants")
	}
	var nilG *Grants
	if nilG.Len() != 0 || nilG.Patterns() != nil {
		t.Error("nil Grants not empty")
	}
}

func TestGrantsEqual(t *testing.T) {
	a := grants("a/#", PermRead, "b", PermReadWrite)
	cases := []struct {
		o    *Grants
		want bool
	}{
		{grants("b", PermReadWrite, "a/#", PermRead), true},                // order does not matter
		{grants("a/#", PermRead, "b", PermReadWrite, "b", PermRead), true}, // a redundant grant adds nothing
		{grants("a/#", PermRead, "b", PermRead), false},                    // downgrade
		{grants("a/#", PermReadWrite, "b", PermReadWrite), false},          // upgrade
		{grants("a/#", PermRead), false},
		{grants("a/#", PermRead, "b", PermReadWrite, "c", PermRead), false},
		{nil, false},
	}
	for i, c := range cases {
		if got := a.Equal(c.o); got != c.want {
			t.Errorf("case %d: Equal = %v, want %v", i, got, c.want)
		}
		if got := c.o.Equal(a); got != c.want {
			t.Errorf("case %d: reversed Equal = %v, want %v", i, got, c.want)
		}
	}
	var nilG *Grants
	if !nilG.Equal(CompileGrants(nil)) || !nilG.Equal(nil) {
		t.Error("nil and empty grants differ")
	}
}

func TestGrantsAllocs(t *testing.T) {
	g := grants(
		"sensors/#", PermRead,
		"sensors/+/temp", PermReadWrite,
		"cmd/dev1", PermReadWrite,
		"$SYS/#", PermRead,
	)
	for _, s := range []string{"sensors/+/temp", "sensors/room1/temp", "nope/x", "$SYS/a", "a/#/b", ""} {
		if n := testing.AllocsPerRun(100, func() { g.CanSubscribe(s) }); n != 0 {
			t.Errorf("CanSubscribe(%q) allocates %v times", s, n)
		}
		if n := testing.AllocsPerRun(100, func() { g.CanPublish(s) }); n != 0 {
			t.Errorf("CanPublish(%q) allocates %v times", s, n)
		}
	}
}

// Readers check a shared Grants while a writer swaps in new sets, the way
// the broker uses it; run with -race.
func TestGrantsConcurrentUse(t *testing.T) {
	var cur atomic.Pointer[Grants]
	cur.Store(grants("a/#", PermReadWrite))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				g := cur.Load()
				// Every set the writer installs allows reading a/1.
				if !g.CanSubscribe("a/1") {
					t.Error("a/1 not readable")
					return
				}
				g.CanPublish("a/1")
				g.Len()
			}
		})
	}
	for i := range 200 {
		p := PermRead
		if i%2 == 0 {
			p = PermReadWrite
		}
		cur.Store(grants("a/#", p, fmt.Sprintf("x/%d", i), PermRead))
	}
	close(stop)
	wg.Wait()
}

// FuzzGrants checks, for arbitrary patterns and subjects, that nothing
// panics, that a read grant never allows a publish, and that for a valid
// topic the publish check (topic.Match) and the subscribe check
// (topic.Contains) agree on one readwrite pattern.
func FuzzGrants(f *testing.F) {
	for _, s := range [][2]string{
		{"sensors/#", "sensors/a/temp"},
		{"sensors/+/temp", "sensors/a/temp"},
		{"#", "$SYS/x"},
		{"$SYS/#", "$SYS"},
		{"+/+", "/"},
		{"a/#/b", "a/x/b"},
		{"a//b", "a//b"},
		{"+", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, subject string) {
		rw := CompileGrants([]Grant{{TagID: 1, Pattern: pattern, Permission: PermReadWrite}})
		ro := CompileGrants([]Grant{{TagID: 1, Pattern: pattern, Permission: PermRead}})
		if ro.CanPublish(subject) {
			t.Fatalf("read grant %q allows publishing %q", pattern, subject)
		}
		if rw.CanSubscribe(subject) != ro.CanSubscribe(subject) {
			t.Fatalf("read and readwrite grants %q disagree on subscribing %q", pattern, subject)
		}
		if topic.ValidateTopic(subject) == nil {
			if pub, sub := rw.CanPublish(subject), rw.CanSubscribe(subject); pub != sub {
				t.Fatalf("grant %q on topic %q: CanPublish %v but CanSubscribe %v", pattern, subject, pub, sub)
			}
		} else if rw.CanPublish(subject) {
			t.Fatalf("invalid topic %q publishable", subject)
		}
		if topic.ValidateFilter(pattern) != nil && (rw.Len() != 0 || rw.CanSubscribe(subject)) {
			t.Fatalf("invalid pattern %q compiled into a grant", pattern)
		}
	})
}

func BenchmarkHashSecret(b *testing.B) {
	secret := []byte("gc_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG")
	b.ReportAllocs()
	for b.Loop() {
		HashSecret(secret)
	}
}
