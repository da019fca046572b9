package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/coord/memcoord"
	"github.com/rideshare/rideshare/broker/memq"
	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/broker/synclog/memlog"
	"github.com/rideshare/rideshare/worker"
	"github.com/rideshare/rideshare/worker/store"
)

// The worker's rules, in process: the in-memory broker, coordinator and sync log (each passes
// the contract suite of the real ones) around a real SQLite store. Log polling is off
// (PollEvery an hour) unless a test says otherwise, so that each rule is seen through the one
// mechanism under test and a broken rule fails its test instead of being covered by the poll.

// deployment is one namespace: the queues, the coordination service and the sync log.
type deployment struct {
	t     *testing.T
	net   *memq.Network
	coord *memcoord.Service
	log   *memlog.Log
	// ops is the orchestrator's side: a broker connection and a coordination session.
	ops      broker.Broker
	opsCoord coord.Coordinator
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	d := &deployment{t: t, net: memq.NewNetwork(), coord: memcoord.NewService(), log: memlog.New()}
	d.ops = d.net.Broker()
	d.opsCoord = d.coord.Session()
	t.Cleanup(func() { d.ops.Close(); d.opsCoord.Close() })
	return d
}

// running is a worker started by start.
type running struct {
	w     *worker.Worker
	st    *store.Store
	sess  *memcoord.Session
	b     broker.Broker
	done  chan error // Run's result
	stop  context.CancelFunc
	ended bool
}

