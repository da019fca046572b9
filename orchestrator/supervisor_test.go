package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/coord/memcoord"
	"github.com/rideshare/rideshare/orchestrator/memrt"
)

// The supervisor's rules, in memory: the in-memory coordinator (memcoord, which passes the
// real ones' contract suite) and runtime (memrt, likewise), whose workers are goroutines that
// join it, so a rule is checked in milliseconds, with no timeout waited out.

// fleet is what the fake workers do. Each joins the coordinator as a ready slave and, when
// designated, takes the master lock and says so, as a real worker does; it exits when its
// session is lost. Stopped, it leaves cleanly. Killed or crashed, it leaves its session as it
// is: a dead process's session lives until the coordination service times it out, and here
// that never happens unless the test expires it, so what the supervisor does about a death it
// must learn from the runtime.
type fleet struct {
	svc *memcoord.Service
	// silent are the workers, by start order (1: the first; memrt's PIDs follow it), that
	// never join.
	silent map[int]bool
	// holdStops, if set, makes a stopped worker wait for it to close before it leaves.
	holdStops chan struct{}
	// holdPromotion, while set, makes a designated worker wait for its promote channel to
	// close before it takes the lock.
	holdPromotion atomic.Bool

	mu      sync.Mutex
	workers map[string]*fake
}

// fake is one fake worker, for the test to act on and watch.
type fake struct {
	session  *memcoord.Session
	ready    chan bool     // a new readiness to publish
	pause    chan struct{} // pauses the worker (SIGSTOP): it no longer acts, its process runs on
	promote  chan struct{} // see holdPromotion
	stopping chan struct{} // closed when asked to stop cleanly
	ended    chan struct{} // closed when the worker has returned
	why      error         // why it returned (the context's cause), once ended
}

func (f *fleet) run(ctx context.Context, id string, pid int) error {
	k := f.svc.Session()
	w := &fake{session: k, ready: make(chan bool), pause: make(chan struct{}),
		promote: make(chan struct{}), stopping: make(chan struct{}), ended: make(chan struct{})}
	silent := f.silent[pid-memrt.FirstPID+1]
	f.mu.Lock()
	f.workers[id] = w
	f.mu.Unlock()
	defer func() {
		w.why = context.Cause(ctx)
		close(w.ended)
	}()
	defer func() {
		if !errors.Is(context.Cause(ctx), memrt.ErrStopped) {
			return // dead: the session stays
		}
		close(w.stopping)
		if f.holdStops != nil {
			<-f.holdStops
		}
		k.Close()
	}()
	if silent {
		<-ctx.Done()
		return nil
	}
	m := coord.Member{ID: id, PID: pid, Role: coord.RoleSlave, Ready: true}
	if err := k.Join(ctx, m); err != nil {
		return err
	}
	watch, err := k.Watch(ctx)
	if err != nil {
		return err
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m.Ready = <-w.ready:
			_ = k.Update(ctx, m)
			continue
		case <-w.pause:
			<-ctx.Done() // not even the session's loss is seen
			return nil
		case <-k.Lost():
			return nil
		case <-watch:
		case <-tick.C:
		}
		if m.Role == coord.RoleMaster {
			continue
		}
		if d, err := k.Designated(ctx); err != nil || d != id {
			continue
		}
		if f.holdPromotion.Load() {
			select {
			case <-w.promote:
			case <-ctx.Done():
				return nil
			}
		}
		if k.AcquireMaster(ctx, id) == nil {
			m.Role = coord.RoleMaster
			_ = k.Update(ctx, m)
		}
	}
}

// worker returns fake worker id, which must have been started.
func (f *fleet) worker(t *testing.T, id string) *fake {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.workers[id]
	if !ok {
		t.Fatalf("no worker %s was started", id)
	}
	return w
}

// awaitEnd waits until worker id has returned and says why.
func (f *fleet) awaitEnd(t *testing.T, id string) error {
	t.Helper()
	w := f.worker(t, id)
	select {
	case <-w.ended:
		return w.why
	case <-time.After(10 * time.Second):
		t.Fatalf("worker %s still runs after 10s", id)
		return nil
	}
}

