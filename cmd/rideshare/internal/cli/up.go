package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/worker"
)

// databaseFlags registers the database side's flags, shared by `up` and `orchestrator`, on fs.
// The returned function finishes the configuration after parsing.
func databaseFlags(fs *flag.FlagSet, c *system.Config) (finish func()) {
	fs.StringVar(&c.Data, "data", "./data", "data directory (sync log, worker databases)")
	fs.IntVar(&c.Slaves, "slaves", 1, "slave workers to run beside the master")
	fs.DurationVar(&c.ScaleInterval, "scale-interval", 2*time.Minute, "autoscaling interval: every interval the slaves are set to max(min-slaves, ceil(db reads/20))")
	fs.IntVar(&c.MinSlaves, "min-slaves", 1, "fewest slaves the scaler keeps")
	maxSlaves := maxSlavesFlag(orchestrator.AutoMax)
	fs.Var(&maxSlaves, "max-slaves", "most slaves the scaler asks for; auto: sized from the machine (4 workers a CPU, 256 MiB of memory a worker, less the master); 0: no limit but the memory free at each scale-out")
	fs.IntVar(&c.ScaleStep, "scale-step", orchestrator.DefaultStep, "most slaves one scaling decision adds (scale-in is not limited); 0: no limit")
	fs.StringVar(&c.PrometheusURL, "prometheus-url", "", "Prometheus server that scrapes every orchestrator (e.g. http://prometheus:9090): the scaler counts db reads there, falling back to this orchestrator's counter; empty: this orchestrator's counter")
	fs.StringVar(&c.AMQP, "amqp", "", "RabbitMQ URL for the four queues (e.g. amqp://guest:guest@127.0.0.1:5672/); empty: embedded NATS")
	fs.StringVar(&c.ZK, "zk", "", "ZooKeeper servers host:port,…; empty: the embedded coordinator")
	fs.StringVar(&c.ZKRoot, "zk-root", "/rideshare", "ZooKeeper root path")
	fs.DurationVar(&c.SessionTimeout, "session-timeout", 0, "coordination session timeout (how fast a dead worker is noticed); 0: 3s, or 15s in a cluster (--peers, --nats, --orchestrators):\nlonger than a JetStream leader election, so that a node's loss does not end every worker's session")
	fs.StringVar(&c.Runtime, "runtime", "process", "worker runtime: process (child processes) or docker (containers of the rideshare image)")
	fs.StringVar(&c.AdminToken, "admin-token", "", "if set, required as 'Authorization: Bearer <token>' on the database, crash and backup APIs")
	fs.StringVar(&c.NATS, "nats", "", "an existing JetStream cluster to use instead of the embedded server: nats://host:port,… (its own settings apply;\nthe token, if it takes one, from $RIDESHARE_NATS_TOKEN)")
	fs.IntVar(&c.NATSReplicas, "nats-replicas", 0, "copies JetStream keeps of the sync log, the coordination buckets and the snapshots; 0: 3 when --nats lists\nthree or more servers (an append is acknowledged once a majority stored it), else 1")
	fs.StringVar(&c.NATSSync, "nats-sync", natsq.DefaultSync, "when JetStream fsyncs the sync log: always (each write is on disk before it is acknowledged: survives a power loss),\nor every interval (a crash of the machine may lose up to that much; a crash of the process loses nothing)")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 10*time.Second, "how long a write waits for a master (failovers included)")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", 10*time.Second, "how long a read waits for a slave")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.Uint64Var(&c.SnapshotEvery, "snapshot-every", worker.DefaultSnapshotEvery, "log entries a slave applies between two snapshots of the database, kept beside the sync log; a new worker restores the newest and replays the rest; 0: take none")

	d := &c.Docker
	fs.StringVar(&d.NATSListen, "nats-listen", "", "host:port the embedded NATS server (sync log, queues) listens on for workers; empty: 127.0.0.1 on a free port,\nor with --runtime docker the host's address on the workers' network (0.0.0.0:4222 when the orchestrator runs in a container)")
	fs.StringVar(&d.NATSAdvertise, "nats-advertise", "", "NATS URL the workers are given (e.g. nats://orchestrator:4222); empty: the --nats-listen address,\nor with --runtime docker in a container the orchestrator's name on the workers' network")
	fs.StringVar(&d.Image, "docker-image", system.DefaultImage, "--runtime docker: the workers' image (built by `make image`)")
	fs.StringVar(&d.Network, "docker-network", "", "--runtime docker: the workers' network (created if missing), or host; empty: the network of the\norchestrator's own container when it runs in one, else \"rideshare\"")
	fs.StringVar(&d.Stack, "docker-stack", "", "--runtime docker: this deployment's name, label rideshare.stack on its workers (an orchestrator adopts only\nits own stack's workers); empty: the Compose project of the orchestrator's container, else \"rideshare\"")
	addHosts := fs.String("docker-add-host", "host.docker.internal:host-gateway", "--runtime docker: host:address entries added to the workers' /etc/hosts, comma-separated")
	fs.BoolVar(&d.KeepWorkers, "docker-keep-workers", false, "--runtime docker: leave the worker containers running on shutdown, for the next orchestrator to adopt\n(else they are stopped and removed)")
	fs.DurationVar(&d.StopTimeout, "docker-stop-timeout", 10*time.Second, "--runtime docker: how long a worker may take to stop cleanly before it is killed")
	return func() {
		c.MaxSlaves = int(maxSlaves)
		d.AddHosts = strings.Split(*addHosts, ",")
		c.NATSToken = os.Getenv(system.NATSTokenEnv) // not a flag: ps shows flags
	}
}

