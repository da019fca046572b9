package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/rideshare/rideshare/broker/coord"
)

// Runtime runs worker processes or containers.
type Runtime interface {
	// Start launches a new worker with the given ID and returns its PID.
	Start(ctx context.Context, id string) (int, error)
	// Stop shuts a worker down cleanly (scale-in).
	Stop(ctx context.Context, id string) error
	// Kill ends a worker at once (SIGKILL).
	Kill(id string) error
	// List returns the running workers, ID to PID.
	List(ctx context.Context) (map[string]int, error)
}

// tracked is the supervisor's view of one worker it started or adopted.
type tracked struct {
	id       string
	pid      int
	started  time.Time
	joined   bool // seen as a coordination member at least once
	stopping bool // stopped on purpose: no replacement
}

// WorkerInfo is a worker as the operator's view shows it.
type WorkerInfo struct {
	ID      string `json:"id"`
	PID     int    `json:"pid"`
	Role    string `json:"role"`
	Applied uint64 `json:"applied_seq"`
	Ready   bool   `json:"ready"`
}

// supervisor keeps 1 master and the wanted number of slaves alive.
type supervisor struct {
	o *Orchestrator

	mu           sync.Mutex
	workers      map[string]*tracked
	members      map[string]coord.Member
	master       string
	designated   string
	designatedAt time.Time
	masterLost   time.Time // when the master was last seen lost, until a new one is seen: a failover's start
	slaves       int       // wanted
	// ghosts are workers declared dead whose process still runs (paused, partitioned): they
	// are fenced off already and exit by themselves when they resume; killed after GhostGrace.
	ghosts map[string]time.Time
	// masterChange is closed when the master changes: writes in flight to a dead master
	// are sent again at once instead of waiting out their try.
	masterChange chan struct{}
	// stops are the scale-in stops under way; run waits for them.
	stops sync.WaitGroup
}

func newID() string { return fmt.Sprintf("w%06x", rand.Uint32()&0xffffff) }

// run reconciles on every coordination change and at least every Poll, until ctx ends. It
// returns only after everything it started has ended: the scale-in stops, and the watch (the
// coordinator closes its channel once the watch's goroutine is done).
func (s *supervisor) run(ctx context.Context) error {
	defer s.stops.Wait()
	watch, err := s.o.Coord.Watch(ctx)
	if err != nil {
		return err
	}
	t := time.NewTicker(s.o.Poll)
	defer t.Stop()
	for {
		if err := s.reconcile(ctx); err != nil && ctx.Err() == nil {
			s.o.Logger.Warn("reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			if watch != nil {
				for range watch { // until closed
				}
			}
			return nil
		case _, ok := <-watch:
			if !ok {
				// The watch ended before ctx (its session was lost): poll from now on
				// rather than spin on a closed channel.
				s.o.Logger.Warn("coordination watch ended; polling every " + s.o.Poll.String())
				watch = nil
			}
		case <-t.C:
		}
	}
}

