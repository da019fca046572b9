package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/cmd/rideshare/backup"
	"github.com/rideshare/rideshare/httpsvc"
	"github.com/rideshare/rideshare/httpsvc/gateway"
	"github.com/rideshare/rideshare/httpsvc/rides"
	"github.com/rideshare/rideshare/httpsvc/users"
	"github.com/rideshare/rideshare/metrics"
	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/client"
	"github.com/rideshare/rideshare/orchestrator/procrt"
	"github.com/rideshare/rideshare/worker"
	"github.com/rideshare/rideshare/worker/snapshot"
)

// upConfig is everything `rideshare up` can be told.
type upConfig struct {
	data                              string
	gatewayAddr, usersAddr, ridesAddr string
	orchestratorAddr                  string
	slaves                            int
	scaleInterval                     time.Duration
	minSlaves                         int
	maxSlaves                         maxSlavesFlag
	scaleStep                         int
	prometheusURL                     string
	amqp                              string
	coord                             coordFlags
	runtime                           string
	docker                            dockerFlags // --runtime docker, --nats-listen/--nats-advertise (docker.go)
	adminToken                        string
	writeTimeout, readTimeout         time.Duration
	logLevel                          string
	snapshotEvery                     uint64
	// workerCommand runs a worker; default: this executable's "worker" subcommand.
	workerCommand []string
	workerEnv     []string
	// httpLimits bound every HTTP server's clients; zero: httpsvc.DefaultLimits (tests shorten them).
	httpLimits httpsvc.Limits
}

// flags are `rideshare up`'s: the three services' and the orchestrator's addresses, then the
// database's (databaseFlags).
func (c *upConfig) flags(name string) *flag.FlagSet {
	fs := newFlags(name, "Runs everything on one machine: gateway, users, rides, the orchestrator with an embedded NATS JetStream\n(all four queues and the sync log), and 1 master + --slaves slave workers as child processes.\nPrints one line when the system is ready. SIGINT/SIGTERM stop everything.")
	fs.StringVar(&c.gatewayAddr, "gateway", "127.0.0.1:8080", "gateway (load balancer) listen address")
	fs.StringVar(&c.usersAddr, "users", "127.0.0.1:8081", "users service listen address")
	fs.StringVar(&c.ridesAddr, "rides", "127.0.0.1:8082", "rides service listen address")
	fs.StringVar(&c.orchestratorAddr, "orchestrator", "127.0.0.1:8083", "orchestrator (DBaaS API) listen address")
	c.databaseFlags(fs)
	return fs
}

// databaseFlags are the database side's, shared by `up` and `orchestrator`.
func (c *upConfig) databaseFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.data, "data", "./data", "data directory (sync log, worker databases)")
	fs.IntVar(&c.slaves, "slaves", 1, "slave workers to run beside the master")
	fs.DurationVar(&c.scaleInterval, "scale-interval", 2*time.Minute, "autoscaling interval: every interval the slaves are set to max(min-slaves, ceil(db reads/20))")
	fs.IntVar(&c.minSlaves, "min-slaves", 1, "fewest slaves the scaler keeps")
	c.maxSlaves = orchestrator.AutoMax
	fs.Var(&c.maxSlaves, "max-slaves", "most slaves the scaler asks for; auto: sized from the machine (4 workers a CPU, 256 MiB of memory a worker, less the master); 0: no limit but the memory free at each scale-out")
	fs.IntVar(&c.scaleStep, "scale-step", orchestrator.DefaultStep, "most slaves one scaling decision adds (scale-in is not limited); 0: no limit")
	fs.StringVar(&c.prometheusURL, "prometheus-url", "", "Prometheus server that scrapes every orchestrator (e.g. http://prometheus:9090): the scaler counts db reads there, falling back to this orchestrator's counter; empty: this orchestrator's counter")
	fs.StringVar(&c.amqp, "amqp", "", "RabbitMQ URL for the four queues (e.g. amqp://guest:guest@127.0.0.1:5672/); empty: embedded NATS")
	fs.StringVar(&c.coord.zk, "zk", "", "ZooKeeper servers host:port,…; empty: the embedded coordinator")
	fs.StringVar(&c.coord.zkRoot, "zk-root", "/rideshare", "ZooKeeper root path")
	fs.DurationVar(&c.coord.sessionTimeout, "session-timeout", 3*time.Second, "coordination session timeout (how fast a dead worker is noticed)")
	fs.StringVar(&c.runtime, "runtime", "process", "worker runtime: process (child processes) or docker (containers of the rideshare image)")
	fs.StringVar(&c.adminToken, "admin-token", "", "if set, required as 'Authorization: Bearer <token>' on the database and crash APIs")
	fs.DurationVar(&c.writeTimeout, "write-timeout", 10*time.Second, "how long a write waits for a master (failovers included)")
	fs.DurationVar(&c.readTimeout, "read-timeout", 10*time.Second, "how long a read waits for a slave")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Uint64Var(&c.snapshotEvery, "snapshot-every", worker.DefaultSnapshotEvery, "log entries a slave applies between two snapshots of the database, kept beside the sync log; a new worker restores the newest and replays the rest; 0: take none")
	c.docker.register(fs)
}

