package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/rueidis"

	"github.com/gatecast/gatecast/internal/testserver"
)

// projRecorder collects what a node's Rights reports, projections included.
type projRecorder struct {
	rightsRecorder
	pmu    sync.Mutex
	hashes [][32]byte
	// r, once set, is what OnProjection re-reads what it hears with (the
	// documented contract); values keeps what it read.
	r      *Rights
	values map[[32]byte]ProjectionValue
}

func (pr *projRecorder) config(addrs []string) RightsConfig {
	cfg := pr.rightsRecorder.config(addrs)
	cfg.OnProjection = func(hs [][32]byte) {
		pr.pmu.Lock()
		r := pr.r
		pr.pmu.Unlock()
		var vals []ProjectionValue
		if r != nil {
			vals, _ = r.Projections(context.Background(), hs) // a failed hash keeps its zero value
		}
		pr.pmu.Lock()
		defer pr.pmu.Unlock()
		pr.hashes = append(pr.hashes, hs...)
		for i, v := range vals {
			pr.values[hs[i]] = v
		}
	}
	return cfg
}

func (pr *projRecorder) heard(h [32]byte) int {
	pr.pmu.Lock()
	defer pr.pmu.Unlock()
	n := 0
	for _, x := range pr.hashes {
		if x == h {
			n++
		}
	}
	return n
}

func (pr *projRecorder) value(h [32]byte) ProjectionValue {
	pr.pmu.Lock()
	defer pr.pmu.Unlock()
	return pr.values[h]
}

