package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/orchestrator/procrt"
)

// Nodes is a cluster of orchestrator nodes on one machine (`rideshare up --orchestrators 3`),
// each a `rideshare orchestrator` process of its own with its embedded NATS server, joined by
// routes on loopback into one JetStream cluster. The workers are no node's children: any
// node's death kills none of them, and the supervisor that follows adopts them.
type Nodes struct {
	// Nodes in order; their URLs are the database API.
	Nodes []*Node

	// Token is the deployment's NATS token.
	Token string

	cfg     Config
	command []string
	env     []string
	logger  *slog.Logger
}

// Node is one orchestrator node process.
type Node struct {
	Name, URL string
	// NATSURL is the node's NATS server, for clients of the deployment (with Nodes.Token).
	NATSURL string
	// Data is the node's own data directory (its NATS server's files).
	Data string
	args []string
	wrap []string // runs the command (NodePlace.Wrap)

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// NodeCommand runs a node; nil: this executable's "orchestrator" subcommand.
type NodeCommand []string

// NodePlace is where one node runs when each has a network of its own: its API, NATS and
// route addresses are on Host (at fixed ports, nothing else listens there), and its command
// runs under Wrap (for example "ip netns exec NAME"), its workers with it.
type NodePlace struct {
	Host string
	Wrap []string
}

// Ports of a node that has a place of its own.
const (
	placeNATSPort  = "4222"
	placeRoutePort = "6222"
)

// StartNodes starts one node per address of apiAddrs (host:port of each one's database API)
// and returns once one of them is ready (a master and the wanted slaves are up).
func StartNodes(ctx context.Context, cfg Config, apiAddrs []string, command NodeCommand, logger *slog.Logger) (_ *Nodes, err error) {
	if len(apiAddrs) < 3 {
		return nil, fmt.Errorf("a cluster of orchestrators needs at least 3 nodes (a majority must survive one's loss), not %d", len(apiAddrs))
	}
	if cfg.Runtime == "docker" {
		// The nodes' NATS servers listen on loopback here, which worker containers cannot
		// reach: the containers' shape is deploy/cluster.
		return nil, fmt.Errorf("--orchestrators %d runs the workers as processes; for workers in containers run deploy/cluster/docker-compose.yml (deploy/README.md)", len(apiAddrs))
	}
	if places := cfg.NodePlaces; places != nil && len(places) != len(apiAddrs) {
		return nil, fmt.Errorf("%d node places for %d nodes", len(places), len(apiAddrs))
	}
	if command == nil {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		command = []string{exe, "orchestrator"}
	}
	token := cfg.NATSToken
	if token == "" {
		if token, err = natsq.LoadOrCreateToken(filepath.Join(cfg.Data, NATSTokenFile)); err != nil {
			return nil, err
		}
	}
	var routes, clients []string
	if places := cfg.NodePlaces; places != nil {
		for _, p := range places {
			routes = append(routes, net.JoinHostPort(p.Host, placeRoutePort))
			clients = append(clients, net.JoinHostPort(p.Host, placeNATSPort))
		}
	} else {
		if routes, err = freeLoopback(len(apiAddrs)); err != nil {
			return nil, err
		}
		if clients, err = freeLoopback(len(apiAddrs)); err != nil {
			return nil, err
		}
	}
	n := &Nodes{Token: token, cfg: cfg, command: command, logger: logger,
		// Secrets through the environment: ps shows command lines.
		env: append([]string{NATSTokenEnv + "=" + token}, cfg.WorkerEnv...)}
	if cfg.AdminToken != "" {
		n.env = append(n.env, "RIDESHARE_ADMIN_TOKEN="+cfg.AdminToken)
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	workers := filepath.Join(cfg.Data, "workers")
	// Worker copies left by a previous run are stale (the sync log is the truth), unless
	// their workers still run.
	if procs, lerr := n.workers().List(ctx); lerr == nil && len(procs) == 0 {
		if err := os.RemoveAll(workers); err != nil {
			return nil, err
		}
	}
	for i, addr := range apiAddrs {
		node := &Node{Name: fmt.Sprintf("node%d", i+1), URL: "http://" + addr, Data: filepath.Join(cfg.Data, fmt.Sprintf("node%d", i+1)),
			NATSURL: "nats://" + clients[i]}
		node.args = append([]string{"--name", node.Name, "--listen", addr, "--data", node.Data, "--nats-listen", clients[i],
			"--cluster-listen", routes[i], "--peers", strings.Join(routes, ","), "--workers-dir", workers}, NodeArgs(cfg)...)
		if cfg.NodePlaces != nil {
			node.wrap = cfg.NodePlaces[i].Wrap
		}
		n.Nodes = append(n.Nodes, node)
		if err := n.Start(node); err != nil {
			return nil, err
		}
	}
	if err := n.WaitReady(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	return n, nil
}

// URLs are the nodes' database API URLs, comma-separated, as users and rides take them.
func (n *Nodes) URLs() string {
	var out []string
	for _, node := range n.Nodes {
		out = append(out, node.URL)
	}
	return strings.Join(out, ",")
}

// NATSURLs are the nodes' NATS servers, comma-separated.
func (n *Nodes) NATSURLs() string {
	var out []string
	for _, node := range n.Nodes {
		out = append(out, node.NATSURL)
	}
	return strings.Join(out, ",")
}

// WorkersDir holds the workers' databases.
func (n *Nodes) WorkersDir() string { return filepath.Join(n.cfg.Data, "workers") }

// Start starts node (again, after Kill, with the same arguments).
func (n *Nodes) Start(node *Node) error {
	node.mu.Lock()
	defer node.mu.Unlock()
	argv := append(append(append([]string{}, node.wrap...), n.command...), node.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), n.env...)
	// The nodes' logs with this process's, on its own stderr (not a pipe: a node must not
	// depend on this process to write its log).
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", node.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		n.logger.Info("orchestrator node exited", "node", node.Name, "pid", cmd.Process.Pid, "status", fmt.Sprint(err))
		close(exited)
	}()
	node.cmd, node.exited = cmd, exited
	return nil
}

// PID is the node's process ID, 0 if it is not running.
func (node *Node) PID() int {
	node.mu.Lock()
	defer node.mu.Unlock()
	if node.cmd == nil {
		return 0
	}
	select {
	case <-node.exited:
		return 0
	default:
		return node.cmd.Process.Pid
	}
}

// Signal sends sig to the node's process (SIGKILL, SIGSTOP, SIGCONT in the fault tests) and,
// for SIGKILL, waits until it has exited.
func (node *Node) Signal(sig syscall.Signal) error {
	node.mu.Lock()
	cmd, exited := node.cmd, node.exited
	node.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s was never started", node.Name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: %w", node.Name, err)
	}
	if sig == syscall.SIGKILL {
		<-exited
	}
	return nil
}