func cmdUp(ctx context.Context, args []string) error {
	var cfg upConfig
	fs := cfg.flags("up")
	if err := parse(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(cfg.logLevel)
	if err != nil {
		return err
	}
	st, err := startStack(ctx, cfg, logger)
	if err != nil {
		return err
	}
	fmt.Printf("rideshare is up: %s (users %s, rides %s, orchestrator %s, data %s)\n",
		st.GatewayURL, st.UsersURL, st.RidesURL, st.OrchestratorURL, cfg.data)
	<-ctx.Done()
	logger.Info("shutting down")
	return st.Close()
}

// stack is a running `rideshare up`.
type stack struct {
	GatewayURL, UsersURL, RidesURL, OrchestratorURL string
	Orchestrator                                    *orchestrator.Orchestrator
	Runtime                                         *procrt.Runtime
	NATS                                            *natsq.Server

	limits  httpsvc.Limits // of every HTTP server; zero: httpsvc.DefaultLimits
	closers []func() error // run in reverse order by Close
}

func (s *stack) onClose(f func() error) { s.closers = append(s.closers, f) }

// Close stops everything in the reverse order of start.
func (s *stack) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// closer closes l unless the HTTP server already did.
func closer(l net.Listener) func() error {
	return func() error {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
}

func listen(addr string) (net.Listener, string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l, "http://" + l.Addr().String(), nil
}

func (s *stack) serve(l net.Listener, h http.Handler, logger *slog.Logger) {
	srv := httpsvc.NewServer(h, s.limits)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server stopped", "addr", l.Addr().String(), "err", err)
		}
	}()
	s.onClose(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			// Connections opened but never used (a client's spare pool) count as active
			// for a while; nothing is in flight on them, so close them.
			return srv.Close()
		}
		return nil
	})
}

// startStack starts every component of `rideshare up` and waits until the database is ready.
func startStack(ctx context.Context, cfg upConfig, logger *slog.Logger) (_ *stack, err error) {
	st := &stack{limits: cfg.httpLimits}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	// Listen first, so every service knows the others' real addresses (ports may be 0).
	var lg, lu, lr, lo net.Listener
	if lg, st.GatewayURL, err = listen(cfg.gatewayAddr); err != nil {
		return st, err
	}
	st.onClose(closer(lg))
	if lu, st.UsersURL, err = listen(cfg.usersAddr); err != nil {
		return st, err
	}
	st.onClose(closer(lu))
	if lr, st.RidesURL, err = listen(cfg.ridesAddr); err != nil {
		return st, err
	}
	st.onClose(closer(lr))
	if lo, st.OrchestratorURL, err = listen(cfg.orchestratorAddr); err != nil {
		return st, err
	}
	st.onClose(closer(lo))

	if err := startDatabase(ctx, cfg, logger, st); err != nil {
		return st, err
	}
	o := st.Orchestrator
	st.serve(lo, o.Handler(), logger)

	db := client.New(st.OrchestratorURL, cfg.adminToken)
	us := &users.Service{DB: db, Logger: logger.With("component", "users"), Registry: metrics.NewRegistry()}
	st.serve(lu, us.Handler(), logger)
	rs := &rides.Service{DB: db, UsersURL: st.GatewayURL, Origin: st.RidesURL,
		Logger: logger.With("component", "rides"), Registry: metrics.NewRegistry()}
	st.serve(lr, rs.Handler(), logger)
	gw := &gateway.Gateway{UsersURL: st.UsersURL, RidesURL: st.RidesURL,
		Logger: logger.With("component", "gateway"), Registry: metrics.NewRegistry()}
	st.serve(lg, gw.Handler(), logger)

	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := o.WaitReady(wctx); err != nil {
		return st, err
	}
	return st, nil
}

