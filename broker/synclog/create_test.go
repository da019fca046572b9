package synclog_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
)

// A log created after a restored backup continues its numbering: empty, its last sequence is
// the backup's, the first append must name it, and the orchestrator's usual Open (at every
// start) keeps the log as it is.
func TestCreateContinuesNumbering(t *testing.T) {
	ctx := context.Background()
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

	l, err := synclog.Create(ctx, nc, 100)
	if err != nil {
		t.Fatal(err)
	}
	if last, err := l.Last(ctx); err != nil || last != 100 {
		t.Fatalf("new log after 100: last %d, %v; want 100", last, err)
	}
	if _, err := l.Append(ctx, 0, []byte("x")); !errors.Is(err, synclog.ErrFenced) {
		t.Fatalf("append expecting 0: %v, want ErrFenced", err)
	}
	if seq, err := l.Append(ctx, 100, []byte("a")); err != nil || seq != 101 {
		t.Fatalf("append expecting 100: %d, %v; want 101", seq, err)
	}
	if _, err := synclog.Create(ctx, nc, 5); err == nil {
		t.Fatal("Create over an existing log succeeded")
	}
	again, err := synclog.Open(ctx, nc, true)
	if err != nil {
		t.Fatalf("Open after Create: %v", err)
	}
	if last, err := again.Last(ctx); err != nil || last != 101 {
		t.Fatalf("reopened: last %d, %v; want 101", last, err)
	}
	if seq, err := again.Append(ctx, 101, []byte("b")); err != nil || seq != 102 {
		t.Fatalf("append after reopening: %d, %v; want 102", seq, err)
	}
}
