package topic

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchSub stands in for a broker session: subscribers are pointers.
type benchSub struct{ id int }

const (
	benchDevices = 1_000_000
	benchRegions = 400
)

// benchIndexes holds the 1M-filter indexes, built once per process and shared
// by every sub-benchmark (building takes a few seconds).
var benchIndexes struct {
	once    sync.Once
	cached  *Index[*benchSub]
	nocache *Index[*benchSub]
	devices []string // "devices/<id>/cmd" in random order
	hot     []string // 1024 topics drawn from every family, repeated
}

func deviceTopic(id int) string { return "devices/" + strconv.Itoa(id) + "/cmd" }

// benchSetup subscribes one device-specific literal filter per device plus
// 1,000 wildcard filters: fleet/<r>/+/temp and alerts/<r>/# for 400 regions,
// users/<u>/# for 180 users, and 20 devices/+/<x> filters watched by
// dashboards, one of which, devices/+/cmd, matches every device topic (so
// every device Match walks the trie three levels deep and returns two
// subscribers).
func benchSetup(b *testing.B) {
	if testing.Short() {
		b.Skip("building 1,000,000 filters is skipped in -short")
	}
	benchIndexes.once.Do(func() {
		start := time.Now()
		subs := make([]benchSub, benchDevices+1000)
		for i := range subs {
			subs[i].id = i
		}
		filters := make([]string, benchDevices)
		for i := range filters {
			filters[i] = deviceTopic(i)
		}
		var wild []string
		for r := range benchRegions {
			wild = append(wild, "fleet/r"+strconv.Itoa(r)+"/+/temp", "alerts/r"+strconv.Itoa(r)+"/#")
		}
		for u := range 180 {
			wild = append(wild, "users/u"+strconv.Itoa(u)+"/#")
		}
		for m := range 19 {
			wild = append(wild, "devices/+/m"+strconv.Itoa(m))
		}
		wild = append(wild, "devices/+/cmd")
		for _, opts := range [][]Option{nil, {WithoutCache()}} {
			x := NewIndex[*benchSub](opts...)
			for i, f := range filters {
				x.Subscribe(f, &subs[i])
			}
			for i, f := range wild {
				x.Subscribe(f, &subs[benchDevices+i])
			}
			if opts == nil {
				benchIndexes.cached = x
			} else {
				benchIndexes.nocache = x
			}
		}
		r := rand.New(rand.NewPCG(42, 42))
		benchIndexes.devices = contiguous(r.Perm(benchDevices), filters)
		var hot []string
		for i := range 1024 {
			var t string
			switch i % 4 {
			case 0, 1:
				t = filters[r.IntN(benchDevices)]
			case 2:
				t = "fleet/r" + strconv.Itoa(r.IntN(benchRegions)) + "/dev" + strconv.Itoa(i) + "/temp"
			case 3:
				t = "alerts/r" + strconv.Itoa(r.IntN(benchRegions)) + "/fire/" + strconv.Itoa(i)
			}
			hot = append(hot, t)
		}
		benchIndexes.hot = contiguous(nil, hot)
		runtime.GC() // do not bill the setup's garbage to the first benchmark
		b.Logf("built 2 indexes of %d literal + %d wildcard filters in %v", benchDevices, len(wild), time.Since(start))
	})
}

// contiguous returns the strings src[order[i]] (src[i] when order is nil)
// as views of one contiguous buffer, laid out in iteration order. A broker
// matches a topic it has just decoded into a hot buffer; scattering the
// benchmark's topics over the heap would bill a cache miss per topic that
// has nothing to do with the index.
func contiguous(order []int, src []string) []string {
	if order == nil {
		order = make([]int, len(src))
		for i := range order {
			order[i] = i
		}
	}
	var buf strings.Builder
	for _, p := range order {
		buf.WriteString(src[p])
	}
	all := buf.String()
	out := make([]string, len(order))
	off := 0
	for i, p := range order {
		out[i] = all[off : off+len(src[p])]
		off += len(src[p])
	}
	return out
}

func benchMatch(b *testing.B, x *Index[*benchSub], topics []string) {
	dst := make([]*benchSub, 0, 64)
	matched := 0
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		dst = x.Match(topics[i%len(topics)], dst[:0])
		matched += len(dst)
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "matches/s")
	b.ReportMetric(float64(matched)/float64(b.N), "subs/match")
}

// BenchmarkIndexMatch matches against 1,000,000 device filters + 1,000
// wildcard filters. "devices" publishes to each device's topic once in random
// order (every topic new to the cache: the realistic worst case); "hot"
// cycles over 1,024 topics (devices, fleet and alerts) that the cache serves.
// With -cpu 1, matches/s is per core.
func BenchmarkIndexMatch(b *testing.B) {
	benchSetup(b)
	b.Run("devices/cache", func(b *testing.B) { benchMatch(b, benchIndexes.cached, benchIndexes.devices) })
	b.Run("devices/nocache", func(b *testing.B) { benchMatch(b, benchIndexes.nocache, benchIndexes.devices) })
	b.Run("hot/cache", func(b *testing.B) { benchMatch(b, benchIndexes.cached, benchIndexes.hot) })
	b.Run("hot/nocache", func(b *testing.B) { benchMatch(b, benchIndexes.nocache, benchIndexes.hot) })
}

