package topic

import (
	"slices"
	"sync"
	"testing"
	"unsafe"
)

// TestGenerationCountsEveryChange: Generation moves on every Subscribe and
// Unsubscribe that changes the index - literal and wildcard, the first
// subscriber of a filter and a further one, the last one leaving and
// another - and stays put for calls that change nothing and for Match.
func TestGenerationCountsEveryChange(t *testing.T) {
	indexModes(t, func(t *testing.T, newIndex func() *Index[int]) {
		x := newIndex()
		last := x.Generation()
		step := func(what string, changed bool) {
			t.Helper()
			g := x.Generation()
			if moved := g != last; moved != changed {
				t.Fatalf("%s: generation %d -> %d; want changed=%v", what, last, g, changed)
			}
			last = g
		}
		x.Match("a/b", nil)
		step("Match on an empty index", false)

		// literal
		x.Subscribe("a/b", 1)
		step("first literal subscriber", true)
		x.Subscribe("a/b", 2)
		step("second subscriber of a literal filter", true)
		x.Subscribe("a/b", 2)
		step("the same pair again", false)
		x.Subscribe("a/#/b", 3)
		step("an invalid filter", false)
		for range 3 {
			x.Match("a/b", nil)
		}
		step("Match", false)
		x.Unsubscribe("a/b", 9)
		step("unsubscribing a pair that is not there", false)
		x.Unsubscribe("a/b", 1)
		step("one of two literal subscribers leaving", true)
		x.Unsubscribe("a/b", 2)
		step("the last literal subscriber leaving", true)
		x.Unsubscribe("a/b", 2)
		step("unsubscribing it again", false)

		// wildcard
		x.Subscribe("a/+", 1)
		step("first wildcard subscriber", true)
		x.Subscribe("a/+", 2)
		step("second subscriber of a wildcard filter", true)
		x.Subscribe("a/+", 2)
		step("the same wildcard pair again", false)
		x.Subscribe("#", 3)
		step("a '#' filter", true)
		for range 3 {
			x.Match("a/b", nil) // admitted to the match cache
		}
		step("Match with wildcards", false)
		x.Unsubscribe("a/+", 7)
		step("unsubscribing a wildcard pair that is not there", false)
		x.Unsubscribe("a/+", 1)
		step("one of two wildcard subscribers leaving", true)
		x.Unsubscribe("a/+", 2)
		step("the last wildcard subscriber leaving (node pruned)", true)
		x.Unsubscribe("#", 3)
		step("the '#' filter leaving", true)
	})
}

// TestGenerationGuardsAMemo uses Generation the way the broker's match memo
// does: a result kept with the generation loaded before its Match is reused
// while the generation is unchanged. After any change has returned, the
// reuse check fails and a fresh Match sees the change.
func TestGenerationGuardsAMemo(t *testing.T) {
	indexModes(t, func(t *testing.T, newIndex func() *Index[int]) {
		x := newIndex()
		var (
			memo    []int
			memoGen uint64
			valid   bool
		)
		match := func(topic string) []int {
			g := x.Generation()
			if valid && g == memoGen {
				return memo
			}
			memo = x.Match(topic, memo[:0])
			memoGen, valid = g, true
			return memo
		}
		want := func(what string, subs ...int) {
			t.Helper()
			got := slices.Sorted(slices.Values(match("dev/1/temp")))
			if !slices.Equal(got, subs) {
				t.Fatalf("%s: matched %v, want %v", what, got, subs)
			}
		}
		want("empty index")
		x.Subscribe("dev/1/temp", 1)
		want("literal added", 1)
		x.Subscribe("dev/+/temp", 2)
		want("wildcard added", 1, 2)
		x.Subscribe("dev/2/temp", 3) // another topic: the memo is dropped all the same
		want("unrelated literal added", 1, 2)
		x.Unsubscribe("dev/1/temp", 1)
		want("literal removed", 2)
		x.Unsubscribe("dev/+/temp", 2)
		want("wildcard removed")
	})
}

// TestGenerationConcurrent: Generation and Match race Subscribe and
// Unsubscribe of both kinds (for the race detector), and the generation
// never goes backwards.
func TestGenerationConcurrent(t *testing.T) {
	x := NewIndex[int]()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			filters := []string{"dev/1/temp", "dev/+/temp", "#"}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				f := filters[i%len(filters)]
				x.Subscribe(f, w)
				x.Unsubscribe(f, w)
			}
		}()
	}
	var dst []int
	prev := x.Generation()
	for range 20000 {
		g := x.Generation()
		if g < prev {
			t.Fatalf("generation went back from %d to %d", prev, g)
		}
		prev = g
		dst = x.Match("dev/1/temp", dst[:0])
	}
	close(stop)
	wg.Wait()
	if x.Count() != 0 {
		t.Fatalf("%d pairs left", x.Count())
	}
}

// TestGenerationOwnLine: the change counter, written by every subscribe,
// shares no 64-byte line with the fields Match reads.
func TestGenerationOwnLine(t *testing.T) {
	var x Index[int]
	off := unsafe.Offsetof(x.changes)
	end := unsafe.Sizeof(x)
	if off < unsafe.Offsetof(x.gen)+8+56 || end-(off+8) < 56 {
		t.Fatalf("changes at offset %d of %d (gen at %d): not padded to a line of its own", off, end, unsafe.Offsetof(x.gen))
	}
}
