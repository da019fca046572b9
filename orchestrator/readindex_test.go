package orchestrator

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeHead is a log head whose every look the test answers.
type fakeHead struct {
	asked   chan struct{} // a look started
	answers chan uint64   // what the look returns
}

func (h *fakeHead) last(ctx context.Context) (uint64, error) {
	h.asked <- struct{}{}
	select {
	case seq := <-h.answers:
		return seq, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func awaitAsk(t *testing.T, h *fakeHead) {
	t.Helper()
	select {
	case <-h.asked:
	case <-time.After(5 * time.Second):
		t.Fatal("the log's head was not looked at")
	}
}

// A read that arrives while a look at the head is under way waits for the next look: the one
// under way may have read the head before the read's write was acknowledged.
func TestReadIndexNeverUsesALookStartedBeforeTheRead(t *testing.T) {
	h := &fakeHead{asked: make(chan struct{}), answers: make(chan uint64)}
	r := &readIndex{last: h.last}
	first := make(chan uint64)
	go func() { seq, _ := r.wait(context.Background()); first <- seq }()
	awaitAsk(t, h) // look 1 under way
	second := make(chan uint64)
	go func() { seq, _ := r.wait(context.Background()); second <- seq }()
	// The second read joins look 2, which cannot start before look 1 ends.
	h.answers <- 5
	if got := <-first; got != 5 {
		t.Fatalf("first read: %d, want 5", got)
	}
	awaitAsk(t, h)
	select {
	case got := <-second:
		t.Fatalf("second read answered %d by the look started before it", got)
	default:
	}
	h.answers <- 7
	if got := <-second; got != 7 {
		t.Fatalf("second read: %d, want 7", got)
	}
}

// Reads waiting together share one look.
func TestReadIndexBatchesWaitingReads(t *testing.T) {
	h := &fakeHead{asked: make(chan struct{}), answers: make(chan uint64)}
	r := &readIndex{last: h.last}
	go r.wait(context.Background())
	awaitAsk(t, h) // look 1 holds the next ones back
	const n = 50
	var wg sync.WaitGroup
	got := make(chan uint64, n)
	for range n {
		wg.Go(func() { seq, _ := r.wait(context.Background()); got <- seq })
	}
	// Look 1 ends once every read has joined look 2.
	awaitTrue(t, "the reads to queue", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.next != nil && r.next.readers == n
	})
	h.answers <- 1
	awaitAsk(t, h) // look 2, for all n
	h.answers <- 9
	wg.Wait()
	close(got)
	for seq := range got {
		if seq != 9 {
			t.Fatalf("a read got %d, want 9 from the look they shared", seq)
		}
	}
}
