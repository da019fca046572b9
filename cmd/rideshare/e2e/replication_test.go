package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/rideshare/rideshare"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/worker/snapshot"
	"github.com/rideshare/rideshare/worker/store"
)

func workers(tb testing.TB, st *stack) []orchestrator.WorkerInfo {
	tb.Helper()
	var ws []orchestrator.WorkerInfo
	if st.Nodes != nil {
		// Polled while a node is lost: no answer is no workers yet, not a failure.
		if err := tryClusterGet(st, "/api/v1/workers", &ws); err != nil {
			tb.Log(err)
			return nil
		}
		return ws
	}
	if err := json.Unmarshal(mustCall(tb, 200, "GET", st.OrchestratorURL+"/api/v1/workers", nil), &ws); err != nil {
		tb.Fatal(err)
	}
	return ws
}

func masterOf(tb testing.TB, st *stack) orchestrator.WorkerInfo {
	tb.Helper()
	for _, w := range workers(tb, st) {
		if w.Role == "master" {
			return w
		}
	}
	tb.Fatal("no master")
	return orchestrator.WorkerInfo{}
}

// writeUsers creates n users through the orchestrator with the given concurrency.
func writeUsers(tb testing.TB, st *stack, prefix string, n, concurrency int) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan string, concurrency)
	next := make(chan int)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				op := rideshare.Write{Table: "users", Insert: map[string]any{"username": fmt.Sprintf("%s%d", prefix, i), "password": sha1hex(i)}}
				if code, body := call(tb, "POST", st.OrchestratorURL+"/api/v1/db/write", op); code != 200 {
					select {
					case errs <- fmt.Sprintf("write %d: %d %s", i, code, body):
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case e := <-errs:
		tb.Fatal(e)
	default:
	}
}

func countUsers(tb testing.TB, st *stack) int64 {
	tb.Helper()
	var res struct {
		Rows []map[string]int64 `json:"rows"`
	}
	body := mustCall(tb, 200, "POST", st.OrchestratorURL+"/api/v1/db/read", rideshare.Read{Table: "users", Count: true})
	if err := json.Unmarshal(body, &res); err != nil {
		tb.Fatal(err)
	}
	return res.Rows[0]["count"]
}

// A slave started after 10,000 writes catches up from the sync log and then serves them.
func TestNewSlaveCatchesUpAfterTenThousandWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	st := mustStack(t)
	const n = 10000
	writeUsers(t, st, "u", n, 16)
	old := workers(t, st)
	var pids []int
	if err := json.Unmarshal(mustCall(t, 200, "POST", st.OrchestratorURL+"/api/v1/crash/slave", nil), &pids); err != nil || len(pids) != 1 {
		t.Fatalf("crash/slave answered %v (%v)", pids, err)
	}
	pid := pids[0]
	// The replacement is the only slave, so once it is ready it serves the count.
	eventually(t, 60*time.Second, "a new ready slave", func() bool {
		for _, w := range workers(t, st) {
			if w.Role == "slave" && w.Ready && w.PID != pid {
				return true
			}
		}
		return false
	})
	if got := countUsers(t, st); got != n {
		t.Fatalf("new slave counts %d users, want %d (workers before: %+v)", got, n, old)
	}
}

