package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/broker"
)

// cliRun runs the CLI against the fixture's server with a clean
// environment plus env, and returns exit code, stdout and stderr.
func (f *fixture) cliRun(env map[string]string, args ...string) (int, string, string) {
	f.t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := runCLI(context.Background(), args, &out, &errOut, getenv)
	return code, out.String(), errOut.String()
}

// cli runs a command that must succeed, with --admin-url/--admin-key.
func (f *fixture) cli(args ...string) string {
	f.t.Helper()
	full := append([]string{"--admin-url", f.srv.URL, "--admin-key", testKey}, args...)
	code, out, errOut := f.cliRun(nil, full...)
	if code != 0 {
		f.t.Fatalf("gatecast %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// cliFail runs a command that must fail with the exit code.
func (f *fixture) cliFail(want int, args ...string) string {
	f.t.Helper()
	full := append([]string{"--admin-url", f.srv.URL, "--admin-key", testKey}, args...)
	code, out, errOut := f.cliRun(nil, full...)
	if code != want {
		f.t.Fatalf("gatecast %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errOut)
	}
	return errOut
}

func TestCLITokenCommands(t *testing.T) {
	f := newFixture(t)
	out := f.cli("token", "create", "--name", "fleet", "--max-connections", "5")
	var secret string
	for _, line := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(line, "secret: "); ok {
			secret = s
		}
	}
	if !strings.Contains(out, `created token 1 "fleet"`) || !strings.HasPrefix(secret, acl.SecretPrefix) {
		t.Fatalf("create output:\n%s", out)
	}
	if tok, err := f.store.GetTokenByHash(t.Context(), acl.HashSecret([]byte(secret))); err != nil || tok.MaxConnections != 5 {
		t.Fatalf("the printed secret does not open token 1: %+v %v", tok, err)
	}

	// --json on create (after the command) and globally
	var created Token
	if err := json.Unmarshal([]byte(f.cli("token", "create", "--name", "second", "--json")), &created); err != nil || created.Secret == "" || created.ID != 2 {
		t.Fatalf("create --json: %+v %v", created, err)
	}
	var list []Token
	if err := json.Unmarshal([]byte(f.cli("--json", "token", "list")), &list); err != nil || len(list) != 2 {
		t.Fatalf("list --json: %+v %v", list, err)
	}
	table := f.cli("token", "list")
	if !strings.Contains(table, "MAX_CONNECTIONS") || !strings.Contains(table, "fleet") || !strings.Contains(table, "unlimited") ||
		strings.Contains(table, secret) {
		t.Fatalf("list table:\n%s", table)
	}

	// update: flags after the id, by name too; rights are refreshed
	f.enf.takeCalls()
	out = f.cli("token", "update", "1", "--disabled=true", "--max-connections", "2")
	if !strings.Contains(out, "disabled: yes") || !strings.Contains(out, "max connections: 2") {
		t.Fatalf("update output: %s", out)
	}
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{1}}) {
		t.Fatalf("update refreshed %v", calls)
	}
	f.cli("token", "update", "--disabled=false", "fleet")
	if tok, _ := f.store.GetToken(t.Context(), 1); tok.Disabled || tok.MaxConnections != 2 {
		t.Fatalf("after update by name: %+v", tok)
	}
	f.cli("token", "update", "fleet", "--name", "fleet-renamed")

	// rotate prints a new secret that works, the old one stops
	out = f.cli("token", "rotate", "fleet-renamed")
	var rotated string
	for _, line := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(line, "secret: "); ok {
			rotated = s
		}
	}
	if rotated == "" || rotated == secret {
		t.Fatalf("rotate output: %s", out)
	}
	if _, err := f.store.GetTokenByHash(t.Context(), acl.HashSecret([]byte(secret))); !errors.Is(err, acl.ErrNotFound) {
		t.Fatal("the old secret still works")
	}

	// import of an existing secret, from a file so it is not on the command line
	file := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(file, []byte("seed-token-0123456789\n"), 0o600)
	out = f.cli("token", "create", "--name", "imported", "--token-file", file)
	if strings.Contains(out, "seed-token-0123456789") {
		t.Fatalf("an imported secret was printed: %s", out)
	}
	if _, err := f.store.GetTokenByHash(t.Context(), acl.HashSecret([]byte("seed-token-0123456789"))); err != nil {
		t.Fatalf("imported secret: %v", err)
	}
	f.cli("token", "create", "--name", "imported2", "--token", "another-seed-token")
	if _, err := f.store.GetTokenByHash(t.Context(), acl.HashSecret([]byte("another-seed-token"))); err != nil {
		t.Fatalf("imported secret: %v", err)
	}

	// show, delete
	out = f.cli("token", "show", "imported")
	if !strings.Contains(out, `"imported"`) || !strings.Contains(out, "no permissions") {
		t.Fatalf("show: %s", out)
	}
	out = f.cli("token", "delete", "imported")
	if !strings.Contains(out, "deleted token") {
		t.Fatalf("delete: %s", out)
	}
	errOut := f.cliFail(1, "token", "delete", "imported")
	if !strings.Contains(errOut, `no token is named "imported"`) {
		t.Fatalf("delete of a missing name: %s", errOut)
	}
	errOut = f.cliFail(1, "token", "show", "999")
	if !strings.Contains(errOut, "token 999 not found") {
		t.Fatalf("missing id: %s", errOut)
	}
	errOut = f.cliFail(1, "token", "create", "--name", "spaced", "--token", "has space")
	if !strings.Contains(errOut, "printable ASCII without spaces") || strings.Contains(errOut, "HTTP 500") {
		t.Fatalf("secret with a space: %s", errOut)
	}
}

