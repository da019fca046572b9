package chaos

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Result is the verdict of one check.
type Result struct {
	Name     string
	Holds    bool
	Evidence string // what was checked when it holds; the violations (and files) when not
}

func (r Result) String() string {
	verdict := "holds"
	if !r.Holds {
		verdict = "VIOLATED"
	}
	return fmt.Sprintf("%s: %s: %s", r.Name, verdict, r.Evidence)
}

// The model is a register per username. Porcupine is given one operation per op and key: a
// batch touching several keys becomes one operation per key (with the batch's times), holding
// that key's writes in order. Per-key checking cannot see a batch's atomicity across keys; the
// log holds a batch as one entry, which is what makes it atomic.

// step is one write of an operation on one key, or a read.
type step struct {
	Kind Kind // Insert, Delete or StrongRead
}

type regInput struct {
	Key   string
	Steps []step
}

// regOutput is what the client saw. Known is false for an indeterminate op: the model then
// accepts whatever state the op meets, as if it happened (its return time is the end of the
// history, so it may also be placed after everything, which is as if it did not).
type regOutput struct {
	Known    bool
	Conflict bool  // an insert refused with 409: the user existed
	ID       int64 // insert: the assigned id (0: unknown, e.g. in a batch); read: the row's id
	Affected int64 // delete: rows deleted; -1: unknown (a batch gives only its total)
	Rows     int   // read
}

// regState is a key's register. ID is 0 while present with an id no one has seen yet (an
// indeterminate insert's, or a batch's); the first read that shows it fills it in.
type regState = state

func regStep(st, in, out any) (bool, any) {
	s, i, o := st.(regState), in.(regInput), out.(regOutput)
	if i.Steps[0].Kind == StrongRead {
		switch {
		case o.Rows == 0:
			return !s.Present, s
		case o.Rows > 1:
			return false, s // one username, one row
		case !s.Present || (s.ID != 0 && s.ID != o.ID):
			return false, s
		}
		return true, regState{Present: true, ID: o.ID}
	}
	if !o.Known {
		for _, st := range i.Steps {
			if st.Kind == Insert && !s.Present {
				s = regState{Present: true}
			} else if st.Kind == Delete {
				s = regState{}
			}
		}
		return true, s
	}
	if o.Conflict { // only a single insert is recorded with its conflict (see operations)
		return s.Present, s
	}
	for _, st := range i.Steps {
		switch st.Kind {
		case Insert:
			if s.Present {
				return false, s
			}
			s = regState{Present: true}
			if len(i.Steps) == 1 {
				s.ID = o.ID
			}
		case Delete:
			if o.Affected >= 0 && (o.Affected == 1) != s.Present {
				return false, s
			}
			s = regState{}
		}
	}
	return true, s
}

var usersModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(regInput).Key
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(byKey))
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return regState{} },
	Step: regStep,
	DescribeOperation: func(in, out any) string {
		i, o := in.(regInput), out.(regOutput)
		var kinds []string
		for _, s := range i.Steps {
			kinds = append(kinds, string(s.Kind))
		}
		what := strings.Join(kinds, "+") + "(" + i.Key + ")"
		switch {
		case !o.Known:
			return what + " → ?"
		case o.Conflict:
			return what + " → conflict"
		case i.Steps[0].Kind == StrongRead && o.Rows == 0:
			return what + " → absent"
		case i.Steps[0].Kind == StrongRead:
			return fmt.Sprintf("%s → id %d (%d rows)", what, o.ID, o.Rows)
		case o.Affected >= 0 && i.Steps[0].Kind == Delete:
			return fmt.Sprintf("%s → deleted %d", what, o.Affected)
		case o.ID != 0:
			return fmt.Sprintf("%s → id %d", what, o.ID)
		}
		return what + " → ok"
	},
	DescribeState: func(s any) string { return s.(regState).String() },
}

