// Package acl owns who may do what: tokens (stored only as SHA-256 hashes),
// tag patterns, read/readwrite permissions, the compiled per-token grant set
// used on the hot path (Grants: the patterns compiled into a
// topic.PatternSet, so checks cost one walk of the topic's levels and one
// changed grant is applied in O(log n)), and the Store interface with its
// implementations (acl/sqlite, the embedded default; acl/postgres for
// clusters).
//
// It must not know about connections, sessions or the network: enforcement
// on live sessions belongs to the broker. Topic syntax and matching belong
// to topic; acl never matches a topic itself.
package acl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gatecast/gatecast/topic"
)

// Permission is what a grant allows on the topics its pattern covers.
type Permission uint8

const (
	// PermNone is the zero value: no grant.
	PermNone Permission = iota
	// PermRead allows subscribing.
	PermRead
	// PermReadWrite allows subscribing and publishing.
	PermReadWrite
)

// String returns the wire name: "read" or "readwrite" ("" for PermNone).
func (p Permission) String() string {
	switch p {
	case PermRead:
		return "read"
	case PermReadWrite:
		return "readwrite"
	}
	return ""
}

// ParsePermission parses "read" or "readwrite".
func ParsePermission(s string) (Permission, error) {
	switch s {
	case "read":
		return PermRead, nil
	case "readwrite":
		return PermReadWrite, nil
	}
	return PermNone, ErrInvalid
}

// Hash is the SHA-256 of a token secret. Secrets are never stored.
type Hash [32]byte

// Token is a client credential. The secret itself is not part of it.
type Token struct {
	ID             int64
	Name           string
	Hash           Hash
	MaxConnections int // 0 = unlimited
	Disabled       bool
	CreatedAt      time.Time
	// WeakSecret marks a token whose secret was imported and is weak (see
	// IsWeakSecret): it authenticates like any other, but should be
	// rotated. A rotation (SetTokenHash) clears it.
	WeakSecret bool
	// Version is the version of the token's rights: drawn from one sequence
	// per store (so versions of different tokens compare), it grows with
	// every write that changes what the token may do or who it is (see
	// Store). A copy of a token's rights held outside the store (a cache,
	// the cluster's projection in Redis) is to be replaced only by a copy
	// with a higher Version.
	Version int64
}

// NewToken is a token to create with Store.CreateTokenWith.
type NewToken struct {
	Name           string
	MaxConnections int
	Hash           Hash
	WeakSecret     bool
	// Origin, when set, records in the same transaction where the token
	// was imported from (see Store.ListImported). The record outlives the
	// token: an importer uses it not to re-create a token that was deleted
	// or rotated since it was imported.
	Origin *Origin
}

// Origin names a token's row in the system it was imported from.
type Origin struct {
	Source string // e.g. "seed"
	ID     int64  // the row's ID there, positive
}

// Imported is one import record: the token an Origin was imported as.
type Imported struct {
	Origin
	TokenID    int64 // the token as created; it may since have been deleted
	ImportedAt time.Time
}

// Tag is a named MQTT-style topic pattern that permissions refer to.
type Tag struct {
	ID      int64
	Pattern string
}

// Grant is one permission of a token, joined with its tag's pattern.
type Grant struct {
	TagID      int64
	Pattern    string
	Permission Permission
}

// TokenUpdate holds the fields a PATCH may change; nil means unchanged.
type TokenUpdate struct {
	Name           *string
	MaxConnections *int
	Disabled       *bool
}

// MaxVersionBatch is the most token IDs Store.TokenVersions reads in one
// query; longer lists take one query per MaxVersionBatch IDs.
const MaxVersionBatch = 1000

// Errors returned by every Store.
var (
	ErrNotFound = errors.New("acl: not found")
	ErrConflict = errors.New("acl: already exists")
	ErrInvalid  = errors.New("acl: invalid value")
)

