package chaos

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rideshare/rideshare"
)

// keyWrite is one write of an op on one key.
type keyWrite struct {
	Kind  Kind
	Op    Op
	Index int // among the op's parts: a batch applies them in order
}

// writesByKey are the writes of h per key, each with its op: those that may have happened
// (acknowledged or indeterminate). A refused write did nothing.
func writesByKey(h []Op) map[string][]keyWrite {
	out := map[string][]keyWrite{}
	for _, op := range h {
		if !op.IsWrite() || op.Class == Failed {
			continue
		}
		for i, p := range op.parts() {
			out[p.Key] = append(out[p.Key], keyWrite{p.Kind, op, i})
		}
	}
	return out
}

// CheckAcknowledged checks that every acknowledged write is present at the end and none is
// present twice. final is the number of rows per username at the end (FinalState of a strong
// read of every user, after the faults have healed); log, if not nil, is the whole sync log.
//
// From the final state: a key is absent at the end although an acknowledged insert of it was
// followed by no delete that could have come after it (an indeterminate delete could, at any
// time); present although an acknowledged delete was followed by no insert that could have
// come after it; present though never inserted; or present more than once.
//
// From the log, by request id: an acknowledged write must be in it exactly once, an
// indeterminate one at most once, a refused one never.
func CheckAcknowledged(h []Op, final map[string]int, log []Entry) Result {
	res := Result{Name: "acknowledged writes are present, none twice", Holds: true}
	var bad []string
	writes := writesByKey(h)
	keys := map[string]bool{}
	for k := range writes {
		keys[k] = true
	}
	for k := range final {
		keys[k] = true
	}
	acked := 0
	for _, op := range h {
		if op.IsWrite() && op.Class == Ok {
			acked++
		}
	}
	for _, k := range sortedKeys(keys) {
		ws, n := writes[k], final[k]
		// could follow: w2's effect may come after w1's (w2 did not end before w1 began; in
		// one batch, w2 comes later in it).
		couldFollow := func(w1, w2 keyWrite) bool {
			if w1.Op.Client == w2.Op.Client && w1.Op.Invoke == w2.Op.Invoke { // one op
				return w2.Index > w1.Index
			}
			return returned(w2.Op) > w1.Op.Invoke
		}
		last := func(kind, other Kind) (lost []Op) {
			for _, w := range ws {
				if w.Kind != kind || w.Op.Class != Ok {
					continue
				}
				followed := false
				for _, w2 := range ws {
					if w2.Kind == other && couldFollow(w, w2) {
						followed = true
						break
					}
				}
				if !followed {
					lost = append(lost, w.Op)
				}
			}
			return lost
		}
		switch {
		case n > 1:
			bad = append(bad, fmt.Sprintf("key %q: %d rows at the end", k, n))
		case n == 1:
			inserted := false
			for _, w := range ws {
				inserted = inserted || w.Kind == Insert
			}
			if !inserted {
				bad = append(bad, fmt.Sprintf("key %q: present at the end but never inserted", k))
			}
			for _, op := range last(Delete, Insert) {
				bad = append(bad, fmt.Sprintf("key %q: present at the end, but no insert could follow the acknowledged delete: %s", k, op))
			}
		default:
			for _, op := range last(Insert, Delete) {
				bad = append(bad, fmt.Sprintf("key %q: absent at the end, but no delete could follow the acknowledged insert: %s", k, op))
			}
		}
	}
	if log != nil {
		inLog := requestIDs(log)
		for _, op := range h {
			if !op.IsWrite() || op.RequestID == "" {
				continue
			}
			seqs := inLog[op.RequestID]
			switch {
			case op.Class == Ok && len(seqs) == 0:
				bad = append(bad, fmt.Sprintf("acknowledged write not in the log: %s", op))
			case op.Class == Failed && len(seqs) > 0:
				bad = append(bad, fmt.Sprintf("refused write in the log at %v: %s", seqs, op))
			case len(seqs) > 1:
				bad = append(bad, fmt.Sprintf("write applied %d times, at %v: %s", len(seqs), seqs, op))
			}
		}
	}
	if len(bad) > 0 {
		res.Holds, res.Evidence = false, summarize(bad)
		return res
	}
	res.Evidence = fmt.Sprintf("%d acknowledged writes on %d keys; %d users at the end", acked, len(keys), len(final))
	if log != nil {
		res.Evidence += fmt.Sprintf("; each write found in the log of %d entries as often as it may have happened", len(log))
	}
	return res
}

