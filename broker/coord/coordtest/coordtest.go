// Package coordtest is the contract every coord.Coordinator implementation passes.
//
// An implementation's test calls Run with a function that opens a new session on one fresh
// namespace (the same for every call within one Run), and a function that ends a session
// abruptly, as a crash or a network partition would, without a clean Close:
//
//	func TestContract(t *testing.T) {
//		root := freshRoot(t)
//		coordtest.Run(t, func(t *testing.T) coord.Coordinator {
//			c := open(t, root) // t.Cleanup closes it
//			return c
//		}, func(t *testing.T, c coord.Coordinator) { cut(c) })
//	}
//
// The sessions' Close may be called twice (by a subtest and by the Cleanup that newCoord
// registers). The suite waits for asynchronous effects through Watch, bounded by Timeout, and
// never sleeps. Expiry-based subtests take about one session timeout each: use short sessions.
package coordtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker/coord"
)

// Timeout bounds each wait for a change to be seen (a notification, an expiry). It is a bound
// against hanging, not a speed requirement.
var Timeout = 30 * time.Second

// Run runs the contract against newCoord's sessions. kill ends a session abruptly: its
// members and lock must vanish once the session has expired, and its Lost must close. A nil
// kill skips the subtests that need it.
func Run(t *testing.T, newCoord func(t *testing.T) coord.Coordinator, kill func(t *testing.T, c coord.Coordinator)) {
	s := &suite{newCoord: newCoord, kill: kill}

	t.Run("FreshNamespaceIsEmpty", s.freshNamespaceIsEmpty)
	t.Run("JoinedMemberIsListedByEverySession", s.joinedMemberIsListed)
	t.Run("JoinTwiceReplacesTheEntry", s.joinTwiceReplaces)
	t.Run("UpdateReplacesMemberData", s.updateReplacesData)
	t.Run("UpdateWithoutJoinFails", s.updateWithoutJoinFails)
	t.Run("MemberVanishesWhenSessionCloses", s.memberVanishesOnClose)
	t.Run("KilledSessionIsLostAndItsMemberVanishes", s.killedSessionIsLost)
	t.Run("OnlyOneSessionHoldsMaster", s.onlyOneHoldsMaster)
	t.Run("MasterFreedWhenHolderCloses", s.masterFreedOnClose)
	t.Run("MasterFreedWhenHolderDies", s.masterFreedOnKill)
	t.Run("RevokeFreesTheLockOfTheNamedHolderOnly", s.revokeFreesNamedHolder)
	t.Run("DesignationPersistsAcrossSessions", s.designationPersists)
	t.Run("WatchReportsEveryKindOfChange", s.watchReportsChanges)
	t.Run("WatchClosesWhenContextEnds", s.watchClosesOnCancel)
}

type suite struct {
	newCoord func(t *testing.T) coord.Coordinator
	kill     func(t *testing.T, c coord.Coordinator)
}

func (s *suite) freshNamespaceIsEmpty(t *testing.T) {
	c := s.newCoord(t)
	if ms := mustMembers(t, c); len(ms) != 0 {
		t.Errorf("Members of a fresh namespace = %v, want none", ms)
	}
	if id := mustMaster(t, c); id != "" {
		t.Errorf("Master of a fresh namespace = %q, want \"\"", id)
	}
	if id := mustDesignated(t, c); id != "" {
		t.Errorf("Designated of a fresh namespace = %q, want \"\"", id)
	}
	assertNotLost(t, c)
}

func (s *suite) joinedMemberIsListed(t *testing.T) {
	a, b := s.newCoord(t), s.newCoord(t)
	m := coord.Member{ID: "join-a", PID: 4242, Role: coord.RoleSlave, Applied: 7, Ready: true}
	mustJoin(t, a, m)
	for name, c := range map[string]coord.Coordinator{"own session": a, "other session": b} {
		got, ok := mustMembers(t, c)[m.ID]
		if !ok {
			t.Fatalf("%s: Members does not list %q", name, m.ID)
		}
		if got != m {
			t.Errorf("%s: member = %+v, want %+v", name, got, m)
		}
	}
	assertNotLost(t, a)
}

func (s *suite) joinTwiceReplaces(t *testing.T) {
	a, b := s.newCoord(t), s.newCoord(t)
	m := coord.Member{ID: "rejoin-a", PID: 1, Role: coord.RoleSlave}
	mustJoin(t, a, m)
	m.Applied, m.Ready = 12, true
	mustJoin(t, a, m)
	ms, err := b.Members(t.Context())
	if err != nil {
		t.Fatalf("Members: %v", err)
	}
	n := 0
	for _, got := range ms {
		if got.ID == m.ID {
			n++
			if got != m {
				t.Errorf("member after second Join = %+v, want %+v", got, m)
			}
		}
	}
	if n != 1 {
		t.Errorf("Members lists %q %d times, want once", m.ID, n)
	}
}

