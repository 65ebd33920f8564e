package admin

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var errTest = errors.New("store: connection refused")

func TestParseAllowedHosts(t *testing.T) {
	for _, ok := range []string{"", " ", "admin.example.com", "admin.example.com:8081, 127.0.0.1:8081",
		"localhost,[::1]:8081,::1,[::1]", "10.0.0.5", "Node-A.internal.", "a_b.local:1"} {
		if _, err := ParseAllowedHosts(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"http://admin", "admin:0", "admin:65536", "admin:x", "admin:080", ":8081",
		"[admin]:80", "[::1", "1::2::3", "ad min", "admin/x", "*", "*.example.com", "a:b:c", "é.example"} {
		if _, err := ParseAllowedHosts(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if l, _ := ParseAllowedHosts(" a , ,b:1 "); len(l) != 2 {
		t.Errorf("split %v", l)
	}
}

// --admin-allowed-hosts (issue 9, finding 5: DNS rebinding): a request
// whose Host is not listed is answered 421 with a JSON error on every
// route of the admin listener, before the key is looked at.
func TestHostGuard(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("gatecast_up 1\n")) })
	})
	pprofLike := http.NewServeMux()
	pprofLike.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("profile")) })
	pprofLike.Handle("/", f.h)
	var logs bytes.Buffer
	allowed, err := ParseAllowedHosts("admin.example.com, 127.0.0.1:8081, [::1]:8081, node-b.internal")
	if err != nil {
		t.Fatal(err)
	}
	g := HostGuard(allowed, []string{"10.0.0.11:9081"}, slog.New(slog.NewTextHandler(&logs, nil)), pprofLike)
	frozen := time.Now()
	g.(*hostGuard).limit.setClock(func() time.Time { return frozen })

	routes := []string{"/api/v1/tokens", "/metrics", "/healthz", "/debug/pprof/", "/debug/pprof/heap", "/nothing", "/api/v1/nope"}
	for _, host := range []string{"evil.example", "admin.example.com.evil.example", "127.0.0.1", "127.0.0.1:8082",
		"[::1]", "[::1]:8082", "localhost:8081", "", "10.0.0.11", "10.0.0.11:8081", "admin.example.co"} {
		for _, rt := range routes {
			req := httptest.NewRequest("GET", rt, nil)
			req.Host = host
			req.Header.Set("Authorization", "Bearer "+testKey)
			w := httptest.NewRecorder()
			g.ServeHTTP(w, req)
			checkError(t, w.Code, w.Body.Bytes(), 421, "host_not_allowed", "Host "+host+" "+rt)
			if w.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("Host %q %s: Content-Type %q", host, rt, w.Header().Get("Content-Type"))
			}
		}
	}
	for _, host := range []string{"admin.example.com", "ADMIN.example.com:443", "admin.example.com.", "127.0.0.1:8081",
		"[::1]:8081", "[0:0::1]:8081", "node-b.internal:9081", "10.0.0.11:9081"} {
		for _, rt := range []string{"/api/v1/tokens", "/metrics", "/healthz", "/debug/pprof/"} {
			req := httptest.NewRequest("GET", rt, nil)
			req.Host = host
			req.Header.Set("Authorization", "Bearer "+testKey)
			w := httptest.NewRecorder()
			g.ServeHTTP(w, req)
			if w.Code != 200 {
				t.Fatalf("Host %q %s: HTTP %d %s", host, rt, w.Code, w.Body)
			}
		}
	}
	// a listed host still needs the key for the API
	req := httptest.NewRequest("GET", "/api/v1/tokens", nil)
	req.Host = "admin.example.com"
	w := httptest.NewRecorder()
	g.ServeHTTP(w, req)
	checkError(t, w.Code, w.Body.Bytes(), 401, "unauthorized", "allowed host without key")

	// refusals are logged, at a bounded rate (a client triggers them)
	if n := strings.Count(logs.String(), "Host header not in --admin-allowed-hosts"); n != 1 {
		t.Fatalf("%d log lines for %d refusals:\n%s", n, 11*len(routes), logs.String())
	}
	// without a list every Host is answered, as before
	open := HostGuard(nil, []string{"10.0.0.11:9081"}, nil, f.h)
	req = httptest.NewRequest("GET", "/healthz", nil)
	req.Host = "evil.example"
	w = httptest.NewRecorder()
	open.ServeHTTP(w, req)
	if w.Code != 200 {
		t.Fatalf("no list: HTTP %d", w.Code)
	}
}

// Log lines a client can trigger without the key are rate-limited.
func TestUnauthenticatedLogsAreRateLimited(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Health = func() error { return errTest } })
	frozen := time.Now()
	f.h.(*handler).logLimit.setClock(func() time.Time { return frozen }) // however slow the requests
	for range 50 {
		f.callWith("GET", "/api/v1/tokens", "", map[string]string{"Authorization": "Bearer nope"})
		f.callWith("GET", "/healthz", "", nil)
	}
	logs := f.logs.String()
	if n := strings.Count(logs, "admin request refused"); n != 1 {
		t.Fatalf("%d refused-key lines for 50 refusals", n)
	}
	if n := strings.Count(logs, "health check failed"); n != 1 {
		t.Fatalf("%d health lines for 50 probes", n)
	}
	l := newLogLimiter(logEvery)
	now := time.Now()
	l.setClock(func() time.Time { return now })
	l.allow("k")
	l.allow("k")
	l.allow("k")
	now = now.Add(logEvery)
	if ok, n := l.allow("k"); !ok || n != 2 {
		t.Fatalf("after the interval: %v, %d suppressed", ok, n)
	}
}
