// Package logtest is the contract of the sync log: the JetStream stream (synclog) and the
// in-memory log of unit tests (memlog) both pass it, so a worker tested against one behaves
// the same against the other.
package logtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/rideshare/rideshare/broker/synclog"
)

// Log is what the suite checks: what a worker and the orchestrator use of the sync log.
type Log interface {
	Append(ctx context.Context, expectLast uint64, data []byte) (uint64, error)
	Last(ctx context.Context) (uint64, error)
	Confirmed(ctx context.Context) (uint64, error)
	Get(ctx context.Context, seq uint64) (synclog.Msg, error)
	State(ctx context.Context) (synclog.State, error)
	Read(ctx context.Context, from, to uint64, batch int, fn func([]synclog.Msg) error) error
}

// Run runs the contract; newLog returns a new, empty log each call.
func Run(t *testing.T, newLog func(t *testing.T) Log) {
	t.Run("AppendNumbersFromOne", func(t *testing.T) { appendNumbers(t, newLog(t)) })
	t.Run("StaleAppendIsFencedAndAddsNothing", func(t *testing.T) { staleFenced(t, newLog(t)) })
	t.Run("OneOfConcurrentAppendersWins", func(t *testing.T) { oneWins(t, newLog(t)) })
	t.Run("ReadDeliversRangeInOrderInBatches", func(t *testing.T) { readRange(t, newLog(t)) })
	t.Run("ReadEdges", func(t *testing.T) { readEdges(t, newLog(t)) })
	t.Run("GetAndState", func(t *testing.T) { getAndState(t, newLog(t)) })
}

func fill(t *testing.T, l Log, n int) {
	t.Helper()
	for i := range n {
		if _, err := l.Append(t.Context(), uint64(i), fmt.Appendf(nil, "e%d", i+1)); err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
	}
}

func appendNumbers(t *testing.T, l Log) {
	if last, err := l.Last(t.Context()); err != nil || last != 0 {
		t.Fatalf("empty log's Last = %d, %v; want 0", last, err)
	}
	for i := range 5 {
		seq, err := l.Append(t.Context(), uint64(i), []byte("x"))
		if err != nil || seq != uint64(i+1) {
			t.Fatalf("append after %d = %d, %v; want %d", i, seq, err, i+1)
		}
	}
	if last, err := l.Last(t.Context()); err != nil || last != 5 {
		t.Fatalf("Last = %d, %v; want 5", last, err)
	}
	// One server (or one process) holds the only copy: it always leads it.
	if last, err := l.Confirmed(t.Context()); err != nil || last != 5 {
		t.Fatalf("Confirmed = %d, %v; want 5", last, err)
	}
}

func staleFenced(t *testing.T, l Log) {
	fill(t, l, 3)
	for _, stale := range []uint64{0, 2, 4} {
		if _, err := l.Append(t.Context(), stale, []byte("late")); !errors.Is(err, synclog.ErrFenced) {
			t.Errorf("append expecting %d on a log at 3: %v, want ErrFenced", stale, err)
		}
	}
	if last, _ := l.Last(t.Context()); last != 3 {
		t.Fatalf("fenced appends moved the log to %d", last)
	}
}

func oneWins(t *testing.T, l Log) {
	fill(t, l, 1)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := l.Append(t.Context(), 1, fmt.Appendf(nil, "racer %d", i))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	won := 0
	for err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, synclog.ErrFenced):
			t.Errorf("losing append: %v, want ErrFenced", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d appenders expecting 1 succeeded, want exactly 1", won)
	}
	if last, _ := l.Last(t.Context()); last != 2 {
		t.Fatalf("log at %d after the race, want 2", last)
	}
}

func readRange(t *testing.T, l Log) {
	fill(t, l, 10)
	var got []uint64
	err := l.Read(t.Context(), 3, 9, 2, func(msgs []synclog.Msg) error {
		if len(msgs) == 0 || len(msgs) > 2 {
			t.Errorf("batch of %d, want 1 or 2", len(msgs))
		}
		for _, m := range msgs {
			if want := fmt.Sprintf("e%d", m.Seq); string(m.Data) != want {
				t.Errorf("entry %d holds %q, want %q", m.Seq, m.Data, want)
			}
			got = append(got, m.Seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[3 4 5 6 7 8 9]" {
		t.Fatalf("read 3..9 delivered %v", got)
	}
}

func readEdges(t *testing.T, l Log) {
	fill(t, l, 4)
	calls := 0
	count := func([]synclog.Msg) error { calls++; return nil }
	if err := l.Read(t.Context(), 3, 2, 10, count); err != nil || calls != 0 {
		t.Errorf("empty range: %v, %d calls; want nil, 0", err, calls)
	}
	var first uint64
	if err := l.Read(t.Context(), 0, 1, 10, func(m []synclog.Msg) error { first = m[0].Seq; return nil }); err != nil || first != 1 {
		t.Errorf("read from 0: first %d, %v; want 1 (0 means the start)", first, err)
	}
	stop := errors.New("enough")
	calls = 0
	if err := l.Read(t.Context(), 1, 4, 1, func([]synclog.Msg) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("fn's error: %v after %d calls; want it returned after 1", err, calls)
	}
	if err := l.Read(t.Context(), 1, 9, 10, func([]synclog.Msg) error { return nil }); err == nil {
		t.Error("read past the end succeeded")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Read(ctx, 1, 4, 1, func([]synclog.Msg) error { return nil }); err == nil {
		t.Error("read with an ended context succeeded")
	}
}

func getAndState(t *testing.T, l Log) {
	fill(t, l, 3)
	m, err := l.Get(t.Context(), 2)
	if err != nil || m.Seq != 2 || string(m.Data) != "e2" {
		t.Fatalf("Get(2) = %+v, %v", m, err)
	}
	if _, err := l.Get(t.Context(), 7); err == nil {
		t.Error("Get of a missing entry succeeded")
	}
	st, err := l.State(t.Context())
	if err != nil || st.Last != 3 || st.Bytes == 0 {
		t.Fatalf("State = %+v, %v; want Last 3 and some bytes", st, err)
	}
}
