// Package worker is a database worker: one code path that runs as a slave (applies the sync
// log, answers reads) and can be promoted to master (applies writes, appends them to the log).
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/worker/snapshot"
	"github.com/rideshare/rideshare/worker/store"
)

// ErrSteppedDown means this worker lost the master role (fenced by the log or its
// coordination session ended). The process exits; the orchestrator replaces it.
var ErrSteppedDown = errors.New("stepped down")

// Log is the part of the sync log a worker uses: *synclog.Log, or an in-memory log in tests.
type Log interface {
	// Append adds data after expectLast, failing with synclog.ErrFenced if the log has moved
	// past it (another master appended).
	Append(ctx context.Context, expectLast uint64, data []byte) (uint64, error)
	Last(ctx context.Context) (uint64, error)
	// Confirmed is Last as the log's leader knows it while it still leads (synclog.Log.Confirmed):
	// what a refusal is checked against.
	Confirmed(ctx context.Context) (uint64, error)
	Read(ctx context.Context, from, to uint64, batch int, fn func([]synclog.Msg) error) error
}

// Worker is one database worker.
type Worker struct {
	ID     string
	Store  *store.Store
	Broker broker.Broker
	Log    Log
	Coord  coord.Coordinator
	Logger *slog.Logger
	// ReadWait bounds how long a read waits for this slave to apply the read's min_seq.
	ReadWait time.Duration
	// ReadConcurrency is how many reads run at once.
	ReadConcurrency int
	// CatchUpBatch is how many log entries are applied per transaction while catching up.
	CatchUpBatch int
	// WriteConcurrency is how many writes the master takes from writeQ at once; those
	// waiting together are committed together (one transaction, one log append).
	WriteConcurrency int
	// MaxGroup bounds the writes committed together.
	MaxGroup int
	// PollEvery is how often a slave reads the log for anything syncQ missed (syncQ is best
	// effort), and how often any worker publishes its applied sequence.
	PollEvery time.Duration
	// Snapshots, if set, is where a slave stores a copy of its database every SnapshotEvery
	// applied entries, for new workers to start from (see Restore).
	Snapshots     *snapshot.Store
	SnapshotEvery uint64
	// Failpoints break this worker on purpose (zero: none), so that `rideshare chaos` can show
	// its checker catches what they break.
	Failpoints Failpoints

	snapshotting sync.Mutex // held while a snapshot is taken
	lastSnapshot uint64     // sequence of the newest snapshot known; under snapshotting

	entries chan store.Entry // from syncQ
	pull    chan struct{}    // a read found a gap: catch up from the log now
	fenced  chan error
	writes  chan writeReq // master: writes waiting for the committer

	mu       sync.Mutex
	progress chan struct{} // closed and replaced whenever the applied sequence moves
	role     string
	ready    bool
}

// New returns a worker with default settings.
func New(id string, st *store.Store, b broker.Broker, log Log, c coord.Coordinator) *Worker {
	return &Worker{
		ID: id, Store: st, Broker: b, Log: log, Coord: c, Logger: slog.Default(),
		ReadWait: 3 * time.Second, ReadConcurrency: 8, CatchUpBatch: 2000,
		WriteConcurrency: 64, MaxGroup: 256, PollEvery: time.Second, SnapshotEvery: DefaultSnapshotEvery,
	}
}

// Run serves until ctx ends (nil) or the worker must exit (an error). A worker has two roles,
// in the shape of litefs's lease monitor: it starts as a slave (runAsSlave) and, once
// designated and holding the master lock, becomes the master (runAsMaster) until it loses
// the role; a master never goes back to being a slave: it exits and is replaced. Each role
// owns its goroutines under a context that ends with the role, so Run returns only after
// everything it started has ended, and the caller may close the store at once: no group
// commit is left half done.
func (w *Worker) Run(ctx context.Context) error {
	w.Logger = w.Logger.With("component", "worker", "worker", w.ID)
	w.entries = make(chan store.Entry, 1<<16)
	w.pull = make(chan struct{}, 1)
	w.fenced = make(chan error, 1)
	w.progress = make(chan struct{})
	w.role = coord.RoleSlave

	if err := w.Coord.Join(ctx, w.member()); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	promoted, err := w.runAsSlave(ctx)
	if err != nil || !promoted {
		return err
	}
	return w.runAsMaster(ctx)
}