// Replaying the sync log into an empty database gives exactly the master's rows, ids
// included.
func TestReplayingTheLogReproducesTheMaster(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	st := mustStack(t)
	gw := st.GatewayURL
	for i, name := range []string{"alice", "bob", "carol"} {
		mustCall(t, 201, "PUT", gw+"/api/v1/users", map[string]string{"username": name, "password": sha1hex(i)})
	}
	for i := range 6 {
		mustCall(t, 201, "POST", gw+"/api/v1/rides", map[string]any{"created_by": []string{"alice", "bob"}[i%2], "timestamp": "01-01-2031:00-00-10", "source": i + 1, "destination": i + 2})
	}
	mustCall(t, 200, "POST", gw+"/api/v1/rides/2", map[string]string{"username": "carol"})
	mustCall(t, 200, "DELETE", gw+"/api/v1/rides/1", nil)
	mustCall(t, 200, "DELETE", gw+"/api/v1/users/bob", nil)
	mustCall(t, 201, "POST", gw+"/api/v1/rides", map[string]any{"created_by": "carol", "timestamp": "01-01-2031:00-00-10", "source": 9, "destination": 10})

	ctx := context.Background()
	m := masterOf(t, st)
	masterDB := store.New(filepath.Join(st.Runtime.DataDir, m.ID, "db.sqlite"))
	if err := masterDB.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer masterDB.Close()

	nc, err := st.ConnectNATS("test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	log, err := synclog.Open(ctx, nc, false)
	if err != nil {
		t.Fatal(err)
	}
	last, err := log.Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	replica := store.New(filepath.Join(t.TempDir(), "replay.sqlite"))
	if err := replica.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	err = log.Read(ctx, 1, last, 100, func(msgs []synclog.Msg) error {
		var es []store.Entry
		for _, m := range msgs {
			var op store.LogOp
			if err := json.Unmarshal(m.Data, &op); err != nil {
				return err
			}
			es = append(es, store.Entry{Seq: m.Seq, Op: op})
		}
		return replica.Apply(ctx, es)
	})
	if err != nil {
		t.Fatal(err)
	}
	if replica.Applied() != masterDB.Applied() {
		t.Fatalf("replica applied %d, master %d", replica.Applied(), masterDB.Applied())
	}
	for _, table := range []string{"users", "rides", "ride_users"} {
		var order []rideshare.Order
		for _, c := range rideshare.Schema[table].Columns {
			if !c.Secret {
				order = append(order, rideshare.Order{Column: c.Name})
			}
		}
		q := rideshare.Read{Table: table, Order: order}
		want, err := masterDB.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got, err := replica.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s differs:\n replay %v\n master %v", table, got, want)
		}
	}
}

// Under concurrent writers, every read issued after a write was acknowledged sees it.
func TestReadAfterWriteUnderConcurrentWriters(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	st := mustStack(t, withSlaves(2))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				name := fmt.Sprintf("w%d-%d", g, i)
				if code, body := call(t, "PUT", st.GatewayURL+"/api/v1/users", map[string]string{"username": name, "password": sha1hex(i)}); code != 201 {
					errs <- fmt.Errorf("create %s: %d %s", name, code, body)
					return
				}
				if code, body := call(t, "GET", st.GatewayURL+"/api/v1/users/"+name, nil); code != 200 {
					errs <- fmt.Errorf("read %s right after it was acknowledged: %d %s", name, code, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A new slave starts from the newest snapshot and replays only the log after it. To prove it
// used the snapshot, the log entries the snapshot holds are purged first: replaying from the
// log alone would find a gap and never become ready.
func TestNewSlaveStartsFromSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	const every = 300
	st := mustStack(t, withSnapshotEvery(every))
	ctx := context.Background()
	nc, err := st.ConnectNATS("test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	snaps, err := snapshot.Open(ctx, nc, false)
	if err != nil {
		t.Fatal(err)
	}
	// One writer: one log entry per write, so the log passes `every` entries quickly.
	const n = 1000
	writeUsers(t, st, "u", n, 1)
	var snapSeq uint64
	eventually(t, 60*time.Second, "a snapshot", func() bool {
		snapSeq, err = snaps.Latest(ctx)
		return err == nil && snapSeq >= every
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, synclog.Stream)
	if err != nil {
		t.Fatal(err)
	}
	// Keep only what comes after the snapshot.
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(snapSeq+1)); err != nil {
		t.Fatal(err)
	}
	if info, err := stream.Info(ctx); err != nil || info.State.FirstSeq != snapSeq+1 {
		t.Fatalf("log after purge starts at %+v (%v), want %d", info.State, err, snapSeq+1)
	}
	writeUsers(t, st, "late", 50, 1) // and some more after the purge

	var pids []int
	if err := json.Unmarshal(mustCall(t, 200, "POST", st.OrchestratorURL+"/api/v1/crash/slave", nil), &pids); err != nil || len(pids) != 1 {
		t.Fatalf("crash/slave answered %v (%v)", pids, err)
	}
	eventually(t, 60*time.Second, "a new ready slave", func() bool {
		for _, w := range workers(t, st) {
			if w.Role == "slave" && w.Ready && w.PID != pids[0] {
				return true
			}
		}
		return false
	})
	if got := countUsers(t, st); got != n+50 {
		t.Fatalf("slave restored from the snapshot at %d counts %d users, want %d", snapSeq, got, n+50)
	}
}
