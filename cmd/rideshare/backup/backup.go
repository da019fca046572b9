// Package backup is `rideshare backup` and `rideshare restore`: save a consistent copy of a
// running deployment's database, and start a new deployment from one.
//
// A backup is the SQLite file a slave copies at a known sequence (GET /api/v1/db/backup).
// Restoring does not replay anything: it makes a new data directory whose sync log is empty
// but numbered to continue after the backup's sequence, and whose snapshot store holds the
// backup as the newest snapshot. Every worker of the new deployment starts from that snapshot,
// as new workers always do, and the first master's fenced append follows the backup's last
// entry, so sequences stay unique across the restore.
package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/orchestrator/client"
	"github.com/rideshare/rideshare/worker/snapshot"
	"github.com/rideshare/rideshare/worker/store"
)

// NATSDir is where a deployment's data directory keeps its JetStream files (the sync log and
// the snapshot store); `rideshare up` and `rideshare orchestrator` use the same.
const NATSDir = "nats"

// Save writes a backup of the deployment behind c to path and returns its sequence. The file
// is checked as restore would check it, so a backup that saves is one that restores.
func Save(ctx context.Context, c *client.Client, path string) (uint64, error) {
	seq, err := c.Backup(ctx, path)
	if err != nil {
		return 0, err
	}
	got, err := store.CheckCopy(ctx, path)
	if err != nil {
		os.Remove(path)
		return 0, fmt.Errorf("the orchestrator sent a bad copy: %w", err)
	}
	if got != seq {
		os.Remove(path)
		return 0, fmt.Errorf("the orchestrator said the copy holds %d, the file holds %d", seq, got)
	}
	return seq, nil
}

// ErrNotEmpty means restore was pointed at a data directory that already holds a deployment.
var ErrNotEmpty = errors.New("data directory already holds a deployment")

// Restore makes dataDir a new deployment's data directory holding the backup at file, and
// returns the backup's sequence. The file must be a whole RideShare database
// (store.CheckCopy); dataDir must be new or empty, so that nothing is ever overwritten.
func Restore(ctx context.Context, file, dataDir string, logger *slog.Logger) (uint64, error) {
	seq, err := store.CheckCopy(ctx, file)
	if err != nil {
		return 0, fmt.Errorf("refusing %s: %w", file, err)
	}
	if entries, err := os.ReadDir(dataDir); err == nil && len(entries) > 0 {
		return 0, fmt.Errorf("%w: %s is not empty; restore into a new directory", ErrNotEmpty, dataDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok { // leave no half-made deployment behind to be started by mistake
			os.RemoveAll(filepath.Join(dataDir, NATSDir))
		}
	}()
	srv := &natsq.Server{StoreDir: filepath.Join(dataDir, NATSDir), Port: -1}
	if err := srv.Open(); err != nil {
		return 0, err
	}
	defer srv.Close()
	nc, err := natsq.Connect("", "rideshare-restore", srv.InProcess(), logger)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	if _, err := synclog.Create(ctx, nc, seq); err != nil {
		return 0, err
	}
	snaps, err := snapshot.Open(ctx, nc, true)
	if err != nil {
		return 0, err
	}
	if err := snaps.Put(ctx, file, seq); err != nil {
		return 0, err
	}
	if err := nc.Flush(); err != nil {
		return 0, err
	}
	ok = true
	logger.Info("restored backup", "file", file, "seq", seq, "data", dataDir)
	return seq, nil
}
