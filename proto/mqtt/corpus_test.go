package mqtt

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// marshalSeed writes a seed in the `go test fuzz v1` corpus format.
func marshalSeed(args []any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		default:
			panic(fmt.Sprintf("seed type %T", a))
		}
	}
	return b.Bytes()
}

// seedFile names a seed by its content, prefixed "seed-" so regeneration
// replaces only generated files and keeps the crashers the fuzzer wrote.
func seedFile(data []byte) string {
	sum := sha256.Sum256(data)
	return "seed-" + hex.EncodeToString(sum[:8])
}

// TestFuzzCorpus checks that the committed seed corpus under
// testdata/fuzz is the one the vectors generate; with
// MQTT_WRITE_FUZZ_CORPUS=1 it rewrites it instead.
func TestFuzzCorpus(t *testing.T) {
	write := os.Getenv("MQTT_WRITE_FUZZ_CORPUS") == "1"
	for name, seeds := range fuzzSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", name)
		want := map[string][]byte{}
		for _, s := range seeds {
			data := marshalSeed(s.args)
			want[seedFile(data)] = data
		}
		if n := len(want); n < 10 || n > maxSeeds {
			t.Errorf("%s: %d distinct seeds, want 10 to %d", name, n, maxSeeds)
		}
		if write {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
			for _, f := range old {
				os.Remove(f)
			}
			for f, data := range want {
				if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Errorf("%s: %v (run with MQTT_WRITE_FUZZ_CORPUS=1)", name, err)
			continue
		}
		have := map[string]bool{}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "seed-") {
				have[e.Name()] = true
			}
		}
		for f := range want {
			if !have[f] {
				t.Errorf("%s: seed %s missing (run with MQTT_WRITE_FUZZ_CORPUS=1)", name, f)
			}
		}
		for f := range have {
			if want[f] == nil {
				t.Errorf("%s: stale seed %s (run with MQTT_WRITE_FUZZ_CORPUS=1)", name, f)
			}
		}
	}
}
