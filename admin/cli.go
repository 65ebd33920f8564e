package admin

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Defaults of the admin CLI's global flags.
const (
	DefaultAdminURL = "http://127.0.0.1:8081"
	DefaultDataDir  = "./data"
)

const cliUsage = `Usage: gatecast [global flags] COMMAND [arguments]

Admin commands (they call the admin API of a running broker):
  token create --name NAME [--max-connections N] [--token SECRET | --token-file FILE]
  token list
  token show TOKEN
  token update TOKEN [--name NAME] [--max-connections N] [--disabled=true|false]
  token rotate TOKEN
  token delete TOKEN
  tag create PATTERN
  tag list
  tag update TAG PATTERN
  tag delete TAG
  grant TOKEN TAG read|readwrite
  revoke TOKEN TAG
  conn list [--token TOKEN]
  conn kick ID [--node NODE]
  node list
  audit [--token TOKEN] [--tag TAG] [--action ACTION] [--actor ACTOR] [--source SOURCE]
        [--since TIME|DURATION] [--until TIME] [--limit N]
  publish TOPIC MESSAGE | publish --file FILE TOPIC

TOKEN is a token's id or its exact name, TAG a tag's id or its exact pattern;
an argument made only of digits is an id. grant creates a TAG pattern that
does not exist yet.

Global flags (before the command):
  --admin-url URL   admin API address (env GATECAST_ADMIN_URL, default ` + DefaultAdminURL + `)
  --admin-key KEY   admin key (env GATECAST_ADMIN_KEY; prefer the environment, a flag
                    is visible to other local users; default: DATA_DIR/admin.key)
  --data-dir DIR    the broker's data directory, to read admin.key from
                    (env GATECAST_DATA_DIR, default ` + DefaultDataDir + `)
  --json            print JSON instead of tables (also accepted after the command)

"gatecast help COMMAND" or "gatecast COMMAND help" describes one command;
"gatecast COMMAND SUBCOMMAND --help" one subcommand.
Exit status: 0 success, 1 the request failed, 2 wrong usage, 3 the change is
saved but its enforcement on live connections was not confirmed in time
(HTTP 202 pending: it goes on; check with "gatecast conn list").
`

const tokenUsage = `Usage: gatecast token SUBCOMMAND

  token create --name NAME [--max-connections N] [--token SECRET | --token-file FILE]
        create a token and print its secret (shown only this once);
        --max-connections 0 (the default) means unlimited; --token or
        --token-file imports an existing secret (printable ASCII without
        spaces), e.g. from the seed's database; --token-file - reads stdin.
        A secret shorter than 16 characters or repetitive is accepted but
        flagged "weak secret: rotate" (gatecast import seed imports a whole
        seed database)
  token list
        list tokens (never their secrets)
  token show TOKEN
        show a token and its permissions
  token update TOKEN [--name NAME] [--max-connections N] [--disabled=true|false]
        change a token; live connections follow at once (disabling closes
        them with 4002, a lower limit closes the newest with 4004)
  token rotate TOKEN
        replace the secret and print the new one; connections using the
        old one are closed with 4002
  token delete TOKEN
        delete a token and its permissions; its connections are closed with 4002

TOKEN is a token's id or its exact name.
`

const tagUsage = `Usage: gatecast tag SUBCOMMAND

  tag create PATTERN      create a tag (an MQTT-style filter: + one level, # the rest)
  tag list                list tags
  tag update TAG PATTERN  change a tag's pattern; connections whose subscriptions
                          are no longer covered are closed with 4003
  tag delete TAG          delete a tag and every permission on it

TAG is a tag's id or its exact pattern.
`

const grantUsage = `Usage: gatecast grant TOKEN TAG read|readwrite

Gives TOKEN the permission on TAG, replacing any previous one. read allows
subscribing to the topics TAG covers, readwrite also publishing to them.
TOKEN is a token's id or exact name; TAG a tag's id or exact pattern, and a
pattern that does not exist yet is created. A downgrade applies at once to
live connections (their next publish is refused).
`

const revokeUsage = `Usage: gatecast revoke TOKEN TAG

Removes TOKEN's permission on TAG. Live connections whose subscriptions are
no longer covered are closed with 4003.
`

const connUsage = `Usage: gatecast conn SUBCOMMAND

  conn list [--token TOKEN]   list live connections, all or one token's
                              (every page: the API answers at most 1000 a page;
                              in cluster mode with the NODE holding each)
  conn kick ID [--node NODE]  close a connection with 4005; connection ids are
                              per node, so in cluster mode --node names the node
                              when several hold that id (gatecast conn list)
`