func TestCLIGrantRevokeByNameAndPattern(t *testing.T) {
	f := newFixture(t)
	f.cli("token", "create", "--name", "dev")
	f.enf.takeCalls()

	// a pattern that does not exist yet is created
	out := f.cli("grant", "dev", "sensors/+/temp", "readwrite")
	if !strings.Contains(out, `created tag 1 "sensors/+/temp"`) || !strings.Contains(out, `now has readwrite on "sensors/+/temp"`) {
		t.Fatalf("grant output:\n%s", out)
	}
	gs, _ := f.store.ListGrants(t.Context(), 1)
	if len(gs) != 1 || gs[0].Pattern != "sensors/+/temp" || gs[0].Permission != acl.PermReadWrite {
		t.Fatalf("grants %+v", gs)
	}
	// an existing pattern is reused; a downgrade replaces
	out = f.cli("grant", "1", "sensors/+/temp", "read")
	if strings.Contains(out, "created tag") {
		t.Fatalf("existing pattern recreated: %s", out)
	}
	// by tag id, with --json
	f.cli("tag", "create", "alerts/#")
	var g struct {
		TokenID    int64  `json:"token_id"`
		TagID      int64  `json:"tag_id"`
		Pattern    string `json:"pattern"`
		Permission string `json:"permission"`
		TagCreated bool   `json:"tag_created"`
	}
	if err := json.Unmarshal([]byte(f.cli("grant", "dev", "2", "read", "--json")), &g); err != nil ||
		g.TokenID != 1 || g.TagID != 2 || g.Pattern != "alerts/#" || g.Permission != "read" || g.TagCreated {
		t.Fatalf("grant --json: %+v %v", g, err)
	}
	gs, _ = f.store.ListGrants(t.Context(), 1)
	if len(gs) != 2 || gs[0].Permission != acl.PermRead {
		t.Fatalf("grants %+v", gs)
	}
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{1}, {1}, {1}}) {
		t.Fatalf("grants refreshed %v", calls)
	}

	out = f.cli("token", "show", "dev")
	if !strings.Contains(out, "sensors/+/temp") || !strings.Contains(out, "alerts/#") {
		t.Fatalf("show:\n%s", out)
	}
	out = f.cli("tag", "list")
	if !strings.Contains(out, "PATTERN") || !strings.Contains(out, "alerts/#") {
		t.Fatalf("tag list:\n%s", out)
	}

	// revoke by pattern
	out = f.cli("revoke", "dev", "sensors/+/temp")
	if !strings.Contains(out, "no longer has a permission") {
		t.Fatalf("revoke: %s", out)
	}
	gs, _ = f.store.ListGrants(t.Context(), 1)
	if len(gs) != 1 || gs[0].Pattern != "alerts/#" {
		t.Fatalf("after revoke %+v", gs)
	}
	if calls := f.enf.takeCalls(); !reflect.DeepEqual(calls, [][]int64{{1}}) {
		t.Fatalf("revoke refreshed %v", calls)
	}
	errOut := f.cliFail(1, "revoke", "dev", "sensors/+/temp")
	if !strings.Contains(errOut, "not found") {
		t.Fatalf("second revoke: %s", errOut)
	}
	errOut = f.cliFail(1, "revoke", "dev", "never/seen")
	if !strings.Contains(errOut, `no tag has the pattern "never/seen"`) {
		t.Fatalf("revoke of an unknown pattern: %s", errOut)
	}
	// an invalid pattern is refused by the server, nothing is granted
	errOut = f.cliFail(1, "grant", "dev", "bad/#/pattern", "read")
	if !strings.Contains(errOut, "invalid_value") {
		t.Fatalf("invalid pattern: %s", errOut)
	}
	// ambiguous names are refused
	f.cli("token", "create", "--name", "twin")
	f.cli("token", "create", "--name", "twin")
	errOut = f.cliFail(1, "grant", "twin", "alerts/#", "read")
	if !strings.Contains(errOut, `2 tokens are named "twin"`) {
		t.Fatalf("ambiguous: %s", errOut)
	}

	// tag update and delete by pattern
	f.cli("tag", "update", "alerts/#", "alerts/critical/#")
	if tag, _ := f.store.GetTag(t.Context(), 2); tag.Pattern != "alerts/critical/#" {
		t.Fatalf("tag update: %+v", tag)
	}
	f.cli("tag", "delete", "alerts/critical/#")
	if _, err := f.store.GetTag(t.Context(), 2); !errors.Is(err, acl.ErrNotFound) {
		t.Fatal("tag delete did not delete")
	}
	// a pattern starting with "-" after --
	out = f.cli("tag", "create", "--", "-odd/#")
	if !strings.Contains(out, `"-odd/#"`) {
		t.Fatalf("tag create -- -odd/#: %s", out)
	}
}

