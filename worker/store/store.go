package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"github.com/rideshare/rideshare"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync/atomic"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrGap is returned by Apply when an entry is not the next one after the applied sequence:
// the caller must fetch the missing entries from the sync log first.
var ErrGap = errors.New("gap in the sync log")

// ErrDiverged means a log entry could not be applied to a replica that has applied every entry
// before it. The replica no longer equals the log and must be rebuilt from it.
var ErrDiverged = errors.New("replica diverged from the sync log")

// Entry is one committed write as it stands in the sync log: Op is fully resolved (assigned
// ids included), so replaying the log into an empty database gives exactly the master's data.
type Entry struct {
	Seq uint64 `json:"seq"`
	Op  LogOp  `json:"op"`
}

// LogOp is what a log entry holds: one resolved write, or what only the log carries — the
// marker of a promotion, or a group of writes committed together. On the wire it is the write's
// own object with the two log-only fields beside its fields.
type LogOp struct {
	rideshare.Write
	// Promote marks that the named worker became master. Its append moves the log on, so a
	// deposed master's next append is refused. It changes no data.
	Promote string `json:"promote,omitempty"`
	// Group is several independent writes the master committed together (group commit); each
	// succeeded and carries its own RequestID.
	Group []rideshare.Write `json:"group,omitempty"`
}

// writes are the writes op applies, in order: none for a promotion.
func (op LogOp) writes() []rideshare.Write {
	switch {
	case op.Promote != "":
		return nil
	case op.Group != nil:
		return op.Group
	}
	return []rideshare.Write{op.Write}
}

// validate checks an entry read from the log: exactly one of a write, a promotion or a group,
// each write as the master resolved it.
func (op LogOp) validate() error {
	w := op.Write
	plain := w.Table != "" || w.Insert != nil || w.Delete != nil || w.Batch != nil || w.Clear || w.RequestID != ""
	switch {
	case op.Group != nil:
		if plain || op.Promote != "" {
			return rideshare.Invalid("a group entry holds nothing but its writes")
		}
		for i, g := range op.Group {
			if err := rideshare.ValidateResolved(g); err != nil {
				return fmt.Errorf("group[%d]: %w", i, err)
			}
		}
		return nil
	case op.Promote != "":
		if plain {
			return rideshare.Invalid("a promotion entry changes no data")
		}
		return nil
	}
	return rideshare.ValidateResolved(w)
}

const ddl = `
CREATE TABLE IF NOT EXISTS users (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	username TEXT NOT NULL UNIQUE,
	password TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rides (
	ride_id     INTEGER PRIMARY KEY AUTOINCREMENT,
	created_by  TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
	timestamp   TEXT NOT NULL,
	ts          INTEGER NOT NULL,
	source      INTEGER NOT NULL,
	destination INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rides_route ON rides(source, destination, ts);
CREATE INDEX IF NOT EXISTS rides_creator ON rides(created_by);
CREATE TABLE IF NOT EXISTS ride_users (
	ride_id  INTEGER NOT NULL REFERENCES rides(ride_id) ON DELETE CASCADE,
	username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
	PRIMARY KEY (ride_id, username)
);
CREATE INDEX IF NOT EXISTS ride_users_user ON ride_users(username);
CREATE TABLE IF NOT EXISTS meta (
	k TEXT PRIMARY KEY,
	v INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (k, v) VALUES ('applied_seq', 0);
CREATE TABLE IF NOT EXISTS requests (
	id       TEXT PRIMARY KEY,
	seq      INTEGER NOT NULL,
	rid      INTEGER NOT NULL,
	affected INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_seq ON requests(seq);
`

// appliedSeqQuery reads the sequence of the last log entry a database holds.
const appliedSeqQuery = `SELECT v FROM meta WHERE k = 'applied_seq'`

// Store is one SQLite copy of the database and the sequence of the last log entry applied to
// it, kept in the same file so that the two can never disagree.
type Store struct {
	Path string

	w       *sql.DB // one connection: writes are serial, as the log is
	r       *sql.DB // read-only pool
	wStmts  *stmtCache
	rStmts  *stmtCache
	applied atomic.Uint64
}

