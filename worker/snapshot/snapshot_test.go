package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/worker/snapshot"
)

// open starts an embedded JetStream server and opens the bucket as the orchestrator does
// (creating it) and as a worker does (binding to it).
func open(t *testing.T) (orch, worker *snapshot.Store) {
	t.Helper()
	srv := &natsq.Server{StoreDir: t.TempDir(), Port: -1}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	conns := [2]*snapshot.Store{}
	for i, create := range []bool{true, false} {
		nc, err := natsq.Connect(srv.ClientURL(), "test", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if conns[i], err = snapshot.Open(ctx, nc, create); err != nil {
			t.Fatal(err)
		}
	}
	return conns[0], conns[1]
}

func file(t *testing.T, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPutLatestFetch(t *testing.T) {
	ctx := context.Background()
	_, s := open(t)
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := s.Latest(ctx); !errors.Is(err, snapshot.ErrNone) {
		t.Fatalf("Latest before any snapshot: %v, want ErrNone", err)
	}
	if _, err := s.Fetch(ctx, dst); !errors.Is(err, snapshot.ErrNone) {
		t.Fatalf("Fetch before any snapshot: %v, want ErrNone", err)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("Fetch without a snapshot left a file: %v", err)
	}
	// Larger than one object-store chunk (128 KiB), so that chunking is exercised.
	big := bytes.Repeat([]byte("ride-share "), 100_000)
	if err := s.Put(ctx, file(t, big), 42); err != nil {
		t.Fatal(err)
	}
	if seq, err := s.Latest(ctx); err != nil || seq != 42 {
		t.Fatalf("Latest = %d, %v; want 42", seq, err)
	}
	seq, err := s.Fetch(ctx, dst)
	if err != nil || seq != 42 {
		t.Fatalf("Fetch = %d, %v; want 42", seq, err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, big) {
		t.Fatalf("fetched %d bytes, stored %d", len(got), len(big))
	}
}

// Two slaves may race to store a snapshot: the newer one stays.
func TestOlderSnapshotDoesNotReplaceNewer(t *testing.T) {
	ctx := context.Background()
	orch, s := open(t)
	if err := s.Put(ctx, file(t, []byte("at 200")), 200); err != nil {
		t.Fatal(err)
	}
	if err := orch.Put(ctx, file(t, []byte("at 100")), 100); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if seq, err := orch.Fetch(ctx, dst); err != nil || seq != 200 {
		t.Fatalf("Fetch = %d, %v; want 200", seq, err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "at 200" {
		t.Fatalf("fetched %q", got)
	}
	if err := s.Put(ctx, file(t, []byte("at 300")), 300); err != nil {
		t.Fatal(err)
	}
	if seq, err := orch.Latest(ctx); err != nil || seq != 300 {
		t.Fatalf("Latest after a newer one = %d, %v; want 300", seq, err)
	}
}

// Newest streams what Put stored, with its sequence and size; with nothing stored it is ErrNone.
func TestNewestStreams(t *testing.T) {
	ctx := context.Background()
	orch, w := open(t)
	if _, _, _, err := orch.Newest(ctx); !errors.Is(err, snapshot.ErrNone) {
		t.Fatalf("Newest of an empty bucket: %v, want ErrNone", err)
	}
	content := bytes.Repeat([]byte("rideshare"), 100_000)
	if err := w.Put(ctx, file(t, content), 42); err != nil {
		t.Fatal(err)
	}
	r, seq, size, err := orch.Newest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got bytes.Buffer
	if _, err := got.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	if seq != 42 || size != int64(len(content)) || !bytes.Equal(got.Bytes(), content) {
		t.Fatalf("Newest: seq %d, size %d, %d bytes equal %v; want 42, %d, the content", seq, size, got.Len(), bytes.Equal(got.Bytes(), content), len(content))
	}
}
