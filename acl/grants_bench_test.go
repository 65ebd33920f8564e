package acl

import (
	"strconv"
	"testing"
)

// benchSizes are the grant counts of the check benchmarks: one grant, a
// typical fleet role, and the 10,000 of the attack report. A linear scan
// shows as a cost proportional to the count; the compiled trie as a flat
// one.
var benchSizes = []int{1, 100, 10_000}

// sizedGrants returns n readwrite grants "fleet/site<i>/+/telemetry/#".
// The topic and filter checked below are covered by the last one only, so
// a scan in grant order has to reach the end.
func sizedGrants(n int) []Grant {
	gs := make([]Grant, n)
	for i := range gs {
		gs[i] = Grant{TagID: int64(i + 1), Pattern: "fleet/site" + strconv.Itoa(i) + "/+/telemetry/#", Permission: PermReadWrite}
	}
	return gs
}

func forSizes(b *testing.B, f func(b *testing.B, n int, g *Grants)) {
	for _, n := range benchSizes {
		g := CompileGrants(sizedGrants(n))
		b.Run("grants="+strconv.Itoa(n), func(b *testing.B) { f(b, n, g) })
	}
}

// BenchmarkCanPublish is one publish check: allowed by the last grant.
func BenchmarkCanPublish(b *testing.B) {
	forSizes(b, func(b *testing.B, n int, g *Grants) {
		t := "fleet/site" + strconv.Itoa(n-1) + "/dev42/telemetry/temp"
		b.ReportAllocs()
		for b.Loop() {
			if !g.CanPublish(t) {
				b.Fatal("denied")
			}
		}
	})
}

// BenchmarkCanPublishDenied is one publish check that no grant allows.
func BenchmarkCanPublishDenied(b *testing.B) {
	forSizes(b, func(b *testing.B, n int, g *Grants) {
		b.ReportAllocs()
		for b.Loop() {
			if g.CanPublish("fleet/site0/dev42/cmd") {
				b.Fatal("allowed")
			}
		}
	})
}

// BenchmarkCanSubscribe100 is the grant check of one connect with 100
// tags: 100 subscribe checks, each allowed by the last grant.
func BenchmarkCanSubscribe100(b *testing.B) {
	forSizes(b, func(b *testing.B, n int, g *Grants) {
		filters := make([]string, 100)
		for i := range filters {
			filters[i] = "fleet/site" + strconv.Itoa(n-1) + "/dev" + strconv.Itoa(i) + "/telemetry/+"
		}
		b.ReportAllocs()
		for b.Loop() {
			for _, f := range filters {
				if !g.CanSubscribe(f) {
					b.Fatal("denied")
				}
			}
		}
	})
}

// BenchmarkCompileGrants is what every full refresh of a token costs on top
// of reading its grants from the store.
func BenchmarkCompileGrants(b *testing.B) {
	for _, n := range benchSizes {
		gs := sizedGrants(n)
		b.Run("grants="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				CompileGrants(gs)
			}
		})
	}
}
