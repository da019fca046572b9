package store

import (
	"context"
	"errors"
	"fmt"
	"github.com/rideshare/rideshare"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func mustOpen(tb testing.TB) *Store {
	tb.Helper()
	s := New(filepath.Join(tb.TempDir(), "db.sqlite"))
	if err := s.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// memLog is an in-memory sync log for store tests: the store is what is under test here; the
// real JetStream log is tested in synclog and end to end.
type memLog struct{ entries []Entry }

func (l *memLog) appender(s *Store) func(LogOp) (uint64, error) {
	return func(op LogOp) (uint64, error) {
		seq := uint64(len(l.entries) + 1)
		if seq != s.Applied()+1 {
			return 0, fmt.Errorf("fenced: log at %d, store at %d", len(l.entries), s.Applied())
		}
		l.entries = append(l.entries, Entry{Seq: seq, Op: op})
		return seq, nil
	}
}

// executor returns a function that executes a write on master, appending to log, and fails
// the test if the write fails.
func executor(t *testing.T, master *Store, log *memLog) func(rideshare.Write) rideshare.Result {
	return func(w rideshare.Write) rideshare.Result {
		t.Helper()
		res, err := master.Execute(context.Background(), w, log.appender(master))
		if err != nil {
			t.Fatalf("execute %+v: %v", w, err)
		}
		return res
	}
}

func user(name string) rideshare.Write {
	return rideshare.Write{Table: "users", Insert: map[string]any{"username": name, "password": "3d725c5ee53025f5f8abd6d2ab1c9d3d0bd0ad4e"}}
}

func ride(by string, src, dst int) rideshare.Write {
	return rideshare.Write{Table: "rides", Insert: map[string]any{"created_by": by, "timestamp": "01-01-2030:00-00-00", "ts": int64(1893456000), "source": src, "destination": dst}}
}

func dump(tb testing.TB, s *Store) map[string][]rideshare.Row {
	tb.Helper()
	out := map[string][]rideshare.Row{}
	for _, t := range []string{"users", "rides", "ride_users"} {
		var order []rideshare.Order
		for _, c := range rideshare.Schema[t].Columns {
			if !c.Secret {
				order = append(order, rideshare.Order{Column: c.Name})
			}
		}
		rows, err := s.Query(context.Background(), rideshare.Read{Table: t, Order: order})
		if err != nil {
			tb.Fatal(err)
		}
		out[t] = rows
	}
	return out
}

func TestReplayReproducesMasterIDsIncluded(t *testing.T) {
	ctx := context.Background()
	master, log := mustOpen(t), &memLog{}
	exec := executor(t, master, log)
	exec(user("alice"))
	exec(user("bob"))
	r1 := exec(ride("alice", 1, 2))
	r2 := exec(ride("bob", 3, 4))
	exec(rideshare.Write{Table: "ride_users", Insert: map[string]any{"ride_id": r2.ID, "username": "alice"}})
	exec(rideshare.Write{Table: "rides", Delete: &rideshare.Delete{Where: rideshare.Where{"ride_id": r1.ID}}})
	r3 := exec(ride("alice", 5, 6))
	if r3.ID <= r2.ID {
		t.Fatalf("ride id %d reused or lower after delete (last was %d)", r3.ID, r2.ID)
	}
	exec(rideshare.Write{Batch: []rideshare.Write{user("carol"), ride("carol", 7, 8)}})
	exec(rideshare.Write{Table: "users", Delete: &rideshare.Delete{Where: rideshare.Where{"username": "bob"}}})

	replica := mustOpen(t)
	if err := replica.Apply(ctx, log.entries); err != nil {
		t.Fatal(err)
	}
	if got, want := replica.Applied(), master.Applied(); got != want {
		t.Fatalf("replica applied %d, master %d", got, want)
	}
	if got, want := dump(t, replica), dump(t, master); !reflect.DeepEqual(got, want) {
		t.Fatalf("replica differs from master:\n got %v\nwant %v", got, want)
	}
	// Deleting bob removed his ride and alice's join to it, in the same entry.
	if n := len(dump(t, replica)["ride_users"]); n != 0 {
		t.Fatalf("joins left after deleting the ride's creator: %d", n)
	}
	// After a clear, ids keep growing: never reused for the life of the database.
	exec(rideshare.Write{Clear: true})
	exec(user("dave"))
	if r := exec(ride("dave", 1, 2)); r.ID <= r3.ID+1 {
		t.Fatalf("ride id %d after clear reuses an old id (last %d)", r.ID, r3.ID+1)
	}
}

func TestApplySkipsDuplicatesAndStopsAtGaps(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	e := []Entry{{Seq: 1, Op: LogOp{Write: user("a")}}, {Seq: 2, Op: LogOp{Write: user("b")}}, {Seq: 4, Op: LogOp{Write: user("d")}}}
	err := s.Apply(ctx, e)
	if !errors.Is(err, ErrGap) {
		t.Fatalf("want ErrGap, got %v", err)
	}
	if s.Applied() != 2 {
		t.Fatalf("applied %d, want 2 (entries before the gap are kept)", s.Applied())
	}
	// Redelivery of applied entries is a no-op.
	if err := s.Apply(ctx, e[:2]); err != nil {
		t.Fatal(err)
	}
	if n := len(dump(t, s)["users"]); n != 2 {
		t.Fatalf("users = %d after redelivery, want 2", n)
	}
}

func TestApplyRefusesEntryThatDoesNotFit(t *testing.T) {
	s := mustOpen(t)
	err := s.Apply(context.Background(), []Entry{{Seq: 1, Op: LogOp{Write: ride("nobody", 1, 2)}}})
	if !errors.Is(err, ErrDiverged) {
		t.Fatalf("want ErrDiverged, got %v", err)
	}
	if s.Applied() != 0 {
		t.Fatalf("applied moved to %d", s.Applied())
	}
}

func TestAppliedSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db.sqlite")
	s := New(path)
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, []Entry{{Seq: 1, Op: LogOp{Write: user("a")}}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = New(path)
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Applied() != 1 {
		t.Fatalf("applied %d after reopen, want 1", s.Applied())
	}
}

func TestExecuteLeavesNothingWhenAppendFails(t *testing.T) {
	s := mustOpen(t)
	_, err := s.Execute(context.Background(), user("a"), func(LogOp) (uint64, error) { return 0, errors.New("log down") })
	if err == nil {
		t.Fatal("want error")
	}
	if n := len(dump(t, s)["users"]); n != 0 || s.Applied() != 0 {
		t.Fatalf("write kept after failed append: users=%d applied=%d", n, s.Applied())
	}
}

func TestConstraintErrors(t *testing.T) {
	ctx := context.Background()
	s, log := mustOpen(t), &memLog{}
	if _, err := s.Execute(ctx, user("a"), log.appender(s)); err != nil {
		t.Fatal(err)
	}
	for name, w := range map[string]rideshare.Write{
		"duplicate username":   user("a"),
		"ride of missing user": ride("ghost", 1, 2),
		"join of missing ride": {Table: "ride_users", Insert: map[string]any{"ride_id": 99, "username": "a"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := s.Execute(ctx, w, log.appender(s))
			if !errors.Is(err, rideshare.ErrConstraint) {
				t.Fatalf("want ErrConstraint, got %v", err)
			}
			// The reason names what failed, for the client's 409.
			if !strings.Contains(err.Error(), "constraint failed") {
				t.Fatalf("error %q does not say which constraint failed", err)
			}
			t.Log(err)
		})
	}
}

// A log entry is exactly one of a write, a promotion or a group, each write as resolved.
func TestApplyRefusesMalformedEntries(t *testing.T) {
	for name, op := range map[string]LogOp{
		"promotion that changes data": {Write: user("a"), Promote: "w1"},
		"group with a write beside":   {Write: user("a"), Group: []rideshare.Write{user("b")}},
		"group with a promotion":      {Promote: "w1", Group: []rideshare.Write{user("b")}},
		"group of an invalid write":   {Group: []rideshare.Write{{Table: "users"}}},
		"invalid write":               {Write: rideshare.Write{Table: "nope", Insert: map[string]any{"x": 1}}},
	} {
		t.Run(name, func(t *testing.T) {
			s := mustOpen(t)
			if err := s.Apply(context.Background(), []Entry{{Seq: 1, Op: op}}); !errors.Is(err, ErrDiverged) {
				t.Fatalf("want ErrDiverged, got %v", err)
			}
			if s.Applied() != 0 {
				t.Fatalf("applied %d", s.Applied())
			}
		})
	}
}

func TestInjectionLookingValuesAreData(t *testing.T) {
	ctx := context.Background()
	s, log := mustOpen(t), &memLog{}
	evil := "'; DROP TABLE users; --"
	if _, err := s.Execute(ctx, user(evil), log.appender(s)); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Query(ctx, rideshare.Read{Table: "users", Where: rideshare.Where{"username": evil}})
	if err != nil || len(rows) != 1 || rows[0]["username"] != evil {
		t.Fatalf("rows %v, err %v", rows, err)
	}
}

func TestQueryWhereOrderLimitCount(t *testing.T) {
	ctx := context.Background()
	s, log := mustOpen(t), &memLog{}
	for _, w := range []rideshare.Write{user("a"), ride("a", 1, 2), ride("a", 1, 2), ride("a", 1, 3)} {
		if _, err := s.Execute(ctx, w, log.appender(s)); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := s.Query(ctx, rideshare.Read{Table: "rides", Columns: []string{"ride_id"},
		Where: rideshare.Where{"source": 1, "destination": 2, "ts": map[string]any{"gt": 0}},
		Order: []rideshare.Order{{Column: "ride_id", Desc: true}}, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0]["ride_id"] != int64(2) {
		t.Fatalf("got %v, want ride 2 only", rows)
	}
	rows, err = s.Query(ctx, rideshare.Read{Table: "rides", Count: true})
	if err != nil || rows[0]["count"] != int64(3) {
		t.Fatalf("count %v, err %v", rows, err)
	}
	users, _ := s.Query(ctx, rideshare.Read{Table: "users"})
	if _, leaked := users[0]["password"]; leaked {
		t.Fatal("password returned by a read")
	}
}

func TestRequestIDAppliesOnceEvenAfterFailover(t *testing.T) {
	ctx := context.Background()
	master, log := mustOpen(t), &memLog{}
	w := user("a")
	w.RequestID = "req-1"
	first, err := master.Execute(ctx, w, log.appender(master))
	if err != nil {
		t.Fatal(err)
	}
	again, err := master.Execute(ctx, w, log.appender(master))
	if err != nil || again != first {
		t.Fatalf("retry answered %+v, %v; want the first result %+v", again, err, first)
	}
	if len(log.entries) != 1 {
		t.Fatalf("log holds %d entries, want 1", len(log.entries))
	}
	// A replica promoted to master remembers the request too.
	replica := mustOpen(t)
	if err := replica.Apply(ctx, log.entries); err != nil {
		t.Fatal(err)
	}
	again, err = replica.Execute(ctx, w, log.appender(replica))
	if err != nil || again != first {
		t.Fatalf("retry on the promoted replica answered %+v, %v; want %+v", again, err, first)
	}
}

func TestExecuteGroupCommitsTheGoodWritesInOneEntry(t *testing.T) {
	ctx := context.Background()
	master, log := mustOpen(t), &memLog{}
	a, dup, bad, ridden := user("a"), user("a"), user("b"), ride("a", 1, 2)
	a.RequestID, dup.RequestID = "r1", "r1" // the same request sent twice
	bad.Insert["password"] = 7              // invalid
	out := master.ExecuteGroup(ctx, []rideshare.Write{a, dup, bad, ridden, user("a")}, log.appender(master))
	if len(log.entries) != 1 || len(log.entries[0].Op.Group) != 2 {
		t.Fatalf("log = %+v, want one group entry of the user and the ride", log.entries)
	}
	if out[0].Err != nil || out[1] != out[0] {
		t.Fatalf("request sent twice: %+v and %+v, want the same success", out[0], out[1])
	}
	if !errors.Is(out[2].Err, rideshare.ErrInvalid) {
		t.Fatalf("invalid write: %v", out[2].Err)
	}
	if out[3].Err != nil || out[3].Result.Seq != 1 || out[3].Result.ID == 0 {
		t.Fatalf("ride after its user in one group: %+v", out[3])
	}
	if !errors.Is(out[4].Err, rideshare.ErrConstraint) {
		t.Fatalf("duplicate username in the group: %v", out[4].Err)
	}
	replica := mustOpen(t)
	if err := replica.Apply(ctx, log.entries); err != nil {
		t.Fatal(err)
	}
	if got, want := dump(t, replica), dump(t, master); !reflect.DeepEqual(got, want) {
		t.Fatalf("replica differs:\n got %v\nwant %v", got, want)
	}
	// The replica remembers the request id of a write inside a group.
	again, err := replica.Execute(ctx, a, log.appender(replica))
	if err != nil || again != out[0].Result {
		t.Fatalf("retry on replica: %+v, %v; want %+v", again, err, out[0].Result)
	}
}
