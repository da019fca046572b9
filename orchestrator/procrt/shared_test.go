package procrt_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/rideshare/rideshare/orchestrator/procrt"
)

// The test binary also plays the processes of a shared deployment, chosen by roleEnv.
const (
	roleEnv = "PROCRT_TEST_ROLE" // "worker" or "node"
	dirEnv  = "PROCRT_TEST_DIR"  // a node's DataDir
	idEnv   = "PROCRT_TEST_ID"   // the worker a node starts
)

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "worker":
		// Idles until a signal ends it, by the signal's default action, so its exit status
		// names the signal. Should a failed test leave it behind, it ends by itself.
		fmt.Println("worker started")
		time.Sleep(5 * time.Minute)
		os.Exit(3)
	case "node":
		// An orchestrator node: starts one worker, says its PID, and lives until killed.
		rt := sharedRuntime(os.Getenv(dirEnv), slog.Default())
		pid, err := rt.Start(context.Background(), os.Getenv(idEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(pid)
		time.Sleep(5 * time.Minute)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// sharedRuntime runs this test binary as the workers, with "--id <id>" as the real ones have.
func sharedRuntime(dataDir string, logger *slog.Logger) *procrt.Runtime {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	rt := procrt.New([]string{exe}, dataDir, func(id, _ string) []string { return []string{"--id", id} })
	rt.Env = []string{roleEnv + "=worker"}
	rt.Shared = true
	rt.Logger = logger
	return rt
}

// newShared is a node of the deployment on dataDir; the test's end stops every worker.
func newShared(t *testing.T, e *exits, dataDir string) *procrt.Runtime {
	rt := sharedRuntime(dataDir, slog.New(e))
	t.Cleanup(func() {
		if err := rt.StopAll(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return rt
}

func TestContractShared(t *testing.T) {
	// Workers are found in DataDir: another runtime adopts them.
	runContract(t, newShared, true)
}

// exitLog is exits that also wakes a waiter when a record has been logged.
type exitLog struct {
	*exits
	ended chan struct{}
}

func newExitLog() *exitLog {
	return &exitLog{exits: &exits{status: map[string]string{}}, ended: make(chan struct{}, 1)}
}

func (e *exitLog) Handle(ctx context.Context, r slog.Record) error {
	e.exits.Handle(ctx, r)
	select {
	case e.ended <- struct{}{}:
	default: // a wake-up is pending already
	}
	return nil
}

// awaitExit waits until the runtime that started worker id has logged its exit, and returns
// the exit status.
func (e *exitLog) awaitExit(t *testing.T, id string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		e.mu.Lock()
		status, ok := e.status[id]
		e.mu.Unlock()
		if ok {
			return status
		}
		select {
		case <-e.ended:
		case <-timeout:
			t.Fatalf("worker %s: no exit in 20 s", id)
		}
	}
}

func newLogged(t *testing.T, e *exitLog, dataDir string) *procrt.Runtime {
	rt := sharedRuntime(dataDir, slog.New(e))
	t.Cleanup(func() { rt.StopAll(context.Background()) })
	return rt
}

func list(t *testing.T, rt *procrt.Runtime) map[string]int {
	t.Helper()
	ws, err := rt.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

func start(t *testing.T, rt *procrt.Runtime, id string) int {
	t.Helper()
	pid, err := rt.Start(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// running reads the process state from /proc: a zombie is not running.
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// Another node on the same DataDir sees a node's workers with their PIDs, stops one cleanly,
// and kills another.
func TestSharedAnotherNodeAdopts(t *testing.T) {
	dir := t.TempDir()
	logA := newExitLog()
	a := newLogged(t, logA, dir)
	b := newShared(t, &exits{status: map[string]string{}}, dir)
	want := map[string]int{"w-stop": start(t, a, "w-stop"), "w-kill": start(t, a, "w-kill")}
	if got := list(t, b); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("B lists %v, want A's workers %v", got, want)
	}
	// Its output goes to its log file, which outlives the node, and not to a pipe.
	for _, fd := range []int{1, 2} {
		out, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", want["w-stop"], fd))
		if log := filepath.Join(dir, "w-stop", "worker.log"); err != nil || out != log {
			t.Errorf("worker's fd %d is %q (%v), want %s", fd, out, err, log)
		}
	}

	if err := b.Stop(context.Background(), "w-stop"); err != nil {
		t.Fatalf("B stops A's worker: %v", err)
	}
	if running(want["w-stop"]) {
		t.Fatal("w-stop still runs after Stop returned")
	}
	if exists(filepath.Join(dir, "w-stop")) {
		t.Error("w-stop's directory is left after Stop")
	}
	if status := logA.awaitExit(t, "w-stop"); status != "signal: terminated" {
		t.Errorf("w-stop ended with %q, want a clean stop by SIGTERM", status)
	}

	if err := b.Kill("w-kill"); err != nil {
		t.Fatalf("B kills A's worker: %v", err)
	}
	if status := logA.awaitExit(t, "w-kill"); status != "signal: killed" {
		t.Errorf("w-kill ended with %q, want SIGKILL", status)
	}
	for name, rt := range map[string]*procrt.Runtime{"A": a, "B": b} {
		if got := list(t, rt); len(got) != 0 {
			t.Errorf("%s lists %v after both ended", name, got)
		}
	}
	if err := b.Kill("w-kill"); err == nil || !strings.Contains(err.Error(), "w-kill") {
		t.Errorf("Kill of an ended worker = %v, want an error naming it", err)
	}
	if err := b.Stop(context.Background(), "w-none"); err == nil || !strings.Contains(err.Error(), "w-none") {
		t.Errorf("Stop of an unknown worker = %v, want an error naming it", err)
	}
}

// Another node lists a worker as soon as its Start has returned, not merely eventually: a
// freshly exec'd process shows an empty command line for some µs, which must not make it a
// stranger (whose directory List removes). Many starts, to meet that window.
func TestSharedListedAtOnceByAnotherNode(t *testing.T) {
	dir := t.TempDir()
	a := newShared(t, &exits{status: map[string]string{}}, dir)
	b := newShared(t, &exits{status: map[string]string{}}, dir)
	for i := range 100 {
		id := fmt.Sprintf("w-%d", i)
		pid := start(t, a, id)
		if got := list(t, b); got[id] != pid {
			t.Fatalf("right after Start(%s) = %d, B lists %v", id, pid, got)
		}
		if err := a.Kill(id); err != nil {
			t.Fatal(err)
		}
	}
}

// The key property: SIGKILL of the node that started a worker kills no worker, and another
// node then supervises it.
func TestSharedWorkerOutlivesItsNode(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	node := exec.Command(exe)
	node.Env = append(os.Environ(), roleEnv+"=node", dirEnv+"="+dir, idEnv+"=w-orphan")
	node.Stderr = os.Stderr
	out, err := node.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Process.Kill(); node.Wait() })
	b := newShared(t, &exits{status: map[string]string{}}, dir)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the node said no PID: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}

	if err := node.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	node.Wait() // the node is gone for good
	if !running(pid) {
		t.Fatalf("worker %d died with its node", pid)
	}
	if got := list(t, b); got["w-orphan"] != pid || len(got) != 1 {
		t.Fatalf("after its node's death, B lists %v, want w-orphan: %d", got, pid)
	}
	if err := b.Stop(context.Background(), "w-orphan"); err != nil {
		t.Fatalf("B stops the orphan: %v", err)
	}
	if running(pid) {
		t.Fatal("the orphan still runs after Stop returned")
	}
	if got := list(t, b); len(got) != 0 {
		t.Fatalf("B lists %v after Stop", got)
	}
}

// A pid file is not trusted blindly: a live process that is not the worker (its PID was
// reused), or a zombie, is not listed, and the directory is removed. A directory without a
// pid file is a Start in progress while it is young, and removed when old.
func TestSharedListIgnoresStalePIDFiles(t *testing.T) {
	dir := t.TempDir()
	// No StopAll at the end: were the test process taken for a worker, it would stop itself.
	rt := sharedRuntime(dir, slog.Default())
	writePID := func(id string, pid int) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, id), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, id, "pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writePID("w-reused", os.Getpid()) // alive, but without "w-reused" in its command line

	// A zombie with the worker's command line: killed, and left unreaped.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	zombie := exec.Command(exe, "--id", "w-zombie")
	zombie.Env = append(os.Environ(), roleEnv+"=worker")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zombie.Process.Kill(); zombie.Wait() })
	zombie.Process.Kill()
	awaitZombie(t, zombie.Process.Pid)
	writePID("w-zombie", zombie.Process.Pid)

	for _, id := range []string{"w-starting", "w-failed"} {
		if err := os.Mkdir(filepath.Join(dir, id), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(filepath.Join(dir, "w-failed"), old, old); err != nil {
		t.Fatal(err)
	}

	if got := list(t, rt); len(got) != 0 {
		t.Fatalf("List = %v, want none", got)
	}
	for _, id := range []string{"w-reused", "w-zombie", "w-failed"} {
		if exists(filepath.Join(dir, id)) {
			t.Errorf("%s's directory is left", id)
		}
	}
	if !exists(filepath.Join(dir, "w-starting")) {
		t.Error("the directory of a Start in progress was removed")
	}
	if err := rt.Kill("w-reused"); err == nil {
		t.Error("Kill of a worker whose PID was reused: no error")
	}
}

// awaitZombie waits until child pid has ended, without reaping it (waitid with WNOWAIT).
func awaitZombie(t *testing.T, pid int) {
	t.Helper()
	const pPID = 1
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid), uintptr(unsafe.Pointer(&info)), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			t.Fatalf("waitid %d: %v", pid, errno)
		}
		return
	}
}

