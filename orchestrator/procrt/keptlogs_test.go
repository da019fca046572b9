package procrt_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rideshare/rideshare/orchestrator/procrt"
)

// An exited worker's directory goes, its log stays: <DataDir>/<id>.exited.log, never listed as
// a worker, the newest KeptLogs of them kept. (Its directory and log went together, and with
// them why it had stopped.)
func TestSharedKeepsTheLogOfAnExitedWorker(t *testing.T) {
	dir := t.TempDir()
	logA := newExitLog()
	a := newLogged(t, logA, dir)
	// Older logs of exited workers, one more than are kept, oldest first.
	for i := range procrt.KeptLogs {
		f := filepath.Join(dir, fmt.Sprintf("old%02d.exited.log", i))
		if err := os.WriteFile(f, []byte("old\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(-time.Duration(procrt.KeptLogs-i) * time.Minute)
		if err := os.Chtimes(f, at, at); err != nil {
			t.Fatal(err)
		}
	}
	start(t, a, "w-log")
	live := filepath.Join(dir, "w-log", "worker.log")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, _ := os.ReadFile(live); strings.Contains(string(b), "worker started") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker wrote nothing to its log")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.Kill("w-log"); err != nil {
		t.Fatal(err)
	}
	logA.awaitExit(t, "w-log")
	kept := filepath.Join(dir, "w-log.exited.log")
	for exists(filepath.Join(dir, "w-log")) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if exists(filepath.Join(dir, "w-log")) {
		t.Fatal("the exited worker's directory is left")
	}
	if b, err := os.ReadFile(kept); err != nil || !strings.Contains(string(b), "worker started") {
		t.Fatalf("kept log %s: %q, %v", kept, b, err)
	}
	if got := list(t, a); len(got) != 0 {
		t.Errorf("lists %v with only kept logs in its directory", got)
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*.exited.log"))
	if len(logs) != procrt.KeptLogs {
		t.Fatalf("%d logs kept, want %d: %v", len(logs), procrt.KeptLogs, logs)
	}
	if exists(filepath.Join(dir, "old00.exited.log")) {
		t.Error("the oldest log is kept, not the newest")
	}
}
