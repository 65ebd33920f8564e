package server

import (
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/gatecast/gatecast/admin"
)

// bannerCommands prints n's banner and returns it with its copy-paste
// admin CLI commands (token create, grant), as argument lists after
// ./bin/gatecast, and the admin key its export line reads.
func bannerCommands(t *testing.T, n *Node) (banner string, cmds [][]string, key string) {
	t.Helper()
	var b bytes.Buffer
	n.printBanner(&b)
	banner = b.String()
	for _, line := range strings.Split(banner, "\n") {
		line = strings.TrimSpace(line)
		if path, ok := strings.CutPrefix(line, "export GATECAST_ADMIN_KEY=$(cat "); ok {
			raw, err := os.ReadFile(strings.TrimSuffix(path, ")"))
			if err != nil {
				t.Fatalf("the banner's key export: %v\n%s", err, banner)
			}
			key = strings.TrimSpace(string(raw))
		}
		rest, ok := strings.CutPrefix(line, "./bin/gatecast ")
		if !ok || strings.HasPrefix(rest, "sub ") || strings.HasPrefix(rest, "pub ") {
			continue
		}
		rest, _, _ = strings.Cut(rest, "#  ") // the trailing comment
		rest, _, _ = strings.Cut(rest, " # ")
		cmds = append(cmds, strings.Fields(strings.ReplaceAll(rest, "'", "")))
	}
	if len(cmds) != 2 || key == "" {
		t.Fatalf("the banner has %d admin commands and key %q, want token create and grant:\n%s", len(cmds), key, banner)
	}
	return banner, cmds, key
}

// The banner's admin commands reach the node that printed them: with
// --admin-url when its admin listener is not the CLI's default address.
func TestBannerCommandsReachThisNode(t *testing.T) {
	t.Setenv("GATECAST_ADMIN_URL", "") // as in a fresh terminal
	t.Setenv("GATECAST_DATA_DIR", t.TempDir())
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantURL func(n *Node) string
	}{
		{"loopback, another port", nil, func(n *Node) string { return "http://" + n.AdminAddr() }},
		{"every interface", func(c *Config) { c.AdminListen = "0.0.0.0:0" }, func(n *Node) string {
			_, port, _ := net.SplitHostPort(n.AdminAddr())
			return "http://127.0.0.1:" + port
		}},
		{"every interface, named hosts only", func(c *Config) {
			c.AdminListen = "0.0.0.0:0"
			c.AdminAllowedHosts = "gatecast.example"
		}, func(n *Node) string { return "http://" + n.AdminAddr() }}, // its own address is always answered
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mutate []func(*Config)
			if tc.mutate != nil {
				mutate = append(mutate, tc.mutate)
			}
			n := startNode(t, mutate...)
			banner, cmds, key := bannerCommands(t, n.Node)
			want := tc.wantURL(n.Node)
			if want == admin.DefaultAdminURL {
				t.Skip("the kernel chose the default admin port")
			}
			if !strings.Contains(banner, "Admin API:                  "+want+" ") ||
				!strings.Contains(banner, "curl -H \"Authorization: Bearer $GATECAST_ADMIN_KEY\" "+want+"/api/v1/connections") {
				t.Errorf("the banner does not name %s:\n%s", want, banner)
			}
			t.Setenv("GATECAST_ADMIN_KEY", key)
			for _, args := range cmds {
				if len(args) < 2 || args[0] != "--admin-url" || args[1] != want {
					t.Fatalf("banner command %q lacks --admin-url %s:\n%s", args, want, banner)
				}
				var out, errOut bytes.Buffer
				if code := admin.RunCLI(context.Background(), args, &out, &errOut); code != 0 {
					t.Fatalf("gatecast %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
				}
			}
			tok, err := n.store.GetToken(context.Background(), 1)
			if err != nil || tok.Name != "demo" {
				t.Fatalf("the banner's token create did not reach this node: %+v %v", tok, err)
			}
			grants, err := n.store.ListGrants(context.Background(), 1)
			if err != nil || len(grants) != 1 {
				t.Fatalf("the banner's grant did not reach this node: %+v %v", grants, err)
			}
		})
	}
}

// On the CLI's default admin address the commands stay short.
func TestBannerDefaultAdminAddress(t *testing.T) {
	started := startNode(t)
	// the started node's listeners, but an admin listener that says it is
	// on the default address (which another process may hold)
	n := &Node{cfg: started.cfg, ws: started.ws, mqttLn: started.mqttLn, keyPath: started.keyPath,
		adminLn: addrListener{started.adminLn, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8081}}}
	if "http://"+n.AdminAddr() != admin.DefaultAdminURL {
		t.Fatalf("the test's default address %s is not the CLI's %s", n.AdminAddr(), admin.DefaultAdminURL)
	}
	banner, cmds, _ := bannerCommands(t, n)
	if strings.Contains(banner, "--admin-url") || cmds[0][0] != "token" || cmds[1][0] != "grant" {
		t.Fatalf("banner on the default admin address:\n%s", banner)
	}
	if !strings.Contains(banner, "/metrics, /healthz:         http://127.0.0.1:8081/metrics   (no key needed)") {
		t.Fatalf("the banner does not say /metrics needs no key:\n%s", banner)
	}
}

// addrListener reports another address than the listener it wraps.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l addrListener) Addr() net.Addr { return l.addr }