// startDatabase starts the database side: the embedded NATS server with the sync log, the
// coordinator, the worker runtime and the orchestrator (whose HTTP API the caller serves).
func startDatabase(ctx context.Context, cfg upConfig, logger *slog.Logger, st *stack) error {
	workersDir := filepath.Join(cfg.data, "workers")
	// Worker copies left by a previous run are stale; the sync log is the truth.
	if err := os.RemoveAll(workersDir); err != nil {
		return err
	}
	// Containers cannot reach the host's loopback: see dockerFlags.listenAddr.
	natsHost, natsPort, err := cfg.docker.listenAddr(ctx, cfg.runtime, logger)
	if err != nil {
		return err
	}
	st.NATS = &natsq.Server{StoreDir: filepath.Join(cfg.data, backup.NATSDir), Host: natsHost, Port: natsPort}
	if err := st.NATS.Open(); err != nil {
		return err
	}
	st.onClose(st.NATS.Close)
	nc, err := natsq.Connect(st.NATS.ClientURL(), "orchestrator", st.NATS.InProcess(), logger)
	if err != nil {
		return err
	}
	st.onClose(func() error { nc.Close(); return nil })
	log, err := synclog.Open(ctx, nc, true)
	if err != nil {
		return err
	}
	snaps, err := snapshot.Open(ctx, nc, true)
	if err != nil {
		return err
	}
	c, err := cfg.coord.open(ctx, nc, logger)
	if err != nil {
		return err
	}
	st.onClose(c.Close)

	natsURL := cfg.docker.advertiseURL(ctx, cfg.runtime, st.NATS.ClientURL(), logger)
	workerArgs := func(id, dir string) []string {
		args := []string{"--id", id, "--data", dir, "--nats", natsURL,
			"--session-timeout", cfg.coord.sessionTimeout.String(), "--log-level", cfg.logLevel,
			"--snapshot-every", strconv.FormatUint(cfg.snapshotEvery, 10)}
		if cfg.coord.zk != "" {
			args = append(args, "--zk", cfg.coord.zk, "--zk-root", cfg.coord.zkRoot)
		}
		if cfg.amqp != "" {
			args = append(args, "--amqp", cfg.amqp)
		}
		return args
	}
	var rt orchestrator.Runtime
	switch cfg.runtime {
	case "process":
		command := cfg.workerCommand
		if command == nil {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			command = []string{exe, "worker"}
		}
		st.Runtime = procrt.New(command, workersDir, workerArgs)
		st.Runtime.Env = cfg.workerEnv
		st.Runtime.Logger = logger
		st.onClose(st.Runtime.Close)
		rt = st.Runtime
	case "docker":
		drt, err := openDockerRuntime(ctx, cfg, workerArgs, logger)
		if err != nil {
			return err
		}
		st.onClose(drt.Close)
		rt = drt
	default:
		return fmt.Errorf("--runtime %q: use process or docker", cfg.runtime)
	}

	reg := metrics.NewRegistry()
	var b broker.Broker = natsq.FromConn(nc, logger)
	if cfg.amqp != "" {
		ab, err := openAMQP(ctx, cfg.amqp, "orchestrator", reg, logger)
		if err != nil {
			return err
		}
		st.onClose(ab.Close)
		b = ab
	}

	o := orchestrator.New(b, c, rt, log)
	o.Logger, o.Registry, o.Slaves = logger, reg, cfg.slaves
	o.AdminToken, o.WriteTimeout, o.ReadTimeout = cfg.adminToken, cfg.writeTimeout, cfg.readTimeout
	o.Snapshots = snaps // backups: streamed from what a slave stored there
	if err := o.Open(ctx); err != nil {
		return err
	}
	st.Orchestrator = o
	st.onClose(o.Close)
	sc := orchestrator.NewScaler(o)
	sc.Interval, sc.Min, sc.Max, sc.Step, sc.PrometheusURL = cfg.scaleInterval, cfg.minSlaves, int(cfg.maxSlaves), cfg.scaleStep, cfg.prometheusURL
	sc.Logger = logger
	if err := sc.Open(ctx); err != nil {
		return err
	}
	st.onClose(sc.Close)
	return nil
}