// stop ends the node cleanly (SIGTERM), or kills it after timeout.
func (node *Node) stop(timeout time.Duration) {
	node.mu.Lock()
	cmd, exited := node.cmd, node.exited
	node.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot handle SIGTERM
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// WaitReady waits until some node answers /readyz with 200.
func (n *Nodes) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		for _, node := range n.Nodes {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, node.URL+"/readyz", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no orchestrator node ready: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// workers is the shared worker runtime, for stopping the workers once every node is gone.
func (n *Nodes) workers() *procrt.Runtime {
	r := procrt.New(nil, filepath.Join(n.cfg.Data, "workers"), nil)
	r.Shared, r.Logger = true, n.logger
	return r
}

// Close stops every node, then every worker (no node is left to supervise them).
func (n *Nodes) Close() error {
	var wg sync.WaitGroup
	for _, node := range n.Nodes {
		wg.Go(func() { node.stop(15 * time.Second) })
	}
	wg.Wait()
	if n.cfg.Runtime == "docker" {
		return nil // the containers are left to the next start, which adopts them
	}
	return n.workers().StopAll(context.Background())
}

// NodeArgs are the `rideshare orchestrator` flags that give a node the database settings of
// cfg (the node's name, addresses and data directory are added by StartNodes). Settings left
// empty or zero are left out, so the node takes the flag's default. Secrets are not among
// them: they go through the environment.
func NodeArgs(cfg Config) []string {
	var args []string
	add := func(flag, v string) {
		if v != "" && v != "0s" {
			args = append(args, "--"+flag, v)
		}
	}
	d := cfg.Docker
	args = append(args, "--slaves", strconv.Itoa(cfg.Slaves), "--min-slaves", strconv.Itoa(cfg.MinSlaves),
		"--max-slaves", maxSlavesArg(cfg.MaxSlaves), "--scale-step", strconv.Itoa(cfg.ScaleStep),
		"--snapshot-every", strconv.FormatUint(cfg.SnapshotEvery, 10))
	add("scale-interval", cfg.ScaleInterval.String())
	add("prometheus-url", cfg.PrometheusURL)
	add("amqp", cfg.AMQP)
	add("zk", cfg.ZK)
	add("zk-root", cfg.ZKRoot)
	if cfg.SessionTimeout > 0 {
		add("session-timeout", cfg.SessionTimeout.String())
	}
	add("runtime", cfg.Runtime)
	add("nats-sync", cfg.NATSSync)
	add("write-timeout", cfg.WriteTimeout.String())
	add("read-timeout", cfg.ReadTimeout.String())
	add("log-level", cfg.LogLevel)
	add("docker-image", d.Image)
	add("docker-network", d.Network)
	add("docker-stack", d.Stack)
	add("docker-add-host", strings.Join(d.AddHosts, ","))
	add("docker-stop-timeout", d.StopTimeout.String())
	return args
}

// maxSlavesArg is --max-slaves's value for n (orchestrator.AutoMax is "auto").
func maxSlavesArg(n int) string {
	if n < 0 {
		return "auto"
	}
	return strconv.Itoa(n)
}

// freeLoopback returns n loopback addresses free now, for the nodes' routes.
func freeLoopback(n int) ([]string, error) { return freeAddrs("127.0.0.1", n) }

// freeAddrs returns n addresses on host with ports free now. Another process may take one
// before the node listens on it; the node then fails to start, and says why.
func freeAddrs(host string, n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, errors.Join(fmt.Errorf("free port on %s", host), err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
