package admin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gatecast/gatecast/acl"
)

// The web console: a single page (admin/console/, embedded in the binary:
// no build step, no third-party asset, works offline) served at / on the
// admin listener. It signs in with the admin key (POST /console/login),
// which buys a session cookie (console_session.go); the page then calls
// the same /api/v1 routes the CLI does, the cookie standing in for the
// Bearer key, with the session's CSRF token in X-CSRF-Token on every
// write. The key itself is never stored in the browser nor put in a URL.
//
// Routes (no key needed to reach them; each checks what it needs):
//
//	GET  /                           the page (index.html)
//	GET  /console/{file}             its script, style sheet and icon
//	POST /console/login              {"key"} → session cookie + {"csrf_token",…}
//	POST /console/logout             ends the session (CSRF header required)
//	GET  /console/session            the session's CSRF token and expiry (after a reload)
//	GET  /console/stats              one sample of the live view's counters
//	GET  /console/tokens             the token list, searched and paged here
//	GET  /console/tags/{id}/tokens   the tokens holding a permission on a tag
//
// Every answer of these routes carries a strict Content-Security-Policy
// (no inline script or style, nothing from another origin, no framing).

//go:embed console
var consoleFiles embed.FS

// consoleCSP is the page's Content-Security-Policy: its own script, style
// and images only, calls to its own origin only, no framing, no <base>,
// forms posted to itself only.
const consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// Error codes the console adds to the API's.
const (
	codeForbidden       = "forbidden"         // a write without the session's CSRF token, a cross-origin request
	codeTooManyRequests = "too_many_requests" // too many failed sign-ins
)

// csrfHeader carries the session's CSRF token on every console write.
const csrfHeader = "X-CSRF-Token"

// consoleAsset is one embedded file with its ETag.
type consoleAsset struct {
	body []byte
	etag string
}

// consoleAssets are the files of admin/console/, by name.
var consoleAssets = func() map[string]consoleAsset {
	out := map[string]consoleAsset{}
	entries, err := fs.ReadDir(consoleFiles, "console")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := consoleFiles.ReadFile("console/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		out[e.Name()] = consoleAsset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return out
}()

// routeConsole adds the console's routes to the handler's mux.
func (h *handler) routeConsole(m *http.ServeMux) {
	h.console = newConsoleSessions()
	m.HandleFunc("GET /{$}", h.consoleIndex)
	m.HandleFunc("GET /console/{file}", h.consoleFile)
	m.HandleFunc("POST /console/login", h.consoleLogin)
	m.HandleFunc("POST /console/logout", h.consoleLogout)
	m.HandleFunc("GET /console/session", h.consoleSessionInfo)
	m.HandleFunc("GET /console/stats", h.consoleStats)
	m.HandleFunc("GET /console/tokens", h.consoleTokens)
	m.HandleFunc("GET /console/tags/{id}/tokens", h.consoleTagTokens)
}

// consoleHeaders sets the security headers of every console answer.
func consoleHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", consoleCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
}

func (h *handler) consoleIndex(w http.ResponseWriter, r *http.Request) {
	h.serveAsset(w, r, "index.html")
}

func (h *handler) consoleFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "index.html" {
		http.Redirect(w, r, "/", http.StatusMovedPermanently)
		return
	}
	h.serveAsset(w, r, name)
}

func (h *handler) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := consoleAssets[name]
	if !ok {
		writeError(w, &apiError{404, codeNotFound, "no such route"})
		return
	}
	consoleHeaders(w)
	w.Header().Set("ETag", a.etag)
	// Revalidated on every load (an upgraded node serves its own page).
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}

// consoleCookieName is the session cookie's name for the listener the
// request reached. Browsers share cookies between the ports of one host,
// so the port is part of the name: two nodes on one machine (sessions are
// per node) do not overwrite each other's cookie.
func consoleCookieName(host string) string {
	port := "80"
	if _, p, err := net.SplitHostPort(host); err == nil && p != "" {
		port = p
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			port = "0"
			break
		}
	}
	return "gatecast_console_" + port
}

// sessionCookie is the request's session cookie value, or "".
func sessionCookie(r *http.Request) string {
	c, err := r.Cookie(consoleCookieName(r.Host))
	if err != nil {
		return ""
	}
	return c.Value
}