// operations turns the strong part of a history into porcupine operations: writes (acknowledged,
// refused as duplicates, or indeterminate) and acknowledged strong reads. Eventual reads are
// not linearizable by design; a read that failed observed nothing; a write refused as invalid
// did nothing.
func operations(h []Op) []porcupine.Operation {
	var end time.Duration
	for _, op := range h {
		end = max(end, op.Invoke, op.Return)
	}
	end++ // after every invocation: an indeterminate op may take effect at any time
	var out []porcupine.Operation
	add := func(op Op, in regInput, o regOutput) {
		ret := op.Return
		if op.Class == Indeterminate {
			ret = end
		}
		out = append(out, porcupine.Operation{ClientId: op.Client, Input: in, Call: int64(op.Invoke),
			Output: o, Return: int64(ret), Metadata: op.String()})
	}
	for _, op := range h {
		switch {
		case op.Kind == StrongRead:
			if op.Class == Ok {
				add(op, regInput{Key: op.Key, Steps: []step{{StrongRead}}},
					regOutput{Known: true, ID: op.ID, Rows: op.Rows})
			}
		case !op.IsWrite():
		case op.Class == Failed && !(op.Conflict() && op.Kind == Insert):
			// Refused: nothing happened. A refused batch also tells which of its inserts met
			// an existing user, but not which one: drop it rather than guess.
		default:
			var keys []string
			steps := map[string][]step{}
			for _, p := range op.parts() {
				if _, ok := steps[p.Key]; !ok {
					keys = append(keys, p.Key)
				}
				steps[p.Key] = append(steps[p.Key], step{p.Kind})
			}
			for _, k := range keys {
				o := regOutput{Known: op.Class != Indeterminate, Conflict: op.Conflict(), Affected: -1}
				if op.Kind != Batch {
					o.ID, o.Affected = op.ID, op.Affected
				}
				add(op, regInput{Key: k, Steps: steps[k]}, o)
			}
		}
	}
	return out
}

// CheckLinearizable checks that the strong history (writes and strong reads) is linearizable
// for a register per username, with porcupine, key by key; timeout bounds each key (0: no
// bound), and a key undecided in time counts as a violation (it was not shown to hold). For a
// key that is not linearizable, porcupine's HTML visualisation is written to dir and named in
// the evidence.
func CheckLinearizable(h []Op, dir string, timeout time.Duration) Result {
	res := Result{Name: "strong history is linearizable", Holds: true}
	byKey := map[string][]porcupine.Operation{}
	for _, op := range operations(h) {
		k := op.Input.(regInput).Key
		byKey[k] = append(byKey[k], op)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var bad []string
	n := 0
	for _, k := range keys {
		ops := byKey[k]
		n += len(ops)
		switch porcupine.CheckOperationsTimeout(usersModel, ops, timeout) {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			bad = append(bad, fmt.Sprintf("key %q: undecided after %v (%d operations)", k, timeout, len(ops)))
			continue
		}
		line := fmt.Sprintf("key %q: not linearizable (%d operations)", k, len(ops))
		if path, err := visualize(dir, k, ops, timeout); err != nil {
			line += "; visualisation not written: " + err.Error()
		} else {
			line += "; visualisation: " + path
		}
		bad = append(bad, line)
	}
	if len(bad) > 0 {
		res.Holds, res.Evidence = false, summarize(bad)
		return res
	}
	res.Evidence = fmt.Sprintf("%d operations on %d keys", n, len(keys))
	return res
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// visualize writes porcupine's page for one key's operations to dir.
func visualize(dir, key string, ops []porcupine.Operation, timeout time.Duration) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("no directory given")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	_, info := porcupine.CheckOperationsVerbose(usersModel, ops, timeout)
	f, err := os.CreateTemp(dir, "linearizability-"+unsafeName.ReplaceAllString(key, "_")+"-*.html")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Chmod(0o644); err != nil { // CreateTemp's 0600 is for secrets; this is a report
		return "", err
	}
	if err := porcupine.Visualize(usersModel, info, f); err != nil {
		return "", err
	}
	return f.Name(), f.Close()
}

// summarize joins evidence lines, keeping the first few.
func summarize(lines []string) string {
	const keep = 20
	if len(lines) > keep {
		lines = append(lines[:keep:keep], fmt.Sprintf("… and %d more", len(lines)-keep))
	}
	return strings.Join(lines, "\n")
}
