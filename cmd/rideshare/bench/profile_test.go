package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
)

// Profiling the real system under `rideshare bench` load, without adding anything to the
// product: TestBenchProfile starts the stack in this test process (gateway, users, rides,
// orchestrator, embedded NATS) with its workers as re-executed child processes, drives the
// bench load loop at it, and writes CPU profiles of the measured window:
//
//	RIDESHARE_BENCH_PROFILE=/tmp/prof RIDESHARE_BENCH_ONLY=list-rides \
//	  go test ./cmd/rideshare/bench -run TestBenchProfile -v -timeout 5m
//	go tool pprof -top /tmp/prof/stack.prof          # orchestrator + services + the bench client
//	go tool pprof -top /tmp/prof/worker-<pid>.prof   # one worker (the test log says which role)
//
// RIDESHARE_BENCH_ONLY=catchup instead writes RIDESHARE_BENCH_ENTRIES rows (one per db/write,
// from RIDESHARE_BENCH_CONCURRENCY clients, default 1: one log entry each), kills the slave
// and profiles its replacement from its start until it is ready.
//
// It asserts nothing about speed (see docs/BENCHMARKS.md) and is skipped unless asked for.

const benchProfileEnv = "RIDESHARE_BENCH_PROFILE"

// In a worker started by TestBenchProfile, profile the CPU between the test's start and stop
// marker files.
func init() {
	dir := os.Getenv(benchProfileEnv)
	if dir == "" || os.Getenv("RIDESHARE_EXEC_MAIN") != "1" || len(os.Args) < 2 || os.Args[1] != "worker" {
		return
	}
	go func() {
		exists := func(name string) bool { _, err := os.Stat(filepath.Join(dir, name)); return err == nil }
		for !exists("start") {
			time.Sleep(20 * time.Millisecond)
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("worker-%d.prof.part", os.Getpid())))
		if err != nil || pprof.StartCPUProfile(f) != nil {
			return
		}
		for !exists("stop") {
			time.Sleep(20 * time.Millisecond)
		}
		pprof.StopCPUProfile()
		f.Close()
		os.Rename(f.Name(), strings.TrimSuffix(f.Name(), ".part"))
	}()
}

func TestBenchProfile(t *testing.T) {
	dir := os.Getenv(benchProfileEnv)
	if dir == "" {
		t.Skip("set " + benchProfileEnv + "=DIR to profile the stack under bench load")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"start", "stop"} {
		os.Remove(filepath.Join(dir, name))
	}
	only := os.Getenv("RIDESHARE_BENCH_ONLY")
	duration := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("RIDESHARE_BENCH_DURATION")); err == nil {
		duration = d
	}
	// What-if: RIDESHARE_BENCH_IDLE_CONNS=N raises http.DefaultTransport's idle connections
	// per host (2 by default), which the gateway, the rides service's user check and the
	// orchestrator client use in this process, to measure the effect of connection reuse.
	if n, err := strconv.Atoi(os.Getenv("RIDESHARE_BENCH_IDLE_CONNS")); err == nil {
		tr := http.DefaultTransport.(*http.Transport)
		saved := tr.MaxIdleConnsPerHost
		tr.MaxIdleConnsPerHost, tr.MaxIdleConns = n, 4*n
		t.Cleanup(func() { tr.MaxIdleConnsPerHost = saved })
		t.Logf("what-if: http.DefaultTransport.MaxIdleConnsPerHost = %d", n)
	}
	st := mustStack(t, func(c *system.Config) { c.WorkerEnv = append(c.WorkerEnv, benchProfileEnv+"="+dir) })
	b := newBencher(benchConfig{
		gateway: st.GatewayURL, orchestrator: st.OrchestratorURL, only: only, concurrency: 32,
		duration: duration, warmup: 0, maxRequests: 10_000_000, seedUsers: 100, seedRides: 1000, routes: 10,
		quiet: !testing.Verbose(),
	})
	ctx := context.Background()
	if only == "catchup" {
		benchProfileCatchup(t, st, b, dir)
		return
	}
	eps := endpoints
	if only != "" {
		if eps = []*endpoint{endpointByName(only)}; eps[0] == nil {
			t.Fatalf("RIDESHARE_BENCH_ONLY=%q: use one of %v", only, endpointNames())
		}
	}
	ls := &loadState{base: st.GatewayURL, runID: b.runID, routes: 10}
	if err := b.seed(ctx, ls, true); err != nil {
		t.Fatal(err)
	}
	for _, w := range st.Orchestrator.Workers() {
		t.Logf("worker pid %d is %s: profile %s", w.PID, w.Role, filepath.Join(dir, fmt.Sprintf("worker-%d.prof", w.PID)))
	}
	f, err := os.Create(filepath.Join(dir, "stack.prof"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "start"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	rep, err := b.drive(ctx, ls, eps, "profile")
	pprof.StopCPUProfile()
	f.Close()
	if werr := os.WriteFile(filepath.Join(dir, "stop"), nil, 0o644); werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	b.client.CloseIdleConnections()
	var sb strings.Builder
	rep.table(&sb)
	t.Log("\n" + sb.String())
	// Give the workers a moment to write their profiles before the stack stops them.
	deadline := time.Now().Add(5 * time.Second)
	for _, w := range st.Orchestrator.Workers() {
		name := filepath.Join(dir, fmt.Sprintf("worker-%d.prof", w.PID))
		for time.Now().Before(deadline) {
			if _, err := os.Stat(name); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func benchProfileCatchup(t *testing.T, st *stack, b *bencher, dir string) {
	b.cfg.entries, b.cfg.batch, b.cfg.concurrency = 100000, 1, 1
	if n, err := strconv.Atoi(os.Getenv("RIDESHARE_BENCH_ENTRIES")); err == nil {
		b.cfg.entries = n
	}
	if n, err := strconv.Atoi(os.Getenv("RIDESHARE_BENCH_CONCURRENCY")); err == nil {
		b.cfg.concurrency = n
	}
	// Workers profile from the start marker on; the replacement starts after the kill, so
	// its profile covers exactly its catch-up.
	if err := os.WriteFile(filepath.Join(dir, "start"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := b.runCatchup(context.Background())
	if werr := os.WriteFile(filepath.Join(dir, "stop"), nil, 0o644); werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	rep.table(&sb)
	t.Logf("replacement profile: %s\n%s", filepath.Join(dir, fmt.Sprintf("worker-%d.prof", rep.NewPID)), sb.String())
	name := filepath.Join(dir, fmt.Sprintf("worker-%d.prof", rep.NewPID))
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(name); err == nil {
			break
		}
	}
}
