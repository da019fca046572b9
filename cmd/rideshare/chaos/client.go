package chaos

import (
	"context"
	"errors"
	"fmt"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/orchestrator/client"
)

// Client performs operations on the users table through the database API and records each in
// a Recorder. One Client is one logical client: it runs one operation at a time (porcupine
// draws each client as a line of sequential operations), so give each goroutine its own.
type Client struct {
	ID  int // zero-based, unique among the clients of one Recorder
	DB  *client.Client
	Rec *Recorder
}

// NewClient returns client id of rec, talking to db.
func NewClient(id int, db *client.Client, rec *Recorder) *Client {
	return &Client{ID: id, DB: db, Rec: rec}
}

// Insert adds user key with password.
func (c *Client) Insert(ctx context.Context, key, password string) Op {
	return c.write(ctx, Op{Kind: Insert, Key: key, Password: password})
}

// Delete removes user key.
func (c *Client) Delete(ctx context.Context, key string) Op {
	return c.write(ctx, Op{Kind: Delete, Key: key})
}

// Batch applies parts atomically: all or none.
func (c *Client) Batch(ctx context.Context, parts []Part) Op {
	return c.write(ctx, Op{Kind: Batch, Parts: append([]Part(nil), parts...)})
}

// StrongRead reads user key with strong consistency: the orchestrator has the slave wait until
// it applied every write acknowledged before the read (min_seq).
func (c *Client) StrongRead(ctx context.Context, key string) Op {
	return c.read(ctx, Op{Kind: StrongRead, Key: key}, rideshare.Strong)
}

// EventualRead reads user key from whatever the slave has applied.
func (c *Client) EventualRead(ctx context.Context, key string) Op {
	return c.read(ctx, Op{Kind: EventualRead, Key: key}, rideshare.Eventual)
}

func (c *Client) write(ctx context.Context, op Op) Op {
	op.Client = c.ID
	// Our own request id, not the orchestrator's: the checks find each write in the log by it.
	op.RequestID = c.Rec.RequestID(c.ID)
	w := WriteOf(op)
	h := c.Rec.Begin(op)
	res, err := c.DB.Write(ctx, w)
	return c.Rec.End(h, func(op *Op) {
		if classify(op, err) {
			op.Seq, op.ID, op.Affected = res.Seq, res.ID, res.Affected
		}
	})
}

func (c *Client) read(ctx context.Context, op Op, consistency string) Op {
	op.Client = c.ID
	q := rideshare.Read{Table: "users", Columns: []string{"id", "username"},
		Where: rideshare.Where{"username": op.Key}, Consistency: consistency}
	h := c.Rec.Begin(op)
	rows, err := c.DB.Read(ctx, q)
	return c.Rec.End(h, func(op *Op) {
		if !classify(op, err) {
			return
		}
		op.Rows = len(rows)
		if len(rows) > 0 {
			id, ierr := rowID(rows[0])
			if ierr != nil {
				op.Class, op.ErrKind, op.Err = Indeterminate, rideshare.KindInternal, ierr.Error()
				return
			}
			op.ID = id
		}
	})
}

// classify sets op's class from the client's error and says whether op succeeded. Only a
// refusal the API states (400, 409) is definite; anything else may have taken effect.
func classify(op *Op, err error) bool {
	if err == nil {
		op.Class = Ok
		return true
	}
	op.Err, op.ErrKind = err.Error(), rideshare.KindOf(err)
	switch {
	case errors.Is(err, rideshare.ErrConstraint), errors.Is(err, rideshare.ErrInvalid):
		op.Class = Failed
	default:
		// 503 (no master, or the log append did not answer), 500, a timeout, a broken
		// connection, an unreadable answer.
		op.Class = Indeterminate
	}
	return false
}

// WriteOf is the database write an Insert, Delete or Batch op sends.
func WriteOf(op Op) rideshare.Write {
	part := func(p Part) rideshare.Write {
		if p.Kind == Insert {
			return rideshare.Write{Table: "users", Insert: map[string]any{"username": p.Key, "password": p.Password}}
		}
		return rideshare.Write{Table: "users", Delete: &rideshare.Delete{Where: rideshare.Where{"username": p.Key}}}
	}
	var w rideshare.Write
	if op.Kind == Batch {
		w.Batch = make([]rideshare.Write, len(op.Parts))
		for i, p := range op.Parts {
			w.Batch[i] = part(p)
		}
	} else {
		w = part(Part{Kind: op.Kind, Key: op.Key, Password: op.Password})
	}
	w.RequestID = op.RequestID
	return w
}

// Users reads every user strongly, for the final state at the end of a run (FinalState,
// CheckAcknowledged). It is not recorded.
func Users(ctx context.Context, db *client.Client) ([]rideshare.Row, error) {
	return db.Read(ctx, rideshare.Read{Table: "users", Columns: []string{"id", "username"},
		Order: []rideshare.Order{{Column: "id"}}, Consistency: rideshare.Strong})
}

// FinalState counts the rows per username in rows read from the users table.
func FinalState(rows []rideshare.Row) map[string]int {
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		if k, ok := r["username"].(string); ok {
			out[k]++
		}
	}
	return out
}

// rowID is a users row's id, whichever way its number was decoded.
func rowID(r rideshare.Row) (int64, error) {
	v, err := rideshare.Value(rideshare.Column{Name: "id", Kind: rideshare.Integer}, r["id"])
	if err != nil {
		return 0, fmt.Errorf("users row %v: %w", r, err)
	}
	return v.(int64), nil
}
