package acl

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// Rights is one token's rights as nodes share them outside the store of
// record (the cluster's Redis projection): what admission and enforcement
// need, nothing more (no creation time, no import origin).
type Rights struct {
	ID             int64
	Version        int64
	Hash           Hash
	Name           string
	MaxConnections int
	Disabled       bool
	WeakSecret     bool
	// Gone marks a tombstone: the token was deleted (GoneDeleted) or its
	// secret rotated away from Hash (GoneRotated). A tombstone carries ID,
	// Version and Hash only.
	Gone   GoneReason
	Grants []Grant // ordered by TagID, as ListGrants returns them
}

// GoneReason tells why a Rights is a tombstone.
type GoneReason uint8

const (
	// NotGone: the token exists and accepts Hash.
	NotGone GoneReason = iota
	// GoneDeleted: the token was deleted.
	GoneDeleted
	// GoneRotated: the token's secret was rotated away from Hash.
	GoneRotated
)

// String returns "", "deleted" or "rotated".
func (g GoneReason) String() string {
	switch g {
	case NotGone:
		return ""
	case GoneDeleted:
		return "deleted"
	case GoneRotated:
		return "rotated"
	}
	return fmt.Sprintf("GoneReason(%d)", uint8(g))
}

// RightsOf returns the rights of t with its grants (as ListGrants returns
// them; the slice is not copied).
func RightsOf(t Token, grants []Grant) Rights {
	return Rights{
		ID:             t.ID,
		Version:        t.Version,
		Hash:           t.Hash,
		Name:           t.Name,
		MaxConnections: t.MaxConnections,
		Disabled:       t.Disabled,
		WeakSecret:     t.WeakSecret,
		Grants:         grants,
	}
}

// Token returns the Token fields of r (CreatedAt zero).
func (r Rights) Token() Token {
	return Token{
		ID:             r.ID,
		Name:           r.Name,
		Hash:           r.Hash,
		MaxConnections: r.MaxConnections,
		Disabled:       r.Disabled,
		WeakSecret:     r.WeakSecret,
		Version:        r.Version,
	}
}

// The encoding of a Rights (AppendRights, ParseRights), format 1:
//
//	format   byte     1
//	ID       uvarint  ≥ 1
//	Version  uvarint  ≤ math.MaxInt64
//	Hash     32 bytes not zero
//	flags    byte     bits 0–1 Gone (0, 1 or 2), bit 2 Disabled,
//	                  bit 3 WeakSecret, others 0; a tombstone (Gone ≠ 0)
//	                  sets neither flag and ends here
//	name     uvarint length, then the bytes
//	MaxConnections uvarint
//	grants   uvarint count, then each grant:
//	           TagID    uvarint, the difference from the previous grant's
//	                    TagID (from 0 for the first), ≥ 1: strictly ordered
//	           Permission byte 1 (read) or 2 (readwrite)
//	           pattern  uvarint length, then the bytes
//
// Every uvarint is minimal (encoding/binary's, refused when it has a
// redundant trailing zero group), and nothing follows the last field, so
// every accepted input is the one encoding of what it decodes to.
const (
	rightsFormat byte = 1

	flagGone       = 0x03
	flagDisabled   = 0x04
	flagWeakSecret = 0x08

	// minGrantLen is the shortest encoding of a grant: a one-byte TagID
	// difference, the permission, a one-byte length and a one-byte
	// pattern (patterns are never empty).
	minGrantLen = 4
)

