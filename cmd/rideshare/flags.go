package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/rideshare/rideshare/orchestrator"
)

// newFlags returns a flag set for one subcommand with a usage text that lists the
// environment variable of every flag.
func newFlags(name, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet("rideshare "+name, flag.ContinueOnError)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: rideshare %s [flags]\n\n%s\n\nFlags (each also read from the environment variable shown; a flag wins):\n", name, summary)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(out, "  --%s  [%s]%s\n      %s\n", f.Name, envName(f.Name), def, f.Usage)
		})
	}
	return fs
}

// envName is the environment variable of a flag: --scale-interval → RIDESHARE_SCALE_INTERVAL.
func envName(flagName string) string {
	return "RIDESHARE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse parses args, then fills every flag not given on the command line from its
// environment variable.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
			}
		}
	})
	return err
}

// newLogger returns a JSON logger at the given level.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// maxSlavesFlag is --max-slaves: a number, or "auto" (orchestrator.AutoMax).
type maxSlavesFlag int

func (m *maxSlavesFlag) String() string {
	if m == nil || int(*m) == orchestrator.AutoMax {
		return "auto"
	}
	return strconv.Itoa(int(*m))
}

func (m *maxSlavesFlag) Set(v string) error {
	if v == "auto" {
		*m = orchestrator.AutoMax
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("want auto or a number of slaves (0: no limit), not %q", v)
	}
	*m = maxSlavesFlag(n)
	return nil
}
