package seedimport

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gatecast/gatecast/acl"
	"github.com/gatecast/gatecast/acl/postgres"
	"github.com/gatecast/gatecast/acl/sqlite"
)

// sqliteFile is the embedded store's file in the data directory, as
// `gatecast serve` names it.
const sqliteFile = "gatecast.db"

const usage = `Usage: gatecast import seed --from SOURCE [--store DSN | --data-dir DIR] [--dry-run] [--json]

Imports the seed's database (tokens, tags, permissions of the Django broker
Gatecast replaces) into Gatecast's store. Secrets are hashed on the way in;
names, limits, tags and permissions are kept. A second run imports nothing
new and says so; a token deleted or rotated in Gatecast since it was
imported is not re-created. Tokens whose secret is weak (shorter than 16
characters, or repetitive) are imported, so that devices keep working, and
listed: rotate them (gatecast token rotate ID).

  --from SOURCE   the seed's database: sqlite:PATH (its db.sqlite3, opened
                  read-only) or a postgres:// URL
  --store DSN     Gatecast's store: a postgres:// URL (the cluster's store; nodes
                  may be running), or empty for the embedded SQLite database in
                  --data-dir (env GATECAST_STORE, as for gatecast serve)
  --data-dir DIR  the data directory of the embedded store (env GATECAST_DATA_DIR,
                  default ./data)
  --dry-run       read both databases and print what would change; write nothing
  --json          print the report as JSON

Exit status: 0 done (or nothing to do), 1 the import failed (what was
created before the failure stays; run it again), 2 wrong usage.
`

// RunCLI runs "gatecast import ARGS" (args without "import") and returns the
// exit code. It opens Gatecast's store itself (with the settings of
// gatecast serve), so it works with or without a running node.
func RunCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runCLI(ctx, args, stdout, stderr, os.Getenv)
}

func runCLI(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 || (args[0] != "seed" && !isHelp(args[0])) {
		fmt.Fprint(stderr, "gatecast import: the only source is \"seed\"\n\n"+usage)
		return 2
	}
	if isHelp(args[0]) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	fs := flag.NewFlagSet("gatecast import seed", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	from := fs.String("from", "", "")
	storeDSN := fs.String("store", getenv("GATECAST_STORE"), "")
	dataDir := fs.String("data-dir", envOr(getenv, "GATECAST_DATA_DIR", "./data"), "")
	dry := fs.Bool("dry-run", false, "")
	asJSON := fs.Bool("json", false, "")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "gatecast import seed: %v\n\n%s", err, usage)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gatecast import seed: unexpected argument %q\n\n%s", fs.Arg(0), usage)
		return 2
	}
	if *from == "" {
		fmt.Fprint(stderr, "gatecast import seed: --from is required\n\n"+usage)
		return 2
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	seed, err := Read(rctx, *from)
	if err != nil {
		fmt.Fprintf(stderr, "gatecast import seed: %v\n", err)
		return 1
	}
	store, into, err := openStore(rctx, *storeDSN, *dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "gatecast import seed: opening Gatecast's store %s: %v\n", into, err)
		return 1
	}
	defer store.Close()
	rep, err := Run(ctx, store, seed, Options{DryRun: *dry, From: Redact(*from), Client: "gatecast import seed"})
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if rep != nil {
			enc.Encode(rep)
		}
	} else if rep != nil {
		WriteText(stdout, rep, into)
	}
	if err != nil {
		fmt.Fprintf(stderr, "gatecast import seed: %v\n", err)
		return 1
	}
	return 0
}

func isHelp(s string) bool { return s == "help" || s == "-h" || s == "-help" || s == "--help" }

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// openStore opens Gatecast's store as gatecast serve does: Postgres when
// dsn is set, else the SQLite file in dataDir (created if need be). The
// schema is migrated if it is older.
func openStore(ctx context.Context, dsn, dataDir string) (acl.Store, string, error) {
	if dsn != "" {
		into := Redact(dsn)
		s, err := postgres.Open(ctx, dsn)
		return s, into, err
	}
	path := filepath.Join(dataDir, sqliteFile)
	s, err := sqlite.Open(path)
	if err != nil {
		return nil, "sqlite:" + path, err
	}
	return s, "sqlite:" + path, nil
}