// secureRequest reports whether the browser reached the listener over
// TLS (directly, or through a proxy that says so): the cookie is then
// marked Secure. Believing a forged X-Forwarded-Proto only makes the
// cookie stricter.
func secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// sameOrigin refuses what a browser marks as coming from another site:
// Sec-Fetch-Site other than same-origin (or none: typed by the user), an
// Origin other than the listener's own. A client that sends neither (curl,
// the CLI) is not a browser and passes.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false // "null" included
	}
	return strings.EqualFold(u.Host, r.Host)
}

// consoleAuthKey marks, in a request's context, that a console session
// authorized it.
type consoleAuthKey struct{}

// consoleAuthorized reports whether consoleGate authorized r by a session.
func consoleAuthorized(r *http.Request) bool {
	ok, _ := r.Context().Value(consoleAuthKey{}).(bool)
	return ok
}

// consoleGate lets a console session stand in for the admin key on /api:
// a request without a valid Bearer key but with a live session cookie is
// authorized as that session (audit actor "console:<id hash>", source
// "console"); a write must also carry the session's CSRF token in
// X-CSRF-Token and come from the listener's own origin, else it is
// answered 403 here (answered true). Without a session cookie, r goes on
// unchanged and the key check answers it.
func (h *handler) consoleGate(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	id := sessionCookie(r)
	if id == "" || h.authorized(r) {
		return r, false
	}
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	v, ok := h.console.lookup(id, true)
	if !ok {
		return r, false // 401 from the key check: the page signs in again
	}
	if write && (!sameOrigin(r) || !csrfMatches(v, r.Header.Get(csrfHeader))) {
		if ok, suppressed := h.logLimit.allow("csrf"); ok {
			h.log.Warn("console write refused: missing or wrong CSRF token, or another origin",
				"method", r.Method, "path", logSafe(r.URL.Path), "remote", r.RemoteAddr, "actor", v.actor,
				"origin", logSafe(r.Header.Get("Origin")), "suppressed_since_last", suppressed)
		}
		writeError(w, &apiError{http.StatusForbidden, codeForbidden,
			"console write refused: missing or wrong " + csrfHeader + " header for this session, or another origin"})
		return nil, true
	}
	ctx := withActor(r.Context(), v.actor, "console")
	ctx = context.WithValue(ctx, consoleAuthKey{}, true)
	return r.WithContext(ctx), false
}

// consoleSessionBody is what the page learns of its session.
type consoleSessionBody struct {
	Actor       string    `json:"actor"`
	CSRFToken   string    `json:"csrf_token"`
	SignedInAt  time.Time `json:"signed_in_at"`
	ExpiresAt   time.Time `json:"expires_at"`     // if unused until then
	MaxExpires  time.Time `json:"max_expires_at"` // however busy
	IdleTimeout int       `json:"idle_timeout_seconds"`
	Node        string    `json:"node,omitempty"`
	Cluster     bool      `json:"cluster"`
}

func (h *handler) sessionBody(v consoleView) consoleSessionBody {
	return consoleSessionBody{Actor: v.actor, CSRFToken: v.csrf, SignedInAt: v.created.UTC(), ExpiresAt: v.expiresAt.UTC(),
		MaxExpires: v.created.Add(consoleMaxLifetime).UTC(), IdleTimeout: int(consoleIdleTimeout.Seconds()),
		Node: h.nodeID, Cluster: h.peers != nil}
}

type consoleLoginRequest struct {
	Key string `json:"key"`
}