const nodeUsage = `Usage: gatecast node SUBCOMMAND

  node list   list the live nodes (cluster mode: every node, with its addresses,
              version, start time, connections and lease expiry; a single node
              lists itself)
`

const auditUsage = `Usage: gatecast audit [--token TOKEN] [--tag TAG] [--action ACTION] [--actor ACTOR]
                      [--source SOURCE] [--since TIME|DURATION] [--until TIME] [--limit N]

Lists the audit log, newest first: every admin write (API, CLI, import) with
its time, credential (admin_key, console:<session>, import — never a secret),
source (cli, api, peer, import), action, target, HTTP status and enforcement
outcome (enforced, pending, unconfirmed, failed, none, deferred).

  --token TOKEN     entries about a token (its id, or exact name if it still exists)
  --tag TAG         entries about a tag (its id, or exact pattern)
  --action ACTION   one action (token.create, permission.delete, publish, import.seed, …),
                    or every action starting with it when it ends with "." (token.)
  --actor ACTOR     admin_key, import, console:<session id>
  --source SOURCE   cli, api, peer, import
  --since TIME      entries at or after TIME (RFC 3339) or this long ago (1h, 30m)
  --until TIME      entries before TIME (RFC 3339)
  --limit N         at most N entries (default 50; 0 = all)
`

// errHelp means help was printed on request: exit 0.
var errHelp = errors.New("help shown")

// usageError is a wrong invocation: its message and help go to stderr,
// exit 2.
type usageError struct {
	msg  string
	help string
}

func (e *usageError) Error() string { return e.msg }

// RunCLI runs one admin command (args without the program name, global
// flags first) and returns the process exit code: 0 success, 1 the request
// failed, 2 wrong usage, 3 a rights change saved whose enforcement on live
// connections was not confirmed in time (202 pending). Output goes to
// stdout, errors to stderr.
func RunCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runCLI(ctx, args, stdout, stderr, os.Getenv)
}

// cli is one invocation's state, used by one goroutine.
type cli struct {
	ctx     context.Context
	stdout  io.Writer
	stderr  io.Writer
	getenv  func(string) string
	url     string
	key     string
	dataDir string
	json    bool
	api     *Client
}

func runCLI(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{ctx: ctx, stdout: stdout, stderr: stderr, getenv: getenv}
	err := c.run(args)
	var ue *usageError
	var pending *PendingChangeError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		sep := "\n\n"
		if strings.HasPrefix(ue.help, "Run ") { // a one-line hint, not a help text
			sep = "\n"
		}
		fmt.Fprintf(stderr, "gatecast: %s%s%s", ue.msg, sep, ue.help)
		return 2
	case errors.As(err, &pending):
		fmt.Fprintf(stderr, "gatecast: warning: %v\n"+
			"gatecast: new connections already get the new rights; live ones follow when the enforcement ends "+
			"(see the broker's log, or check with \"gatecast conn list\")\n", pending)
		return 3
	default:
		fmt.Fprintf(stderr, "gatecast: %v\n", err)
		return 1
	}
}

func (c *cli) run(args []string) error {
	fs := flag.NewFlagSet("gatecast", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.url, "admin-url", envOr(c.getenv, "GATECAST_ADMIN_URL", DefaultAdminURL), "")
	fs.StringVar(&c.key, "admin-key", "", "")
	fs.StringVar(&c.dataDir, "data-dir", envOr(c.getenv, "GATECAST_DATA_DIR", DefaultDataDir), "")
	fs.BoolVar(&c.json, "json", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, cliUsage)
			return errHelp
		}
		return flagError(err, fs, cliUsage, cliHint)
	}
	args = fs.Args()
	if len(args) == 0 {
		return &usageError{"a command is required", cliUsage}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		return c.help(rest)
	case "token":
		return c.token(rest)
	case "tag":
		return c.tag(rest)
	case "grant":
		return c.grant(rest)
	case "revoke":
		return c.revoke(rest)
	case "conn":
		return c.conn(rest)
	case "node":
		return c.node(rest)
	case "audit":
		return c.audit(rest)
	case "publish":
		return c.publish(rest)
	}
	return unknown("command", cmd, Commands, cliHint)
}

// Commands are the admin CLI's commands (cmd/gatecast hands them over).
var Commands = []string{"token", "tag", "grant", "revoke", "conn", "node", "audit", "publish", "help"}

// cliHint replaces the whole help after a mistyped command or global flag.
const cliHint = "Run \"gatecast help\" for the commands.\n"

// helpHint replaces a help text after a typo: how to ask for it.
func helpHint(what string) string {
	return fmt.Sprintf("Run \"gatecast %s --help\".\n", what)
}

