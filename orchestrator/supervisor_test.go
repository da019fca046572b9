package orchestrator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/coord/kvcoord"
	"github.com/rideshare/rideshare/broker/natsq"
)

// The supervisor's rules, in process: a real embedded coordinator (JetStream KV on an
// in-process NATS server) and a runtime whose workers are goroutines that join it, so a rule
// is checked in a second, not through child processes.

// memRuntime runs fake workers: each joins the coordinator as a ready slave and, when
// designated, takes the master lock and says so, as a real worker does.
type memRuntime struct {
	nc  *nats.Conn
	ttl time.Duration

	mu      sync.Mutex
	nextPID int
	workers map[string]*memWorker
	started []string // every worker started, in order
}

type memWorker struct {
	id     string
	pid    int
	k      *kvcoord.KV
	cancel context.CancelFunc
	done   chan struct{}
}

var _ Runtime = (*memRuntime)(nil)

func (r *memRuntime) Start(ctx context.Context, id string) (int, error) {
	k := kvcoord.New(r.nc)
	k.TTL, k.Logger = r.ttl, slog.New(slog.DiscardHandler)
	if err := k.Open(ctx); err != nil {
		return 0, err
	}
	r.mu.Lock()
	r.nextPID++
	w := &memWorker{id: id, pid: 1000 + r.nextPID, k: k, done: make(chan struct{})}
	r.workers[id] = w
	r.started = append(r.started, id)
	r.mu.Unlock()
	wctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.run(wctx)
	return w.pid, nil
}

func (w *memWorker) run(ctx context.Context) {
	defer close(w.done)
	m := coord.Member{ID: w.id, PID: w.pid, Role: coord.RoleSlave, Ready: true}
	if err := w.k.Join(ctx, m); err != nil {
		return
	}
	watch, err := w.k.Watch(ctx)
	if err != nil {
		return
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-watch:
		case <-tick.C:
		}
		if m.Role == coord.RoleMaster {
			continue
		}
		if d, err := w.k.Designated(ctx); err == nil && d == w.id && w.k.AcquireMaster(ctx, w.id) == nil {
			m.Role = coord.RoleMaster
			_ = w.k.Update(ctx, m)
		}
	}
}

// stop ends a worker's goroutine and its session (its member and lock go with it).
func (r *memRuntime) stop(id string) error {
	r.mu.Lock()
	w, ok := r.workers[id]
	delete(r.workers, id)
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("no worker %s", id)
	}
	w.cancel()
	<-w.done
	return w.k.Close()
}

func (r *memRuntime) Stop(_ context.Context, id string) error { return r.stop(id) }
func (r *memRuntime) Kill(id string) error                    { return r.stop(id) }

func (r *memRuntime) List(context.Context) (map[string]int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for id, w := range r.workers {
		out[id] = w.pid
	}
	return out, nil
}

func (r *memRuntime) closeAll() {
	r.mu.Lock()
	ids := make([]string, 0, len(r.workers))
	for id := range r.workers {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	for _, id := range ids {
		_ = r.stop(id)
	}
}

// mustSupervised opens an orchestrator (no broker, no log: only its supervisor runs) over a
// memRuntime, with slaves slaves, and waits for the pool.
func mustSupervised(t *testing.T, slaves int) (*Orchestrator, *memRuntime) {
	t.Helper()
	srv := &natsq.Server{StoreDir: t.TempDir(), Port: -1}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	nc, err := natsq.Connect(srv.ClientURL(), "test", srv.InProcess(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	c := kvcoord.New(nc)
	c.TTL, c.Logger = time.Second, slog.New(slog.DiscardHandler)
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rt := &memRuntime{nc: nc, ttl: time.Second, workers: map[string]*memWorker{}}
	t.Cleanup(rt.closeAll)
	o := New(nil, c, rt, nil)
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o.Slaves, o.Poll, o.AdminToken = slaves, 20*time.Millisecond, "test"
	if err := o.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	waitPool(t, o, slaves)
	return o, rt
}

// waitPool waits until the view shows one master and n ready slaves, none of them gone, and
// returns it.
func waitPool(t *testing.T, o *Orchestrator, n int, gone ...string) []WorkerInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws := o.Workers()
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
		if masters == 1 && slaves == n && len(ws) == n+1 && !listed {
			return ws
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pool of 1 master and %d slaves in 10s: %+v", n, ws)
		}
		time.Sleep(10 * time.Millisecond)
	}
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

func TestSupervisor(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an in-process NATS server")
	}
	t.Run("the pool's metrics are exported without a scaler", func(t *testing.T) {
		o, _ := mustSupervised(t, 1)
		mfs, err := o.Registry.Gather()
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
	})
	t.Run("a dead slave is replaced", func(t *testing.T) {
		o, rt := mustSupervised(t, 2)
		ws := o.Workers()
		dead := roleOf(ws, coord.RoleSlave)[0]
		master := roleOf(ws, coord.RoleMaster)[0]
		if err := rt.Kill(dead.ID); err != nil {
			t.Fatal(err)
		}
		after := waitPool(t, o, 2, dead.ID)
		if slices.ContainsFunc(after, func(w WorkerInfo) bool { return w.ID == dead.ID }) {
			t.Fatalf("the dead slave is still listed: %+v", after)
		}
		if m := roleOf(after, coord.RoleMaster)[0]; m.ID != master.ID {
			t.Fatalf("master changed from %s to %s when a slave died", master.ID, m.ID)
		}
	})
	t.Run("a dead master is replaced by the lowest-PID ready slave", func(t *testing.T) {
		o, rt := mustSupervised(t, 3)
		ws := o.Workers()
		master := roleOf(ws, coord.RoleMaster)[0]
		lowest := roleOf(ws, coord.RoleSlave)[0]
		if err := rt.Kill(master.ID); err != nil {
			t.Fatal(err)
		}
		after := waitPool(t, o, 3, master.ID)
		if m := roleOf(after, coord.RoleMaster)[0]; m.ID != lowest.ID {
			t.Fatalf("new master %s (pid %d), want the lowest-PID slave %s (pid %d): %+v", m.ID, m.PID, lowest.ID, lowest.PID, after)
		}
	})
	t.Run("scale-in stops the highest-PID slaves and starts no replacement", func(t *testing.T) {
		o, rt := mustSupervised(t, 3)
		ws := o.Workers()
		master := roleOf(ws, coord.RoleMaster)[0]
		slaves := roleOf(ws, coord.RoleSlave)
		rt.mu.Lock()
		startedBefore := len(rt.started)
		rt.mu.Unlock()
		o.SetSlaves(1)
		after := waitPool(t, o, 1, slaves[1].ID, slaves[2].ID)
		if m := roleOf(after, coord.RoleMaster)[0]; m.ID != master.ID {
			t.Fatalf("scale-in changed the master from %s to %s", master.ID, m.ID)
		}
		if s := roleOf(after, coord.RoleSlave)[0]; s.ID != slaves[0].ID {
			t.Fatalf("kept slave %s (pid %d), want the lowest-PID one %s (pid %d)", s.ID, s.PID, slaves[0].ID, slaves[0].PID)
		}
		// An absence can only be watched for a while: several rounds of the supervisor, in
		// which it must not replace the stopped slaves.
		time.Sleep(10 * o.Poll)
		rt.mu.Lock()
		startedAfter := len(rt.started)
		rt.mu.Unlock()
		if startedAfter != startedBefore {
			t.Fatalf("%d workers started after a scale-in", startedAfter-startedBefore)
		}
	})
}