func TestCLIConnections(t *testing.T) {
	f := newFixture(t)
	f.cli("token", "create", "--name", "devices")
	since := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.enf.conns = []broker.ConnectionInfo{
		{ID: 11, TokenID: 1, RemoteAddr: "127.0.0.1:5000", Protocol: "seed", Subscriptions: []string{"a/#", "b"}, ConnectedAt: since},
		{ID: 12, TokenID: 2, RemoteAddr: "127.0.0.1:5001", Protocol: "seed", ConnectedAt: since},
	}
	f.enf.kickable[11] = true
	out := f.cli("conn", "list")
	if !strings.Contains(out, "SUBSCRIPTIONS") || !strings.Contains(out, "a/#,b") || !strings.Contains(out, "127.0.0.1:5001") {
		t.Fatalf("conn list:\n%s", out)
	}
	var cs []broker.ConnectionInfo
	if err := json.Unmarshal([]byte(f.cli("conn", "list", "--token", "devices", "--json")), &cs); err != nil || len(cs) != 1 || cs[0].ID != 11 {
		t.Fatalf("conn list --token devices --json: %+v %v", cs, err)
	}
	out = f.cli("conn", "kick", "11")
	if !strings.Contains(out, "kicked connection 11") || !reflect.DeepEqual(f.enf.kicked, []uint64{11}) {
		t.Fatalf("kick: %s (kicked %v)", out, f.enf.kicked)
	}
	errOut := f.cliFail(1, "conn", "kick", "11")
	if !strings.Contains(errOut, "connection 11 not found") {
		t.Fatalf("kick again: %s", errOut)
	}
	f.cliFail(2, "conn", "kick", "eleven")
	f.cliFail(2, "conn", "kick")
}