// runAsSlave is the slave role: it applies syncQ and the log, answers reads and takes
// snapshots until ctx ends (false), this worker took the master lock (true) or it must exit
// (an error). What it started (its subscriptions, a snapshot upload) has ended when it
// returns, so a promoted worker answers no read while it becomes master.
func (w *Worker) runAsSlave(ctx context.Context) (promoted bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	var g errgroup.Group
	defer g.Wait() // runs after cancel: deferred calls run last first
	defer cancel()

	// Subscribe before catching up, so nothing committed meanwhile is missed: entries that
	// arrive while the log is replayed wait in the channel and are skipped if already applied.
	syncSub, err := w.Broker.SubscribeSync(ctx, w.onSync)
	if err != nil {
		return false, err
	}
	defer syncSub.Stop()
	if err := w.catchUp(ctx, 0); err != nil {
		return false, fmt.Errorf("catch up: %w", err)
	}
	readSub, err := w.Broker.Consume(ctx, broker.ReadQ, w.ReadConcurrency, w.handleRead)
	if err != nil {
		return false, err
	}
	defer readSub.Stop()
	// Watch before saying ready: the orchestrator may designate this worker as soon as it is
	// listed ready, and a designation made before the watch was set would wait for the next
	// tick (an hour in the unit tests, which is how it was found).
	watch, err := w.Coord.Watch(ctx)
	if err != nil {
		return false, err
	}
	w.setReady(true)
	if err := w.publish(ctx); err != nil {
		return false, err
	}
	w.Logger.Info("slave ready", "applied_seq", w.Store.Applied())
	// The coordinator is talked to beside this loop, never on it: the loop applies what
	// strong reads wait for, and a coordinator call can hang for seconds (in a cluster, while
	// the coordination bucket elects a new leader; each failed state update took 0.5 s).
	publish := make(chan struct{}, 1)
	promote := make(chan struct{})
	g.Go(func() error { w.coordinateSlave(ctx, watch, publish, promote); return nil })
	tick := time.NewTicker(w.PollEvery)
	defer tick.Stop()
	lastPublished := w.Store.Applied()
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case <-w.Coord.Lost():
			return false, fmt.Errorf("%w: coordination session lost", ErrSteppedDown)
		case <-promote:
			return true, nil
		case e := <-w.entries:
			if err := w.applyFromSync(ctx, e); err != nil {
				if ctx.Err() != nil {
					return false, nil // stopping: not a failure
				}
				return false, err
			}
		case <-w.pull:
			if err := w.catchUp(ctx, 0); err != nil {
				w.Logger.Warn("catch up failed", "err", err)
			}
		case <-tick.C:
			// syncQ is best effort: look at the log for anything missed.
			if err := w.catchUp(ctx, 0); err != nil {
				w.Logger.Warn("catch up failed", "err", err)
			}
			w.maybeSnapshot(ctx, &g)
			if a := w.Store.Applied(); a != lastPublished {
				lastPublished = a
				select {
				case publish <- struct{}{}:
				default: // one is pending: it will publish the latest state
				}
			}
		}
	}
}

// coordinateSlave is the slave's side of the coordinator, beside its apply loop: it takes
// the master lock once designated (looking whenever watch fires, and every PollEvery), then
// closes promoted and returns; and it publishes this worker's state when asked on publish.
func (w *Worker) coordinateSlave(ctx context.Context, watch <-chan struct{}, publish <-chan struct{}, promoted chan<- struct{}) {
	tick := time.NewTicker(w.PollEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-publish:
			if err := w.publish(ctx); err != nil {
				w.Logger.Warn("publish state", "err", err)
			}
			continue
		case _, ok := <-watch:
			if !ok {
				watch = nil // the watch ended (the session is lost: the apply loop returns)
				continue
			}
		case <-tick.C:
		}
		if w.takeMasterLock(ctx) {
			close(promoted)
			return
		}
	}
}

