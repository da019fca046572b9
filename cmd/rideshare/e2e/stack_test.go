// Package e2e holds the end-to-end tests: each starts a real deployment (package systemtest:
// system.Open, workers as child processes or containers, NATS embedded, RabbitMQ and ZooKeeper
// from `make services` where a test asks for them) and talks to it over HTTP, as its users do.
package e2e

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/internal/cli"
	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/cmd/rideshare/systemtest"
)

// TestMain lets the test binary stand in for the rideshare binary: the stacks that tests
// start run their workers, and a cluster's nodes, as child processes of this same executable.
func TestMain(m *testing.M) {
	systemtest.NodeMain = cli.Main
	systemtest.Main(m)
}

// The tests' vocabulary, short names for systemtest's.
type (
	stack    = system.System
	stackOpt = systemtest.Option
)

func withSlaves(n int) stackOpt { return systemtest.Slaves(n) }
func withSnapshotEvery(n uint64) stackOpt {
	return func(c *system.Config) { c.SnapshotEvery = n }
}

// mustStack starts `rideshare up` in this process on free ports with a temporary data
// directory; workers are real child processes.
func mustStack(tb testing.TB, opts ...stackOpt) *stack {
	tb.Helper()
	return systemtest.Start(tb, opts...)
}

func call(tb testing.TB, method, url string, body any) (int, []byte) {
	tb.Helper()
	return systemtest.Call(tb, method, url, body)
}

func mustCall(tb testing.TB, want int, method, url string, body any) []byte {
	tb.Helper()
	return systemtest.MustCall(tb, want, method, url, body)
}

func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	systemtest.Eventually(tb, timeout, what, cond)
}

func sha1hex(i int) string { return fmt.Sprintf("%040x", i+1) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
