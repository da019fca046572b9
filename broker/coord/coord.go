// Package coord is how workers and the orchestrator agree on who is alive and who is master.
//
// Every worker joins as an ephemeral member: its entry vanishes when its session ends (the
// process died, was paused past the session timeout, or lost its connection for that long).
// The orchestrator watches the members; when there is no master it designates the live slave
// with the lowest PID, and that worker takes the master lock. The lock is ephemeral too, so at
// most one worker holds it, and a worker whose session is lost must stop acting as master at
// once (Lost is closed). The sync log adds a second fence: a deposed master can never append.
//
// Implementations: zkcoord (ZooKeeper) and kvcoord (NATS JetStream key-value leases, for
// `rideshare up` with nothing installed). Both pass coordtest.Run.
package coord

import (
	"context"
	"errors"
)

// Roles a member can have.
const (
	RoleMaster = "master"
	RoleSlave  = "slave"
)

// ErrHeld is returned by AcquireMaster when another worker holds the master lock.
var ErrHeld = errors.New("master lock held by another worker")

// ErrSessionLost is returned by calls made after the session ended.
var ErrSessionLost = errors.New("coordination session lost")

// Member is what a worker publishes about itself.
type Member struct {
	ID      string `json:"id"`
	PID     int    `json:"pid"` // as the worker sees it; the runtime's PID is authoritative
	Role    string `json:"role"`
	Applied uint64 `json:"applied_seq"`
	Ready   bool   `json:"ready"`
}

// Coordinator is one process's session with the coordination service. A worker calls Join
// once; the orchestrator only reads (Members, Master, Watch) and designates.
type Coordinator interface {
	// Join registers m as an ephemeral member of this session. Joining twice with the same ID
	// replaces the entry.
	Join(ctx context.Context, m Member) error
	// Update replaces the data of a member this session joined.
	Update(ctx context.Context, m Member) error
	// Members lists the live members, in no particular order.
	Members(ctx context.Context) ([]Member, error)
	// Watch returns a channel that receives a value (coalesced, never blocking the sender)
	// whenever the members, the master or the designation may have changed. It is closed when
	// ctx ends.
	Watch(ctx context.Context) (<-chan struct{}, error)
	// Designate names the worker that should become master next. The entry is persistent.
	Designate(ctx context.Context, id string) error
	// Designated returns the designated worker's ID, or "" if none.
	Designated(ctx context.Context) (string, error)
	// AcquireMaster takes the master lock for id, held by this session. It returns ErrHeld if
	// another session holds it; acquiring a lock this session already holds succeeds.
	AcquireMaster(ctx context.Context, id string) error
	// Master returns the ID holding the master lock, or "" if none.
	Master(ctx context.Context) (string, error)
	// Revoke removes the master lock if id holds it, whichever session that is. Only for a
	// holder known to be dead (its process exited): it frees the lock at once instead of
	// after the session timeout. Revoking a lock id does not hold is a no-op.
	Revoke(ctx context.Context, id string) error
	// Lost is closed when this session has ended: its members and lock are gone or about to
	// be, and the process must no longer act on them.
	Lost() <-chan struct{}
	// Close ends the session cleanly, removing its members and lock.
	Close() error
}