// adopt takes over the workers the runtime already runs (after an orchestrator restart).
func (s *supervisor) adopt(ctx context.Context) error {
	procs, err := s.o.Runtime.List(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, pid := range procs {
		if _, ok := s.workers[id]; !ok {
			s.workers[id] = &tracked{id: id, pid: pid, started: time.Now()}
			s.o.Logger.Info("adopted worker", "worker", id, "pid", pid)
		}
	}
	return nil
}

func (s *supervisor) reconcile(ctx context.Context) error {
	procs, err := s.o.Runtime.List(ctx)
	if err != nil {
		return fmt.Errorf("list workers: %w", err)
	}
	ms, err := s.o.Coord.Members(ctx)
	if err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	master, err := s.o.Coord.Master(ctx)
	if err != nil {
		return err
	}
	designated, err := s.o.Coord.Designated(ctx)
	if err != nil {
		return err
	}
	members := make(map[string]coord.Member, len(ms))
	for _, m := range ms {
		members[m.ID] = m
	}

	s.mu.Lock()
	s.members = members
	s.setMasterLocked(master)
	if designated != s.designated {
		s.designated, s.designatedAt = designated, time.Now()
	}
	if !s.o.role.held() {
		s.observeLocked(procs)
		s.mu.Unlock()
		return nil
	}
	var toKill, revoke []string
	for id, since := range s.ghosts {
		if _, running := procs[id]; !running {
			delete(s.ghosts, id)
		} else if time.Since(since) > s.o.GhostGrace {
			toKill = append(toKill, id)
			delete(s.ghosts, id)
		}
	}
	for id, w := range s.workers {
		pid, running := procs[id]
		if running {
			w.pid = pid
		}
		_, member := members[id]
		if member {
			w.joined = true
		}
		var why string
		switch {
		case !running:
			why = "process exited"
		case w.joined && !member:
			why = "coordination session expired"
			s.ghosts[id] = time.Now()
		case !w.joined && time.Since(w.started) > s.o.StartTimeout:
			why = "did not join in time"
			s.ghosts[id] = time.Time{}
		default:
			continue
		}
		delete(s.workers, id)
		if !running && id == master {
			// The holder's process is gone for sure: free the lock now rather than after
			// the session timeout. (A paused master keeps its process and is not revoked.)
			revoke = append(revoke, id)
		}
		if w.stopping {
			continue
		}
		s.o.Logger.Warn("worker lost", "worker", id, "pid", w.pid, "reason", why, "was_master", id == master)
		s.o.m.workersLost.Inc()
		role := "slave"
		if id == master {
			role = "master"
			if s.masterLost.IsZero() {
				s.masterLost = time.Now()
			}
		}
		s.o.events.add(Event{Kind: EventWorkerLost, Worker: id, PID: w.pid, Message: fmt.Sprintf("%s %s (pid %d) lost: %s", role, id, w.pid, why)})
	}
	// Start replacements: one master plus the wanted slaves.
	need := 1 + s.slaves
	for _, w := range s.workers {
		if !w.stopping {
			need--
		}
	}
	var toStop []string
	if need < 0 {
		toStop = s.scaleInLocked(-need)
	}
	s.mu.Unlock()

	for _, id := range toStop {
		if !s.may() {
			break
		}
		s.o.Logger.Info("stopping slave (scale-in)", "worker", id)
		s.o.events.add(Event{Kind: EventWorkerStopped, Worker: id, Message: "slave " + id + " stopped (scale-in)"})
		// A clean stop takes up to the runtime's stop timeout: not inline, so supervision goes
		// on; run (so Orchestrator.Close) waits for it.
		s.stops.Go(func() {
			if err := s.o.Runtime.Stop(context.WithoutCancel(ctx), id); err != nil {
				s.o.Logger.Warn("stop slave", "worker", id, "err", err)
			}
		})
	}

	for _, id := range revoke {
		if !s.may() {
			break
		}
		if err := s.o.Coord.Revoke(ctx, id); err != nil {
			s.o.Logger.Warn("revoke master lock of dead worker", "worker", id, "err", err)
		} else {
			s.mu.Lock()
			s.setMasterLocked("")
			s.mu.Unlock()
		}
	}
	for _, id := range toKill {
		if !s.may() {
			break
		}
		s.o.Logger.Warn("killing worker that outlived its session", "worker", id)
		_ = s.o.Runtime.Kill(id)
	}
	var errs []error
	for ; need > 0; need-- {
		if err := s.start(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.elect(ctx))
	return errors.Join(errs...)
}

// viewHasMaster reports whether the view lists a master.
func (s *supervisor) viewHasMaster() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.members[s.master]
	return ok && m.Role == coord.RoleMaster
}

// refreshView reads the members and the master lock now, instead of at the next reconcile:
// a write acknowledged by a new master must not be answered while the view lists none.
func (s *supervisor) refreshView(ctx context.Context) error {
	ms, err := s.o.Coord.Members(ctx)
	if err != nil {
		return err
	}
	master, err := s.o.Coord.Master(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range ms {
		s.members[m.ID] = m
	}
	s.setMasterLocked(master)
	return nil
}

// setMasterLocked records the master and wakes writes waiting on the old one.
func (s *supervisor) setMasterLocked(id string) {
	if id == s.master {
		return
	}
	if id != "" && !s.masterLost.IsZero() {
		took := time.Since(s.masterLost)
		s.masterLost = time.Time{}
		s.o.events.add(Event{Kind: EventFailover, Worker: id, Duration: took.Seconds(),
			Message: fmt.Sprintf("%s is master, %v after the old master was lost", id, took.Round(time.Millisecond))})
	}
	s.master = id
	if s.masterChange != nil {
		close(s.masterChange)
	}
	s.masterChange = make(chan struct{})
}

// masterChanged returns a channel closed when the master changes next.
func (s *supervisor) masterChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.masterChange == nil {
		s.masterChange = make(chan struct{})
	}
	return s.masterChange
}

// scaleInLocked marks the n slaves with the highest PIDs as stopping and returns them. The
// master and the designated worker are never chosen.
func (s *supervisor) scaleInLocked(n int) []string {
	var cands []*tracked
	for id, w := range s.workers {
		if w.stopping || id == s.master || id == s.designated || w.pid == 0 {
			continue
		}
		cands = append(cands, w)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].pid > cands[j].pid })
	var out []string
	for _, w := range cands[:min(n, len(cands))] {
		w.stopping = true
		out = append(out, w.id)
	}
	return out
}

// may reports whether this node still supervises, checked immediately before each action:
// a node that lost the role (paused, cut off) only watches (role.go).
func (s *supervisor) may() bool { return s.o.role.held() }

