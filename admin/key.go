package admin

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeyFileName is the admin key's file inside the data directory.
const KeyFileName = "admin.key"

// LoadOrCreateKey returns the admin key kept in $dataDir/admin.key, creating
// the directory (0700) and the file (0600, 32 random bytes in unpadded
// base64url) when the file does not exist. created reports whether this call
// generated the key. An existing key file readable or writable by group or
// others is refused rather than used, since anyone who can read it owns the
// broker. Concurrent callers (two processes on one data directory) end up
// with the same key: the file appears atomically, complete, or not at all.
func LoadOrCreateKey(dataDir string) (key string, path string, created bool, err error) {
	path = filepath.Join(dataDir, KeyFileName)
	key, err = readKeyFile(path)
	if err == nil {
		return key, path, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", path, false, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", path, false, fmt.Errorf("creating the data directory: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", path, false, fmt.Errorf("generating the admin key: %w", err)
	}
	key = base64.RawURLEncoding.EncodeToString(raw[:])

	// Write a temporary file and hard-link it into place: the link fails if
	// another process got there first, and a crash never leaves a
	// half-written key behind under the real name.
	tmp, err := os.CreateTemp(dataDir, ".admin.key-*") // mode 0600
	if err != nil {
		return "", path, false, fmt.Errorf("writing the admin key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", path, false, fmt.Errorf("writing the admin key: %w", err)
	}
	if _, err := tmp.WriteString(key + "\n"); err != nil {
		tmp.Close()
		return "", path, false, fmt.Errorf("writing the admin key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", path, false, fmt.Errorf("writing the admin key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", path, false, fmt.Errorf("writing the admin key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			key, err = readKeyFile(path)
			return key, path, false, err
		}
		return "", path, false, fmt.Errorf("writing the admin key: %w", err)
	}
	return key, path, true, nil
}

// readKeyFile reads and checks an existing key file.
func readKeyFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s is accessible to other users (mode %04o); run: chmod 600 %s", path, perm, path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	key := strings.TrimSpace(string(raw))
	if err := checkKey(key); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// checkKey accepts keys a client can send in an Authorization header.
func checkKey(key string) error {
	if key == "" {
		return errors.New("the admin key is empty")
	}
	if len(key) > 1024 {
		return errors.New("the admin key is longer than 1024 bytes")
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c > '~' {
			return errors.New("the admin key must be printable ASCII without spaces")
		}
	}
	return nil
}