// unknown is the usage error for a mistyped command, subcommand or flag:
// one line with the closest known name, not the whole help.
func unknown(what, got string, known []string, help string) error {
	msg := fmt.Sprintf("unknown %s %q", what, got)
	if s := Suggest(got, known); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return &usageError{msg, help}
}

// Suggest returns the known word closest to a mistyped one: the only one
// it starts (3 letters at least), or one at most 1 edit away (2 for words of
// more than 4 letters; a swap of two neighbours is one edit), else "".
func Suggest(got string, known []string) string {
	got = strings.ToLower(got)
	if got == "" {
		return ""
	}
	var prefixed []string
	for _, k := range known {
		if len(got) >= 3 && strings.HasPrefix(k, got) {
			prefixed = append(prefixed, k)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	limit := 1
	if len(got) > 4 {
		limit = 2
	}
	best, bestD := "", limit+1
	for _, k := range known {
		if d := editDistance(got, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance between a and b
// (insertions, deletions, substitutions and swaps of neighbours; bytes).
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// flagError turns the flag package's error into a usage error with help;
// an unknown flag gets the closest known one, and hint instead of help.
func flagError(err error, fs *flag.FlagSet, help, hint string) error {
	name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
	if !ok {
		return &usageError{err.Error(), help}
	}
	var known []string
	fs.VisitAll(func(f *flag.Flag) { known = append(known, f.Name) })
	msg := fmt.Sprintf("unknown flag --%s", name)
	if s := Suggest(name, known); s != "" {
		msg += fmt.Sprintf("; did you mean --%s?", s)
	}
	return &usageError{msg, hint}
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

var helpTexts = map[string]string{
	"token": tokenUsage, "tag": tagUsage, "grant": grantUsage, "revoke": revokeUsage, "conn": connUsage,
	"audit": auditUsage, "publish": publishUsage, "node": nodeUsage,
}

func (c *cli) help(args []string) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(c.stdout, cliUsage)
		return errHelp
	}
	text, ok := helpTexts[args[0]]
	if !ok {
		return unknown("command", args[0], Commands, cliHint)
	}
	fmt.Fprint(c.stdout, text)
	return errHelp
}

// isHelp reports whether a subcommand position asks for help.
func isHelp(s string) bool { return s == "help" || s == "-h" || s == "-help" || s == "--help" }

// flags returns a subcommand's flag set; --json is accepted everywhere.
func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&c.json, "json", c.json, "")
	return fs
}

// parse parses flags anywhere among args (ID before or after flags) and
// checks the number of positional arguments. Everything after "--" is
// positional, so a pattern starting with "-" can be given.
func (c *cli) parse(fs *flag.FlagSet, args []string, help string, minPos, maxPos int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(c.stdout, help)
				return nil, errHelp
			}
			return nil, flagError(err, fs, help, helpHint(fs.Name()))
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < minPos || len(pos) > maxPos {
		want := fmt.Sprintf("%d", minPos)
		if maxPos != minPos {
			want = fmt.Sprintf("%d to %d", minPos, maxPos)
		}
		return nil, &usageError{fmt.Sprintf("%s takes %s argument(s), got %d", fs.Name(), want, len(pos)), help}
	}
	return pos, nil
}

// client builds the API client once: URL from flag/env/default, key from
// flag, then GATECAST_ADMIN_KEY, then DATA_DIR/admin.key.
func (c *cli) client() (*Client, error) {
	if c.api != nil {
		return c.api, nil
	}
	u, err := url.Parse(c.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &usageError{fmt.Sprintf("--admin-url %q is not an http(s) URL such as %s", c.url, DefaultAdminURL), cliUsage}
	}
	key := c.key
	if key == "" {
		key = c.getenv("GATECAST_ADMIN_KEY")
	}
	if key == "" {
		path := filepath.Join(c.dataDir, KeyFileName)
		k, err := readKeyFile(path)
		if err != nil {
			return nil, fmt.Errorf("no admin key: pass --admin-key, set GATECAST_ADMIN_KEY, or point --data-dir at the broker's data directory (%v)", err)
		}
		key = k
	}
	c.api = &Client{BaseURL: c.url, Key: key, UserAgent: cliUserAgent}
	return c.api, nil
}

// ---- token ----

func (c *cli) token(args []string) error {
	if len(args) == 0 {
		return &usageError{"token needs a subcommand", tokenUsage}
	}
	if isHelp(args[0]) {
		fmt.Fprint(c.stdout, tokenUsage)
		return errHelp
	}
	switch args[0] {
	case "create":
		return c.tokenCreate(args[1:])
	case "list":
		return c.tokenList(args[1:])
	case "show", "get":
		return c.tokenShow(args[1:])
	case "update":
		return c.tokenUpdate(args[1:])
	case "rotate":
		return c.tokenRotate(args[1:])
	case "delete":
		return c.tokenDelete(args[1:])
	}
	return unknown("token subcommand", args[0], []string{"create", "list", "show", "update", "rotate", "delete"}, helpHint("token"))
}

func (c *cli) tokenCreate(args []string) error {
	fs := c.flags("token create")
	var req CreateTokenRequest
	var secretFile string
	fs.StringVar(&req.Name, "name", "", "")
	fs.IntVar(&req.MaxConnections, "max-connections", 0, "")
	fs.StringVar(&req.Secret, "token", "", "")
	fs.StringVar(&secretFile, "token-file", "", "")
	if _, err := c.parse(fs, args, tokenUsage, 0, 0); err != nil {
		return err
	}
	if req.Name == "" {
		return &usageError{"token create needs --name", tokenUsage}
	}
	if req.Secret != "" && secretFile != "" {
		return &usageError{"give --token or --token-file, not both", tokenUsage}
	}
	if secretFile != "" {
		s, err := readSecretFile(secretFile)
		if err != nil {
			return err
		}
		req.Secret = s
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	t, err := api.CreateToken(c.ctx, req)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(t)
	}
	fmt.Fprintf(c.stdout, "created token %d %q (max connections: %s)\n", t.ID, t.Name, limitText(t.MaxConnections))
	if req.Secret == "" {
		fmt.Fprintf(c.stdout, "secret: %s\nStore it now: it is not shown again.\n", t.Secret)
	} else {
		fmt.Fprintln(c.stdout, "secret: the one you gave (imported)")
	}
	if t.WeakSecret {
		fmt.Fprintf(c.stderr, "gatecast: warning: %s — the imported secret is short or repetitive; it works, but replace it with \"gatecast token rotate %d\" once its devices can take a new one\n", WeakSecretWarning, t.ID)
	}
	return nil
}

// readSecretFile reads an imported secret from a file or stdin ("-"), so it
// does not appear in the process list.
func readSecretFile(path string) (string, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("--token-file %s is empty", path)
	}
	return s, nil
}

