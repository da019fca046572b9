// Command rideshare is the RideShare backend and its database as a service in one binary:
// `rideshare up` runs everything on one machine; the other subcommands run one component each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

const usage = `rideshare: a ride-sharing API on a replicated database service.

Usage: rideshare <command> [flags]

Commands:
  up            everything on one machine: gateway, users, rides, orchestrator with embedded
                NATS JetStream, workers as child processes (nothing else to install)
  gateway       the path router standing in for the cloud load balancer
  users         the users API
  rides         the rides API
  orchestrator  the database API, worker supervision, embedded NATS JetStream
  worker        one database worker (started by the orchestrator)
  status        the workers, the sync log head and recent events, as a table
  backup        save a consistent copy of the database
  restore       start a new deployment's data directory from a backup
  bench         load and failover measurements against a running system

Run 'rideshare <command> --help' for a command's flags.
`

// defaultGOGC is the garbage collector's target unless GOGC is set, for every command but
// worker. Every request allocates short-lived buffers in each of several hops while the live
// heap stays a few tens of MiB, so collecting at 4x the live heap instead of 2x frees a tenth
// of the CPU under load for a few tens of MiB more memory (docs/BENCHMARKS.md). Workers keep
// Go's default: their memory is bounded (issue 7: 1,000,000 rides in under 200 MiB) and
// SQLite, not garbage collection, is most of their CPU.
const defaultGOGC = 400

func main() {
	if os.Getenv("GOGC") == "" && (len(os.Args) < 2 || os.Args[1] != "worker") {
		debug.SetGCPercent(defaultGOGC)
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmds := map[string]func(context.Context, []string) error{
		"up":           cmdUp,
		"worker":       cmdWorker,
		"orchestrator": cmdOrchestrator,
		"users":        cmdUsers,
		"rides":        cmdRides,
		"gateway":      cmdGateway,
		"bench":        cmdBench,
		"status":       cmdStatus,
		"backup":       cmdBackup,
		"restore":      cmdRestore,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "rideshare: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd(ctx, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "rideshare %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
