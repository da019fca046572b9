package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rideshare/rideshare/broker/synclog"
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

// confirmedHere is the look at the log's head of a node that embeds the NATS server named
// server: the log's confirmed head (synclog.Log.ConfirmedHead), refused if that server leads
// the log and this process was just paused (w).
func confirmedHere(head func(context.Context) (synclog.Head, error), server string, w *pauseWatch) func(context.Context) (uint64, error) {
	return func(ctx context.Context) (uint64, error) {
		h, err := head(ctx)
		if err != nil {
			return 0, err
		}
		if h.Leader == server {
			if err := w.check(time.Now()); err != nil {
				return 0, err
			}
		}
		return h.Seq, nil
	}
}

// errJustResumed refuses a look at the log's head just after this process was paused.
var errJustResumed = errors.New("this node was not running a moment ago")

// pauseWatch notices that this process stopped running for a while: SIGSTOP, a starved
// machine, a long pause of the runtime. The log's leader may be in this process (the node's
// embedded NATS server), and synclog.Log.Confirmed trusts a leader that heard from a majority
// within synclog.LeaderLease. A leader paused past the followers' election timeout has been
// replaced, but when it runs again it may first read the answers its followers sent before the
// pause, still buffered, and count them as heard just now; it steps down only once it reads
// the new leader's heartbeat, within a second. So while this node's server leads, its looks
// are refused while a gap in this process's running is unseen or less than Hold old.
// Gap + synclog.LeaderLease must stay below NATS's 4 s minimum election timeout: a leader that
// stopped for less than Gap was not replaced meanwhile, and the answers it reads as new after
// such a stop keep it within the lease only until it could have been.
type pauseWatch struct {
	Tick time.Duration // how often the watch runs
	Gap  time.Duration // a longer time between two runs is a pause
	Hold time.Duration // looks refused for this long after a pause ends

	mu      sync.Mutex
	last    time.Time // the watch's last run
	resumed time.Time // when the last pause ended
}

func newPauseWatch() *pauseWatch {
	return &pauseWatch{Tick: 100 * time.Millisecond, Gap: 1500 * time.Millisecond, Hold: 2 * time.Second, last: time.Now()}
}

// run notes the time on every tick until ctx ends.
func (p *pauseWatch) run(ctx context.Context) {
	t := time.NewTicker(p.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.note(time.Now())
		}
	}
}

func (p *pauseWatch) note(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.last) > p.Gap {
		p.resumed = now
	}
	p.last = now
}

// check refuses a look at now if this process has not run for Gap, or ran again less than
// Hold ago after a pause. A nil watch refuses nothing.
func (p *pauseWatch) check(now time.Time) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if d := now.Sub(p.last); d > p.Gap {
		return fmt.Errorf("%w (for %v)", errJustResumed, d.Round(time.Millisecond))
	}
	if !p.resumed.IsZero() && now.Sub(p.resumed) < p.Hold {
		return fmt.Errorf("%w (running again %v ago)", errJustResumed, now.Sub(p.resumed).Round(time.Millisecond))
	}
	return nil
}
