package acl

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/gatecast/gatecast/topic"
)

// MaxTokenNameLen is the longest token name, in bytes.
const MaxTokenNameLen = 200

// The Validate functions are the rules every Store applies before writing,
// shared so that all stores refuse the same values with the same errors.
// Callers (the admin API, the CLI) may run them first to answer early; the
// store checks again regardless. Every error they return wraps ErrInvalid.

// ValidateTokenName accepts a name of at most MaxTokenNameLen bytes of valid
// UTF-8 without NUL (which Postgres text cannot hold). The empty name is
// allowed: names are optional, as in the seed.
func ValidateTokenName(name string) error {
	if len(name) > MaxTokenNameLen {
		return fmt.Errorf("%w: token name is %d bytes, at most %d allowed", ErrInvalid, len(name), MaxTokenNameLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: token name is not valid UTF-8", ErrInvalid)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("%w: token name contains a NUL byte", ErrInvalid)
	}
	return nil
}

// ValidateMaxConnections accepts n ≥ 0 (0 means unlimited).
func ValidateMaxConnections(n int) error {
	if n < 0 {
		return fmt.Errorf("%w: max_connections is %d, must be 0 (unlimited) or more", ErrInvalid, n)
	}
	return nil
}

// ValidatePattern accepts a tag pattern that topic.ValidateFilter accepts.
// The error wraps both ErrInvalid and topic's own error.
func ValidatePattern(pattern string) error {
	if err := topic.ValidateFilter(pattern); err != nil {
		return fmt.Errorf("%w: tag pattern %q: %w", ErrInvalid, pattern, err)
	}
	return nil
}

// ValidateHash refuses the zero hash (see Hash.IsZero).
func ValidateHash(h Hash) error {
	if h.IsZero() {
		return fmt.Errorf("%w: token hash is zero (not a hash of any secret)", ErrInvalid)
	}
	return nil
}

// ValidatePermission accepts PermRead and PermReadWrite.
func ValidatePermission(p Permission) error {
	if p != PermRead && p != PermReadWrite {
		return fmt.Errorf("%w: permission %d is neither read nor readwrite", ErrInvalid, p)
	}
	return nil
}
