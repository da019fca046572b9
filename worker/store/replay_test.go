package store

import (
	"context"
	"errors"
	"fmt"
	"github.com/rideshare/rideshare"
	"math/rand/v2"
	"reflect"
	"testing"
)

// dumpWithRequests is dump plus the replicated requests table.
func dumpWithRequests(tb testing.TB, s *Store) map[string][]rideshare.Row {
	tb.Helper()
	out := dump(tb, s)
	rows, err := s.r.QueryContext(context.Background(), `SELECT id, seq, rid, affected FROM requests ORDER BY id`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var seq, rid, affected int64
		if err := rows.Scan(&id, &seq, &rid, &affected); err != nil {
			tb.Fatal(err)
		}
		out["requests"] = append(out["requests"], rideshare.Row{"id": id, "seq": seq, "rid": rid, "affected": affected})
	}
	return out
}

// A replay batches runs of inserts into multi-row statements (replay.go). Whatever the mix
// of writes (single inserts, batches longer than one statement's rows, groups, deletes that
// cascade, clears) and however the log is cut into Apply calls, the replica must end equal
// to the master, requests table included.
func TestReplayOfMixedLogEqualsMaster(t *testing.T) {
	ctx := context.Background()
	master, log := mustOpen(t), &memLog{}
	rng := rand.New(rand.NewPCG(7, 7))
	var users []string
	var rides []int64
	nextUser := 0
	reqID := 0
	newUser := func() rideshare.Write {
		nextUser++
		name := fmt.Sprintf("user%d", nextUser)
		users = append(users, name)
		return user(name)
	}
	someUser := func() string { return users[rng.IntN(len(users))] }
	withID := func(w rideshare.Write) rideshare.Write {
		reqID++
		w.RequestID = fmt.Sprintf("%016x%016x", reqID, rng.Uint64())
		return w
	}
	exec := executor(t, master, log)
	// try is exec for a write that may meet a constraint (the ride or user it names may be
	// gone): refused writes reach neither the master nor the log.
	try := func(w rideshare.Write) {
		t.Helper()
		if _, err := master.Execute(ctx, w, log.appender(master)); err != nil && !errors.Is(err, rideshare.ErrConstraint) {
			t.Fatalf("execute %+v: %v", w, err)
		}
	}
	for range 5 {
		exec(withID(newUser()))
	}
	for step := range 400 {
		switch k := rng.IntN(10); {
		case k < 3: // a ride
			rides = append(rides, exec(withID(ride(someUser(), 1+rng.IntN(198), 1+rng.IntN(198)))).ID)
		case k < 4: // a long batch: more rows than one multi-row statement
			n := 1 + rng.IntN(3*rowsPerInsert)
			b := make([]rideshare.Write, n)
			for i := range b {
				b[i] = ride(someUser(), 1+rng.IntN(198), 1+rng.IntN(198))
			}
			exec(withID(rideshare.Write{Batch: b}))
		case k < 6: // a group commit of several writers, one of them failing
			ws := []rideshare.Write{withID(newUser()), withID(ride(someUser(), 2, 3)), withID(user(users[0])), withID(newUser())}
			for _, o := range master.ExecuteGroup(ctx, ws, log.appender(master)) {
				if o.Err != nil && o.Result.Seq != 0 {
					t.Fatal(o.Err)
				}
			}
		case k < 7 && len(rides) > 0: // a join
			try(withID(rideshare.Write{Table: "ride_users", Insert: map[string]any{"ride_id": rides[rng.IntN(len(rides))], "username": someUser()}}))
		case k < 8 && len(users) > 3: // delete a user: their rides and joins go too
			i := rng.IntN(len(users))
			exec(withID(rideshare.Write{Table: "users", Delete: &rideshare.Delete{Where: rideshare.Where{"username": users[i]}}}))
			users = append(users[:i], users[i+1:]...)
		case k < 9: // a batch mixing inserts and deletes
			exec(withID(rideshare.Write{Batch: []rideshare.Write{newUser(), ride(users[len(users)-1], 4, 5), {Table: "rides", Delete: &rideshare.Delete{Where: rideshare.Where{"source": int64(4)}}}, ride(users[len(users)-1], 6, 7)}}))
		default:
			if step == 200 {
				exec(rideshare.Write{Clear: true})
				users, rides = nil, nil
				for range 3 {
					exec(newUser())
				}
			} else {
				exec(newUser()) // without a request id
			}
		}
	}
	want := dumpWithRequests(t, master)
	if len(want["requests"]) < 300 || len(want["rides"]) < 100 {
		t.Fatalf("workload too small to mean anything: %d requests, %d rides", len(want["requests"]), len(want["rides"]))
	}
	for _, chunk := range []int{1, 3, 64, 1000} {
		t.Run(fmt.Sprintf("chunks of %d", chunk), func(t *testing.T) {
			replica := mustOpen(t)
			for i := 0; i < len(log.entries); i += chunk {
				if err := replica.Apply(ctx, log.entries[i:min(i+chunk, len(log.entries))]); err != nil {
					t.Fatal(err)
				}
			}
			if replica.Applied() != master.Applied() {
				t.Fatalf("replica applied %d, master %d", replica.Applied(), master.Applied())
			}
			if got := dumpWithRequests(t, replica); !reflect.DeepEqual(got, want) {
				for table := range want {
					if !reflect.DeepEqual(got[table], want[table]) {
						t.Errorf("%s differs: replica %d rows, master %d", table, len(got[table]), len(want[table]))
					}
				}
			}
		})
	}
}

// An entry that cannot apply inside a run of batched inserts is reported as divergence, and
// nothing of its transaction stays.
func TestReplayDivergenceInsideABatchedRun(t *testing.T) {
	ctx := context.Background()
	master, log := mustOpen(t), &memLog{}
	if _, err := master.Execute(ctx, user("alice"), log.appender(master)); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := master.Execute(ctx, ride("alice", 1, 2), log.appender(master)); err != nil {
			t.Fatal(err)
		}
	}
	replica := mustOpen(t)
	if err := replica.Apply(ctx, log.entries[:1]); err != nil {
		t.Fatal(err)
	}
	// Entry 6 now inserts a ride id that entry 5 already used.
	bad := append([]Entry(nil), log.entries[1:]...)
	op := bad[4].Op
	op.Insert = map[string]any{}
	for k, v := range bad[3].Op.Insert {
		op.Insert[k] = v
	}
	bad[4].Op = op
	err := replica.Apply(ctx, bad)
	if err == nil || !errors.Is(err, ErrDiverged) {
		t.Fatalf("Apply of a conflicting entry: %v, want ErrDiverged", err)
	}
	if replica.Applied() != 1 || len(dump(t, replica)["rides"]) != 0 {
		t.Fatalf("a failed Apply left applied %d and %d rides", replica.Applied(), len(dump(t, replica)["rides"]))
	}
}