// observeLocked is what a node that does not supervise does on each round: it tracks the
// workers the runtime runs (another node started them) without acting on any, so that when it
// takes the role over it knows them all and starts none twice.
func (s *supervisor) observeLocked(procs map[string]int) {
	for id, pid := range procs {
		w, ok := s.workers[id]
		if !ok {
			w = &tracked{id: id, started: time.Now()}
			s.workers[id] = w
		}
		w.pid = pid
		if _, member := s.members[id]; member {
			w.joined = true
		}
	}
	for id := range s.workers {
		if _, running := procs[id]; !running {
			delete(s.workers, id)
		}
	}
	clear(s.ghosts)
}

// takeOver is called when this node takes the supervisor role: it keeps the pool it finds
// (the scaler of the node before may have grown it) and gives a designated worker its full
// time again. Ghosts are learned anew: this node saw none die.
func (s *supervisor) takeOver() {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, m := range s.members {
		if _, ok := s.workers[id]; ok && m.Role == coord.RoleSlave {
			n++
		}
	}
	s.slaves = max(s.slaves, n)
	s.designatedAt = time.Now()
	clear(s.ghosts)
}

func (s *supervisor) start(ctx context.Context) error {
	if !s.may() {
		return nil
	}
	id := newID()
	s.mu.Lock()
	s.workers[id] = &tracked{id: id, started: time.Now()}
	s.mu.Unlock()
	pid, err := s.o.Runtime.Start(ctx, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		delete(s.workers, id)
		return err
	}
	if w, ok := s.workers[id]; ok {
		w.pid = pid
	}
	s.o.Logger.Info("started worker", "worker", id, "pid", pid)
	s.o.events.add(Event{Kind: EventWorkerStarted, Worker: id, PID: pid, Message: fmt.Sprintf("worker %s started (pid %d)", id, pid)})
	return nil
}

// elect designates the live slave with the lowest PID when there is no master and the
// designated worker cannot take over (dead, or given enough time already).
func (s *supervisor) elect(ctx context.Context) error {
	s.mu.Lock()
	if s.master != "" {
		s.mu.Unlock()
		return nil
	}
	if d, ok := s.workers[s.designated]; ok && d.joined && time.Since(s.designatedAt) < s.o.PromoteTimeout {
		if _, live := s.members[s.designated]; live {
			s.mu.Unlock()
			return nil // give it time to take the lock
		}
	}
	type cand struct {
		id    string
		pid   int
		ready bool
	}
	var cands []cand
	for id, m := range s.members {
		w, ok := s.workers[id]
		if !ok || w.stopping || m.Role != coord.RoleSlave {
			continue
		}
		cands = append(cands, cand{id, w.pid, m.Ready})
	}
	s.mu.Unlock()
	if len(cands) == 0 {
		return nil
	}
	// Lowest PID among the slaves that have caught up; any slave if none has.
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].ready != cands[j].ready {
			return cands[i].ready
		}
		return cands[i].pid < cands[j].pid
	})
	c := cands[0]
	if !s.may() {
		return nil
	}
	if err := s.o.Coord.Designate(ctx, c.id); err != nil {
		return err
	}
	s.mu.Lock()
	s.designated, s.designatedAt = c.id, time.Now()
	s.mu.Unlock()
	s.o.Logger.Info("designated master", "worker", c.id, "pid", c.pid)
	s.o.m.failovers.Inc()
	return nil
}

// view lists the live workers, ascending PID.
func (s *supervisor) view() []WorkerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]WorkerInfo, 0, len(s.workers))
	for id, w := range s.workers {
		if w.pid == 0 {
			continue
		}
		info := WorkerInfo{ID: id, PID: w.pid, Role: "starting"}
		if m, ok := s.members[id]; ok {
			info.Role, info.Applied, info.Ready = m.Role, m.Applied, m.Ready
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// masterWorker returns the master's ID and PID.
func (s *supervisor) masterWorker() (string, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.workers[s.master]
	if !ok || w.pid == 0 {
		return "", 0, false
	}
	return w.id, w.pid, true
}

// highestSlave returns the slave with the highest PID.
func (s *supervisor) highestSlave() (string, int, bool) {
	var id string
	pid := 0
	for _, w := range s.view() {
		if w.Role == coord.RoleSlave && w.ID != s.masterID() && w.PID > pid {
			id, pid = w.ID, w.PID
		}
	}
	return id, pid, pid != 0
}

func (s *supervisor) masterID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.master
}

// ready reports whether there is a master and the wanted number of ready slaves.
func (s *supervisor) ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.members[s.master]
	if !ok || !m.Ready || m.Role != coord.RoleMaster {
		return false
	}
	n := 0
	for _, m := range s.members {
		if m.Role == coord.RoleSlave && m.Ready {
			n++
		}
	}
	return n >= s.slaves
}
