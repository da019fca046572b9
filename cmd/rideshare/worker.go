package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/coord/kvcoord"
	"github.com/rideshare/rideshare/broker/coord/zkcoord"
	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/worker"
	"github.com/rideshare/rideshare/worker/snapshot"
	"github.com/rideshare/rideshare/worker/store"
)

type coordFlags struct {
	zk             string
	zkRoot         string
	sessionTimeout time.Duration
}

// open returns the ZooKeeper coordinator if --zk is set, else the embedded one on nc's
// server.
func (c coordFlags) open(ctx context.Context, nc *nats.Conn, logger *slog.Logger) (coord.Coordinator, error) {
	if c.zk != "" {
		z := zkcoord.New(strings.Split(c.zk, ","), c.zkRoot)
		z.SessionTimeout = c.sessionTimeout
		z.Logger = logger
		if err := z.Open(ctx); err != nil {
			return nil, fmt.Errorf("zookeeper %s: %w", c.zk, err)
		}
		return z, nil
	}
	k := kvcoord.New(nc)
	k.Logger = logger
	k.TTL = c.sessionTimeout
	if err := k.Open(ctx); err != nil {
		return nil, fmt.Errorf("embedded coordinator: %w", err)
	}
	return k, nil
}

func cmdWorker(ctx context.Context, args []string) error {
	fs := newFlags("worker", "One database worker: a slave that can be promoted to master. The orchestrator starts it.")
	id := fs.String("id", "", "worker ID (unique)")
	data := fs.String("data", "", "directory for this worker's SQLite file")
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "the orchestrator's NATS server (sync log; queues unless --amqp)")
	amqpURL := fs.String("amqp", "", "RabbitMQ URL for the four queues; empty: NATS")
	var cf coordFlags
	fs.StringVar(&cf.zk, "zk", "", "ZooKeeper servers host:port,…; empty: the embedded coordinator")
	fs.StringVar(&cf.zkRoot, "zk-root", "/rideshare", "ZooKeeper root path")
	fs.DurationVar(&cf.sessionTimeout, "session-timeout", 3*time.Second, "coordination session timeout (failure detection)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	snapshotEvery := fs.Uint64("snapshot-every", worker.DefaultSnapshotEvery, "log entries a slave applies between two snapshots of its database (new workers start from the newest); 0: take none")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *id == "" || *data == "" {
		return errors.New("--id and --data are required")
	}
	logger, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	logger = logger.With("worker", *id)
	if err := os.MkdirAll(*data, 0o755); err != nil {
		return err
	}
	exitWithParent(ctx)

	nc, err := natsq.Connect(*natsURL, "worker-"+*id, nil, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	log, err := synclog.Open(ctx, nc, false)
	if err != nil {
		return err
	}
	c, err := cf.open(ctx, nc, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	dbPath := filepath.Join(*data, "db.sqlite")
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
	if *amqpURL != "" {
		ab, err := openAMQP(ctx, *amqpURL, "worker-"+*id, nil, logger)
		if err != nil {
			return err
		}
		defer ab.Close()
		b = ab
	}
	w := worker.New(*id, st, b, log, c)
	w.Logger = logger
	w.Snapshots, w.SnapshotEvery = snaps, *snapshotEvery
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
