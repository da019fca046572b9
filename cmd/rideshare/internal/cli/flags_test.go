package cli

import (
	"context"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
)

// Each subcommand has its own flags and a help text that describes it: the orchestrator takes
// none of up's service addresses.
func TestOrchestratorHasItsOwnFlags(t *testing.T) {
	var cfg system.Config
	fs, _ := orchestratorFlags(&cfg)
	var help strings.Builder
	fs.SetOutput(&help)
	fs.Usage()
	if strings.Contains(help.String(), "Runs everything") || !strings.Contains(help.String(), "database as a service") {
		t.Errorf("rideshare orchestrator --help does not describe the orchestrator:\n%s", help.String())
	}
	for _, name := range []string{"gateway", "users", "rides"} {
		if fs.Lookup(name) != nil {
			t.Errorf("rideshare orchestrator takes --%s, which it would ignore", name)
		}
	}
	for _, name := range []string{"listen", "data", "slaves", "max-slaves", "scale-step", "amqp", "zk", "runtime"} {
		if fs.Lookup(name) == nil {
			t.Errorf("rideshare orchestrator lacks --%s", name)
		}
	}
	up, _ := upFlags(&system.Config{})
	for _, name := range []string{"gateway", "users", "rides", "orchestrator", "data", "max-slaves"} {
		if up.Lookup(name) == nil {
			t.Errorf("rideshare up lacks --%s", name)
		}
	}
}

// A bad --nats-sync is refused with the reason before anything starts; the NATS token is not
// a flag (ps would show it) but the environment's, and the help says so.
func TestNATSSettings(t *testing.T) {
	err := Run(context.Background(), []string{"orchestrator", "--nats-sync", "sometimes", "--listen", "127.0.0.1:0", "--data", t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "--nats-sync") || !strings.Contains(err.Error(), "always") {
		t.Fatalf("--nats-sync sometimes: %v, want refused with the values it takes", err)
	}
	for _, build := range []func(*system.Config) (*flag.FlagSet, func()){upFlags, orchestratorFlags} {
		var cfg system.Config
		fs, finish := build(&cfg)
		if fs.Lookup("nats-token") != nil {
			t.Errorf("%s takes the NATS token as a flag, which ps shows", fs.Name())
		}
		var help strings.Builder
		fs.SetOutput(&help)
		fs.Usage()
		if !strings.Contains(help.String(), system.NATSTokenEnv) {
			t.Errorf("%s --help does not say where the NATS token comes from", fs.Name())
		}
		t.Setenv(system.NATSTokenEnv, "from-the-environment")
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		finish()
		if cfg.NATSToken != "from-the-environment" {
			t.Errorf("%s: NATS token %q, want $%s's", fs.Name(), cfg.NATSToken, system.NATSTokenEnv)
		}
	}
}

// Every subcommand's flags can be registered and described: a name defined twice (chaos
// takes up's flags and its own) panics in the flag package before any argument is read.
func TestEverySubcommandHasHelp(t *testing.T) {
	for _, name := range []string{"up", "orchestrator", "chaos", "status", "backup", "restore", "openapi", "users", "rides", "gateway", "bench"} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("rideshare %s --help panicked: %v", name, r)
				}
			}()
			err := Run(context.Background(), []string{name, "--help"})
			if err != nil && !errors.Is(err, flag.ErrHelp) && !strings.Contains(err.Error(), "unknown command") {
				t.Fatalf("rideshare %s --help: %v", name, err)
			}
		})
	}
}