// Store is the store of record for tokens, tags and permissions (and, through
// the embedded RetainedStore, MQTT retained messages). All methods are safe
// for concurrent use. Deleting a token or a tag deletes its
// permissions.
//
// The contract every implementation keeps (acl/acltest.RunStoreSuite checks
// it):
//   - Values are checked with the Validate functions of this package before
//     anything is written; a refused value is an error wrapping ErrInvalid.
//   - A missing token, tag or permission is ErrNotFound — also the token or
//     tag named by SetPermission, ListGrants and TokensWithTag.
//   - A second token with the same hash or a second tag with the same pattern
//     is ErrConflict. Overlapping patterns are allowed.
//   - IDs are positive and never reused, even after deletion, so a stale
//     cache entry can never be mistaken for a newer row.
//   - List methods return a non-nil slice ordered by ID ascending.
//   - GetTokenByHash returns disabled tokens too; enforcement is the caller's.
//   - CreatedAt has microsecond precision and is the same on every read.
//   - SetTokenHash clears WeakSecret: a rotation installs a generated secret.
//   - A ctx already done when the call starts fails it with an error
//     wrapping ctx.Err() and changes nothing; one that ends during the call
//     aborts it with an error.
//
// Rights versions (Token.Version), the order that copies of a token's
// rights kept outside the store (the cluster's Redis projection, node
// caches) are reconciled by:
//   - One sequence per store, starting at 1, numbers every version, so the
//     versions of different tokens compare.
//   - Each write that changes what a token may do or who it is gives every
//     token it affects a Version strictly greater than any version the
//     store handed out before, in the same transaction as the change:
//     CreateToken and CreateTokenWith (the new token), UpdateToken with at
//     least one field set (even to the value it had), SetTokenHash,
//     SetPermission (even to the permission held), DeletePermission,
//     UpdateTag and DeleteTag (every token holding a permission on the
//     tag). The tokens one write affects may get one version or several.
//     Such writes are serialised with each other, so versions follow
//     commit order: a write that commits later carries higher versions.
//   - Nothing else changes a Version: not reads, not CreateTag, not an
//     UpdateToken with no field set, not a refused or failed write. The
//     sequence itself may advance without any Version changing (a failed
//     write may use up a value), never back.
//   - DeleteToken, DeleteTag and DeletePermission advance the sequence too
//     (a deleted token keeps no row to carry a version), so RightsVersion
//     read after one of them returns is strictly greater than any Version
//     the deleted token, or a token that lost the permission, ever had.
type Store interface {
	CreateToken(ctx context.Context, name string, maxConnections int, hash Hash) (Token, error)
	GetToken(ctx context.Context, id int64) (Token, error)
	GetTokenByHash(ctx context.Context, hash Hash) (Token, error)
	ListTokens(ctx context.Context) ([]Token, error)
	UpdateToken(ctx context.Context, id int64, u TokenUpdate) (Token, error)
	// SetTokenHash replaces the secret's hash (rotation).
	SetTokenHash(ctx context.Context, id int64, hash Hash) (Token, error)
	DeleteToken(ctx context.Context, id int64) error

	CreateTag(ctx context.Context, pattern string) (Tag, error)
	GetTag(ctx context.Context, id int64) (Tag, error)
	ListTags(ctx context.Context) ([]Tag, error)
	UpdateTag(ctx context.Context, id int64, pattern string) (Tag, error)
	DeleteTag(ctx context.Context, id int64) error

	// SetPermission creates or replaces the permission of token on tag.
	SetPermission(ctx context.Context, tokenID, tagID int64, p Permission) error
	DeletePermission(ctx context.Context, tokenID, tagID int64) error
	// ListGrants returns the token's permissions joined with tag patterns,
	// ordered by tag ID.
	ListGrants(ctx context.Context, tokenID int64) ([]Grant, error)
	// GetGrant returns one row of ListGrants: the token's permission on tag
	// joined with the tag's pattern, read by primary key (O(log n) whatever
	// the number of the token's grants), so that a caller applying one
	// permission change need not re-read them all (see Grants.With). It is
	// ErrNotFound when the token holds no permission on the tag, including
	// when either does not exist (GetToken tells those apart).
	GetGrant(ctx context.Context, tokenID, tagID int64) (Grant, error)
	// TokensWithTag returns the IDs of tokens holding a permission on tag.
	TokensWithTag(ctx context.Context, tagID int64) ([]int64, error)

	// CreateTokenWith is CreateToken with every field of a new token: the
	// weak-secret flag and an import origin. A second token with the same
	// Origin is ErrConflict (as is one with the same hash), and nothing is
	// written then.
	CreateTokenWith(ctx context.Context, t NewToken) (Token, error)
	// ListImported returns the import records of source, ordered by
	// Origin.ID, including those whose token was deleted since.
	ListImported(ctx context.Context, source string) ([]Imported, error)
	// CountWeakSecrets returns how many tokens have WeakSecret set.
	CountWeakSecrets(ctx context.Context) (int, error)

	// RightsVersion returns the current value of the rights-version
	// sequence (0 before any version was handed out): at least the Version
	// of every token read before the call, and, once a DeleteToken,
	// DeleteTag or DeletePermission has returned, strictly greater than
	// every Version the tokens it affected had before it. A tombstone
	// versioned with it outranks every copy of a deleted or rotated token
	// made before the deletion or rotation.
	RightsVersion(ctx context.Context) (int64, error)
	// TokenVersions returns the current Version of each token of ids that
	// exists; a missing (deleted or never created) ID is absent from the
	// map. It reads at most MaxVersionBatch IDs per query; the map is
	// never nil. Duplicate IDs are allowed.
	TokenVersions(ctx context.Context, ids []int64) (map[int64]int64, error)

	// AppendAudit stores an audit entry (see AuditEntry) and returns it
	// with its ID, and its time when e.At was zero. IDs only grow.
	AppendAudit(ctx context.Context, e AuditEntry) (AuditEntry, error)
	// ListAudit returns the entries q selects, newest (highest ID) first.
	ListAudit(ctx context.Context, q AuditQuery) ([]AuditEntry, error)

	// RetainedStore: the MQTT adapter's retained messages live in the same
	// store of record (see RetainedStore for why it is embedded).
	RetainedStore

	Close() error
}

