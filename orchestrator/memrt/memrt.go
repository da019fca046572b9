// Package memrt is a worker runtime in memory, for tests: a worker is a goroutine running the
// function the test gives, and PIDs count up from 1001 in start order. It has the method set
// of orchestrator.Runtime and passes runtimetest, like procrt and dockerrt, but it does not
// import package orchestrator, so the orchestrator's own (internal) tests can use it.
//
// A goroutine cannot be killed: Kill and Exit end the worker's context and the worker is gone
// from List at once, as a killed process is; its function must then return at once, without
// cleaning up (a crashed worker leaves its coordination session to expire). Stop asks for a
// clean shutdown and waits for the function to return, however long it takes.
package memrt

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Why a worker's context ended, as context.Cause reports it.
var (
	// ErrStopped: Stop asked the worker to shut down cleanly.
	ErrStopped = errors.New("memrt: worker stopped")
	// ErrKilled: Kill ended the worker at once.
	ErrKilled = errors.New("memrt: worker killed")
	// ErrExited: the worker's process died by itself (Exit), as a crash does.
	ErrExited = errors.New("memrt: worker exited")
)

// ErrNoWorker is returned for an ID that no running worker has.
var ErrNoWorker = errors.New("memrt: no such worker")

// FirstPID is the PID of the first worker a Runtime starts.
const FirstPID = 1001

// Func is what a worker does. It runs until it returns (the process exits) or ctx ends; then
// context.Cause(ctx) is ErrStopped, ErrKilled or ErrExited.
type Func func(ctx context.Context, id string, pid int) error

// Runtime runs workers as goroutines. It is safe for concurrent use.
type Runtime struct {
	run Func

	mu      sync.Mutex
	nextPID int
	procs   map[string]*proc
	started []string
	lists   int          // List calls returned
	waiters []listWaiter // AfterLists channels not closed yet
	wg      sync.WaitGroup
}

type proc struct {
	pid    int
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when the function has returned
}

type listWaiter struct {
	at int
	ch chan struct{}
}

// New returns a runtime whose workers run run.
func New(run Func) *Runtime {
	return &Runtime{run: run, nextPID: FirstPID, procs: map[string]*proc{}}
}

// Start runs worker id and returns its PID. It is listed from now until it ends. An ID that a
// running worker has is refused, as an engine refuses a second container of one name.
func (r *Runtime) Start(_ context.Context, id string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.procs[id]; ok {
		return 0, fmt.Errorf("memrt: worker %s is running already", id)
	}
	// The worker's context is its own: a process outlives the call that started it.
	ctx, cancel := context.WithCancelCause(context.Background())
	p := &proc{pid: r.nextPID, cancel: cancel, done: make(chan struct{})}
	r.nextPID++
	r.procs[id] = p
	r.started = append(r.started, id)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		_ = r.run(ctx, id, p.pid)
		r.forget(id, p) // listed until it has returned, unless killed before
		cancel(nil)
		close(p.done)
	}()
	return p.pid, nil
}

// forget drops p from the list if it is still id's worker.
func (r *Runtime) forget(id string, p *proc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.procs[id] == p {
		delete(r.procs, id)
	}
}

func (r *Runtime) get(id string) (*proc, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.procs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoWorker, id)
	}
	return p, nil
}

// Stop asks worker id to shut down cleanly (its context ends with ErrStopped) and waits until
// its function has returned, or until ctx ends (then the worker still runs and is listed).
func (r *Runtime) Stop(ctx context.Context, id string) error {
	p, err := r.get(id)
	if err != nil {
		return err
	}
	p.cancel(ErrStopped)
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("memrt: stop worker %s: %w", id, ctx.Err())
	}
}

// Kill ends worker id at once: it leaves the list, its context ends with ErrKilled, and Kill
// returns when its function has.
func (r *Runtime) Kill(id string) error { return r.end(id, ErrKilled) }

// Exit makes worker id's process die by itself, as a crash does (not through the runtime, so
// the supervisor learns of it from List): like Kill, with ErrExited.
func (r *Runtime) Exit(id string) error { return r.end(id, ErrExited) }

func (r *Runtime) end(id string, why error) error {
	p, err := r.get(id)
	if err != nil {
		return err
	}
	r.forget(id, p)
	p.cancel(why)
	<-p.done
	return nil
}

// List returns the running workers, ID to PID.
func (r *Runtime) List(context.Context) (map[string]int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.procs))
	for id, p := range r.procs {
		out[id] = p.pid
	}
	r.lists++
	keep := r.waiters[:0]
	for _, w := range r.waiters {
		if r.lists >= w.at {
			close(w.ch)
		} else {
			keep = append(keep, w)
		}
	}
	r.waiters = keep
	return out, nil
}

// AfterLists returns a channel closed once List has been called n more times. A supervisor
// lists once per round, so a test can await rounds instead of sleeping through them.
func (r *Runtime) AfterLists(n int) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{})
	if n <= 0 {
		close(ch)
		return ch
	}
	r.waiters = append(r.waiters, listWaiter{at: r.lists + n, ch: ch})
	return ch
}

// Started returns every ID started, in start order.
func (r *Runtime) Started() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.started...)
}

// Close kills the running workers and waits for every worker's function to return, a stop
// under way included.
func (r *Runtime) Close() error {
	r.mu.Lock()
	ids := make([]string, 0, len(r.procs))
	for id := range r.procs {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	for _, id := range ids {
		_ = r.Kill(id)
	}
	r.wg.Wait()
	return nil
}