func (s *suite) updateReplacesData(t *testing.T) {
	a, b := s.newCoord(t), s.newCoord(t)
	m := coord.Member{ID: "update-a", PID: 10, Role: coord.RoleSlave}
	mustJoin(t, a, m)
	m.Role, m.Applied, m.Ready = coord.RoleMaster, 99, true
	if err := a.Update(t.Context(), m); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if got := mustMembers(t, b)[m.ID]; got != m {
		t.Errorf("member after Update = %+v, want %+v", got, m)
	}
}

func (s *suite) updateWithoutJoinFails(t *testing.T) {
	a, b := s.newCoord(t), s.newCoord(t)
	if err := a.Update(t.Context(), coord.Member{ID: "never-joined"}); err == nil {
		t.Error("Update of a member nobody joined succeeded")
	}
	mustJoin(t, b, coord.Member{ID: "joined-by-b"})
	if err := a.Update(t.Context(), coord.Member{ID: "joined-by-b", Applied: 1}); err == nil {
		t.Error("Update of a member another session joined succeeded")
	}
	if _, ok := mustMembers(t, a)["never-joined"]; ok {
		t.Error("a failed Update created a member")
	}
}

func (s *suite) memberVanishesOnClose(t *testing.T) {
	a, b := s.newCoord(t), s.newCoord(t)
	mustJoin(t, a, coord.Member{ID: "close-a"})
	w := mustWatch(t, b)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	await(t, w, "closed session's member to vanish", func() bool {
		_, ok := mustMembers(t, b)["close-a"]
		return !ok
	})
	assertNotLost(t, b)
}