// consoleLogin checks the admin key (in constant time, as the Bearer
// check does) and answers a session cookie. Failed sign-ins are limited
// per address and in all (console_session.go).
func (h *handler) consoleLogin(w http.ResponseWriter, r *http.Request) {
	consoleHeaders(w)
	if !sameOrigin(r) {
		writeError(w, &apiError{http.StatusForbidden, codeForbidden, "sign-in refused: the request came from another origin"})
		return
	}
	if blocked, wait := h.console.loginBlocked(r.RemoteAddr); blocked {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(wait.Round(time.Second).Seconds()))))
		writeError(w, &apiError{http.StatusTooManyRequests, codeTooManyRequests, "too many failed sign-ins; wait a minute and try again"})
		return
	}
	body, e := readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	var req consoleLoginRequest
	if e := decodeJSON(body, &req); e != nil {
		writeError(w, e)
		return
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(req.Key)))
	if !h.keySet || subtle.ConstantTimeCompare(sum[:], h.keySum[:]) != 1 {
		h.console.loginFailed(r.RemoteAddr)
		if ok, suppressed := h.logLimit.allow("console-login"); ok {
			h.log.Warn("console sign-in refused: wrong admin key", "remote", r.RemoteAddr, "suppressed_since_last", suppressed)
		}
		writeError(w, &apiError{http.StatusUnauthorized, codeUnauthorized, "wrong admin key"})
		return
	}
	h.console.loginSucceeded(r.RemoteAddr)
	id, v, err := h.console.create()
	if err != nil {
		h.fault(w, r, "making a console session", err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: consoleCookieName(r.Host), Value: id, Path: "/",
		MaxAge: int(consoleMaxLifetime.Seconds()), Expires: v.created.Add(consoleMaxLifetime),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r),
	})
	h.log.Info("console signed in", "actor", v.actor, "remote", r.RemoteAddr)
	h.consoleAudit(r, "console.login", v.actor, http.StatusOK)
	writeJSON(w, http.StatusOK, h.sessionBody(v))
}

// consoleLogout ends the session and clears its cookie. Like every write,
// it needs the session's CSRF token; without a live session there is
// nothing to end and the cookie is just cleared.
func (h *handler) consoleLogout(w http.ResponseWriter, r *http.Request) {
	consoleHeaders(w)
	clearCookie := func() {
		http.SetCookie(w, &http.Cookie{Name: consoleCookieName(r.Host), Value: "", Path: "/", MaxAge: -1,
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r)})
	}
	id := sessionCookie(r)
	v, ok := h.console.lookup(id, false)
	if !ok {
		clearCookie()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if !sameOrigin(r) || !csrfMatches(v, r.Header.Get(csrfHeader)) {
		writeError(w, &apiError{http.StatusForbidden, codeForbidden, "sign-out refused: missing or wrong " + csrfHeader + " header"})
		return
	}
	h.console.remove(id)
	clearCookie()
	h.log.Info("console signed out", "actor", v.actor, "remote", r.RemoteAddr)
	h.consoleAudit(r, "console.logout", v.actor, http.StatusNoContent)
	w.WriteHeader(http.StatusNoContent)
}

// consoleAudit records a sign-in or sign-out in the audit log.
func (h *handler) consoleAudit(r *http.Request, action, actor string, status int) {
	e := acl.AuditEntry{At: time.Now(), Actor: actor, Source: "console", Action: action, Status: status,
		Remote: truncateText(r.RemoteAddr, acl.MaxAuditFieldBytes), Node: truncateText(h.nodeID, acl.MaxAuditFieldBytes),
		Client: h.sanitizeClient(r.Header.Get("User-Agent")), Target: "session " + strings.TrimPrefix(actor, "console:")}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
	defer cancel()
	if _, err := h.store.AppendAudit(ctx, e); err != nil {
		h.log.Error("console "+action+" done but its audit log entry was not stored", "actor", actor, "err", err)
	}
}

// consoleUser authorizes a console read route: a live session (touch:
// counts as use) or the admin key. It answers 401 itself.
func (h *handler) consoleUser(w http.ResponseWriter, r *http.Request, touch bool) bool {
	consoleHeaders(w)
	if h.authorized(r) {
		return true
	}
	if _, ok := h.console.lookup(sessionCookie(r), touch); ok {
		return true
	}
	writeError(w, &apiError{http.StatusUnauthorized, codeUnauthorized, "not signed in"})
	return false
}

func (h *handler) consoleSessionInfo(w http.ResponseWriter, r *http.Request) {
	consoleHeaders(w)
	v, ok := h.console.lookup(sessionCookie(r), true)
	if !ok {
		writeError(w, &apiError{http.StatusUnauthorized, codeUnauthorized, "not signed in"})
		return
	}
	writeJSON(w, http.StatusOK, h.sessionBody(v))
}

// Page sizes of GET /console/tokens.
const (
	consoleTokensDefault = 50
	consoleTokensMax     = 500
	consoleNamesMax      = 100 // names given with GET /console/tags/{id}/tokens
)