// Retained is one MQTT retained message as the store of record keeps it:
// the last message published with the retain flag on its topic. It mirrors
// the MQTT adapter's own type (broker/mqtt.Retained), which acl does not
// import; server converts between the two.
type Retained struct {
	Topic   string // a publish topic (ValidateRetained), the row's key
	Payload []byte // never empty: an empty retained payload clears the topic
	// Props are the MQTT 5 properties that travel with the message, in
	// wire form, opaque to the store. Empty is stored as nothing and read
	// back as nil.
	Props     []byte
	QoS       byte      // 0, 1 or 2
	ExpiresAt time.Time // zero: never; kept to the millisecond
}

// ValidateRetainedTopic accepts a topic that topic.ValidateTopic accepts.
func ValidateRetainedTopic(t string) error {
	if err := topic.ValidateTopic(t); err != nil {
		return fmt.Errorf("%w: retained topic: %w", ErrInvalid, err)
	}
	return nil
}

// ValidateRetained accepts a message whose topic passes
// topic.ValidateTopic, whose payload is not empty and whose QoS is 0, 1 or
// 2. Every error wraps ErrInvalid.
func ValidateRetained(r Retained) error {
	var errs []error
	if err := ValidateRetainedTopic(r.Topic); err != nil {
		errs = append(errs, err)
	}
	if len(r.Payload) == 0 {
		errs = append(errs, fmt.Errorf("%w: retained message with an empty payload (an empty payload clears the topic: delete it)", ErrInvalid))
	}
	if r.QoS > 2 {
		errs = append(errs, fmt.Errorf("%w: retained message QoS %d, at most 2", ErrInvalid, r.QoS))
	}
	return errors.Join(errs...)
}

// RetainedStore keeps MQTT retained messages, so that they survive a
// restart. The MQTT adapter holds them in memory and writes through this
// interface in the background, in publish order; it reads them once, at
// start-up. In cluster mode every node writes the one shared table.
//
// It is a separate interface so that the adapter's wiring (server) depends
// on these three methods only and their contract reads apart from the ACL
// one; it is embedded in Store so that every store of record has it, checked
// by the compiler: a store without it would otherwise pass unnoticed and
// silently lose retained messages at each restart.
//
// The contract (acl/acltest.RunStoreSuite checks it), besides the ctx and
// validation rules of Store:
//   - PutRetained inserts or replaces the message of r.Topic; r must pass
//     ValidateRetained.
//   - DeleteRetained removes the message of topic (which must pass
//     ValidateRetainedTopic); none is not an error.
//   - LoadRetained returns every message not yet expired (ExpiresAt zero or
//     not before the time of the call), in no particular order, as a
//     non-nil slice, and deletes the expired ones from the store: they are
//     never returned. Payload and Props come back byte for byte (empty Props
//     as nil), ExpiresAt truncated to the millisecond, in UTC.
type RetainedStore interface {
	LoadRetained(ctx context.Context) ([]Retained, error)
	// PutRetained inserts or replaces the message of r.Topic.
	PutRetained(ctx context.Context, r Retained) error
	// DeleteRetained removes the message of topic, if there is one.
	DeleteRetained(ctx context.Context, topic string) error
}
