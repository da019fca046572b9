package store

import (
	"context"
	"github.com/rideshare/rideshare"
	"sync"
)

// Local is a single SQLite store used directly as the database: writes are numbered by an
// in-memory counter instead of a sync log. It serves the users and rides services in tests
// that are about their HTTP contract rather than replication, and a one-process benchmark
// baseline. It has the same Write/Read methods as the orchestrator's client.
type Local struct {
	Store *Store

	mu   sync.Mutex
	next uint64
}

// Write applies w at once.
func (l *Local) Write(ctx context.Context, w rideshare.Write) (rideshare.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Store.Execute(ctx, w, func(LogOp) (uint64, error) {
		return l.Store.Applied() + 1, nil
	})
}

// Read queries the store.
func (l *Local) Read(ctx context.Context, r rideshare.Read) ([]rideshare.Row, error) {
	if err := rideshare.ValidateRead(r); err != nil {
		return nil, err
	}
	return l.Store.Query(ctx, r)
}

// Ping reports whether the store is open.
func (l *Local) Ping(ctx context.Context) error {
	_, err := l.Store.Query(ctx, rideshare.Read{Table: "users", Columns: []string{"id"}, Limit: 1})
	return err
}
