package cli

import (
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
