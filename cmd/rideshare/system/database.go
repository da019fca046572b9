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
	"time"

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
	"github.com/rideshare/rideshare/orchestrator/nodereg"
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
	clustered := cfg.clustered()
	cfg.SessionTimeout = cfg.sessionTimeout()
	workersDir := cfg.WorkersDir
	if workersDir == "" {
		workersDir = filepath.Join(cfg.Data, "workers")
	}
	// Worker copies left by a previous run are stale; the sync log is the truth. In a
	// cluster they belong to workers the other nodes supervise.
	if !clustered {
		if err := os.RemoveAll(workersDir); err != nil {
			return err
		}
	}

	natsToken := cfg.NATSToken
	if natsToken == "" && cfg.NATS == "" {
		tokenFile := filepath.Join(cfg.Data, NATSTokenFile)
		if _, err := os.Stat(tokenFile); cfg.Peers != "" && err != nil {
			// Each node would make its own, and the routes would refuse each other.
			return fmt.Errorf("--peers: every node of a cluster needs the same token: set $%s on each (or copy %s from one node)", NATSTokenEnv, tokenFile)
		}
		if natsToken, err = natsq.LoadOrCreateToken(tokenFile); err != nil {
			return err
		}
	}
	if cfg.Peers != "" && (cfg.NodeName == "" || cfg.ClusterListen == "") {
		return fmt.Errorf("--peers: each node needs its own --name and a --cluster-listen address")
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
		// In a cluster, workers outlive the node that started them: another adopts them.
		s.Runtime.Shared = clustered
		s.Runtime.Env = append(append([]string(nil), cfg.WorkerEnv...), tokenEnv)
		if clustered {
			s.Runtime.Env = append(s.Runtime.Env, OutliveParentEnv+"=1")
		}
		s.Runtime.Logger = logger
		rt, closeR = s.Runtime, s.Runtime.Close
	case "docker":
		drt = cfg.Docker.runtime(workerArgs)
		// In a cluster, a node that stops leaves the workers to the others.
		drt.KeepWorkers = drt.KeepWorkers || clustered
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
		s.NATS = &natsq.Server{StoreDir: filepath.Join(cfg.Data, backup.NATSDir), Host: host, Port: port, Token: natsToken, Sync: sync,
			Name: cfg.NodeName}
		if cfg.Peers != "" {
			s.NATS.Cluster = &natsq.Cluster{Listen: cfg.ClusterListen, Routes: splitList(cfg.Peers), Advertise: cfg.ClusterAdvertise}
		}
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
	// A cluster's JetStream answers once its servers have elected a meta leader, and takes
	// a stream of three replicas once three servers are up: the nodes start in any order.
	var (
		log   *synclog.Log
		snaps *snapshot.Store
		nodes *nodereg.Registry
		c     *coord.Renewing
	)
	err = untilJetStream(ctx, clustered, logger, func(ctx context.Context) (err error) {
		if log, err = synclog.Ensure(ctx, nc, replicas); err != nil {
			return err
		}
		if snaps, err = snapshot.OpenReplicas(ctx, nc, replicas); err != nil {
			return err
		}
		if clustered {
			if nodes, err = nodereg.Open(ctx, nc, replicas); err != nil {
				return err
			}
			if err = ensureSupervision(ctx, cfg, nc, logger); err != nil {
				return err
			}
		}
		// The orchestrator's session is renewed when lost (a long ZooKeeper outage): it
		// holds no lock or membership, and must go on watching once ZooKeeper is back.
		c, err = coord.NewRenewing(ctx, func(ctx context.Context) (coord.Coordinator, error) {
			return openCoordinator(ctx, cfg, nc, logger)
		}, logger)
		return err
	})
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
	if cfg.AdvertiseURL != "" {
		o.URL = cfg.AdvertiseURL
	}
	o.AdminToken, o.WriteTimeout, o.ReadTimeout = cfg.AdminToken, cfg.WriteTimeout, cfg.ReadTimeout
	o.Snapshots = snaps // backups: streamed from what a slave stored there
	if s.NATS != nil {
		o.NATSServer = s.NATS.ServerName()
	}
	if cfg.NodeName != "" {
		o.Name = cfg.NodeName
	}
	if clustered {
		o.SessionTimeout, o.NodeRegistry, o.ReadIndex = cfg.SessionTimeout, nodes, true
		o.Supervision = func(ctx context.Context) (coord.Coordinator, error) {
			return openSupervision(ctx, cfg, nc, logger)
		}
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

// clustered reports whether this node is one of several: its embedded server has peers, or it
// shares an existing JetStream cluster (--nats) that other nodes may use too. Either way the
// nodes elect a supervisor and strong reads ask the log for its head.
func (cfg Config) clustered() bool { return cfg.Peers != "" || cfg.NATS != "" }

// ClusterSessionTimeout is the coordination session timeout of a clustered node when none is
// given. It must outlast a JetStream leader election (4–9 s after a server stops answering):
// while the coordination bucket has no leader no session can be renewed, and with the single
// node's 3 s every worker would lose its session, and stop, whenever that bucket's leader dies.
const ClusterSessionTimeout = 15 * time.Second

// sessionTimeout is SessionTimeout, else 3 s alone and ClusterSessionTimeout in a cluster.
func (cfg Config) sessionTimeout() time.Duration {
	switch {
	case cfg.SessionTimeout > 0:
		return cfg.SessionTimeout
	case cfg.clustered():
		return ClusterSessionTimeout
	}
	return 3 * time.Second
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// clusterSize is how many embedded servers the cluster has: the peers' routes and this
// node's own (listed or not).
func (cfg Config) clusterSize() int {
	n := 1
	for _, r := range splitList(cfg.Peers) {
		if r != cfg.ClusterListen && r != cfg.ClusterAdvertise {
			n++
		}
	}
	return n
}

// untilJetStream runs f until it succeeds, each try bounded, while a cluster forms (at most two
// minutes); alone, f runs once. A try is bounded at a second, or twice the last try's bound
// (up to 5 s) when it failed the same way: when the nodes create the same stream at once, the
// requests after the first are handed to the new stream's leader, which answers none while it
// is being elected, and with 5 s tries each setup step of a three-node start waited one out
// (~40 s to start). The steps are idempotent: a try that timed out is simply made again.
func untilJetStream(ctx context.Context, clustered bool, logger *slog.Logger, f func(context.Context) error) error {
	if !clustered {
		return f(ctx)
	}
	deadline := time.Now().Add(2 * time.Minute)
	try, last := time.Second, ""
	for {
		tctx, cancel := context.WithTimeout(ctx, try)
		err := f(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		if err.Error() == last {
			try = min(2*try, 5*time.Second)
		} else {
			try, last = time.Second, err.Error()
		}
		logger.Info("waiting for the JetStream cluster", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// openSupervision opens a session in which the nodes contend for the supervisor role: a lock
// of its own beside the workers' (ZooKeeper: under <root>/supervisor; embedded: its own bucket).
func openSupervision(ctx context.Context, cfg Config, nc *nats.Conn, logger *slog.Logger) (coord.Coordinator, error) {
	if cfg.ZK != "" {
		z := zkcoord.New(strings.Split(cfg.ZK, ","), strings.TrimRight(cfg.ZKRoot, "/")+"/supervisor")
		z.SessionTimeout, z.Logger = cfg.SessionTimeout, logger
		if err := z.Open(ctx); err != nil {
			return nil, fmt.Errorf("zookeeper %s: %w", cfg.ZK, err)
		}
		return z, nil
	}
	k := supervisionKV(cfg, nc, logger)
	k.Bind = true // ensureSupervision made the buckets
	if err := k.Open(ctx); err != nil {
		return nil, fmt.Errorf("embedded coordinator: %w", err)
	}
	return k, nil
}

func supervisionKV(cfg Config, nc *nats.Conn, logger *slog.Logger) *kvcoord.KV {
	k := kvcoord.New(nc)
	k.Bucket, k.TTL, k.Replicas, k.Logger = SupervisorBucket, cfg.SessionTimeout, cfg.natsReplicas(), logger
	return k
}

// ensureSupervision creates the embedded coordinator's buckets of the supervisor role, once
// at the node's start: the sessions of the election only bind to them (a stream update for
// every new session, from three nodes at once, timed out).
func ensureSupervision(ctx context.Context, cfg Config, nc *nats.Conn, logger *slog.Logger) error {
	if cfg.ZK != "" {
		return nil
	}
	k := supervisionKV(cfg, nc, logger)
	if err := k.Open(ctx); err != nil {
		return fmt.Errorf("supervisor buckets: %w", err)
	}
	return k.Close()
}

// SupervisorBucket is the embedded coordinator's bucket of the supervisor role.
const SupervisorBucket = "rideshare_supervisor"

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
	case cfg.Peers != "" && cfg.clusterSize() >= 3:
		return 3
	}
	return 1
}

// ConnectNATS connects a client to the deployment's NATS: the embedded server in process, or
// the existing cluster of --nats, with the deployment's token.
func (s *System) ConnectNATS(name string, logger *slog.Logger) (*nats.Conn, error) {
	if s.Nodes != nil {
		return natsq.Connect(s.Nodes.NATSURLs(), name, nil, logger, nats.Token(s.Nodes.Token))
	}
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
