package loadtest

import "testing"

func TestParseStatCPU(t *testing.T) {
	// The command name may hold spaces and parentheses.
	stat := []byte("4242 (gate (cast) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 12 0 100 1000000 500 18446744073709551615")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 3.25 {
		t.Fatalf("got %v, %v; want 3.25 s", cpu, err)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 ab 2"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestReadSelf(t *testing.T) {
	rss, err := readRSS("self")
	if err != nil || rss <= 0 {
		t.Fatalf("rss %d, %v", rss, err)
	}
	if _, err := readCPU("self"); err != nil {
		t.Fatal(err)
	}
	if _, err := readRSS("0"); err == nil {
		t.Fatal("pid 0 has no /proc entry")
	}
}
