package orchestrator

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/coord/memcoord"
)

// Several nodes over one pool: each contends for the supervisor role in sessions of an
// election service of its own (memcoord), as the real nodes do in ZooKeeper or the embedded
// coordinator.

// election is the nodes' election service; its sessions can be stalled (the node paused or
// cut off: nothing it sends gets through) and expired (the service gave up on it).
type election struct {
	svc *memcoord.Service

	mu       sync.Mutex
	sessions map[string]*stallable // each node's current session
	down     map[string]bool       // nodes that can open no session (dead or cut off)
}

// stallable is a session whose calls block while stalled.
type stallable struct {
	*memcoord.Session
	mu      sync.Mutex
	stalled chan struct{} // closed when released; nil: not stalled
}

func (s *stallable) wait(ctx context.Context) error {
	s.mu.Lock()
	ch := s.stalled
	s.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stallable) AcquireMaster(ctx context.Context, id string) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.Session.AcquireMaster(ctx, id)
}

func (s *stallable) Master(ctx context.Context) (string, error) {
	if err := s.wait(ctx); err != nil {
		return "", err
	}
	return s.Session.Master(ctx)
}

// node configures an orchestrator as node name of the election, with a short session timeout.
func (e *election) node(name string) func(*Orchestrator) {
	return func(o *Orchestrator) {
		o.Name, o.SessionTimeout = name, 400*time.Millisecond
		o.Supervision = func(context.Context) (coord.Coordinator, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.down[name] {
				return nil, errors.New("node " + name + " cannot reach the election service")
			}
			s := &stallable{Session: e.svc.Session()}
			e.sessions[name] = s
			return s, nil
		}
	}
}

func (e *election) session(t *testing.T, name string) *stallable {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[name]
	if !ok {
		t.Fatalf("node %s has no election session", name)
	}
	return s
}

// kill makes node name dead to the election service: its session expires and it opens no
// other. (Only expiring it would let the node open a new session at once and, the lock
// being free, often take the role straight back.)
func (e *election) kill(t *testing.T, name string) {
	t.Helper()
	s := e.session(t, name)
	e.mu.Lock()
	e.down[name] = true
	e.mu.Unlock()
	s.Expire()
}

// revive lets node name open sessions again (it reaches the election service once more).
func (e *election) revive(name string) {
	e.mu.Lock()
	delete(e.down, name)
	e.mu.Unlock()
}

// twoNodes opens a pool supervised by node a, then node b beside it.
func twoNodes(t *testing.T, slaves int) (*supervised, *Orchestrator, *election) {
	t.Helper()
	e := &election{svc: memcoord.NewService(), sessions: map[string]*stallable{}, down: map[string]bool{}}
	s := mustSupervised(t, slaves, supOpts{configure: e.node("a")})
	b := s.openWith(t, s.session(t), e.node("b"))
	return s, b, e
}

// awaitRole waits until o's Supervising says want.
func awaitRole(t *testing.T, o *Orchestrator, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for o.Supervising() != want {
		if time.Now().After(deadline) {
			t.Fatalf("node %s: Supervising() still %v after 10s", o.Name, !want)
		}
		time.Sleep(5 * time.Millisecond) // the role changes on the node's own clock
	}
}

func TestOneNodeSupervisesAndTheOtherStartsNothing(t *testing.T) {
	s, b, _ := twoNodes(t, 2)
	awaitRole(t, s.o, true)
	if b.Supervising() {
		t.Fatal("both nodes supervise")
	}
	before := s.started()
	s.rounds(t, 10)
	if n := s.started() - before; n != 0 {
		t.Fatalf("%d workers started with the pool complete", n)
	}
	// The other node sees the same workers: it serves the workers API too.
	awaitTrue(t, "node b to list the pool", func() bool { return len(b.Workers()) == 3 })
	nodes, err := b.nodes(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].Supervisor {
		t.Fatalf("node b's view of itself: %+v; want it listed, not supervising", nodes)
	}
}

