package admin

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	key, path, created, err := LoadOrCreateKey(dir)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	if path != filepath.Join(dir, "admin.key") {
		t.Fatalf("path %q", path)
	}
	raw, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil || len(raw) != 32 {
		t.Fatalf("key %q is not 32 bytes of base64url: %v", key, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode(), err)
	}
	dst, _ := os.Stat(dir)
	if dst.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode %v", dst.Mode())
	}
	// reused, not regenerated
	key2, _, created, err := LoadOrCreateKey(dir)
	if err != nil || created || key2 != key {
		t.Fatalf("second call: key equal=%v created=%v err=%v", key2 == key, created, err)
	}
	// no temporary files left behind
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("data dir holds %d entries", len(entries))
	}
}

func TestLoadOrCreateKeyExistingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.key")
	os.WriteFile(path, []byte("  my-own-key_123\n\n"), 0o600)
	key, _, created, err := LoadOrCreateKey(dir)
	if err != nil || created || key != "my-own-key_123" {
		t.Fatalf("key %q created=%v err=%v", key, created, err)
	}

	for name, tc := range map[string]struct {
		content string
		mode    os.FileMode
		want    string
	}{
		"readable by others": {"abcdefgh", 0o644, "chmod 600"},
		"empty":              {"\n", 0o600, "empty"},
		"spaces inside":      {"ab cd", 0o600, "printable"},
	} {
		os.Chmod(path, 0o600)
		os.WriteFile(path, []byte(tc.content), 0o600)
		os.Chmod(path, tc.mode)
		_, _, _, err := LoadOrCreateKey(dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to mention %q", name, err, tc.want)
		}
		if strings.Contains(name, "others") && err != nil && strings.Contains(err.Error(), "abcdefgh") {
			t.Errorf("the error shows the key: %v", err)
		}
	}
	// a directory in the way is an error, not a new key
	os.Remove(path)
	os.Mkdir(path, 0o700)
	if _, _, _, err := LoadOrCreateKey(dir); err == nil {
		t.Fatal("a directory named admin.key was accepted")
	}
}

// Two processes starting on one data directory agree on the key.
func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	keys := make([]string, n)
	createdCount := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, _, created, err := LoadOrCreateKey(dir)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			keys[i] = k
			if created {
				createdCount++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, k := range keys {
		if k != keys[0] || k == "" {
			t.Fatalf("keys differ: %q", keys)
		}
	}
	if createdCount != 1 {
		t.Fatalf("%d callers report creating the key", createdCount)
	}
}
