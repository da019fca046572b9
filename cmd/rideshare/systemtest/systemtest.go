// Package systemtest starts real deployments for tests (rqlite's system_test helpers, wtf's
// main_test.go): system.Open on free ports with a temporary data directory, the workers as
// real child processes of the test binary itself, which Main turns into a worker when the
// orchestrator starts it so (the race detector then covers the workers too).
package systemtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/orchestrator"
)

// execEnv marks a child process of the test binary that must act as `rideshare worker`.
const execEnv = "RIDESHARE_EXEC_MAIN"

// Main is a test package's TestMain: it runs the tests, or, in a worker that Start's stack
// started from this binary, the worker.
func Main(m *testing.M) {
	if os.Getenv(execEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "orchestrator" {
		// A node of Orchestrators' cluster, as `rideshare orchestrator`. The command line
		// lives above this package (cli imports the packages that test through it), so a
		// test package that runs clusters hands it in as NodeMain.
		if NodeMain == nil {
			os.Stderr.WriteString("systemtest: this test binary has no NodeMain\n")
			os.Exit(2)
		}
		os.Exit(NodeMain(os.Args[1:]))
	}
	if IsWorker() {
		// As `rideshare worker`: SIGTERM (the runtime's clean stop) ends the context.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := system.WorkerMain(ctx, os.Args[2:]); err != nil {
			os.Stderr.WriteString("rideshare worker: " + err.Error() + "\n")
			stop()
			os.Exit(1)
		}
		stop()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// IsWorker reports whether this process is a worker started from the test binary.
func IsWorker() bool {
	return os.Getenv(execEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "worker"
}

// NodeMain runs `rideshare <args>` in a node process of Orchestrators; a test package that
// uses Orchestrators sets it (to cli.Main) before calling Main.
var NodeMain func(args []string) int

// Option changes the configuration Start uses.
type Option func(*system.Config)

// Slaves sets how many slaves start beside the master.
func Slaves(n int) Option { return func(c *system.Config) { c.Slaves = n } }

// Orchestrators runs n orchestrator nodes, each a process of this test binary acting as
// `rideshare orchestrator` (system.StartNodes).
func Orchestrators(n int) Option {
	return func(c *system.Config) {
		c.Orchestrators, c.NodeCommand = n, system.NodeCommand{os.Args[0], "orchestrator"}
		// A cluster's default (system.ClusterSessionTimeout): the stack's 3 s is shorter
		// than a JetStream leader election.
		c.SessionTimeout = 0
	}
}

// ScaleInterval sets the scaler's interval (Start's default: an hour, so it never runs).
func ScaleInterval(d time.Duration) Option { return func(c *system.Config) { c.ScaleInterval = d } }

// Config is `rideshare up`'s defaults on free ports with a temporary data directory, the
// workers re-executing this test binary, the scaler idle and warnings only in the log.
func Config(tb testing.TB) system.Config {
	return system.Config{
		Data:             tb.TempDir(),
		GatewayAddr:      "127.0.0.1:0",
		UsersAddr:        "127.0.0.1:0",
		RidesAddr:        "127.0.0.1:0",
		OrchestratorAddr: "127.0.0.1:0",
		Slaves:           1,
		MinSlaves:        1,
		MaxSlaves:        orchestrator.AutoMax, // up's defaults
		ScaleStep:        orchestrator.DefaultStep,
		ScaleInterval:    time.Hour,
		ZKRoot:           "/rideshare",
		SessionTimeout:   3 * time.Second,
		Runtime:          "process",
		WriteTimeout:     15 * time.Second,
		ReadTimeout:      15 * time.Second,
		LogLevel:         "warn",
		WorkerCommand:    []string{os.Args[0], "worker"},
		WorkerEnv:        []string{execEnv + "=1"},
	}
}

// Start starts `rideshare up` in this process (system.Open) and closes it when the test ends.
func Start(tb testing.TB, opts ...Option) *system.System {
	tb.Helper()
	cfg := Config(tb)
	for _, o := range opts {
		o(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := system.Open(ctx, cfg, logger)
	if err != nil {
		tb.Fatalf("start stack: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Logf("stack close: %v", err)
		}
	})
	return s
}

// Call sends a JSON request (body marshalled unless nil) and returns the status and body.
func Call(tb testing.TB, method, url string, body any) (int, []byte) {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// MustCall is Call that requires the given status.
func MustCall(tb testing.TB, want int, method, url string, body any) []byte {
	tb.Helper()
	got, out := Call(tb, method, url, body)
	if got != want {
		tb.Fatalf("%s %s: status %d, want %d; body %s", method, url, got, want, out)
	}
	return out
}

// Eventually polls cond until it holds or the timeout passes: for state that changes on its
// own (a worker being replaced), where there is no event to wait on from outside.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
