package store

import (
	"context"
	"fmt"
	"github.com/rideshare/rideshare"
	"sort"
	"strings"
)

// rowsPerInsert is how many rows one multi-row INSERT of a replay carries. Running one
// statement per row costs more in statement overhead (bind, step, reset, database/sql) than
// SQLite spends inserting the row; 64 rows of at most 6 columns stay far below SQLite's
// limit of bound variables.
const rowsPerInsert = 64

// inserts collects consecutive row inserts of one shape (table and columns) while a slave
// replays the log, and runs them rowsPerInsert at a time. Rows go in in log order, and the
// caller flushes before anything that is not such an insert, so the database passes through
// the same states as when the entries are applied one by one; only an error names a range of
// entries instead of one.
type inserts struct {
	tx    *txn
	key   string // table and columns of the pending rows
	table string
	cols  []string
	args  []any
	rows  int
	first uint64 // sequence of the entry of the first pending row
}

func (b *inserts) add(ctx context.Context, seq uint64, table string, cols []string, vals []any) error {
	key := table + "(" + strings.Join(cols, ",") + ")"
	if key != b.key {
		if err := b.flush(ctx); err != nil {
			return err
		}
		b.key, b.table, b.cols = key, table, cols
	}
	if b.rows == 0 {
		b.first = seq
	}
	b.args = append(b.args, vals...)
	b.rows++
	if b.rows == rowsPerInsert {
		return b.flush(ctx)
	}
	return nil
}

// flush runs the pending rows: full groups as one statement, a remainder row by row (so that
// there are two statement texts per shape to prepare, not one per row count).
func (b *inserts) flush(ctx context.Context) error {
	if b.rows == 0 {
		return nil
	}
	quoted := make([]string, len(b.cols))
	for i, c := range b.cols {
		quoted[i] = rideshare.Quote(c)
	}
	head := "INSERT INTO " + rideshare.Quote(b.table) + " (" + strings.Join(quoted, ", ") + ") VALUES "
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(b.cols)), ", ") + ")"
	var err error
	if b.rows == rowsPerInsert {
		_, err = b.tx.exec(ctx, head+strings.TrimSuffix(strings.Repeat(row+", ", b.rows), ", "), b.args...)
	} else {
		n := len(b.cols)
		for i := 0; i < b.rows && err == nil; i++ {
			_, err = b.tx.exec(ctx, head+row, b.args[i*n:(i+1)*n]...)
		}
	}
	if err != nil {
		err = fmt.Errorf("entries from %d: insert into %s: %w", b.first, b.table, mapErr(err))
	}
	b.args, b.rows = b.args[:0], 0
	return err
}

// replayer applies resolved log entries (see Apply), batching their row inserts.
type replayer struct {
	tx       *txn
	data     inserts // rows of users, rides and ride_users
	requests inserts // rows of the requests table
}

func newReplayer(tx *txn) *replayer {
	return &replayer{tx: tx, data: inserts{tx: tx}, requests: inserts{tx: tx}}
}

// entry replays one log entry: a write, or a group of writes that all succeeded on the
// master, each remembered under its request id.
func (r *replayer) entry(ctx context.Context, e Entry) error {
	for _, op := range e.Op.writes() {
		res, err := r.op(ctx, e.Seq, op)
		if err != nil {
			return err
		}
		if op.RequestID != "" {
			err := r.requests.add(ctx, e.Seq, "requests", []string{"id", "seq", "rid", "affected"},
				[]any{op.RequestID, int64(e.Seq), res.ID, res.Affected})
			if err != nil {
				return fmt.Errorf("record request %s: %w", op.RequestID, err)
			}
		}
	}
	if trimDue(e.Seq) {
		// The rows to forget are far older than any pending one; flushing first keeps the
		// order of statements the same as one entry at a time.
		if err := r.requests.flush(ctx); err != nil {
			return err
		}
		return recordRequest(ctx, r.tx, "", e.Seq, rideshare.Result{})
	}
	return nil
}

// op replays one write. An insert carrying its assigned id joins the pending rows; anything
// else first runs the pending rows, then itself.
func (r *replayer) op(ctx context.Context, seq uint64, w rideshare.Write) (rideshare.Result, error) {
	if w.Batch != nil {
		var res rideshare.Result
		for i, b := range w.Batch {
			rr, err := r.op(ctx, seq, b)
			if err != nil {
				return res, fmt.Errorf("batch[%d]: %w", i, err)
			}
			res.Affected += rr.Affected
			if rr.ID != 0 {
				res.ID = rr.ID
			}
		}
		return res, nil
	}
	if w.Insert != nil {
		if cols, vals, id, ok := resolvedInsert(w); ok {
			return rideshare.Result{ID: id, Affected: 1}, r.data.add(ctx, seq, w.Table, cols, vals)
		}
	}
	if err := r.data.flush(ctx); err != nil {
		return rideshare.Result{}, err
	}
	_, res, err := apply(ctx, r.tx, w, false)
	return res, err
}

// flush runs whatever is pending.
func (r *replayer) flush(ctx context.Context) error {
	if err := r.data.flush(ctx); err != nil {
		return err
	}
	return r.requests.flush(ctx)
}

// resolvedInsert returns an insert's sorted columns, its values converted to their columns'
// types and the id the master assigned; ok is false if the insert lacks its id or a value does
// not convert (apply then reports it).
func resolvedInsert(w rideshare.Write) (cols []string, vals []any, id int64, ok bool) {
	t, found := rideshare.Schema[w.Table]
	if !found {
		return nil, nil, 0, false
	}
	cols = make([]string, 0, len(w.Insert))
	for name := range w.Insert {
		cols = append(cols, name)
	}
	sort.Strings(cols)
	vals = make([]any, len(cols))
	for i, name := range cols {
		c, found := t.Column(name)
		if !found {
			return nil, nil, 0, false
		}
		v, err := rideshare.Value(c, w.Insert[name])
		if err != nil {
			return nil, nil, 0, false
		}
		vals[i] = v
	}
	for _, c := range t.Columns {
		if !c.Auto {
			continue
		}
		v, found := w.Insert[c.Name]
		if !found {
			return nil, nil, 0, false
		}
		x, err := rideshare.Value(c, v)
		if err != nil {
			return nil, nil, 0, false
		}
		id = x.(int64)
	}
	return cols, vals, id, true
}
