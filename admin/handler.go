package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/broker"
)

// Enforcer applies rights changes to live sessions (implemented by the broker).
type Enforcer interface {
	// RefreshTokens re-reads the given tokens from the store and enforces the result on their live
	// sessions before returning (deleted/disabled/rotated → close 4002, subscriptions no longer covered →
	// 4003, downgrade → next publish refused, lowered limit → newest closed 4004).
	RefreshTokens(ctx context.Context, ids ...int64) error
	Connections(tokenID int64) []broker.ConnectionInfo // tokenID 0 = all
	Kick(id uint64) bool                               // close with 4005; false if unknown
}

// GrantEnforcer is an Enforcer that can apply a change of one grant (a
// token's permission on one tag) without re-reading all of the token's
// grants: O(log grants) instead of O(grants) (broker.Broker.RefreshGrant).
// The admin API uses it for permission and tag writes when the Enforcer has
// it; otherwise those refresh the whole token.
type GrantEnforcer interface {
	RefreshGrant(ctx context.Context, tokenID, tagID int64) error
}

// SecretRetirer is an Enforcer that must be told which secret a token
// stopped accepting when it is rotated or deleted, after the store write and
// before RefreshTokens: a cluster keeps token rights in Redis under the
// secret's hash, and retires that entry so that no node admits the old
// secret from it (server's clusterEnforcer). prev is the token as it was
// read, under the write lock, before the write.
type SecretRetirer interface {
	RetireSecret(ctx context.Context, prev acl.Token, reason acl.GoneReason) error
}

// Projector is an Enforcer that publishes a token's rights where the nodes
// of a cluster read them (the projection in Redis) — for a new token, which
// no session holds yet, so there is nothing to enforce or wait for.
type Projector interface {
	ProjectTokens(ctx context.Context, ids ...int64) error
}

// PendingError is what an Enforcer returns when a change is enforced on
// this node but some cluster nodes did not confirm it within the wait; the
// API answers 202 with those nodes.
type PendingError struct{ Nodes []string }

func (e *PendingError) Error() string {
	return "not confirmed by nodes " + strings.Join(e.Nodes, ", ")
}

// Config is what the admin handler serves.
type Config struct {
	Store    acl.Store // required
	Enforcer Enforcer  // required: every rights change goes through it
	// Key is the admin key every /api request must present as
	// "Authorization: Bearer <key>". Empty refuses every /api request.
	Key     string
	Metrics http.Handler // GET /metrics; nil answers 404
	Health  func() error // GET /healthz; nil means always healthy
	// Nodes lists the cluster's live nodes for GET /api/v1/nodes (any
	// JSON-encodable value); nil answers with this node alone.
	Nodes  func(ctx context.Context) (any, error)
	NodeID string // this node's ID, for GET /api/v1/nodes without Nodes
	// Peers, when set (cluster mode), lists the other nodes: GET and DELETE
	// /api/v1/connections then cover the whole cluster, calling the peers'
	// admin listeners with Key (every node must share the admin key).
	Peers func(ctx context.Context) ([]Peer, error)
	// WriteLock, when set (cluster mode), takes a lock shared by every node
	// around each rights change, so that admin writes made through
	// different nodes are serialized as writes through one node are. It
	// returns the function that releases it.
	WriteLock func(ctx context.Context) (release func(), err error)
	// EnforceDeadline bounds how long a rights change waits for its
	// enforcement on live sessions (Enforcer.RefreshTokens) before it
	// answers. Past it the answer is 202 {"status":"pending",…}: the change
	// is saved and its enforcement keeps running in the background, still
	// holding the write lock, so the next rights change waits for it (and is
	// refused with 503, nothing written, if it waits too long). Zero means
	// DefaultEnforceDeadline. In cluster mode, where RefreshTokens includes
	// the revocation barrier's wait, set it above that wait so that a
	// barrier timeout is answered with its unconfirmed nodes.
	EnforceDeadline time.Duration
	Logger          *slog.Logger // audit trail and server faults; nil discards
	// Publisher serves POST /api/v1/publish; nil answers 404.
	Publisher Publisher
	// MaxPublishBytes bounds a published payload; 0 is
	// DefaultMaxPublishBytes.
	MaxPublishBytes int
}

// DefaultEnforceDeadline is Config.EnforceDeadline's default: well under
// the admin listener's write timeout and ClientTimeout.
const DefaultEnforceDeadline = 2 * time.Second