// takeMasterLock reports whether this worker is designated and now holds the master lock.
func (w *Worker) takeMasterLock(ctx context.Context) bool {
	id, err := w.Coord.Designated(ctx)
	if err != nil || id != w.ID {
		return false
	}
	switch err := w.Coord.AcquireMaster(ctx, w.ID); {
	case errors.Is(err, coord.ErrHeld):
		return false
	case err != nil:
		w.Logger.Warn("take master lock", "err", err)
		return false
	}
	return true
}

// runAsMaster is the master role, entered holding the master lock: it reads the log to its
// end, appends a promotion marker (fencing any deposed master) and takes writes until ctx
// ends (nil) or the role is lost (ErrSteppedDown: fenced by the log, or the coordination
// session ended). Its commit loop has ended when it returns.
func (w *Worker) runAsMaster(ctx context.Context) error {
	w.Logger.Info("promoting to master", "applied_seq", w.Store.Applied())
	if err := w.catchUp(ctx, 0); err != nil {
		return fmt.Errorf("promote: catch up: %w", err)
	}
	if _, err := w.Store.Promote(ctx, w.ID, w.appendLog(ctx, nil)); err != nil {
		if errors.Is(err, synclog.ErrFenced) {
			// Someone appended after our catch-up: that master is alive; let it be.
			return fmt.Errorf("%w: %v", ErrSteppedDown, err)
		}
		return fmt.Errorf("promote: %w", err)
	}
	w.mu.Lock()
	w.role = coord.RoleMaster
	w.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	var g errgroup.Group
	defer g.Wait()
	defer cancel()
	w.writes = make(chan writeReq, w.WriteConcurrency)
	g.Go(func() error { w.commitLoop(ctx); return nil })
	// Say so before taking the first write, so that the orchestrator can list this worker as
	// master by the time it acknowledges one.
	if err := w.publish(ctx); err != nil {
		w.Logger.Warn("publish state", "err", err)
	}
	writeSub, err := w.Broker.Consume(ctx, broker.WriteQ, w.WriteConcurrency, w.handleWrite)
	if err != nil {
		return err
	}
	// Stopped first, while the commit loop still runs: writes already taken are answered.
	defer writeSub.Stop()
	w.Logger.Info("master ready", "applied_seq", w.Store.Applied())

	tick := time.NewTicker(w.PollEvery)
	defer tick.Stop()
	lastPublished := w.Store.Applied()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Coord.Lost():
			return fmt.Errorf("%w: coordination session lost", ErrSteppedDown)
		case err := <-w.fenced:
			return err
		case <-tick.C:
			if a := w.Store.Applied(); a != lastPublished {
				lastPublished = a
				if err := w.publish(ctx); err != nil {
					w.Logger.Warn("publish state", "err", err)
				}
			}
		}
	}
}

func (w *Worker) isMaster() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.role == coord.RoleMaster
}

func (w *Worker) setReady(r bool) {
	w.mu.Lock()
	w.ready = r
	w.mu.Unlock()
}

func (w *Worker) member() coord.Member {
	w.mu.Lock()
	defer w.mu.Unlock()
	return coord.Member{ID: w.ID, PID: os.Getpid(), Role: w.role, Applied: w.Store.Applied(), Ready: w.ready}
}

// publish writes this worker's state to the coordinator.
func (w *Worker) publish(ctx context.Context) error { return w.Coord.Update(ctx, w.member()) }

