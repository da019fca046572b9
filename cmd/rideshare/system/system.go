// Package system assembles RideShare from its parts: what `rideshare up` runs on one machine
// (gateway, users, rides and the database side) and what `rideshare orchestrator` runs alone
// (the database side: embedded NATS JetStream with the sync log, the coordinator, the worker
// runtime, the orchestrator and its HTTP API). Commands fill a Config from their flags and call
// Open or OpenDatabase; end-to-end tests call the same functions (package systemtest), so what
// is tested is what runs.
package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/httpsvc"
	"github.com/rideshare/rideshare/httpsvc/gateway"
	"github.com/rideshare/rideshare/httpsvc/rides"
	"github.com/rideshare/rideshare/httpsvc/users"
	"github.com/rideshare/rideshare/metrics"
	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/client"
	"github.com/rideshare/rideshare/orchestrator/dockerrt"
	"github.com/rideshare/rideshare/orchestrator/procrt"
)

// Config is everything a deployment can be told. The zero value is not useful: commands start
// from their flags' defaults, tests from systemtest's.
type Config struct {
	// Listen addresses (port 0: a free port). Open uses all four, OpenDatabase only
	// OrchestratorAddr.
	GatewayAddr, UsersAddr, RidesAddr, OrchestratorAddr string

	// Data is the data directory: the sync log, snapshots, the workers' databases.
	Data string
	// Slaves is how many slave workers run beside the master at start.
	Slaves int
	// The scaler: every ScaleInterval the slaves are set from the db reads counted, between
	// MinSlaves and MaxSlaves (orchestrator.AutoMax: sized from the machine), by at most
	// ScaleStep at a time; reads are counted by Prometheus at PrometheusURL if set.
	ScaleInterval                   time.Duration
	MinSlaves, MaxSlaves, ScaleStep int
	PrometheusURL                   string
	// AMQP is RabbitMQ's URL for the four queues; empty: the embedded NATS server.
	AMQP string
	// ZK lists ZooKeeper's servers (host:port,…); empty: the coordinator embedded in NATS.
	ZK, ZKRoot string
	// SessionTimeout is the coordination session timeout: how fast a dead worker is noticed.
	SessionTimeout time.Duration
	// Runtime runs the workers: "process" (child processes) or "docker" (containers).
	Runtime string
	Docker  DockerConfig
	// NATSToken is what every client of the embedded NATS server must present (the workers
	// get it in their environment, NATSTokenEnv, never on their command line); empty: the one
	// kept in the data directory (NATSTokenFile), made on the deployment's first start.
	NATSToken string
	// NATS lists the servers of an existing JetStream cluster (nats://host:port,…) to use
	// instead of embedding a server; NATSReplicas is the copies kept there (0: 3 on three or
	// more servers, else 1).
	NATS         string
	NATSReplicas int
	// NodeName names this orchestrator node, unique in its cluster (JetStream names the log's
	// leader by it); empty: the host name.
	NodeName string
	// ClusterListen is where this node's embedded NATS server takes routes from its peers'
	// servers, and Peers lists their route addresses (host:port,…; this node's own may be
	// listed): set, the nodes' servers form one JetStream cluster and the nodes elect one
	// supervisor. Routes present the deployment's token, which every node must share.
	ClusterListen, Peers string
	// ClusterAdvertise is the route address the peers are told for this node (behind NAT).
	ClusterAdvertise string
	// AdvertiseURL is this node's API URL in the cluster view, if not the one --listen makes
	// (a container listening on :80 would say http://[::]:80).
	AdvertiseURL string
	// WorkersDir holds the workers' databases; empty: <Data>/workers. Several nodes on one
	// machine share one (a node adopts the workers another started).
	WorkersDir string
	// Orchestrators is how many orchestrator nodes Open runs: 1 (or 0), in this process; 3 or
	// more, each its own process (StartNodes) at the addresses OrchestratorAddr lists (one
	// address: that port and the next ones).
	Orchestrators int
	// NodeCommand runs a node when Orchestrators > 1; nil: this executable's "orchestrator".
	NodeCommand NodeCommand
	// NodePlaces, if set, puts each node in a network of its own (a test's network
	// namespaces): node i listens on NodePlaces[i].Host and runs under its Wrap.
	NodePlaces []NodePlace
	// bindCoordinator: the coordination buckets exist already (a worker's session).
	bindCoordinator bool
	// NATSSync is JetStream's fsync policy (natsq.ParseSync): "always" (every write on disk
	// before its acknowledgement), or an interval; empty: natsq.DefaultSync.
	NATSSync string
	// AdminToken, if set, is required on the database, crash and backup APIs.
	AdminToken                string
	WriteTimeout, ReadTimeout time.Duration
	// LogLevel is given to the workers (this process's logger is the caller's).
	LogLevel string
	// SnapshotEvery is how many log entries a slave applies between two snapshots; 0: none.
	SnapshotEvery uint64
	// WorkerCommand runs a worker; nil: this executable's "worker" subcommand.
	WorkerCommand []string
	// WorkerEnv is added to the workers' environment (process runtime).
	WorkerEnv []string
	// HTTPLimits bound every HTTP server's clients; zero: httpsvc.DefaultLimits.
	HTTPLimits httpsvc.Limits
}

