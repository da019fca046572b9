package coord_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/coord/memcoord"
)

// The orchestrator's coordinator outlives a lost session: the next call opens a new one, and
// a watch goes on through it.
func TestRenewingOutlivesALostSession(t *testing.T) {
	svc := memcoord.NewService()
	var mu sync.Mutex
	var sessions []*memcoord.Session
	open := func(context.Context) (coord.Coordinator, error) {
		mu.Lock()
		defer mu.Unlock()
		s := svc.Session()
		sessions = append(sessions, s)
		return s, nil
	}
	current := func() *memcoord.Session {
		mu.Lock()
		defer mu.Unlock()
		return sessions[len(sessions)-1]
	}
	ctx := t.Context()
	r, err := coord.NewRenewing(ctx, open, nil)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := r.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Designate(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	drain(watch)

	current().Expire() // ZooKeeper was down for longer than the session timeout
	if got, err := r.Designated(ctx); err != nil || got != "w1" {
		t.Fatalf("after the session was lost: Designated = %q, %v; want w1 through a new session", got, err)
	}
	if n := len(sessions); n != 2 {
		t.Fatalf("%d sessions opened, want 2", n)
	}
	select {
	case <-r.Lost():
		t.Fatal("Lost closed although the session was renewed")
	default:
	}

	// The watch goes on: a change made by someone else after the renewal is seen.
	drain(watch)
	other := svc.Session()
	t.Cleanup(func() { other.Close() })
	deadline := time.After(10 * time.Second)
	for {
		if err := other.Designate(ctx, "w2"); err != nil {
			t.Fatal(err)
		}
		select {
		case _, ok := <-watch:
			if !ok {
				t.Fatal("the watch ended with the lost session")
			}
		case <-time.After(100 * time.Millisecond):
			continue // the new session's watch may not be set yet
		case <-deadline:
			t.Fatal("no change seen through the renewed watch in 10s")
		}
		break
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	<-r.Lost()
	if _, err := r.Designated(ctx); !errors.Is(err, coord.ErrSessionLost) {
		t.Fatalf("after Close: %v, want ErrSessionLost", err)
	}
	if err := r.AcquireMaster(ctx, "w1"); err == nil {
		t.Fatal("a renewing coordinator took the master lock, which would not survive a renewal")
	}
}

// While no new session can be opened, calls fail (they do not hang) and the watch waits.
func TestRenewingWhileTheServiceIsDown(t *testing.T) {
	svc := memcoord.NewService()
	var down bool
	var mu sync.Mutex
	var last *memcoord.Session
	open := func(context.Context) (coord.Coordinator, error) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return nil, errors.New("could not connect to a server")
		}
		last = svc.Session()
		return last, nil
	}
	ctx := t.Context()
	r, err := coord.NewRenewing(ctx, open, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	watch, err := r.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	down = true
	s := last
	mu.Unlock()
	s.Expire()
	if _, err := r.Members(ctx); err == nil {
		t.Fatal("Members answered with no session")
	}
	mu.Lock()
	down = false
	mu.Unlock()
	if _, err := r.Members(ctx); err != nil {
		t.Fatalf("once the service is back: %v", err)
	}
	select {
	case _, ok := <-watch:
		if !ok {
			t.Fatal("the watch ended")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not signal the renewal")
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