func TestCLIUsageAndHelp(t *testing.T) {
	f := newFixture(t)
	for _, args := range [][]string{
		{"help"}, {"--help"}, {"-h"}, {"help", "token"}, {"help", "tag"}, {"help", "grant"}, {"help", "revoke"}, {"help", "conn"},
		{"token", "help"}, {"tag", "--help"}, {"conn", "-h"}, {"grant", "help"}, {"revoke", "--help"},
		{"token", "create", "--help"}, {"token", "update", "-h"}, {"tag", "list", "--help"}, {"conn", "list", "-h"},
		{"help", "node"}, {"node", "help"}, {"node", "list", "--help"}, {"conn", "kick", "--help"},
	} {
		code, out, errOut := f.cliRun(nil, args...)
		if code != 0 || !strings.Contains(out, "Usage: gatecast") || errOut != "" {
			t.Errorf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
	}
	for _, args := range [][]string{
		{}, {"token"}, {"tag"}, {"conn"}, {"node"},
		{"token", "create"},                         // --name missing
		{"token", "create", "--name", "x", "extra"}, // stray argument
		{"token", "create", "--name", "x", "--token", "abcdefgh", "--token-file", "f"},
		{"token", "update", "1"}, // nothing to update
		{"token", "update"},
		{"token", "rotate", "1", "2"},
		{"grant", "dev", "a/#"},
		{"grant", "dev", "a/#", "write"},
		{"revoke", "dev"},
		{"tag", "update", "1"},
		{"--admin-url"},
		{"token", "update", "1", "--max-connections", "many"},
	} {
		code, out, errOut := f.cliRun(nil, args...)
		if code != 2 || !strings.Contains(errOut, "Usage: gatecast") || out != "" {
			t.Errorf("%v: exit %d, want 2 with usage\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
	}
	if n := len(f.enf.takeCalls()); n != 0 {
		t.Fatalf("usage errors reached the server")
	}
	code, _, errOut := f.cliRun(nil, "--admin-url", "ftp://x", "--admin-key", "k", "token", "list")
	if code != 2 || !strings.Contains(errOut, "not an http(s) URL") {
		t.Fatalf("bad URL: exit %d %s", code, errOut)
	}
}

// A mistyped command, subcommand or flag gets one line naming the closest
// one and how to ask for help, not a whole help text (exit 2).
func TestCLITypos(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tokn", "list"}, `unknown command "tokn"; did you mean "token"?` + "\n" + `Run "gatecast help" for the commands.`},
		{[]string{"--admin-url", "http://x", "tga", "list"}, `unknown command "tga"; did you mean "tag"?`},
		{[]string{"grnat", "a", "b", "read"}, `unknown command "grnat"; did you mean "grant"?`},
		{[]string{"nodes", "list"}, `unknown command "nodes"; did you mean "node"?`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"` + "\n"},
		{[]string{"help", "tokens"}, `unknown command "tokens"; did you mean "token"?`},
		{[]string{"token", "lst"}, `unknown token subcommand "lst"; did you mean "list"?` + "\n" + `Run "gatecast token --help".`},
		{[]string{"token", "nope"}, `unknown token subcommand "nope"` + "\n"},
		{[]string{"tag", "delet", "1"}, `unknown tag subcommand "delet"; did you mean "delete"?`},
		{[]string{"conn", "kik", "1"}, `unknown conn subcommand "kik"; did you mean "kick"?`},
		{[]string{"node", "lsit"}, `unknown node subcommand "lsit"; did you mean "list"?`},
		{[]string{"token", "create", "--nmae", "x"}, `unknown flag --nmae; did you mean --name?` + "\n" + `Run "gatecast token create --help".`},
		{[]string{"token", "list", "--bogus"}, `unknown flag --bogus` + "\n"},
		{[]string{"conn", "kick", "1", "--nod", "a"}, `unknown flag --nod; did you mean --node?`},
		{[]string{"--admin-ulr", "http://x", "token", "list"}, `unknown flag --admin-ulr; did you mean --admin-url?` + "\n" + `Run "gatecast help"`},
		{[]string{"--nope", "token", "list"}, `unknown flag --nope` + "\n"},
	} {
		code, out, errOut := f.cliRun(nil, tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "gatecast: "+tc.want) || strings.Contains(errOut, "Usage:") ||
			strings.Count(errOut, "\n") != 2 {
			t.Errorf("%v: exit %d, want 2 and two lines with %q\nstdout: %s\nstderr: %s", tc.args, code, tc.want, out, errOut)
		}
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"token", "tag", "grant", "revoke", "conn", "node", "audit", "publish", "serve", "sub", "pub"}
	for got, want := range map[string]string{
		"tokn": "token", "toekn": "token", "TOKEN": "token", "tga": "tag", "tg": "tag", "revok": "revoke", "cnn": "conn",
		"nod": "node", "publsh": "publish", "pubilsh": "publish", "aud": "audit", "srve": "serve", "subb": "sub",
		"frobnicate": "", "x": "", "": "", "tokenize": "", "pu": "pub",
	} {
		if s := Suggest(got, known); s != want {
			t.Errorf("Suggest(%q) = %q, want %q", got, s, want)
		}
	}
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"tokn", "token", 1}, {"toekn", "token", 1}, {"kitten", "sitting", 3}, {"ca", "abc", 3}} {
		if d := editDistance(tc.a, tc.b); d != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, d, tc.d)
		}
	}
}

