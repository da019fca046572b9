package rideshare_test

import (
	"os/exec"
	"strings"
	"testing"
)

// Imports point one way (docs/DESIGN.md's picture): commands → system → services,
// orchestrator, worker → contract, broker, coordination → metrics. No package imports a peer's
// internals: the orchestrator, its client and the services never reach the worker's SQLite
// store (nor anything else under worker/), the worker never reaches the orchestrator, nothing
// below the commands imports them, and the contract imports nothing of the project.
func TestDependenciesPointOneWay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	const mod = "github.com/rideshare/rideshare"
	for pkgs, forbidden := range map[string][]string{
		"./orchestrator/... ./httpsvc/... ./broker/... ./metrics/...": {mod + "/worker", "modernc.org/sqlite"},
		"./worker/...":               {mod + "/orchestrator", mod + "/httpsvc"},
		"./broker/... ./metrics/...": {mod + "/orchestrator", mod + "/httpsvc"},
		"./metrics/...":              {mod + "/broker"},
		"./orchestrator/... ./httpsvc/... ./worker/... ./broker/...": {mod + "/cmd/"},
		"./cmd/rideshare/system/...":                                 {mod + "/cmd/rideshare/internal/cli", mod + "/cmd/rideshare/bench", mod + "/cmd/rideshare/status", mod + "/cmd/rideshare/chaos"},
		".":                                                          {mod + "/"},
	} {
		args := append([]string{"list", "-deps"}, strings.Fields(pkgs)...)
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depend on %s", pkgs, dep)
				}
			}
		}
	}
}
