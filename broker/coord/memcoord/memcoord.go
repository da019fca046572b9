// Package memcoord is an in-memory coordination service for unit tests of the worker and the
// supervisor: sessions, ephemeral members, a persistent designation and an exclusive master
// lock, as ZooKeeper and the JetStream KV leases provide them, in one process. It passes the
// same contract suite (coordtest) as zkcoord and kvcoord. Expire ends a session the way a
// ZooKeeper session expiry does, at once, so a test of what happens then takes no timeout.
package memcoord

import (
	"context"
	"fmt"
	"sync"

	"github.com/rideshare/rideshare/broker/coord"
)

// Service is one coordination namespace (one ZooKeeper ensemble and root) shared by sessions.
type Service struct {
	mu         sync.Mutex
	members    map[string]member
	designated string
	master     string
	holder     *Session
	watchers   map[*watcher]struct{}
}

type member struct {
	m     coord.Member
	owner *Session
}

type watcher struct {
	ch    chan struct{}
	owner *Session
	done  bool
}

// NewService returns an empty namespace.
func NewService() *Service {
	return &Service{members: map[string]member{}, watchers: map[*watcher]struct{}{}}
}

// Session opens a new session on the namespace.
func (s *Service) Session() *Session { return &Session{svc: s, lost: make(chan struct{})} }

// notify wakes every watcher without blocking; s.mu is held.
func (s *Service) notify() {
	for w := range s.watchers {
		select {
		case w.ch <- struct{}{}:
		default: // one wake-up pending is enough: watches are coalesced
		}
	}
}

// Session is one process's session; it implements coord.Coordinator.
type Session struct {
	svc    *Service
	lost   chan struct{}
	ended  bool // closed or expired: every call but Close fails
	expire sync.Once
}

var _ coord.Coordinator = (*Session)(nil)

// alive fails once the session has ended; s.svc.mu is held.
func (c *Session) alive() error {
	if c.ended {
		return coord.ErrSessionLost
	}
	return nil
}

// end removes what the session holds and closes its watches; s.svc.mu is held.
func (c *Session) end() {
	if c.ended {
		return
	}
	c.ended = true
	s := c.svc
	for id, m := range s.members {
		if m.owner == c {
			delete(s.members, id)
		}
	}
	if s.holder == c {
		s.master, s.holder = "", nil
	}
	for w := range s.watchers {
		if w.owner == c {
			delete(s.watchers, w)
			w.done = true
			close(w.ch)
		}
	}
	s.notify()
}

// Expire ends the session as a ZooKeeper session expiry does: its members and lock vanish,
// Lost is closed and every later call returns coord.ErrSessionLost.
func (c *Session) Expire() {
	c.svc.mu.Lock()
	c.end()
	c.svc.mu.Unlock()
	c.expire.Do(func() { close(c.lost) })
}

func (c *Session) Join(ctx context.Context, m coord.Member) error {
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	if err := c.alive(); err != nil {
		return err
	}
	c.svc.members[m.ID] = member{m: m, owner: c}
	c.svc.notify()
	return nil
}

func (c *Session) Update(ctx context.Context, m coord.Member) error {
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	if err := c.alive(); err != nil {
		return err
	}
	if have, ok := c.svc.members[m.ID]; !ok || have.owner != c {
		return fmt.Errorf("update %s: not a member this session joined", m.ID)
	}
	c.svc.members[m.ID] = member{m: m, owner: c}
	c.svc.notify()
	return nil
}

func (c *Session) Members(ctx context.Context) ([]coord.Member, error) {
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	if err := c.alive(); err != nil {
		return nil, err
	}
	out := make([]coord.Member, 0, len(c.svc.members))
	for _, m := range c.svc.members {
		out = append(out, m.m)
	}
	return out, nil
}

func (c *Session) Watch(ctx context.Context) (<-chan struct{}, error) {
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	if err := c.alive(); err != nil {
		return nil, err
	}
	w := &watcher{ch: make(chan struct{}, 1), owner: c}
	c.svc.watchers[w] = struct{}{}
	context.AfterFunc(ctx, func() {
		c.svc.mu.Lock()
		defer c.svc.mu.Unlock()
		if !w.done {
			w.done = true
			delete(c.svc.watchers, w)
			close(w.ch)
		}
	})
	return w.ch, nil
}

func (c *Session) Designate(ctx context.Context, id string) error {
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	if err := c.alive(); err != nil {
		return err
	}
	c.svc.designated = id
	c.svc.notify()
	return nil
}

func (c *Session) Designated(ctx context.Context) (string, error) {
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	if err := c.alive(); err != nil {
		return "", err
	}
	return c.svc.designated, nil
}

func (c *Session) AcquireMaster(ctx context.Context, id string) error {
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	if err := c.alive(); err != nil {
		return err
	}
	switch s := c.svc; {
	case s.holder == nil:
		s.master, s.holder = id, c
		s.notify()
		return nil
	case s.holder == c && s.master == id:
		return nil
	}
	return coord.ErrHeld
}

func (c *Session) Master(ctx context.Context) (string, error) {
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	if err := c.alive(); err != nil {
		return "", err
	}
	return c.svc.master, nil
}

func (c *Session) Revoke(ctx context.Context, id string) error {
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	if err := c.alive(); err != nil {
		return err
	}
	if s := c.svc; s.holder != nil && s.master == id {
		s.master, s.holder = "", nil
		s.notify()
	}
	return nil
}

func (c *Session) Lost() <-chan struct{} { return c.lost }

// Close ends the session cleanly: its members and lock go; Lost stays open (the process
// chose to leave, nothing was lost). Closing twice, or after Expire, is a no-op.
func (c *Session) Close() error {
	c.svc.mu.Lock()
	c.end()
	c.svc.mu.Unlock()
	return nil
}