// In cluster mode conn list names each connection's node, conn kick takes
// --node for an id that several nodes hold (the API's 409 says so in CLI
// terms), and node list lists the nodes.
func TestCLIClusterConnectionsAndNodes(t *testing.T) {
	c := newCluster(t, "node-a", "node-b")
	a, b := c.nodes["node-a"], c.nodes["node-b"]
	a.enf.setConns([]broker.ConnectionInfo{conn(7, 1), conn(8, 1)})
	b.enf.setConns([]broker.ConnectionInfo{conn(7, 2)})
	a.enf.kickable[7], a.enf.kickable[8], b.enf.kickable[7] = true, true, true

	out := a.cli("conn", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NODE ") || !strings.HasPrefix(lines[1], "node-a  7 ") ||
		!strings.HasPrefix(lines[3], "node-b  7 ") {
		t.Fatalf("conn list in cluster mode:\n%s", out)
	}
	var cs []Connection
	if err := json.Unmarshal([]byte(a.cli("conn", "list", "--json")), &cs); err != nil || len(cs) != 3 || cs[2].Node != "node-b" {
		t.Fatalf("conn list --json: %+v %v", cs, err)
	}

	errOut := a.cliFail(1, "conn", "kick", "7")
	if !strings.Contains(errOut, "connection 7 exists on nodes node-a, node-b") || !strings.Contains(errOut, "gatecast conn kick 7 --node NODE") ||
		strings.Contains(errOut, "?node=") {
		t.Fatalf("kick of an id two nodes hold: %s", errOut)
	}
	if len(a.enf.kicked)+len(b.enf.kicked) != 0 {
		t.Fatal("an ambiguous kick closed something")
	}
	out = a.cli("conn", "kick", "7", "--node", "node-b") // through node-a, on node-b
	if !strings.Contains(out, "kicked connection 7 on node node-b") || !slices.Equal(b.enf.kicked, []uint64{7}) || len(a.enf.kicked) != 0 {
		t.Fatalf("kick --node node-b: %s (a kicked %v, b kicked %v)", out, a.enf.kicked, b.enf.kicked)
	}
	out = b.cli("conn", "kick", "--node=node-a", "7", "--json")
	var kicked map[string]any
	if err := json.Unmarshal([]byte(out), &kicked); err != nil || kicked["node"] != "node-a" || kicked["kicked"] != true ||
		!slices.Equal(a.enf.kicked, []uint64{7}) {
		t.Fatalf("kick --node=node-a --json: %s %v (a kicked %v)", out, err, a.enf.kicked)
	}
	out = a.cli("conn", "kick", "8") // one holder: no --node needed
	if !strings.Contains(out, "kicked connection 8 (closed") || !slices.Equal(a.enf.kicked, []uint64{7, 8}) {
		t.Fatalf("kick 8: %s (a kicked %v)", out, a.enf.kicked)
	}
	if errOut := a.cliFail(1, "conn", "kick", "9", "--node", "node-b"); !strings.Contains(errOut, "connection 9 not found") {
		t.Fatalf("kick of an unknown id: %s", errOut)
	}
	if errOut := a.cliFail(2, "conn", "kick", "9", "--node", ""); !strings.Contains(errOut, "--node needs a node id") {
		t.Fatalf("kick --node '': %s", errOut)
	}

	// node list: a single node lists itself; a cluster node every node
	out = a.cli("node", "list")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "NODE    CONNECTIONS  WS") ||
		!strings.HasPrefix(lines[1], "node-a  2 ") { // the fake enforcer still lists kicked sessions
		t.Fatalf("node list without a registry:\n%s", out)
	}
	started := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	reg := newFixture(t, func(cfg *Config) {
		cfg.Nodes = func(context.Context) (any, error) {
			return []map[string]any{
				{"id": "node-a", "ws_addr": "10.0.0.1:8080", "admin_addr": "10.0.0.1:8081", "version": "v1.2", "started_at": started,
					"connections": 1200, "expires_at": started.Add(time.Hour), "future_field": 1},
				{"id": "node-b", "ws_addr": "10.0.0.2:8080", "admin_addr": "10.0.0.2:8081", "started_at": started, "connections": 3,
					"expires_at": started.Add(time.Hour)},
			}, nil
		}
	})
	out = reg.cli("node", "list")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "NODE") || !strings.Contains(lines[0], "EXPIRES") ||
		!strings.Contains(lines[1], "node-a  1200") || !strings.Contains(lines[1], "10.0.0.1:8081") || !strings.Contains(lines[1], "2025-03-01T12:00:00Z") ||
		!strings.Contains(lines[2], "node-b") || !strings.Contains(lines[2], " - ") {
		t.Fatalf("node list:\n%s", out)
	}
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(reg.cli("--json", "node", "list")), &nodes); err != nil || len(nodes) != 2 || nodes[0]["future_field"] != 1.0 {
		t.Fatalf("node list --json: %v %v", nodes, err)
	}
	down := newFixture(t, func(cfg *Config) {
		cfg.Nodes = func(context.Context) (any, error) { return nil, errors.New("redis: connection refused") }
	})
	if errOut := down.cliFail(1, "node", "list"); !strings.Contains(errOut, "registry is unavailable") {
		t.Fatalf("node list, registry down: %s", errOut)
	}
}