// New returns a store for the SQLite file at path; Open creates or opens it.
func New(path string) *Store { return &Store{Path: path} }

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	// NORMAL in WAL mode: a commit survives a process crash; the sync log, not this file, is
	// what makes an acknowledged write durable across a machine crash.
	q.Add("_pragma", "synchronous(NORMAL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "cache_size(-32768)")
	}
	return "file:" + path + "?" + q.Encode()
}

// Open creates the schema if needed and loads the applied sequence.
func (s *Store) Open(ctx context.Context) error {
	w, err := sql.Open("sqlite", dsn(s.Path, false))
	if err != nil {
		return fmt.Errorf("open %s: %w", s.Path, err)
	}
	w.SetMaxOpenConns(1)
	if _, err := w.ExecContext(ctx, ddl); err != nil {
		w.Close()
		return fmt.Errorf("create schema in %s: %w", s.Path, err)
	}
	var seq uint64
	if err := w.QueryRowContext(ctx, appliedSeqQuery).Scan(&seq); err != nil {
		w.Close()
		return fmt.Errorf("read applied sequence: %w", err)
	}
	r, err := sql.Open("sqlite", dsn(s.Path, true))
	if err != nil {
		w.Close()
		return fmt.Errorf("open %s read-only: %w", s.Path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4) // keep them: each holds its prepared statements
	s.w, s.r = w, r
	s.wStmts, s.rStmts = newStmtCache(w), newStmtCache(r)
	s.applied.Store(seq)
	return nil
}

// Close closes the database.
func (s *Store) Close() error {
	if s.w == nil {
		return nil
	}
	s.rStmts.close()
	s.wStmts.close()
	return errors.Join(s.r.Close(), s.w.Close())
}

// Applied is the sequence of the last log entry applied.
func (s *Store) Applied() uint64 { return s.applied.Load() }

// Execute runs a client's write as the master: in one transaction it applies w, resolves it
// into a deterministic log entry, hands the entry to appendLog (which must make it durable in
// the sync log right after the applied sequence, or fail), records the returned sequence and
// commits. If appendLog fails nothing is changed. If the commit fails after the append, the
// entry is in the log but not here: Execute returns ErrDiverged and the caller must rebuild.
func (s *Store) Execute(ctx context.Context, w rideshare.Write, appendLog func(op LogOp) (uint64, error)) (rideshare.Result, error) {
	out := s.ExecuteGroup(ctx, []rideshare.Write{w}, appendLog)
	return out[0].Result, out[0].Err
}

// Outcome is the answer to one write of a group.
type Outcome struct {
	Result rideshare.Result
	Err    error
}

// ExecuteGroup is Execute for several independent writes at once (group commit): each is
// applied inside its own savepoint, so one that fails (invalid, constraint) leaves the others;
// those that succeed share one transaction and one log entry (a Group entry, or the write itself
// when only one succeeds), so their cost of the log round trip is paid once.
func (s *Store) ExecuteGroup(ctx context.Context, ws []rideshare.Write, appendLog func(op LogOp) (uint64, error)) []Outcome {
	out := make([]Outcome, len(ws))
	fail := func(err error) []Outcome {
		for i := range out {
			if out[i].Err == nil && out[i].Result.Seq == 0 {
				out[i].Err = err
			}
		}
		return out
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return fail(fmt.Errorf("begin: %w", err))
	}
	defer tx.end(ctx)
	var (
		resolved []rideshare.Write
		applied  []int              // indexes of ws applied now, in log order
		firstOf  = map[string]int{} // request id → index of its first write in this group
		dupOf    = map[int]int{}
	)
	for i, w := range ws {
		if err := rideshare.ValidateWrite(w); err != nil {
			out[i].Err = err
			continue
		}
		if w.RequestID != "" {
			if j, ok := firstOf[w.RequestID]; ok {
				dupOf[i] = j
				continue
			}
			var res rideshare.Result
			err := tx.queryRow(ctx, `SELECT seq, rid, affected FROM requests WHERE id = ?`, w.RequestID).Scan(&res.Seq, &res.ID, &res.Affected)
			if err == nil {
				out[i].Result = res // applied before: answer as the first time
				continue
			}
			if !errors.Is(err, sql.ErrNoRows) {
				out[i].Err = fmt.Errorf("look up request %s: %w", w.RequestID, err)
				continue
			}
		}
		r, res, err := applyIsolated(ctx, tx, w)
		if err != nil {
			out[i].Err = err
			continue
		}
		r.RequestID = w.RequestID
		resolved = append(resolved, r)
		applied = append(applied, i)
		out[i].Result = res
		if w.RequestID != "" {
			firstOf[w.RequestID] = i
		}
	}
	if len(applied) > 0 {
		entry := LogOp{Write: resolved[0]}
		if len(resolved) > 1 {
			entry = LogOp{Group: resolved}
		}
		seq, err := s.commit(ctx, tx, entry, appendLog, func(seq uint64) error {
			for _, i := range applied {
				if err := recordRequest(ctx, tx, ws[i].RequestID, seq, out[i].Result); err != nil {
					return err
				}
			}
			return nil
		})
		for _, i := range applied {
			out[i].Result.Seq, out[i].Err = seq, err
			if err != nil {
				out[i].Result = rideshare.Result{}
			}
		}
	}
	for i, j := range dupOf {
		out[i] = out[j]
	}
	return out
}

// applyIsolated applies w inside a savepoint, undoing it alone if it fails.
func applyIsolated(ctx context.Context, tx *txn, w rideshare.Write) (rideshare.Write, rideshare.Result, error) {
	if _, err := tx.exec(ctx, "SAVEPOINT w"); err != nil {
		return w, rideshare.Result{}, err
	}
	r, res, err := apply(ctx, tx, w, true)
	if err != nil {
		if _, rerr := tx.exec(ctx, "ROLLBACK TO w"); rerr != nil {
			return w, rideshare.Result{}, errors.Join(err, rerr)
		}
	}
	if _, rerr := tx.exec(ctx, "RELEASE w"); rerr != nil && err == nil {
		err = rerr
	}
	return r, res, err
}

// commit appends entry to the log right after the applied sequence, runs record with the
// sequence, records it as applied and commits.
func (s *Store) commit(ctx context.Context, tx *txn, entry LogOp, appendLog func(op LogOp) (uint64, error), record func(seq uint64) error) (uint64, error) {
	seq, err := appendLog(entry)
	if err != nil {
		return 0, err
	}
	if want := s.applied.Load() + 1; seq != want {
		return 0, fmt.Errorf("%w: log appended at %d, expected %d", ErrDiverged, seq, want)
	}
	if err := record(seq); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrDiverged, err)
	}
	if err := setApplied(ctx, tx, seq); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrDiverged, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("%w: commit after log append: %v", ErrDiverged, err)
	}
	s.applied.Store(seq)
	return seq, nil
}

