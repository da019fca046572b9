// Package store is a worker's SQLite copy of the database and the operations that change or
// read it. Operations are data, never SQL text: a Write or Read names a table, columns and
// values; Validate checks them against Schema and values are always bound as parameters.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Sentinel errors. Callers map them to HTTP statuses (400, 409).
var (
	// ErrInvalid marks an operation that can never succeed: unknown table or column, a value
	// of the wrong type, a malformed where clause.
	ErrInvalid = errors.New("invalid operation")
	// ErrConstraint marks a well-formed write that the current data refuses: a duplicate key
	// or a missing parent row.
	ErrConstraint = errors.New("constraint violation")
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
	// Promote marks, in the log only, that the named worker became master. Its append
	// moves the log on, so a deposed master's next append is refused. It changes no data.
	Promote string `json:"promote,omitempty"`
	// RequestID makes a write idempotent: a write whose RequestID was already applied is
	// answered with the first result and not applied again, so a request can be retried
	// after a timeout or redelivered by a broker. Only on the top-level write.
	RequestID string `json:"request_id,omitempty"`
	// Group, in the log only, is several independent writes the master committed together
	// (group commit); each succeeded and carries its own RequestID.
	Group []Write `json:"group,omitempty"`
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
}

// Result answers a write.
type Result struct {
	Seq      uint64 `json:"seq"`
	ID       int64  `json:"id"`
	Affected int64  `json:"affected"`
}

// Row is one result row, column name to value (int64 or string).
type Row = map[string]any

// invalid wraps ErrInvalid with a reason a person can act on.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func table(name string) (Table, error) {
	if name == "" {
		return Table{}, invalid("table is required")
	}
	t, ok := Schema[name]
	if !ok {
		return Table{}, invalid("unknown table %q", name)
	}
	return t, nil
}

// ValidateWrite checks a write from a client: the shape, tables, columns and value types.
// Auto columns are refused: only the master assigns them.
func ValidateWrite(w Write) error { return validateWrite(w, false, true) }

func validateWrite(w Write, allowAuto, allowBatch bool) error {
	if len(w.RequestID) > MaxRequestID {
		return invalid("request_id is longer than %d bytes", MaxRequestID)
	}
	if w.RequestID != "" && !allowBatch {
		return invalid("request_id belongs on the top-level write only")
	}
	if w.Group != nil {
		if !allowAuto || !allowBatch || w.Table != "" || w.Insert != nil || w.Delete != nil || w.Batch != nil || w.Clear || w.Promote != "" || w.RequestID != "" {
			return invalid("group is written by the database itself")
		}
		for i, g := range w.Group {
			if g.Group != nil || g.Promote != "" {
				return invalid("group[%d]: a group holds plain writes", i)
			}
			if err := validateWrite(g, true, true); err != nil {
				return fmt.Errorf("group[%d]: %w", i, err)
			}
		}
		return nil
	}
	if w.Promote != "" {
		if !allowAuto || w.Table != "" || w.Insert != nil || w.Delete != nil || w.Batch != nil || w.Clear {
			return invalid("promote is written by the database itself")
		}
		return nil
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
		return invalid("a write needs exactly one of insert, delete, batch or clear")
	}
	switch {
	case w.Clear:
		if w.Table != "" {
			return invalid("clear empties every table and takes no table")
		}
		return nil
	case w.Batch != nil:
		if !allowBatch {
			return invalid("a batch cannot contain a batch or a clear")
		}
		if w.Table != "" {
			return invalid("a batch takes no table; name it in each write")
		}
		if len(w.Batch) == 0 || len(w.Batch) > MaxBatch {
			return invalid("a batch holds 1 to %d writes, not %d", MaxBatch, len(w.Batch))
		}
		for i, b := range w.Batch {
			if b.Clear {
				return invalid("batch[%d]: a batch cannot contain a clear", i)
			}
			if err := validateWrite(b, allowAuto, false); err != nil {
				return fmt.Errorf("batch[%d]: %w", i, err)
			}
		}
		return nil
	}
	t, err := table(w.Table)
	if err != nil {
		return err
	}
	if w.Insert != nil {
		if len(w.Insert) == 0 {
			return invalid("insert into %s names no column", t.Name)
		}
		for name, v := range w.Insert {
			c, ok := t.Column(name)
			if !ok {
				return invalid("unknown column %q in table %s", name, t.Name)
			}
			if c.Auto && !allowAuto {
				return invalid("column %s.%s is assigned by the database", t.Name, name)
			}
			if _, err := value(c, v); err != nil {
				return err
			}
		}
		for _, c := range t.Columns {
			if _, ok := w.Insert[c.Name]; !ok && !c.Auto {
				return invalid("insert into %s is missing column %q", t.Name, c.Name)
			}
		}
		return nil
	}
	_, _, err = where(t, w.Delete.Where, false)
	return err
}

