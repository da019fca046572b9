package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// A snapshot is the database at one sequence: opened as a store it has the same rows and the
// same applied sequence, and the source keeps applying while it is taken.
func TestSnapshotIsTheDatabaseAtItsSequence(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	log := &memLog{}
	for i := range 50 {
		if _, err := s.Execute(ctx, user(fmt.Sprintf("u%d", i)), log.appender(s)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "snap.sqlite")
	seq, err := s.Snapshot(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if seq != 50 {
		t.Fatalf("snapshot holds %d, want 50", seq)
	}
	want := dump(t, s)
	// Taking another one over the first replaces it.
	if _, err := s.Execute(ctx, user("later"), log.appender(s)); err != nil {
		t.Fatal(err)
	}
	if seq, err = s.Snapshot(ctx, path); err != nil || seq != 51 {
		t.Fatalf("second snapshot: %d, %v; want 51", seq, err)
	}
	want2 := dump(t, s)

	c := New(path)
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Applied() != 51 || !reflect.DeepEqual(dump(t, c), want2) {
		t.Fatalf("copy at %d differs from the source at 51", c.Applied())
	}
	if reflect.DeepEqual(want, want2) {
		t.Fatal("test is wrong: the two states should differ")
	}
	// The copy goes on from there with the log's next entries.
	if err := c.Apply(ctx, log.entries[51:]); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotSeqRefusesWhatIsNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk")
	if err := writeFile(path, "not a database"); err != nil {
		t.Fatal(err)
	}
	if _, err := SnapshotSeq(context.Background(), path); err == nil {
		t.Fatal("SnapshotSeq accepted a file that is not a database")
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }
