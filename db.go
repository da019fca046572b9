// Package rideshare is the database API's contract, which every side imports: the schema, the
// operations as data (Write, Read) and their results, validation, the error kinds with the one
// table that maps them to HTTP statuses, and the replies on the queues. Operations are never SQL
// text from a client: a Write or Read names a table, columns and values, checked against Schema;
// the SQL they mean is built here from checked names only, and values are always bound as
// parameters by the store that runs it.
package rideshare

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Kind is a column's value type.
type Kind int

const (
	Integer Kind = iota
	Text
)

// Column describes one column of the schema.
type Column struct {
	Name string
	Kind Kind
	// Auto columns are assigned by the master (rideIds, user ids); a client may not set them.
	Auto bool
	// Secret columns can be written but never read back (passwords).
	Secret bool
}

// Table describes one table of the schema.
type Table struct {
	Name    string
	Columns []Column
}

// Column returns the named column.
func (t Table) Column(name string) (Column, bool) {
	for _, c := range t.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// Schema is every table the database API may touch. The DDL in store.go must match it.
var Schema = map[string]Table{
	"users": {Name: "users", Columns: []Column{
		{Name: "id", Kind: Integer, Auto: true},
		{Name: "username", Kind: Text},
		{Name: "password", Kind: Text, Secret: true},
	}},
	"rides": {Name: "rides", Columns: []Column{
		{Name: "ride_id", Kind: Integer, Auto: true},
		{Name: "created_by", Kind: Text},
		{Name: "timestamp", Kind: Text},
		{Name: "ts", Kind: Integer},
		{Name: "source", Kind: Integer},
		{Name: "destination", Kind: Integer},
	}},
	"ride_users": {Name: "ride_users", Columns: []Column{
		{Name: "ride_id", Kind: Integer},
		{Name: "username", Kind: Text},
	}},
}

// MaxBatch bounds the operations in one atomic batch.
const MaxBatch = 1000

// Write is one change: exactly one of Insert, Delete, Batch or Clear.
//
//	{"table": "users", "insert": {"username": "alice", "password": "…"}}
//	{"table": "rides", "delete": {"where": {"ride_id": 17}}}
//	{"batch": [ …writes… ]}           applied atomically
//	{"clear": true}                   empties every table
type Write struct {
	Table  string         `json:"table,omitempty"`
	Insert map[string]any `json:"insert,omitempty"`
	Delete *Delete        `json:"delete,omitempty"`
	Batch  []Write        `json:"batch,omitempty"`
	Clear  bool           `json:"clear,omitempty"`
	// RequestID makes a write idempotent: a write whose RequestID was already applied is
	// answered with the first result and not applied again, so a request can be retried
	// after a timeout or redelivered by a broker. Only on the top-level write.
	RequestID string `json:"request_id,omitempty"`
}

// MaxRequestID bounds the length of a RequestID.
const MaxRequestID = 128

// Delete removes the rows matching Where; an empty Where matches every row.
type Delete struct {
	Where Where `json:"where"`
}

// Where maps a column to a value (equality) or to an object of comparisons,
// e.g. {"source": 1, "ts": {"gt": 1700000000}}. All terms must hold.
type Where map[string]any

// comparison operators a Where object may use, and their SQL.
var comparisons = map[string]string{"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}

// Order sorts a read by one column.
type Order struct {
	Column string `json:"column"`
	Desc   bool   `json:"desc,omitempty"`
}

// Consistency levels of a read.
const (
	Strong   = "strong"   // see every write acknowledged before the read (default)
	Eventual = "eventual" // whatever the slave has applied
)

// Read is one query.
type Read struct {
	Table       string   `json:"table"`
	Columns     []string `json:"columns,omitempty"` // default: every readable column
	Where       Where    `json:"where,omitempty"`
	Order       []Order  `json:"order,omitempty"`
	Limit       int      `json:"limit,omitempty"` // 0: no limit
	Count       bool     `json:"count,omitempty"` // answer [{"count": n}] instead of rows
	Consistency string   `json:"consistency,omitempty"`
	// MinSeq is set by the orchestrator: the slave answers only once it has applied this far.
	MinSeq uint64 `json:"min_seq,omitempty"`
	// Backup asks the slave, once it has applied MinSeq, for a consistent copy of its
	// database, stored as the newest snapshot, instead of rows; the reply's Seq is the
	// sequence the copy holds. Set by the orchestrator's backup endpoint only: a client's read
	// carrying it is refused.
	Backup bool `json:"backup,omitempty"`
}

// Result answers a write.
type Result struct {
	Seq      uint64 `json:"seq"`
	ID       int64  `json:"id"`
	Affected int64  `json:"affected"`
}

// Row is one result row, column name to value (int64 or string).
type Row = map[string]any

// Invalid wraps ErrInvalid with a reason a person can act on.
func Invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// LookupTable returns the named table of Schema, or why there is none.
func LookupTable(name string) (Table, error) {
	if name == "" {
		return Table{}, Invalid("table is required")
	}
	t, ok := Schema[name]
	if !ok {
		return Table{}, Invalid("unknown table %q", name)
	}
	return t, nil
}

// ValidateWrite checks a write from a client: the shape, tables, columns and value types.
// Auto columns are refused: only the master assigns them.
func ValidateWrite(w Write) error { return validateWrite(w, false, true) }

// ValidateResolved checks a write as the master resolved it for the sync log: as ValidateWrite,
// but with the auto columns the database assigned.
func ValidateResolved(w Write) error { return validateWrite(w, true, true) }

func validateWrite(w Write, allowAuto, allowBatch bool) error {
	if len(w.RequestID) > MaxRequestID {
		return Invalid("request_id is longer than %d bytes", MaxRequestID)
	}
	if w.RequestID != "" && !allowBatch {
		return Invalid("request_id belongs on the top-level write only")
	}
	n := 0
	if w.Insert != nil {
		n++
	}
	if w.Delete != nil {
		n++
	}
	if w.Batch != nil {
		n++
	}
	if w.Clear {
		n++
	}
	if n != 1 {
		return Invalid("a write needs exactly one of insert, delete, batch or clear")
	}
	switch {
	case w.Clear:
		if w.Table != "" {
			return Invalid("clear empties every table and takes no table")
		}
		return nil
	case w.Batch != nil:
		if !allowBatch {
			return Invalid("a batch cannot contain a batch or a clear")
		}
		if w.Table != "" {
			return Invalid("a batch takes no table; name it in each write")
		}
		if len(w.Batch) == 0 || len(w.Batch) > MaxBatch {
			return Invalid("a batch holds 1 to %d writes, not %d", MaxBatch, len(w.Batch))
		}
		for i, b := range w.Batch {
			if b.Clear {
				return Invalid("batch[%d]: a batch cannot contain a clear", i)
			}
			if err := validateWrite(b, allowAuto, false); err != nil {
				return fmt.Errorf("batch[%d]: %w", i, err)
			}
		}
		return nil
	}
	t, err := LookupTable(w.Table)
	if err != nil {
		return err
	}
	if w.Insert != nil {
		if len(w.Insert) == 0 {
			return Invalid("insert into %s names no column", t.Name)
		}
		for name, v := range w.Insert {
			c, ok := t.Column(name)
			if !ok {
				return Invalid("unknown column %q in table %s", name, t.Name)
			}
			if c.Auto && !allowAuto {
				return Invalid("column %s.%s is assigned by the database", t.Name, name)
			}
			if _, err := Value(c, v); err != nil {
				return err
			}
		}
		for _, c := range t.Columns {
			if _, ok := w.Insert[c.Name]; !ok && !c.Auto {
				return Invalid("insert into %s is missing column %q", t.Name, c.Name)
			}
		}
		return nil
	}
	_, _, err = WhereSQL(t, w.Delete.Where, false)
	return err
}

// ValidateRead checks a query against the schema.
func ValidateRead(r Read) error {
	if r.Backup {
		return Invalid("backup is not a read: use GET /api/v1/db/backup")
	}
	_, _, err := SelectSQL(r)
	return err
}

// Value converts a JSON or Go value to the column's type, refusing anything else.
func Value(c Column, v any) (any, error) {
	switch c.Kind {
	case Text:
		s, ok := v.(string)
		if !ok {
			return nil, Invalid("column %s needs a string, not %s", c.Name, describe(v))
		}
		return s, nil
	default:
		switch x := v.(type) {
		case json.Number:
			i, err := strconv.ParseInt(string(x), 10, 64)
			if err != nil {
				return nil, Invalid("column %s needs an integer, not %s", c.Name, x)
			}
			return i, nil
		case float64:
			if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
				return nil, Invalid("column %s needs an integer, not %v", c.Name, x)
			}
			return int64(x), nil
		case int:
			return int64(x), nil
		case int64:
			return x, nil
		case int32:
			return int64(x), nil
		case uint64:
			if x > math.MaxInt64 {
				return nil, Invalid("column %s: %d is out of range", c.Name, x)
			}
			return int64(x), nil
		default:
			return nil, Invalid("column %s needs an integer, not %s", c.Name, describe(v))
		}
	}
}

func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case json.Number, float64, int, int64:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

// WhereSQL builds a WHERE clause (without the keyword) and its arguments. Columns are sorted so
// the same Where always gives the same SQL. Secret columns may only be matched by a write.
func WhereSQL(t Table, w Where, read bool) (string, []any, error) {
	if len(w) == 0 {
		return "", nil, nil
	}
	names := make([]string, 0, len(w))
	for name := range w {
		names = append(names, name)
	}
	sort.Strings(names)
	var terms []string
	var args []any
	for _, name := range names {
		c, ok := t.Column(name)
		if !ok {
			return "", nil, Invalid("unknown column %q in table %s", name, t.Name)
		}
		if read && c.Secret {
			return "", nil, Invalid("column %s.%s cannot be queried", t.Name, name)
		}
		cond, isObject := w[name].(map[string]any)
		if !isObject {
			v, err := Value(c, w[name])
			if err != nil {
				return "", nil, err
			}
			terms = append(terms, Quote(name)+" = ?")
			args = append(args, v)
			continue
		}
		if len(cond) == 0 {
			return "", nil, Invalid("where %s: empty comparison object", name)
		}
		ops := make([]string, 0, len(cond))
		for op := range cond {
			ops = append(ops, op)
		}
		sort.Strings(ops)
		for _, op := range ops {
			sqlOp, ok := comparisons[op]
			if !ok {
				return "", nil, Invalid("where %s: unknown comparison %q (use eq, ne, lt, le, gt, ge)", name, op)
			}
			v, err := Value(c, cond[op])
			if err != nil {
				return "", nil, err
			}
			terms = append(terms, Quote(name)+" "+sqlOp+" ?")
			args = append(args, v)
		}
	}
	return strings.Join(terms, " AND "), args, nil
}

// Quote quotes an identifier that has already been checked against Schema.
func Quote(name string) string { return `"` + name + `"` }

// MaxLimit bounds the rows one read may ask for.
const MaxLimit = 100000

// SelectSQL is the query r means, with its arguments, or why r is invalid.
func SelectSQL(r Read) (string, []any, error) {
	t, err := LookupTable(r.Table)
	if err != nil {
		return "", nil, err
	}
	switch r.Consistency {
	case "", Strong, Eventual:
	default:
		return "", nil, Invalid("consistency must be %q or %q", Strong, Eventual)
	}
	if r.Limit < 0 || r.Limit > MaxLimit {
		return "", nil, Invalid("limit must be between 0 and %d", MaxLimit)
	}
	var cols []string
	if r.Count {
		if len(r.Columns) > 0 || len(r.Order) > 0 {
			return "", nil, Invalid("a count takes no columns or order")
		}
		cols = []string{`COUNT(*) AS "count"`}
	} else if len(r.Columns) == 0 {
		for _, c := range t.Columns {
			if !c.Secret {
				cols = append(cols, Quote(c.Name))
			}
		}
	} else {
		for _, name := range r.Columns {
			c, ok := t.Column(name)
			if !ok {
				return "", nil, Invalid("unknown column %q in table %s", name, t.Name)
			}
			if c.Secret {
				return "", nil, Invalid("column %s.%s cannot be read", t.Name, name)
			}
			cols = append(cols, Quote(name))
		}
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + Quote(t.Name)
	cond, args, err := WhereSQL(t, r.Where, true)
	if err != nil {
		return "", nil, err
	}
	if cond != "" {
		q += " WHERE " + cond
	}
	if len(r.Order) > 0 {
		var parts []string
		for _, o := range r.Order {
			c, ok := t.Column(o.Column)
			if !ok || c.Secret {
				return "", nil, Invalid("cannot order by %q in table %s", o.Column, t.Name)
			}
			dir := " ASC"
			if o.Desc {
				dir = " DESC"
			}
			parts = append(parts, Quote(o.Column)+dir)
		}
		q += " ORDER BY " + strings.Join(parts, ", ")
	}
	if r.Limit > 0 {
		q += " LIMIT " + strconv.Itoa(r.Limit)
	}
	return q, args, nil
}