// handler serves the admin API. It is safe for concurrent use by the
// http.Server's goroutines; writes that change rights are serialized by
// writeMu (see below).
type handler struct {
	store   acl.Store
	enf     Enforcer
	keySum  [sha256.Size]byte
	keySet  bool
	metrics http.Handler
	health  func() error
	nodes   func(ctx context.Context) (any, error)
	nodeID  string
	peers   func(ctx context.Context) ([]Peer, error)
	peerKey string
	log     *slog.Logger
	mux     *http.ServeMux

	publisher  Publisher
	maxPublish int

	writeLock       func(ctx context.Context) (func(), error)
	enforceDeadline time.Duration
	lockWait        atomic.Int64 // time.Duration: writeLockWait; shorter in tests

	// writeMu (a one-slot semaphore, so that waiting for it is bounded)
	// serializes "read affected tokens, write, enforce" sequences (and
	// writeLock extends that to every node of a cluster). Without it,
	// deleting a tag while another request grants a token on that tag
	// could miss that token: its grant would be written after the affected
	// set was read and removed before its own refresh ran. It is held until
	// the enforcement ends, even when that is after the answer (202
	// pending). Admin writes are rare; this lock is never on a message path.
	writeMu chan struct{}

	// Client-triggerable log lines (refused keys, refused hosts, failed
	// health checks) are rate-limited.
	logLimit *logLimiter

	console *consoleSessions // the web console's sessions (console.go)
}

