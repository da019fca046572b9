package system

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/amqpq"
	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/coord/kvcoord"
	"github.com/rideshare/rideshare/broker/coord/zkcoord"
	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/cmd/rideshare/backup"
	"github.com/rideshare/rideshare/metrics"
	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/dockerrt"
	"github.com/rideshare/rideshare/orchestrator/procrt"
	"github.com/rideshare/rideshare/worker/snapshot"
)

// openDatabase starts the database side: the worker runtime, the embedded NATS server with the
// sync log and the snapshots, the coordinator, the orchestrator and its scaler, and serves the
// orchestrator's API.
func (s *System) openDatabase(ctx context.Context, cfg Config, logger *slog.Logger) error {
	syncSetting := cfg.NATSSync
	if syncSetting == "" {
		syncSetting = natsq.DefaultSync
	}
	sync, err := natsq.ParseSync(syncSetting)
	if err != nil {
		return fmt.Errorf("--nats-sync: %w", err)
	}
	lo, url, err := s.listen(cfg.OrchestratorAddr)
	if err != nil {
		return err
	}
	s.OrchestratorURL = url
	workersDir := filepath.Join(cfg.Data, "workers")
	// Worker copies left by a previous run are stale; the sync log is the truth.
	if err := os.RemoveAll(workersDir); err != nil {
		return err
	}

	natsToken := cfg.NATSToken
	if natsToken == "" && cfg.NATS == "" {
		if natsToken, err = natsq.LoadOrCreateToken(filepath.Join(cfg.Data, NATSTokenFile)); err != nil {
			return err
		}
	}
	// Handed to the workers through their environment: a command line shows in ps.
	tokenEnv := NATSTokenEnv + "=" + natsToken
	replicas := cfg.natsReplicas()
	s.natsToken = natsToken

	// The workers' runtime is built first because, with Docker, where the NATS server must
	// listen and what the workers are told depend on where this process runs (Open finds
	// out). Its Close is registered after the NATS server's, so it runs before: workers stop
	// while the broker they drain into is still there.
	var natsURL string // for the workers, known once the NATS server runs
	workerArgs := func(id, dir string) []string { return WorkerArgs(cfg, id, dir, natsURL) }
	var (
		rt     orchestrator.Runtime
		drt    *dockerrt.Runtime
		closeR func() error
	)
	switch cfg.Runtime {
	case "process", "":
		command := cfg.WorkerCommand
		if command == nil {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			command = []string{exe, "worker"}
		}
		s.Runtime = procrt.New(command, workersDir, workerArgs)
		s.Runtime.Env = append(append([]string(nil), cfg.WorkerEnv...), tokenEnv)
		s.Runtime.Logger = logger
		rt, closeR = s.Runtime, s.Runtime.Close
	case "docker":
		drt = cfg.Docker.runtime(workerArgs)
		drt.Env = append(drt.Env, tokenEnv)
		drt.Logger = logger
		drt.LogOutput = os.Stderr // like child processes: the workers' logs with the orchestrator's
		if err := drt.Open(ctx); err != nil {
			return fmt.Errorf("--runtime docker: %w", err)
		}
		logger.Info("workers run as containers", "image", drt.Image, "network", drt.Network, "stack", drt.Stack,
			"keep_workers", drt.KeepWorkers, "in_container", drt.Self() != nil)
		rt, closeR, s.Docker = drt, drt.Close, drt
	default:
		return fmt.Errorf("--runtime %q: use process or docker", cfg.Runtime)
	}
	opened := false
	defer func() {
		if !opened {
			closeR()
		}
	}()

	s.natsURL = cfg.NATS
	if cfg.NATS != "" {
		// An existing JetStream cluster: nothing embedded; its servers' own settings (sync,
		// authorization) apply, and the workers are given the same servers.
		natsURL = cfg.NATS
		if natsToken == "" {
			logger.Warn("--nats without a token ($" + NATSTokenEnv + "): the cluster must authenticate its clients some other way")
		}
	} else {
		host, port, err := cfg.Docker.natsListen(ctx, drt)
		if err != nil {
			return err
		}
		s.NATS = &natsq.Server{StoreDir: filepath.Join(cfg.Data, backup.NATSDir), Host: host, Port: port, Token: natsToken, Sync: sync}
		if err := s.NATS.Open(); err != nil {
			return err
		}
		s.onClose(s.NATS.Close)
		natsURL = cfg.Docker.natsAdvertise(drt, s.NATS.ClientURL())
	}
	nc, err := s.ConnectNATS("orchestrator", logger)
	if err != nil {
		return err
	}
	s.onClose(func() error { nc.Close(); return nil })
	log, err := synclog.Ensure(ctx, nc, replicas)
	if err != nil {
		return err
	}
	snaps, err := snapshot.OpenReplicas(ctx, nc, replicas)
	if err != nil {
		return err
	}
	// The orchestrator's session is renewed when lost (a long ZooKeeper outage): it holds no
	// lock or membership, and must go on supervising once ZooKeeper is back.
	c, err := coord.NewRenewing(ctx, func(ctx context.Context) (coord.Coordinator, error) {
		return openCoordinator(ctx, cfg, nc, logger)
	}, logger)
	if err != nil {
		return err
	}
	s.onClose(c.Close)
	opened = true
	s.onClose(closeR)

	reg := metrics.NewRegistry()
	var b broker.Broker = natsq.FromConn(nc, logger)
	if cfg.AMQP != "" {
		ab, err := openAMQP(ctx, cfg.AMQP, "orchestrator", reg, logger)
		if err != nil {
			return err
		}
		s.onClose(ab.Close)
		b = ab
	}

	o := orchestrator.New(b, c, rt, log)
	o.Logger, o.Registry, o.Slaves, o.URL = logger, reg, cfg.Slaves, s.OrchestratorURL
	o.AdminToken, o.WriteTimeout, o.ReadTimeout = cfg.AdminToken, cfg.WriteTimeout, cfg.ReadTimeout
	o.Snapshots = snaps // backups: streamed from what a slave stored there
	if s.NATS != nil {
		o.NATSServer = natsq.ServerName
	}
	if err := o.Open(ctx); err != nil {
		return err
	}
	s.Orchestrator = o
	s.onClose(o.Close)
	sc := orchestrator.NewScaler(o)
	sc.Interval, sc.Min, sc.Max, sc.Step, sc.PrometheusURL = cfg.ScaleInterval, cfg.MinSlaves, cfg.MaxSlaves, cfg.ScaleStep, cfg.PrometheusURL
	sc.Logger = logger
	if err := sc.Open(ctx); err != nil {
		return err
	}
	s.onClose(sc.Close)
	s.serve(lo, o.Handler(), logger)
	return nil
}

