package acl

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"math"
)

// SecretPrefix starts every secret made by NewSecret, so that a leaked
// Gatecast token is recognisable by secret scanners and by people.
const SecretPrefix = "gc_"

// secretBytes is the entropy of a new secret: 256 bits.
const secretBytes = 32

// NewSecret returns a new token secret: SecretPrefix followed by 32 bytes
// from crypto/rand in unpadded base64url (46 characters in all). It is shown
// to the operator once; only HashSecret of it is ever stored. Never log it.
func NewSecret() (string, error) {
	var b [secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("acl: reading random bytes for a secret: %w", err)
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashSecret returns the SHA-256 of a secret, exactly as presented by the
// client (prefix included). It allocates nothing.
//
// Why a fast, unsalted hash and not bcrypt/argon2: those exist to slow down
// guessing of low-entropy passwords. Secrets made by NewSecret carry 256 bits
// of entropy, so a single SHA-256 is already beyond brute force, and a slow
// hash would only put a deliberate CPU cost on every connect — the one
// operation that must stay cheap during a reconnect storm of a whole fleet.
// No salt is used because the hash is the lookup key (stores index it and
// Store.GetTokenByHash finds a token by it); with high-entropy secrets a salt
// adds nothing.
//
// Timing: a token is found by an indexed lookup of its hash, not by comparing
// the presented secret with stored secrets, so the time a lookup takes tells
// an attacker nothing about any secret. Where two hashes are compared byte by
// byte, use Hash.Equal, which is constant-time (crypto/subtle).
func HashSecret(secret []byte) Hash {
	return Hash(sha256.Sum256(secret))
}

// Equal reports whether h and o are the same hash, in constant time.
func (h Hash) Equal(o Hash) bool {
	return subtle.ConstantTimeCompare(h[:], o[:]) == 1
}

// IsZero reports whether h is the zero value, which no store accepts: it is
// what a forgotten HashSecret looks like, not a real hash.
func (h Hash) IsZero() bool {
	return h == Hash{}
}

// The weak-secret rule (IsWeakSecret). Secrets made by NewSecret are never
// weak; imported ones may be: the seed stored whatever its operators typed,
// down to 3 characters.
const (
	// MinStrongSecretLen is the shortest secret that is not weak, in bytes.
	MinStrongSecretLen = 16
	// MinStrongSecretBits is the least estimated entropy (SecretBits) of a
	// secret that is not weak. A random 16-character secret of letters and
	// digits scores about 60; "aaaaaaaaaaaaaaaaaaaa" scores 0.
	MinStrongSecretBits = 56
)

// SecretBits estimates a secret's entropy in bits: its length times the
// Shannon entropy of its bytes' frequencies. Repetition and a small set of
// distinct characters lower it; it is an estimate from one sample, never
// more than len × log2(len), and cannot see dictionary words.
func SecretBits(secret string) float64 {
	if secret == "" {
		return 0
	}
	var counts [256]int
	for i := 0; i < len(secret); i++ {
		counts[secret[i]]++
	}
	n := float64(len(secret))
	var h float64
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h * n
}

// IsWeakSecret reports whether a secret is weak: shorter than
// MinStrongSecretLen bytes, or with SecretBits below MinStrongSecretBits.
// A weak secret still authenticates (devices in the field present it);
// the token is flagged so that an operator rotates it. Note that the
// stored SHA-256 of a weak secret does not protect it: anyone who can read
// the store can find a 3-character secret from its hash at once.
func IsWeakSecret(secret string) bool {
	return len(secret) < MinStrongSecretLen || SecretBits(secret) < MinStrongSecretBits
}
