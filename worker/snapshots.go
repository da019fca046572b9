package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/worker/snapshot"
	"github.com/rideshare/rideshare/worker/store"
)

// DefaultSnapshotEvery is how many log entries a slave applies between two snapshots. A new
// worker replays at most about this many entries after restoring the newest snapshot.
const DefaultSnapshotEvery = 100_000

// maybeSnapshot starts taking a snapshot in the background if this slave has applied
// SnapshotEvery entries past the newest one and is the slave chosen to take it (the ready
// slave with the smallest ID, so that a pool of slaves takes one copy, not one each).
// g is the slave role's group: the upload ends with the role.
func (w *Worker) maybeSnapshot(ctx context.Context, g *errgroup.Group) {
	if w.Snapshots == nil || w.SnapshotEvery == 0 || !w.snapshotting.TryLock() {
		return
	}
	applied := w.Store.Applied()
	if applied < w.lastSnapshot+w.SnapshotEvery {
		w.snapshotting.Unlock()
		return
	}
	g.Go(func() error {
		defer w.snapshotting.Unlock()
		if err := w.snapshot(ctx, applied); err != nil && ctx.Err() == nil {
			w.Logger.Warn("snapshot failed", "err", err)
		}
		return nil // a failed snapshot is retried later; it does not end the role
	})
}

// snapshot is maybeSnapshot's work, with the snapshotting lock held.
func (w *Worker) snapshot(ctx context.Context, applied uint64) error {
	latest, err := w.Snapshots.Latest(ctx)
	if err != nil && !errors.Is(err, snapshot.ErrNone) {
		return err
	}
	w.lastSnapshot = max(w.lastSnapshot, latest)
	if applied < w.lastSnapshot+w.SnapshotEvery {
		return nil // another slave took one meanwhile
	}
	members, err := w.Coord.Members(ctx)
	if err != nil {
		return err
	}
	var slaves []string
	for _, m := range members {
		if m.Role == coord.RoleSlave && m.Ready {
			slaves = append(slaves, m.ID)
		}
	}
	if len(slaves) > 0 && slices.Min(slaves) != w.ID {
		return nil
	}
	_, err = w.storeSnapshot(ctx)
	return err
}

// storeSnapshot copies the database and stores the copy as the newest snapshot (unless a newer
// one is there already), returning the sequence the copy holds. The snapshotting lock is held.
func (w *Worker) storeSnapshot(ctx context.Context) (uint64, error) {
	start := time.Now()
	path := filepath.Join(filepath.Dir(w.Store.Path), "snapshot.sqlite")
	defer os.Remove(path)
	seq, err := w.Store.Snapshot(ctx, path)
	if err != nil {
		return 0, err
	}
	if err := w.Snapshots.Put(ctx, path, seq); err != nil {
		return 0, err
	}
	w.lastSnapshot = max(w.lastSnapshot, seq)
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	w.Logger.Info("snapshot stored", "seq", seq, "bytes", size, "took", time.Since(start).Round(time.Millisecond))
	return seq, nil
}

// backup answers the orchestrator's backup request (a read with Backup set): once this slave
// has applied minSeq (every write acknowledged before the request), it stores a snapshot now
// and answers the sequence it holds. The orchestrator then streams the newest snapshot, which
// holds at least that much.
func (w *Worker) backup(ctx context.Context, minSeq uint64) []byte {
	if w.Snapshots == nil {
		return marshal(rideshare.ReadReply{Error: "worker " + w.ID + " has no snapshot store", Kind: rideshare.KindUnavailable})
	}
	if minSeq > w.Store.Applied() && !w.waitApplied(ctx, minSeq) {
		return marshal(rideshare.ReadReply{Error: fmt.Sprintf("slave %s has applied %d, behind the backup's %d", w.ID, w.Store.Applied(), minSeq), Kind: rideshare.KindRetry})
	}
	w.snapshotting.Lock() // after a periodic snapshot in progress
	defer w.snapshotting.Unlock()
	seq, err := w.storeSnapshot(ctx)
	if err != nil {
		w.Logger.Warn("backup failed", "err", err)
		return marshal(rideshare.ReadReply{Error: "backup failed: " + err.Error(), Kind: rideshare.KindUnavailable})
	}
	return marshal(rideshare.ReadReply{Seq: seq})
}

// Restore gives a new worker the newest snapshot as its database file at path, so that it
// replays only the log after it. It does nothing if path already holds a database (a restart
// on the same data) or there is no snapshot yet. It returns the sequence restored (0: none).
func Restore(ctx context.Context, snaps *snapshot.Store, path string, logger *slog.Logger) (uint64, error) {
	if _, err := os.Stat(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	start := time.Now()
	part := path + ".snapshot"
	seq, err := snaps.Fetch(ctx, part)
	if errors.Is(err, snapshot.ErrNone) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	// The object store checked the bytes; check that they are the database they claim to be.
	have, err := store.SnapshotSeq(ctx, part)
	if err == nil && have != seq {
		err = fmt.Errorf("snapshot file holds %d, its metadata says %d", have, seq)
	}
	if err != nil {
		os.Remove(part)
		return 0, err
	}
	if err := os.Rename(part, path); err != nil {
		return 0, err
	}
	logger.Info("restored snapshot", "seq", seq, "took", time.Since(start).Round(time.Millisecond))
	return seq, nil
}