// WorkerArgs are the arguments after "worker" the orchestrator starts worker id with: the
// other end of ParseWorker, kept beside it so that the two cannot drift.
func WorkerArgs(cfg Config, id, dir, natsURL string) []string {
	args := []string{"--id", id, "--data", dir, "--nats", natsURL,
		"--session-timeout", cfg.SessionTimeout.String(), "--log-level", cfg.LogLevel,
		"--snapshot-every", strconv.FormatUint(cfg.SnapshotEvery, 10)}
	if cfg.ZK != "" {
		args = append(args, "--zk", cfg.ZK, "--zk-root", cfg.ZKRoot)
	}
	if cfg.AMQP != "" {
		args = append(args, "--amqp", cfg.AMQP)
	}
	return args
}

// natsReplicas is how many copies JetStream keeps of the sync log, the coordination buckets
// and the snapshots: NATSReplicas if set, else 3 on an existing cluster of three or more
// servers (a majority of three must store an append before it is acknowledged), else 1 (the
// embedded server is alone). The orchestrator creates them; workers only bind.
func (cfg Config) natsReplicas() int {
	switch {
	case cfg.NATSReplicas > 0:
		return cfg.NATSReplicas
	case cfg.NATS != "" && len(strings.Split(cfg.NATS, ",")) >= 3:
		return 3
	}
	return 1
}

// ConnectNATS connects a client to the deployment's NATS: the embedded server in process, or
// the existing cluster of --nats, with the deployment's token.
func (s *System) ConnectNATS(name string, logger *slog.Logger) (*nats.Conn, error) {
	if s.NATS != nil {
		return s.NATS.Connect(name, logger)
	}
	return natsq.Connect(s.natsURL, name, nil, logger, nats.Token(s.natsToken))
}

// openCoordinator returns ZooKeeper's coordinator if cfg.ZK is set, else the embedded one on
// nc's server.
func openCoordinator(ctx context.Context, cfg Config, nc *nats.Conn, logger *slog.Logger) (coord.Coordinator, error) {
	if cfg.ZK != "" {
		z := zkcoord.New(strings.Split(cfg.ZK, ","), cfg.ZKRoot)
		z.SessionTimeout = cfg.SessionTimeout
		z.Logger = logger
		if err := z.Open(ctx); err != nil {
			return nil, fmt.Errorf("zookeeper %s: %w", cfg.ZK, err)
		}
		return z, nil
	}
	k := kvcoord.New(nc)
	k.Logger = logger
	k.TTL = cfg.SessionTimeout
	k.Replicas, k.Bind = cfg.natsReplicas(), cfg.bindCoordinator
	if err := k.Open(ctx); err != nil {
		return nil, fmt.Errorf("embedded coordinator: %w", err)
	}
	return k, nil
}

// openAMQP connects the four queues to RabbitMQ. The orchestrator (name "orchestrator")
// declares its reply queue, responseQ, as soon as it connects; workers never declare one.
// reg receives the broker's metrics (poison messages, reconnects).
func openAMQP(ctx context.Context, url, name string, reg prometheus.Registerer, logger *slog.Logger) (broker.Broker, error) {
	b := amqpq.New(url, name)
	b.Logger, b.Registerer = logger, reg
	b.Caller = name == "orchestrator"
	if err := b.Open(ctx); err != nil {
		return nil, fmt.Errorf("--amqp: %w", err)
	}
	return b, nil
}

// hostPort splits a --nats-listen address; port 0 becomes -1, the NATS server's "any free
// port".
func hostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("--nats-listen %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("--nats-listen %q: bad port", addr)
	}
	if port == 0 {
		port = -1
	}
	return host, port, nil
}