// BenchmarkIndexMatchParallel is BenchmarkIndexMatch/devices from every
// GOMAXPROCS goroutine at once: Match takes no lock, so it should scale.
func BenchmarkIndexMatchParallel(b *testing.B) {
	benchSetup(b)
	for _, c := range []struct {
		name string
		x    *Index[*benchSub]
	}{{"cache", benchIndexes.cached}, {"nocache", benchIndexes.nocache}} {
		b.Run(c.name, func(b *testing.B) {
			topics := benchIndexes.devices
			var seq sync.Mutex
			next := 0
			b.ReportAllocs()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				seq.Lock()
				i := next * 499_979 // far apart: each goroutine sees fresh topics
				next++
				seq.Unlock()
				dst := make([]*benchSub, 0, 64)
				for pb.Next() {
					dst = c.x.Match(topics[i%len(topics)], dst[:0])
					i++
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "matches/s")
		})
	}
}

// BenchmarkIndexMatchParallelHot is BenchmarkIndexMatch/hot/cache from every
// GOMAXPROCS goroutine at once ("mixed": each goroutine cycles over the 1,024
// hot topics from its own offset; "same": every goroutine matches one and
// the same wildcard topic). Every Match is a cache hit, so anything written
// on the hit path (the hit counters) would show here as cross-core traffic.
func BenchmarkIndexMatchParallelHot(b *testing.B) {
	benchSetup(b)
	x := benchIndexes.cached
	hot := benchIndexes.hot
	same := []string{"alerts/r7/fire/42"}
	for _, c := range []struct {
		name   string
		topics []string
	}{{"mixed", hot}, {"same", same}} {
		b.Run(c.name, func(b *testing.B) {
			for _, t := range c.topics { // warm the cache (admission on the second miss)
				x.Match(t, nil)
				x.Match(t, nil)
			}
			var seq sync.Mutex
			next := 0
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				seq.Lock()
				i := next * 331
				next++
				seq.Unlock()
				dst := make([]*benchSub, 0, 64)
				for pb.Next() {
					dst = x.Match(c.topics[i%len(c.topics)], dst[:0])
					i++
				}
			})
		})
	}
}

// BenchmarkIndexSubscribe measures Subscribe throughput into a growing index:
// distinct device filters (a connect storm), distinct wildcard filters, and
// many subscribers of one filter (dashboards on alerts/#).
func BenchmarkIndexSubscribe(b *testing.B) {
	run := func(b *testing.B, filter func(i int) string) {
		filters := make([]string, b.N)
		for i := range filters {
			filters[i] = filter(i)
		}
		subs := make([]benchSub, b.N)
		x := NewIndex[*benchSub]()
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			x.Subscribe(filters[i], &subs[i])
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "subs/s")
	}
	b.Run("literal", func(b *testing.B) { run(b, deviceTopic) })
	b.Run("wildcard", func(b *testing.B) {
		run(b, func(i int) string { return "dash/" + strconv.Itoa(i) + "/#" })
	})
	b.Run("samefilter", func(b *testing.B) { run(b, func(int) string { return "alerts/#" }) })
}

// BenchmarkIndexSubscribeParallel is a connect storm from every core:
// subscribe then unsubscribe distinct device filters.
func BenchmarkIndexSubscribeParallel(b *testing.B) {
	x := NewIndex[*benchSub]()
	var mu sync.Mutex
	worker := 0
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		w := worker
		worker++
		mu.Unlock()
		s := &benchSub{id: w}
		prefix := "devices/w" + strconv.Itoa(w) + "-"
		var filters []string
		for i := 0; pb.Next(); i++ {
			if len(filters) < 1<<16 {
				filters = append(filters, prefix+strconv.Itoa(i)+"/cmd")
			}
			f := filters[i%len(filters)]
			if !x.Subscribe(f, s) {
				x.Unsubscribe(f, s)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

func BenchmarkMatchFunc(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !Match("fleet/+/temp/#", "fleet/room1/temp/celsius") {
			b.Fatal("no match")
		}
	}
}

func BenchmarkContains(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !Contains("fleet/#", "fleet/+/temp") {
			b.Fatal("not contained")
		}
	}
}

func BenchmarkValidateFilter(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if ValidateFilter("fleet/+/temp/#") != nil {
			b.Fatal("invalid")
		}
	}
}

// BenchmarkIndexMemory reports the heap held by the index per device filter
// (one literal filter with one subscriber, the common case), measured after
// a GC with the filter strings excluded.
func BenchmarkIndexMemory(b *testing.B) {
	filters := make([]string, b.N)
	for i := range filters {
		filters[i] = deviceTopic(i)
	}
	subs := make([]benchSub, b.N)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	x := NewIndex[*benchSub]()
	for i := range b.N {
		x.Subscribe(filters[i], &subs[i])
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N), "heapB/filter")
	runtime.KeepAlive(x)
	runtime.KeepAlive(filters)
}
