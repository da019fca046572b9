package backup

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/worker/snapshot"
	"github.com/rideshare/rideshare/worker/store"
)

var quiet = slog.New(slog.DiscardHandler)

// copyAt makes a database copy holding n writes, as a slave's backup does.
func copyAt(t *testing.T, n int) string {
	t.Helper()
	ctx := context.Background()
	s := store.New(filepath.Join(t.TempDir(), "db.sqlite"))
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range n {
		w := rideshare.Write{Table: "users", Insert: map[string]any{"username": "u" + string(rune('a'+i)), "password": "3d725109c7e7c0bfb9d709836735b56d943d263f"}}
		seq := uint64(i + 1)
		if _, err := s.Execute(ctx, w, func(store.LogOp) (uint64, error) { return seq, nil }); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "backup.sqlite")
	if _, err := s.Snapshot(ctx, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// A restored data directory holds an empty log numbered after the backup and the backup as
// the newest snapshot: what a new deployment's workers start from.
func TestRestoreMakesADeployment(t *testing.T) {
	ctx := context.Background()
	file := copyAt(t, 5)
	dir := filepath.Join(t.TempDir(), "data")
	seq, err := Restore(ctx, file, dir, quiet)
	if err != nil || seq != 5 {
		t.Fatalf("Restore: %d, %v; want 5", seq, err)
	}
	srv := &natsq.Server{StoreDir: filepath.Join(dir, NATSDir), Port: -1}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	nc, err := natsq.Connect("", "test", srv.InProcess(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	log, err := synclog.Open(ctx, nc, true) // as the orchestrator opens it at start
	if err != nil {
		t.Fatal(err)
	}
	if last, err := log.Last(ctx); err != nil || last != 5 {
		t.Fatalf("restored log's last: %d, %v; want 5", last, err)
	}
	snaps, err := snapshot.Open(ctx, nc, false)
	if err != nil {
		t.Fatal(err)
	}
	if latest, err := snaps.Latest(ctx); err != nil || latest != 5 {
		t.Fatalf("restored snapshot: %d, %v; want 5", latest, err)
	}
}

// Restore refuses what it must not start from, and where it must not write, leaving nothing.
func TestRestoreRefuses(t *testing.T) {
	ctx := context.Background()
	good := copyAt(t, 2)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.sqlite")
	if err := os.WriteFile(truncated, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(t.TempDir(), "foreign.txt")
	if err := os.WriteFile(foreign, []byte("PK\x03\x04 a zip file, say"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string]string{"truncated": truncated, "foreign": foreign} {
		dir := filepath.Join(t.TempDir(), "data")
		if _, err := Restore(ctx, file, dir, quiet); !errors.Is(err, store.ErrNotACopy) {
			t.Errorf("%s file: %v, want ErrNotACopy", name, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s file: restore left %s behind", name, dir)
		}
	}
	used := t.TempDir()
	if err := os.WriteFile(filepath.Join(used, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, good, used, quiet); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("non-empty directory: %v, want ErrNotEmpty", err)
	}
	if entries, _ := os.ReadDir(used); len(entries) != 1 {
		t.Fatalf("restore wrote into a used directory: %v", entries)
	}
}