func (c *cli) tokenList(args []string) error {
	fs := c.flags("token list")
	if _, err := c.parse(fs, args, tokenUsage, 0, 0); err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	ts, err := api.ListTokens(c.ctx)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(ts)
	}
	tw := c.table("ID\tNAME\tMAX_CONNECTIONS\tDISABLED\tCREATED\tWARNING")
	for _, t := range ts {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, limitText(t.MaxConnections), yesNo(t.Disabled), t.CreatedAt.UTC().Format(time.RFC3339), t.Warning)
	}
	return tw.Flush()
}

func (c *cli) tokenShow(args []string) error {
	fs := c.flags("token show")
	pos, err := c.parse(fs, args, tokenUsage, 1, 1)
	if err != nil {
		return err
	}
	t, err := c.resolveToken(pos[0])
	if err != nil {
		return err
	}
	gs, err := c.api.ListPermissions(c.ctx, t.ID)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(struct {
			Token
			Permissions []Grant `json:"permissions"`
		}{t, gs})
	}
	fmt.Fprintf(c.stdout, "token %d %q\n  max connections: %s\n  disabled: %s\n  created: %s\n",
		t.ID, t.Name, limitText(t.MaxConnections), yesNo(t.Disabled), t.CreatedAt.UTC().Format(time.RFC3339))
	if t.WeakSecret {
		fmt.Fprintf(c.stdout, "  %s (gatecast token rotate %d)\n", WeakSecretWarning, t.ID)
	}
	if len(gs) == 0 {
		fmt.Fprintln(c.stdout, "  no permissions")
		return nil
	}
	fmt.Fprintln(c.stdout)
	tw := c.table("TAG_ID\tPATTERN\tPERMISSION")
	for _, g := range gs {
		fmt.Fprintf(tw, "%d\t%s\t%s\n", g.TagID, g.Pattern, g.Permission)
	}
	return tw.Flush()
}

func (c *cli) tokenUpdate(args []string) error {
	fs := c.flags("token update")
	var name string
	var maxConns int
	var disabled bool
	fs.StringVar(&name, "name", "", "")
	fs.IntVar(&maxConns, "max-connections", 0, "")
	fs.BoolVar(&disabled, "disabled", false, "")
	pos, err := c.parse(fs, args, tokenUsage, 1, 1)
	if err != nil {
		return err
	}
	var req UpdateTokenRequest
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name":
			req.Name = &name
		case "max-connections":
			req.MaxConnections = &maxConns
		case "disabled":
			req.Disabled = &disabled
		}
	})
	if req.Name == nil && req.MaxConnections == nil && req.Disabled == nil {
		return &usageError{"token update needs --name, --max-connections or --disabled", tokenUsage}
	}
	t, err := c.resolveToken(pos[0])
	if err != nil {
		return err
	}
	t, err = c.api.UpdateToken(c.ctx, t.ID, req)
	pending, err := savedButPending(err)
	if err != nil {
		return err
	}
	if c.json {
		return errors.Join(c.printJSON(t), pending)
	}
	fmt.Fprintf(c.stdout, "updated token %d %q (max connections: %s, disabled: %s)\n", t.ID, t.Name, limitText(t.MaxConnections), yesNo(t.Disabled))
	return pending
}