// supOpts are a case's settings beyond the defaults.
type supOpts struct {
	ghostGrace   time.Duration // 0: a ghost is killed at the first round after it is seen
	startTimeout time.Duration // 0: the orchestrator's default
	silent       map[int]bool
	holdStops    bool // a stopped worker leaves only once the test calls release
	// wrap, if set, wraps the coordinator and runtime the orchestrator is given.
	wrap func(c coord.Coordinator, rt Runtime) (coord.Coordinator, Runtime)
}

// supervised is an orchestrator (no broker, no log: only its supervisor runs) over memrt and
// its fleet.
type supervised struct {
	o     *Orchestrator
	rt    *memrt.Runtime
	fleet *fleet
	c     *memcoord.Session // the orchestrator's session
	opts  supOpts
	slave int // slaves wanted at the start
	once  sync.Once
}

// mustSupervised opens a supervised pool of 1 master and slaves slaves and waits for it.
func mustSupervised(t *testing.T, slaves int, opts ...supOpts) *supervised {
	t.Helper()
	var op supOpts
	if len(opts) > 0 {
		op = opts[0]
	}
	f := &fleet{svc: memcoord.NewService(), silent: op.silent, workers: map[string]*fake{}}
	if op.holdStops {
		f.holdStops = make(chan struct{})
	}
	rt := memrt.New(f.run)
	t.Cleanup(func() { rt.Close() })
	s := &supervised{rt: rt, fleet: f, opts: op, slave: slaves}
	s.c = s.session(t)
	s.o = s.open(t)
	// Runs before the orchestrator's Close, should a test end with stops held.
	t.Cleanup(s.release)
	s.waitPool(t, slaves)
	return s
}

// release lets the held stops end (holdStops).
func (s *supervised) release() {
	s.once.Do(func() {
		if s.fleet.holdStops != nil {
			close(s.fleet.holdStops)
		}
	})
}

// session opens an orchestrator's session with the coordinator.
func (s *supervised) session(t *testing.T) *memcoord.Session {
	c := s.fleet.svc.Session()
	t.Cleanup(func() { c.Close() })
	return c
}

// open opens an orchestrator on the pool's runtime and the session c, as mustSupervised's.
func (s *supervised) open(t *testing.T) *Orchestrator {
	t.Helper()
	var c coord.Coordinator = s.c
	var rt Runtime = s.rt
	if s.opts.wrap != nil {
		c, rt = s.opts.wrap(c, rt)
	}
	o := New(nil, c, rt, nil)
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o.Poll, o.AdminToken, o.GhostGrace = 20*time.Millisecond, "test", s.opts.ghostGrace
	if s.opts.startTimeout != 0 {
		o.StartTimeout = s.opts.startTimeout
	}
	o.Slaves = s.slave
	if err := o.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// rounds waits until the supervisor has gone through n more rounds (it lists the workers once
// a round): how long an absence is watched for.
func (s *supervised) rounds(t *testing.T, n int) {
	t.Helper()
	select {
	case <-s.rt.AfterLists(n):
	case <-time.After(10 * time.Second):
		t.Fatalf("the supervisor did not go through %d rounds in 10s", n)
	}
}

// awaitView waits, round by round, until the view satisfies cond, and returns it.
func (s *supervised) awaitView(t *testing.T, what string, cond func([]WorkerInfo) bool) []WorkerInfo {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		next := s.rt.AfterLists(1)
		ws := s.o.Workers()
		if cond(ws) {
			return ws
		}
		select {
		case <-next:
		case <-deadline:
			t.Fatalf("no %s in 10s: %+v", what, ws)
		}
	}
}

// waitPool waits until the view shows one master and n ready slaves, none of them gone, and
// returns it.
func (s *supervised) waitPool(t *testing.T, n int, gone ...string) []WorkerInfo {
	t.Helper()
	return s.awaitView(t, fmt.Sprintf("pool of 1 master and %d slaves", n), func(ws []WorkerInfo) bool {
		masters, slaves := 0, 0
		for _, w := range ws {
			switch {
			case w.Role == coord.RoleMaster:
				masters++
			case w.Role == coord.RoleSlave && w.Ready:
				slaves++
			}
		}
		listed := slices.ContainsFunc(ws, func(w WorkerInfo) bool { return slices.Contains(gone, w.ID) })
		return masters == 1 && slaves == n && len(ws) == n+1 && !listed
	})
}

