// Package dockerrt runs workers as containers of the rideshare image through the Docker Engine
// API. A worker's PID is the one the engine reports for the container's process (State.Pid, a
// PID on the engine's host: SPEC §6).
//
// Every worker container carries the labels rideshare.role=worker, rideshare.worker=<id> and
// rideshare.stack=<stack>. List finds the running workers of its stack by label, so a new
// orchestrator adopts the workers a previous one started; exited workers are removed. A worker's
// data lives in its container's own filesystem and goes with it (no volume).
package dockerrt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/rideshare/rideshare/orchestrator"
)

var _ orchestrator.HostReporter = (*Runtime)(nil)

// Labels on the project's containers and networks.
const (
	LabelRole   = "rideshare.role"   // "worker" on worker containers
	LabelWorker = "rideshare.worker" // the worker ID
	LabelStack  = "rideshare.stack"  // which deployment the container or network belongs to
	RoleWorker  = "worker"
)

// ErrNoImage is returned by Open when the worker image is not on the engine.
var ErrNoImage = errors.New("worker image not found")

// ErrNoWorker is returned for a worker ID that has no container.
var ErrNoWorker = errors.New("no such worker")

// Runtime starts, stops, kills and lists worker containers. Its exported fields are its
// settings; set them before Open.
type Runtime struct {
	// Image runs the workers; its entrypoint is the rideshare binary.
	Image string
	// Stack names this deployment (label rideshare.stack): List sees only its own workers.
	// Empty: the Compose project (else the name) of the container this process runs in, or
	// DefaultStack on a host.
	Stack string
	// Network the workers join: a network name (created as a bridge network labelled with the
	// stack if missing), or "host". Empty: the network of the container this process runs in,
	// or DefaultNetwork on a host.
	Network string
	// Args returns a worker's arguments after "worker".
	Args func(id, dataDir string) []string
	// DataDir is the worker's data directory inside its container.
	DataDir string
	// Env is added to each worker's environment (NAME=value).
	Env []string
	// ExtraHosts are added to each worker's /etc/hosts ("host.docker.internal:host-gateway").
	ExtraHosts []string
	// Labels are added to each worker container, beside the rideshare.* labels and, when this
	// process runs in a Compose container, the labels that make the workers one-off containers
	// of its service (ComposeLabels).
	Labels map[string]string
	// StopTimeout bounds a clean stop (SIGTERM) before the engine kills the worker.
	StopTimeout time.Duration
	// KeepWorkers makes Close leave the workers running, for the next orchestrator to adopt.
	// Otherwise Close stops them and removes the network if this stack created it.
	KeepWorkers bool
	// LogOutput, if set, receives the workers' output (stdout and stderr) while they run.
	LogOutput io.Writer
	Logger    *slog.Logger
	// Client talks to the engine; nil: one from the environment (DOCKER_HOST, …), closed by Close.
	Client *client.Client

	cli       *client.Client
	ownClient bool
	self      *container.InspectResponse // the container this process runs in; nil on a host
	ctx       context.Context            // background work: log copies, removals
	cancel    context.CancelFunc
	bg        sync.WaitGroup

	mu        sync.Mutex
	pids      map[string]int    // container ID → PID (a running container keeps its PID)
	ids       map[string]string // worker ID → container ID
	removing  map[string]bool   // container IDs being removed
	following map[string]bool   // container IDs whose output is being copied
}

// Defaults of Stack and Network for an orchestrator that does not run in a container.
const (
	DefaultStack   = "rideshare"
	DefaultNetwork = "rideshare"
)

// New returns a runtime for image and stack with default settings: the network found by Open
// (see Network), data in /data, host.docker.internal mapped to the host, 10 s clean stops.
func New(image, stack string, args func(id, dataDir string) []string) *Runtime {
	return &Runtime{
		Image: image, Stack: stack, Args: args, DataDir: "/data",
		ExtraHosts:  []string{"host.docker.internal:host-gateway"},
		StopTimeout: 10 * time.Second, Logger: slog.Default(),
	}
}