// A worker nobody reaps, as after its node's death under a PID 1 that does not reap, is a
// zombie once it ends: Stop takes that for the end, rather than waiting for ever.
func TestSharedStopOfAnUnreapedWorker(t *testing.T) {
	dir := t.TempDir()
	rt := newShared(t, &exits{status: map[string]string{}}, dir)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Started by hand as this process's child, which nothing here waits for until the end.
	w := exec.Command(exe, "--id", "w-unreaped")
	w.Env = append(os.Environ(), roleEnv+"=worker")
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Process.Kill(); w.Wait() })
	if err := os.Mkdir(filepath.Join(dir, "w-unreaped"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "w-unreaped", "pid"), []byte(strconv.Itoa(w.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := list(t, rt); got["w-unreaped"] != w.Process.Pid {
		t.Fatalf("List = %v, want w-unreaped: %d", got, w.Process.Pid)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- rt.Stop(context.Background(), "w-unreaped") }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second): // StopTimeout is 10 s: it would be killed, not stopped
		t.Fatal("Stop of a worker that is a zombie now does not return")
	}
	if got := list(t, rt); len(got) != 0 {
		t.Fatalf("List = %v after Stop", got)
	}
}

// Close of a node leaves its workers to the others; StopAll ends them all.
func TestSharedCloseLeavesWorkersStopAllStops(t *testing.T) {
	dir := t.TempDir()
	logA := newExitLog()
	a := newLogged(t, logA, dir)
	want := map[string]int{"w-1": start(t, a, "w-1"), "w-2": start(t, a, "w-2")}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := newShared(t, &exits{status: map[string]string{}}, dir)
	if got := list(t, b); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after A's Close, B lists %v, want %v", got, want)
	}
	for id, pid := range want {
		if !running(pid) {
			t.Fatalf("%s ended with A's Close", id)
		}
	}
	if err := b.StopAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	for id, pid := range want {
		if running(pid) {
			t.Errorf("%s still runs after StopAll", id)
		}
		if status := logA.awaitExit(t, id); status != "signal: terminated" {
			t.Errorf("%s ended with %q, want a clean stop by SIGTERM", id, status)
		}
	}
	if got := list(t, b); len(got) != 0 {
		t.Fatalf("B lists %v after StopAll", got)
	}
	// Nothing but the two workers' logs, kept (KeptLogs).
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != "[w-1.exited.log w-2.exited.log]" {
		t.Errorf("DataDir holds %v after StopAll, want only the workers' kept logs", names)
	}
}