func (c *cli) tokenRotate(args []string) error {
	fs := c.flags("token rotate")
	pos, err := c.parse(fs, args, tokenUsage, 1, 1)
	if err != nil {
		return err
	}
	t, err := c.resolveToken(pos[0])
	if err != nil {
		return err
	}
	t, err = c.api.RotateToken(c.ctx, t.ID)
	pending, err := savedButPending(err)
	if err != nil {
		return err
	}
	if c.json {
		return errors.Join(c.printJSON(t), pending)
	}
	fmt.Fprintf(c.stdout, "rotated token %d %q; the old secret no longer works\nsecret: %s\nStore it now: it is not shown again.\n", t.ID, t.Name, t.Secret)
	return pending
}

func (c *cli) tokenDelete(args []string) error {
	fs := c.flags("token delete")
	pos, err := c.parse(fs, args, tokenUsage, 1, 1)
	if err != nil {
		return err
	}
	t, err := c.resolveToken(pos[0])
	if err != nil {
		return err
	}
	pending, err := savedButPending(c.api.DeleteToken(c.ctx, t.ID))
	if err != nil {
		return err
	}
	if c.json {
		return errors.Join(c.printJSON(map[string]any{"id": t.ID, "deleted": true}), pending)
	}
	fmt.Fprintf(c.stdout, "deleted token %d %q\n", t.ID, t.Name)
	return pending
}

// ---- tag ----

func (c *cli) tag(args []string) error {
	if len(args) == 0 {
		return &usageError{"tag needs a subcommand", tagUsage}
	}
	if isHelp(args[0]) {
		fmt.Fprint(c.stdout, tagUsage)
		return errHelp
	}
	switch args[0] {
	case "create":
		return c.tagCreate(args[1:])
	case "list":
		return c.tagList(args[1:])
	case "update":
		return c.tagUpdate(args[1:])
	case "delete":
		return c.tagDelete(args[1:])
	}
	return unknown("tag subcommand", args[0], []string{"create", "list", "update", "delete"}, helpHint("tag"))
}

func (c *cli) tagCreate(args []string) error {
	fs := c.flags("tag create")
	pos, err := c.parse(fs, args, tagUsage, 1, 1)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	t, err := api.CreateTag(c.ctx, pos[0])
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(t)
	}
	fmt.Fprintf(c.stdout, "created tag %d %q\n", t.ID, t.Pattern)
	return nil
}

func (c *cli) tagList(args []string) error {
	fs := c.flags("tag list")
	if _, err := c.parse(fs, args, tagUsage, 0, 0); err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	ts, err := api.ListTags(c.ctx)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(ts)
	}
	tw := c.table("ID\tPATTERN")
	for _, t := range ts {
		fmt.Fprintf(tw, "%d\t%s\n", t.ID, t.Pattern)
	}
	return tw.Flush()
}

func (c *cli) tagUpdate(args []string) error {
	fs := c.flags("tag update")
	pos, err := c.parse(fs, args, tagUsage, 2, 2)
	if err != nil {
		return err
	}
	t, err := c.resolveTag(pos[0])
	if err != nil {
		return err
	}
	t, err = c.api.UpdateTag(c.ctx, t.ID, pos[1])
	pending, err := savedButPending(err)
	if err != nil {
		return err
	}
	if c.json {
		return errors.Join(c.printJSON(t), pending)
	}
	fmt.Fprintf(c.stdout, "updated tag %d: %q\n", t.ID, t.Pattern)
	return pending
}

func (c *cli) tagDelete(args []string) error {
	fs := c.flags("tag delete")
	pos, err := c.parse(fs, args, tagUsage, 1, 1)
	if err != nil {
		return err
	}
	t, err := c.resolveTag(pos[0])
	if err != nil {
		return err
	}
	pending, err := savedButPending(c.api.DeleteTag(c.ctx, t.ID))
	if err != nil {
		return err
	}
	if c.json {
		return errors.Join(c.printJSON(map[string]any{"id": t.ID, "deleted": true}), pending)
	}
	fmt.Fprintf(c.stdout, "deleted tag %d %q\n", t.ID, t.Pattern)
	return pending
}