// URL and key come from the environment, the key from the data directory
// when not given.
func TestCLIConfigSources(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "admin.key"), []byte(testKey+"\n"), 0o600)

	code, out, errOut := f.cliRun(map[string]string{"GATECAST_ADMIN_URL": f.srv.URL, "GATECAST_DATA_DIR": dir}, "tag", "create", "env/#")
	if code != 0 || !strings.Contains(out, "env/#") {
		t.Fatalf("env URL + key file: exit %d %s %s", code, out, errOut)
	}
	code, _, errOut = f.cliRun(map[string]string{"GATECAST_ADMIN_URL": f.srv.URL}, "--data-dir", dir, "tag", "list")
	if code != 0 {
		t.Fatalf("--data-dir: exit %d %s", code, errOut)
	}
	code, _, errOut = f.cliRun(map[string]string{"GATECAST_ADMIN_URL": f.srv.URL, "GATECAST_ADMIN_KEY": testKey}, "tag", "list")
	if code != 0 {
		t.Fatalf("GATECAST_ADMIN_KEY: exit %d %s", code, errOut)
	}
	// the flag wins over the environment
	code, _, errOut = f.cliRun(map[string]string{"GATECAST_ADMIN_URL": "http://127.0.0.1:1", "GATECAST_ADMIN_KEY": "wrong-key"},
		"--admin-url", f.srv.URL, "--admin-key", testKey, "tag", "list")
	if code != 0 {
		t.Fatalf("flags over env: exit %d %s", code, errOut)
	}
	// a wrong key: exit 1 with the server's message
	code, _, errOut = f.cliRun(map[string]string{"GATECAST_ADMIN_URL": f.srv.URL, "GATECAST_ADMIN_KEY": "wrong-key"}, "tag", "list")
	if code != 1 || !strings.Contains(errOut, "missing or wrong admin key") {
		t.Fatalf("wrong key: exit %d %s", code, errOut)
	}
	// no key anywhere: exit 1, saying how to give one
	code, _, errOut = f.cliRun(map[string]string{"GATECAST_ADMIN_URL": f.srv.URL, "GATECAST_DATA_DIR": t.TempDir()}, "tag", "list")
	if code != 1 || !strings.Contains(errOut, "GATECAST_ADMIN_KEY") {
		t.Fatalf("no key: exit %d %s", code, errOut)
	}
	// nothing listening: exit 1
	code, _, _ = f.cliRun(map[string]string{"GATECAST_ADMIN_URL": "http://127.0.0.1:1", "GATECAST_ADMIN_KEY": testKey}, "tag", "list")
	if code != 1 {
		t.Fatalf("no server: exit %d", code)
	}
}