// upFlags are `rideshare up`'s: the three services' and the orchestrator's addresses, then
// the database's.
func upFlags(cfg *system.Config) (*flag.FlagSet, func()) {
	fs := newFlags("up", "Runs everything on one machine: gateway, users, rides, the orchestrator with an embedded NATS JetStream\n(all four queues and the sync log), and 1 master + --slaves slave workers as child processes.\nPrints one line when the system is ready. SIGINT/SIGTERM stop everything.\nEvery NATS client presents a token: $RIDESHARE_NATS_TOKEN (environment only: ps shows flags), else the one\nmade on the first start and kept in <data>/nats-token; the workers get it in their environment.")
	fs.StringVar(&cfg.GatewayAddr, "gateway", "127.0.0.1:8080", "gateway (load balancer) listen address")
	fs.StringVar(&cfg.UsersAddr, "users", "127.0.0.1:8081", "users service listen address")
	fs.StringVar(&cfg.RidesAddr, "rides", "127.0.0.1:8082", "rides service listen address")
	fs.StringVar(&cfg.OrchestratorAddr, "orchestrator", "127.0.0.1:8083", "orchestrator (DBaaS API) listen address; with --orchestrators N, N addresses comma-separated, or one: its port and the next ones")
	fs.IntVar(&cfg.Orchestrators, "orchestrators", 1, "orchestrator nodes: 1 runs in this process; 3 or more run as separate processes (`rideshare orchestrator`), their NATS\nservers one JetStream cluster keeping the sync log on 3 of them, one node supervising: the loss of any one node\nloses no acknowledged write and kills no worker. Each keeps its files in <data>/nodeN, the workers theirs in <data>/workers")
	return fs, databaseFlags(fs, cfg)
}

func cmdUp(ctx context.Context, args []string) error {
	var cfg system.Config
	fs, finish := upFlags(&cfg)
	if err := parse(fs, args); err != nil {
		return err
	}
	finish()
	logger, err := newLogger(cfg.LogLevel)
	if err != nil {
		return err
	}
	s, err := system.Open(ctx, cfg, logger)
	if err != nil {
		return err
	}
	console := strings.Split(s.OrchestratorURL, ",")[0] + "/"
	fmt.Printf("rideshare is up: %s (users %s, rides %s, orchestrator %s, console %s, data %s)\n",
		s.GatewayURL, s.UsersURL, s.RidesURL, s.OrchestratorURL, console, cfg.Data)
	<-ctx.Done()
	logger.Info("shutting down")
	return s.Close()
}

// orchestratorFlags are `rideshare orchestrator`'s: its listen address and the database's.
func orchestratorFlags(cfg *system.Config) (*flag.FlagSet, func()) {
	fs := newFlags("orchestrator", "The database as a service alone: the database API (db/read, db/write, crash, workers), an embedded NATS\nJetStream with the sync log (and the queues unless --amqp), the coordinator (embedded unless --zk), and\n1 master + --slaves slave workers (child processes, or containers with --runtime docker). The users and\nrides services reach it at --listen. SIGINT/SIGTERM stop it.\nEvery NATS client presents a token: $RIDESHARE_NATS_TOKEN (environment only: ps shows flags), else the one\nmade on the first start and kept in <data>/nats-token; the workers get it in their environment.")
	fs.StringVar(&cfg.OrchestratorAddr, "listen", "127.0.0.1:8083", "listen address of the database API")
	fs.StringVar(&cfg.NodeName, "name", "", "this node's name, unique in its cluster (the cluster view and JetStream name nodes by it); empty: the host name")
	fs.StringVar(&cfg.ClusterListen, "cluster-listen", "", "host:port this node's embedded NATS server takes its peers' routes on (with --peers)")
	fs.StringVar(&cfg.Peers, "peers", "", "the other nodes' --cluster-listen addresses, host:port,… (this node's own may be listed): the nodes' NATS servers\nform one JetStream cluster keeping the sync log on 3 of them, and the nodes elect one supervisor. Every node\nneeds the same $RIDESHARE_NATS_TOKEN (routes present it too)")
	fs.StringVar(&cfg.ClusterAdvertise, "cluster-advertise", "", "route address the peers are told for this node, if not --cluster-listen (behind NAT)")
	fs.StringVar(&cfg.AdvertiseURL, "advertise-url", "", "this node's API URL as the cluster view (GET /api/v1/cluster) gives it to clients; empty: http://<--listen>")
	fs.StringVar(&cfg.WorkersDir, "workers-dir", "", "directory of the workers' databases; empty: <data>/workers (nodes on one machine share one, to adopt each other's workers)")
	return fs, databaseFlags(fs, cfg)
}

func cmdOrchestrator(ctx context.Context, args []string) error {
	var cfg system.Config
	fs, finish := orchestratorFlags(&cfg)
	if err := parse(fs, args); err != nil {
		return err
	}
	finish()
	logger, err := newLogger(cfg.LogLevel)
	if err != nil {
		return err
	}
	s, err := system.OpenDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	logger.Info("listening", "url", s.OrchestratorURL, "console", s.OrchestratorURL+"/")
	<-ctx.Done()
	return s.Close()
}