// NewClient connects to the engine named by the environment (DOCKER_HOST, default the local
// socket), negotiating the API version.
func NewClient() (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return cli, nil
}

// Open connects to the engine, finds out whether this process runs in one of its containers
// (which decides the defaults of Stack, Network and Labels: see Self), checks the image and
// makes sure the network exists. This is the only place that asks; everything else reads Self.
func (r *Runtime) Open(ctx context.Context) error {
	if r.Image == "" || r.Args == nil {
		return errors.New("dockerrt: Image and Args are required")
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	r.cli = r.Client
	if r.cli == nil {
		cli, err := NewClient()
		if err != nil {
			return err
		}
		r.cli, r.ownClient = cli, true
	}
	r.pids, r.ids = map[string]int{}, map[string]string{}
	r.removing, r.following = map[string]bool{}, map[string]bool{}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	if err := r.open(ctx); err != nil {
		r.cancel()
		if r.ownClient {
			r.cli.Close()
		}
		return err
	}
	return nil
}

func (r *Runtime) open(ctx context.Context) error {
	if _, err := r.cli.Ping(ctx); err != nil {
		return fmt.Errorf("docker engine at %s: %w", r.cli.DaemonHost(), err)
	}
	me, err := Self(ctx, r.cli)
	if err != nil {
		// It only costs the defaults that depend on it.
		r.Logger.Warn("cannot tell whether this process runs in a container", "err", err)
	}
	r.self = me
	if r.Stack == "" {
		r.Stack = selfStack(me)
	}
	if r.Network == "" {
		r.Network = selfNetwork(me)
	}
	if l := ComposeLabels(me); l != nil {
		labels := maps.Clone(l)
		maps.Copy(labels, r.Labels)
		r.Labels = labels
	}
	r.Logger = r.Logger.With("component", "dockerrt", "stack", r.Stack)
	if _, err := r.cli.ImageInspect(ctx, r.Image); err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("%w: %s (build it with `make image`)", ErrNoImage, r.Image)
		}
		return fmt.Errorf("inspect image %s: %w", r.Image, err)
	}
	return r.ensureNetwork(ctx)
}

// builtinNetwork reports whether name is one of the engine's own network modes.
func builtinNetwork(name string) bool {
	switch name {
	case "", "host", "bridge", "default", "none":
		return true
	}
	return strings.HasPrefix(name, "container:")
}

func (r *Runtime) ensureNetwork(ctx context.Context) error {
	if builtinNetwork(r.Network) {
		return nil
	}
	_, err := r.cli.NetworkInspect(ctx, r.Network, network.InspectOptions{})
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect network %s: %w", r.Network, err)
	}
	_, err = r.cli.NetworkCreate(ctx, r.Network, network.CreateOptions{
		Driver: "bridge", Labels: map[string]string{LabelStack: r.Stack},
	})
	if err != nil && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("create network %s: %w", r.Network, err)
	}
	if err == nil {
		r.Logger.Info("created network", "network", r.Network)
	}
	return nil
}

// Gateway returns the host's address on the workers' network: where a server on the host
// listens to be reachable from the workers (127.0.0.1 with the host network).
func (r *Runtime) Gateway(ctx context.Context) (string, error) {
	if r.Network == "host" {
		return "127.0.0.1", nil
	}
	name := r.Network
	if name == "" || name == "default" {
		name = "bridge"
	}
	n, err := r.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if err != nil {
		return "", fmt.Errorf("inspect network %s: %w", name, err)
	}
	for _, c := range n.IPAM.Config {
		if c.Gateway != "" && !strings.Contains(c.Gateway, ":") {
			return c.Gateway, nil
		}
	}
	// The default bridge often lists none: the gateway is its interface's address.
	if dev := n.Options["com.docker.network.bridge.name"]; dev != "" {
		if ifc, err := net.InterfaceByName(dev); err == nil {
			addrs, _ := ifc.Addrs()
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
					return ipn.IP.String(), nil
				}
			}
		}
	}
	return "", fmt.Errorf("network %s has no IPv4 gateway", name)
}

