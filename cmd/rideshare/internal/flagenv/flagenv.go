// Package flagenv gives every rideshare subcommand the same flag conventions: a usage text
// that describes the command and lists each flag with its environment variable, and
// RIDESHARE_* variables filling the flags not given on the command line (a flag wins). The
// containers and compose files configure the commands through those variables.
package flagenv

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// New returns a flag set for one subcommand with a usage text that says what the command
// does and lists the environment variable of every flag.
func New(name, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet("rideshare "+name, flag.ContinueOnError)
	Describe(fs, name, summary)
	return fs
}

// Describe sets fs's usage text: command name's summary, then every flag with its
// environment variable. A command built on another's flags gives them its own description.
func Describe(fs *flag.FlagSet, name, summary string) {
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: rideshare %s [flags]\n\n%s\n\nFlags (each also read from the environment variable shown; a flag wins):\n", name, summary)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(out, "  --%s  [%s]%s\n      %s\n", f.Name, Name(f.Name), def, f.Usage)
		})
	}
}

// Name is the environment variable of a flag: --scale-interval → RIDESHARE_SCALE_INTERVAL.
func Name(flagName string) string {
	return "RIDESHARE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse parses args, then fills every flag not given on the command line from its
// environment variable. Arguments left over are an error: no command takes any.
func Parse(fs *flag.FlagSet, args []string) error {
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
		if v, ok := os.LookupEnv(Name(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", Name(f.Name), v, e)
			}
		}
	})
	return err
}

// Logger returns a JSON logger on stderr at the given level.
func Logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
