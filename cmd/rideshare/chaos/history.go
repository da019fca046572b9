// Package chaos records what clients did to the database API and checks the recorded history
// against the guarantees the project claims: strong reads are linearizable, no acknowledged
// write is lost or applied twice, eventual reads show only states the log had, at most one
// master acknowledged writes at a time, and every replica equals the log at the end.
//
// The package knows nothing of how a stack is started or how faults are injected: a runner
// gives each client a Client (which records into a shared Recorder), and at the end hands the
// history, the sync log (DecodeEntry) and the final rows to the Check functions.
package chaos

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Kind is what an operation does.
type Kind string

// The operations on the users table, a register per username: absent or present.
const (
	Insert       Kind = "insert"        // add a user; refused (409) if the username exists
	Delete       Kind = "delete"        // remove the user (affected 0 if absent)
	StrongRead   Kind = "strong-read"   // read the user; sees every acknowledged write
	EventualRead Kind = "eventual-read" // read the user from whatever a slave has applied
	Batch        Kind = "batch"         // inserts and deletes applied atomically (Parts)
)

// Class is what a client knows about an operation's outcome.
type Class int

const (
	// Indeterminate: a timeout, a 503, a 5xx or a broken connection. The operation may or may
	// not have taken effect, at any time after its invocation, even after the client gave up.
	// It is the zero value so that an operation never completed counts as one.
	Indeterminate Class = iota
	// Ok: the API acknowledged it.
	Ok
	// Failed: a 4xx; it definitely did not take effect (ErrKind says why).
	Failed
)

func (c Class) String() string {
	switch c {
	case Ok:
		return "ok"
	case Failed:
		return "failed"
	}
	return "indeterminate"
}

// Part is one write of a batch.
type Part struct {
	Kind     Kind // Insert or Delete
	Key      string
	Password string // of an Insert
}

// Op is one client operation with its invocation and return times and its outcome.
type Op struct {
	Client    int    // who ran it; a client runs one operation at a time
	Kind      Kind   //
	Key       string // the username; empty for a batch
	Password  string // an Insert's input
	Parts     []Part // a Batch's writes, in order
	RequestID string // of a write: the API applies a request id at most once

	// Invoke and Return are times since the Recorder's start, from the monotonic clock. For an
	// indeterminate op, Return is when the client gave up; the checks treat it as open-ended.
	Invoke, Return time.Duration

	Class   Class
	ErrKind string // a rideshare.Kind* for an op that did not succeed ("constraint": a duplicate)
	Err     string // the error as the client saw it

	// Outputs of an Ok op.
	Seq      uint64 // write: the log sequence it was committed at; read: 0 (the client does not say)
	ID       int64  // Insert: the id the master assigned; read: the id of the row seen (0: none)
	Affected int64  // Delete or Batch: rows changed
	Rows     int    // read: rows seen (0: absent, 1: present, more: a duplicate)
}

// Conflict says the op was refused because the data did not allow it (a duplicate username).
func (o Op) Conflict() bool { return o.Class == Failed && o.ErrKind == "constraint" }

// IsWrite says whether the op changes data when it takes effect.
func (o Op) IsWrite() bool { return o.Kind == Insert || o.Kind == Delete || o.Kind == Batch }

// parts are the writes of a write op, a single write being a batch of one.
func (o Op) parts() []Part {
	switch o.Kind {
	case Batch:
		return o.Parts
	case Insert, Delete:
		return []Part{{Kind: o.Kind, Key: o.Key, Password: o.Password}}
	}
	return nil
}

func (o Op) String() string {
	what := fmt.Sprintf("%s(%s)", o.Kind, o.Key)
	if o.Kind == Batch {
		what = "batch["
		for i, p := range o.Parts {
			if i > 0 {
				what += " "
			}
			what += fmt.Sprintf("%s(%s)", p.Kind, p.Key)
		}
		what += "]"
	}
	out := o.Class.String()
	switch {
	case o.Class == Ok && (o.Kind == StrongRead || o.Kind == EventualRead):
		out = "absent"
		if o.Rows > 0 {
			out = fmt.Sprintf("present id=%d rows=%d", o.ID, o.Rows)
		}
	case o.Class == Ok && o.Kind == Insert:
		out = fmt.Sprintf("ok id=%d seq=%d", o.ID, o.Seq)
	case o.Class == Ok:
		out = fmt.Sprintf("ok affected=%d seq=%d", o.Affected, o.Seq)
	case o.ErrKind != "":
		out += " (" + o.ErrKind + ")"
	}
	ret := fmt.Sprint(o.Return)
	if o.Class == Indeterminate {
		ret = "?"
	}
	s := fmt.Sprintf("client %d %s [%v, %s] → %s", o.Client, what, o.Invoke, ret, out)
	if o.RequestID != "" {
		s += " request " + o.RequestID
	}
	return s
}

// Recorder collects the operations of concurrent clients against one clock. It is safe for
// concurrent use.
type Recorder struct {
	start time.Time
	run   string // prefix of the request ids, so that two runs never share one

	mu   sync.Mutex
	ops  []Op
	done []bool
	ids  uint64
}

// NewRecorder starts the clock.
func NewRecorder() *Recorder {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &Recorder{start: time.Now(), run: hex.EncodeToString(b[:])}
}

// Now is the time since the recorder started (monotonic).
func (r *Recorder) Now() time.Duration { return time.Since(r.start) }

// RequestID is a request id no other write of any run has.
func (r *Recorder) RequestID(client int) string {
	r.mu.Lock()
	r.ids++
	n := r.ids
	r.mu.Unlock()
	return fmt.Sprintf("chaos-%s-c%d-%d", r.run, client, n)
}

// Begin records op as invoked now and returns its handle for End. Until End, the op is
// indeterminate: if the run ends first (the client hangs), that is what it is.
func (r *Recorder) Begin(op Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	op.Invoke = r.Now()
	op.Class = Indeterminate
	r.ops = append(r.ops, op)
	r.done = append(r.done, false)
	return len(r.ops) - 1
}

// End records the outcome of the op Begin returned h for, as returned now.
func (r *Recorder) End(h int, outcome func(op *Op)) Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	op := &r.ops[h]
	outcome(op)
	op.Return = r.Now()
	r.done[h] = true
	return *op
}

// Add records an op whose times are already set (an op recorded elsewhere, or a test's).
func (r *Recorder) Add(op Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	r.done = append(r.done, true)
}

// History is a copy of every op so far, by invocation time. An op still running is
// indeterminate, returning now.
func (r *Recorder) History() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.Now()
	h := make([]Op, len(r.ops))
	copy(h, r.ops)
	for i := range h {
		h[i].Parts = append([]Part(nil), h[i].Parts...)
		if !r.done[i] {
			h[i].Class, h[i].Return, h[i].Err = Indeterminate, now, "still running when the history was taken"
		}
	}
	sort.SliceStable(h, func(i, j int) bool { return h[i].Invoke < h[j].Invoke })
	return h
}

// forever stands for the return time of an indeterminate op in the checks: it may take effect
// after everything else.
const forever = time.Duration(1<<63 - 1)

// returned is when op's effect is known to be over: its return, or never if indeterminate.
func returned(op Op) time.Duration {
	if op.Class == Indeterminate {
		return forever
	}
	return op.Return
}
