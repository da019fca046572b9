package rideshare_test

import (
	"os/exec"
	"strings"
	"testing"
)

// No package imports a peer's internals: the orchestrator, its client and the services never
// reach the worker's SQLite store (nor anything else under worker/), and the contract imports
// nothing of the project.
func TestDependenciesPointOneWay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	const mod = "github.com/rideshare/rideshare"
	for pkgs, forbidden := range map[string][]string{
		"./orchestrator/... ./httpsvc/... ./broker/... ./metrics/...": {mod + "/worker", "modernc.org/sqlite"},
		".": {mod + "/"},
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