// ConsoleTokensPage is the answer of GET /console/tokens.
type ConsoleTokensPage struct {
	Tokens  []Token `json:"tokens"`
	Total   int     `json:"total"`   // every token
	Matched int     `json:"matched"` // those matching q
	Offset  int     `json:"offset"`
	TookUs  int64   `json:"took_us"` // reading, filtering and paging here
}

// consoleTokens answers one page of the tokens matching q (an id, or a
// case-insensitive part of the name), ordered by id: the tokens page of a
// store with 10,000 tokens gets 50 rows, not the whole list.
func (h *handler) consoleTokens(w http.ResponseWriter, r *http.Request) {
	if !h.consoleUser(w, r, true) {
		return
	}
	start := time.Now()
	v := r.URL.Query()
	q := strings.ToLower(strings.TrimSpace(v.Get("q")))
	offset, limit := 0, consoleTokensDefault
	if s := v.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			writeError(w, invalid("offset must be a non-negative integer"))
			return
		}
		offset = n
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > consoleTokensMax {
			writeError(w, invalid("limit must be an integer from 1 to %d", consoleTokensMax))
			return
		}
		limit = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	toks, err := h.store.ListTokens(ctx)
	if err != nil {
		h.storeError(w, r, err, "", "")
		return
	}
	id, idErr := strconv.ParseInt(q, 10, 64)
	page := ConsoleTokensPage{Tokens: []Token{}, Total: len(toks), Offset: offset}
	for _, t := range toks {
		if q != "" && !(idErr == nil && t.ID == id) && !strings.Contains(strings.ToLower(t.Name), q) {
			continue
		}
		if page.Matched >= offset && len(page.Tokens) < limit {
			page.Tokens = append(page.Tokens, tokenJSON(t))
		}
		page.Matched++
	}
	page.TookUs = time.Since(start).Microseconds()
	writeJSON(w, http.StatusOK, page)
}

// consoleTokenName is a token's id and name.
type consoleTokenName struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// consoleTagTokens lists the tokens holding a permission on a tag: whom a
// change of the tag affects (the page then counts their live sessions
// through GET /api/v1/connections). The names of the first 100 come along.
func (h *handler) consoleTagTokens(w http.ResponseWriter, r *http.Request) {
	if !h.consoleUser(w, r, true) {
		return
	}
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	if _, err := h.store.GetTag(ctx, id); err != nil {
		h.storeError(w, r, err, fmt.Sprintf("tag %d", id), "")
		return
	}
	ids, err := h.store.TokensWithTag(ctx, id)
	if err != nil {
		h.storeError(w, r, err, fmt.Sprintf("tag %d", id), "")
		return
	}
	if ids == nil {
		ids = []int64{}
	}
	names := make([]consoleTokenName, 0, min(len(ids), consoleNamesMax))
	for _, tid := range ids[:min(len(ids), consoleNamesMax)] {
		t, err := h.store.GetToken(ctx, tid)
		if err != nil {
			continue // deleted meanwhile, or the store failing: the id alone is shown
		}
		names = append(names, consoleTokenName{ID: t.ID, Name: t.Name})
	}
	writeJSON(w, http.StatusOK, map[string]any{"tag_id": id, "token_ids": ids, "tokens": names})
}

// ConsoleStats is one sample of the live view: this node's counters as
// /metrics has them (the page turns two samples into rates). Counters are
// totals since the node started.
type ConsoleStats struct {
	AtMillis    int64              `json:"at_ms"`
	Node        string             `json:"node,omitempty"`
	Connections float64            `json:"connections"`
	ByProtocol  map[string]float64 `json:"connections_by_protocol"`
	MessagesIn  float64            `json:"messages_in_total"`
	MessagesOut float64            `json:"messages_out_total"`
	// Dropped: deliveries the transport refused, client messages dropped
	// on receipt (rate limit) and messages not forwarded to a node whose
	// queue was full.
	Dropped  float64 `json:"dropped_total"`
	Rejected float64 `json:"rejected_total"` // client messages refused (denied, invalid, …)
	// Revocations: sessions closed by enforcement (token, subscription,
	// limit, kick); EnforceSeconds and Enforcements: the sum and count of
	// the gatecast_revocation_seconds histogram (a rights change on this
	// node, store re-read included).
	Revocations    float64 `json:"revocations_total"`
	EnforceSeconds float64 `json:"enforce_seconds_sum"`
	Enforcements   float64 `json:"enforcements_total"`
	// Cluster mode: barrier outcomes, Redis and the live node count.
	BarrierConfirmed float64  `json:"barrier_confirmed_total"`
	BarrierPending   float64  `json:"barrier_pending_total"`
	BarrierSeconds   float64  `json:"barrier_seconds_sum"`
	RedisUp          *float64 `json:"redis_up,omitempty"`
	ClusterNodes     *float64 `json:"cluster_nodes,omitempty"`
	StoreErrors      float64  `json:"store_errors_total"`
	// ConsoleSessions signed in on this node; CostMicros is what making
	// this sample took (rendering and reading /metrics).
	ConsoleSessions int   `json:"console_sessions"`
	CostMicros      int64 `json:"cost_us"`
}

