package chaos

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/worker/store"
)

// Builders of hand-made log entries, as a master resolves them.
func promoteEntry(seq uint64, worker string) Entry { return Entry{Seq: seq, Promote: worker} }

func insertWrite(req, key string, id int64) rideshare.Write {
	return rideshare.Write{Table: "users", RequestID: req,
		Insert: map[string]any{"id": json.Number(itoa(id)), "username": key, "password": "pw"}}
}

func deleteWrite(req, key string) rideshare.Write {
	return rideshare.Write{Table: "users", RequestID: req, Delete: &rideshare.Delete{Where: rideshare.Where{"username": key}}}
}

func entry(seq uint64, ws ...rideshare.Write) Entry { return Entry{Seq: seq, Writes: ws} }

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func wantHolds(t *testing.T, r Result) {
	t.Helper()
	if !r.Holds {
		t.Errorf("violated on a good history: %s", r)
	}
}

func wantViolated(t *testing.T, r Result, evidence string) {
	t.Helper()
	if r.Holds {
		t.Errorf("holds on a bad history: %s", r)
	} else if !strings.Contains(r.Evidence, evidence) {
		t.Errorf("evidence does not say %q: %s", evidence, r.Evidence)
	}
}

// DecodeEntry reads what the worker appends: worker/store.LogOp as JSON.
func TestDecodeEntryReadsStoreLogOp(t *testing.T) {
	for _, c := range []struct {
		op     store.LogOp
		check  func(Entry) bool
		expect string
	}{
		{store.LogOp{Promote: "w7"}, func(e Entry) bool { return e.Promote == "w7" && len(e.Writes) == 0 }, "a promotion"},
		{store.LogOp{Write: insertWrite("r1", "alice", 5)}, func(e Entry) bool {
			return len(e.Writes) == 1 && e.Writes[0].RequestID == "r1" && e.Writes[0].Insert["username"] == "alice"
		}, "one write"},
		{store.LogOp{Group: []rideshare.Write{insertWrite("r1", "alice", 5), deleteWrite("r2", "bob")}}, func(e Entry) bool {
			return len(e.Writes) == 2 && e.Writes[1].RequestID == "r2" && e.Writes[1].Delete != nil
		}, "a group"},
	} {
		data, err := json.Marshal(c.op)
		if err != nil {
			t.Fatal(err)
		}
		e, err := DecodeEntry(3, data)
		if err != nil || e.Seq != 3 || !c.check(e) {
			t.Errorf("%s: %s decoded as %+v, %v", c.expect, data, e, err)
		}
	}
	if _, err := DecodeEntry(4, []byte("{")); err == nil {
		t.Error("a malformed entry decoded")
	}
}

// goodLog is alice inserted (id 1), deleted and inserted again (id 3); bob inserted (id 2) in
// a batch with carol (id 4) after a failover.
func goodLog() []Entry {
	return []Entry{
		promoteEntry(1, "w1"),
		entry(2, insertWrite("ra0s", "alice", 1)),
		entry(3, insertWrite("rb0s", "bob", 2)),
		entry(4, deleteWrite("ra20ms", "alice")),
		promoteEntry(5, "w2"),
		entry(6, insertWrite("ra40ms", "alice", 3)),
		entry(7, rideshare.Write{RequestID: "rc60ms", Batch: []rideshare.Write{
			{Table: "users", Insert: map[string]any{"id": json.Number("4"), "username": "carol", "password": "pw"}},
			{Table: "rides", Insert: map[string]any{"ride_id": json.Number("1"), "created_by": "carol"}},
		}}),
	}
}

