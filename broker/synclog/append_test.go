package synclog_test

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
)

// The repeat of an append that was stored (its first answer lost) is answered with the stored
// entry, not refused as fenced, and stores nothing more; another append at the same place is
// fenced.
func TestAppendRepeatedIsStoredOnce(t *testing.T) {
	ctx := context.Background()
	l := openLog(t)
	for range 2 {
		seq, err := l.Append(ctx, 0, []byte("a"))
		if err != nil || seq != 1 {
			t.Fatalf("append a: %d, %v; want 1", seq, err)
		}
	}
	if last, err := l.Last(ctx); err != nil || last != 1 {
		t.Fatalf("last %d, %v; want 1", last, err)
	}
	if _, err := l.Append(ctx, 0, []byte("b")); !errors.Is(err, synclog.ErrFenced) {
		t.Fatalf("another append after 0: %v, want ErrFenced", err)
	}
	if seq, err := l.Append(ctx, 1, []byte("b")); err != nil || seq != 2 {
		t.Fatalf("append b after 1: %d, %v; want 2", seq, err)
	}
}

// An append made while the server is away (as while a cluster elects the log's next leader)
// is tried again until its context ends, and is stored once the server is back.
func TestAppendWaitsForTheServer(t *testing.T) {
	dir := t.TempDir()
	srv := serve(t, dir, -1)
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	nc, err := natsq.Connect(srv.ClientURL(), "test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	l, err := synclog.Open(ctx, nc, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, 0, []byte("before")); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	done := make(chan error, 1)
	go func() {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		seq, err := l.Append(actx, 1, []byte("while away"))
		if err == nil && seq != 2 {
			err = errors.New("stored at the wrong place")
		}
		done <- err
	}()
	// The fault's length, not a wait for an event: the server stays away for longer than one
	// attempt, so the append must be tried again to succeed.
	time.Sleep(synclog.AppendAttempt + 500*time.Millisecond)
	serve(t, dir, port)
	if err := <-done; err != nil {
		t.Fatalf("append while the server was away: %v", err)
	}
	if last, err := l.Last(ctx); err != nil || last != 2 {
		t.Fatalf("last %d, %v; want 2", last, err)
	}
}
