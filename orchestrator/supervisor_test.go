package orchestrator

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/orchestrator/memrt"
)

// The supervisor's rules, in memory: the in-memory coordinator (memcoord, which passes the
// real ones' contract suite) and runtime (memrt, likewise), whose workers are goroutines that
// join it, so a rule is checked in milliseconds, with no timeout waited out.

// supCase is one rule: a pool of 1 master and slaves slaves with opts, and what to do to it.
type supCase struct {
	name   string
	slaves int
	opts   supOpts
	run    func(t *testing.T, s *supervised)
}

var supervisorCases = []supCase{
	{name: "the pool's metrics are exported without a scaler", slaves: 1, run: func(t *testing.T, s *supervised) {
		mfs, err := s.o.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		for _, want := range []string{"rideshare_workers", "rideshare_slaves_wanted", "rideshare_worker_applied_seq"} {
			if !slices.Contains(names, want) {
				t.Errorf("no %s without a scaler: %v", want, names)
			}
		}
	}},
	{name: "a dead slave is replaced", slaves: 2, run: func(t *testing.T, s *supervised) {
		ws := s.o.Workers()
		dead := roleOf(ws, coord.RoleSlave)[0]
		master := roleOf(ws, coord.RoleMaster)[0]
		before := s.started()
		if err := s.rt.Exit(dead.ID); err != nil {
			t.Fatal(err)
		}
		after := s.waitPool(t, 2, dead.ID)
		if slices.ContainsFunc(after, func(w WorkerInfo) bool { return w.ID == dead.ID }) {
			t.Fatalf("the dead slave is still listed: %+v", after)
		}
		if m := roleOf(after, coord.RoleMaster)[0]; m.ID != master.ID {
			t.Fatalf("master changed from %s to %s when a slave died", master.ID, m.ID)
		}
		s.rounds(t, 5)
		if n := s.started() - before; n != 1 {
			t.Fatalf("%d workers started for one dead slave", n)
		}
		if n := counter(s.o.m.workersLost); n != 1 {
			t.Fatalf("workers lost = %v, want 1", n)
		}
	}},
	{name: "a dead master is replaced by the lowest-PID ready slave", slaves: 3, run: func(t *testing.T, s *supervised) {
		ws := s.o.Workers()
		master := roleOf(ws, coord.RoleMaster)[0]
		lowest := roleOf(ws, coord.RoleSlave)[0]
		failovers := counter(s.o.m.failovers)
		if err := s.rt.Exit(master.ID); err != nil {
			t.Fatal(err)
		}
		after := s.waitPool(t, 3, master.ID)
		if m := roleOf(after, coord.RoleMaster)[0]; m.ID != lowest.ID {
			t.Fatalf("new master %s (pid %d), want the lowest-PID slave %s (pid %d): %+v", m.ID, m.PID, lowest.ID, lowest.PID, after)
		}
		// Designated once, and given time to take the lock: not again at every round.
		if n := counter(s.o.m.failovers) - failovers; n != 1 {
			t.Fatalf("%v designations for one dead master", n)
		}
		// The operator's events tell the story: the master lost, a replacement started, the
		// failover with its duration.
		events, _ := s.o.events.list()
		kinds := map[string]Event{}
		for _, e := range events {
			if e.Worker == master.ID || e.Kind != EventWorkerLost {
				kinds[e.Kind] = e
			}
		}
		if e, ok := kinds[EventWorkerLost]; !ok || e.Worker != master.ID {
			t.Errorf("no worker_lost event for the master %s: %+v", master.ID, events)
		}
		if e, ok := kinds[EventFailover]; !ok || e.Worker != lowest.ID || e.Duration <= 0 {
			t.Errorf("no failover event to %s with a duration: %+v", lowest.ID, events)
		}
		if _, ok := kinds[EventWorkerStarted]; !ok {
			t.Errorf("no worker_started event: %+v", events)
		}
	}},
	{name: "a designated slave is given time to take the lock", slaves: 2, run: func(t *testing.T, s *supervised) {
		ws := s.o.Workers()
		master := roleOf(ws, coord.RoleMaster)[0]
		lowest := roleOf(ws, coord.RoleSlave)[0]
		failovers := counter(s.o.m.failovers)
		s.fleet.holdPromotion.Store(true)
		if err := s.rt.Exit(master.ID); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(10 * time.Second)
		for d, _ := s.c.Designated(context.Background()); d != lowest.ID; d, _ = s.c.Designated(context.Background()) {
			select {
			case <-s.rt.AfterLists(1):
			case <-deadline:
				t.Fatalf("designated %q, want the lowest-PID slave %s", d, lowest.ID)
			}
		}
		s.rounds(t, 10) // it holds off meanwhile
		if n := counter(s.o.m.failovers) - failovers; n != 1 {
			t.Fatalf("%v designations while the designated slave took its time", n)
		}
		close(s.fleet.worker(t, lowest.ID).promote)
		after := s.waitPool(t, 2, master.ID)
		if m := roleOf(after, coord.RoleMaster)[0]; m.ID != lowest.ID {
			t.Fatalf("new master %s, want the designated %s", m.ID, lowest.ID)
		}
	}},
	{name: "a slave that has caught up is designated before a lower-PID one that has not", slaves: 2, run: func(t *testing.T, s *supervised) {
		ws := s.o.Workers()
		master := roleOf(ws, coord.RoleMaster)[0]
		slaves := roleOf(ws, coord.RoleSlave)
		s.fleet.worker(t, slaves[0].ID).ready <- false
		s.awaitView(t, "the lowest-PID slave behind", func(ws []WorkerInfo) bool {
			return slices.ContainsFunc(ws, func(w WorkerInfo) bool { return w.ID == slaves[0].ID && !w.Ready })
		})
		if err := s.rt.Exit(master.ID); err != nil {
			t.Fatal(err)
		}
		after := s.awaitView(t, "new master", func(ws []WorkerInfo) bool {
			return len(roleOf(ws, coord.RoleMaster)) == 1 && roleOf(ws, coord.RoleMaster)[0].ID != master.ID
		})
		if m := roleOf(after, coord.RoleMaster)[0]; m.ID != slaves[1].ID {
			t.Fatalf("new master %s (pid %d), want the ready slave %s (pid %d) over the lower-PID %s behind: %+v",
				m.ID, m.PID, slaves[1].ID, slaves[1].PID, slaves[0].ID, after)
		}
	}},
	{
		// The dead master's session lives on (see fleet): only the revoke frees its lock.
		name: "a dead master's lock is revoked at once, not after its session timeout", slaves: 1,
		run: func(t *testing.T, s *supervised) {
			master := roleOf(s.o.Workers(), coord.RoleMaster)[0]
			if err := s.rt.Exit(master.ID); err != nil {
				t.Fatal(err)
			}
			after := s.waitPool(t, 1, master.ID)
			holder, err := s.c.Master(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if m := roleOf(after, coord.RoleMaster)[0]; holder != m.ID {
				t.Fatalf("lock held by %q, the view's master is %s", holder, m.ID)
			}
		},
	},
	{name: "a ghost is replaced at once and killed after its grace", slaves: 1, run: func(t *testing.T, s *supervised) {
		ghost := roleOf(s.o.Workers(), coord.RoleSlave)[0]
		w := s.fleet.worker(t, ghost.ID)
		w.pause <- struct{}{}
		w.session.Expire()
		s.waitPool(t, 1, ghost.ID)
		if why := s.fleet.awaitEnd(t, ghost.ID); !errors.Is(why, memrt.ErrKilled) {
			t.Fatalf("the ghost ended with %v, want killed", why)
		}
		if n := counter(s.o.m.workersLost); n != 1 {
			t.Fatalf("workers lost = %v, want 1", n)
		}
	}},
	{name: "a ghost is not killed before its grace", slaves: 1, opts: supOpts{ghostGrace: time.Hour}, run: func(t *testing.T, s *supervised) {
		ghost := roleOf(s.o.Workers(), coord.RoleSlave)[0]
		w := s.fleet.worker(t, ghost.ID)
		w.pause <- struct{}{}
		w.session.Expire()
		s.waitPool(t, 1, ghost.ID)
		s.rounds(t, 10)
		if !s.running(t, ghost.ID) {
			t.Fatalf("the ghost %s was killed within its grace (why: %v)", ghost.ID, s.fleet.awaitEnd(t, ghost.ID))
		}
	}},
	{
		// The second worker started never joins: it is replaced after StartTimeout, and killed.
		name: "a worker that does not join in time is replaced and killed", slaves: 1,
		opts: supOpts{silent: map[int]bool{2: true}, startTimeout: 300 * time.Millisecond, ghostGrace: time.Hour},
		run: func(t *testing.T, s *supervised) {
			silent := s.rt.Started()[1]
			if why := s.fleet.awaitEnd(t, silent); !errors.Is(why, memrt.ErrKilled) {
				t.Fatalf("the worker that never joined ended with %v, want killed", why)
			}
			if n := s.started(); n != 3 {
				t.Fatalf("%d workers started, want 3 (one replacement)", n)
			}
		},
	},
	{name: "scale-in stops the highest-PID slaves and starts no replacement", slaves: 3, opts: supOpts{holdStops: true}, run: func(t *testing.T, s *supervised) {
		ws := s.o.Workers()
		master := roleOf(ws, coord.RoleMaster)[0]
		slaves := roleOf(ws, coord.RoleSlave)
		startedBefore := s.started()
		s.o.SetSlaves(1)
		// A clean stop takes its time (a runtime's stop timeout): rounds go by meanwhile, in
		// which the slaves being stopped are neither counted nor stopped again.
		for _, w := range slaves[1:] {
			select {
			case <-s.fleet.worker(t, w.ID).stopping:
			case <-time.After(10 * time.Second):
				t.Fatalf("slave %s not stopped in 10s", w.ID)
			}
		}
		s.rounds(t, 5)
		s.release()
		after := s.waitPool(t, 1, slaves[1].ID, slaves[2].ID)
		if m := roleOf(after, coord.RoleMaster)[0]; m.ID != master.ID {
			t.Fatalf("scale-in changed the master from %s to %s", master.ID, m.ID)
		}
		if kept := roleOf(after, coord.RoleSlave)[0]; kept.ID != slaves[0].ID {
			t.Fatalf("kept slave %s (pid %d), want the lowest-PID one %s (pid %d)", kept.ID, kept.PID, slaves[0].ID, slaves[0].PID)
		}
		for _, w := range slaves[1:] {
			if why := s.fleet.awaitEnd(t, w.ID); !errors.Is(why, memrt.ErrStopped) {
				t.Errorf("scaled-in slave %s ended with %v, want a clean stop", w.ID, why)
			}
		}
		// An absence can only be watched for a while: several rounds of the supervisor, in
		// which it must not replace the stopped slaves.
		s.rounds(t, 10)
		if startedAfter := s.started(); startedAfter != startedBefore {
			t.Fatalf("%d workers started after a scale-in", startedAfter-startedBefore)
		}
		if n := counter(s.o.m.workersLost); n != 0 {
			t.Fatalf("workers lost = %v after a scale-in, want 0", n)
		}
	}},
	{name: "scale-out starts the missing slaves", slaves: 1, run: func(t *testing.T, s *supervised) {
		before := s.started()
		s.o.SetSlaves(3)
		s.waitPool(t, 3)
		s.rounds(t, 5)
		if n := s.started() - before; n != 2 {
			t.Fatalf("%d workers started to go from 1 slave to 3", n)
		}
	}},
	{name: "a new orchestrator adopts the running workers and starts none", slaves: 2, run: func(t *testing.T, s *supervised) {
		before := s.o.Workers()
		started := s.started()
		if err := s.o.Close(); err != nil {
			t.Fatal(err)
		}
		s.c = s.session(t)
		s.o = s.open(t)
		after := s.waitPool(t, 2)
		s.rounds(t, 5)
		if n := s.started() - started; n != 0 {
			t.Fatalf("the new orchestrator started %d workers beside the %d running", n, len(before))
		}
		if !slices.Equal(before, after) {
			t.Fatalf("view before the restart %+v, after %+v", before, after)
		}
	}},
}

func TestSupervisor(t *testing.T) {
	for _, tc := range supervisorCases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSupervised(t, tc.slaves, tc.opts)
			tc.run(t, s)
			// Whatever happened, no worker was started twice.
			seen := map[string]bool{}
			for _, id := range s.rt.Started() {
				if seen[id] {
					t.Fatalf("worker %s started twice: %v", id, s.rt.Started())
				}
				seen[id] = true
			}
		})
	}
}