func TestAnotherNodeTakesOverAndStartsNoWorkerTwice(t *testing.T) {
	s, b, e := twoNodes(t, 2)
	awaitRole(t, s.o, true)
	awaitTrue(t, "node b to list the pool", func() bool { return len(b.Workers()) == 3 })
	before := s.started()

	e.kill(t, "a") // a's election session is gone and a opens no other: a dead node
	awaitRole(t, b, true)
	if s.o.Supervising() && b.Supervising() {
		t.Fatal("two nodes supervise at once")
	}
	s.rounds(t, 10)
	if n := s.started() - before; n != 0 {
		t.Fatalf("the new supervisor started %d workers for a complete pool", n)
	}
	// The new supervisor replaces a slave that dies, once.
	dead := roleOf(b.Workers(), coord.RoleSlave)[0]
	if err := s.rt.Exit(dead.ID); err != nil {
		t.Fatal(err)
	}
	awaitTrue(t, "the dead slave replaced", func() bool {
		ws := b.Workers()
		return len(ws) == 3 && len(roleOf(ws, coord.RoleSlave)) == 2 && !hasWorker(ws, dead.ID)
	})
	s.rounds(t, 10)
	if n := s.started() - before; n != 1 {
		t.Fatalf("%d workers started for one dead slave", n)
	}
}

// A supervisor that can no longer renew its hold (paused, cut off) stops acting once the
// hold runs out, before the election service could hand the role to anyone.
func TestANodeThatCannotRenewItsHoldActsOnNothing(t *testing.T) {
	s, b, e := twoNodes(t, 2)
	awaitRole(t, s.o, true)
	awaitTrue(t, "node b to list the pool", func() bool { return len(b.Workers()) == 3 })
	before := s.started()

	sa := e.session(t, "a")
	sa.mu.Lock()
	sa.stalled = make(chan struct{})
	sa.mu.Unlock()
	awaitRole(t, s.o, false)
	if b.Supervising() {
		t.Fatal("b supervises while a's session still holds the lock")
	}
	// Nobody supervises: a dead slave stays dead.
	dead := roleOf(s.o.Workers(), coord.RoleSlave)[0]
	if err := s.rt.Exit(dead.ID); err != nil {
		t.Fatal(err)
	}
	s.rounds(t, 10)
	if n := s.started() - before; n != 0 {
		t.Fatalf("a node without its hold started %d workers", n)
	}
	// The service expires a's session (a, still cut off, opens no other): b takes over and
	// replaces the slave.
	e.kill(t, "a")
	awaitRole(t, b, true)
	awaitTrue(t, "the dead slave replaced", func() bool {
		ws := b.Workers()
		return len(ws) == 3 && len(roleOf(ws, coord.RoleSlave)) == 2 && !hasWorker(ws, dead.ID)
	})
	// a resumes: it finds the role gone and starts or kills nothing.
	e.revive("a")
	close(sa.stalled)
	s.rounds(t, 10)
	if n := s.started() - before; n != 1 {
		t.Fatalf("%d workers started for one dead slave, with the old supervisor resumed", n)
	}
	if s.o.Supervising() {
		t.Fatal("the resumed node supervises beside the new one")
	}
	if len(b.Workers()) != 3 {
		t.Fatalf("pool after the old supervisor resumed: %+v", b.Workers())
	}
}

func hasWorker(ws []WorkerInfo, id string) bool {
	for _, w := range ws {
		if w.ID == id {
			return true
		}
	}
	return false
}

func awaitTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// grantedSession is a session whose service granted a session timeout of its own.
type grantedSession struct {
	coord.Coordinator
	granted time.Duration
}

func (g grantedSession) Granted() time.Duration { return g.granted }

// leaseSession is a session that knows until when its lease surely holds.
type leaseSession struct {
	coord.Coordinator
	until time.Time
}

func (l leaseSession) HeldUntil() time.Time { return l.until }

// A node counts the role as held for three quarters of the session timeout after its request,
// of the shorter one when the service granted less than was asked (ZooKeeper clamps it to
// [2, 20] × tickTime), and never past a lease holder's own bound.
func TestRoleIsHeldForThreeQuartersOfTheShorterTimeout(t *testing.T) {
	sent := time.Now()
	for _, c := range []struct {
		name string
		sess coord.Coordinator
		want time.Duration
	}{
		{"as asked", nil, 15 * time.Second * 3 / 4},
		{"granted less", grantedSession{granted: 10 * time.Second}, 10 * time.Second * 3 / 4},
		{"granted more", grantedSession{granted: 20 * time.Second}, 15 * time.Second * 3 / 4},
		{"grant not known yet", grantedSession{}, 15 * time.Second * 3 / 4},
		{"a lease ends sooner", leaseSession{until: sent.Add(2 * time.Second)}, 2 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := holdUntil(sent, 15*time.Second, c.sess).Sub(sent); got != c.want {
				t.Fatalf("held for %v, want %v", got, c.want)
			}
		})
	}
}
