package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A copy taken by Snapshot passes CheckCopy with its sequence; anything else a user might
// hand to restore is refused with ErrNotACopy: another kind of file, a truncated copy, a
// SQLite database of another schema, a missing file.
func TestCheckCopy(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	log := &memLog{}
	exec := executor(t, s, log)
	for _, n := range []string{"a", "b", "c"} {
		exec(user(n))
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.sqlite")
	seq, err := s.Snapshot(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := CheckCopy(ctx, good); err != nil || got != seq || seq != 3 {
		t.Fatalf("CheckCopy of a good copy: %d, %v; want %d (3)", got, err, seq)
	}

	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	foreign := filepath.Join(dir, "foreign.sqlite")
	db, err := sql.Open("sqlite", "file:"+foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE notes (body TEXT)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for name, path := range map[string]string{
		"text file":      write("notes.txt", []byte("hello, this is not a database")),
		"empty file":     write("empty", nil),
		"truncated copy": write("half.sqlite", data[:len(data)/2]),
		"header only":    write("head.sqlite", data[:100]),
		"other schema":   foreign,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := CheckCopy(ctx, path); !errors.Is(err, ErrNotACopy) {
				t.Fatalf("CheckCopy: %v, want ErrNotACopy", err)
			}
		})
	}
	if _, err := CheckCopy(ctx, filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("CheckCopy of a missing file: %v, want ErrNotExist", err)
	}
}
