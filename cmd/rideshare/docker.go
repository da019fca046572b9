package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/rideshare/rideshare/orchestrator/dockerrt"
)

// dockerFlags configures `--runtime docker`, and where workers reach the embedded NATS server
// (a container cannot reach the host's 127.0.0.1).
type dockerFlags struct {
	natsListen    string // host:port; empty: see listenAddr
	natsAdvertise string // URL given to workers; empty: see advertiseURL
	image         string
	network       string // empty: the orchestrator container's network, else "rideshare"
	stack         string // empty: the orchestrator container's Compose project, else "rideshare"
	addHosts      string // comma-separated host:address entries
	keepWorkers   bool
	stopTimeout   time.Duration
}

const (
	defaultDockerImage   = "rideshare:latest"
	defaultDockerStack   = "rideshare"
	defaultDockerNetwork = "rideshare"
	defaultNATSPort      = 4222
)

func (d *dockerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.natsListen, "nats-listen", "", "host:port the embedded NATS server (sync log, queues) listens on for workers; empty: 127.0.0.1 on a free port,\nor with --runtime docker the host's address on the workers' network (0.0.0.0:4222 when the orchestrator runs in a container)")
	fs.StringVar(&d.natsAdvertise, "nats-advertise", "", "NATS URL the workers are given (e.g. nats://orchestrator:4222); empty: the --nats-listen address,\nor with --runtime docker in a container the orchestrator's name on the workers' network")
	fs.StringVar(&d.image, "docker-image", defaultDockerImage, "--runtime docker: the workers' image (built by `make image`)")
	fs.StringVar(&d.network, "docker-network", "", "--runtime docker: the workers' network (created if missing), or host; empty: the network of the\norchestrator's own container when it runs in one, else \"rideshare\"")
	fs.StringVar(&d.stack, "docker-stack", "", "--runtime docker: this deployment's name, label rideshare.stack on its workers (an orchestrator adopts only\nits own stack's workers); empty: the Compose project of the orchestrator's container, else \"rideshare\"")
	fs.StringVar(&d.addHosts, "docker-add-host", "host.docker.internal:host-gateway", "--runtime docker: host:address entries added to the workers' /etc/hosts, comma-separated")
	fs.BoolVar(&d.keepWorkers, "docker-keep-workers", false, "--runtime docker: leave the worker containers running on shutdown, for the next orchestrator to adopt\n(else they are stopped and removed)")
	fs.DurationVar(&d.stopTimeout, "docker-stop-timeout", 10*time.Second, "--runtime docker: how long a worker may take to stop cleanly before it is killed")
}

// self returns the container this process runs in, nil on the host. An error only costs the
// defaults that depend on it: it is logged.
func self(ctx context.Context, logger *slog.Logger) *container.InspectResponse {
	cli, err := dockerrt.NewClient()
	if err != nil {
		logger.Warn("docker client", "err", err)
		return nil
	}
	defer cli.Close()
	c, err := dockerrt.Self(ctx, cli)
	if err != nil {
		logger.Warn("cannot tell whether the orchestrator runs in a container", "err", err)
	}
	return c
}

// listenAddr is where the embedded NATS server listens: --nats-listen, else 127.0.0.1 on a
// free port for child processes, the host's address on the workers' network for containers
// (the network is created if missing), and 0.0.0.0:4222 when the orchestrator runs in a
// container itself. Port -1 means a free port.
func (d dockerFlags) listenAddr(ctx context.Context, runtime string, logger *slog.Logger) (string, int, error) {
	if d.natsListen != "" {
		host, p, err := net.SplitHostPort(d.natsListen)
		if err != nil {
			return "", 0, fmt.Errorf("--nats-listen %q: %w", d.natsListen, err)
		}
		port, err := strconv.Atoi(p)
		if err != nil || port < 0 || port > 65535 {
			return "", 0, fmt.Errorf("--nats-listen %q: bad port", d.natsListen)
		}
		if port == 0 {
			port = -1
		}
		return host, port, nil
	}
	if runtime != "docker" {
		return "127.0.0.1", -1, nil
	}
	me := self(ctx, logger)
	if me != nil {
		return "0.0.0.0", defaultNATSPort, nil
	}
	rt := d.runtime(me, nil)
	rt.Logger = logger
	if err := rt.Open(ctx); err != nil { // creates the network if missing
		return "", 0, fmt.Errorf("--runtime docker: %w", err)
	}
	rt.KeepWorkers = true // only looking: Close leaves everything as it is
	defer rt.Close()
	gw, err := rt.Gateway(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("--runtime docker: %w", err)
	}
	return gw, -1, nil
}