func (w *Worker) onSync(body []byte) {
	var e store.Entry
	if err := decode(body, &e, false); err != nil || e.Seq == 0 {
		w.Logger.Warn("dropped malformed syncQ message", "err", err)
		return
	}
	select {
	case w.entries <- e:
	default:
		// Full: drop it; the gap is filled from the log.
	}
}

// applyFromSync applies e and whatever else is already queued, in one transaction; a gap is
// filled from the log first.
func (w *Worker) applyFromSync(ctx context.Context, e store.Entry) error {
	if d := w.Failpoints.applyDelay(); d > 0 {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
	batch := []store.Entry{e}
	for len(batch) < w.CatchUpBatch {
		select {
		case more := <-w.entries:
			batch = append(batch, more)
			continue
		default:
		}
		break
	}
	err := w.Store.Apply(ctx, batch)
	if errors.Is(err, store.ErrGap) {
		if err := w.catchUp(ctx, batch[len(batch)-1].Seq); err != nil {
			return fmt.Errorf("fill gap: %w", err)
		}
		err = w.Store.Apply(ctx, batch)
	}
	w.notify()
	if errors.Is(err, store.ErrGap) {
		// Entries arrived out of order; the next tick's catch-up settles it.
		return nil
	}
	return err
}

// catchUp applies the log from the applied sequence to `to` (0: the log's current end).
func (w *Worker) catchUp(ctx context.Context, to uint64) error {
	if to == 0 {
		last, err := w.Log.Last(ctx)
		if err != nil {
			return err
		}
		to = last
	}
	from := w.Store.Applied() + 1
	if from > to {
		return nil
	}
	// Two stages, so that fetching and decoding the next batch overlaps applying this one
	// (SQLite takes one core, the rest another).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan []store.Entry) // unbuffered: at most three batches in memory
	read := make(chan error, 1)
	go func() {
		defer close(batches)
		read <- w.Log.Read(ctx, from, to, w.CatchUpBatch, func(msgs []synclog.Msg) error {
			entries := make([]store.Entry, 0, len(msgs))
			for _, m := range msgs {
				var op store.LogOp
				if err := decode(m.Data, &op, false); err != nil {
					return fmt.Errorf("%w: entry %d unreadable: %v", store.ErrDiverged, m.Seq, err)
				}
				entries = append(entries, store.Entry{Seq: m.Seq, Op: op})
			}
			select {
			case batches <- entries:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	for entries := range batches {
		err := w.Store.Apply(ctx, entries)
		w.notify()
		if err != nil {
			cancel()
			for range batches { // let the reader end
			}
			return err
		}
	}
	return <-read
}

// notify wakes reads waiting for the applied sequence to move.
func (w *Worker) notify() {
	w.mu.Lock()
	close(w.progress)
	w.progress = make(chan struct{})
	w.mu.Unlock()
}

// waitApplied waits until the store has applied seq, asking for a catch-up from the log if
// syncQ does not bring it quickly.
func (w *Worker) waitApplied(ctx context.Context, seq uint64) bool {
	deadline := time.NewTimer(w.ReadWait)
	defer deadline.Stop()
	nudge := time.NewTimer(20 * time.Millisecond)
	defer nudge.Stop()
	for {
		w.mu.Lock()
		progress := w.progress
		w.mu.Unlock()
		if w.Store.Applied() >= seq {
			return true
		}
		select {
		case <-progress:
		case <-nudge.C:
			select {
			case w.pull <- struct{}{}:
			default:
			}
			nudge.Reset(200 * time.Millisecond)
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func (w *Worker) handleRead(ctx context.Context, body []byte) []byte {
	var r rideshare.Read
	if err := decode(body, &r, true); err != nil {
		return marshal(rideshare.ReadReply{Error: "malformed read: " + err.Error(), Kind: rideshare.KindInvalid})
	}
	if r.Backup {
		return w.backup(ctx, r.MinSeq)
	}
	if r.Consistency != rideshare.Eventual && r.MinSeq > w.Store.Applied() && !w.Failpoints.StaleReads {
		if !w.waitApplied(ctx, r.MinSeq) {
			return marshal(rideshare.ReadReply{Error: fmt.Sprintf("slave %s has applied %d, behind the read's %d", w.ID, w.Store.Applied(), r.MinSeq), Kind: rideshare.KindRetry})
		}
	}
	seq := w.Store.Applied()
	// The answer is written by hand, rows straight from SQLite into JSON: it is the hot path
	// of every read, and the same bytes as marshal(ReadReply{Rows: …, Seq: seq}).
	out := append(make([]byte, 0, 1024), `{"rows":`...)
	out, err := w.Store.QueryJSON(ctx, r, out)
	if err != nil {
		return marshal(rideshare.ReadReply{Error: err.Error(), Kind: rideshare.KindOf(err)})
	}
	out = append(out, `,"seq":`...)
	out = strconv.AppendUint(out, seq, 10)
	return append(out, '}')
}

// appendLog returns the function Store.Execute calls to make an entry durable; resolved, if
// not nil, receives the entry as logged.
func (w *Worker) appendLog(ctx context.Context, resolved *store.LogOp) func(op store.LogOp) (uint64, error) {
	return func(op store.LogOp) (uint64, error) {
		data, err := json.Marshal(op)
		if err != nil {
			return 0, err
		}
		seq, err := w.Log.Append(ctx, w.Store.Applied(), data)
		if err == nil && resolved != nil {
			*resolved = op
		}
		return seq, err
	}
}

type writeReq struct {
	op    rideshare.Write
	reply chan []byte
}

// handleWrite hands a write to the committer and waits for its answer.
func (w *Worker) handleWrite(ctx context.Context, body []byte) []byte {
	var op rideshare.Write
	if err := decode(body, &op, true); err != nil {
		return marshal(rideshare.WriteReply{Error: "malformed write: " + err.Error(), Kind: rideshare.KindInvalid})
	}
	req := writeReq{op: op, reply: make(chan []byte, 1)}
	select {
	case w.writes <- req:
	case <-ctx.Done():
		return marshal(rideshare.WriteReply{Error: "master " + w.ID + " is stopping", Kind: rideshare.KindRetry})
	}
	select {
	case r := <-req.reply:
		if d := w.Failpoints.AckDelay; d > 0 {
			time.Sleep(d)
		}
		return r
	case <-ctx.Done():
		return marshal(rideshare.WriteReply{Error: "master " + w.ID + " is stopping", Kind: rideshare.KindRetry})
	}
}

// commitLoop is the master's one writer: it takes the writes waiting, commits them as one
// group (one SQLite transaction, one log append), fans the entry out on syncQ and answers
// each write.
func (w *Worker) commitLoop(ctx context.Context) {
	for {
		var batch []writeReq
		select {
		case <-ctx.Done():
			return
		case r := <-w.writes:
			batch = append(batch, r)
		}
		ops := opsIn(batch[0].op)
	more:
		for len(batch) < w.MaxGroup && ops < MaxGroupOps {
			select {
			case r := <-w.writes:
				batch = append(batch, r)
				ops += opsIn(r.op)
			default:
				break more
			}
		}
		w.commitGroup(ctx, batch)
	}
}

// confirmRefusals says whether the refusals among outs (a duplicate username) may be answered
// as such. A refusal is a read of the master's state, and a deposed master that has not yet
// noticed (paused past its session, then resumed) holds a stale state: answering from it would
// tell a client that a user exists after the new master deleted it. A write is fenced by its
// log append; a refusal appends nothing, so it is confirmed instead: by this group's own
// append (the log was at our state when it took it), or else by the log's last sequence still
// being ours, as etcd's ReadIndex confirms a leader's reads. If the log has moved on, this
// master steps down.
func (w *Worker) confirmRefusals(ctx context.Context, outs []store.Outcome, before, seq uint64) error {
	refused := false
	for _, o := range outs {
		refused = refused || errors.Is(o.Err, rideshare.ErrConstraint)
	}
	switch {
	case !refused:
		return nil
	case seq > before:
		return nil // appended after expecting `before` last: the state was the log's
	}
	last, err := w.Log.Confirmed(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("read the log's last sequence: %w", err)
	case last != seq:
		err := fmt.Errorf("%w: the log is at %d, this master at %d", synclog.ErrFenced, last, seq)
		w.stepDown(err)
		return err
	}
	return nil
}

// stepDown ends the master role after err showed that another master took over.
func (w *Worker) stepDown(err error) {
	w.Logger.Error("stepping down", "err", err)
	select {
	case w.fenced <- fmt.Errorf("%w: %v", ErrSteppedDown, err):
	default:
	}
}

// GroupTimeout bounds the commit of one group (its log append and SQLite transaction).
const GroupTimeout = 10 * time.Second

// MaxGroupOps bounds the row operations of one group (one log entry), so that an entry stays
// far below the largest message NATS carries and a catch-up never holds many rows at once:
// 256 batches of 100 inserts would make a 4 MB entry.
const MaxGroupOps = 2000

// opsIn counts the row operations of a write.
func opsIn(w rideshare.Write) int {
	if w.Batch != nil {
		return len(w.Batch)
	}
	return 1
}

func (w *Worker) commitGroup(ctx context.Context, batch []writeReq) {
	// A group once taken is finished even if the role ends meanwhile: cancelled between its
	// log append and its SQLite commit, the entry would be in the log and not in this copy
	// (TestRunEndsWithNothingHalfDone saw it). The bound keeps a stuck append from holding
	// Run's return for long.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), GroupTimeout)
	defer cancel()
	answer := func(r rideshare.WriteReply) {
		for _, b := range batch {
			b.reply <- marshal(r)
		}
	}
	select {
	case <-w.Coord.Lost():
		answer(rideshare.WriteReply{Error: "master " + w.ID + " lost its coordination session", Kind: rideshare.KindRetry})
		return
	default:
	}
	ops := make([]rideshare.Write, len(batch))
	for i, b := range batch {
		ops[i] = b.op
	}
	var entry store.LogOp
	before := w.Store.Applied()
	outs := w.Store.ExecuteGroup(ctx, ops, w.appendLog(ctx, &entry))
	seq := w.Store.Applied()
	if seq > before {
		// Fan out before answering, so slaves usually have it when the next read comes.
		if err := w.Broker.PublishSync(ctx, marshal(store.Entry{Seq: seq, Op: entry})); err != nil {
			w.Logger.Warn("syncQ publish failed; slaves will read the log", "err", err)
		}
		w.notify()
	}
	refusalErr := w.confirmRefusals(ctx, outs, before, seq)
	for i, o := range outs {
		var reply rideshare.WriteReply
		switch err := o.Err; {
		case err == nil:
			res := o.Result
			reply.Result = &res
		case errors.Is(err, synclog.ErrFenced), errors.Is(err, store.ErrDiverged):
			w.stepDown(err)
			reply = rideshare.WriteReply{Error: "master " + w.ID + " stepped down", Kind: rideshare.KindRetry}
		case errors.Is(err, rideshare.ErrConstraint) && refusalErr != nil:
			reply = rideshare.WriteReply{Error: "master " + w.ID + " could not confirm a refusal: " + refusalErr.Error(), Kind: rideshare.KindRetry}
		case errors.Is(err, rideshare.ErrConstraint):
			reply = rideshare.WriteReply{Error: err.Error(), Kind: rideshare.KindOf(err), Seq: seq}
		case errors.Is(err, rideshare.ErrInvalid):
			reply = rideshare.WriteReply{Error: err.Error(), Kind: rideshare.KindOf(err)}
		default:
			w.Logger.Error("write failed", "err", err)
			reply = rideshare.WriteReply{Error: err.Error(), Kind: rideshare.KindUnavailable}
		}
		batch[i].reply <- marshal(reply)
	}
}