// AppendRights appends r's encoding to dst and returns the extended slice.
// A tombstone is encoded with ID, Version and Hash only. r is not checked:
// a value no store would give (a negative ID, grants out of order) yields
// an encoding ParseRights refuses.
func AppendRights(dst []byte, r Rights) []byte {
	gone := r.Gone
	if gone > GoneRotated {
		gone = flagGone // refused by ParseRights
	}
	flags := byte(gone)
	if gone != NotGone {
		dst = slices.Grow(dst, 1+2*binary.MaxVarintLen64+len(r.Hash)+1)
	} else {
		n := 1 + 4*binary.MaxVarintLen64 + len(r.Hash) + 1 + len(r.Name)
		for _, g := range r.Grants {
			n += 2*binary.MaxVarintLen64 + 1 + len(g.Pattern)
		}
		dst = slices.Grow(dst, n)
		if r.Disabled {
			flags |= flagDisabled
		}
		if r.WeakSecret {
			flags |= flagWeakSecret
		}
	}
	dst = append(dst, rightsFormat)
	dst = binary.AppendUvarint(dst, uint64(r.ID))
	dst = binary.AppendUvarint(dst, uint64(r.Version))
	dst = append(dst, r.Hash[:]...)
	dst = append(dst, flags)
	if gone != NotGone {
		return dst
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Name)))
	dst = append(dst, r.Name...)
	dst = binary.AppendUvarint(dst, uint64(r.MaxConnections))
	dst = binary.AppendUvarint(dst, uint64(len(r.Grants)))
	var prev int64
	for _, g := range r.Grants {
		dst = binary.AppendUvarint(dst, uint64(g.TagID-prev))
		prev = g.TagID
		dst = append(dst, byte(g.Permission))
		dst = binary.AppendUvarint(dst, uint64(len(g.Pattern)))
		dst = append(dst, g.Pattern...)
	}
	return dst
}

// ParseRights decodes what AppendRights wrote. Any other input is an error
// wrapping ErrInvalid: a format other than 1, a truncated or non-minimal
// number, trailing bytes, or a value a store would refuse — checked with
// the Validate functions (ValidateTokenName, ValidateMaxConnections,
// ValidateHash, ValidatePattern, ValidatePermission), so that a projection
// can never install what the store of record would not hold — as well as
// an ID below 1, a number beyond int64 (or int), an unknown GoneReason, a
// tombstone with flags, and grants not strictly ordered by TagID. It never
// panics.
//
// Cost: O(len(b)); at most two allocations, whatever the number of grants:
// the Grants slice (nil without grants) and one string holding the name
// and every pattern, which all point into it (so a Grant kept from the
// result keeps that string alive). Memory is bounded by the input: a grant
// takes at least 4 bytes of it, so the slice is at most 8 × len(b) bytes.
func ParseRights(b []byte) (Rights, error) {
	var r Rights
	if len(b) == 0 {
		return Rights{}, rightsErr("empty")
	}
	if b[0] != rightsFormat {
		return Rights{}, rightsErr("format %d, want %d", b[0], rightsFormat)
	}
	p := rightsParser{b: b, off: 1}
	r.ID = p.int64("ID")
	r.Version = p.int64("version")
	if p.err == nil && r.ID < 1 {
		p.fail("ID %d, want at least 1", r.ID)
	}
	if p.err == nil && len(b)-p.off < len(r.Hash)+1 {
		p.fail("truncated hash")
	}
	if p.err != nil {
		return Rights{}, p.err
	}
	copy(r.Hash[:], b[p.off:])
	p.off += len(r.Hash)
	if err := ValidateHash(r.Hash); err != nil {
		return Rights{}, fmt.Errorf("acl: rights of token %d: %w", r.ID, err)
	}
	flags := b[p.off]
	p.off++
	if flags&^(flagGone|flagDisabled|flagWeakSecret) != 0 {
		return Rights{}, rightsErr("unknown flags %#x", flags)
	}
	r.Gone = GoneReason(flags & flagGone)
	if r.Gone > GoneRotated {
		return Rights{}, rightsErr("unknown gone reason %d", r.Gone)
	}
	if r.Gone != NotGone {
		if flags != byte(r.Gone) {
			return Rights{}, rightsErr("a tombstone with flags %#x", flags)
		}
		if p.off != len(b) {
			return Rights{}, rightsErr("%d bytes after a tombstone", len(b)-p.off)
		}
		return r, nil
	}
	r.Disabled = flags&flagDisabled != 0
	r.WeakSecret = flags&flagWeakSecret != 0

	// Every string comes from one copy of the rest of the input.
	var rest string
	if p.off < len(b) {
		rest = string(b[p.off:])
	}
	base := p.off
	str := func(start, end int) string { return rest[start-base : end-base] }

	nameEnd := p.length("name length")
	if p.err != nil {
		return Rights{}, p.err
	}
	r.Name = str(p.off, nameEnd)
	p.off = nameEnd
	if err := ValidateTokenName(r.Name); err != nil {
		return Rights{}, fmt.Errorf("acl: rights of token %d: %w", r.ID, err)
	}
	maxConns := p.int64("max connections")
	if p.err == nil && maxConns > math.MaxInt {
		p.fail("max connections %d beyond int", maxConns)
	}
	n := p.uvarint("grant count")
	if p.err == nil && n > uint64((len(b)-p.off)/minGrantLen) {
		p.fail("%d grants in %d bytes", n, len(b)-p.off)
	}
	if p.err != nil {
		return Rights{}, p.err
	}
	r.MaxConnections = int(maxConns)
	if err := ValidateMaxConnections(r.MaxConnections); err != nil { // cannot fail: kept as the rule's own word
		return Rights{}, fmt.Errorf("acl: rights of token %d: %w", r.ID, err)
	}
	if n > 0 {
		r.Grants = make([]Grant, n)
	}
	var tag int64
	for i := range r.Grants {
		d := p.uvarint("tag ID")
		if p.err == nil && (d == 0 || d > uint64(math.MaxInt64-tag)) {
			p.fail("grant %d: tag ID not above the previous one (%d) or beyond int64", i, tag)
		}
		if p.err == nil && p.off >= len(b) {
			p.fail("grant %d: truncated", i)
		}
		if p.err != nil {
			return Rights{}, p.err
		}
		tag += int64(d)
		perm := Permission(b[p.off])
		p.off++
		if err := ValidatePermission(perm); err != nil {
			return Rights{}, fmt.Errorf("acl: rights of token %d, tag %d: %w", r.ID, tag, err)
		}
		end := p.length("pattern length")
		if p.err != nil {
			return Rights{}, p.err
		}
		pattern := str(p.off, end)
		p.off = end
		if err := ValidatePattern(pattern); err != nil {
			return Rights{}, fmt.Errorf("acl: rights of token %d, tag %d: %w", r.ID, tag, err)
		}
		r.Grants[i] = Grant{TagID: tag, Pattern: pattern, Permission: perm}
	}
	if p.off != len(b) {
		return Rights{}, rightsErr("%d bytes after the last grant", len(b)-p.off)
	}
	return r, nil
}

