package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/rideshare/rideshare"
)

// Entry is one sync-log entry as the checks need it.
type Entry struct {
	Seq uint64
	// Promote is the worker that became master at this entry (a promotion marker).
	Promote string
	// Master is the worker that appended the entry, if known. The log does not record it
	// today (an entry's master is whoever was promoted last before it); a runner that learns
	// it otherwise (the workers' logs) can set it and CheckOneMaster then compares the two.
	Master string
	// Writes are the entry's writes as the master resolved them (assigned ids included): one,
	// or a group's, each with its own request id. None for a promotion.
	Writes []rideshare.Write
}

// logOp has the wire shape of worker/store.LogOp: a write's fields, "promote" and "group".
// It is copied rather than imported so that the checker does not depend on the worker's
// store (and SQLite); TestDecodeEntryReadsStoreLogOp keeps the two in step.
type logOp struct {
	rideshare.Write
	Promote string            `json:"promote,omitempty"`
	Group   []rideshare.Write `json:"group,omitempty"`
}

// DecodeEntry decodes the data of the log entry at seq (synclog.Msg's Seq and Data).
func DecodeEntry(seq uint64, data []byte) (Entry, error) {
	var op logOp
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&op); err != nil {
		return Entry{}, fmt.Errorf("log entry %d: %w", seq, err)
	}
	e := Entry{Seq: seq, Promote: op.Promote}
	switch {
	case op.Promote != "":
	case op.Group != nil:
		e.Writes = op.Group
	default:
		e.Writes = []rideshare.Write{op.Write}
	}
	return e, nil
}

// state is a user as the log or a read shows it: absent, or present with the id the master
// assigned. Ids are never reused (AUTOINCREMENT, kept across deletes and clears), so a
// present state names one insert.
type state struct {
	Present bool
	ID      int64
}

func (s state) String() string {
	if !s.Present {
		return "absent"
	}
	return fmt.Sprintf("present id=%d", s.ID)
}

// stateAt is a key's state from the entry at Seq on.
type stateAt struct {
	Seq uint64
	state
}

// userStates replays the log's effects on the users table: for each username, the states it
// took, in sequence order, after absent at sequence 0. A state is recorded per entry, not per
// write: a batch or a group commits in one transaction, so no reader sees the states between
// its writes. It refuses a delete of users it cannot attribute to usernames.
func userStates(log []Entry) (map[string][]stateAt, error) {
	log = sortedLog(log)
	cur := map[string]state{}
	states := map[string][]stateAt{}
	touched := map[string]bool{} // keys the current entry wrote
	set := func(k string, s state) { cur[k], touched[k] = s, true }
	var apply func(seq uint64, w rideshare.Write) error
	apply = func(seq uint64, w rideshare.Write) error {
		switch {
		case w.Clear:
			for k := range cur {
				set(k, state{})
			}
		case w.Batch != nil:
			for _, b := range w.Batch {
				if err := apply(seq, b); err != nil {
					return err
				}
			}
		case w.Table != "users":
			// rides and ride_users do not change users.
		case w.Insert != nil:
			k, _ := w.Insert["username"].(string)
			id, err := rowID(rideshare.Row{"id": w.Insert["id"]})
			if err != nil {
				return fmt.Errorf("log entry %d: insert of user %q without its id: %w", seq, k, err)
			}
			set(k, state{Present: true, ID: id})
		case w.Delete != nil:
			where := w.Delete.Where
			switch k, ok := where["username"].(string); {
			case len(where) == 0:
				for k := range cur {
					set(k, state{})
				}
			case len(where) == 1 && ok:
				set(k, state{})
			default:
				return fmt.Errorf("log entry %d: delete of users where %v: only deletes by username can be followed", seq, where)
			}
		}
		return nil
	}
	for _, e := range log {
		for _, w := range e.Writes {
			if err := apply(e.Seq, w); err != nil {
				return nil, err
			}
		}
		for k := range touched {
			h, s := states[k], cur[k]
			last := state{} // every key starts absent
			if len(h) > 0 {
				last = h[len(h)-1].state
			}
			if s != last {
				states[k] = append(h, stateAt{Seq: e.Seq, state: s})
			}
		}
		clear(touched)
	}
	return states, nil
}

// ReplayUsers is the users table the log leaves, as rows {"id", "username"} by id: what every
// replica must hold at the end (CheckReplicas).
func ReplayUsers(log []Entry) ([]rideshare.Row, error) {
	states, err := userStates(log)
	if err != nil {
		return nil, err
	}
	var rows []rideshare.Row
	for k, h := range states {
		if s := h[len(h)-1]; s.Present {
			rows = append(rows, rideshare.Row{"id": s.ID, "username": k})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i]["id"].(int64) < rows[j]["id"].(int64) })
	return rows, nil
}

// sortedLog is log by sequence (a copy if it was not).
func sortedLog(log []Entry) []Entry {
	if sort.SliceIsSorted(log, func(i, j int) bool { return log[i].Seq < log[j].Seq }) {
		return log
	}
	out := append([]Entry(nil), log...)
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// requestIDs counts the log's writes per request id (top-level and group members: only they
// carry one).
func requestIDs(log []Entry) map[string][]uint64 {
	out := map[string][]uint64{}
	for _, e := range log {
		for _, w := range e.Writes {
			if w.RequestID != "" {
				out[w.RequestID] = append(out[w.RequestID], e.Seq)
			}
		}
	}
	return out
}
