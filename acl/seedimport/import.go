package seedimport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gatecast/gatecast/acl"
)

// OriginSource is the acl.Origin source of imported seed tokens.
const OriginSource = "seed"

// The outcome of one seed row.
const (
	// New: created (or, in a dry run, would be).
	New = "new"
	// Present: already in Gatecast, with the seed's values.
	Present = "present"
	// Differs: already in Gatecast with other values (a name, a limit, a
	// permission); Gatecast's are kept, the difference is in Notes.
	Differs = "differs"
	// Skipped: not imported; Reason says why.
	Skipped = "skipped"
)

// maxSecretBytes is the longest secret imported, as the admin API allows.
const maxSecretBytes = 512

// maxConnectionsCap is the admin API's highest max_connections.
const maxConnectionsCap = 1_000_000_000

// Options configure Run.
type Options struct {
	// DryRun reads both databases and reports what would change, writing
	// nothing (no audit entry either).
	DryRun bool
	// From names the seed database in the report and the audit log; give
	// it redacted (Redact).
	From string
	// Client names the program in the audit log, e.g. "gatecast import seed".
	Client string
	// Now is the clock of the audit entries; nil is time.Now.
	Now func() time.Time
}

// Report is what an import did, or in a dry run would do.
type Report struct {
	From        string         `json:"from"`
	DryRun      bool           `json:"dry_run"`
	Tokens      []TokenResult  `json:"tokens"`
	Tags        []TagResult    `json:"tags"`
	Permissions []PermResult   `json:"permissions"`
	Counts      map[string]int `json:"counts"` // "tokens_new", "tags_present", …
	// Changes is how many rows were (or would be) created.
	Changes int `json:"changes"`
	// WeakSecrets lists the seed tokens with a weak secret that are in
	// Gatecast after the import (new or present).
	WeakSecrets []TokenResult `json:"weak_secrets"`
	// Deferred lists the Gatecast tokens that existed before this run and
	// gained permissions: their live sessions get them when they reconnect
	// (or, in a cluster, at the next reconcile).
	Deferred []int64 `json:"deferred_token_ids,omitempty"`
	// AuditID is the summary entry in the audit log (0 when nothing was
	// written).
	AuditID int64 `json:"audit_id,omitempty"`
}

// TokenResult is the outcome of one seed token. It never holds the secret.
type TokenResult struct {
	SeedID     int64    `json:"seed_id"`
	Name       string   `json:"name"`
	TokenID    int64    `json:"token_id,omitempty"` // 0: not (yet) in Gatecast
	Outcome    string   `json:"outcome"`
	Reason     string   `json:"reason,omitempty"`
	WeakSecret bool     `json:"weak_secret"`
	SecretLen  int      `json:"secret_length,omitempty"` // set for weak secrets
	Notes      []string `json:"notes,omitempty"`
}