// goodHistory is what clients saw of goodLog.
func goodHistory() []Op {
	h := []Op{
		insertOp(0, "alice", 0, 10, Ok, 1),
		insertOp(1, "bob", 0, 10, Ok, 2),
		deleteOp(0, "alice", 20, 30, Ok, 1),
		insertOp(0, "alice", 40, 50, Ok, 3),
		batchOp(2, 60, 70, Ok, Part{Insert, "carol", "pw"}),
		insertOp(1, "bob", 20, 30, Failed, 0), // a duplicate, refused
	}
	for i, seq := range []uint64{2, 3, 4, 6, 7} {
		h[i].Seq = seq
	}
	return h
}

func TestAcknowledgedHolds(t *testing.T) {
	wantHolds(t, CheckAcknowledged(goodHistory(), map[string]int{"alice": 1, "bob": 1, "carol": 1}, goodLog()))
	wantHolds(t, CheckAcknowledged(goodHistory(), map[string]int{"alice": 1, "bob": 1, "carol": 1}, nil))
	// An insert concurrent with a delete may end either way.
	h := []Op{insertOp(0, "a", 0, 10, Ok, 1), deleteOp(1, "a", 5, 15, Ok, 1)}
	wantHolds(t, CheckAcknowledged(h, map[string]int{}, nil))
	wantHolds(t, CheckAcknowledged(h, map[string]int{"a": 1}, nil))
	// A batch applies its parts in order.
	h = []Op{batchOp(0, 0, 10, Ok, Part{Insert, "a", "pw"}, Part{Delete, "a", ""})}
	wantHolds(t, CheckAcknowledged(h, map[string]int{}, nil))
}

// An indeterminate write may or may not have happened: both final states are fine, and the
// log may hold it once or not at all.
func TestAcknowledgedIndeterminate(t *testing.T) {
	ins := []Op{insertOp(0, "a", 0, 10, Indeterminate, 0)}
	for _, final := range []map[string]int{{}, {"a": 1}} {
		wantHolds(t, CheckAcknowledged(ins, final, nil))
	}
	wantHolds(t, CheckAcknowledged(ins, map[string]int{"a": 1}, []Entry{promoteEntry(1, "w1"), entry(2, insertWrite(ins[0].RequestID, "a", 1))}))
	wantHolds(t, CheckAcknowledged(ins, map[string]int{}, []Entry{promoteEntry(1, "w1")}))
	// An indeterminate delete after an acknowledged insert, even long after: either way.
	del := []Op{insertOp(0, "a", 0, 10, Ok, 1), deleteOp(0, "a", 100, 110, Indeterminate, 0)}
	for _, final := range []map[string]int{{}, {"a": 1}} {
		wantHolds(t, CheckAcknowledged(del, final, nil))
	}
	// But it cannot be applied twice.
	twice := []Entry{promoteEntry(1, "w1"), entry(2, insertWrite(ins[0].RequestID, "a", 1)), entry(3, insertWrite(ins[0].RequestID, "a", 2))}
	wantViolated(t, CheckAcknowledged(ins, map[string]int{"a": 1}, twice), "applied 2 times")
}

func TestAcknowledgedViolated(t *testing.T) {
	h := goodHistory()
	wantViolated(t, CheckAcknowledged(h, map[string]int{"bob": 1, "carol": 1}, nil), `key "alice": absent at the end`)
	wantViolated(t, CheckAcknowledged(h, map[string]int{"alice": 1, "carol": 1}, nil), `key "bob": absent`)
	wantViolated(t, CheckAcknowledged(h, map[string]int{"alice": 1, "bob": 1}, nil), `key "carol": absent`)
	wantViolated(t, CheckAcknowledged(h, map[string]int{"alice": 2, "bob": 1, "carol": 1}, nil), `key "alice": 2 rows`)
	wantViolated(t, CheckAcknowledged(h, map[string]int{"alice": 1, "bob": 1, "carol": 1, "zed": 1}, nil), `"zed": present at the end but never inserted`)
	// A delete acknowledged after the last insert, undone.
	resurrected := []Op{insertOp(0, "a", 0, 10, Ok, 1), deleteOp(0, "a", 20, 30, Ok, 1)}
	wantViolated(t, CheckAcknowledged(resurrected, map[string]int{"a": 1}, nil), "no insert could follow the acknowledged delete")

	final := map[string]int{"alice": 1, "bob": 1, "carol": 1}
	lost := goodLog()[:5] // alice's second insert and carol's batch are not in the log
	wantViolated(t, CheckAcknowledged(h, final, lost), "acknowledged write not in the log")
	twice := append(goodLog(), entry(8, insertWrite("rb0s", "bob", 5)))
	wantViolated(t, CheckAcknowledged(h, final, twice), "write applied 2 times, at [3 8]")
	refused := append(goodLog(), entry(8, insertWrite(h[5].RequestID, "bob", 5)))
	wantViolated(t, CheckAcknowledged(h, final, refused), "refused write in the log")
}

