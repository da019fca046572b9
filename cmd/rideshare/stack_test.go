package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/rideshare/rideshare/orchestrator"
)

// TestMain lets the test binary stand in for the rideshare binary: the stacks that tests
// start run their workers as child processes of this same executable.
func TestMain(m *testing.M) {
	if os.Getenv("RIDESHARE_EXEC_MAIN") == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

type stackOpt func(*upConfig)

func withSlaves(n int) stackOpt           { return func(c *upConfig) { c.slaves = n } }
func withSnapshotEvery(n uint64) stackOpt { return func(c *upConfig) { c.snapshotEvery = n } }

// mustStack starts `rideshare up` in this process on free ports with a temporary data
// directory; workers are real child processes.
func mustStack(tb testing.TB, opts ...stackOpt) *stack {
	tb.Helper()
	cfg := upConfig{
		data:             tb.TempDir(),
		gatewayAddr:      "127.0.0.1:0",
		usersAddr:        "127.0.0.1:0",
		ridesAddr:        "127.0.0.1:0",
		orchestratorAddr: "127.0.0.1:0",
		slaves:           1,
		minSlaves:        1,
		maxSlaves:        orchestrator.AutoMax, // up's defaults
		scaleStep:        orchestrator.DefaultStep,
		scaleInterval:    time.Hour,
		coord:            coordFlags{zkRoot: "/rideshare", sessionTimeout: 3 * time.Second},
		runtime:          "process",
		writeTimeout:     15 * time.Second,
		readTimeout:      15 * time.Second,
		logLevel:         "warn",
		workerCommand:    []string{os.Args[0], "worker"},
		workerEnv:        []string{"RIDESHARE_EXEC_MAIN=1"},
	}
	for _, o := range opts {
		o(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	st, err := startStack(ctx, cfg, logger)
	if err != nil {
		tb.Fatalf("start stack: %v", err)
	}
	tb.Cleanup(func() {
		if err := st.Close(); err != nil {
			tb.Logf("stack close: %v", err)
		}
	})
	return st
}

// call sends a JSON request and returns the status and body.
func call(tb testing.TB, method, url string, body any) (int, []byte) {
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

// mustCall is call that requires the given status.
func mustCall(tb testing.TB, want int, method, url string, body any) []byte {
	tb.Helper()
	got, out := call(tb, method, url, body)
	if got != want {
		tb.Fatalf("%s %s: status %d, want %d; body %s", method, url, got, want, out)
	}
	return out
}

// eventually polls cond until it holds or the timeout passes: for state that changes on its
// own (a worker being replaced), where there is no event to wait on from outside.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sha1hex(i int) string { return fmt.Sprintf("%040x", i+1) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