// TagResult is the outcome of one seed tag.
type TagResult struct {
	SeedID  int64  `json:"seed_id"`
	Pattern string `json:"pattern"`
	TagID   int64  `json:"tag_id,omitempty"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
}

// PermResult is the outcome of one seed permission.
type PermResult struct {
	SeedTokenID int64    `json:"seed_token_id"`
	SeedTagID   int64    `json:"seed_tag_id"`
	TokenID     int64    `json:"token_id,omitempty"`
	TagID       int64    `json:"tag_id,omitempty"`
	Pattern     string   `json:"pattern,omitempty"`
	Permission  string   `json:"permission"`
	Outcome     string   `json:"outcome"`
	Reason      string   `json:"reason,omitempty"`
	Notes       []string `json:"notes,omitempty"`
}

// Run imports seed into store (see the package comment for the rules). An
// error stops it where it is: what was created before stays (each row is
// its own write), the report says what that was, and a second run goes on
// from there.
func Run(ctx context.Context, store acl.Store, seed *Seed, opts Options) (*Report, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	im := &importer{ctx: ctx, store: store, opts: opts,
		rep:      &Report{From: opts.From, DryRun: opts.DryRun, Counts: map[string]int{}, Tokens: []TokenResult{}, Tags: []TagResult{}, Permissions: []PermResult{}, WeakSecrets: []TokenResult{}},
		tokenIDs: map[int64]int64{}, tagIDs: map[int64]int64{}, patterns: map[int64]string{},
		newToken: map[int64]bool{}, preexisting: map[int64]bool{}}
	err := im.run(seed)
	for _, t := range im.rep.Tokens {
		im.rep.Counts["tokens_"+t.Outcome]++
	}
	for _, t := range im.rep.Tags {
		im.rep.Counts["tags_"+t.Outcome]++
	}
	for _, p := range im.rep.Permissions {
		im.rep.Counts["permissions_"+p.Outcome]++
	}
	if !opts.DryRun && im.rep.Changes > 0 {
		if aerr := im.summary(err); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}
	return im.rep, err
}

type importer struct {
	ctx   context.Context
	store acl.Store
	opts  Options
	rep   *Report

	tokenIDs    map[int64]int64  // seed token ID → Gatecast token ID (0: new in a dry run)
	tagIDs      map[int64]int64  // seed tag ID → Gatecast tag ID (0: new in a dry run)
	patterns    map[int64]string // seed tag ID → pattern, for tags that are or will be in Gatecast
	newToken    map[int64]bool   // seed token ID → created by this run
	preexisting map[int64]bool   // Gatecast token ID → existed before this run
	auditErrs   []error
}

func (im *importer) run(seed *Seed) error {
	tokens, err := im.store.ListTokens(im.ctx)
	if err != nil {
		return fmt.Errorf("reading Gatecast's tokens: %w", err)
	}
	byHash := make(map[acl.Hash]acl.Token, len(tokens))
	byID := make(map[int64]acl.Token, len(tokens))
	for _, t := range tokens {
		byHash[t.Hash], byID[t.ID] = t, t
	}
	imported, err := im.store.ListImported(im.ctx, OriginSource)
	if err != nil {
		return fmt.Errorf("reading Gatecast's import records: %w", err)
	}
	origins := make(map[int64]int64, len(imported))
	for _, r := range imported {
		origins[r.ID] = r.TokenID
	}
	tags, err := im.store.ListTags(im.ctx)
	if err != nil {
		return fmt.Errorf("reading Gatecast's tags: %w", err)
	}
	byPattern := make(map[string]int64, len(tags))
	for _, t := range tags {
		byPattern[t.Pattern] = t.ID
	}

	for _, st := range seed.Tokens {
		if err := im.token(st, byHash, byID, origins); err != nil {
			return err
		}
	}
	for _, sg := range seed.Tags {
		if err := im.tag(sg, byPattern); err != nil {
			return err
		}
	}
	for _, sp := range seed.Permissions {
		if err := im.permission(sp); err != nil {
			return err
		}
	}
	return nil
}

// secretProblem says why a seed secret cannot be imported, or "".
func secretProblem(s Secret) string {
	switch {
	case s == "":
		return "its secret is empty"
	case len(s) > maxSecretBytes:
		return fmt.Sprintf("its secret is longer than %d bytes", maxSecretBytes)
	case !utf8.ValidString(string(s)):
		return "its secret is not valid UTF-8"
	}
	for _, r := range string(s) {
		// The seed reads "Authorization: Token <secret>" up to the next
		// space: a secret with a space never authenticated there.
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return "its secret holds a space or a control character, so no client can present it (the seed could not authenticate it either)"
		}
	}
	return ""
}

// cleanName fits a seed name (Django: up to 255 characters, NULL allowed)
// to Gatecast's rules: printable, no surrounding spaces, at most
// acl.MaxTokenNameLen bytes.
func cleanName(name string) (string, bool) {
	orig := name
	name = strings.ToValidUTF8(name, "\uFFFD")
	name = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if len(name) > acl.MaxTokenNameLen {
		cut := acl.MaxTokenNameLen
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut--
		}
		name = strings.TrimSpace(name[:cut])
	}
	return name, name != orig
}

func (im *importer) token(st Token, byHash map[acl.Hash]acl.Token, byID map[int64]acl.Token, origins map[int64]int64) error {
	name, renamed := cleanName(st.Name)
	res := TokenResult{SeedID: st.ID, Name: name}
	if problem := secretProblem(st.Secret); problem != "" {
		res.Outcome, res.Reason = Skipped, problem
		im.rep.Tokens = append(im.rep.Tokens, res)
		return nil
	}
	if acl.IsWeakSecret(string(st.Secret)) {
		res.WeakSecret, res.SecretLen = true, len(st.Secret)
	}
	limit := st.MaxConnections
	switch {
	case limit < 0:
		res.Notes = append(res.Notes, fmt.Sprintf("max_connections %d in the seed, imported as 0 (unlimited)", limit))
		limit = 0
	case limit > maxConnectionsCap:
		res.Notes = append(res.Notes, fmt.Sprintf("max_connections %d in the seed, imported as %d", limit, maxConnectionsCap))
		limit = maxConnectionsCap
	}
	if renamed {
		res.Notes = append(res.Notes, "name adjusted to Gatecast's rules (printable, no surrounding spaces, at most 200 bytes)")
	}
	hash := acl.HashSecret([]byte(st.Secret))

	existing, have := byHash[hash]
	if tokID, recorded := origins[st.ID]; recorded {
		tok, alive := byID[tokID]
		switch {
		case !alive:
			res.Outcome, res.TokenID = Skipped, tokID
			res.Reason = fmt.Sprintf("imported before as token %d, deleted in Gatecast since: not re-created", tokID)
			res.WeakSecret, res.SecretLen = false, 0
			im.rep.Tokens = append(im.rep.Tokens, res)
			return nil
		case !tok.Hash.Equal(hash):
			res.Outcome, res.TokenID = Skipped, tokID
			res.Reason = fmt.Sprintf("imported before as token %d, whose secret has changed since (rotated in Gatecast, or changed in the seed): not re-imported", tokID)
			res.WeakSecret, res.SecretLen = false, 0
			im.rep.Tokens = append(im.rep.Tokens, res)
			return nil
		}
		existing, have = tok, true
	}
	if have {
		res.TokenID = existing.ID
		res.Outcome = Present
		if existing.Name != name {
			res.Outcome = Differs
			res.Notes = append(res.Notes, fmt.Sprintf("name is %q in Gatecast (kept)", existing.Name))
		}
		if int64(existing.MaxConnections) != limit {
			res.Outcome = Differs
			res.Notes = append(res.Notes, fmt.Sprintf("max_connections is %d in Gatecast, %d in the seed (kept)", existing.MaxConnections, limit))
		}
		if res.WeakSecret && !existing.WeakSecret {
			res.Notes = append(res.Notes, "its secret is weak but the token is not flagged in Gatecast (it was created before the flag existed): rotate it")
		}
		res.WeakSecret = res.WeakSecret || existing.WeakSecret
		im.tokenIDs[st.ID] = existing.ID
		im.preexisting[existing.ID] = true
		im.rep.Tokens = append(im.rep.Tokens, res)
		if res.WeakSecret {
			im.rep.WeakSecrets = append(im.rep.WeakSecrets, res)
		}
		return nil
	}

	res.Outcome = New
	im.newToken[st.ID] = true
	if !im.opts.DryRun {
		tok, err := im.store.CreateTokenWith(im.ctx, acl.NewToken{Name: name, MaxConnections: int(limit), Hash: hash,
			WeakSecret: res.WeakSecret, Origin: &acl.Origin{Source: OriginSource, ID: st.ID}})
		if errors.Is(err, acl.ErrConflict) {
			// Another import (or an admin) created it meanwhile.
			return fmt.Errorf("seed token %d was created in Gatecast by someone else while this import ran; run the import again", st.ID)
		}
		if err != nil {
			return fmt.Errorf("creating seed token %d: %w", st.ID, err)
		}
		res.TokenID = tok.ID
		im.rep.Changes++
		im.audit(acl.AuditEntry{Action: "token.create", TokenID: tok.ID, Target: fmt.Sprintf("token %d", tok.ID), Status: 201},
			map[string]any{"seed_id": st.ID, "imported_secret": true, "weak_secret": res.WeakSecret, "max_connections": limit})
	} else {
		im.rep.Changes++
	}
	im.tokenIDs[st.ID] = res.TokenID
	im.rep.Tokens = append(im.rep.Tokens, res)
	if res.WeakSecret {
		im.rep.WeakSecrets = append(im.rep.WeakSecrets, res)
	}
	return nil
}

func (im *importer) tag(sg Tag, byPattern map[string]int64) error {
	res := TagResult{SeedID: sg.ID, Pattern: sg.Prefix}
	if err := acl.ValidatePattern(sg.Prefix); err != nil {
		res.Outcome = Skipped
		res.Reason = "not a valid topic pattern in Gatecast (MQTT filter rules)"
		if _, after, ok := strings.Cut(err.Error(), acl.ErrInvalid.Error()+": "); ok {
			res.Reason += ": " + after
		}
		im.rep.Tags = append(im.rep.Tags, res)
		return nil
	}
	im.patterns[sg.ID] = sg.Prefix
	if id, ok := byPattern[sg.Prefix]; ok {
		res.TagID, res.Outcome = id, Present
		im.tagIDs[sg.ID] = id
		im.rep.Tags = append(im.rep.Tags, res)
		return nil
	}
	res.Outcome = New
	if !im.opts.DryRun {
		tag, err := im.store.CreateTag(im.ctx, sg.Prefix)
		if errors.Is(err, acl.ErrConflict) {
			return fmt.Errorf("seed tag %d (%q) was created in Gatecast by someone else while this import ran; run the import again", sg.ID, sg.Prefix)
		}
		if err != nil {
			return fmt.Errorf("creating seed tag %d: %w", sg.ID, err)
		}
		res.TagID = tag.ID
		byPattern[sg.Prefix] = tag.ID
		im.audit(acl.AuditEntry{Action: "tag.create", TagID: tag.ID, Target: fmt.Sprintf("tag %d", tag.ID), Status: 201},
			map[string]any{"seed_id": sg.ID, "pattern": sg.Prefix})
	}
	im.rep.Changes++
	im.tagIDs[sg.ID] = res.TagID
	im.rep.Tags = append(im.rep.Tags, res)
	return nil
}

func (im *importer) permission(sp Permission) error {
	res := PermResult{SeedTokenID: sp.TokenID, SeedTagID: sp.TagID, Permission: sp.Permission}
	tokID, tokOK := im.tokenIDs[sp.TokenID]
	tagID, tagOK := im.tagIDs[sp.TagID]
	res.TokenID, res.TagID, res.Pattern = tokID, tagID, im.patterns[sp.TagID]
	perm, err := acl.ParsePermission(sp.Permission)
	switch {
	case err != nil:
		res.Outcome, res.Reason = Skipped, fmt.Sprintf("permission %q is neither read nor readwrite", sp.Permission)
	case !tokOK:
		res.Outcome, res.Reason = Skipped, "its token is not imported (see the tokens)"
	case !tagOK:
		res.Outcome, res.Reason = Skipped, "its tag is not imported (see the tags)"
	}
	if res.Outcome != "" {
		im.rep.Permissions = append(im.rep.Permissions, res)
		return nil
	}
	if tokID != 0 && tagID != 0 && !im.newToken[sp.TokenID] {
		g, err := im.store.GetGrant(im.ctx, tokID, tagID)
		switch {
		case err == nil && g.Permission == perm:
			res.Outcome = Present
		case err == nil:
			res.Outcome = Differs
			res.Notes = append(res.Notes, fmt.Sprintf("%s in Gatecast, %s in the seed (kept)", g.Permission, perm))
		case !errors.Is(err, acl.ErrNotFound):
			return fmt.Errorf("reading the permission of token %d on tag %d: %w", tokID, tagID, err)
		}
		if res.Outcome != "" {
			im.rep.Permissions = append(im.rep.Permissions, res)
			return nil
		}
	}
	res.Outcome = New
	deferred := im.preexisting[tokID]
	if deferred {
		res.Notes = append(res.Notes, "the token existed before this import: its live sessions get this permission when they reconnect")
		if len(im.rep.Deferred) == 0 || im.rep.Deferred[len(im.rep.Deferred)-1] != tokID {
			im.rep.Deferred = append(im.rep.Deferred, tokID)
		}
	}
	if !im.opts.DryRun {
		if err := im.store.SetPermission(im.ctx, tokID, tagID, perm); err != nil {
			return fmt.Errorf("granting seed permission (token %d, tag %d): %w", sp.TokenID, sp.TagID, err)
		}
		enf := ""
		if deferred {
			enf = "deferred"
		}
		im.audit(acl.AuditEntry{Action: "permission.set", TokenID: tokID, TagID: tagID, Status: 200, Enforcement: enf,
			Target: fmt.Sprintf("token %d, tag %d", tokID, tagID)},
			map[string]any{"permission": perm.String(), "seed_token_id": sp.TokenID, "seed_tag_id": sp.TagID})
	}
	im.rep.Changes++
	im.rep.Permissions = append(im.rep.Permissions, res)
	return nil
}

// audit records one write of the import. A failure to record it does not
// undo the write; it is reported by the summary.
func (im *importer) audit(e acl.AuditEntry, detail map[string]any) {
	e.At = im.opts.Now()
	e.Actor, e.Source, e.Client = "import", "import", im.opts.Client
	if b, err := json.Marshal(detail); err == nil {
		e.Detail = string(b)
	}
	if _, err := im.store.AppendAudit(context.WithoutCancel(im.ctx), e); err != nil {
		im.auditErrs = append(im.auditErrs, err)
	}
}

// summary records the import.seed entry: what the run created, the weak
// secrets, and how it ended.
func (im *importer) summary(runErr error) error {
	weak := make([]int64, 0, len(im.rep.WeakSecrets))
	for _, w := range im.rep.WeakSecrets {
		if w.TokenID != 0 {
			weak = append(weak, w.TokenID)
		}
	}
	detail := map[string]any{"from": im.opts.From, "counts": im.rep.Counts, "changes": im.rep.Changes, "weak_secret_token_ids": weak}
	status := 200
	if runErr != nil {
		status = 500
		detail["error"] = "the import stopped before its end; see its output"
	}
	enf := ""
	if len(im.rep.Deferred) > 0 {
		enf = "deferred"
		detail["deferred_token_ids"] = im.rep.Deferred
	}
	b, _ := json.Marshal(detail)
	e, err := im.store.AppendAudit(context.WithoutCancel(im.ctx), acl.AuditEntry{At: im.opts.Now(), Actor: "import", Source: "import",
		Client: im.opts.Client, Action: "import.seed", Target: truncate(im.opts.From, acl.MaxAuditFieldBytes), Status: status,
		Enforcement: enf, Detail: string(b)})
	if err == nil {
		im.rep.AuditID = e.ID
	}
	if err = errors.Join(append(im.auditErrs, err)...); err != nil {
		return fmt.Errorf("the import is done but its audit log entries were not all stored: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