// System is a running deployment, or the database side of one (OpenDatabase: the service URLs
// are empty).
type System struct {
	GatewayURL, UsersURL, RidesURL, OrchestratorURL string
	Orchestrator                                    *orchestrator.Orchestrator
	// Runtime is the process runtime, nil with Docker; Docker is the Docker runtime, nil
	// without.
	Runtime *procrt.Runtime
	Docker  *dockerrt.Runtime
	NATS    *natsq.Server
	// Nodes are the orchestrator node processes when there are several (Orchestrator, Runtime
	// and NATS are nil then, and OrchestratorURL lists the nodes' URLs).
	Nodes *Nodes

	natsURL, natsToken string // for ConnectNATS with --nats

	limits  httpsvc.Limits
	closers []func() error // run in reverse order by Close
}

func (s *System) onClose(f func() error) { s.closers = append(s.closers, f) }

// Close stops everything in the reverse order of start. The worker containers of the Docker
// runtime stay when Docker.KeepWorkers is set.
func (s *System) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// Open starts every component of `rideshare up` and returns once the database is ready (a
// master and the slaves asked for are up).
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (_ *System, err error) {
	s := &System{limits: cfg.HTTPLimits}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// Listen first, so every service knows the others' real addresses (ports may be 0).
	var lg, lu, lr net.Listener
	if lg, s.GatewayURL, err = s.listen(cfg.GatewayAddr); err != nil {
		return nil, err
	}
	if lu, s.UsersURL, err = s.listen(cfg.UsersAddr); err != nil {
		return nil, err
	}
	if lr, s.RidesURL, err = s.listen(cfg.RidesAddr); err != nil {
		return nil, err
	}
	if cfg.Orchestrators > 1 {
		addrs, err := nodeAddrs(cfg.OrchestratorAddr, cfg.Orchestrators)
		if err != nil {
			return nil, err
		}
		if s.Nodes, err = StartNodes(ctx, cfg, addrs, cfg.NodeCommand, logger); err != nil {
			return nil, err
		}
		s.onClose(s.Nodes.Close)
		s.OrchestratorURL = s.Nodes.URLs()
	} else if err := s.openDatabase(ctx, cfg, logger); err != nil {
		return nil, err
	}

	db := client.New(s.OrchestratorURL, cfg.AdminToken)
	us := &users.Service{DB: db, Logger: logger.With("component", "users"), Registry: metrics.NewRegistry()}
	s.serve(lu, us.Handler(), logger)
	rs := &rides.Service{DB: db, UsersURL: s.GatewayURL, Origin: s.RidesURL,
		Logger: logger.With("component", "rides"), Registry: metrics.NewRegistry()}
	s.serve(lr, rs.Handler(), logger)
	gw := &gateway.Gateway{UsersURL: s.UsersURL, RidesURL: s.RidesURL,
		Logger: logger.With("component", "gateway"), Registry: metrics.NewRegistry()}
	s.serve(lg, gw.Handler(), logger)

	if s.Orchestrator != nil { // the nodes are ready already
		wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		if err := s.Orchestrator.WaitReady(wctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// nodeAddrs is the API addresses of n nodes: addr's list, or, for one address, its port and
// the n-1 after it.
func nodeAddrs(addr string, n int) ([]string, error) {
	list := splitList(addr)
	if len(list) == n {
		return list, nil
	}
	if len(list) != 1 {
		return nil, fmt.Errorf("--orchestrator lists %d addresses for %d orchestrators", len(list), n)
	}
	host, p, err := net.SplitHostPort(list[0])
	if err != nil {
		return nil, fmt.Errorf("--orchestrator %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err == nil && port == 0 {
		return freeAddrs(host, n) // each node on a port of its own, as the tests want
	}
	if err != nil || port < 0 || port+n-1 > 65535 {
		return nil, fmt.Errorf("--orchestrator %q: with %d orchestrators give a port, or one address for each", addr, n)
	}
	var out []string
	for i := range n {
		out = append(out, net.JoinHostPort(host, strconv.Itoa(port+i)))
	}
	return out, nil
}

// OpenDatabase starts the database side alone (`rideshare orchestrator`) and serves its API
// on cfg.OrchestratorAddr. It does not wait for the workers: /readyz says when they are.
func OpenDatabase(ctx context.Context, cfg Config, logger *slog.Logger) (_ *System, err error) {
	s := &System{limits: cfg.HTTPLimits}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.openDatabase(ctx, cfg, logger); err != nil {
		return nil, err
	}
	return s, nil
}

// Serve serves h on addr with the given limits until ctx ends, then shuts down with a bound:
// a service run alone (`rideshare users`, `rides`, `gateway`).
func Serve(ctx context.Context, addr string, h http.Handler, limits httpsvc.Limits, logger *slog.Logger) error {
	s := &System{limits: limits}
	l, url, err := s.listen(addr)
	if err != nil {
		return err
	}
	s.serve(l, h, logger)
	logger.Info("listening", "url", url)
	<-ctx.Done()
	return s.Close()
}

// listen listens on addr; Close closes the listener unless its HTTP server already did.
func (s *System) listen(addr string) (net.Listener, string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	s.onClose(func() error {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	return l, "http://" + l.Addr().String(), nil
}

func (s *System) serve(l net.Listener, h http.Handler, logger *slog.Logger) {
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