// consoleStats answers one sample. It is polled every second by an open
// live view, so it does not count as use of the session (an unattended
// live view still ends after the idle timeout).
func (h *handler) consoleStats(w http.ResponseWriter, r *http.Request) {
	if !h.consoleUser(w, r, false) {
		return
	}
	start := time.Now()
	st := ConsoleStats{AtMillis: start.UnixMilli(), Node: h.nodeID, ByProtocol: map[string]float64{}}
	if h.metrics != nil {
		req := httptestRequest(r.Context())
		buf := &bufferResponse{header: http.Header{}}
		h.metrics.ServeHTTP(buf, req)
		parseMetrics(&buf.body, &st)
	} else {
		st.Connections = float64(len(h.enf.Connections(0)))
	}
	st.ConsoleSessions = h.console.count()
	st.CostMicros = time.Since(start).Microseconds()
	writeJSON(w, http.StatusOK, st)
}

// httptestRequest is a GET /metrics asking for the text format, without
// compression.
func httptestRequest(ctx context.Context) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	return req
}

// bufferResponse collects an answer in memory.
type bufferResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferResponse) Header() http.Header         { return b.header }
func (b *bufferResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *bufferResponse) WriteHeader(code int)        { b.status = code }

// parseMetrics reads the samples the live view shows from the Prometheus
// text format, summing a counter over its labels.
func parseMetrics(text *bytes.Buffer, st *ConsoleStats) {
	sc := bufio.NewScanner(text)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, "gatecast_") {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 {
			continue
		}
		name, labels := line[:end], ""
		rest := line[end:]
		if rest[0] == '{' {
			close := strings.LastIndexByte(rest, '}')
			if close < 0 {
				continue
			}
			labels, rest = rest[1:close], rest[close+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		val, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		switch name {
		case "gatecast_connections":
			st.Connections += val
			if p := labelValue(labels, "protocol"); p != "" {
				st.ByProtocol[p] += val
			}
		case "gatecast_messages_in_total":
			st.MessagesIn += val
		case "gatecast_messages_out_total":
			st.MessagesOut += val
		case "gatecast_deliveries_dropped_total", "gatecast_ws_inbound_dropped_total", "gatecast_cluster_forward_queue_dropped_total":
			st.Dropped += val
		case "gatecast_messages_rejected_total":
			st.Rejected += val
		case "gatecast_revocations_total":
			st.Revocations += val
		case "gatecast_revocation_seconds_sum":
			st.EnforceSeconds += val
		case "gatecast_revocation_seconds_count":
			st.Enforcements += val
		case "gatecast_revocation_barrier_seconds_count":
			switch labelValue(labels, "outcome") {
			case "confirmed":
				st.BarrierConfirmed += val
			case "pending":
				st.BarrierPending += val
			}
		case "gatecast_revocation_barrier_seconds_sum":
			st.BarrierSeconds += val
		case "gatecast_cluster_redis_up":
			v := val
			st.RedisUp = &v
		case "gatecast_cluster_nodes":
			v := val
			st.ClusterNodes = &v
		case "gatecast_store_errors_total":
			st.StoreErrors += val
		}
	}
}

// labelValue is the value of label name in a Prometheus label list
// (`a="x",b="y"`), or "".
func labelValue(labels, name string) string {
	for labels != "" {
		k, rest, ok := strings.Cut(labels, `="`)
		if !ok {
			return ""
		}
		// values of the labels read here hold no quote or comma
		v, after, _ := strings.Cut(rest, `"`)
		if strings.TrimSpace(k) == name {
			return v
		}
		labels = strings.TrimPrefix(after, ",")
	}
	return ""
}