func TestEventualReadsHold(t *testing.T) {
	h := append(goodHistory(),
		readOp(3, EventualRead, "alice", 0, 5, 0),    // before the insert
		readOp(3, EventualRead, "alice", 15, 18, 0),  // stale but once true
		readOp(3, EventualRead, "alice", 35, 38, 1),  // stale: the deleted incarnation
		readOp(3, EventualRead, "alice", 80, 90, 3),  // the current one
		readOp(3, EventualRead, "carol", 80, 90, 4),  // inserted by a batch
		readOp(3, EventualRead, "nobody", 80, 90, 0), // never inserted
	)
	withSeq := readOp(3, EventualRead, "alice", 100, 110, 1)
	withSeq.Seq = 3 // the slave had applied up to seq 3: alice id 1
	h = append(h, withSeq)
	wantHolds(t, CheckEventualReads(h, goodLog()))
}

func TestEventualReadsViolated(t *testing.T) {
	log := goodLog()
	wantViolated(t, CheckEventualReads([]Op{readOp(3, EventualRead, "alice", 80, 90, 7)}, log), "a state the log never had")
	wantViolated(t, CheckEventualReads([]Op{readOp(3, EventualRead, "bob", 80, 90, 1)}, log), "a state the log never had")
	// alice id 3 was inserted by the op invoked at 40 ms: a read that returned at 35 ms
	// cannot see it.
	wantViolated(t, CheckEventualReads(append(goodHistory(), readOp(3, EventualRead, "alice", 30, 35, 3)), log), "a state from the future")
	two := readOp(3, EventualRead, "alice", 80, 90, 3)
	two.Rows = 2
	wantViolated(t, CheckEventualReads([]Op{two}, log), "2 rows for one username")
	atSeq := readOp(3, EventualRead, "alice", 100, 110, 0)
	atSeq.Seq = 3 // at seq 3 alice was present with id 1
	wantViolated(t, CheckEventualReads([]Op{atSeq}, log), "at seq 3 the key was present id=1")
	// A delete the checker cannot attribute is said, not passed over.
	odd := append(goodLog(), entry(8, rideshare.Write{Table: "users", Delete: &rideshare.Delete{Where: rideshare.Where{"id": 1}}}))
	wantViolated(t, CheckEventualReads(nil, odd), "cannot follow the log")
}

func TestOneMasterHolds(t *testing.T) {
	wantHolds(t, CheckOneMaster(goodLog(), goodHistory()))
	// A group commit holds several writes at one sequence; appenders known and right.
	log := []Entry{promoteEntry(1, "w1"),
		{Seq: 2, Master: "w1", Writes: []rideshare.Write{insertWrite("r1", "a", 1), insertWrite("r2", "b", 2)}}}
	h := []Op{insertOp(0, "a", 0, 10, Ok, 1), insertOp(1, "b", 2, 12, Ok, 2)}
	h[0].RequestID, h[1].RequestID, h[0].Seq, h[1].Seq = "r1", "r2", 2, 2
	wantHolds(t, CheckOneMaster(log, h))
}