// ---- grant / revoke ----

func (c *cli) grant(args []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(c.stdout, grantUsage)
		return errHelp
	}
	fs := c.flags("grant")
	pos, err := c.parse(fs, args, grantUsage, 3, 3)
	if err != nil {
		return err
	}
	perm := pos[2]
	if perm != "read" && perm != "readwrite" {
		return &usageError{fmt.Sprintf("permission must be read or readwrite, not %q", perm), grantUsage}
	}
	t, err := c.resolveToken(pos[0])
	if err != nil {
		return err
	}
	tag, created, err := c.resolveOrCreateTag(pos[1])
	if err != nil {
		return err
	}
	g, err := c.api.SetPermission(c.ctx, t.ID, tag.ID, perm)
	pending, err := savedButPending(err)
	if err != nil {
		return err
	}
	if c.json {
		return errors.Join(c.printJSON(struct {
			TokenID int64 `json:"token_id"`
			Grant
			TagCreated bool `json:"tag_created"`
		}{t.ID, g, created}), pending)
	}
	if created {
		fmt.Fprintf(c.stdout, "created tag %d %q\n", tag.ID, tag.Pattern)
	}
	fmt.Fprintf(c.stdout, "token %d %q now has %s on %q (tag %d)\n", t.ID, t.Name, g.Permission, g.Pattern, g.TagID)
	return pending
}

func (c *cli) revoke(args []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(c.stdout, revokeUsage)
		return errHelp
	}
	fs := c.flags("revoke")
	pos, err := c.parse(fs, args, revokeUsage, 2, 2)
	if err != nil {
		return err
	}
	t, err := c.resolveToken(pos[0])
	if err != nil {
		return err
	}
	tag, err := c.resolveTag(pos[1])
	if err != nil {
		return err
	}
	pending, err := savedButPending(c.api.DeletePermission(c.ctx, t.ID, tag.ID))
	if err != nil {
		return err
	}
	if c.json {
		return errors.Join(c.printJSON(map[string]any{"token_id": t.ID, "tag_id": tag.ID, "pattern": tag.Pattern, "revoked": true}), pending)
	}
	fmt.Fprintf(c.stdout, "token %d %q no longer has a permission on %q (tag %d)\n", t.ID, t.Name, tag.Pattern, tag.ID)
	return pending
}

// ---- conn ----

func (c *cli) conn(args []string) error {
	if len(args) == 0 {
		return &usageError{"conn needs a subcommand", connUsage}
	}
	if isHelp(args[0]) {
		fmt.Fprint(c.stdout, connUsage)
		return errHelp
	}
	switch args[0] {
	case "list":
		return c.connList(args[1:])
	case "kick":
		return c.connKick(args[1:])
	}
	return unknown("conn subcommand", args[0], []string{"list", "kick"}, helpHint("conn"))
}

func (c *cli) connList(args []string) error {
	fs := c.flags("conn list")
	var tokenArg string
	fs.StringVar(&tokenArg, "token", "", "")
	if _, err := c.parse(fs, args, connUsage, 0, 0); err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	var tokenID int64
	if tokenArg != "" {
		t, err := c.resolveToken(tokenArg)
		if err != nil {
			return err
		}
		tokenID = t.ID
	}
	cs, unreachable, err := api.ListConnections(c.ctx, tokenID)
	if err != nil {
		return err
	}
	if len(unreachable) > 0 {
		fmt.Fprintf(c.stderr, "gatecast: warning: nodes %s did not answer; their connections are not listed\n", strings.Join(unreachable, ", "))
	}
	if cs == nil {
		cs = []Connection{}
	}
	if c.json {
		return c.printJSON(cs)
	}
	cluster := slices.ContainsFunc(cs, func(s Connection) bool { return s.Node != "" })
	header := "ID\tTOKEN\tREMOTE\tPROTOCOL\tCLIENT\tCONNECTED\tSUBSCRIPTIONS"
	if cluster {
		header = "NODE\t" + header
	}
	tw := c.table(header)
	for _, s := range cs {
		if cluster {
			fmt.Fprintf(tw, "%s\t", s.Node)
		}
		client := s.ClientID // MQTT client identifier; "-" for the seed protocol
		if client == "" {
			client = "-"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.TokenID, s.RemoteAddr, s.Protocol, client,
			s.ConnectedAt.UTC().Format(time.RFC3339), strings.Join(s.Subscriptions, ","))
	}
	return tw.Flush()
}