// ValidateRead checks a query against the schema.
func ValidateRead(r Read) error {
	_, _, err := buildQuery(r)
	return err
}

// value converts a JSON or Go value to the column's type, refusing anything else.
func value(c Column, v any) (any, error) {
	switch c.Kind {
	case Text:
		s, ok := v.(string)
		if !ok {
			return nil, invalid("column %s needs a string, not %s", c.Name, describe(v))
		}
		return s, nil
	default:
		switch x := v.(type) {
		case json.Number:
			i, err := strconv.ParseInt(string(x), 10, 64)
			if err != nil {
				return nil, invalid("column %s needs an integer, not %s", c.Name, x)
			}
			return i, nil
		case float64:
			if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
				return nil, invalid("column %s needs an integer, not %v", c.Name, x)
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
				return nil, invalid("column %s: %d is out of range", c.Name, x)
			}
			return int64(x), nil
		default:
			return nil, invalid("column %s needs an integer, not %s", c.Name, describe(v))
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

// where builds a WHERE clause (without the keyword) and its arguments. Columns are sorted so
// the same Where always gives the same SQL. Secret columns may only be matched by a write.
func where(t Table, w Where, read bool) (string, []any, error) {
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
			return "", nil, invalid("unknown column %q in table %s", name, t.Name)
		}
		if read && c.Secret {
			return "", nil, invalid("column %s.%s cannot be queried", t.Name, name)
		}
		cond, isObject := w[name].(map[string]any)
		if !isObject {
			v, err := value(c, w[name])
			if err != nil {
				return "", nil, err
			}
			terms = append(terms, quote(name)+" = ?")
			args = append(args, v)
			continue
		}
		if len(cond) == 0 {
			return "", nil, invalid("where %s: empty comparison object", name)
		}
		ops := make([]string, 0, len(cond))
		for op := range cond {
			ops = append(ops, op)
		}
		sort.Strings(ops)
		for _, op := range ops {
			sqlOp, ok := comparisons[op]
			if !ok {
				return "", nil, invalid("where %s: unknown comparison %q (use eq, ne, lt, le, gt, ge)", name, op)
			}
			v, err := value(c, cond[op])
			if err != nil {
				return "", nil, err
			}
			terms = append(terms, quote(name)+" "+sqlOp+" ?")
			args = append(args, v)
		}
	}
	return strings.Join(terms, " AND "), args, nil
}

// quote quotes an identifier that has already been checked against Schema.
func quote(name string) string { return `"` + name + `"` }

// MaxLimit bounds the rows one read may ask for.
const MaxLimit = 100000

func buildQuery(r Read) (string, []any, error) {
	t, err := table(r.Table)
	if err != nil {
		return "", nil, err
	}
	switch r.Consistency {
	case "", Strong, Eventual:
	default:
		return "", nil, invalid("consistency must be %q or %q", Strong, Eventual)
	}
	if r.Limit < 0 || r.Limit > MaxLimit {
		return "", nil, invalid("limit must be between 0 and %d", MaxLimit)
	}
	var cols []string
	if r.Count {
		if len(r.Columns) > 0 || len(r.Order) > 0 {
			return "", nil, invalid("a count takes no columns or order")
		}
		cols = []string{`COUNT(*) AS "count"`}
	} else if len(r.Columns) == 0 {
		for _, c := range t.Columns {
			if !c.Secret {
				cols = append(cols, quote(c.Name))
			}
		}
	} else {
		for _, name := range r.Columns {
			c, ok := t.Column(name)
			if !ok {
				return "", nil, invalid("unknown column %q in table %s", name, t.Name)
			}
			if c.Secret {
				return "", nil, invalid("column %s.%s cannot be read", t.Name, name)
			}
			cols = append(cols, quote(name))
		}
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + quote(t.Name)
	cond, args, err := where(t, r.Where, true)
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
				return "", nil, invalid("cannot order by %q in table %s", o.Column, t.Name)
			}
			dir := " ASC"
			if o.Desc {
				dir = " DESC"
			}
			parts = append(parts, quote(o.Column)+dir)
		}
		q += " ORDER BY " + strings.Join(parts, ", ")
	}
	if r.Limit > 0 {
		q += " LIMIT " + strconv.Itoa(r.Limit)
	}
	return q, args, nil
}