// Promote appends and applies the marker that id became master (see LogOp.Promote).
func (s *Store) Promote(ctx context.Context, id string, appendLog func(op LogOp) (uint64, error)) (rideshare.Result, error) {
	tx, err := s.begin(ctx)
	if err != nil {
		return rideshare.Result{}, fmt.Errorf("begin: %w", err)
	}
	defer tx.end(ctx)
	seq, err := s.commit(ctx, tx, LogOp{Promote: id}, appendLog, func(uint64) error { return nil })
	return rideshare.Result{Seq: seq}, err
}

// Apply applies log entries in sequence order in one transaction. Entries at or below the
// applied sequence are skipped, so a redelivered entry is applied once. An entry past the next
// expected one stops the batch with ErrGap after committing those before it.
func (s *Store) Apply(ctx context.Context, entries []Entry) error {
	tx, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.end(ctx)
	applied := s.applied.Load()
	var gap error
	r := newReplayer(tx)
	diverged := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err() // stopping, not diverging
		}
		return fmt.Errorf("%w: %v", ErrDiverged, err)
	}
	for _, e := range entries {
		if e.Seq <= applied {
			continue
		}
		if e.Seq != applied+1 {
			gap = fmt.Errorf("%w: have %d, got %d", ErrGap, applied, e.Seq)
			break
		}
		if err := e.Op.validate(); err != nil {
			return fmt.Errorf("%w: entry %d: %v", ErrDiverged, e.Seq, err)
		}
		if err := r.entry(ctx, e); err != nil {
			return diverged(fmt.Errorf("entry %d: %w", e.Seq, err))
		}
		applied = e.Seq
	}
	if err := r.flush(ctx); err != nil {
		return diverged(err)
	}
	if applied == s.applied.Load() {
		return gap
	}
	if err := setApplied(ctx, tx, applied); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.applied.Store(applied)
	return gap
}