// NewHandler returns the admin listener's handler: the /api/v1 routes
// (admin key required), GET /healthz and GET /metrics (no key: they are
// for probes and scrapers). It panics if Store or Enforcer is nil, a wiring
// mistake that would otherwise silently skip live revocation.
func NewHandler(cfg Config) http.Handler {
	if cfg.Store == nil || cfg.Enforcer == nil {
		panic("admin.NewHandler: Config.Store and Config.Enforcer are required")
	}
	h := &handler{
		store:           cfg.Store,
		enf:             cfg.Enforcer,
		metrics:         cfg.Metrics,
		health:          cfg.Health,
		nodes:           cfg.Nodes,
		nodeID:          cfg.NodeID,
		peers:           cfg.Peers,
		writeLock:       cfg.WriteLock,
		enforceDeadline: cfg.EnforceDeadline,
		peerKey:         cfg.Key,
		log:             cfg.Logger,
		mux:             http.NewServeMux(),
		writeMu:         make(chan struct{}, 1),
		logLimit:        newLogLimiter(logEvery),
		publisher:       cfg.Publisher,
		maxPublish:      cfg.MaxPublishBytes,
	}
	if h.maxPublish <= 0 {
		h.maxPublish = DefaultMaxPublishBytes
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.enforceDeadline <= 0 {
		h.enforceDeadline = DefaultEnforceDeadline
	}
	h.lockWait.Store(int64(writeLockWait))
	if cfg.Key != "" {
		h.keySum, h.keySet = sha256.Sum256([]byte(cfg.Key)), true
	}
	m := h.mux
	m.HandleFunc("POST /api/v1/tokens", h.createToken)
	m.HandleFunc("GET /api/v1/tokens", h.listTokens)
	m.HandleFunc("GET /api/v1/tokens/{id}", h.getToken)
	m.HandleFunc("PATCH /api/v1/tokens/{id}", h.updateToken)
	m.HandleFunc("DELETE /api/v1/tokens/{id}", h.deleteToken)
	m.HandleFunc("POST /api/v1/tokens/{id}/rotate", h.rotateToken)
	m.HandleFunc("GET /api/v1/tokens/{id}/permissions", h.listPermissions)
	m.HandleFunc("PUT /api/v1/tokens/{id}/permissions/{tag_id}", h.setPermission)
	m.HandleFunc("DELETE /api/v1/tokens/{id}/permissions/{tag_id}", h.deletePermission)
	m.HandleFunc("POST /api/v1/tags", h.createTag)
	m.HandleFunc("GET /api/v1/tags", h.listTags)
	m.HandleFunc("GET /api/v1/tags/{id}", h.getTag)
	m.HandleFunc("PATCH /api/v1/tags/{id}", h.updateTag)
	m.HandleFunc("DELETE /api/v1/tags/{id}", h.deleteTag)
	m.HandleFunc("GET /api/v1/connections", h.listConnections)
	m.HandleFunc("DELETE /api/v1/connections/{id}", h.kickConnection)
	m.HandleFunc("GET /api/v1/nodes", h.listNodes)
	m.HandleFunc("GET /api/v1/audit", h.listAudit)
	m.HandleFunc("POST /api/v1/publish", h.publish)
	m.HandleFunc("GET /healthz", h.healthz)
	m.HandleFunc("GET /metrics", h.serveMetrics)
	h.routeConsole(m) // the web console: GET /, /console/… (console.go)
	return h
}

// ServeHTTP checks the key for /api, answers unknown routes and methods
// with JSON errors (ServeMux would answer in plain text), and records an
// audit line for every write.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	clean := path.Clean("/" + r.URL.Path)
	api := clean == "/api" || strings.HasPrefix(clean, "/api/")
	if api { // a console session stands in for the key; a write without its CSRF token is answered 403
		var answered bool
		if r, answered = h.consoleGate(w, r); answered {
			return
		}
	}
	if api && !h.authorized(r) {
		if ok, suppressed := h.logLimit.allow("auth"); ok {
			h.log.Warn("admin request refused: missing or wrong admin key",
				"method", r.Method, "path", logSafe(clean), "remote", r.RemoteAddr, "suppressed_since_last", suppressed)
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="gatecast admin"`)
		writeError(w, &apiError{401, codeUnauthorized, "missing or wrong admin key (send Authorization: Bearer <key>)"})
		return
	}
	_, route := h.mux.Handler(r)
	if route == "" {
		h.noRoute(w, r)
		return
	}
	if !api {
		h.mux.ServeHTTP(w, r)
		return
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		// Reads answer within readTimeout too: a store that hangs is a
		// 503, not a connection dropped at the listener's write timeout.
		ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
		defer cancel()
		h.mux.ServeHTTP(w, r.WithContext(ctx))
		return
	}
	aw := &auditWriter{ResponseWriter: w, entryID: make(chan int64, 1)}
	rr := r.WithContext(context.WithValue(r.Context(), auditKey{}, aw))
	h.mux.ServeHTTP(aw, rr)
	attrs := append([]any{"method", r.Method, "route", route, "status", aw.status, "remote", r.RemoteAddr}, aw.attrs...)
	if aw.status >= 500 {
		h.log.Error("admin write failed", attrs...)
	} else {
		h.log.Info("admin write", attrs...)
	}
	// Before the answer is flushed (when ServeHTTP returns): a caller that
	// reads the audit log after its write finds the write there.
	h.record(rr, route, aw)
}

// noRoute answers 404 or 405 in the API's error shape, keeping the Allow
// header ServeMux computes.
func (h *handler) noRoute(w http.ResponseWriter, r *http.Request) {
	probe := &headerOnly{header: http.Header{}}
	fallback, _ := h.mux.Handler(r)
	fallback.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", probe.header.Get("Allow"))
		writeError(w, &apiError{405, codeMethodNotAllowed, fmt.Sprintf("method %s is not allowed here (allowed: %s)", r.Method, probe.header.Get("Allow"))})
		return
	}
	writeError(w, &apiError{404, codeNotFound, "no such route"})
}

// authorized compares the bearer key in constant time. Both sides are
// hashed first so the comparison does not reveal the key's length either.
func (h *handler) authorized(r *http.Request) bool {
	if consoleAuthorized(r) { // consoleGate checked the session (and the CSRF token of a write)
		return true
	}
	if !h.keySet {
		return false
	}
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(key)))
	return subtle.ConstantTimeCompare(sum[:], h.keySum[:]) == 1
}

// ---- tokens ----

func (h *handler) createToken(w http.ResponseWriter, r *http.Request) {
	body, e := readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	req, e := decodeCreateToken(body)
	if e != nil {
		writeError(w, e)
		return
	}
	secret := req.Secret
	imported := secret != ""
	if !imported {
		s, err := acl.NewSecret()
		if err != nil {
			h.fault(w, r, "generating a token secret", err)
			return
		}
		secret = s
	}
	weak := imported && acl.IsWeakSecret(secret)
	tok, err := h.store.CreateTokenWith(r.Context(), acl.NewToken{Name: req.Name, MaxConnections: req.MaxConnections,
		Hash: acl.HashSecret([]byte(secret)), WeakSecret: weak})
	if err != nil {
		h.storeError(w, r, err, "token", "a token with this secret already exists")
		return
	}
	audit(r, "token_id", tok.ID, "imported_secret", imported, "weak_secret", weak)
	if p, ok := h.enf.(Projector); ok {
		// No live session can hold a new token, so there is nothing to
		// enforce; a failure only costs its first connect a store read.
		if err := p.ProjectTokens(r.Context(), tok.ID); err != nil {
			h.log.Warn("publishing a new token's rights to the cluster failed; its first connect reads the store", "token_id", tok.ID, "err", err)
		}
	}
	out := tokenJSON(tok)
	out.Secret = secret
	writeJSON(w, http.StatusCreated, out)
}

func (h *handler) listTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := h.store.ListTokens(r.Context())
	if err != nil {
		h.storeError(w, r, err, "", "")
		return
	}
	out := make([]Token, len(toks))
	for i, t := range toks {
		out[i] = tokenJSON(t)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) getToken(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	tok, err := h.store.GetToken(r.Context(), id)
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("token %d", id), "")
		return
	}
	writeJSON(w, http.StatusOK, tokenJSON(tok))
}

func (h *handler) updateToken(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	body, e := readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	u, e := decodeUpdateToken(body)
	if e != nil {
		writeError(w, e)
		return
	}
	audit(r, "token_id", id, "fields", updatedFields(u))
	ws, ok := h.lockWrite(w, r)
	if !ok {
		return
	}
	defer ws.unlock()
	ctx := ws.ctx
	tok, err := h.store.UpdateToken(ctx, id, u)
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("token %d", id), "")
		return
	}
	out := tokenJSON(tok)
	if !h.enforce(ws, w, r, out, id) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func updatedFields(u acl.TokenUpdate) string {
	var f []string
	if u.Name != nil {
		f = append(f, "name")
	}
	if u.MaxConnections != nil {
		f = append(f, "max_connections")
	}
	if u.Disabled != nil {
		f = append(f, "disabled")
	}
	return strings.Join(f, ",")
}

func (h *handler) deleteToken(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	audit(r, "token_id", id)
	ws, ok := h.lockWrite(w, r)
	if !ok {
		return
	}
	defer ws.unlock()
	ctx := ws.ctx
	prev, prevErr := h.store.GetToken(ctx, id)
	err := h.store.DeleteToken(ctx, id)
	if err != nil && !errors.Is(err, acl.ErrNotFound) {
		h.storeError(w, r, err, "", "")
		return
	}
	// Enforce even when the token is already gone: a retry after an
	// enforcement failure must still close the sessions of the deleted token.
	if !h.enforceRetiring(ws, w, r, nil, id, prev, prevErr == nil, acl.GoneDeleted) {
		return
	}
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("token %d", id), "")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) rotateToken(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	audit(r, "token_id", id)
	secret, err := acl.NewSecret()
	if err != nil {
		h.fault(w, r, "generating a token secret", err)
		return
	}
	ws, ok := h.lockWrite(w, r)
	if !ok {
		return
	}
	defer ws.unlock()
	ctx := ws.ctx
	prev, prevErr := h.store.GetToken(ctx, id)
	tok, err := h.store.SetTokenHash(ctx, id, acl.HashSecret([]byte(secret)))
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("token %d", id), "")
		return
	}
	// The new secret is in the answer whatever the enforcement does: it is
	// saved, and shown nowhere else.
	out := tokenJSON(tok)
	out.Secret = secret
	if !h.enforceRetiring(ws, w, r, out, id, prev, prevErr == nil, acl.GoneRotated) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// ---- permissions ----

func (h *handler) listPermissions(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	if _, err := h.store.GetToken(r.Context(), id); err != nil {
		h.storeError(w, r, err, fmt.Sprintf("token %d", id), "")
		return
	}
	grants, err := h.store.ListGrants(r.Context(), id)
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("token %d", id), "")
		return
	}
	out := make([]Grant, len(grants))
	for i, g := range grants {
		out[i] = grantJSON(g)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) setPermission(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	tagID, ok := pathID(w, r, "tag_id")
	if !ok {
		return
	}
	body, e := readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	p, e := decodePermission(body)
	if e != nil {
		writeError(w, e)
		return
	}
	audit(r, "token_id", id, "tag_id", tagID, "permission", p.String())
	ws, ok := h.lockWrite(w, r)
	if !ok {
		return
	}
	defer ws.unlock()
	ctx := ws.ctx
	if _, err := h.store.GetToken(ctx, id); err != nil {
		h.storeError(w, r, err, fmt.Sprintf("token %d", id), "")
		return
	}
	tag, err := h.store.GetTag(ctx, tagID)
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("tag %d", tagID), "")
		return
	}
	if err := h.store.SetPermission(ctx, id, tagID, p); err != nil {
		h.storeError(w, r, err, fmt.Sprintf("token %d or tag %d", id, tagID), "")
		return
	}
	out := Grant{TagID: tag.ID, Pattern: tag.Pattern, Permission: p.String()}
	if !h.enforceGrant(ws, w, r, out, tagID, id) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) deletePermission(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	tagID, ok := pathID(w, r, "tag_id")
	if !ok {
		return
	}
	audit(r, "token_id", id, "tag_id", tagID)
	ws, ok := h.lockWrite(w, r)
	if !ok {
		return
	}
	defer ws.unlock()
	ctx := ws.ctx
	err := h.store.DeletePermission(ctx, id, tagID)
	if err != nil && !errors.Is(err, acl.ErrNotFound) {
		h.storeError(w, r, err, "", "")
		return
	}
	// As for token deletion: a retry still enforces.
	if !h.enforceGrant(ws, w, r, nil, tagID, id) {
		return
	}
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("permission of token %d on tag %d", id, tagID), "")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ---- tags ----

func (h *handler) createTag(w http.ResponseWriter, r *http.Request) {
	body, e := readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	pattern, e := decodeTag(body)
	if e != nil {
		writeError(w, e)
		return
	}
	tag, err := h.store.CreateTag(r.Context(), pattern)
	if err != nil {
		h.storeError(w, r, err, "tag", "a tag with this pattern already exists")
		return
	}
	audit(r, "tag_id", tag.ID, "pattern", tag.Pattern)
	writeJSON(w, http.StatusCreated, Tag{ID: tag.ID, Pattern: tag.Pattern})
}

func (h *handler) listTags(w http.ResponseWriter, r *http.Request) {
	tags, err := h.store.ListTags(r.Context())
	if err != nil {
		h.storeError(w, r, err, "", "")
		return
	}
	out := make([]Tag, len(tags))
	for i, t := range tags {
		out[i] = Tag{ID: t.ID, Pattern: t.Pattern}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) getTag(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	tag, err := h.store.GetTag(r.Context(), id)
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("tag %d", id), "")
		return
	}
	writeJSON(w, http.StatusOK, Tag{ID: tag.ID, Pattern: tag.Pattern})
}

func (h *handler) updateTag(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	body, e := readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	pattern, e := decodeTag(body)
	if e != nil {
		writeError(w, e)
		return
	}
	audit(r, "tag_id", id, "pattern", pattern)
	ws, ok := h.lockWrite(w, r)
	if !ok {
		return
	}
	defer ws.unlock()
	ctx := ws.ctx
	affected, err := h.store.TokensWithTag(ctx, id)
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("tag %d", id), "")
		return
	}
	tag, err := h.store.UpdateTag(ctx, id, pattern)
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("tag %d", id), "a tag with this pattern already exists")
		return
	}
	out := Tag{ID: tag.ID, Pattern: tag.Pattern}
	if !h.enforceGrant(ws, w, r, out, id, affected...) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) deleteTag(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	audit(r, "tag_id", id)
	ws, ok := h.lockWrite(w, r)
	if !ok {
		return
	}
	defer ws.unlock()
	ctx := ws.ctx
	// The tokens holding the tag must be read before the delete removes
	// their permissions along with it.
	affected, err := h.store.TokensWithTag(ctx, id)
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("tag %d", id), "")
		return
	}
	if err := h.store.DeleteTag(ctx, id); err != nil {
		h.storeError(w, r, err, fmt.Sprintf("tag %d", id), "")
		return
	}
	if !h.enforceGrant(ws, w, r, nil, id, affected...) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ---- connections ----

func (h *handler) listNodes(w http.ResponseWriter, r *http.Request) {
	if h.nodes == nil {
		writeJSON(w, http.StatusOK, []map[string]any{{"id": h.nodeID, "connections": len(h.enf.Connections(0))}})
		return
	}
	nodes, err := h.nodes(r.Context())
	if err != nil {
		h.log.Error("listing cluster nodes failed", "err", err)
		writeError(w, &apiError{http.StatusServiceUnavailable, codeUnavailable, "the cluster registry is unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, nodes)
}

func (h *handler) kickConnection(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("id")
	id, err := strconv.ParseUint(raw, 10, 64)
	if err != nil || id == 0 {
		writeError(w, invalid("connection id must be a positive integer"))
		return
	}
	audit(r, "connection_id", id)
	node := r.URL.Query().Get("node")
	// Single node, a peer's forwarded call, or this node named: local only.
	// Cluster mode without ?node=: the one node holding that ID (IDs are
	// per node; two holders answer 409 rather than guess).
	if h.peers == nil || scopeLocal(r) || node == h.nodeID {
		if !h.enf.Kick(id) {
			writeError(w, &apiError{404, codeNotFound, fmt.Sprintf("connection %d not found", id)})
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	// Cluster mode, not here: find the node holding it (IDs are per node).
	var target *Peer
	peers, err := h.peers(r.Context())
	if err != nil {
		writeError(w, &apiError{http.StatusServiceUnavailable, codeUnavailable, "the cluster registry is unavailable"})
		return
	}
	if node != "" {
		for i := range peers {
			if peers[i].ID == node {
				target = &peers[i]
			}
		}
	} else {
		holders := h.holders(r.Context(), peers, id)
		if len(holders) > 1 {
			writeError(w, &apiError{409, codeConflict, fmt.Sprintf("connection %d exists on nodes %s; add ?node=", id, strings.Join(holders, ", "))})
			return
		}
		if len(holders) == 1 && holders[0] == h.nodeID {
			if !h.enf.Kick(id) {
				writeError(w, &apiError{404, codeNotFound, fmt.Sprintf("connection %d not found", id)})
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		for i := range peers {
			if len(holders) == 1 && peers[i].ID == holders[0] {
				target = &peers[i]
			}
		}
	}
	if target == nil {
		writeError(w, &apiError{404, codeNotFound, fmt.Sprintf("connection %d not found", id)})
		return
	}
	err = h.peerCall(r.Context(), *target, http.MethodDelete, "/api/v1/connections/"+raw+"?scope=local", nil)
	var st *peerStatus
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.As(err, &st) && st.code == 404:
		writeError(w, &apiError{404, codeNotFound, fmt.Sprintf("connection %d not found", id)})
	default:
		h.log.Warn("kicking a connection on a peer failed", "node", target.ID, "err", err)
		writeError(w, &apiError{http.StatusServiceUnavailable, codeUnavailable, "the node holding the connection did not answer"})
	}
}

// ---- probes ----

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	if h.health != nil {
		if err := h.health(); err != nil {
			// Unauthenticated endpoint: the cause goes to the log only,
			// at a rate probes cannot raise.
			if ok, suppressed := h.logLimit.allow("health"); ok {
				h.log.Warn("health check failed", "err", err, "suppressed_since_last", suppressed)
			}
			writeError(w, &apiError{503, codeUnavailable, "unhealthy; see the broker's log"})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *handler) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if h.metrics == nil {
		writeError(w, &apiError{404, codeNotFound, "metrics are not enabled"})
		return
	}
	h.metrics.ServeHTTP(w, r)
}

// ---- helpers ----

// Time bounds of a rights change. Its answer comes within
// writeLockWait + storeTimeout + the enforcement deadline (about a minute
// with the defaults), under the admin listener's 2-minute write timeout
// and ClientTimeout, so a caller never sees a dropped connection.
const (
	// writeLockWait bounds the wait for the write lock: this node's, then
	// (cluster mode) the cluster-wide one, together.
	writeLockWait = 30 * time.Second
	// storeTimeout bounds the store reads and writes of a change.
	storeTimeout = 30 * time.Second
	// readTimeout bounds an API read (store reads, peers' listings).
	readTimeout = 30 * time.Second
	// enforceTimeout bounds the enforcement of a change on live sessions
	// (its store reads, in practice), which may go on after the answer.
	enforceTimeout = 2 * time.Minute
)

// writeScope is one rights change holding the write lock.
type writeScope struct {
	// ctx is for the change's store work: detached from the request's
	// cancellation (once the store write has started, a caller that hangs
	// up must not interrupt the change halfway), bounded by storeTimeout.
	ctx    context.Context
	cancel context.CancelFunc
	// base is the request's context without its cancellation, for the
	// enforcement.
	base context.Context
	// release gives up the locks. unlock calls it when the handler ends,
	// unless enforce handed it over to a background enforcement.
	release   func()
	handedOff bool
}

func (s *writeScope) unlock() {
	s.cancel()
	if !s.handedOff {
		s.release()
	}
}

// lockWrite takes writeMu, then (cluster mode) the cluster-wide write lock,
// for a rights change, within writeLockWait. When a lock cannot be taken
// it answers 503 and returns ok false: nothing was written.
func (h *handler) lockWrite(w http.ResponseWriter, r *http.Request) (ws *writeScope, ok bool) {
	wait := time.Duration(h.lockWait.Load())
	deadline := time.Now().Add(wait)
	if !h.acquireWriteMu(r.Context(), wait) {
		if r.Context().Err() != nil {
			writeError(w, &apiError{503, codeUnavailable, "request canceled"})
			return nil, false
		}
		h.log.Warn("admin write refused: the previous rights change is still being enforced", "route", r.Pattern, "waited", wait)
		writeError(w, &apiError{http.StatusServiceUnavailable, codeUnavailable,
			"a previous rights change is still being enforced on live sessions; nothing was changed, retry"})
		return nil, false
	}
	base := context.WithoutCancel(r.Context())
	release := func() {}
	if h.writeLock != nil {
		lctx, lcancel := context.WithDeadline(base, deadline)
		rel, err := h.writeLock(lctx)
		lcancel()
		if err != nil {
			<-h.writeMu
			h.log.Warn("cluster write lock unavailable; admin write refused", "route", r.Pattern, "err", err)
			writeError(w, &apiError{http.StatusServiceUnavailable, codeUnavailable,
				"the cluster write lock is unavailable (store unreachable or another node holds it too long); nothing was changed, retry"})
			return nil, false
		}
		release = rel
	}
	ctx, cancel := context.WithTimeout(base, storeTimeout)
	return &writeScope{ctx: ctx, cancel: cancel, base: base, release: func() {
		release()
		<-h.writeMu
	}}, true
}

// acquireWriteMu takes writeMu, waiting at most wait, and gives up early
// if the caller hangs up while waiting (nothing is written then).
func (h *handler) acquireWriteMu(ctx context.Context, wait time.Duration) bool {
	select {
	case h.writeMu <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case h.writeMu <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// pendingBody is the body of a 202 answer to a rights change: the change is
// saved, but its enforcement on live sessions was not confirmed complete
// when the answer was due. Either this node's enforcement was still
// running at the enforcement deadline (no unconfirmed_nodes), or, in
// cluster mode, some nodes had not confirmed it when the barrier's wait
// ended (unconfirmed_nodes lists them). Result is what the 2xx answer would
// have carried (the token, tag or grant; a rotated token with its new
// secret), absent for deletions.
type pendingBody struct {
	Status           string   `json:"status"` // "pending"
	Message          string   `json:"message"`
	UnconfirmedNodes []string `json:"unconfirmed_nodes,omitempty"`
	TokenIDs         []int64  `json:"token_ids"`
	Result           any      `json:"result,omitempty"`
}

// The messages of a 202 answer.
const (
	msgEnforcementRunning = "the change is saved; enforcement on live sessions is still running"
	msgUnconfirmedNodes   = "the change is saved and enforced on this node and every node that confirmed; these nodes had not confirmed it when the wait ended"
)

// enforce applies a committed change to live sessions and reports whether
// the handler should write its normal answer. Otherwise it has answered:
// 500 when enforcement failed (the change itself was saved), 202 pending
// when the cluster barrier was not confirmed by every node, or when the
// enforcement outlasts the deadline; then it goes on in the background,
// with the write lock handed over to it, and is logged when it ends.
// result is what the normal answer carries (nil for 204), repeated in a 202.
func (h *handler) enforce(ws *writeScope, w http.ResponseWriter, r *http.Request, result any, ids ...int64) bool {
	return h.enforceWith(ws, w, r, result, ids, func(ctx context.Context) error { return h.enf.RefreshTokens(ctx, ids...) })
}

// enforceRetiring is enforce for a rotation or a deletion of token id: an
// Enforcer that is a SecretRetirer retires prev's secret first (when prev
// could be read: a retried deletion of a token already gone has no secret
// left to retire here, and the cluster's enforcer retires what its node
// caches).
func (h *handler) enforceRetiring(ws *writeScope, w http.ResponseWriter, r *http.Request, result any, id int64, prev acl.Token, havePrev bool, reason acl.GoneReason) bool {
	sr, ok := h.enf.(SecretRetirer)
	if !ok {
		return h.enforce(ws, w, r, result, id)
	}
	ids := []int64{id}
	return h.enforceWith(ws, w, r, result, ids, func(ctx context.Context) error {
		if havePrev {
			if err := sr.RetireSecret(ctx, prev, reason); err != nil {
				return err
			}
		}
		return h.enf.RefreshTokens(ctx, ids...)
	})
}

// enforceGrant is enforce for a change of the tokens' grant on one tag.
func (h *handler) enforceGrant(ws *writeScope, w http.ResponseWriter, r *http.Request, result any, tagID int64, ids ...int64) bool {
	ge, ok := h.enf.(GrantEnforcer)
	if !ok {
		return h.enforce(ws, w, r, result, ids...)
	}
	return h.enforceWith(ws, w, r, result, ids, func(ctx context.Context) error {
		var errs []error
		for _, id := range ids {
			if err := ge.RefreshGrant(ctx, id, tagID); err != nil {
				errs = append(errs, fmt.Errorf("token %d: %w", id, err))
			}
		}
		return errors.Join(errs...)
	})
}

func (h *handler) enforceWith(ws *writeScope, w http.ResponseWriter, r *http.Request, result any, ids []int64, refresh func(context.Context) error) bool {
	if len(ids) == 0 {
		audit(r, "refreshed_tokens", "", "enforcement", "none")
		return true
	}
	audit(r, "refreshed_tokens", joinIDs(ids))
	ctx, cancel := context.WithTimeout(ws.base, enforceTimeout)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- refresh(ctx) }()
	deadline := time.NewTimer(h.enforceDeadline)
	defer deadline.Stop()
	select {
	case err := <-done:
		cancel()
		audit(r, "enforce_ms", time.Since(start).Milliseconds())
		return h.enforced(w, r, err, result, ids)
	case <-deadline.C:
	}
	ws.handedOff = true
	route := r.Pattern
	aw, _ := r.Context().Value(auditKey{}).(*auditWriter)
	go func() {
		err := <-done
		cancel()
		ws.release()
		took := time.Since(start)
		outcome, nodes := h.lateEnforcement(route, ids, took, err)
		if aw != nil {
			h.recordLate(aw, route, ids, took, outcome, nodes)
		}
	}()
	audit(r, "enforcement", "pending")
	h.log.Warn("rights change answered 202 before its enforcement finished; it goes on in the background",
		"route", route, "token_ids", joinIDs(ids), "deadline", h.enforceDeadline)
	writeJSON(w, http.StatusAccepted, pendingBody{Status: "pending", Message: msgEnforcementRunning, TokenIDs: ids, Result: result})
	return false
}

// enforced answers an enforcement that ended before the deadline.
func (h *handler) enforced(w http.ResponseWriter, r *http.Request, err error, result any, ids []int64) bool {
	if err == nil {
		audit(r, "enforcement", "enforced")
		return true
	}
	var pending *PendingError
	if errors.As(err, &pending) {
		h.log.Warn("rights change not confirmed by every node in time",
			"route", r.Pattern, "token_ids", joinIDs(ids), "unconfirmed_nodes", strings.Join(pending.Nodes, ","))
		audit(r, "enforcement", "unconfirmed", "unconfirmed_nodes", strings.Join(pending.Nodes, ","))
		writeJSON(w, http.StatusAccepted, pendingBody{Status: "pending", Message: msgUnconfirmedNodes,
			UnconfirmedNodes: pending.Nodes, TokenIDs: ids, Result: result})
		return false
	}
	h.log.Error("enforcing an admin change on live sessions failed",
		"route", r.Pattern, "token_ids", joinIDs(ids), "err", err)
	audit(r, "enforcement", "failed")
	writeError(w, &apiError{500, codeEnforcementFailed,
		"the change was saved, but applying it to live connections failed; " +
			"repeat the request, or kick the affected connections"})
	return false
}

// lateEnforcement logs the end of an enforcement answered 202 before it
// finished (nobody else hears how it ended) and returns its outcome for
// the audit log: "enforced", "unconfirmed" (with the nodes) or "failed".
func (h *handler) lateEnforcement(route string, ids []int64, took time.Duration, err error) (string, []string) {
	var pending *PendingError
	switch {
	case err == nil:
		h.log.Info("rights change enforced after its 202 answer", "route", route, "token_ids", joinIDs(ids), "took", took)
		return "enforced", nil
	case errors.As(err, &pending):
		h.log.Warn("rights change enforced after its 202 answer, but not confirmed by every node in time",
			"route", route, "token_ids", joinIDs(ids), "took", took, "unconfirmed_nodes", strings.Join(pending.Nodes, ","))
		return "unconfirmed", pending.Nodes
	default:
		h.log.Error("enforcing an admin change on live sessions failed after its 202 answer; repeat the request or kick the affected connections",
			"route", route, "token_ids", joinIDs(ids), "took", took, "err", err)
		return "failed", nil
	}
}

func joinIDs(ids []int64) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	return b.String()
}

// storeError maps store errors to answers. what names the missing object
// for 404s ("token 3"); conflict is the 409 message.
func (h *handler) storeError(w http.ResponseWriter, r *http.Request, err error, what, conflict string) {
	switch {
	case errors.Is(err, acl.ErrNotFound):
		if what == "" {
			what = "object"
		}
		writeError(w, &apiError{404, codeNotFound, what + " not found"})
	case errors.Is(err, acl.ErrConflict):
		if conflict == "" {
			conflict = "conflicts with an existing object"
		}
		writeError(w, &apiError{409, codeConflict, conflict})
	case errors.Is(err, acl.ErrInvalid):
		// acl's validation messages are written for callers ("token name
		// is 300 bytes, at most 200 allowed"); show the part after the
		// sentinel, and nothing if the sentinel is not where expected.
		msg := "invalid value"
		if _, after, ok := strings.Cut(err.Error(), acl.ErrInvalid.Error()+": "); ok && after != "" {
			msg = after
		}
		writeError(w, invalid("%s", msg))
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The caller went away; nobody reads this answer.
		writeError(w, &apiError{503, codeUnavailable, "request canceled"})
	default:
		// Anything else is the store failing to answer (down, timing out,
		// out of connections): the data plane keeps serving from cached
		// grants, the caller retries later.
		h.log.Error("admin request failed: store unavailable", "method", r.Method, "route", r.Pattern, "err", err)
		writeError(w, &apiError{503, codeUnavailable, "the store of record is unavailable; retry later"})
	}
}

// fault answers 500 without internals; the cause goes to the log.
func (h *handler) fault(w http.ResponseWriter, r *http.Request, what string, err error) {
	h.log.Error("admin request failed", "method", r.Method, "route", r.Pattern, "what", what, "err", err)
	writeError(w, &apiError{500, codeInternal, "internal error; see the broker's log"})
}

// pathID parses a positive int64 path value; on failure it answers 400.
func pathID(w http.ResponseWriter, r *http.Request, name string) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, invalid("%s must be a positive integer", name))
		return 0, false
	}
	return id, true
}

// readBody reads a JSON request body of at most maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return nil, &apiError{415, codeUnsupportedMedia, "the request body must be JSON (Content-Type: application/json)"}
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiError{413, codeBodyTooLarge, fmt.Sprintf("the request body is larger than %d bytes", maxBodyBytes)}
		}
		return nil, &apiError{400, codeInvalidJSON, "could not read the request body"}
	}
	return body, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only our own types are marshalled; they always encode
		status, b = 500, []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	// Answers may carry a secret (creation, rotation): no caching anywhere.
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, e *apiError) {
	var body errorBody
	body.Error.Code, body.Error.Message = e.code, e.message
	writeJSON(w, e.status, body)
}

// ---- audit ----

type auditKey struct{}

// auditWriter records the status of a write request and the attributes
// its handler adds, for the one audit line ServeHTTP logs afterwards. It
// belongs to the request's goroutine.
type auditWriter struct {
	http.ResponseWriter
	status int
	attrs  []any
	// entryID receives the ID of the request's audit entry once stored
	// (0 if it was not), for an enforcement that ends after the answer.
	entryID chan int64
}

func (a *auditWriter) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *auditWriter) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	return a.ResponseWriter.Write(b)
}

func (a *auditWriter) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// audit adds attributes (never a secret) to the request's audit line.
func audit(r *http.Request, attrs ...any) {
	if a, ok := r.Context().Value(auditKey{}).(*auditWriter); ok {
		a.attrs = append(a.attrs, attrs...)
	}
}

// headerOnly captures what ServeMux's fallback handler would answer.
type headerOnly struct {
	header http.Header
	status int
}

func (h *headerOnly) Header() http.Header         { return h.header }
func (h *headerOnly) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerOnly) WriteHeader(code int)        { h.status = code }
