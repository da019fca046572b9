package system

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/cmd/rideshare/internal/flagenv"
	"github.com/rideshare/rideshare/worker"
	"github.com/rideshare/rideshare/worker/snapshot"
	"github.com/rideshare/rideshare/worker/store"
)

// FailpointsEnv names the bugs a worker plants in itself (worker.ParseFailpoints): only the
// chaos tests set it, to show their checker catches them.
const FailpointsEnv = "RIDESHARE_FAILPOINTS"

// OutliveParentEnv, set, tells a worker to outlive the node that started it: one of several
// orchestrator nodes on a machine, any of which supervises it.
const OutliveParentEnv = "RIDESHARE_WORKER_OUTLIVES_NODE"

// NATSTokenEnv holds the token of the orchestrator's NATS server: set by the orchestrator for
// its workers, or by an operator who gives the deployment its own (rideshare up/orchestrator).
// It is read from the environment only: a flag would show it to anyone running ps.
const NATSTokenEnv = "RIDESHARE_NATS_TOKEN"

// NATSTokenFile is where a deployment keeps its generated NATS token, in its data directory.
const NATSTokenFile = "nats-token"

// WorkerConfig is one worker's: what the orchestrator passes it (WorkerArgs).
type WorkerConfig struct {
	ID, Data       string
	NATS, AMQP     string
	ZK, ZKRoot     string
	SessionTimeout time.Duration
	LogLevel       string
	SnapshotEvery  uint64
	// NATSToken is presented to the NATS server (from NATSTokenEnv, not a flag).
	NATSToken string
}

