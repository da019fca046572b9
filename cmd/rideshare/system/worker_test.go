package system

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker/coord/kvcoord"
	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
)

// messages is a slog handler that hands each record's message to a channel.
type messages chan string

func (m messages) Enabled(context.Context, slog.Level) bool { return true }
func (m messages) Handle(_ context.Context, r slog.Record) error {
	select {
	case m <- r.Message:
	default:
	}
	return nil
}
func (m messages) WithAttrs([]slog.Attr) slog.Handler { return m }
func (m messages) WithGroup(string) slog.Handler      { return m }

// A worker started before its deployment's JetStream answers (a cluster electing leaders, an
// orchestrator not done creating the log) waits for it instead of exiting at once, and joins
// once the log and the coordination buckets are there.
func TestWorkerWaitsForTheLog(t *testing.T) {
	srv := &natsq.Server{StoreDir: t.TempDir(), Port: -1}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	logs := make(messages, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWorker(ctx, WorkerConfig{ID: "w1", Data: t.TempDir(), NATS: srv.ClientURL(), SessionTimeout: 3 * time.Second},
			slog.New(logs))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("RunWorker did not return")
		}
	})
	for waiting := false; !waiting; {
		select {
		case msg := <-logs:
			waiting = strings.HasPrefix(msg, "starting: sync log not answering")
		case err := <-done:
			t.Fatalf("the worker exited with no sync log: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the worker did not say it waits for the sync log")
		}
	}
	// What the orchestrator creates: the log and the coordination buckets.
	nc, err := srv.Connect("orchestrator", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := synclog.Ensure(ctx, nc, 1); err != nil {
		t.Fatal(err)
	}
	k := kvcoord.New(nc)
	if err := k.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	deadline := time.Now().Add(WorkerStartPatience)
	for {
		ms, err := k.Members(ctx)
		if err == nil && len(ms) == 1 && ms[0].ID == "w1" && ms[0].Ready {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the worker exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("w1 not a ready member: %v, %v", ms, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