// CheckEventualReads checks that every acknowledged eventual read shows a state the key had
// in the log (absent before its first insert, or present with the id of one of its inserts),
// and not one whose write was invoked only after the read returned. If a read knows the
// sequence its slave had applied (Op.Seq), it must show exactly the state at that sequence.
// log is the whole sync log.
func CheckEventualReads(h []Op, log []Entry) Result {
	res := Result{Name: "eventual reads show only states the log had", Holds: true}
	states, err := userStates(log)
	if err != nil {
		res.Holds, res.Evidence = false, "cannot follow the log: "+err.Error()
		return res
	}
	// when each state began: the invocation of the write that made it, if it was ours
	invoked := map[string]time.Duration{}
	for _, op := range h {
		if op.IsWrite() && op.RequestID != "" {
			invoked[op.RequestID] = op.Invoke
		}
	}
	began := map[uint64]time.Duration{} // seq → latest invocation of a write of ours in it
	for _, e := range log {
		for _, w := range e.Writes {
			if t, ok := invoked[w.RequestID]; ok {
				began[e.Seq] = max(began[e.Seq], t)
			}
		}
	}
	var bad []string
	n := 0
	for _, op := range h {
		if op.Kind != EventualRead || op.Class != Ok {
			continue
		}
		n++
		if op.Rows > 1 {
			bad = append(bad, fmt.Sprintf("%d rows for one username: %s", op.Rows, op))
			continue
		}
		seen := state{Present: op.Rows == 1, ID: op.ID}
		if !seen.Present {
			seen.ID = 0
		}
		hist := append([]stateAt{{}}, states[op.Key]...)
		var at *stateAt
		for i := range hist {
			if hist[i].state == seen {
				at = &hist[i]
			}
		}
		switch {
		case at == nil:
			bad = append(bad, fmt.Sprintf("a state the log never had (it had %s): %s", describeStates(hist), op))
		case at.Seq > 0 && seen.Present && began[at.Seq] > op.Return:
			bad = append(bad, fmt.Sprintf("a state from the future: its write (seq %d) was invoked at %v, after the read returned: %s",
				at.Seq, began[at.Seq], op))
		case op.Seq > 0:
			want := stateAt{}
			for _, s := range hist {
				if s.Seq <= op.Seq {
					want = s
				}
			}
			if want.state != seen {
				bad = append(bad, fmt.Sprintf("at seq %d the key was %s: %s", op.Seq, want.state, op))
			}
		}
	}
	if len(bad) > 0 {
		res.Holds, res.Evidence = false, summarize(bad)
		return res
	}
	res.Evidence = fmt.Sprintf("%d eventual reads against a log of %d entries", n, len(log))
	return res
}

func describeStates(h []stateAt) string {
	var parts []string
	for _, s := range h {
		parts = append(parts, fmt.Sprintf("%s from seq %d", s.state, s.Seq))
	}
	return strings.Join(parts, ", ")
}