// ContainerName is the name of worker id's container.
func (r *Runtime) ContainerName(id string) string { return r.Stack + "-worker-" + id }

// Start creates and starts worker id's container and returns its PID.
func (r *Runtime) Start(ctx context.Context, id string) (int, error) {
	labels := maps.Clone(r.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelRole], labels[LabelWorker], labels[LabelStack] = RoleWorker, id, r.Stack
	cfg := &container.Config{
		Image:  r.Image,
		Cmd:    append([]string{"worker"}, r.Args(id, r.DataDir)...),
		Env:    r.Env,
		Labels: labels,
	}
	hc := &container.HostConfig{NetworkMode: container.NetworkMode(r.Network)}
	if !strings.HasPrefix(r.Network, "container:") { // which owns the hostname and /etc/hosts
		hc.ExtraHosts = r.ExtraHosts
		if r.Network != "host" {
			cfg.Hostname = id
		}
	}
	created, err := r.cli.ContainerCreate(ctx, cfg, hc, nil, nil, r.ContainerName(id))
	if err != nil {
		return 0, fmt.Errorf("create worker %s: %w", id, err)
	}
	cid := created.ID
	fail := func(err error) (int, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if rerr := r.cli.ContainerRemove(rctx, cid, container.RemoveOptions{Force: true}); rerr != nil && !cerrdefs.IsNotFound(rerr) {
			r.Logger.Warn("remove failed worker container", "worker", id, "err", rerr)
		}
		return 0, err
	}
	if err := r.cli.ContainerStart(ctx, cid, container.StartOptions{}); err != nil {
		return fail(fmt.Errorf("start worker %s: %w", id, err))
	}
	r.follow(cid, id, time.Time{})
	info, err := r.cli.ContainerInspect(ctx, cid)
	if err != nil {
		return fail(fmt.Errorf("inspect worker %s: %w", id, err))
	}
	if info.State == nil || !info.State.Running || info.State.Pid == 0 {
		code := -1
		if info.State != nil {
			code = info.State.ExitCode
		}
		return fail(fmt.Errorf("worker %s exited at once (exit code %d)", id, code))
	}
	r.mu.Lock()
	r.pids[cid], r.ids[id] = info.State.Pid, cid
	r.mu.Unlock()
	r.Logger.Debug("started worker container", "worker", id, "container", short(cid), "pid", info.State.Pid)
	return info.State.Pid, nil
}

// follow copies a container's output to LogOutput until it stops, once per container.
func (r *Runtime) follow(cid, id string, since time.Time) {
	if r.LogOutput == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.following[cid] || r.ctx.Err() != nil {
		return
	}
	r.following[cid] = true
	opts := container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true}
	if !since.IsZero() {
		opts.Since = since.Format(time.RFC3339Nano)
	}
	r.bg.Add(1)
	go func() {
		defer func() {
			r.mu.Lock()
			delete(r.following, cid)
			r.mu.Unlock()
			r.bg.Done()
		}()
		rc, err := r.cli.ContainerLogs(r.ctx, cid, opts)
		if err != nil {
			if r.ctx.Err() == nil && !cerrdefs.IsNotFound(err) {
				r.Logger.Warn("worker logs", "worker", id, "err", err)
			}
			return
		}
		defer rc.Close()
		_, _ = stdcopy.StdCopy(r.LogOutput, r.LogOutput, rc)
	}()
}