func (c *cli) connKick(args []string) error {
	fs := c.flags("conn kick")
	var node string
	fs.StringVar(&node, "node", "", "")
	pos, err := c.parse(fs, args, connUsage, 1, 1)
	if err != nil {
		return err
	}
	id, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil || id == 0 {
		return &usageError{fmt.Sprintf("connection id %q is not a positive integer", pos[0]), connUsage}
	}
	nodeSet := false
	fs.Visit(func(f *flag.Flag) { nodeSet = nodeSet || f.Name == "node" })
	if nodeSet && node == "" {
		return &usageError{"--node needs a node id (gatecast node list)", connUsage}
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	// DELETE /api/v1/connections/{id}[?node=]: without node the API finds
	// the one node holding that id, and answers 409 when several do.
	path := "/api/v1/connections/" + strconv.FormatUint(id, 10)
	if node != "" {
		path += "?" + url.Values{"node": {node}}.Encode()
	}
	if err := api.do(c.ctx, "DELETE", path, nil, nil); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == 409 && node == "" {
			// the API advises "add ?node=": say it the CLI's way
			msg, _, _ := strings.Cut(ae.Message, "; add ?node=")
			return fmt.Errorf("%s: name the node, e.g. gatecast conn kick %d --node NODE (the NODE column of gatecast conn list)", msg, id)
		}
		return err
	}
	if c.json {
		out := map[string]any{"id": id, "kicked": true}
		if node != "" {
			out["node"] = node
		}
		return c.printJSON(out)
	}
	if node != "" {
		fmt.Fprintf(c.stdout, "kicked connection %d on node %s (closed with 4005)\n", id, node)
	} else {
		fmt.Fprintf(c.stdout, "kicked connection %d (closed with 4005)\n", id)
	}
	return nil
}

// ---- node ----

// nodeInfo is one item of GET /api/v1/nodes (cluster.NodeInfo's JSON; a
// single node answers only id and connections).
type nodeInfo struct {
	ID          string    `json:"id"`
	WSAddr      string    `json:"ws_addr"`
	AdminAddr   string    `json:"admin_addr"`
	Version     string    `json:"version"`
	StartedAt   time.Time `json:"started_at"`
	Connections int       `json:"connections"`
	ExpiresAt   time.Time `json:"expires_at"`
}

func (c *cli) node(args []string) error {
	if len(args) == 0 {
		return &usageError{"node needs a subcommand", nodeUsage}
	}
	if isHelp(args[0]) {
		fmt.Fprint(c.stdout, nodeUsage)
		return errHelp
	}
	if args[0] != "list" {
		return unknown("node subcommand", args[0], []string{"list"}, helpHint("node"))
	}
	fs := c.flags("node list")
	if _, err := c.parse(fs, args[1:], nodeUsage, 0, 0); err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := api.do(c.ctx, "GET", "/api/v1/nodes", nil, &raw); err != nil {
		return err
	}
	var nodes []nodeInfo
	if err := json.Unmarshal(raw, &nodes); err != nil {
		return fmt.Errorf("GET /api/v1/nodes: unexpected answer: %w", err)
	}
	if c.json {
		var v any // every field the broker sent, not only those known here
		_ = json.Unmarshal(raw, &v)
		return c.printJSON(v)
	}
	tw := c.table("NODE\tCONNECTIONS\tWS\tADMIN\tVERSION\tSTARTED\tEXPIRES")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", dash(n.ID), n.Connections, dash(n.WSAddr), dash(n.AdminAddr),
			dash(n.Version), timeText(n.StartedAt), timeText(n.ExpiresAt))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// ---- audit ----

// DefaultAuditCLILimit is how many entries gatecast audit lists by default.
const DefaultAuditCLILimit = 50