// advertiseURL is the NATS URL given to workers: --nats-advertise, else the orchestrator's
// name on the workers' network when it runs in a container (with --runtime docker), else the
// server's own client URL.
func (d dockerFlags) advertiseURL(ctx context.Context, runtime, clientURL string, logger *slog.Logger) string {
	if d.natsAdvertise != "" {
		return d.natsAdvertise
	}
	if runtime != "docker" {
		return clientURL
	}
	me := self(ctx, logger)
	if me == nil {
		return clientURL
	}
	port := strconv.Itoa(defaultNATSPort)
	if _, p, err := net.SplitHostPort(strings.TrimPrefix(clientURL, "nats://")); err == nil {
		port = p
	}
	return "nats://" + net.JoinHostPort(selfName(me, d.workerNetwork(me)), port)
}

// selfName is a name of container c that resolves on network: its first alias there (the
// Compose service name), else its container name.
func selfName(c *container.InspectResponse, network string) string {
	if c.NetworkSettings != nil {
		if ep, ok := c.NetworkSettings.Networks[network]; ok && ep != nil {
			for _, a := range ep.Aliases {
				if a != "" && !strings.HasPrefix(c.ID, a) {
					return a
				}
			}
		}
	}
	return strings.TrimPrefix(c.Name, "/")
}

// workerNetwork is --docker-network, else the network of the container the orchestrator runs
// in, else "rideshare".
func (d dockerFlags) workerNetwork(me *container.InspectResponse) string {
	if d.network != "" {
		return d.network
	}
	if me != nil && me.HostConfig != nil {
		if m := string(me.HostConfig.NetworkMode); m != "" && m != "default" && m != "bridge" {
			return m
		}
		if me.NetworkSettings != nil {
			for name := range me.NetworkSettings.Networks {
				if name != "bridge" {
					return name
				}
			}
		}
	}
	return defaultDockerNetwork
}

// workerStack is --docker-stack, else the Compose project (or the name) of the container the
// orchestrator runs in, else "rideshare".
func (d dockerFlags) workerStack(me *container.InspectResponse) string {
	switch {
	case d.stack != "":
		return d.stack
	case me == nil:
		return defaultDockerStack
	case me.Config != nil && me.Config.Labels["com.docker.compose.project"] != "":
		return me.Config.Labels["com.docker.compose.project"]
	}
	return strings.TrimPrefix(me.Name, "/")
}

// runtime builds (does not open) the Docker runtime these flags describe.
func (d dockerFlags) runtime(me *container.InspectResponse, workerArgs func(id, dir string) []string) *dockerrt.Runtime {
	image := d.image
	if image == "" {
		image = defaultDockerImage
	}
	if workerArgs == nil {
		workerArgs = func(string, string) []string { return nil }
	}
	rt := dockerrt.New(image, d.workerStack(me), workerArgs)
	rt.Network = d.workerNetwork(me)
	rt.ExtraHosts = nil
	for _, h := range strings.Split(d.addHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			rt.ExtraHosts = append(rt.ExtraHosts, h)
		}
	}
	// In a Compose project the workers are one-off containers of the orchestrator's service:
	// `docker-compose down` removes them with the rest.
	rt.Labels = dockerrt.ComposeLabels(me)
	rt.KeepWorkers = d.keepWorkers
	if d.stopTimeout > 0 {
		rt.StopTimeout = d.stopTimeout
	}
	return rt
}

// openDockerRuntime runs workers as containers of the rideshare image.
func openDockerRuntime(ctx context.Context, cfg upConfig, workerArgs func(id, dir string) []string, logger *slog.Logger) (*dockerrt.Runtime, error) {
	me := self(ctx, logger)
	rt := cfg.docker.runtime(me, workerArgs)
	rt.Logger = logger
	rt.LogOutput = os.Stderr // like child processes: the workers' logs with the orchestrator's
	if err := rt.Open(ctx); err != nil {
		return nil, fmt.Errorf("--runtime docker: %w", err)
	}
	logger.Info("workers run as containers", "image", rt.Image, "network", rt.Network, "stack", rt.Stack,
		"keep_workers", rt.KeepWorkers, "in_container", me != nil)
	return rt, nil
}