func (s *supervised) started() int { return len(s.rt.Started()) }

func (s *supervised) running(t *testing.T, id string) bool {
	t.Helper()
	ws, _ := s.rt.List(context.Background())
	_, ok := ws[id]
	return ok
}

// counter reads a counter's value.
func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func roleOf(ws []WorkerInfo, role string) []WorkerInfo {
	var out []WorkerInfo
	for _, w := range ws {
		if w.Role == role {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b WorkerInfo) int { return a.PID - b.PID })
	return out
}

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

// heldRuntime counts the runtime calls under way.
type heldRuntime struct {
	Runtime
	calls atomic.Int32
}

func (r *heldRuntime) Start(ctx context.Context, id string) (int, error) {
	r.calls.Add(1)
	defer r.calls.Add(-1)
	return r.Runtime.Start(ctx, id)
}

func (r *heldRuntime) Stop(ctx context.Context, id string) error {
	r.calls.Add(1)
	defer r.calls.Add(-1)
	return r.Runtime.Stop(ctx, id)
}

func (r *heldRuntime) Kill(id string) error {
	r.calls.Add(1)
	defer r.calls.Add(-1)
	return r.Runtime.Kill(id)
}

func (r *heldRuntime) List(ctx context.Context) (map[string]int, error) {
	r.calls.Add(1)
	defer r.calls.Add(-1)
	return r.Runtime.List(ctx)
}

// heldCoord counts the watches whose channel is not closed yet; a watch's end waits for
// release.
type heldCoord struct {
	coord.Coordinator
	release chan struct{}
	watches atomic.Int32
}

func (c *heldCoord) Watch(ctx context.Context) (<-chan struct{}, error) {
	in, err := c.Coordinator.Watch(ctx)
	if err != nil {
		return nil, err
	}
	c.watches.Add(1)
	out := make(chan struct{}, 1)
	go func() {
		for range in {
			select {
			case out <- struct{}{}:
			default:
			}
		}
		<-c.release
		c.watches.Add(-1)
		close(out)
	}()
	return out, nil
}

// Close returns only once nothing the supervisor started runs any more: a scale-in stop that
// takes its time, or the watch (its channel closed late), is waited for.
func TestCloseWaitsForWhatTheSupervisorStarted(t *testing.T) {
	for _, holdWatch := range []bool{false, true} {
		name := "a scale-in stop under way"
		if holdWatch {
			name = "the watch"
		}
		t.Run(name, func(t *testing.T) {
			watchEnds := make(chan struct{})
			if !holdWatch {
				close(watchEnds)
			}
			var hr *heldRuntime
			var hc *heldCoord
			s := mustSupervised(t, 2, supOpts{holdStops: !holdWatch, wrap: func(c coord.Coordinator, rt Runtime) (coord.Coordinator, Runtime) {
				hc, hr = &heldCoord{Coordinator: c, release: watchEnds}, &heldRuntime{Runtime: rt}
				return hc, hr
			}})
			var w *fake
			if !holdWatch {
				victim := roleOf(s.o.Workers(), coord.RoleSlave)[1]
				s.o.SetSlaves(1)
				w = s.fleet.worker(t, victim.ID)
				select {
				case <-w.stopping:
				case <-time.After(10 * time.Second):
					t.Fatal("no scale-in stop in 10s")
				}
			}
			// What is held is let go late, so that a Close that does not wait for it returns
			// first: then the counts below are not 0.
			time.AfterFunc(200*time.Millisecond, func() {
				s.release()
				if holdWatch {
					close(watchEnds)
				}
			})
			if err := s.o.Close(); err != nil {
				t.Fatal(err)
			}
			if n := hr.calls.Load(); n != 0 {
				t.Errorf("%d runtime calls under way after Close", n)
			}
			if n := hc.watches.Load(); n != 0 {
				t.Errorf("%d watches open after Close", n)
			}
			if w != nil {
				select {
				case <-w.ended:
				default:
					t.Error("the stopped slave still shuts down after Close")
				}
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
