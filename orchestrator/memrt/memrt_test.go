package memrt_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/memrt"
	"github.com/rideshare/rideshare/orchestrator/runtimetest"
)

var _ orchestrator.Runtime = (*memrt.Runtime)(nil)

// ends records why each worker's context ended.
type ends struct {
	mu  sync.Mutex
	why map[string]error
}

func (e *ends) run(ctx context.Context, id string, _ int) error {
	<-ctx.Done()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.why[id] = context.Cause(ctx)
	return nil
}

func TestContract(t *testing.T) {
	rts := map[orchestrator.Runtime]*ends{}
	runtimetest.Run(t, func(t *testing.T) orchestrator.Runtime {
		e := &ends{why: map[string]error{}}
		rt := memrt.New(e.run)
		t.Cleanup(func() { rt.Close() })
		rts[rt] = e
		return rt
	}, runtimetest.Hooks{
		Exit: func(t *testing.T, rt orchestrator.Runtime, id string) {
			if err := rt.(*memrt.Runtime).Exit(id); err != nil {
				t.Fatal(err)
			}
		},
		Clean: func(t *testing.T, rt orchestrator.Runtime, id string) bool {
			e := rts[rt]
			e.mu.Lock()
			defer e.mu.Unlock()
			return errors.Is(e.why[id], memrt.ErrStopped)
		},
	})
}

// The helpers tests build on: why a worker ended, start order, PIDs, awaiting List rounds.
func TestHelpers(t *testing.T) {
	e := &ends{why: map[string]error{}}
	rt := memrt.New(e.run)
	t.Cleanup(func() { rt.Close() })
	ctx := context.Background()
	for i, id := range []string{"a", "b", "c"} {
		pid, err := rt.Start(ctx, id)
		if err != nil || pid != memrt.FirstPID+i {
			t.Fatalf("Start(%s) = %d, %v; want PID %d", id, pid, err, memrt.FirstPID+i)
		}
	}
	if _, err := rt.Start(ctx, "a"); err == nil {
		t.Fatal("a running worker's ID was started again")
	}
	if got := rt.Started(); len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("Started = %v", got)
	}
	if err := rt.Exit("a"); err != nil {
		t.Fatal(err)
	}
	if err := rt.Kill("b"); err != nil {
		t.Fatal(err)
	}
	if err := rt.Stop(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]error{"a": memrt.ErrExited, "b": memrt.ErrKilled, "c": memrt.ErrStopped} {
		if !errors.Is(e.why[id], want) {
			t.Errorf("%s ended with cause %v, want %v", id, e.why[id], want)
		}
	}
	if err := rt.Exit("a"); !errors.Is(err, memrt.ErrNoWorker) {
		t.Errorf("Exit of an ended worker: %v, want ErrNoWorker", err)
	}

	rounds := rt.AfterLists(2)
	rt.List(ctx)
	select {
	case <-rounds:
		t.Fatal("AfterLists(2) closed after one List")
	default:
	}
	rt.List(ctx)
	<-rounds // hangs (the test times out) if not closed
}

// A worker that returns by itself has exited: it leaves the list.
func TestReturnIsExit(t *testing.T) {
	release := make(chan struct{})
	rt := memrt.New(func(ctx context.Context, id string, pid int) error {
		<-release
		return errors.New("crashed")
	})
	t.Cleanup(func() { rt.Close() })
	if _, err := rt.Start(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	close(release)
	// Nothing but the return ends it: wait for the list to drop it (the test's timeout bounds
	// the wait).
	for {
		if ws, _ := rt.List(context.Background()); len(ws) == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := rt.Kill("a"); !errors.Is(err, memrt.ErrNoWorker) {
		t.Fatalf("Kill of a worker that returned: %v, want ErrNoWorker", err)
	}
}

// Stop waits for a worker's clean shutdown, or gives up with ctx and leaves it listed.
func TestStopWaits(t *testing.T) {
	for _, giveUp := range []bool{false, true} {
		release := make(chan struct{})
		stopping := make(chan struct{})
		rt := memrt.New(func(ctx context.Context, id string, pid int) error {
			<-ctx.Done()
			close(stopping)
			<-release
			return nil
		})
		if _, err := rt.Start(context.Background(), "a"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- rt.Stop(ctx, "a") }()
		<-stopping // Stop has asked
		select {
		case err := <-done:
			t.Fatalf("Stop returned (%v) before the worker's function did", err)
		default:
		}
		if giveUp {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("Stop given up: %v, want context.Canceled", err)
			}
			if ws, _ := rt.List(context.Background()); len(ws) != 1 {
				t.Fatalf("List = %v while the worker still shuts down", ws)
			}
			close(release)
		} else {
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if ws, _ := rt.List(context.Background()); len(ws) != 0 {
				t.Fatalf("List = %v after Stop", ws)
			}
		}
		cancel()
		rt.Close()
	}
}