// The client turns any error answer, even one not from Gatecast, into an
// *APIError.
func TestClientErrors(t *testing.T) {
	f := newFixture(t)
	_, err := f.client().GetToken(t.Context(), 5)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "not_found" || ae.Message != "token 5 not found" {
		t.Fatalf("GetToken(5): %#v", err)
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway from a proxy", http.StatusBadGateway)
	}))
	defer proxy.Close()
	_, err = (&Client{BaseURL: proxy.URL, Key: "k"}).ListTags(t.Context())
	if !errors.As(err, &ae) || ae.Status != 502 || ae.Code != "http_502" || !strings.Contains(ae.Message, "bad gateway") {
		t.Fatalf("proxy error: %#v", err)
	}
	if err := f.client().Health(t.Context()); err != nil {
		t.Fatalf("health: %v", err)
	}
	// every route through the client, end to end
	c := f.client()
	ctx := t.Context()
	tok, err := c.CreateToken(ctx, CreateTokenRequest{Name: "c", MaxConnections: 1})
	must(t, err)
	tag, err := c.CreateTag(ctx, "c/#")
	must(t, err)
	g, err := c.SetPermission(ctx, tok.ID, tag.ID, "readwrite")
	must(t, err)
	gs, err := c.ListPermissions(ctx, tok.ID)
	must(t, err)
	if !reflect.DeepEqual(gs, []Grant{g}) {
		t.Fatalf("permissions %+v", gs)
	}
	name := "c2"
	upd, err := c.UpdateToken(ctx, tok.ID, UpdateTokenRequest{Name: &name})
	must(t, err)
	if upd.Name != "c2" || upd.MaxConnections != 1 {
		t.Fatalf("update %+v", upd)
	}
	rot, err := c.RotateToken(ctx, tok.ID)
	must(t, err)
	if rot.Secret == "" || rot.Secret == tok.Secret {
		t.Fatal("rotate gave no new secret")
	}
	tag2, err := c.UpdateTag(ctx, tag.ID, "d/#")
	must(t, err)
	got, err := c.GetTag(ctx, tag.ID)
	must(t, err)
	if got != tag2 {
		t.Fatalf("tag %+v vs %+v", got, tag2)
	}
	must(t, c.DeletePermission(ctx, tok.ID, tag.ID))
	must(t, c.DeleteTag(ctx, tag.ID))
	must(t, c.DeleteToken(ctx, tok.ID))
	cs, _, err := c.ListConnections(ctx, 0)
	must(t, err)
	if len(cs) != 0 {
		t.Fatalf("connections %v", cs)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ExampleClient() {
	c := &Client{BaseURL: "http://127.0.0.1:8081", Key: os.Getenv("GATECAST_ADMIN_KEY")}
	ctx := context.Background()
	tok, err := c.CreateToken(ctx, CreateTokenRequest{Name: "sensors", MaxConnections: 100})
	if err != nil {
		fmt.Println(err)
		return
	}
	tag, _ := c.CreateTag(ctx, "sensors/#")
	c.SetPermission(ctx, tok.ID, tag.ID, "readwrite")
	fmt.Println("secret:", tok.Secret)
}
