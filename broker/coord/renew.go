package coord

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Renewing is a Coordinator that outlives its sessions, for the orchestrator: when a session
// is lost (ZooKeeper was down for longer than the session timeout), the next call opens a new
// one. A worker must not use it: its lock and membership die with its session, and it must
// stop acting as soon as they do (Lost). The orchestrator holds neither; it only watches,
// designates and revokes, which any session may do. Without renewal, its supervisor would
// fail every round for good after one long ZooKeeper outage (found by `rideshare chaos`:
// TestChaosRabbitMQZooKeeper, a restart that took longer than the 3 s session).
type Renewing struct {
	open   func(ctx context.Context) (Coordinator, error)
	logger *slog.Logger

	mu     sync.Mutex
	cur    Coordinator
	closed bool
	done   chan struct{} // closed by Close
}

// OpenTimeout bounds the opening of a new session, so that callers get an error while the
// coordination service is down rather than wait for it.
var OpenTimeout = 5 * time.Second

// NewRenewing opens the first session with open and returns the coordinator that renews it.
func NewRenewing(ctx context.Context, open func(ctx context.Context) (Coordinator, error), logger *slog.Logger) (*Renewing, error) {
	if logger == nil {
		logger = slog.Default()
	}
	c, err := open(ctx)
	if err != nil {
		return nil, err
	}
	return &Renewing{open: open, logger: logger, cur: c, done: make(chan struct{})}, nil
}

// session is the current session, a new one if it was lost.
func (r *Renewing) session(ctx context.Context) (Coordinator, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrSessionLost
	}
	select {
	case <-r.cur.Lost():
	default:
		return r.cur, nil
	}
	ctx, cancel := context.WithTimeout(ctx, OpenTimeout)
	defer cancel()
	c, err := r.open(ctx)
	if err != nil {
		return nil, err
	}
	_ = r.cur.Close()
	r.cur = c
	r.logger.Warn("coordination session lost; opened a new one")
	return c, nil
}

// errHoldsNothing: a renewing coordinator is an observer's; members and the master lock are
// workers', and would not survive a renewal.
var errHoldsNothing = errors.New("coord: a renewing coordinator holds no members and no lock (only workers do)")

func (r *Renewing) Join(context.Context, Member) error          { return errHoldsNothing }
func (r *Renewing) Update(context.Context, Member) error        { return errHoldsNothing }
func (r *Renewing) AcquireMaster(context.Context, string) error { return errHoldsNothing }

func (r *Renewing) Members(ctx context.Context) ([]Member, error) {
	c, err := r.session(ctx)
	if err != nil {
		return nil, err
	}
	return c.Members(ctx)
}

func (r *Renewing) Designate(ctx context.Context, id string) error {
	c, err := r.session(ctx)
	if err != nil {
		return err
	}
	return c.Designate(ctx, id)
}

func (r *Renewing) Designated(ctx context.Context) (string, error) {
	c, err := r.session(ctx)
	if err != nil {
		return "", err
	}
	return c.Designated(ctx)
}

func (r *Renewing) Master(ctx context.Context) (string, error) {
	c, err := r.session(ctx)
	if err != nil {
		return "", err
	}
	return c.Master(ctx)
}

func (r *Renewing) Revoke(ctx context.Context, id string) error {
	c, err := r.session(ctx)
	if err != nil {
		return err
	}
	return c.Revoke(ctx, id)
}

// Watch returns a channel that lives until ctx ends, across sessions: when a session's watch
// ends with the session, it signals (anything may have changed meanwhile) and watches again
// through the next session, retrying with a backoff while none can be opened.
func (r *Renewing) Watch(ctx context.Context) (<-chan struct{}, error) {
	c, err := r.session(ctx)
	if err != nil {
		return nil, err
	}
	in, err := c.Watch(ctx)
	if err != nil {
		return nil, err
	}
	out := make(chan struct{}, 1)
	signal := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		defer close(out)
		const minBackoff, maxBackoff = 100 * time.Millisecond, 2 * time.Second
		for {
			for range in {
				signal()
			}
			if ctx.Err() != nil {
				return
			}
			signal()
			for backoff := minBackoff; ; backoff = min(2*backoff, maxBackoff) {
				select {
				case <-ctx.Done():
					return
				case <-r.done:
					return
				case <-time.After(backoff):
				}
				c, err := r.session(ctx)
				if err == nil {
					if in, err = c.Watch(ctx); err == nil {
						break
					}
				}
				if errors.Is(err, ErrSessionLost) && r.isClosed() {
					return
				}
			}
		}
	}()
	return out, nil
}

func (r *Renewing) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Lost is closed only by Close: a lost session is renewed, not reported.
func (r *Renewing) Lost() <-chan struct{} { return r.done }

// Close ends the current session.
func (r *Renewing) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	close(r.done)
	return r.cur.Close()
}
