// Package runtimetest is the contract every orchestrator.Runtime passes (procrt, dockerrt,
// memrt): what the supervisor relies on.
//
//   - Start returns a positive PID, distinct from every running worker's (the election orders
//     slaves by PID), and List shows the worker with that PID as soon as Start has returned:
//     the supervisor learns that a worker died only from List (no exit notification), so a
//     worker missing from the List after its Start would be taken for dead and replaced.
//   - A worker whose process ends by itself (a crash) leaves List.
//   - Stop ends the worker cleanly (it shuts down, it is not killed) and it is gone from List
//     when Stop returns.
//   - Kill ends the worker at once (no clean shutdown) and it leaves List.
//   - Kill and Stop of an ID never started return an error, and so does Kill of a worker that
//     has ended: the crash API answers 409 when the worker it picked died meanwhile. (Stop of
//     an ended worker is left open: Docker stops and removes an exited container quietly.)
//   - Calls from several goroutines at once are safe: scale-in stops run beside the
//     supervisor's rounds (Start, List, Kill).
//   - Adoption, where the runtime has it (dockerrt): another Runtime of the same deployment
//     lists the workers the first one started, with their PIDs, and can kill them. Where it
//     has not (procrt: workers die with the orchestrator that started them), a new Runtime
//     lists none of them, so a restarted orchestrator starts fresh workers.
//
// The suite waits for asynchronous effects by polling List, bounded by Hooks.Within.
package runtimetest

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/rideshare/rideshare/orchestrator"
)

// Hooks is what the suite needs beyond the Runtime interface.
type Hooks struct {
	// Exit ends worker id's process from outside the runtime, as a crash does.
	Exit func(t *testing.T, rt orchestrator.Runtime, id string)
	// Up waits until worker id is up: stopped now, it would shut down cleanly (its process
	// handles the stop signal already). Nil: at once.
	Up func(t *testing.T, rt orchestrator.Runtime, id string)
	// Clean reports whether worker id, which has ended, shut down cleanly rather than being
	// killed. It may wait for the answer. Nil: not checked.
	Clean func(t *testing.T, rt orchestrator.Runtime, id string) bool
	// Reopen returns another Runtime of rt's deployment, as a restarted orchestrator makes
	// one. Nil: adoption is not checked.
	Reopen func(t *testing.T, rt orchestrator.Runtime) orchestrator.Runtime
	// Adopts says whether Reopen's runtime lists rt's workers (true) or none of them.
	Adopts bool
	// Within bounds each wait for List to show a change; 0: 20 s. A bound against hanging,
	// not a speed requirement.
	Within time.Duration
}

// Run runs the contract on runtimes from newRuntime, each of a fresh deployment with no
// workers, closed by t's cleanup.
func Run(t *testing.T, newRuntime func(t *testing.T) orchestrator.Runtime, h Hooks) {
	if h.Within == 0 {
		h.Within = 20 * time.Second
	}
	s := &suite{newRuntime: newRuntime, h: h}
	t.Run("StartedWorkerIsListedWithItsPID", s.startedIsListed)
	t.Run("WorkerThatExitsLeavesTheList", s.exitedLeaves)
	t.Run("StopEndsTheWorkerCleanly", s.stopIsClean)
	t.Run("KillEndsTheWorkerAtOnce", s.killEnds)
	t.Run("UnknownWorkerIsAnError", s.unknownIsError)
	t.Run("ConcurrentCallsAreSafe", s.concurrent)
	if h.Reopen != nil {
		t.Run("AnotherRuntimeOfTheDeployment", s.reopen)
	}
}

type suite struct {
	newRuntime func(t *testing.T) orchestrator.Runtime
	h          Hooks
}

func mustStart(t *testing.T, rt orchestrator.Runtime, id string) int {
	t.Helper()
	pid, err := rt.Start(context.Background(), id)
	if err != nil {
		t.Fatalf("Start(%s): %v", id, err)
	}
	if pid <= 0 {
		t.Fatalf("Start(%s) = PID %d, want a positive PID", id, pid)
	}
	return pid
}

func mustList(t *testing.T, rt orchestrator.Runtime) map[string]int {
	t.Helper()
	ws, err := rt.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return ws
}

