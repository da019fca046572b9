package worker_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/worker"
	"github.com/rideshare/rideshare/worker/snapshot"
	"github.com/rideshare/rideshare/worker/store"
)

func snapshots(t *testing.T) *snapshot.Store {
	t.Helper()
	srv := &natsq.Server{StoreDir: t.TempDir(), Port: -1}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	nc, err := natsq.Connect(srv.ClientURL(), "test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s, err := snapshot.Open(context.Background(), nc, true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Restore's faults: a snapshot that is not a database, or whose file disagrees with its
// metadata, is refused and leaves nothing behind (the worker then replays the whole log); a
// worker that already has a database keeps it. (A good snapshot restored is
// TestNewSlaveStartsFromSnapshot, end to end.)
func TestRestore(t *testing.T) {
	ctx := context.Background()
	snaps := snapshots(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "db.sqlite")

	if seq, err := worker.Restore(ctx, snaps, path, quiet); err != nil || seq != 0 {
		t.Fatalf("no snapshot yet: %d, %v; want 0, nil", seq, err)
	}

	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a database"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := snaps.Put(ctx, junk, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Restore(ctx, snaps, path, quiet); err == nil {
		t.Fatal("restored a snapshot that is not a database")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("a refused snapshot left files: %v", entries)
	}

	// A real database holding 0, stored as if it held 20.
	src := store.New(filepath.Join(t.TempDir(), "src.sqlite"))
	if err := src.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	copyPath := filepath.Join(t.TempDir(), "copy.sqlite")
	if _, err := src.Snapshot(ctx, copyPath); err != nil {
		t.Fatal(err)
	}
	if err := snaps.Put(ctx, copyPath, 20); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Restore(ctx, snaps, path, quiet); err == nil {
		t.Fatal("restored a snapshot whose sequence disagrees with its metadata")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a refused snapshot became the database: %v", err)
	}

	// A worker with its own database keeps it.
	if err := os.WriteFile(path, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if seq, err := worker.Restore(ctx, snaps, path, quiet); err != nil || seq != 0 {
		t.Fatalf("with a database present: %d, %v; want 0, nil", seq, err)
	}
	if got, _ := os.ReadFile(path); string(got) != "mine" {
		t.Fatal("Restore replaced an existing database")
	}
}
