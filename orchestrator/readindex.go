package orchestrator

import (
	"context"
	"sync"
	"time"
)

// readIndex gives a strong read the sync log's last sequence as of some moment after the read
// arrived, as etcd's ReadIndex does: every write acknowledged before that moment, through any
// node, is at or below it. Reads that wait together share one fetch: a read joins the next
// fetch that has not started yet, never one already under way (it may have read the log before
// the read arrived).
type readIndex struct {
	last func(context.Context) (uint64, error)

	mu      sync.Mutex
	next    *indexFetch // the fetch the reads arriving now join
	running bool        // a goroutine is fetching
}

type indexFetch struct {
	done    chan struct{}
	readers int // reads waiting for it
	seq     uint64
	err     error
}

// fetchTimeout bounds one look at the log's head.
const fetchTimeout = 2 * time.Second

// wait returns the log's last sequence, read after wait was called.
func (r *readIndex) wait(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &indexFetch{done: make(chan struct{})}
	}
	f := r.next
	f.readers++
	if !r.running {
		r.running = true
		go r.fetchAll()
	}
	r.mu.Unlock()
	select {
	case <-f.done:
		return f.seq, f.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// fetchAll runs fetches back to back while reads are waiting for one.
func (r *readIndex) fetchAll() {
	for {
		r.mu.Lock()
		f := r.next
		r.next = nil
		if f == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		f.seq, f.err = r.last(ctx)
		cancel()
		close(f.done)
	}
}