// WorkerFlags registers the worker's flags on fs, filling c.
func WorkerFlags(fs *flag.FlagSet, c *WorkerConfig) {
	fs.StringVar(&c.ID, "id", "", "worker ID (unique)")
	fs.StringVar(&c.Data, "data", "", "directory for this worker's SQLite file")
	fs.StringVar(&c.NATS, "nats", "nats://127.0.0.1:4222", "the orchestrator's NATS server (sync log; queues unless --amqp)")
	fs.StringVar(&c.AMQP, "amqp", "", "RabbitMQ URL for the four queues; empty: NATS")
	fs.StringVar(&c.ZK, "zk", "", "ZooKeeper servers host:port,…; empty: the embedded coordinator")
	fs.StringVar(&c.ZKRoot, "zk-root", "/rideshare", "ZooKeeper root path")
	fs.DurationVar(&c.SessionTimeout, "session-timeout", 3*time.Second, "coordination session timeout (failure detection)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.Uint64Var(&c.SnapshotEvery, "snapshot-every", worker.DefaultSnapshotEvery, "log entries a slave applies between two snapshots of its database (new workers start from the newest); 0: take none")
}

// WorkerMain is `rideshare worker ARGS`: it parses args (WorkerFlags) and runs the worker
// until ctx ends or the worker fails.
func WorkerMain(ctx context.Context, args []string) error {
	var c WorkerConfig
	fs := flagenv.New("worker", "One database worker: a slave that can be promoted to master. The orchestrator starts it.")
	WorkerFlags(fs, &c)
	if err := flagenv.Parse(fs, args); err != nil {
		return err
	}
	logger, err := flagenv.Logger(c.LogLevel)
	if err != nil {
		return err
	}
	c.NATSToken = os.Getenv(NATSTokenEnv)
	if os.Getenv(OutliveParentEnv) == "" {
		exitWithParent(ctx)
	}
	return RunWorker(ctx, c, logger)
}

// RunWorker runs one worker: it restores the newest snapshot (if any), opens its SQLite copy,
// and serves as slave or master until ctx ends.
func RunWorker(ctx context.Context, c WorkerConfig, logger *slog.Logger) error {
	if c.ID == "" || c.Data == "" {
		return errors.New("--id and --data are required")
	}
	base := logger // the worker adds its own id (worker.Run)
	logger = logger.With("worker", c.ID)
	if err := os.MkdirAll(c.Data, 0o755); err != nil {
		return err
	}
	nc, err := natsq.Connect(c.NATS, "worker-"+c.ID, nil, logger, nats.Token(c.NATSToken))
	if err != nil {
		return err
	}
	defer nc.Close()
	var log *synclog.Log
	if err := untilAnswered(ctx, logger, "sync log", 5*time.Second, func(ctx context.Context) (err error) {
		log, err = synclog.Open(ctx, nc, false)
		return err
	}); err != nil {
		return err
	}
	var coordinator coord.Coordinator
	// Each try is bounded by the coordinator itself (ZooKeeper's connection by its own
	// timeouts, JetStream's requests by the client's 5 s), not by a deadline of ours.
	if err := untilAnswered(ctx, logger, "coordinator", 0, func(ctx context.Context) (err error) {
		coordinator, err = openCoordinator(ctx, Config{ZK: c.ZK, ZKRoot: c.ZKRoot, SessionTimeout: c.SessionTimeout, bindCoordinator: true}, nc, logger)
		return err
	}); err != nil {
		return err
	}
	defer coordinator.Close()
	dbPath := filepath.Join(c.Data, "db.sqlite")
	// Without snapshots (an orchestrator too old to keep them, a failed download) the worker
	// still starts: it replays the whole log instead, slower but the same data.
	snaps, err := snapshot.Open(ctx, nc, false)
	if err != nil {
		logger.Warn("no snapshots: replaying the whole log", "err", err)
		snaps = nil
	} else if _, err := worker.Restore(ctx, snaps, dbPath, logger); err != nil {
		logger.Warn("snapshot not restored: replaying the whole log", "err", err)
	}
	st := store.New(dbPath)
	if err := st.Open(ctx); err != nil {
		return err
	}
	defer st.Close()
	var b broker.Broker = natsq.FromConn(nc, logger)
	if c.AMQP != "" {
		ab, err := openAMQP(ctx, c.AMQP, "worker-"+c.ID, nil, logger)
		if err != nil {
			return err
		}
		defer ab.Close()
		b = ab
	}
	w := worker.New(c.ID, st, b, log, coordinator)
	w.Logger = base
	if fp := os.Getenv(FailpointsEnv); fp != "" {
		if w.Failpoints, err = worker.ParseFailpoints(fp); err != nil {
			return err
		}
		logger.Warn("failpoints set: this worker is broken on purpose", "failpoints", fp)
	}
	w.Snapshots, w.SnapshotEvery = snaps, c.SnapshotEvery
	return w.Run(ctx)
}

// exitWithParent ends this process if its parent dies. Pdeathsig covers the process runtime;
// this covers the window before it was set and a parent that re-parented us.
func exitWithParent(ctx context.Context) {
	parent := os.Getppid()
	if parent == 1 {
		return // in a container, or started by init: no parent to follow
	}
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if os.Getppid() != parent {
					fmt.Fprintln(os.Stderr, "rideshare worker: parent exited; stopping")
					os.Exit(1)
				}
			}
		}
	}()
}

// WorkerStartPatience is how long a starting worker tries to open the sync log and its
// coordination session before it gives up and exits.
const WorkerStartPatience = time.Minute

// untilAnswered runs f, each try bounded by try (0: by f itself), until it succeeds or
// WorkerStartPatience has passed, pausing 250 ms after the first failure and twice as long
// after each next one (up to 2 s). A JetStream cluster refuses requests for seconds while it elects a leader ("JetStream
// system temporarily unavailable" after a partition healed): a worker that exited at once was
// replaced at once, and a supervisor started fifteen workers in two seconds that way.
func untilAnswered(ctx context.Context, logger *slog.Logger, what string, try time.Duration, f func(context.Context) error) error {
	deadline := time.Now().Add(WorkerStartPatience)
	pause := 250 * time.Millisecond
	for {
		tctx, cancel := ctx, context.CancelFunc(func() {})
		if try > 0 {
			tctx, cancel = context.WithTimeout(ctx, try)
		}
		err := f(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		logger.Warn("starting: "+what+" not answering; trying again", "err", err, "in", pause)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}