func (s *suite) killedSessionIsLost(t *testing.T) {
	if s.kill == nil {
		t.Skip("no kill function")
	}
	a, b := s.newCoord(t), s.newCoord(t)
	mustJoin(t, a, coord.Member{ID: "killed-a", Role: coord.RoleSlave})
	w := mustWatch(t, b)

	start := time.Now()
	s.kill(t, a)
	select {
	case <-a.Lost():
	case <-time.After(Timeout):
		t.Fatalf("Lost not closed %v after the session was killed", Timeout)
	}
	lostAfter := time.Since(start)
	await(t, w, "killed session's member to vanish", func() bool {
		_, ok := mustMembers(t, b)["killed-a"]
		return !ok
	})
	t.Logf("killed session: Lost after %v, member gone for others after %v", lostAfter.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	ctx := t.Context()
	calls := map[string]func() error{
		"Join":          func() error { return a.Join(ctx, coord.Member{ID: "killed-a"}) },
		"Update":        func() error { return a.Update(ctx, coord.Member{ID: "killed-a"}) },
		"Members":       func() error { _, err := a.Members(ctx); return err },
		"AcquireMaster": func() error { return a.AcquireMaster(ctx, "killed-a") },
		"Master":        func() error { _, err := a.Master(ctx); return err },
		"Designate":     func() error { return a.Designate(ctx, "killed-a") },
		"Designated":    func() error { _, err := a.Designated(ctx); return err },
		"Watch":         func() error { _, err := a.Watch(ctx); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, coord.ErrSessionLost) {
			t.Errorf("%s after Lost: error %v, want ErrSessionLost", name, err)
		}
	}
	if _, ok := mustMembers(t, b)["killed-a"]; ok {
		t.Error("Join after Lost registered the member")
	}
	if id := mustMaster(t, b); id == "killed-a" {
		t.Error("AcquireMaster after Lost took the lock")
	}
	if err := a.Close(); err != nil {
		t.Errorf("Close after Lost: %v", err)
	}
}

func (s *suite) onlyOneHoldsMaster(t *testing.T) {
	a, b := s.newCoord(t), s.newCoord(t)
	awaitNoMaster(t, b)
	ctx := t.Context()
	if err := a.AcquireMaster(ctx, "lock-a"); err != nil {
		t.Fatalf("AcquireMaster(lock-a): %v", err)
	}
	if err := b.AcquireMaster(ctx, "lock-b"); !errors.Is(err, coord.ErrHeld) {
		t.Fatalf("second session's AcquireMaster: error %v, want ErrHeld", err)
	}
	if err := a.AcquireMaster(ctx, "lock-a"); err != nil {
		t.Errorf("holder's AcquireMaster again: %v", err)
	}
	for name, c := range map[string]coord.Coordinator{"holder": a, "other": b} {
		if id := mustMaster(t, c); id != "lock-a" {
			t.Errorf("%s: Master = %q, want lock-a", name, id)
		}
	}
}

func (s *suite) masterFreedOnClose(t *testing.T) {
	a, b := s.newCoord(t), s.newCoord(t)
	awaitNoMaster(t, b)
	ctx := t.Context()
	if err := a.AcquireMaster(ctx, "close-lock-a"); err != nil {
		t.Fatalf("AcquireMaster: %v", err)
	}
	w := mustWatch(t, b)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	await(t, w, "lock of the closed holder to be freed", func() bool { return mustMaster(t, b) == "" })
	if err := b.AcquireMaster(ctx, "close-lock-b"); err != nil {
		t.Fatalf("AcquireMaster after the holder closed: %v", err)
	}
	if id := mustMaster(t, b); id != "close-lock-b" {
		t.Errorf("Master = %q, want close-lock-b", id)
	}
}

func (s *suite) masterFreedOnKill(t *testing.T) {
	if s.kill == nil {
		t.Skip("no kill function")
	}
	a, b := s.newCoord(t), s.newCoord(t)
	awaitNoMaster(t, b)
	ctx := t.Context()
	if err := a.AcquireMaster(ctx, "kill-lock-a"); err != nil {
		t.Fatalf("AcquireMaster: %v", err)
	}
	w := mustWatch(t, b)
	start := time.Now()
	s.kill(t, a)
	await(t, w, "lock of the killed holder to be freed", func() bool { return mustMaster(t, b) == "" })
	t.Logf("killed holder: lock free after %v", time.Since(start).Round(time.Millisecond))
	if err := b.AcquireMaster(ctx, "kill-lock-b"); err != nil {
		t.Fatalf("AcquireMaster after the holder died: %v", err)
	}
	select {
	case <-a.Lost():
	case <-time.After(Timeout):
		t.Fatal("the killed holder's Lost is not closed")
	}
}

func (s *suite) revokeFreesNamedHolder(t *testing.T) {
	a, b := s.newCoord(t), s.newCoord(t)
	if err := a.AcquireMaster(t.Context(), "revoke-a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Revoke(t.Context(), "someone-else"); err != nil {
		t.Fatalf("Revoke of a lock held by another id: %v", err)
	}
	if got := mustMaster(t, b); got != "revoke-a" {
		t.Fatalf("Master after revoking another id = %q, want revoke-a", got)
	}
	// Revoke is immediate: no waiting for a session timeout.
	if err := b.Revoke(t.Context(), "revoke-a"); err != nil {
		t.Fatal(err)
	}
	if got := mustMaster(t, b); got != "" {
		t.Fatalf("Master right after Revoke = %q, want none", got)
	}
	if err := b.AcquireMaster(t.Context(), "revoke-b"); err != nil {
		t.Fatalf("AcquireMaster after Revoke: %v", err)
	}
	if err := b.Revoke(t.Context(), "revoke-a"); err != nil {
		t.Fatal(err)
	}
	if got := mustMaster(t, a); got != "revoke-b" {
		t.Fatalf("a stale Revoke removed the new holder's lock: master %q", got)
	}
}

func (s *suite) designationPersists(t *testing.T) {
	ctx := t.Context()
	a := s.newCoord(t)
	if err := a.Designate(ctx, "des-1"); err != nil {
		t.Fatalf("Designate: %v", err)
	}
	if id := mustDesignated(t, a); id != "des-1" {
		t.Errorf("Designated = %q, want des-1", id)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b := s.newCoord(t)
	if id := mustDesignated(t, b); id != "des-1" {
		t.Errorf("Designated after the designating session closed = %q, want des-1", id)
	}
	if err := b.Designate(ctx, "des-2"); err != nil {
		t.Fatalf("Designate again: %v", err)
	}
	if id := mustDesignated(t, s.newCoord(t)); id != "des-2" {
		t.Errorf("Designated in a new session = %q, want des-2", id)
	}
}

func (s *suite) watchReportsChanges(t *testing.T) {
	ctx := t.Context()
	obs, a := s.newCoord(t), s.newCoord(t)
	awaitNoMaster(t, obs)
	w := mustWatch(t, obs)
	own := mustWatch(t, a) // a session also sees its own changes

	m := coord.Member{ID: "watch-a", PID: 77, Role: coord.RoleSlave}
	steps := []struct {
		what string
		act  func() error
		done func() bool
	}{
		{"join", func() error { return a.Join(ctx, m) },
			func() bool { _, ok := mustMembers(t, obs)[m.ID]; return ok }},
		{"update", func() error { m.Ready, m.Applied = true, 5; return a.Update(ctx, m) },
			func() bool { return mustMembers(t, obs)[m.ID].Ready }},
		{"master lock taken", func() error { return a.AcquireMaster(ctx, m.ID) },
			func() bool { return mustMaster(t, obs) == m.ID }},
		{"designation", func() error { return obs.Designate(ctx, "watch-designated") },
			func() bool { return mustDesignated(t, obs) == "watch-designated" }},
		{"designation changed", func() error { return obs.Designate(ctx, "watch-designated-2") },
			func() bool { return mustDesignated(t, obs) == "watch-designated-2" }},
		{"leave and lock freed", a.Close,
			func() bool { _, ok := mustMembers(t, obs)[m.ID]; return !ok && mustMaster(t, obs) == "" }},
	}
	for i, st := range steps {
		drain(w)
		drain(own)
		if err := st.act(); err != nil {
			t.Fatalf("%s: %v", st.what, err)
		}
		awaitNotified(t, w, st.what, st.done)
		if i < len(steps)-1 { // the last step closes the session, and its watch
			awaitNotified(t, own, st.what+" (acting session's watch)", st.done)
		}
	}
}

func (s *suite) watchClosesOnCancel(t *testing.T) {
	c := s.newCoord(t)
	ctx, cancel := context.WithCancel(t.Context())
	w, err := c.Watch(ctx)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	cancel()
	deadline := time.After(Timeout)
	for {
		select {
		case _, ok := <-w:
			if !ok {
				assertNotLost(t, c)
				return
			}
		case <-deadline:
			t.Fatalf("Watch channel still open %v after its context ended", Timeout)
		}
	}
}

// ---------------------------------------------------------------- helpers

func mustJoin(t *testing.T, c coord.Coordinator, m coord.Member) {
	t.Helper()
	if err := c.Join(t.Context(), m); err != nil {
		t.Fatalf("Join(%s): %v", m.ID, err)
	}
}

func mustMembers(t *testing.T, c coord.Coordinator) map[string]coord.Member {
	t.Helper()
	ms, err := c.Members(t.Context())
	if err != nil {
		t.Fatalf("Members: %v", err)
	}
	out := make(map[string]coord.Member, len(ms))
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

func mustMaster(t *testing.T, c coord.Coordinator) string {
	t.Helper()
	id, err := c.Master(t.Context())
	if err != nil {
		t.Fatalf("Master: %v", err)
	}
	return id
}

func mustDesignated(t *testing.T, c coord.Coordinator) string {
	t.Helper()
	id, err := c.Designated(t.Context())
	if err != nil {
		t.Fatalf("Designated: %v", err)
	}
	return id
}

// mustWatch watches until the test ends.
func mustWatch(t *testing.T, c coord.Coordinator) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	w, err := c.Watch(ctx)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	return w
}

func assertNotLost(t *testing.T, c coord.Coordinator) {
	t.Helper()
	select {
	case <-c.Lost():
		t.Error("Lost is closed on a live session")
	default:
	}
}

// drain takes the notifications already queued.
func drain(w <-chan struct{}) {
	for {
		select {
		case _, ok := <-w:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// await returns once cond holds, checking it now and after each notification on w.
func await(t *testing.T, w <-chan struct{}, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(Timeout)
	for !cond() {
		select {
		case _, ok := <-w:
			if !ok {
				t.Fatalf("waiting for %s: the watch channel closed", what)
			}
		case <-deadline:
			t.Fatalf("waiting for %s: not seen within %v", what, Timeout)
		}
	}
}

// awaitNotified requires a notification on w, then waits as await does.
func awaitNotified(t *testing.T, w <-chan struct{}, what string, cond func() bool) {
	t.Helper()
	select {
	case _, ok := <-w:
		if !ok {
			t.Fatalf("watch after %s: channel closed", what)
		}
	case <-time.After(Timeout):
		t.Fatalf("watch after %s: no notification within %v", what, Timeout)
	}
	await(t, w, what, cond)
}

// awaitNoMaster waits until no session holds the lock (an earlier subtest's holder may be
// closing).
func awaitNoMaster(t *testing.T, c coord.Coordinator) {
	t.Helper()
	if mustMaster(t, c) == "" {
		return
	}
	await(t, mustWatch(t, c), "the master lock to be free", func() bool { return mustMaster(t, c) == "" })
}
