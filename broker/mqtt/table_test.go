package mqtt

import (
	"hash/maphash"
	"math/rand/v2"
	"strconv"
	"testing"
)

// The session table agrees with a map through random puts, replacements
// and drops (backward-shift deletion, growth and shrinking included).
func TestSessionTable(t *testing.T) {
	tab := &sessionTable{seed: maphash.MakeSeed()}
	want := map[clientKey]*session{}
	rng := rand.New(rand.NewPCG(1, 2))
	check := func() {
		t.Helper()
		if n := tab.count(); n != len(want) {
			t.Fatalf("count %d, want %d", n, len(want))
		}
		for k, s := range want {
			if got := tab.get(k); got != s {
				t.Fatalf("get %v: %p, want %p", k, got, s)
			}
		}
	}
	for round := range 3 {
		for range 20000 {
			k := clientKey{token: int64(rng.IntN(4)), id: "c" + strconv.Itoa(rng.IntN(3000))}
			switch rng.IntN(3) {
			case 0, 1:
				s := newSession(nil, k, "u", nil, false)
				if old := tab.put(k, s); old != want[k] {
					t.Fatalf("put %v replaced %p, want %p", k, old, want[k])
				}
				want[k] = s
			case 2:
				if s := want[k]; s != nil {
					tab.drop(k, newSession(nil, k, "", nil, false)) // not its session: kept
					tab.drop(k, s)
					delete(want, k)
				} else if tab.get(k) != nil {
					t.Fatalf("get %v: found a dropped session", k)
				}
			}
		}
		check()
		if round == 2 {
			for k, s := range want {
				tab.drop(k, s)
				delete(want, k)
			}
			check()
			for i := range tab.shards {
				if n := len(tab.shards[i].slots); n > tableMinSlots {
					t.Errorf("shard %d kept %d slots once empty", i, n)
				}
			}
		}
	}
	if s := newSession(nil, clientKey{7, "dev"}, "user", nil, false); s.id() != "dev" || s.key() != (clientKey{7, "dev"}) {
		t.Fatalf("key %v", s.key())
	} else if id, user := s.Describe(); id != "dev" || user != "user" {
		t.Fatalf("Describe: %q %q", id, user)
	}
}
