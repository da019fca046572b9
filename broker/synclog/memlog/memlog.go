// Package memlog is an in-memory sync log for unit tests of the worker: the same numbering,
// fenced appends and reads as package synclog's JetStream stream, in a slice. It passes the
// same contract suite (synclog/logtest) as the real log.
package memlog

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rideshare/rideshare/broker/synclog"
)

// ErrUnavailable is what every call returns while the log is made unavailable (SetUnavailable),
// as calls to a JetStream server that is down fail.
var ErrUnavailable = errors.New("memlog: sync log unavailable")

// Log is an in-memory sync log. The zero value is not usable; call New.
type Log struct {
	mu          sync.Mutex
	entries     [][]byte
	bytes       uint64
	unavailable bool
}

// New returns an empty log.
func New() *Log { return &Log{} }

// SetUnavailable makes every call fail with ErrUnavailable (true) or work again (false).
func (l *Log) SetUnavailable(down bool) {
	l.mu.Lock()
	l.unavailable = down
	l.mu.Unlock()
}

func (l *Log) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.unavailable {
		return ErrUnavailable
	}
	return nil
}

// Append stores data after expectLast, or returns synclog.ErrFenced if the log has moved on.
func (l *Log) Append(ctx context.Context, expectLast uint64, data []byte) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(ctx); err != nil {
		return 0, err
	}
	if last := uint64(len(l.entries)); expectLast != last {
		return 0, fmt.Errorf("%w (expected last %d, log at %d)", synclog.ErrFenced, expectLast, last)
	}
	l.entries = append(l.entries, append([]byte(nil), data...))
	l.bytes += uint64(len(data))
	return uint64(len(l.entries)), nil
}

// Last is the sequence of the newest entry (0 when empty).
func (l *Log) Last(ctx context.Context) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(ctx); err != nil {
		return 0, err
	}
	return uint64(len(l.entries)), nil
}

// Confirmed is Last: one process holds the only copy.
func (l *Log) Confirmed(ctx context.Context) (uint64, error) { return l.Last(ctx) }

// State is the log's head and size; an in-memory log keeps no consumers.
func (l *Log) State(ctx context.Context) (synclog.State, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(ctx); err != nil {
		return synclog.State{}, err
	}
	return synclog.State{Last: uint64(len(l.entries)), Bytes: l.bytes}, nil
}

// Get returns the entry at seq.
func (l *Log) Get(ctx context.Context, seq uint64) (synclog.Msg, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.check(ctx); err != nil {
		return synclog.Msg{}, err
	}
	if seq == 0 || seq > uint64(len(l.entries)) {
		return synclog.Msg{}, fmt.Errorf("sync log entry %d: no such entry", seq)
	}
	return synclog.Msg{Seq: seq, Data: l.entries[seq-1]}, nil
}

// Read delivers the entries from to to (inclusive) to fn, in order, at most batch at a time.
// It fails if the log does not reach to, after delivering what it has.
func (l *Log) Read(ctx context.Context, from, to uint64, batch int, fn func([]synclog.Msg) error) error {
	if from == 0 {
		from = 1
	}
	batch = max(batch, 1)
	for next := from; next <= to; {
		l.mu.Lock()
		err := l.check(ctx)
		var msgs []synclog.Msg
		for seq := next; err == nil && seq <= to && seq <= uint64(len(l.entries)) && len(msgs) < batch; seq++ {
			msgs = append(msgs, synclog.Msg{Seq: seq, Data: l.entries[seq-1]})
		}
		l.mu.Unlock()
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			return fmt.Errorf("read sync log: entries %d to %d missing", next, to)
		}
		if err := fn(msgs); err != nil {
			return err
		}
		next = msgs[len(msgs)-1].Seq + 1
	}
	return nil
}