// containerID finds worker id's container.
func (r *Runtime) containerID(ctx context.Context, id string) (string, error) {
	r.mu.Lock()
	cid, ok := r.ids[id]
	r.mu.Unlock()
	if ok {
		return cid, nil
	}
	cs, err := r.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelStack+"="+r.Stack), filters.Arg("label", LabelWorker+"="+id))})
	if err != nil {
		return "", fmt.Errorf("find worker %s: %w", id, err)
	}
	if len(cs) == 0 {
		return "", fmt.Errorf("%w: %s", ErrNoWorker, id)
	}
	r.mu.Lock()
	r.ids[id] = cs[0].ID
	r.mu.Unlock()
	return cs[0].ID, nil
}

// Stop stops worker id cleanly (SIGTERM, then SIGKILL after StopTimeout) and removes its
// container.
func (r *Runtime) Stop(ctx context.Context, id string) error {
	cid, err := r.containerID(ctx, id)
	if err != nil {
		return err
	}
	secs := int((r.StopTimeout + time.Second - 1) / time.Second)
	if err := r.cli.ContainerStop(ctx, cid, container.StopOptions{Timeout: &secs}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop worker %s: %w", id, err)
	}
	return r.remove(ctx, cid)
}

// Kill sends SIGKILL to worker id and returns at once; its container is removed in the
// background.
func (r *Runtime) Kill(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cid, err := r.containerID(ctx, id)
	if err != nil {
		return err
	}
	if err := r.cli.ContainerKill(ctx, cid, "KILL"); err != nil {
		return fmt.Errorf("kill worker %s: %w", id, err)
	}
	r.removeLater(cid)
	return nil
}

// remove removes a stopped (or dying) container.
func (r *Runtime) remove(ctx context.Context, cid string) error {
	err := r.cli.ContainerRemove(ctx, cid, container.RemoveOptions{Force: true})
	r.forget(cid)
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) { // conflict: removal already in progress
		return fmt.Errorf("remove container %s: %w", short(cid), err)
	}
	return nil
}

func (r *Runtime) forget(cid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pids, cid)
	for id, c := range r.ids {
		if c == cid {
			delete(r.ids, id)
		}
	}
}

// removeLater removes a container once it has exited, in the background.
func (r *Runtime) removeLater(cid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removing[cid] || r.ctx.Err() != nil {
		return
	}
	r.removing[cid] = true
	r.bg.Add(1)
	go func() {
		defer func() {
			r.mu.Lock()
			delete(r.removing, cid)
			r.mu.Unlock()
			r.bg.Done()
		}()
		ctx, cancel := context.WithTimeout(r.ctx, 60*time.Second)
		defer cancel()
		waitc, errc := r.cli.ContainerWait(ctx, cid, container.WaitConditionNotRunning)
		select {
		case <-waitc:
		case <-errc: // gone already, or the engine is unreachable: removal tells which
		}
		if err := r.remove(ctx, cid); err != nil && r.ctx.Err() == nil {
			r.Logger.Warn("remove dead worker", "container", short(cid), "err", err)
		}
	}()
}

// List returns this stack's running workers, ID to PID, and removes the dead ones.
func (r *Runtime) List(ctx context.Context) (map[string]int, error) {
	cs, err := r.workerContainers(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(cs))
	running := make(map[string]bool, len(cs))
	for _, c := range cs {
		id := c.Labels[LabelWorker]
		switch c.State {
		case container.StateRunning, container.StatePaused:
			// A paused worker still exists, like a stopped process (SIGSTOP).
			pid, err := r.pid(ctx, c.ID, id)
			if err != nil {
				return nil, err
			}
			if pid != 0 {
				out[id], running[c.ID] = pid, true
			}
		case container.StateExited, container.StateDead:
			r.removeLater(c.ID)
		case container.StateCreated:
			// Being started by Start, or left behind by a start that failed half way.
			if time.Since(time.Unix(c.Created, 0)) > 2*time.Minute {
				r.removeLater(c.ID)
			}
		}
	}
	r.mu.Lock()
	for cid := range r.pids {
		if !running[cid] {
			delete(r.pids, cid)
		}
	}
	r.mu.Unlock()
	return out, nil
}

