package admin

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// DNS-rebinding protection for the admin listener (--admin-allowed-hosts).
//
// A web page on an attacker's domain whose DNS name is then re-pointed at
// 127.0.0.1 (or a private address) becomes same-origin with the admin
// listener in the victim's browser: it cannot present the admin key, but
// it can read what needs none (/metrics, /healthz). Such requests carry the
// attacker's host name in their Host header, so answering only Host values
// in a list defeats it.

// hostEntry is one allowed host: a name or IP, with a port or any port.
type hostEntry struct {
	host string // lower case, no brackets, no trailing dot
	port string // "" = any port
}

// ParseAllowedHosts parses a comma-separated --admin-allowed-hosts value:
// host names, IP addresses ("::1" or "[::1]"), each with or without a
// ":port". Empty means every Host is answered (nil list).
func ParseAllowedHosts(list string) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(list, ",") {
		e := strings.TrimSpace(raw)
		if e == "" {
			continue
		}
		if _, err := parseHostEntry(e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func parseHostEntry(e string) (hostEntry, error) {
	bad := func(why string) (hostEntry, error) {
		return hostEntry{}, fmt.Errorf("allowed host %q: %s (want a host name or IP, optionally with :port)", e, why)
	}
	host, port := e, ""
	switch {
	case strings.HasPrefix(e, "["):
		h, p, err := net.SplitHostPort(e)
		if err != nil {
			if !strings.HasSuffix(e, "]") {
				return bad("malformed bracketed address")
			}
			h = e[1 : len(e)-1]
		}
		if net.ParseIP(h) == nil {
			return bad("not an IP address in brackets")
		}
		host, port = h, p
	case strings.Count(e, ":") > 1:
		if net.ParseIP(e) == nil { // a bare IPv6 address, any port
			return bad("not an IPv6 address")
		}
	case strings.Contains(e, ":"):
		h, p, err := net.SplitHostPort(e)
		if err != nil {
			return bad("malformed host:port")
		}
		host, port = h, p
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return bad("port must be 1 to 65535")
		}
	}
	host = normHost(host)
	if host == "" {
		return bad("empty host")
	}
	for _, c := range host {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == ':' || c == '%'
		if !ok {
			return bad("invalid character")
		}
	}
	return hostEntry{host: host, port: port}, nil
}

func normHost(h string) string {
	h = strings.ToLower(h)
	if ip := net.ParseIP(h); ip != nil {
		return ip.String() // one spelling per address ("::0001" is "::1")
	}
	return strings.TrimSuffix(h, ".")
}

// splitHostHeader splits a Host header into host and port ("" if none).
func splitHostHeader(hp string) (host, port string, ok bool) {
	if strings.HasPrefix(hp, "[") {
		if strings.HasSuffix(hp, "]") {
			return hp[1 : len(hp)-1], "", true
		}
		h, p, err := net.SplitHostPort(hp)
		return h, p, err == nil
	}
	switch strings.Count(hp, ":") {
	case 0:
		return hp, "", hp != ""
	case 1:
		h, p, err := net.SplitHostPort(hp)
		return h, p, err == nil && h != ""
	}
	return "", "", false // an IPv6 address must be bracketed in Host
}

// hostGuard answers only requests whose Host is allowed.
type hostGuard struct {
	allowed []hostEntry
	next    http.Handler
	log     *slog.Logger
	limit   *logLimiter
}

// HostGuard wraps the admin listener's whole handler (API, probes,
// /metrics, /debug/pprof) so that a request whose Host header is not in
// allowed (a ParseAllowedHosts list) is answered 421 host_not_allowed in
// the API's error shape, before the admin key is even looked at. own are
// host:port addresses always allowed when the list is not empty: the
// listener's own address (IP literals cannot be rebound) and the address
// the other nodes of a cluster call (--advertise-admin). An empty allowed
// list returns next unchanged: every Host is answered. It panics on an
// entry ParseAllowedHosts refuses (a wiring mistake: validate first).
func HostGuard(allowed, own []string, log *slog.Logger, next http.Handler) http.Handler {
	if len(allowed) == 0 {
		return next
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &hostGuard{next: next, log: log, limit: newLogLimiter(logEvery)}
	for _, e := range allowed {
		he, err := parseHostEntry(strings.TrimSpace(e))
		if err != nil {
			panic("admin.HostGuard: " + err.Error())
		}
		g.allowed = append(g.allowed, he)
	}
	for _, e := range own {
		if he, err := parseHostEntry(e); err == nil && he.port != "" {
			g.allowed = append(g.allowed, he)
		}
	}
	return g
}

func (g *hostGuard) allows(hostHeader string) bool {
	host, port, ok := splitHostHeader(hostHeader)
	if !ok {
		return false
	}
	host = normHost(host)
	for _, e := range g.allowed {
		if e.host == host && (e.port == "" || e.port == port) {
			return true
		}
	}
	return false
}

func (g *hostGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.allows(r.Host) {
		g.next.ServeHTTP(w, r)
		return
	}
	if ok, suppressed := g.limit.allow("host"); ok {
		g.log.Warn("admin request refused: Host header not in --admin-allowed-hosts",
			"host", logSafe(r.Host), "method", r.Method, "path", logSafe(r.URL.Path), "remote", r.RemoteAddr,
			"suppressed_since_last", suppressed)
	}
	writeError(w, &apiError{http.StatusMisdirectedRequest, codeHostNotAllowed,
		"this admin listener does not answer for the host named in the Host header (see --admin-allowed-hosts)"})
}
