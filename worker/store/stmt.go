package store

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStmts bounds the statement cache. The SQL texts are built from the schema (values
// are always bound), so there are a few dozen shapes in practice; the bound only keeps a
// client that tries every column combination from growing the cache without end.
const maxCachedStmts = 512

// stmtCache keeps one prepared statement per SQL text. Parsing and planning a statement costs
// more than running one of these small indexed queries: without the cache a quarter of a
// slave's CPU under a list-rides load went to SQLite's parser (docs/BENCHMARKS.md).
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: map[string]*sql.Stmt{}}
}

// get returns the cached statement for q, preparing it on first use. A nil statement with a
// nil error means the cache is full: run q unprepared.
func (c *stmtCache) get(ctx context.Context, q string) (*sql.Stmt, error) {
	st, ok, full := c.lookup(q)
	if ok || full {
		return st, nil
	}
	st, err := c.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.m[q]; ok { // prepared concurrently: keep one
		st.Close()
		return prev, nil
	}
	c.m[q] = st
	return st, nil
}

// lookup returns q's statement if cached, and whether the cache is full.
func (c *stmtCache) lookup(q string) (st *sql.Stmt, ok, full bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok = c.m[q]
	return st, ok, len(c.m) >= maxCachedStmts
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.m {
		st.Close()
		delete(c.m, q)
	}
}

func (c *stmtCache) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := c.get(ctx, q)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return c.db.QueryContext(ctx, q, args...)
	}
	return st.QueryContext(ctx, args...)
}

// txn is a write transaction that runs its statements through the writer's cache: the writer
// has one connection, so a statement prepared once serves every later transaction.
type txn struct {
	*sql.Tx
	c      *stmtCache
	bound  map[string]*sql.Stmt // cached statements bound to this transaction
	missed []string             // not cached yet: prepared by end, once the connection is free again
}

func (s *Store) begin(ctx context.Context) (*txn, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &txn{Tx: tx, c: s.wStmts}, nil
}

// end rolls back unless committed, then prepares the statements the transaction ran
// unprepared. (Preparing on the writer while the transaction holds its only connection would
// wait for itself.)
func (t *txn) end(ctx context.Context) {
	_ = t.Rollback()
	for _, q := range t.missed {
		_, _ = t.c.get(ctx, q)
	}
}

// cached is q's prepared statement bound to the transaction, or nil if q is not cached yet.
// Binding is done once per statement and transaction: a catch-up transaction runs thousands
// of statements of a handful of shapes, and each binding takes database/sql's locks.
func (t *txn) cached(ctx context.Context, q string) *sql.Stmt {
	if st, ok := t.bound[q]; ok {
		return st
	}
	st, ok, full := t.c.lookup(q)
	if !ok {
		if !full {
			t.missed = append(t.missed, q)
		}
		return nil
	}
	if t.bound == nil {
		t.bound = map[string]*sql.Stmt{}
	}
	bst := t.StmtContext(ctx, st)
	t.bound[q] = bst
	return bst
}

func (t *txn) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := t.cached(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.ExecContext(ctx, q, args...)
}

func (t *txn) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	if st := t.cached(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.QueryRowContext(ctx, q, args...)
}
