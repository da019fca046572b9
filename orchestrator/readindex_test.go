package orchestrator

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker/synclog"
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

// A look at the log's head is refused while this process may just have been paused: the
// leader in it may count its followers' old answers as new (pauseWatch).
func TestPauseWatchRefusesLooksJustAfterAPause(t *testing.T) {
	t0 := time.Now()
	p := &pauseWatch{Tick: 100 * time.Millisecond, Gap: 2 * time.Second, Hold: 2 * time.Second, last: t0}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for d := time.Duration(0); d <= 5*time.Second; d += 100 * time.Millisecond {
		p.note(at(d))
	}
	if err := p.check(at(5*time.Second + 50*time.Millisecond)); err != nil {
		t.Fatalf("running steadily: %v", err)
	}
	// Stopped from 5 s to 9 s; a look before the watch runs again sees the gap.
	if err := p.check(at(9 * time.Second)); !errors.Is(err, errJustResumed) {
		t.Fatalf("look before the watch ran again: %v, want errJustResumed", err)
	}
	p.note(at(9 * time.Second))
	if err := p.check(at(10 * time.Second)); !errors.Is(err, errJustResumed) {
		t.Fatalf("look 1 s after the pause ended: %v, want errJustResumed", err)
	}
	for d := 9 * time.Second; d <= 11*time.Second; d += 100 * time.Millisecond {
		p.note(at(d))
	}
	if err := p.check(at(11*time.Second + 50*time.Millisecond)); err != nil {
		t.Fatalf("look 2 s after the pause ended: %v", err)
	}
	// A shorter stall is no pause: the followers cannot have elected another leader meanwhile.
	p.note(at(12*time.Second + 900*time.Millisecond))
	if err := p.check(at(13 * time.Second)); err != nil {
		t.Fatalf("after a 1.8 s stall: %v", err)
	}
	var none *pauseWatch
	if err := none.check(at(time.Hour)); err != nil {
		t.Fatalf("no watch: %v", err)
	}
}

// Just after a pause, a node refuses a look answered by its own server as the log's leader:
// that server may count its followers' answers from before the pause as new. A look answered
// by another server's leader is taken.
func TestLookRefusedJustAfterAPauseOnlyIfThisNodeLeads(t *testing.T) {
	p := newPauseWatch()
	p.last = time.Now().Add(-time.Minute) // the watch has not run for a minute
	head := func(leader string) func(context.Context) (synclog.Head, error) {
		return func(context.Context) (synclog.Head, error) { return synclog.Head{Seq: 5, Leader: leader}, nil }
	}
	r := &readIndex{last: confirmedHere(head("node1"), "node1", p)}
	if _, err := r.wait(t.Context()); !errors.Is(err, errJustResumed) {
		t.Fatalf("read index from this node's own server after a pause: %v, want errJustResumed", err)
	}
	r = &readIndex{last: confirmedHere(head("node2"), "node1", p)}
	if seq, err := r.wait(t.Context()); err != nil || seq != 5 {
		t.Fatalf("read index from another server after a pause: %d, %v; want 5", seq, err)
	}
}
