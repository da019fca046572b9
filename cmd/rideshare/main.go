// Command rideshare is the RideShare backend and its database as a service in one binary:
// `rideshare up` runs everything on one machine; the other subcommands run one component each
// (internal/cli has the commands, package system what they start).
package main

import (
	"os"
	"runtime/debug"

	"github.com/rideshare/rideshare/cmd/rideshare/internal/cli"
)

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
	os.Exit(cli.Main(os.Args[1:]))
}