// scaleInLocked picks the slaves to stop: highest PIDs first, never the master, the designated
// worker, one whose start has not returned (no PID yet) or one stopping already.
func TestScaleInPicks(t *testing.T) {
	for _, tc := range []struct {
		name               string
		pids               map[string]int
		stopping           []string
		master, designated string
		n                  int
		want               []string
	}{
		{name: "highest PIDs first", pids: map[string]int{"a": 1001, "b": 1002, "c": 1003, "d": 1004}, master: "a", n: 2, want: []string{"d", "c"}},
		{name: "never the master", pids: map[string]int{"a": 1001, "b": 1002, "c": 1003}, master: "c", n: 1, want: []string{"b"}},
		{name: "never the designated", pids: map[string]int{"a": 1001, "b": 1002, "c": 1003}, master: "a", designated: "c", n: 1, want: []string{"b"}},
		{name: "not one still starting", pids: map[string]int{"a": 1001, "b": 1002, "c": 0}, master: "a", n: 1, want: []string{"b"}},
		{name: "not one stopping already", pids: map[string]int{"a": 1001, "b": 1002, "c": 1003}, stopping: []string{"c"}, master: "a", n: 1, want: []string{"b"}},
		{name: "no more than there are", pids: map[string]int{"a": 1001, "b": 1002, "c": 1003}, master: "a", n: 5, want: []string{"c", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &supervisor{workers: map[string]*tracked{}, master: tc.master, designated: tc.designated}
			for id, pid := range tc.pids {
				s.workers[id] = &tracked{id: id, pid: pid, stopping: slices.Contains(tc.stopping, id)}
			}
			got := s.scaleInLocked(tc.n)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("scaleInLocked(%d) = %v, want %v", tc.n, got, tc.want)
			}
			for _, id := range got {
				if !s.workers[id].stopping {
					t.Errorf("%s picked but not marked stopping", id)
				}
			}
		})
	}
}