func rightsErr(format string, args ...any) error {
	return fmt.Errorf("%w: rights encoding: "+format, append([]any{ErrInvalid}, args...)...)
}

// rightsParser reads the numbers of an encoding; after the first error it
// reads nothing more and err holds that error.
type rightsParser struct {
	b   []byte
	off int
	err error
}

func (p *rightsParser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = rightsErr(format, args...)
	}
}

// uvarint reads a minimal uvarint.
func (p *rightsParser) uvarint(what string) uint64 {
	if p.err != nil {
		return 0
	}
	if p.off < len(p.b) && p.b[p.off] < 0x80 { // the common one-byte case
		p.off++
		return uint64(p.b[p.off-1])
	}
	v, n := binary.Uvarint(p.b[p.off:])
	switch {
	case n == 0:
		p.fail("truncated %s", what)
		return 0
	case n < 0:
		p.fail("%s beyond 64 bits", what)
		return 0
	case p.b[p.off+n-1] == 0:
		p.fail("%s not minimally encoded", what)
		return 0
	}
	p.off += n
	return v
}

// int64 reads a uvarint that must fit an int64.
func (p *rightsParser) int64(what string) int64 {
	v := p.uvarint(what)
	if p.err == nil && v > math.MaxInt64 {
		p.fail("%s %d beyond int64", what, v)
		return 0
	}
	return int64(v)
}

// length reads a length and returns the offset where the bytes it counts
// end, after checking that the input holds them.
func (p *rightsParser) length(what string) int {
	v := p.uvarint(what)
	if p.err == nil && v > uint64(len(p.b)-p.off) {
		p.fail("%s %d, %d bytes left", what, v, len(p.b)-p.off)
	}
	if p.err != nil {
		return p.off
	}
	return p.off + int(v)
}
