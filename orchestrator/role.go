package orchestrator

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rideshare/rideshare/broker/coord"
)

// Every node of a cluster serves the database API; exactly one supervises: it replaces dead
// workers, designates the master and runs the scaler. The role is a lock in the coordinator
// (ZooKeeper's ephemeral node, or a lease in the embedded key-value bucket), taken the way a
// worker takes the master lock, in a session of the node's own: Orchestrator.Supervision
// opens one.
//
// A node that loses the role must stop acting before another can start. The lock is held by a
// session that the coordination service expires SessionTimeout after it last heard from it.
// The node counts the role as held only until three quarters of that after a request it sent
// was answered with the lock still its own (with the embedded coordinator: after its last
// lease refresh that succeeded, LeaseHolder), and checks that immediately before every action
// (start, stop, kill, designate, revoke, resize). So it gives the role up, by its own clock, a
// quarter of the timeout before the service can hand the lock to anyone: a node paused or cut
// off finds its role gone when it resumes and only watches. What is left is a pause between
// the check and the action itself; that can start or kill one worker too many, never lose a
// write: the data path is fenced by the master lock and the sync log, not by this role.

// LeaseHolder is a coordinator that knows until when its session surely holds what it took
// (kvcoord: TTL*3/4 after its last refresh that succeeded).
type LeaseHolder interface {
	HeldUntil() time.Time
}

// GrantedTimeout is a coordinator whose service may grant a shorter session timeout than the
// one asked for (zkcoord: ZooKeeper clamps it to [2, 20] × its tickTime); 0 until known.
type GrantedTimeout interface {
	Granted() time.Duration
}

// holdUntil is until when a node that sent, at sent, a request answered with the role still
// its own may count the role as held: three quarters of the session timeout later, the timeout
// being the one asked for or the shorter one the service granted, and no later than a lease
// holder's own bound. With ZooKeeper's default tickTime of 2 s a 3 s session is granted 4 s,
// and with a tickTime of 500 ms a 15 s session only 10 s: counting with the 15 s asked for,
// a node would hold the role for 11.25 s after its last answer while the service freed the
// lock after 10.
func holdUntil(sent time.Time, asked time.Duration, sess coord.Coordinator) time.Time {
	timeout := asked
	if g, ok := sess.(GrantedTimeout); ok {
		if d := g.Granted(); d > 0 && d < timeout {
			timeout = d
		}
	}
	until := sent.Add(timeout * 3 / 4)
	if lh, ok := sess.(LeaseHolder); ok {
		until = earliest(until, lh.HeldUntil())
	}
	return until
}

// role is this node's hold on the supervisor role.
type role struct {
	mu     sync.Mutex
	until  time.Time // held until then (monotonic clock)
	holder string    // the supervising node last seen, "" if none
	alone  bool      // no Supervision: this node always supervises
}

// held reports whether this node may act as the supervisor now.
func (r *role) held() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.alone || time.Now().Before(r.until)
}

func (r *role) set(until time.Time, holder string) {
	r.mu.Lock()
	r.until, r.holder = until, holder
	r.mu.Unlock()
}

// supervisorName is the supervising node's name as last seen.
func (r *role) supervisorName() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holder
}

// Supervising reports whether this node supervises now (the scaler decides only then).
func (o *Orchestrator) Supervising() bool { return o.role.held() }

// campaign holds or waits for the supervisor role until ctx ends, in one session after
// another (a lost session is replaced).
func (o *Orchestrator) campaign(ctx context.Context) {
	for ctx.Err() == nil {
		sess, err := o.Supervision(ctx)
		if err != nil {
			o.Logger.Warn("supervisor election: no coordination session", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		o.contend(ctx, sess)
		sess.Close()
	}
}

// contend takes the role in sess when it is free and renews the node's hold on it, every
// quarter of the session timeout, until the session is lost or ctx ends.
func (o *Orchestrator) contend(ctx context.Context, sess coord.Coordinator) {
	t := time.NewTicker(o.sessionTimeout() / 4)
	defer t.Stop()
	was := false
	defer func() {
		o.role.set(time.Time{}, o.role.supervisorName())
		if was {
			o.lostRole("its coordination session ended")
		}
	}()
	for {
		sent := time.Now()
		holder, mine, err := o.confirm(ctx, sess)
		switch {
		case err == nil && mine:
			o.role.set(holdUntil(sent, o.sessionTimeout(), sess), o.Name)
			if !was {
				was = true
				o.tookRole()
			}
		case err == nil:
			o.role.set(time.Time{}, holder)
			if was {
				was = false
				o.lostRole("another node holds the lock: " + holder)
			}
		case errors.Is(err, coord.ErrSessionLost):
			return
		default:
			// Not renewed: the hold runs out by itself unless a later try succeeds.
			if ctx.Err() == nil {
				o.Logger.Warn("supervisor election", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-sess.Lost():
			return
		case <-t.C:
		}
	}
}

// confirm takes the lock if it is free and says whether this session holds it (a lock left
// by this node's previous life has its name but another session) and, if not, who does.
// Taking or confirming the lock asks the service, which proves the session alive when the
// request was sent (with the embedded coordinator, HeldUntil says the same).
func (o *Orchestrator) confirm(ctx context.Context, sess coord.Coordinator) (holder string, mine bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, o.sessionTimeout()/2)
	defer cancel()
	switch err := sess.AcquireMaster(ctx, o.Name); {
	case err == nil:
		return o.Name, true, nil
	case !errors.Is(err, coord.ErrHeld):
		return "", false, err
	}
	holder, err = sess.Master(ctx)
	return holder, false, err
}

func (o *Orchestrator) tookRole() {
	o.Logger.Info("supervising: this node took the supervisor role")
	o.events.add(Event{Kind: EventSupervisor, Message: "node " + o.Name + " supervises"})
	o.sup.takeOver()
}

func (o *Orchestrator) lostRole(why string) {
	o.Logger.Warn("no longer supervising", "reason", why)
	o.events.add(Event{Kind: EventSupervisor, Message: "node " + o.Name + " stopped supervising: " + why})
}

func (o *Orchestrator) sessionTimeout() time.Duration {
	if o.SessionTimeout > 0 {
		return o.SessionTimeout
	}
	return 3 * time.Second
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
