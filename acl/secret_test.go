package acl

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestNewSecret(t *testing.T) {
	seen := make(map[string]bool)
	for range 100 {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, SecretPrefix) {
			t.Fatalf("secret %q lacks prefix %q", s, SecretPrefix)
		}
		if len(s) != len(SecretPrefix)+43 {
			t.Fatalf("secret is %d characters, want %d", len(s), len(SecretPrefix)+43)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, SecretPrefix))
		if err != nil {
			t.Fatalf("secret body is not unpadded base64url: %v", err)
		}
		if len(raw) != 32 {
			t.Fatalf("secret carries %d bytes, want 32", len(raw))
		}
		if seen[s] {
			t.Fatal("NewSecret repeated a secret")
		}
		seen[s] = true
	}
}

func TestHashSecret(t *testing.T) {
	// FIPS 180-2 test vector: SHA-256("abc").
	want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	h := HashSecret([]byte("abc"))
	if got := hex.EncodeToString(h[:]); got != want {
		t.Errorf("HashSecret(abc) = %s, want %s", got, want)
	}
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if HashSecret([]byte(s)) != Hash(sha256.Sum256([]byte(s))) {
		t.Error("HashSecret differs from SHA-256 of the whole secret")
	}
	if HashSecret([]byte(s)) == HashSecret([]byte(s+"x")) {
		t.Error("different secrets hash alike")
	}
	if HashSecret(nil).IsZero() {
		t.Error("hash of the empty secret is zero")
	}
}

func TestHashSecretAllocs(t *testing.T) {
	secret := []byte("gc_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG")
	var h Hash
	if n := testing.AllocsPerRun(100, func() { h = HashSecret(secret) }); n != 0 {
		t.Errorf("HashSecret allocates %v times", n)
	}
	if h.IsZero() {
		t.Error("zero hash")
	}
}

func TestHashEqual(t *testing.T) {
	a, b := HashSecret([]byte("a")), HashSecret([]byte("b"))
	if !a.Equal(a) || a.Equal(b) || b.Equal(a) {
		t.Error("Hash.Equal is wrong")
	}
	c := a
	c[31] ^= 1
	if a.Equal(c) {
		t.Error("Hash.Equal ignores the last byte")
	}
	if !(Hash{}).IsZero() || a.IsZero() {
		t.Error("Hash.IsZero is wrong")
	}
}

func TestValidate(t *testing.T) {
	invalid := []error{
		ValidateTokenName(strings.Repeat("n", MaxTokenNameLen+1)),
		ValidateTokenName("\xc3"),
		ValidateTokenName("a\x00"),
		ValidateMaxConnections(-1),
		ValidatePattern(""),
		ValidatePattern("a/#/b"),
		ValidatePattern("a+"),
		ValidateHash(Hash{}),
		ValidatePermission(PermNone),
		ValidatePermission(Permission(3)),
	}
	for i, err := range invalid {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("case %d: %v, want ErrInvalid", i, err)
		}
	}
	valid := []error{
		ValidateTokenName(""),
		ValidateTokenName(strings.Repeat("ü", MaxTokenNameLen/2)),
		ValidateMaxConnections(0),
		ValidateMaxConnections(1 << 20),
		ValidatePattern("#"),
		ValidatePattern("sensors/+/temp"),
		ValidatePattern("$SYS/#"),
		ValidateHash(HashSecret([]byte("x"))),
		ValidatePermission(PermRead),
		ValidatePermission(PermReadWrite),
	}
	for i, err := range valid {
		if err != nil {
			t.Errorf("case %d: %v, want nil", i, err)
		}
	}
}

func TestPermissionNames(t *testing.T) {
	for _, p := range []Permission{PermRead, PermReadWrite} {
		q, err := ParsePermission(p.String())
		if err != nil || q != p {
			t.Errorf("ParsePermission(%q) = %v, %v", p.String(), q, err)
		}
	}
	for _, s := range []string{"", "write", "READ", "none"} {
		if _, err := ParsePermission(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParsePermission(%q): %v, want ErrInvalid", s, err)
		}
	}
}

func TestIsWeakSecret(t *testing.T) {
	for _, weak := range []string{"", "abc", "1234", "short-secret", "15-characters!!", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababababababababab", "0000000011111111"} {
		if !IsWeakSecret(weak) {
			t.Errorf("IsWeakSecret(%q) = false (%.1f bits), want true", weak, SecretBits(weak))
		}
	}
	for _, strong := range []string{"3f7a9c1e5b2d4f6a8c0e1b3d5f7a9c1e", "Xk9pQ2mZr7Lw4TbN", "seed-device-token-2024-north-field"} {
		if IsWeakSecret(strong) {
			t.Errorf("IsWeakSecret(%q) = true (%.1f bits), want false", strong, SecretBits(strong))
		}
	}
	for range 2000 {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if IsWeakSecret(s) {
			t.Fatalf("a generated secret is weak: %.1f bits", SecretBits(s))
		}
	}
	if b := SecretBits("abcd"); b != 8 {
		t.Errorf("SecretBits(abcd) = %v, want 8", b)
	}
}
