package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/gatecast/gatecast/acl"
)

// grantedStore returns a store holding one token with n readwrite grants
// on tags "dev/<i>/#", written in one transaction (n SetPermission calls
// would take seconds), and the token's and first tag's IDs.
func grantedStore(b *testing.B, n int) (*Store, int64, int64) {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "acl.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	tok, err := s.CreateToken(ctx, "big", 0, acl.HashSecret([]byte("gc_big")))
	if err != nil {
		b.Fatal(err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	var first int64
	for i := range n {
		var id int64
		if err := tx.QueryRowContext(ctx, "INSERT INTO tags (pattern) VALUES (?) RETURNING id", fmt.Sprintf("dev/%d/#", i)).Scan(&id); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			first = id
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO permissions (token_id, tag_id, permission) VALUES (?, ?, 'readwrite')", tok.ID, id); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	return s, tok.ID, first
}

// BenchmarkGrantChange is the store and compile part of one admin
// permission change on a token with n grants, as the broker applies it:
// the write, then either a full reload (GetToken, ListGrants,
// CompileGrants: what RefreshTokens does) or an incremental one (GetToken,
// GetGrant, Grants.With). Each iteration flips one grant between read and
// readwrite.
func BenchmarkGrantChange(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		s, tokID, tagID := grantedStore(b, n)
		ctx := context.Background()
		gs, err := s.ListGrants(ctx, tokID)
		if err != nil {
			b.Fatal(err)
		}
		flip := func(i int) acl.Permission {
			if i%2 == 0 {
				return acl.PermRead
			}
			return acl.PermReadWrite
		}
		b.Run("reload/grants="+strconv.Itoa(n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				if err := s.SetPermission(ctx, tokID, tagID, flip(i)); err != nil {
					b.Fatal(err)
				}
				i++
				if _, err := s.GetToken(ctx, tokID); err != nil {
					b.Fatal(err)
				}
				gs, err := s.ListGrants(ctx, tokID)
				if err != nil {
					b.Fatal(err)
				}
				acl.CompileGrants(gs)
			}
		})
		g := acl.CompileGrants(gs)
		b.Run("incremental/grants="+strconv.Itoa(n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				if err := s.SetPermission(ctx, tokID, tagID, flip(i)); err != nil {
					b.Fatal(err)
				}
				i++
				if _, err := s.GetToken(ctx, tokID); err != nil {
					b.Fatal(err)
				}
				gr, err := s.GetGrant(ctx, tokID, tagID)
				if err != nil {
					b.Fatal(err)
				}
				g = g.With(gr)
			}
		})
	}
}

// BenchmarkListGrants10k is the full read of a 10,000-grant token.
func BenchmarkListGrants10k(b *testing.B) {
	s, tokID, _ := grantedStore(b, 10_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.ListGrants(context.Background(), tokID); err != nil {
			b.Fatal(err)
		}
	}
}