func openProjRights(t *testing.T, pr *projRecorder, addrs []string) *Rights {
	t.Helper()
	pr.values = map[[32]byte]ProjectionValue{}
	r, err := OpenRights(pr.config(addrs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	pr.pmu.Lock()
	pr.r = r
	pr.pmu.Unlock()
	return r
}

// rightsTopologies runs f on a standalone Redis and a 3-master cluster.
func rightsTopologies(t *testing.T, f func(t *testing.T, addrs []string)) {
	t.Run("standalone", func(t *testing.T) { f(t, []string{testserver.Redis(t)}) })
	t.Run("cluster", func(t *testing.T) {
		if testing.Short() {
			t.Skip("Redis Cluster skipped in -short")
		}
		f(t, testserver.RedisCluster(t, 3))
	})
}

func hashOf(s string) [32]byte {
	var h [32]byte
	copy(h[:], s)
	return h
}

func put(t *testing.T, r *Rights, es ...ProjectionEntry) []bool {
	t.Helper()
	w, err := r.PutProjection(ctxT(t), es...)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func mustFresh(t *testing.T, r *Rights, h [32]byte) ProjectionValue {
	t.Helper()
	v, err := r.ProjectionFresh(ctxT(t), h)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestProjectionKeyAndValueFormat(t *testing.T) {
	h := [32]byte{0x00, 0xab, 0xff, 31: 0x01}
	k := projectionKey(h)
	if k != "gc:r:00abff"+strings.Repeat("00", 28)+"01" {
		t.Fatalf("key %q", k)
	}
	if got, ok := parseProjectionKey(k); !ok || got != h {
		t.Fatalf("%q -> %x %v", k, got, ok)
	}
	for _, bad := range []string{"", "gc:r:", k[:len(k)-1], k + "0", strings.ToUpper(k), "gc:x:" + k[5:], "gc:r:" + strings.Repeat("g", 64), changeKey(5)} {
		if _, ok := parseProjectionKey(bad); ok {
			t.Errorf("%q parsed as a projection key", bad)
		}
	}
	if _, ok := parseChangeKey(k); ok {
		t.Error("projection key parsed as a change key")
	}
	for _, v := range []int64{1, 42, 1<<53 + 1, 9223372036854775807} {
		s := formatVersion(v)
		if len(s) != versionDigits {
			t.Fatalf("%d -> %q", v, s)
		}
		got, err := parseProjectionValue(s + "pay\x00load")
		if err != nil || !got.Found || got.Version != v || string(got.Payload) != "pay\x00load" {
			t.Fatalf("%d -> %+v %v", v, got, err)
		}
	}
	// String order is numeric order.
	if !(formatVersion(9) < formatVersion(10) && formatVersion(1<<53) < formatVersion(1<<53+1)) {
		t.Fatal("versions do not order as strings")
	}
	for _, bad := range []string{"", "0123", strings.Repeat("0", 19), strings.Repeat("0", 20), "0000000000000000000x",
		"-0000000000000000001", "+0000000000000000001", "99999999999999999999", " 0000000000000000001"} {
		if v, err := parseProjectionValue(bad); err == nil {
			t.Errorf("%q parsed: %+v", bad, v)
		}
	}
}

func FuzzParseProjectionValue(f *testing.F) {
	f.Add(formatVersion(7) + "x")
	f.Add("hello")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseProjectionValue(s)
		if err != nil {
			return
		}
		if back := formatVersion(v.Version) + string(v.Payload); back != s || v.Version <= 0 {
			t.Fatalf("%q -> %+v -> %q", s, v, back)
		}
	})
}

// The script keeps the highest version: older and equal are not written,
// newer is; a TTL write expires, a later write without TTL clears it.
func TestPutProjectionVersions(t *testing.T) {
	rightsTopologies(t, func(t *testing.T, addrs []string) {
		ctx := ctxT(t)
		var pr projRecorder
		r := openProjRights(t, &pr, addrs)
		raw := newClient(t, addrs)
		h := hashOf("versions")
		if w := put(t, r, ProjectionEntry{Hash: h, Version: 10, Payload: []byte("ten")}); !slices.Equal(w, []bool{true}) {
			t.Fatalf("first put written %v", w)
		}
		for _, e := range []ProjectionEntry{
			{Hash: h, Version: 9, Payload: []byte("nine")},       // older
			{Hash: h, Version: 10, Payload: []byte("ten again")}, // equal: idempotent
		} {
			if w := put(t, r, e); !slices.Equal(w, []bool{false}) {
				t.Fatalf("version %d written %v", e.Version, w)
			}
		}
		if v := mustFresh(t, r, h); !v.Found || v.Version != 10 || string(v.Payload) != "ten" {
			t.Fatalf("after older/equal: %+v", v)
		}
		// Beyond 2^53: Lua numbers would not tell these apart.
		if w := put(t, r, ProjectionEntry{Hash: h, Version: 1<<53 + 1, Payload: []byte("big")}); !w[0] {
			t.Fatal("newer not written")
		}
		if w := put(t, r, ProjectionEntry{Hash: h, Version: 1 << 53, Payload: []byte("older big")}); w[0] {
			t.Fatal("2^53 written over 2^53+1")
		}
		if v := mustFresh(t, r, h); v.Version != 1<<53+1 || string(v.Payload) != "big" {
			t.Fatalf("after big: %+v", v)
		}

		// A tombstone with a TTL, then a live entry without: no expiry left.
		tomb := hashOf("tombstone")
		put(t, r, ProjectionEntry{Hash: tomb, Version: 3, Payload: []byte("gone"), TTL: time.Minute})
		if ms, _ := raw.Do(ctx, raw.B().Pttl().Key(projectionKey(tomb)).Build()).AsInt64(); ms <= 0 || ms > 60000 {
			t.Fatalf("tombstone PTTL %d", ms)
		}
		put(t, r, ProjectionEntry{Hash: tomb, Version: 4, Payload: []byte("live")})
		if ms, _ := raw.Do(ctx, raw.B().Pttl().Key(projectionKey(tomb)).Build()).AsInt64(); ms != -1 {
			t.Fatalf("live entry over a tombstone has PTTL %d, want -1 (no expiry)", ms)
		}
		// An expired tombstone is gone: any version may be written again.
		short := hashOf("short")
		put(t, r, ProjectionEntry{Hash: short, Version: 8, Payload: []byte("x"), TTL: 20 * time.Millisecond})
		waitFor(t, "the tombstone to expire", func() bool { return !mustFresh(t, r, short).Found })
		if w := put(t, r, ProjectionEntry{Hash: short, Version: 2}); !w[0] {
			t.Fatal("write after expiry refused")
		}
		if v := mustFresh(t, r, short); !v.Found || v.Version != 2 || len(v.Payload) != 0 {
			t.Fatalf("empty payload: %+v", v)
		}

		// Many entries in one pipelined call, over many slots; a corrupt
		// stored value is replaced.
		if err := raw.Do(ctx, raw.B().Set().Key(projectionKey(hashOf("b3"))).Value("garbage").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		var batch []ProjectionEntry
		for i := range 50 {
			batch = append(batch, ProjectionEntry{Hash: hashOf(fmt.Sprintf("b%d", i)), Version: 5, Payload: []byte{byte(i)}})
		}
		batch = append(batch, ProjectionEntry{Hash: hashOf("b7"), Version: 4}) // same key, older: after 5
		w := put(t, r, batch...)
		for i, ok := range w {
			if ok != (i < 50) {
				t.Fatalf("batch written %v", w)
			}
		}
		if v := mustFresh(t, r, hashOf("b3")); v.Version != 5 || !slices.Equal(v.Payload, []byte{3}) {
			t.Fatalf("repaired value %+v", v)
		}

		for _, bad := range []ProjectionEntry{{Hash: h, Version: 0}, {Hash: h, Version: -1}, {Hash: h, Version: 1, TTL: -time.Second}} {
			if _, err := r.PutProjection(ctx, bad); err == nil {
				t.Errorf("%+v accepted", bad)
			}
		}
	})
}

// Node A reads through its cache; node B writes; A hears it and reads the
// new value. A key read while missing is tracked too; ForgetProjection
// stops reporting; A's own write invalidates A's copy.
func TestProjectionInvalidatesReaders(t *testing.T) {
	rightsTopologies(t, func(t *testing.T, addrs []string) {
		ctx := ctxT(t)
		var pa, pb projRecorder
		a := openProjRights(t, &pa, addrs)
		b := openProjRights(t, &pb, addrs)
		h1, h2, h3 := hashOf("one"), hashOf("two"), hashOf("three")
		put(t, b, ProjectionEntry{Hash: h1, Version: 1, Payload: []byte("v1")})

		v, err := a.Projection(ctx, h1)
		if err != nil || !v.Found || v.Version != 1 || string(v.Payload) != "v1" {
			t.Fatalf("first read %+v %v", v, err)
		}
		redisReads := testutil.ToFloat64(a.reads.redis)
		for range 3 {
			if v, err := a.Projection(ctx, h1); err != nil || v.Version != 1 {
				t.Fatalf("cached read %+v %v", v, err)
			}
		}
		// Exact on a standalone Redis; on a cluster a connection replaced
		// during discovery may empty the cache once.
		local, redis := testutil.ToFloat64(a.reads.local), testutil.ToFloat64(a.reads.redis)-redisReads
		if local+redis != 3 || local < 2 || (len(addrs) == 1 && local != 3) {
			t.Fatalf("%v local reads, %v from Redis, want 3 local", local, redis)
		}
		// The caller's copy is its own.
		v.Payload[0] = 'X'
		if v, _ := a.Projection(ctx, h1); string(v.Payload) != "v1" {
			t.Fatalf("cached payload changed to %q", v.Payload)
		}

		// B writes: A hears h1, and its re-read (in OnProjection) has v2.
		put(t, b, ProjectionEntry{Hash: h1, Version: 2, Payload: []byte("v2")})
		waitFor(t, "A hears h1", func() bool { return pa.heard(h1) == 1 })
		if got := pa.value(h1); got.Version != 2 || string(got.Payload) != "v2" {
			t.Fatalf("A re-read %+v", got)
		}
		if v, _ := a.Projection(ctx, h1); v.Version != 2 {
			t.Fatalf("A reads %+v after the invalidation", v)
		}
		// Re-armed by that re-read: heard again.
		put(t, b, ProjectionEntry{Hash: h1, Version: 3, Payload: []byte("v3")})
		waitFor(t, "A hears h1 again", func() bool { return pa.heard(h1) == 2 })
		// An older write changes nothing, so nobody hears it.
		put(t, b, ProjectionEntry{Hash: h1, Version: 2, Payload: []byte("old")})

		// A key read while missing is tracked: B creating it reaches A.
		if v, err := a.Projection(ctx, h2); err != nil || v.Found {
			t.Fatalf("missing read %+v %v", v, err)
		}
		if v, _ := a.Projection(ctx, h2); v.Found || testutil.ToFloat64(a.reads.missing) != 2 {
			t.Fatalf("missing read %+v, missing count %v", v, testutil.ToFloat64(a.reads.missing))
		}
		put(t, b, ProjectionEntry{Hash: h2, Version: 1, Payload: []byte("new")})
		waitFor(t, "A hears h2 created", func() bool { return pa.heard(h2) == 1 })
		if got := pa.value(h2); !got.Found || string(got.Payload) != "new" {
			t.Fatalf("A re-read %+v", got)
		}

		// A's own write invalidates A's own copy (tracking is not NOLOOP).
		if _, err := a.Projection(ctx, h3); err != nil {
			t.Fatal(err)
		}
		put(t, a, ProjectionEntry{Hash: h3, Version: 1, Payload: []byte("mine")})
		waitFor(t, "A hears its own write", func() bool { return pa.heard(h3) == 1 })
		if v, _ := a.Projection(ctx, h3); v.Version != 1 {
			t.Fatalf("A reads %+v after its own write", v)
		}

		// Forgotten: no longer reported (nor re-armed).
		a.ForgetProjection(h1)
		put(t, b, ProjectionEntry{Hash: h1, Version: 4})
		put(t, b, ProjectionEntry{Hash: h2, Version: 2}) // still watched: a marker
		waitFor(t, "A hears h2 again", func() bool { return pa.heard(h2) == 2 })
		put(t, b, ProjectionEntry{Hash: h1, Version: 5})
		time.Sleep(100 * time.Millisecond)
		if n := pa.heard(h1); n != 2 {
			t.Fatalf("forgotten h1 heard %d times, want still 2", n)
		}
		// B read nothing, heard nothing.
		if pb.heard(h1)+pb.heard(h2)+pb.heard(h3) != 0 {
			t.Fatal("B heard keys it never read")
		}
	})
}

// Projections reads a batch over many slots in one call; the second time
// it is served locally. A garbage value is an error for its hash only.
// ProjectionFresh returns the server's value, not the cached one.
func TestProjectionsBatchAndFresh(t *testing.T) {
	rightsTopologies(t, func(t *testing.T, addrs []string) {
		ctx := ctxT(t)
		var pa, pb projRecorder
		a := openProjRights(t, &pa, addrs)
		b := openProjRights(t, &pb, addrs)
		raw := newClient(t, addrs)
		var hashes [][32]byte
		var entries []ProjectionEntry
		for i := range 40 {
			h := hashOf(fmt.Sprintf("batch-%d", i))
			hashes = append(hashes, h)
			if i%4 != 0 { // every 4th stays missing
				entries = append(entries, ProjectionEntry{Hash: h, Version: int64(i), Payload: []byte(fmt.Sprint(i))})
			}
		}
		put(t, b, entries...)
		check := func(vals []ProjectionValue) {
			t.Helper()
			if len(vals) != len(hashes) {
				t.Fatalf("%d values for %d hashes", len(vals), len(hashes))
			}
			for i, v := range vals {
				if want := i%4 != 0; v.Found != want || (want && (v.Version != int64(i) || string(v.Payload) != fmt.Sprint(i))) {
					t.Fatalf("value %d: %+v", i, v)
				}
			}
		}
		vals, err := a.Projections(ctx, hashes)
		if err != nil {
			t.Fatal(err)
		}
		check(vals)
		local := testutil.ToFloat64(a.reads.local)
		vals, err = a.Projections(ctx, hashes)
		if err != nil {
			t.Fatal(err)
		}
		check(vals)
		if got := testutil.ToFloat64(a.reads.local) - local; got != 30 {
			t.Fatalf("%v of 30 found values served locally the second time", got)
		}
		vals, err = a.ProjectionsFresh(ctx, hashes)
		if err != nil {
			t.Fatal(err)
		}
		check(vals)

		// Garbage in one key: an error naming that hash, the others read.
		bad := hashes[5]
		if err := raw.Do(ctx, raw.B().Set().Key(projectionKey(bad)).Value("not a version").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "A hears the garbage write", func() bool { return pa.heard(bad) >= 1 })
		if _, err := a.Projection(ctx, bad); err == nil {
			t.Fatal("garbage parsed")
		}
		if _, err := a.ProjectionFresh(ctx, bad); err == nil {
			t.Fatal("garbage parsed (fresh)")
		}
		vals, err = a.Projections(ctx, hashes)
		var pe *ProjectionError
		if !errors.As(err, &pe) || pe.Hash != bad {
			t.Fatalf("batch error %v", err)
		}
		if vals[5].Found || !vals[6].Found || vals[6].Version != 6 {
			t.Fatalf("batch with one garbage value: %+v %+v", vals[5], vals[6])
		}
		for _, short := range []string{"", "123", strings.Repeat("7", 19)} {
			raw.Do(ctx, raw.B().Set().Key(projectionKey(bad)).Value(short).Build())
			if _, err := a.ProjectionFresh(ctx, bad); err == nil {
				t.Fatalf("%q parsed", short)
			}
		}

		// ProjectionFresh reads Redis, whatever the local cache holds, and
		// arms nothing: B reads fresh, A writes, B hears nothing.
		h := hashes[1]
		put(t, a, ProjectionEntry{Hash: h, Version: 100, Payload: []byte("fresh")})
		if v := mustFresh(t, b, h); v.Version != 100 || string(v.Payload) != "fresh" {
			t.Fatalf("fresh read %+v", v)
		}
		put(t, a, ProjectionEntry{Hash: h, Version: 101})
		time.Sleep(100 * time.Millisecond)
		if pb.heard(h) != 0 {
			t.Fatal("ProjectionFresh armed tracking")
		}
		// For a node that holds v100 locally, Fresh sees v102 as soon as
		// it is written, before any invalidation could be processed.
		if v, _ := b.Projection(ctx, h); v.Version != 101 {
			t.Fatalf("B reads %+v", v)
		}
		put(t, a, ProjectionEntry{Hash: h, Version: 102})
		if v := mustFresh(t, b, h); v.Version != 102 {
			t.Fatalf("fresh read %+v right after the write", v)
		}
	})
}

// Many nil invalidations in a burst run OnReset twice: once at once, once
// at the end of the window for all the others. A reset arriving while
// OnReset runs is not lost.
func TestRightsResetsCoalesce(t *testing.T) {
	addr := testserver.Redis(t)
	const window = 300 * time.Millisecond
	var mu sync.Mutex
	var runs []time.Time
	block := make(chan struct{})
	blocking := false
	cfg := RightsConfig{
		Addrs: []string{addr}, OnChange: func([]int64) {}, ResetWindow: window,
		OnReset: func() {
			mu.Lock()
			runs = append(runs, time.Now())
			b := blocking
			mu.Unlock()
			if b {
				<-block
			}
		},
	}
	r, err := OpenRights(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	nruns := func() int { mu.Lock(); defer mu.Unlock(); return len(runs) }

	start := time.Now()
	for range 50 {
		r.onInvalidations(nil)
	}
	waitFor(t, "the first reset", func() bool { return nruns() >= 1 })
	if d := runs[0].Sub(start); d > window/2 {
		t.Fatalf("first reset ran after %v, want at once", d)
	}
	time.Sleep(window / 3)
	for range 50 {
		r.onInvalidations(nil)
	}
	waitFor(t, "the coalesced reset", func() bool { return nruns() >= 2 })
	mu.Lock()
	gap := runs[1].Sub(runs[0])
	mu.Unlock()
	if gap < window*9/10 {
		t.Fatalf("second reset %v after the first, want about %v", gap, window)
	}
	time.Sleep(3 * window)
	if n := nruns(); n != 2 {
		t.Fatalf("%d resets for two bursts, want 2", n)
	}

	// Quiet for longer than the window: the next reset runs at once.
	start = time.Now()
	r.onInvalidations(nil)
	waitFor(t, "a reset after a quiet window", func() bool { return nruns() == 3 })
	if d := runs[2].Sub(start); d > window/2 {
		t.Fatalf("reset after a quiet window ran after %v", d)
	}

	// A reset that arrives while OnReset runs triggers one more run.
	time.Sleep(window + 50*time.Millisecond)
	mu.Lock()
	blocking = true
	mu.Unlock()
	r.onInvalidations(nil)
	waitFor(t, "the blocked reset to start", func() bool { return nruns() == 4 })
	mu.Lock()
	blocking = false
	mu.Unlock()
	r.onInvalidations(nil)
	r.onInvalidations(nil)
	close(block)
	waitFor(t, "the reset that arrived during OnReset", func() bool { return nruns() == 5 })
	time.Sleep(2 * window)
	if n := nruns(); n != 5 {
		t.Fatalf("%d resets, want 5", n)
	}
}

// On a Redis Cluster, killing every tracking connection (one per master,
// so one nil invalidation each) re-validates at most twice within the
// window, and projections are still reported afterwards: re-armed.
func TestRightsClusterResetCoalescedAndRearmed(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis Cluster skipped in -short")
	}
	addrs := testserver.RedisCluster(t, 3)
	ctx := ctxT(t)
	const window = 2 * time.Second
	var mu sync.Mutex
	var resets []time.Time
	var pa projRecorder
	pa.values = map[[32]byte]ProjectionValue{}
	cfg := pa.config(addrs)
	cfg.ResetWindow = window
	cfg.OnReset = func() {
		mu.Lock()
		resets = append(resets, time.Now())
		mu.Unlock()
	}
	a, err := OpenRights(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	pa.pmu.Lock()
	pa.r = a
	pa.pmu.Unlock()
	var pb projRecorder
	b := openProjRights(t, &pb, addrs)
	admin := newClient(t, addrs)

	// Enough keys to cover every master.
	var hashes [][32]byte
	for i := range 24 {
		hashes = append(hashes, hashOf(fmt.Sprintf("reset-%d", i)))
	}
	if _, err := a.Projections(ctx, hashes); err != nil {
		t.Fatal(err)
	}
	if err := a.Watch(ctx, 77); err != nil {
		t.Fatal(err)
	}
	masters := map[string]bool{}
	for _, h := range hashes {
		n, err := admin.Do(ctx, admin.B().ClusterKeyslot().Key(projectionKey(h)).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		masters[slotOwner(t, admin, n)] = true
	}
	if len(masters) != 3 {
		t.Fatalf("keys on %d masters, want 3", len(masters))
	}
	// Let start-up discovery settle: it may replace connections, so
	// resets, and a run merged at the end of its window. Then the resets
	// of the kill start a fresh window (the first runs at once).
	settled := time.Now()
	waitFor(t, "start-up resets to settle", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if n := len(resets); n > 0 && resets[n-1].After(settled) {
			settled = resets[n-1]
		}
		return time.Since(settled) > window+200*time.Millisecond
	})
	mu.Lock()
	before := len(resets)
	mu.Unlock()

	killed, killedAt := 0, time.Now()
	for addr, n := range admin.Nodes() {
		list, err := n.Do(ctx, n.B().ClientList().Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		list = strings.TrimPrefix(list, "txt:") // a RESP3 verbatim string
		for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
			var id, flags string
			for _, f := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(f, "id="); ok {
					id = v
				} else if v, ok := strings.CutPrefix(f, "flags="); ok {
					flags = v
				}
			}
			if !strings.Contains(flags, "t") { // t: CLIENT TRACKING on
				continue
			}
			if err := n.Do(ctx, n.B().ClientKill().Id(mustInt(t, id)).Build()).Error(); err != nil {
				t.Fatalf("%s: CLIENT KILL ID %s: %v", addr, id, err)
			}
			killed++
		}
	}
	if killed < 3 { // at least A's connection to each of 3 masters
		t.Fatalf("killed %d tracking connections", killed)
	}
	waitFor(t, "a reset after the kill", func() bool { mu.Lock(); defer mu.Unlock(); return len(resets) > before })
	time.Sleep(time.Until(killedAt.Add(window + window/2)))
	mu.Lock()
	var within int
	for _, at := range resets[before:] {
		if at.Sub(killedAt) <= window+window/4 {
			within++
		}
	}
	total := len(resets) - before
	first := resets[before].Sub(killedAt)
	mu.Unlock()
	t.Logf("killed %d tracking connections: %d resets within the window, %d in all, the first after %v", killed, within, total, first)
	if first > window/2 {
		t.Fatalf("first reset %v after the kill, want at once", first)
	}
	if within < 1 || within > 2 || total > 2 {
		t.Fatalf("%d resets within the window (%d in all) after killing %d connections, want 1 or 2", within, total, killed)
	}

	// Re-armed on the new connections: every key is reported again, and
	// the change counter too.
	var entries []ProjectionEntry
	for _, h := range hashes {
		entries = append(entries, ProjectionEntry{Hash: h, Version: 1, Payload: []byte("after")})
	}
	put(t, b, entries...)
	for _, h := range hashes {
		waitFor(t, "A hears every key after the reset", func() bool { return pa.heard(h) >= 1 })
	}
	if err := b.Changed(ctx, 77); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A hears token 77", func() bool { c, _ := pa.snapshot(); return slices.Contains(c, 77) })
}

func slotOwner(t *testing.T, c rueidis.Client, slot int64) string {
	t.Helper()
	shards, err := c.Do(ctxT(t), c.B().ClusterSlots().Build()).ToArray()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range shards {
		f, _ := s.ToArray()
		lo, _ := f[0].AsInt64()
		hi, _ := f[1].AsInt64()
		if slot >= lo && slot <= hi {
			node, _ := f[2].ToArray()
			port, _ := node[1].AsInt64()
			return fmt.Sprint(port)
		}
	}
	t.Fatalf("slot %d has no owner", slot)
	return ""
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

// BenchmarkProjection: a read served by the local cache, and one that goes
// to Redis (ProjectionFresh: one GET on loopback).
func BenchmarkProjection(b *testing.B) {
	addr := testserver.Redis(b)
	r, err := OpenRights(RightsConfig{Addrs: []string{addr}, OnChange: func([]int64) {}, OnReset: func() {}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	h := hashOf("bench")
	if _, err := r.PutProjection(ctx, ProjectionEntry{Hash: h, Version: 1, Payload: make([]byte, 200)}); err != nil {
		b.Fatal(err)
	}
	if _, err := r.Projection(ctx, h); err != nil {
		b.Fatal(err)
	}
	b.Run("local", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if v, err := r.Projection(ctx, h); err != nil || !v.Found {
				b.Fatal(v, err)
			}
		}
	})
	b.Run("redis", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if v, err := r.ProjectionFresh(ctx, h); err != nil || !v.Found {
				b.Fatal(v, err)
			}
		}
	})
}
