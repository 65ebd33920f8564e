package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// --admin-allowed-hosts on a real node (issue 9, finding 5): every route of
// the admin listener, /debug/pprof (served outside the admin package)
// included, refuses a Host not in the list with 421 and a JSON error; the
// listener's own address keeps working, and without the flag any Host is
// answered as before.
func TestAdminAllowedHosts(t *testing.T) {
	get := func(n *testNode, host, path string) (int, string, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+n.AdminAddr()+path, nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+n.AdminKey())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), raw
	}
	routes := []string{"/api/v1/tokens", "/metrics", "/healthz", "/debug/pprof/", "/debug/pprof/cmdline", "/nothing"}

	n := startNode(t, func(c *Config) { c.AdminAllowedHosts = "admin.example.com" })
	for _, path := range routes {
		code, ct, raw := get(n, "rebound.attacker.example", path)
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if code != http.StatusMisdirectedRequest || ct != "application/json" || json.Unmarshal(raw, &e) != nil || e.Error.Code != "host_not_allowed" {
			t.Fatalf("%s with a foreign Host: HTTP %d %s %s", path, code, ct, raw)
		}
		for _, host := range []string{"admin.example.com", n.AdminAddr()} {
			if code, _, raw := get(n, host, path); code == http.StatusMisdirectedRequest || (path != "/nothing" && code != 200) {
				t.Fatalf("%s with Host %s: HTTP %d %s", path, host, code, raw)
			}
		}
	}

	open := startNode(t)
	for _, path := range routes[:5] {
		if code, _, raw := get(open, "rebound.attacker.example", path); code != 200 {
			t.Fatalf("no --admin-allowed-hosts, %s: HTTP %d %s", path, code, raw)
		}
	}

	for _, bad := range []string{"http://admin.example.com", "admin:0", "*.example.com"} {
		if _, err := ParseConfig([]string{"--admin-allowed-hosts", bad}, func(string) string { return "" }, io.Discard); err == nil ||
			!strings.Contains(err.Error(), "--admin-allowed-hosts") {
			t.Errorf("--admin-allowed-hosts %q: %v", bad, err)
		}
	}
	cfg, err := ParseConfig(nil, func(k string) string {
		if k == "GATECAST_ADMIN_ALLOWED_HOSTS" {
			return "a.example, [::1]:8081"
		}
		return ""
	}, io.Discard)
	if err != nil || cfg.AdminAllowedHosts != "a.example, [::1]:8081" {
		t.Fatalf("from the environment: %q %v", cfg.AdminAllowedHosts, err)
	}
}