// RequestWindow is how many log entries a request ID is remembered for.
const RequestWindow = 100000

// recordRequest remembers a request's result for deduplication; every 1,000 entries it
// forgets requests older than RequestWindow entries. It depends only on the entry and its
// sequence, so every replica keeps the same table.
func recordRequest(ctx context.Context, tx *txn, id string, seq uint64, res rideshare.Result) error {
	if id != "" {
		if _, err := tx.exec(ctx, `INSERT INTO requests (id, seq, rid, affected) VALUES (?, ?, ?, ?)`,
			id, int64(seq), res.ID, res.Affected); err != nil {
			return fmt.Errorf("record request %s: %w", id, err)
		}
	}
	if trimDue(seq) {
		if _, err := tx.exec(ctx, `DELETE FROM requests WHERE seq <= ?`, int64(seq-RequestWindow)); err != nil {
			return fmt.Errorf("trim requests: %w", err)
		}
	}
	return nil
}

// trimDue says whether the requests older than RequestWindow entries are forgotten at seq.
func trimDue(seq uint64) bool { return seq%1000 == 0 && seq > RequestWindow }

func setApplied(ctx context.Context, tx *txn, seq uint64) error {
	_, err := tx.exec(ctx, `UPDATE meta SET v = ? WHERE k = 'applied_seq'`, int64(seq))
	if err != nil {
		return fmt.Errorf("record applied sequence: %w", err)
	}
	return nil
}

// apply runs w inside tx. With resolve set, ids the database assigns are written back into
// the returned copy of w, which is then the deterministic log entry.
func apply(ctx context.Context, tx *txn, w rideshare.Write, resolve bool) (rideshare.Write, rideshare.Result, error) {
	var res rideshare.Result
	switch {
	case w.Clear:
		for _, t := range []string{"ride_users", "rides", "users"} {
			r, err := tx.exec(ctx, "DELETE FROM "+rideshare.Quote(t))
			if err != nil {
				return w, res, fmt.Errorf("clear %s: %w", t, mapErr(err))
			}
			n, _ := r.RowsAffected()
			res.Affected += n
		}
		return w, res, nil
	case w.Batch != nil:
		out := rideshare.Write{Batch: make([]rideshare.Write, len(w.Batch))}
		for i, b := range w.Batch {
			rb, rr, err := apply(ctx, tx, b, resolve)
			if err != nil {
				return w, res, fmt.Errorf("batch[%d]: %w", i, err)
			}
			out.Batch[i] = rb
			res.Affected += rr.Affected
			if rr.ID != 0 {
				res.ID = rr.ID
			}
		}
		return out, res, nil
	}
	t := rideshare.Schema[w.Table]
	if w.Insert != nil {
		names := make([]string, 0, len(w.Insert))
		for name := range w.Insert {
			names = append(names, name)
		}
		sort.Strings(names)
		vals := make(map[string]any, len(names)+1)
		args := make([]any, len(names))
		quoted := make([]string, len(names))
		for i, name := range names {
			c, _ := t.Column(name)
			v, err := rideshare.Value(c, w.Insert[name])
			if err != nil {
				return w, res, err
			}
			vals[name], args[i], quoted[i] = v, v, rideshare.Quote(name)
		}
		q := "INSERT INTO " + rideshare.Quote(t.Name) + " (" + strings.Join(quoted, ", ") +
			") VALUES (" + strings.TrimSuffix(strings.Repeat("?, ", len(names)), ", ") + ")"
		r, err := tx.exec(ctx, q, args...)
		if err != nil {
			return w, res, fmt.Errorf("insert into %s: %w", t.Name, mapErr(err))
		}
		res.Affected = 1
		for _, c := range t.Columns {
			if !c.Auto {
				continue
			}
			if id, ok := vals[c.Name]; ok {
				res.ID = id.(int64)
			} else if resolve {
				id, err := r.LastInsertId()
				if err != nil {
					return w, res, fmt.Errorf("insert into %s: assigned id: %w", t.Name, err)
				}
				vals[c.Name], res.ID = id, id
			}
		}
		return rideshare.Write{Table: w.Table, Insert: vals}, res, nil
	}
	cond, args, err := rideshare.WhereSQL(t, w.Delete.Where, false)
	if err != nil {
		return w, res, err
	}
	q := "DELETE FROM " + rideshare.Quote(t.Name)
	if cond != "" {
		q += " WHERE " + cond
	}
	r, err := tx.exec(ctx, q, args...)
	if err != nil {
		return w, res, fmt.Errorf("delete from %s: %w", t.Name, mapErr(err))
	}
	res.Affected, _ = r.RowsAffected()
	return w, res, nil
}

