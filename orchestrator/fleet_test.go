package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"github.com/rideshare/rideshare/broker"
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

// The fake workers and the supervised pool the supervisor's tests run on.

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
	holdStops    bool          // a stopped worker leaves only once the test calls release
	broker       broker.Broker // the orchestrator's broker; nil: none (the fakes take no requests)
	// wrap, if set, wraps the coordinator and runtime the orchestrator is given.
	wrap func(c coord.Coordinator, rt Runtime) (coord.Coordinator, Runtime)
	// configure, if set, changes the orchestrator before it opens (a node of several).
	configure func(o *Orchestrator)
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
	return s.openWith(t, s.c, s.opts.configure)
}

// openWith opens an orchestrator on the pool's runtime and the session given, changed by
// configure if set: another node of the same cluster.
func (s *supervised) openWith(t *testing.T, session *memcoord.Session, configure func(*Orchestrator)) *Orchestrator {
	t.Helper()
	var c coord.Coordinator = session
	var rt Runtime = s.rt
	if s.opts.wrap != nil {
		c, rt = s.opts.wrap(c, rt)
	}
	o := New(s.opts.broker, c, rt, nil)
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o.Poll, o.AdminToken, o.GhostGrace = 20*time.Millisecond, "test", s.opts.ghostGrace
	if s.opts.startTimeout != 0 {
		o.StartTimeout = s.opts.startTimeout
	}
	o.Slaves = s.slave
	if configure != nil {
		configure(o)
	}
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