// pid returns a running container's PID, inspecting it the first time it is seen (an adopted
// worker: its output is followed from now on).
func (r *Runtime) pid(ctx context.Context, cid, id string) (int, error) {
	r.mu.Lock()
	pid, ok := r.pids[cid]
	r.mu.Unlock()
	if ok {
		return pid, nil
	}
	info, err := r.cli.ContainerInspect(ctx, cid)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("inspect worker %s: %w", id, err)
	}
	if info.State == nil || !info.State.Running {
		return 0, nil
	}
	r.mu.Lock()
	r.pids[cid], r.ids[id] = info.State.Pid, cid
	r.mu.Unlock()
	r.follow(cid, id, time.Now())
	return info.State.Pid, nil
}

// Close stops and removes the workers and the stack's network, unless KeepWorkers is set.
func (r *Runtime) Close() error {
	if r.cancel == nil {
		return nil
	}
	var errs []error
	if !r.KeepWorkers {
		errs = append(errs, r.StopAll(context.Background()))
	}
	r.mu.Lock() // no background work starts after this (see follow, removeLater)
	r.cancel()
	r.mu.Unlock()
	r.bg.Wait()
	if !r.KeepWorkers {
		// A dead worker's removal still under way was cut short by cancel: remove what is
		// left of the stack's workers (exited containers) before the network.
		errs = append(errs, r.removeDead(context.Background()), r.removeNetwork(context.Background()))
	}
	if r.ownClient {
		errs = append(errs, r.cli.Close())
	}
	r.cancel = nil
	return errors.Join(errs...)
}

// workerContainers lists the stack's worker containers, in any state.
func (r *Runtime) workerContainers(ctx context.Context) ([]container.Summary, error) {
	cs, err := r.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelStack+"="+r.Stack), filters.Arg("label", LabelRole+"="+RoleWorker))})
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	return cs, nil
}

// removeDead removes the stack's worker containers that are no longer running.
func (r *Runtime) removeDead(ctx context.Context) error {
	cs, err := r.workerContainers(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		if c.State != container.StateRunning && c.State != container.StatePaused {
			errs = append(errs, r.remove(ctx, c.ID))
		}
	}
	return errors.Join(errs...)
}

// StopAll stops every worker of the stack, in parallel.
func (r *Runtime) StopAll(ctx context.Context) error {
	procs, err := r.List(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(procs))
	for id := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- r.Stop(ctx, id)
		}()
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeNetwork removes the workers' network if it belongs to this stack (it created it) and
// nothing else is attached.
func (r *Runtime) removeNetwork(ctx context.Context) error {
	if builtinNetwork(r.Network) {
		return nil
	}
	n, err := r.cli.NetworkInspect(ctx, r.Network, network.InspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("inspect network %s: %w", r.Network, err)
	}
	if n.Labels[LabelStack] != r.Stack {
		return nil
	}
	if len(n.Containers) > 0 {
		r.Logger.Info("network still in use; left in place", "network", r.Network, "containers", len(n.Containers))
		return nil
	}
	if err := r.cli.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove network %s: %w", r.Network, err)
	}
	return nil
}

func short(id string) string { return id[:min(12, len(id))] }

// Host asks the engine for the CPUs and memory of the machine it runs containers on. The
// engine does not say how much memory is free, so the room for new workers is counted from
// the total.
func (r *Runtime) Host(ctx context.Context) (orchestrator.Host, error) {
	info, err := r.cli.Info(ctx)
	if err != nil {
		return orchestrator.Host{}, fmt.Errorf("docker engine info: %w", err)
	}
	if info.NCPU <= 0 || info.MemTotal <= 0 {
		return orchestrator.Host{}, fmt.Errorf("docker engine info: %d CPUs, %d bytes of memory", info.NCPU, info.MemTotal)
	}
	return orchestrator.Host{CPUs: info.NCPU, MemTotal: uint64(info.MemTotal)}, nil
}