// WriteText prints a report for people: the counts, then every row that
// is not already in Gatecast as the seed has it, then the weak secrets.
func WriteText(w io.Writer, rep *Report, into string) {
	verb := "imported"
	if rep.DryRun {
		verb = "would import"
		fmt.Fprintln(w, "dry run: nothing is written")
	}
	fmt.Fprintf(w, "seed %s → Gatecast %s\n", rep.From, into)
	c := rep.Counts
	fmt.Fprintf(w, "  tokens:      %d new, %d present, %d differ, %d skipped\n", c["tokens_new"], c["tokens_present"], c["tokens_differs"], c["tokens_skipped"])
	fmt.Fprintf(w, "  tags:        %d new, %d present, %d skipped\n", c["tags_new"], c["tags_present"], c["tags_skipped"])
	fmt.Fprintf(w, "  permissions: %d new, %d present, %d differ, %d skipped\n", c["permissions_new"], c["permissions_present"], c["permissions_differs"], c["permissions_skipped"])

	var lines []string
	for _, t := range rep.Tokens {
		if t.Outcome == Present {
			continue
		}
		l := fmt.Sprintf("  token %q (seed id %d): %s", t.Name, t.SeedID, outcomeText(t.Outcome, rep.DryRun))
		if t.TokenID != 0 {
			l += fmt.Sprintf(" as token %d", t.TokenID)
		}
		if t.WeakSecret {
			l += " [weak secret: rotate]"
		}
		if t.Reason != "" {
			l += ": " + t.Reason
		}
		lines = append(lines, l)
		for _, n := range t.Notes {
			lines = append(lines, "      "+n)
		}
	}
	for _, t := range rep.Tags {
		if t.Outcome == Present {
			continue
		}
		l := fmt.Sprintf("  tag %q (seed id %d): %s", t.Pattern, t.SeedID, outcomeText(t.Outcome, rep.DryRun))
		if t.TagID != 0 {
			l += fmt.Sprintf(" as tag %d", t.TagID)
		}
		if t.Reason != "" {
			l += ": " + t.Reason
		}
		lines = append(lines, l)
	}
	for _, p := range rep.Permissions {
		if p.Outcome == Present {
			continue
		}
		l := fmt.Sprintf("  permission %s of seed token %d on seed tag %d", p.Permission, p.SeedTokenID, p.SeedTagID)
		if p.Pattern != "" {
			l += fmt.Sprintf(" (%q)", p.Pattern)
		}
		l += ": " + outcomeText(p.Outcome, rep.DryRun)
		if p.Reason != "" {
			l += ": " + p.Reason
		}
		lines = append(lines, l)
		for _, n := range p.Notes {
			lines = append(lines, "      "+n)
		}
	}
	if len(lines) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, strings.Join(lines, "\n"))
	}
	if len(rep.WeakSecrets) > 0 {
		fmt.Fprintf(w, "\n%d token(s) with a weak secret: they authenticate, but anyone who can read the store (or guess) can find them. Rotate each (gatecast token rotate ID) and update its devices:\n", len(rep.WeakSecrets))
		for _, t := range rep.WeakSecrets {
			id := "new"
			if t.TokenID != 0 {
				id = fmt.Sprintf("token %d", t.TokenID)
			}
			size := ""
			if t.SecretLen > 0 {
				size = fmt.Sprintf(", %d characters", t.SecretLen)
			}
			fmt.Fprintf(w, "  %s %q (seed id %d)%s\n", id, t.Name, t.SeedID, size)
		}
	}
	if len(rep.Deferred) > 0 && !rep.DryRun {
		fmt.Fprintf(w, "\ntokens %s existed before and gained permissions: their live sessions get them when they reconnect (in a cluster, at the latest at the next reconcile)\n", joinIDs(rep.Deferred))
	}
	fmt.Fprintln(w)
	switch {
	case rep.Changes == 0:
		fmt.Fprintln(w, "nothing to import: everything importable in the seed is already in Gatecast")
	case rep.DryRun:
		fmt.Fprintf(w, "%s %d row(s); run without --dry-run to write them\n", verb, rep.Changes)
	default:
		fmt.Fprintf(w, "%s %d row(s); audit log entry %d\n", verb, rep.Changes, rep.AuditID)
	}
}

func outcomeText(outcome string, dry bool) string {
	switch outcome {
	case New:
		if dry {
			return "would be created"
		}
		return "created"
	case Differs:
		return "present with other values (Gatecast's kept)"
	case Skipped:
		return "skipped"
	}
	return outcome
}

func joinIDs(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ", ")
}