// CheckOneMaster checks that at most one master acknowledged writes at any time. The log is
// the whole sync log; h, the history, may be nil.
//
// From the log: every write follows a promotion (a master first fences the log with its
// promotion marker); a write whose appender is known (Entry.Master) was appended by the worker
// promoted last before it; and the ids masters assign (users.id, rides.ride_id) rise along the
// log, since each master assigns them on a copy that applied the whole log before it: an id
// that goes back was assigned by a second master that had not seen the entries in between.
//
// From the history: an acknowledged write's sequence holds its request id (the write was
// acknowledged by the master that appended that entry), and acknowledged writes' sequences
// follow real time (a write acknowledged before another was invoked has a lower sequence;
// two masters answering at once from diverging positions break it).
func CheckOneMaster(log []Entry, h []Op) Result {
	res := Result{Name: "at most one master acknowledged writes at any time", Holds: true}
	log = sortedLog(log)
	var bad []string
	master, promotedAt := "", uint64(0)
	promotions := 0
	type lastID struct {
		id  int64
		seq uint64
	}
	ids := map[string]lastID{} // table → the highest id assigned so far
	var scan func(seq uint64, w rideshare.Write)
	scan = func(seq uint64, w rideshare.Write) {
		for _, b := range w.Batch {
			scan(seq, b)
		}
		t, ok := rideshare.Schema[w.Table]
		if !ok || w.Insert == nil {
			return
		}
		for _, c := range t.Columns {
			v, present := w.Insert[c.Name]
			if !c.Auto || !present {
				continue
			}
			x, err := rideshare.Value(c, v)
			if err != nil {
				bad = append(bad, fmt.Sprintf("seq %d: %s.%s is %v: %v", seq, t.Name, c.Name, v, err))
				continue
			}
			id := x.(int64)
			if prev, ok := ids[t.Name]; ok && id <= prev.id {
				bad = append(bad, fmt.Sprintf("seq %d: %s.%s %d assigned after %d at seq %d: written by a master that had not applied the log before it",
					seq, t.Name, c.Name, id, prev.id, prev.seq))
			}
			ids[t.Name] = lastID{max(id, ids[t.Name].id), seq}
		}
	}
	for _, e := range log {
		if e.Promote != "" {
			master, promotedAt = e.Promote, e.Seq
			promotions++
			continue
		}
		switch {
		case len(e.Writes) > 0 && master == "":
			bad = append(bad, fmt.Sprintf("seq %d: a write before any promotion", e.Seq))
		case e.Master != "" && e.Master != master:
			bad = append(bad, fmt.Sprintf("seq %d: written by %s after %s was promoted at seq %d", e.Seq, e.Master, master, promotedAt))
		}
		for _, w := range e.Writes {
			scan(e.Seq, w)
		}
	}
	// the history: acknowledgements against the log and real time
	bySeq := map[uint64]Entry{}
	for _, e := range log {
		bySeq[e.Seq] = e
	}
	var acked []Op
	for _, op := range h {
		if !op.IsWrite() || op.Class != Ok {
			continue
		}
		acked = append(acked, op)
		e, ok := bySeq[op.Seq]
		if !ok {
			bad = append(bad, fmt.Sprintf("acknowledged at seq %d, which the log does not hold: %s", op.Seq, op))
			continue
		}
		found := false
		for _, w := range e.Writes {
			found = found || (op.RequestID != "" && w.RequestID == op.RequestID)
		}
		if !found && op.RequestID != "" {
			bad = append(bad, fmt.Sprintf("acknowledged at seq %d, whose entry holds other writes: %s", op.Seq, op))
		}
	}
	// Sweep by invocation: the highest sequence among the writes that returned before it.
	byReturn := append([]Op(nil), acked...)
	sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
	sort.Slice(acked, func(i, j int) bool { return acked[i].Invoke < acked[j].Invoke })
	var highest *Op
	j := 0
	for _, op := range acked {
		for ; j < len(byReturn) && byReturn[j].Return < op.Invoke; j++ {
			if highest == nil || byReturn[j].Seq > highest.Seq {
				highest = &byReturn[j]
			}
		}
		if highest != nil && highest.Seq >= op.Seq {
			bad = append(bad, fmt.Sprintf("acknowledged at seq %d, below seq %d of a write acknowledged before it was invoked: %s, after %s",
				op.Seq, highest.Seq, op, *highest))
		}
	}
	if len(bad) > 0 {
		res.Holds, res.Evidence = false, summarize(bad)
		return res
	}
	res.Evidence = fmt.Sprintf("%d log entries, %d promotions, %d acknowledged writes", len(log), promotions, len(acked))
	return res
}

// CheckReplicas checks that every replica holds exactly the expected rows (ReplayUsers of the
// log) at the end. replicas maps a worker id to the rows read from its copy, in any order;
// rows compare by their columns and values, numbers of any Go integer type being equal.
func CheckReplicas(expected []rideshare.Row, replicas map[string][]rideshare.Row) Result {
	res := Result{Name: "every replica equals the log", Holds: true}
	if len(replicas) == 0 {
		res.Holds, res.Evidence = false, "no replica to compare"
		return res
	}
	want := counts(expected)
	var bad []string
	ids := make([]string, 0, len(replicas))
	for id := range replicas {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		got := counts(replicas[id])
		var missing, extra []string
		for _, r := range sortedKeys(union(want, got)) {
			for d := got[r] - want[r]; d > 0; d-- {
				extra = append(extra, r)
			}
			for d := want[r] - got[r]; d > 0; d-- {
				missing = append(missing, r)
			}
		}
		if len(missing) > 0 {
			bad = append(bad, fmt.Sprintf("replica %s lacks %d rows: %s", id, len(missing), abbreviate(missing)))
		}
		if len(extra) > 0 {
			bad = append(bad, fmt.Sprintf("replica %s has %d rows the log does not: %s", id, len(extra), abbreviate(extra)))
		}
	}
	if len(bad) > 0 {
		res.Holds, res.Evidence = false, summarize(bad)
		return res
	}
	res.Evidence = fmt.Sprintf("%d replicas hold the log's %d rows", len(replicas), len(expected))
	return res
}

// counts is a multiset of rows, each as canonical JSON (sorted keys, integers as int64).
func counts(rows []rideshare.Row) map[string]int {
	out := map[string]int{}
	for _, r := range rows {
		c := make(map[string]any, len(r))
		for k, v := range r {
			if i, err := rideshare.Value(rideshare.Column{Kind: rideshare.Integer}, v); err == nil {
				v = i
			}
			c[k] = v
		}
		b, _ := json.Marshal(c) // maps marshal with sorted keys
		out[string(b)]++
	}
	return out
}

func union(a, b map[string]int) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func abbreviate(rows []string) string {
	const keep = 5
	if len(rows) > keep {
		return strings.Join(rows[:keep], ", ") + fmt.Sprintf(", … (%d more)", len(rows)-keep)
	}
	return strings.Join(rows, ", ")
}
