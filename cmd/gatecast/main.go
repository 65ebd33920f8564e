// Command gatecast is the Gatecast broker and its command-line tools. It
// only parses the subcommand and hands over: serving lives in package
// server, the admin CLI in package admin, the test clients in loadtest.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/gatecast/gatecast/acl/seedimport"
	"github.com/gatecast/gatecast/admin"
	"github.com/gatecast/gatecast/bench/compare"
	"github.com/gatecast/gatecast/loadtest"
	"github.com/gatecast/gatecast/server"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `gatecast — WebSocket message broker for IoT fleets

Usage:
  gatecast serve [flags]          run the broker (gatecast serve --help lists every setting)
  gatecast token|tag|grant|revoke|conn|node ...
                                  manage tokens, tags, permissions and connections through the admin API
                                  (gatecast help admin)
  gatecast publish TOPIC MESSAGE  publish from the server to every matching subscriber (admin key)
  gatecast audit [filters]        the audit log of admin writes (gatecast audit --help)
  gatecast import seed --from SOURCE
                                  import the seed's database (tokens, tags, permissions) into the store
                                  (gatecast import seed --help, docs/import.md)
  gatecast sub|pub ...            a small WebSocket client for trying the broker (gatecast sub --help)
  gatecast loadtest SCENARIO ...  fleet simulator against a running broker: connect, idle, telemetry,
                                  command, churn, revoke, mixed, fanout, fanin; hostile clients: flood,
                                  tagstorm, grants (docs/loadtest.md)
  gatecast bench compare ...      the same scenarios against Gatecast, Mosquitto and NATS, side by side
  gatecast version                print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "gatecast", version)
		return 0
	case "help", "-h", "--help":
		if len(args) > 1 {
			return help(ctx, args[1], stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	case "import":
		return seedimport.RunCLI(ctx, args[1:], stdout, stderr)
	case "sub", "pub":
		return loadtest.RunClientCLI(ctx, args, stdout, stderr)
	case "loadtest":
		return loadtest.RunCLI(ctx, args[1:], stdout, stderr)
	case "bench":
		if len(args) < 2 || args[1] != "compare" {
			fmt.Fprintln(stderr, "Usage: gatecast bench compare [flags]   (gatecast bench compare --help)")
			return 2
		}
		return compare.RunCompareCLI(ctx, args[2:], stdout, stderr)
	default:
		// Global admin flags come first (--admin-url …): the admin CLI
		// reads them and judges the command after them.
		if !strings.HasPrefix(args[0], "-") && !slices.Contains(admin.Commands, args[0]) {
			return unknownCommand(args[0], stderr)
		}
		return admin.RunCLI(ctx, args, stdout, stderr)
	}
}

// help answers "gatecast help TOPIC".
func help(ctx context.Context, topic string, stdout, stderr io.Writer) int {
	switch {
	case topic == "help" || strings.HasPrefix(topic, "-"):
		fmt.Fprint(stdout, usage)
		return 0
	case topic == "admin":
		return admin.RunCLI(ctx, []string{"help"}, stdout, stderr)
	case slices.Contains(admin.Commands, topic):
		return admin.RunCLI(ctx, []string{"help", topic}, stdout, stderr)
	case topic == "version":
		fmt.Fprintln(stdout, "gatecast version prints the version.")
		return 0
	case slices.Contains(commands, topic):
		ask := map[string]string{"import": "import seed", "bench": "bench compare"}[topic]
		if ask == "" {
			ask = topic
		}
		fmt.Fprintf(stdout, "Run \"gatecast %s --help\".\n", ask)
		return 0
	}
	return unknownCommand(topic, stderr)
}

// commands are every first word gatecast takes, for suggestions.
var commands = append([]string{"serve", "version", "help", "import", "sub", "pub", "loadtest", "bench"}, admin.Commands...)

// unknownCommand reports a mistyped command in one line with the closest
// one, instead of the whole help, and exits 2.
func unknownCommand(cmd string, stderr io.Writer) int {
	msg := fmt.Sprintf("gatecast: unknown command %q", cmd)
	if s := admin.Suggest(cmd, commands); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	fmt.Fprintf(stderr, "%s\nRun \"gatecast help\" for the commands.\n", msg)
	return 2
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := server.ParseConfig(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "gatecast serve: invalid configuration:", err)
		return 2
	}
	log := server.NewLogger(cfg, stderr)
	if err := server.Run(ctx, cfg, log, stdout); err != nil {
		log.Error("gatecast stopped with an error", "err", err)
		return 1
	}
	return 0
}
