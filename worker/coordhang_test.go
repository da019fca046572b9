package worker_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/worker"
)

// hangingCoord is a coordination session whose state updates and designation lookups hang,
// once hang is set, until their context ends or the test ends: a coordinator whose servers
// stopped answering (a JetStream cluster electing the coordination bucket's next leader).
type hangingCoord struct {
	coord.Coordinator
	hang    atomic.Bool
	calls   atomic.Int64 // calls that hung
	release chan struct{}
	once    sync.Once
}

func (h *hangingCoord) stall(ctx context.Context) error {
	if !h.hang.Load() {
		return nil
	}
	h.calls.Add(1)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-h.release:
		return nil
	}
}

func (h *hangingCoord) Update(ctx context.Context, m coord.Member) error {
	if err := h.stall(ctx); err != nil {
		return err
	}
	return h.Coordinator.Update(ctx, m)
}

func (h *hangingCoord) Designated(ctx context.Context) (string, error) {
	if err := h.stall(ctx); err != nil {
		return "", err
	}
	return h.Coordinator.Designated(ctx)
}

// A slave goes on applying the log and answering strong reads while its coordinator hangs:
// its state updates and master-lock lookups run beside the loop that applies entries, which
// strong reads wait for. (On that loop, one hung call stalled every strong read.)
func TestSlaveAppliesWhileCoordinatorHangs(t *testing.T) {
	d := newDeployment(t)
	h := &hangingCoord{release: make(chan struct{})}
	t.Cleanup(func() { h.once.Do(func() { close(h.release) }) })
	d.start("w1", func(w *worker.Worker) {
		h.Coordinator = w.Coord
		w.Coord = h
		w.PollEvery = 10 * time.Millisecond // ticks that publish and look for a designation
	})
	d.awaitReady("w1")
	h.hang.Store(true)
	await(t, "a coordinator call to hang", func() bool { return h.calls.Load() > 0 })
	// Entries in the log only, each read strongly while that call hangs.
	for i := range 3 {
		last := d.appendUsers(string(rune('a' + i)))
		r := d.strongRead(last)
		var rows []map[string]int
		if r.Error != "" || json.Unmarshal(r.Rows, &rows) != nil || len(rows) != 1 || rows[0]["count"] != i+1 {
			t.Fatalf("strong read at %d while the coordinator hangs: %+v", last, r)
		}
	}
}
