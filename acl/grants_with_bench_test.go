package acl

import (
	"strconv"
	"testing"
)

// BenchmarkGrantsWith is one permission change applied to a compiled set
// (what an incremental refresh costs instead of CompileGrants): a
// downgrade and back, alternately, of one tag among n.
func BenchmarkGrantsWith(b *testing.B) {
	for _, n := range benchSizes {
		g := CompileGrants(sizedGrants(n))
		gr, _ := g.Grant(int64(n/2 + 1))
		b.Run("grants="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c := gr
				if i%2 == 0 {
					c.Permission = PermRead
				}
				i++
				if g.With(c) == g && i%2 == 1 {
					b.Fatal("no change")
				}
			}
		})
	}
}
