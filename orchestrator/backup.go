package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/broker"
)

// BackupTimeout bounds how long a slave may take to copy the database for a backup: a copy
// of a large database takes far longer than a read.
const BackupTimeout = 5 * time.Minute

// SnapshotSource is where slaves store copies of the database (worker/snapshot's Store): the
// newest copy, the sequence it holds and its size. The orchestrator only streams what a slave
// stored; it never reads a worker's files.
type SnapshotSource interface {
	Newest(ctx context.Context) (io.ReadCloser, uint64, int64, error)
}

// ErrNoSnapshots means the orchestrator was started without a snapshot store.
var ErrNoSnapshots = errors.New("this orchestrator has no snapshot store: backups are off")

// Backup asks a slave for a consistent copy of the database holding every write acknowledged
// before now, and opens it: the reader (the caller closes it), the sequence it holds (at
// least the last acknowledged write's) and its size in bytes.
func (o *Orchestrator) Backup(ctx context.Context) (io.ReadCloser, uint64, int64, error) {
	if o.Snapshots == nil {
		return nil, 0, 0, fail(http.StatusServiceUnavailable, "%v", ErrNoSnapshots)
	}
	want := o.lastAck.Load()
	body, err := json.Marshal(rideshare.Read{Backup: true, MinSeq: want})
	if err != nil {
		return nil, 0, 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, BackupTimeout)
	defer cancel()
	var reply rideshare.ReadReply
	if err := o.call(cctx, broker.ReadQ, body, BackupTimeout, &reply, func() bool { return reply.Kind == rideshare.KindRetry }); err != nil {
		return nil, 0, 0, err
	}
	if reply.Kind != "" {
		return nil, 0, 0, rideshare.ErrorOfKind(reply.Kind, reply.Error)
	}
	// The copy streams under the caller's context, not the slave's timeout: it is read after
	// this returns.
	rc, seq, size, err := o.Snapshots.Newest(ctx)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("open the slave's copy: %w", err)
	}
	if seq < reply.Seq || seq < want {
		// The store keeps the newest copy, so this cannot happen unless it was replaced by
		// an older one: refuse rather than hand out a backup missing acknowledged writes.
		rc.Close()
		return nil, 0, 0, fmt.Errorf("newest snapshot holds %d, the backup needs %d", seq, max(reply.Seq, want))
	}
	return rc, seq, size, nil
}

// BackupSeqHeader carries the sequence a backup holds.
const BackupSeqHeader = "X-Rideshare-Seq"

// handleBackup streams a backup: a SQLite file, its sequence in BackupSeqHeader. An error
// after the first byte cannot change the status, so the body is cut short instead; its
// Content-Length lets the client tell.
func (o *Orchestrator) handleBackup(w http.ResponseWriter, r *http.Request) {
	// The server's write timeout is sized for API answers, not for copying a database.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(2 * BackupTimeout))
	rc, seq, size, err := o.Backup(r.Context())
	if err != nil {
		o.respond(w, r, nil, err)
		return
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", "application/vnd.sqlite3")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="rideshare-%d.sqlite"`, seq))
	h.Set(BackupSeqHeader, strconv.FormatUint(seq, 10))
	w.WriteHeader(http.StatusOK)
	if n, err := io.Copy(w, rc); err != nil {
		o.Logger.Error("backup cut short", "seq", seq, "sent", n, "size", size, "err", err)
		return
	}
	o.Logger.Info("backup sent", "seq", seq, "bytes", size)
}
