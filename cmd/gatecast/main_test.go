package main

import (
	"bytes"
	"strings"
	"testing"
)

// A mistyped command gets one line naming the closest command, exit 2,
// not the whole help; "gatecast help X" describes X.
func TestUnknownCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tokn", "list"}, `gatecast: unknown command "tokn"; did you mean "token"?`},
		{[]string{"srve"}, `gatecast: unknown command "srve"; did you mean "serve"?`},
		{[]string{"imprt", "seed"}, `gatecast: unknown command "imprt"; did you mean "import"?`},
		{[]string{"loadtst", "idle"}, `gatecast: unknown command "loadtst"; did you mean "loadtest"?`},
		{[]string{"publsh", "a", "b"}, `gatecast: unknown command "publsh"; did you mean "publish"?`},
		{[]string{"nodes", "list"}, `gatecast: unknown command "nodes"; did you mean "node"?`},
		{[]string{"frobnicate"}, `gatecast: unknown command "frobnicate"` + "\n"},
		{[]string{"help", "tokn"}, `gatecast: unknown command "tokn"; did you mean "token"?`},
		// after global admin flags the admin CLI judges the command
		{[]string{"--admin-url", "http://127.0.0.1:1", "tokn", "list"}, `gatecast: unknown command "tokn"; did you mean "token"?`},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != 2 || out.Len() != 0 || !strings.HasPrefix(errOut.String(), tc.want) ||
			!strings.HasSuffix(errOut.String(), "Run \"gatecast help\" for the commands.\n") || strings.Contains(errOut.String(), "Usage:") {
			t.Errorf("%v: exit %d, want 2 and %q\nstdout: %s\nstderr: %s", tc.args, code, tc.want, out.String(), errOut.String())
		}
	}
	for args, want := range map[string]string{
		"help token": "Usage: gatecast token SUBCOMMAND", "help node": "Usage: gatecast node SUBCOMMAND",
		"help admin": "Admin commands", "help serve": `Run "gatecast serve --help"`,
		"help bench": `Run "gatecast bench compare --help"`, "help import": `Run "gatecast import seed --help"`,
		"help": "Usage:\n  gatecast serve", "help help": "Usage:\n  gatecast serve",
	} {
		var out, errOut bytes.Buffer
		if code := run(strings.Fields(args), &out, &errOut); code != 0 || !strings.Contains(out.String(), want) || errOut.Len() != 0 {
			t.Errorf("gatecast %s: exit %d, want 0 and %q\nstdout: %s\nstderr: %s", args, code, want, out.String(), errOut.String())
		}
	}
}