func TestOneMasterViolated(t *testing.T) {
	wantViolated(t, CheckOneMaster(goodLog()[1:], nil), "seq 2: a write before any promotion")
	// Two masters interleaved: w1 appends after w2's promotion.
	log := append(goodLog(), Entry{Seq: 8, Master: "w1", Writes: []rideshare.Write{insertWrite("r8", "dan", 5)}})
	wantViolated(t, CheckOneMaster(log, nil), "seq 8: written by w1 after w2 was promoted at seq 5")
	// The same, seen only in the ids: the deposed master assigns from its old copy.
	log = append(goodLog(), entry(8, insertWrite("r8", "dan", 3)))
	wantViolated(t, CheckOneMaster(log, nil), "seq 8: users.id 3 assigned after 4 at seq 7")
	// An acknowledgement the log does not back.
	h := goodHistory()
	h[3].Seq = 9
	wantViolated(t, CheckOneMaster(goodLog(), h), "acknowledged at seq 9, which the log does not hold")
	h = goodHistory()
	h[3].Seq = 3
	wantViolated(t, CheckOneMaster(goodLog(), h), "acknowledged at seq 3, whose entry holds other writes")
	// Log order against real time: the write invoked after another returned got the lower
	// sequence (a second master answered from behind).
	log = []Entry{promoteEntry(1, "w1"), entry(2, insertWrite("r1", "a", 1)), entry(3, insertWrite("r2", "b", 2))}
	h = []Op{insertOp(0, "a", 20, 30, Ok, 1), insertOp(1, "b", 0, 10, Ok, 2)}
	h[0].RequestID, h[1].RequestID, h[0].Seq, h[1].Seq = "r1", "r2", 2, 3
	wantViolated(t, CheckOneMaster(log, h), "acknowledged at seq 2, below seq 3")
}

func TestReplayUsers(t *testing.T) {
	rows, err := ReplayUsers(goodLog())
	if err != nil {
		t.Fatal(err)
	}
	want := []rideshare.Row{{"id": int64(2), "username": "bob"}, {"id": int64(3), "username": "alice"}, {"id": int64(4), "username": "carol"}}
	if !maps.Equal(counts(rows), counts(want)) {
		t.Errorf("replayed %v, want %v", rows, want)
	}
	cleared := append(goodLog(), entry(8, rideshare.Write{Clear: true}), entry(9, insertWrite("r9", "dan", 5)))
	rows, err = ReplayUsers(cleared)
	if err != nil || len(rows) != 1 || rows[0]["username"] != "dan" {
		t.Errorf("after a clear: %v, %v", rows, err)
	}
}

func TestReplicas(t *testing.T) {
	want, err := ReplayUsers(goodLog())
	if err != nil {
		t.Fatal(err)
	}
	// The same rows in another order, with numbers as other types.
	same := []rideshare.Row{{"id": json.Number("4"), "username": "carol"}, {"id": 2, "username": "bob"}, {"id": float64(3), "username": "alice"}}
	wantHolds(t, CheckReplicas(want, map[string][]rideshare.Row{"w1": want, "w2": same}))

	wantViolated(t, CheckReplicas(want, map[string][]rideshare.Row{"w1": want, "w2": same[1:]}), `replica w2 lacks 1 rows: {"id":4,"username":"carol"}`)
	extra := append(append([]rideshare.Row(nil), want...), rideshare.Row{"id": int64(1), "username": "alice"})
	wantViolated(t, CheckReplicas(want, map[string][]rideshare.Row{"w1": extra}), `replica w1 has 1 rows the log does not: {"id":1,"username":"alice"}`)
	dup := append(append([]rideshare.Row(nil), want...), want[0])
	wantViolated(t, CheckReplicas(want, map[string][]rideshare.Row{"w1": dup}), "replica w1 has 1 rows the log does not")
	wantViolated(t, CheckReplicas(want, nil), "no replica")
}