// start runs a worker with an empty store (or the given one) until the test ends.
func (d *deployment) start(id string, opts ...func(*worker.Worker)) *running {
	d.t.Helper()
	st := store.New(filepath.Join(d.t.TempDir(), id+".sqlite"))
	if err := st.Open(context.Background()); err != nil {
		d.t.Fatal(err)
	}
	sess := d.coord.Session()
	b := d.net.Broker()
	w := worker.New(id, st, b, d.log, sess)
	w.Logger = quiet
	w.PollEvery = time.Hour
	w.ReadWait = 5 * time.Second
	for _, o := range opts {
		o(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, st: st, sess: sess, b: b, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- w.Run(ctx) }()
	d.t.Cleanup(func() {
		cancel()
		r.wait(d.t)
		st.Close()
		b.Close()
		sess.Close()
	})
	return r
}

// wait returns Run's result, failing the test if Run does not return.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	if r.ended {
		return nil
	}
	select {
	case err := <-r.done:
		r.ended = true
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// await polls cond (cheap, in-memory state) until it holds.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// member returns the coordination entry of id, as the orchestrator sees it.
func (d *deployment) member(id string) (coord.Member, bool) {
	ms, err := d.opsCoord.Members(context.Background())
	if err != nil {
		d.t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == id {
			return m, true
		}
	}
	return coord.Member{}, false
}

func (d *deployment) awaitReady(id string) {
	d.t.Helper()
	await(d.t, id+" ready", func() bool { m, ok := d.member(id); return ok && m.Ready })
}

func (d *deployment) awaitMaster(id string) {
	d.t.Helper()
	await(d.t, id+" listed as master", func() bool { m, ok := d.member(id); return ok && m.Role == coord.RoleMaster })
}

// promote designates id, as the orchestrator does when there is no master.
func (d *deployment) promote(id string) {
	d.t.Helper()
	if err := d.opsCoord.Designate(context.Background(), id); err != nil {
		d.t.Fatal(err)
	}
	d.awaitMaster(id)
}

// startMaster starts id and makes it master.
func (d *deployment) startMaster(id string) *running {
	d.t.Helper()
	r := d.start(id)
	d.awaitReady(id)
	d.promote(id)
	return r
}

// mustWrite sends a write that must be acknowledged.
func (d *deployment) mustWrite(w rideshare.Write) rideshare.Result {
	d.t.Helper()
	r, err := d.write(w)
	if err != nil || r.Result == nil {
		d.t.Fatalf("write: %+v, %v", r, err)
	}
	return *r.Result
}

// appendUsers appends one log entry per name, as a live master would, without telling
// syncQ: only the log has them.
func (d *deployment) appendUsers(names ...string) (last uint64) {
	d.t.Helper()
	ctx := context.Background()
	for _, n := range names {
		data, err := json.Marshal(store.LogOp{Write: insertUser(n)})
		if err != nil {
			d.t.Fatal(err)
		}
		prev, err := d.log.Last(ctx)
		if err != nil {
			d.t.Fatal(err)
		}
		if last, err = d.log.Append(ctx, prev, data); err != nil {
			d.t.Fatal(err)
		}
	}
	return last
}

func insertUser(name string) rideshare.Write {
	return rideshare.Write{Table: "users", Insert: map[string]any{"username": name, "password": "3d725109c7e7c0bfb9d709836735b56d943d263f"}}
}

// write sends a client write to the master through writeQ.
func (d *deployment) write(w rideshare.Write) (rideshare.WriteReply, error) {
	body, _ := json.Marshal(w)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A new master says so before it consumes writeQ (so that the orchestrator lists it by
	// its first acknowledged write): until it does, the queue has no consumer. The
	// orchestrator waits that out; so does this helper.
	out, err := d.ops.Call(ctx, broker.WriteQ, body)
	for errors.Is(err, broker.ErrNoConsumer) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
		out, err = d.ops.Call(ctx, broker.WriteQ, body)
	}
	if err != nil {
		return rideshare.WriteReply{}, err
	}
	var r rideshare.WriteReply
	if err := json.Unmarshal(out, &r); err != nil {
		d.t.Fatalf("write reply %q: %v", out, err)
	}
	return r, nil
}

// strongRead counts users through readQ, answered once the slave applied minSeq.
func (d *deployment) strongRead(minSeq uint64) rideshare.ReadReply {
	d.t.Helper()
	body, _ := json.Marshal(rideshare.Read{Table: "users", Count: true, MinSeq: minSeq})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := d.ops.Call(ctx, broker.ReadQ, body)
	if err != nil {
		d.t.Fatalf("read: %v", err)
	}
	var r rideshare.ReadReply
	if err := json.Unmarshal(out, &r); err != nil {
		d.t.Fatalf("read reply %q: %v", out, err)
	}
	return r
}

func count(t *testing.T, st *store.Store) int {
	t.Helper()
	out, err := st.QueryJSON(context.Background(), rideshare.Read{Table: "users", Count: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]int
	if err := json.Unmarshal(out, &rows); err != nil || len(rows) != 1 {
		t.Fatalf("count: %s, %v", out, err)
	}
	return rows[0]["count"]
}

// logEntry decodes the log's entry at seq.
func (d *deployment) logEntry(seq uint64) store.LogOp {
	d.t.Helper()
	m, err := d.log.Get(context.Background(), seq)
	if err != nil {
		d.t.Fatalf("log entry %d: %v", seq, err)
	}
	var op store.LogOp
	if err := json.Unmarshal(m.Data, &op); err != nil {
		d.t.Fatal(err)
	}
	return op
}

// A new slave replays the log before it says it is ready, then takes reads.
func TestSlaveCatchesUpBeforeReady(t *testing.T) {
	d := newDeployment(t)
	last := d.appendUsers("a", "b", "c")
	s := d.start("w1")
	d.awaitReady("w1")
	if got := s.st.Applied(); got != last {
		t.Fatalf("ready at %d, the log ends at %d", got, last)
	}
	if r := d.strongRead(last); r.Error != "" || r.Seq < last {
		t.Fatalf("read: %+v", r)
	}
}

// An entry on syncQ past a gap makes the slave read the missing entries from the log.
func TestSlaveFillsSyncQGapFromLog(t *testing.T) {
	d := newDeployment(t)
	s := d.start("w1")
	d.awaitReady("w1")
	d.appendUsers("a", "b")
	last := d.appendUsers("c")
	op := d.logEntry(last)
	body, _ := json.Marshal(store.Entry{Seq: last, Op: op})
	if err := d.ops.PublishSync(context.Background(), body); err != nil {
		t.Fatal(err)
	}
	await(t, "the gap filled", func() bool { return s.st.Applied() == last })
	if n := count(t, s.st); n != 3 {
		t.Fatalf("%d users after filling the gap, want 3", n)
	}
}

// A strong read for a sequence the slave has not seen pulls it from the log at once.
func TestStrongReadPullsFromLog(t *testing.T) {
	d := newDeployment(t)
	d.start("w1")
	d.awaitReady("w1")
	last := d.appendUsers("a", "b") // the log only: syncQ never brings them
	r := d.strongRead(last)
	if r.Error != "" {
		t.Fatalf("strong read at %d: %s (%s)", last, r.Error, r.Kind)
	}
	var rows []map[string]int
	if err := json.Unmarshal(r.Rows, &rows); err != nil || r.Seq < last || len(rows) != 1 || rows[0]["count"] != 2 {
		t.Fatalf("strong read at %d answered %+v", last, r)
	}
}

// A strong read the slave cannot satisfy in time is refused as retryable, never answered
// from a state older than the read asked for.
func TestStrongReadBeyondLogIsRetry(t *testing.T) {
	d := newDeployment(t)
	d.start("w1", func(w *worker.Worker) { w.ReadWait = 50 * time.Millisecond })
	d.awaitReady("w1")
	if r := d.strongRead(99); r.Kind != rideshare.KindRetry {
		t.Fatalf("read at 99 with a log of 0: %+v, want kind %s", r, rideshare.KindRetry)
	}
}

// A promoted slave reads the log to its end before taking writes: what it missed is applied,
// the promotion marker follows the old master's last entry, and the first write follows it.
func TestPromotedSlaveReadsLogToEndFirst(t *testing.T) {
	d := newDeployment(t)
	s := d.start("w1")
	d.awaitReady("w1")
	last := d.appendUsers("a", "b", "c") // the old master's last writes, missed by w1
	d.promote("w1")
	if op := d.logEntry(last + 1); op.Promote != "w1" {
		t.Fatalf("entry %d after the old master's last is %+v, want w1's promotion", last+1, op)
	}
	r, err := d.write(insertUser("d"))
	if err != nil || r.Result == nil {
		t.Fatalf("first write: %+v, %v", r, err)
	}
	if r.Result.Seq != last+2 {
		t.Fatalf("first write at %d, want %d", r.Result.Seq, last+2)
	}
	if n := count(t, s.st); n != 4 {
		t.Fatalf("master has %d users, want 4", n)
	}
}

// A worker designated while another holds the lock stays a slave; a worker not designated
// never takes writes.
func TestOnlyTheDesignatedLockHolderTakesWrites(t *testing.T) {
	d := newDeployment(t)
	d.start("w1")
	d.start("w2")
	d.awaitReady("w1")
	d.awaitReady("w2")
	if _, err := d.write(insertUser("a")); !errors.Is(err, broker.ErrNoConsumer) {
		t.Fatalf("write with no master: %v, want ErrNoConsumer", err)
	}
	d.promote("w1")
	if err := d.opsCoord.Designate(context.Background(), "w2"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		r, err := d.write(insertUser(fmt.Sprint("u", i)))
		if err != nil || r.Result == nil {
			t.Fatalf("write %d: %+v, %v", i, r, err)
		}
	}
	if m, _ := d.member("w2"); m.Role != coord.RoleSlave {
		t.Fatalf("w2 is %s while w1 holds the lock", m.Role)
	}
	if last, _ := d.log.Last(context.Background()); d.logEntry(last).Promote != "" {
		t.Fatal("the log's last entry is a second promotion")
	}
}

// A master fenced by the log (another master appended after it) refuses the write it could
// not log and steps down; the write is not applied.
func TestFencedMasterStepsDown(t *testing.T) {
	d := newDeployment(t)
	m := d.startMaster("w1")
	d.mustWrite(insertUser("a"))
	d.appendUsers("usurper") // a newer master's entry
	r, err := d.write(insertUser("b"))
	if err != nil {
		t.Fatalf("fenced write: %v", err)
	}
	if r.Kind != rideshare.KindRetry || r.Result != nil {
		t.Fatalf("fenced write answered %+v, want kind %s", r, rideshare.KindRetry)
	}
	if err := m.wait(t); !errors.Is(err, worker.ErrSteppedDown) {
		t.Fatalf("Run after being fenced: %v, want ErrSteppedDown", err)
	}
	if n := count(t, m.st); n != 1 {
		t.Fatalf("fenced master holds %d users, want 1 (the refused write rolled back)", n)
	}
}

// A refusal is a read of the master's state and is fenced like a write: a deposed master that
// has not noticed yet (it was paused past its session) must not answer "the user exists" from
// its stale copy after the new master deleted the user. Found by `rideshare chaos` (RabbitMQ
// and ZooKeeper, a paused master): a 409 for an insert after the user's acknowledged delete.
func TestDeposedMasterRefusesNothingFromStaleState(t *testing.T) {
	d := newDeployment(t)
	m := d.startMaster("w1")
	d.mustWrite(insertUser("a"))
	d.appendUsers("usurper") // a newer master's entry, which w1 has not seen
	r, err := d.write(insertUser("a"))
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	if r.Kind != rideshare.KindRetry {
		t.Fatalf("deposed master answered %+v, want kind %s (the orchestrator resends to the new master)", r, rideshare.KindRetry)
	}
	if err := m.wait(t); !errors.Is(err, worker.ErrSteppedDown) {
		t.Fatalf("Run after its refusal was not confirmed: %v, want ErrSteppedDown", err)
	}
}

// A refusal says which state refused it, so that the orchestrator's later strong reads wait
// for that state (a refusal shows "present" as a read would).
func TestRefusalCarriesItsSequence(t *testing.T) {
	d := newDeployment(t)
	d.startMaster("w1")
	ok := d.mustWrite(insertUser("a"))
	r, err := d.write(insertUser("a"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != rideshare.KindConstraint || r.Seq != ok.Seq {
		t.Fatalf("duplicate answered %+v, want kind %s at seq %d", r, rideshare.KindConstraint, ok.Seq)
	}
}

// A master whose coordination session ends stops taking writes and exits.
func TestMasterStopsWhenSessionLost(t *testing.T) {
	d := newDeployment(t)
	m := d.startMaster("w1")
	m.sess.Expire()
	if err := m.wait(t); !errors.Is(err, worker.ErrSteppedDown) {
		t.Fatalf("Run after its session was lost: %v, want ErrSteppedDown", err)
	}
	if _, err := d.write(insertUser("a")); !errors.Is(err, broker.ErrNoConsumer) {
		t.Fatalf("write after the master exited: %v, want ErrNoConsumer", err)
	}
}

// A slave whose coordination session ends exits too: the orchestrator no longer sees it.
func TestSlaveStopsWhenSessionLost(t *testing.T) {
	d := newDeployment(t)
	s := d.start("w1")
	d.awaitReady("w1")
	s.sess.Expire()
	if err := s.wait(t); !errors.Is(err, worker.ErrSteppedDown) {
		t.Fatalf("Run after its session was lost: %v, want ErrSteppedDown", err)
	}
}

// Run returns only after what it started has ended: stopped under a write load, every
// acknowledged write is in the store and the log, and the store is exactly the log (no group
// left half done), so the caller may close the store at once.
func TestRunEndsWithNothingHalfDone(t *testing.T) {
	d := newDeployment(t)
	m := d.start("w1")
	d.awaitReady("w1")
	d.promote("w1")
	acked := make(chan uint64, 1000)
	writers := make(chan struct{})
	for c := range 8 {
		go func() {
			defer func() { writers <- struct{}{} }()
			for i := 0; ; i++ {
				r, err := d.write(insertUser(fmt.Sprintf("c%d-%d", c, i)))
				if err != nil || r.Result == nil {
					return
				}
				acked <- r.Result.Seq
				if len(acked) > 100 {
					return
				}
			}
		}()
	}
	await(t, "some writes acknowledged", func() bool { return len(acked) >= 50 })
	m.stop()
	if err := m.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	applied := m.st.Applied()
	for range 8 {
		<-writers
	}
	close(acked)
	last, err := d.log.Last(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if applied != last {
		t.Fatalf("store at %d after Run returned, log at %d", applied, last)
	}
	if got := m.st.Applied(); got != applied {
		t.Fatalf("store moved from %d to %d after Run returned", applied, got)
	}
	for seq := range acked {
		if seq > last {
			t.Fatalf("write acknowledged at %d, past the log's end %d", seq, last)
		}
	}
}

var _ worker.Log = (*synclog.Log)(nil)
