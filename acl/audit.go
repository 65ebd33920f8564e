package acl

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// AuditEntry is one recorded admin write: who did what, when, with which
// result. It never holds a secret, a secret's hash or the admin key; the
// writers (the admin API, the importer) see to that, the store only keeps
// what it is given.
type AuditEntry struct {
	ID int64
	At time.Time // microsecond precision; zero: the store's clock at AppendAudit
	// Actor is the credential the write was made with: "admin_key",
	// "console:<session id>" or "import" (never the credential itself).
	Actor string
	// Source is the kind of client: "cli", "api", "peer" (another node
	// forwarding a call), "console", "import".
	Source string
	Client string // the client's User-Agent, sanitized; may be empty
	Remote string // the client's address; may be empty
	Node   string // the node that took the write; may be empty
	// Action is what was done, e.g. "token.create", "permission.delete",
	// "publish", "import.seed".
	Action  string
	TokenID int64  // the token concerned, 0 if none
	TagID   int64  // the tag concerned, 0 if none
	Target  string // what else the write concerned, e.g. "connection 7", "topic a/b"
	// Status is the result: the HTTP status of an API write; an import
	// records 200 when it completed, 500 when it failed.
	Status int
	// Enforcement is the outcome of applying the change to live sessions:
	// "" (the write needs none), "none" (no token concerned), "enforced",
	// "pending" (answered 202 before it ended), "unconfirmed" (cluster
	// nodes did not confirm in time), "failed".
	Enforcement string
	// Detail is a JSON object with the rest (changed fields, refreshed
	// token IDs, unconfirmed nodes, counts), or empty.
	Detail string
}

// AuditQuery selects entries for Store.ListAudit. Zero fields select
// everything; the filters combine with AND.
type AuditQuery struct {
	// BeforeID lists entries with an ID below it (the paging cursor);
	// 0 starts at the newest.
	BeforeID int64
	// Limit is the most entries returned: 1 to MaxAuditLimit.
	Limit   int
	Actor   string // exact
	Source  string // exact
	Action  string // exact, or a prefix when it ends with '.' ("token.")
	TokenID int64
	TagID   int64
	Since   time.Time // At >= Since
	Until   time.Time // At < Until
}

// Bounds of audit entries and queries, checked by ValidateAuditEntry and
// ValidateAuditQuery.
const (
	MaxAuditLimit       = 1000
	MaxAuditFieldBytes  = 512
	MaxAuditDetailBytes = 64 << 10
)

// ValidateAuditEntry accepts an entry with an action, short fields of
// valid UTF-8 without NUL, a status from 0 to 999 and a Detail that is
// empty or one JSON object.
func ValidateAuditEntry(e AuditEntry) error {
	if e.Action == "" {
		return fmt.Errorf("%w: audit entry without an action", ErrInvalid)
	}
	for _, f := range []struct{ name, v string }{
		{"actor", e.Actor}, {"source", e.Source}, {"client", e.Client}, {"remote", e.Remote},
		{"node", e.Node}, {"action", e.Action}, {"target", e.Target}, {"enforcement", e.Enforcement},
	} {
		if err := auditText(f.name, f.v, MaxAuditFieldBytes); err != nil {
			return err
		}
	}
	if err := auditText("detail", e.Detail, MaxAuditDetailBytes); err != nil {
		return err
	}
	if e.Detail != "" {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(e.Detail), &obj); err != nil || obj == nil {
			return fmt.Errorf("%w: audit detail is not a JSON object", ErrInvalid)
		}
	}
	if e.Status < 0 || e.Status > 999 {
		return fmt.Errorf("%w: audit status %d out of range", ErrInvalid, e.Status)
	}
	if e.TokenID < 0 || e.TagID < 0 {
		return fmt.Errorf("%w: negative token or tag id in an audit entry", ErrInvalid)
	}
	return nil
}

func auditText(name, v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("%w: audit %s is %d bytes, at most %d allowed", ErrInvalid, name, len(v), max)
	}
	if !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("%w: audit %s is not valid UTF-8 without NUL", ErrInvalid, name)
	}
	return nil
}

// ValidateAuditQuery accepts a query with a Limit from 1 to MaxAuditLimit,
// no negative IDs and filters of valid UTF-8.
func ValidateAuditQuery(q AuditQuery) error {
	if q.Limit < 1 || q.Limit > MaxAuditLimit {
		return fmt.Errorf("%w: audit limit %d, must be 1 to %d", ErrInvalid, q.Limit, MaxAuditLimit)
	}
	if q.BeforeID < 0 || q.TokenID < 0 || q.TagID < 0 {
		return fmt.Errorf("%w: negative id in an audit query", ErrInvalid)
	}
	for _, f := range []struct{ name, v string }{{"actor", q.Actor}, {"source", q.Source}, {"action", q.Action}} {
		if err := auditText(f.name, f.v, MaxAuditFieldBytes); err != nil {
			return err
		}
	}
	return nil
}

// ActionPrefix reports whether an AuditQuery.Action selects by prefix.
func ActionPrefix(action string) bool { return strings.HasSuffix(action, ".") }

// ValidateOrigin accepts a source of 1 to 64 bytes of letters, digits,
// '-', '_' and '.', and a positive ID.
func ValidateOrigin(o Origin) error {
	if o.Source == "" || len(o.Source) > 64 {
		return fmt.Errorf("%w: import source must be 1 to 64 bytes", ErrInvalid)
	}
	for i := 0; i < len(o.Source); i++ {
		c := o.Source[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: import source has a character other than letters, digits, '-', '_', '.'", ErrInvalid)
		}
	}
	if o.ID <= 0 {
		return fmt.Errorf("%w: import origin id %d, must be positive", ErrInvalid, o.ID)
	}
	return nil
}

// ValidateNewToken applies the checks of CreateToken, and ValidateOrigin
// to an Origin.
func ValidateNewToken(t NewToken) error {
	err := validateToken(t.Name, t.MaxConnections, t.Hash)
	if err == nil && t.Origin != nil {
		err = ValidateOrigin(*t.Origin)
	}
	return err
}

func validateToken(name string, maxConnections int, hash Hash) error {
	if err := ValidateTokenName(name); err != nil {
		return err
	}
	if err := ValidateMaxConnections(maxConnections); err != nil {
		return err
	}
	return ValidateHash(hash)
}
