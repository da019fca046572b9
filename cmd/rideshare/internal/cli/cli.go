// Package cli is the rideshare command's wiring: one function per subcommand that turns its
// flags into a configuration and calls the package that does the work (system, bench,
// status, backup). Nothing here is tested that is not also reachable through Main, which the
// end-to-end tests call the way a shell would.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rideshare/rideshare/cmd/rideshare/bench"
	"github.com/rideshare/rideshare/cmd/rideshare/system"
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
  chaos         its own stack under load and faults, then the guarantees checked (linearizability, …)

Run 'rideshare <command> --help' for a command's flags.
`

// commands are the subcommands, by name.
var commands = map[string]func(context.Context, []string) error{
	"up":           cmdUp,
	"worker":       system.WorkerMain,
	"orchestrator": cmdOrchestrator,
	"users":        cmdUsers,
	"rides":        cmdRides,
	"gateway":      cmdGateway,
	"bench":        bench.Main,
	"status":       cmdStatus,
	"backup":       cmdBackup,
	"restore":      cmdRestore,
	"chaos":        cmdChaos,
}

// Main runs the command line args (without the program name) until SIGINT or SIGTERM and
// returns the exit status: 0, 1 when the command failed (the error is printed), 2 for a
// command line that names no command.
func Main(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if _, ok := commands[args[0]]; !ok {
		fmt.Fprintf(os.Stderr, "rideshare: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "rideshare %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// Run runs the subcommand args[0] with the flags args[1:] until ctx ends.
func Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("no command")
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd(ctx, args[1:])
}