// mapErr turns SQLite constraint failures into ErrConstraint, keeping SQLite's message.
func mapErr(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT {
		return fmt.Errorf("%w: %s", rideshare.ErrConstraint, se.Error())
	}
	return err
}

// Query runs a read on the read-only pool. Values are int64 or string.
func (s *Store) Query(ctx context.Context, r rideshare.Read) ([]rideshare.Row, error) {
	out := []rideshare.Row{}
	err := s.query(ctx, r, func(cols []string, vals []any) error {
		row := make(rideshare.Row, len(cols))
		for i, c := range cols {
			row[c] = vals[i]
		}
		out = append(out, row)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// QueryJSON runs a read like Query and appends its rows to dst as a JSON array of objects,
// columns in the order they were asked for (the schema's order by default). A slave answers
// reads with it, so that no row becomes a map on the way out.
func (s *Store) QueryJSON(ctx context.Context, r rideshare.Read, dst []byte) ([]byte, error) {
	dst = append(dst, '[')
	n := 0
	err := s.query(ctx, r, func(cols []string, vals []any) error {
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = append(dst, '{')
		for i, c := range cols {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, c)
			dst = append(dst, ':')
			var err error
			if dst, err = appendJSONValue(dst, vals[i]); err != nil {
				return fmt.Errorf("query %s: column %s: %w", r.Table, c, err)
			}
		}
		dst = append(dst, '}')
		return nil
	})
	if err != nil {
		return nil, err
	}
	return append(dst, ']'), nil
}

// query runs r and calls row for each result row; vals is reused between calls.
func (s *Store) query(ctx context.Context, r rideshare.Read, row func(cols []string, vals []any) error) error {
	q, args, err := rideshare.SelectSQL(r)
	if err != nil {
		return err
	}
	rows, err := s.rStmts.query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("query %s: %w", r.Table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("query %s: %w", r.Table, err)
		}
		if err := row(cols, vals); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query %s: %w", r.Table, err)
	}
	return nil
}

// Snapshot writes a consistent copy of the database to path (SQLite VACUUM INTO, replacing
// any file there) and returns the sequence it holds. It runs in one read transaction on the
// connection of its own, so log entries go on being applied meanwhile; the sequence is the one the copy's
// own meta table holds.
func (s *Store) Snapshot(ctx context.Context, path string) (uint64, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	// Its own connection: the read pool is query_only, which VACUUM INTO refuses, and the
	// writer's one connection would hold up applying for as long as the copy takes.
	db, err := sql.Open("sqlite", dsn(s.Path, false))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", path); err != nil {
		return 0, fmt.Errorf("snapshot to %s: %w", path, err)
	}
	return SnapshotSeq(ctx, path)
}

// SnapshotSeq opens the SQLite file at path read-only and returns the sequence it holds. It
// checks that the file is a database of this schema.
func SnapshotSeq(ctx context.Context, path string) (uint64, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var seq uint64
	if err := db.QueryRowContext(ctx, appliedSeqQuery).Scan(&seq); err != nil {
		return 0, fmt.Errorf("snapshot %s: read its sequence: %w", path, err)
	}
	return seq, nil
}