// awaitGone polls List until id has left it.
func (s *suite) awaitGone(t *testing.T, rt orchestrator.Runtime, id, after string) {
	t.Helper()
	deadline := time.Now().Add(s.h.Within)
	for {
		ws := mustList(t, rt)
		if _, ok := ws[id]; !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still listed %v after %s: %v", id, s.h.Within, after, ws)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *suite) startedIsListed(t *testing.T) {
	rt := s.newRuntime(t)
	if ws := mustList(t, rt); len(ws) != 0 {
		t.Fatalf("a fresh deployment lists %v", ws)
	}
	want := map[string]int{}
	for _, id := range []string{"list-a", "list-b", "list-c"} {
		want[id] = mustStart(t, rt, id)
		// At once, not eventually: see the package comment.
		if got := mustList(t, rt); !maps.Equal(got, want) {
			t.Fatalf("List right after Start(%s) = %v, want %v", id, got, want)
		}
	}
	seen := map[int]string{}
	for id, pid := range want {
		if other, dup := seen[pid]; dup {
			t.Fatalf("workers %s and %s have one PID %d", id, other, pid)
		}
		seen[pid] = id
	}
}

func (s *suite) exitedLeaves(t *testing.T) {
	rt := s.newRuntime(t)
	mustStart(t, rt, "exit-a")
	pb := mustStart(t, rt, "exit-b")
	s.h.Exit(t, rt, "exit-a")
	s.awaitGone(t, rt, "exit-a", "its process ended")
	if got := mustList(t, rt); !maps.Equal(got, map[string]int{"exit-b": pb}) {
		t.Fatalf("List = %v after exit-a ended, want exit-b: %d alone", got, pb)
	}
}

func (s *suite) stopIsClean(t *testing.T) {
	rt := s.newRuntime(t)
	mustStart(t, rt, "stop-a")
	pb := mustStart(t, rt, "stop-b")
	if s.h.Up != nil {
		s.h.Up(t, rt, "stop-a")
	}
	if err := rt.Stop(context.Background(), "stop-a"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := mustList(t, rt); !maps.Equal(got, map[string]int{"stop-b": pb}) {
		t.Fatalf("List right after Stop(stop-a) = %v, want stop-b: %d alone", got, pb)
	}
	if s.h.Clean != nil && !s.h.Clean(t, rt, "stop-a") {
		t.Fatal("a stopped worker did not shut down cleanly")
	}
}

func (s *suite) killEnds(t *testing.T) {
	rt := s.newRuntime(t)
	mustStart(t, rt, "kill-a")
	pb := mustStart(t, rt, "kill-b")
	if err := rt.Kill("kill-a"); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	s.awaitGone(t, rt, "kill-a", "Kill")
	if got := mustList(t, rt); !maps.Equal(got, map[string]int{"kill-b": pb}) {
		t.Fatalf("List = %v after Kill(kill-a), want kill-b: %d alone", got, pb)
	}
	if s.h.Clean != nil && s.h.Clean(t, rt, "kill-a") {
		t.Fatal("a killed worker shut down cleanly")
	}
	if err := rt.Kill("kill-a"); err == nil {
		t.Error("Kill of a worker killed before: no error")
	}
}

func (s *suite) unknownIsError(t *testing.T) {
	rt := s.newRuntime(t)
	if err := rt.Kill("never-started"); err == nil {
		t.Error("Kill of an ID never started: no error")
	}
	if err := rt.Stop(context.Background(), "never-started"); err == nil {
		t.Error("Stop of an ID never started: no error")
	}
	mustStart(t, rt, "gone-a")
	s.h.Exit(t, rt, "gone-a")
	s.awaitGone(t, rt, "gone-a", "its process ended")
	if err := rt.Kill("gone-a"); err == nil {
		t.Error("Kill of a worker whose process ended: no error")
	}
}

// concurrent runs what the supervisor may run at once: stops of some workers while others
// start and the list is read. -race checks the rest.
func (s *suite) concurrent(t *testing.T) {
	rt := s.newRuntime(t)
	const n = 3
	for i := range n {
		mustStart(t, rt, fmt.Sprintf("old-%d", i))
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errc := make(chan error, 3*n)
	for i := range n {
		wg.Go(func() { errc <- rt.Stop(ctx, fmt.Sprintf("old-%d", i)) })
		wg.Go(func() {
			_, err := rt.Start(ctx, fmt.Sprintf("new-%d", i))
			errc <- err
		})
		wg.Go(func() {
			_, err := rt.List(ctx)
			errc <- err
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	got := mustList(t, rt)
	if len(got) != n {
		t.Fatalf("List = %v, want new-0 … new-%d", got, n-1)
	}
	for i := range n {
		if _, ok := got[fmt.Sprintf("new-%d", i)]; !ok {
			t.Fatalf("List = %v, want new-0 … new-%d", got, n-1)
		}
	}
}

func (s *suite) reopen(t *testing.T) {
	rt := s.newRuntime(t)
	want := map[string]int{"adopt-a": mustStart(t, rt, "adopt-a"), "adopt-b": mustStart(t, rt, "adopt-b")}
	again := s.h.Reopen(t, rt)
	got := mustList(t, again)
	if !s.h.Adopts {
		if len(got) != 0 {
			t.Fatalf("a runtime that does not adopt lists another's workers: %v", got)
		}
		return
	}
	if !maps.Equal(got, want) {
		t.Fatalf("another runtime of the deployment lists %v, want %v", got, want)
	}
	if err := again.Kill("adopt-a"); err != nil {
		t.Fatalf("Kill of an adopted worker: %v", err)
	}
	s.awaitGone(t, again, "adopt-a", "Kill by the adopting runtime")
	s.awaitGone(t, rt, "adopt-a", "Kill by the adopting runtime")
}