func (c *cli) audit(args []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(c.stdout, auditUsage)
		return errHelp
	}
	fs := c.flags("audit")
	var q AuditQuery
	var tokenArg, tagArg, since, until string
	limit := DefaultAuditCLILimit
	fs.StringVar(&tokenArg, "token", "", "")
	fs.StringVar(&tagArg, "tag", "", "")
	fs.StringVar(&q.Action, "action", "", "")
	fs.StringVar(&q.Actor, "actor", "", "")
	fs.StringVar(&q.Source, "source", "", "")
	fs.StringVar(&since, "since", "", "")
	fs.StringVar(&until, "until", "", "")
	fs.IntVar(&limit, "limit", limit, "")
	if _, err := c.parse(fs, args, auditUsage, 0, 0); err != nil {
		return err
	}
	if limit < 0 {
		return &usageError{"--limit must be 0 (all) or more", auditUsage}
	}
	var err error
	if q.Since, err = parseSince(since); err != nil {
		return &usageError{err.Error(), auditUsage}
	}
	if until != "" {
		if q.Until, err = time.Parse(time.RFC3339Nano, until); err != nil {
			return &usageError{fmt.Sprintf("--until %q is not an RFC 3339 time", until), auditUsage}
		}
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	if tokenArg != "" {
		// An id is taken as is: the entries of a deleted token stay listed.
		id, isID, err := parseID(tokenArg)
		if err != nil {
			return err
		}
		if !isID {
			t, err := c.resolveToken(tokenArg)
			if err != nil {
				return err
			}
			id = t.ID
		}
		q.TokenID = id
	}
	if tagArg != "" {
		id, isID, err := parseID(tagArg)
		if err != nil {
			return err
		}
		if !isID {
			t, err := c.resolveTag(tagArg)
			if err != nil {
				return err
			}
			id = t.ID
		}
		q.TagID = id
	}
	es, err := api.ListAudit(c.ctx, q, limit)
	if err != nil {
		return err
	}
	if es == nil {
		es = []AuditEntry{}
	}
	if c.json {
		return c.printJSON(es)
	}
	tw := c.table("ID\tTIME\tACTOR\tSOURCE\tACTION\tTARGET\tSTATUS\tENFORCEMENT")
	for _, e := range es {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.ID, e.At.UTC().Format(time.RFC3339), e.Actor, e.Source,
			e.Action, e.Target, e.Status, e.Enforcement)
	}
	return tw.Flush()
}

// parseSince reads --since: an RFC 3339 time, or a duration before now.
func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("--since %q is neither an RFC 3339 time nor a duration such as 1h", s)
	}
	return time.Now().Add(-d), nil
}

// ---- resolution of TOKEN and TAG arguments ----

// parseID returns the id an all-digit argument names.
func parseID(s string) (int64, bool, error) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false, nil
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, true, &usageError{fmt.Sprintf("%q is not a valid id", s), cliUsage}
	}
	return id, true, nil
}

func (c *cli) resolveToken(arg string) (Token, error) {
	api, err := c.client()
	if err != nil {
		return Token{}, err
	}
	if arg == "" {
		return Token{}, &usageError{"empty token argument", cliUsage}
	}
	id, isID, err := parseID(arg)
	if err != nil {
		return Token{}, err
	}
	if isID {
		return api.GetToken(c.ctx, id)
	}
	ts, err := api.ListTokens(c.ctx)
	if err != nil {
		return Token{}, err
	}
	var found []Token
	for _, t := range ts {
		if t.Name == arg {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 0:
		return Token{}, fmt.Errorf("no token is named %q", arg)
	case 1:
		return found[0], nil
	}
	ids := make([]string, len(found))
	for i, t := range found {
		ids[i] = strconv.FormatInt(t.ID, 10)
	}
	return Token{}, fmt.Errorf("%d tokens are named %q (ids %s); give the id", len(found), arg, strings.Join(ids, ", "))
}

func (c *cli) resolveTag(arg string) (Tag, error) {
	t, found, err := c.findTag(arg)
	if err == nil && !found {
		err = fmt.Errorf("no tag has the pattern %q", arg)
	}
	return t, err
}

// findTag looks a TAG argument up; found is false for a pattern no tag has.
func (c *cli) findTag(arg string) (Tag, bool, error) {
	api, err := c.client()
	if err != nil {
		return Tag{}, false, err
	}
	if arg == "" {
		return Tag{}, false, &usageError{"empty tag argument", cliUsage}
	}
	id, isID, err := parseID(arg)
	if err != nil {
		return Tag{}, false, err
	}
	if isID {
		t, err := api.GetTag(c.ctx, id)
		return t, err == nil, err
	}
	ts, err := api.ListTags(c.ctx)
	if err != nil {
		return Tag{}, false, err
	}
	for _, t := range ts {
		if t.Pattern == arg {
			return t, true, nil
		}
	}
	return Tag{}, false, nil
}

// resolveOrCreateTag finds a TAG argument, creating the pattern if no tag
// has it yet (and looking again if another client created it meanwhile).
func (c *cli) resolveOrCreateTag(arg string) (Tag, bool, error) {
	t, found, err := c.findTag(arg)
	if err != nil || found {
		return t, false, err
	}
	t, err = c.api.CreateTag(c.ctx, arg)
	var ae *APIError
	if errors.As(err, &ae) && ae.Code == codeConflict {
		t, err = c.resolveTag(arg)
		return t, false, err
	}
	return t, err == nil, err
}

// ---- output ----

// savedButPending separates a 202 pending answer from the other errors:
// the change is saved and the call returned its result, so the command
// prints it as usual and then reports the pending enforcement (exit 3).
func savedButPending(err error) (pending, other error) {
	var p *PendingChangeError
	if errors.As(err, &p) {
		return p, nil
	}
	return nil, err
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *cli) table(header string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	return tw
}

func limitText(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return strconv.Itoa(n)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
