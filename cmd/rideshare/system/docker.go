package system

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rideshare/rideshare/orchestrator/dockerrt"
)

// DockerConfig is `--runtime docker`'s, and where workers reach the embedded NATS server (a
// container cannot reach the host's 127.0.0.1). Empty fields take defaults that depend on
// whether the orchestrator itself runs in a container, which the Docker runtime finds out
// once, when it opens.
type DockerConfig struct {
	// NATSListen is where the NATS server listens (host:port); empty: 127.0.0.1 on a free port
	// for child processes; with Docker the host's address on the workers' network, or
	// 0.0.0.0:4222 in a container.
	NATSListen string
	// NATSAdvertise is the NATS URL given to workers; empty: the server's own address, or
	// with Docker in a container the orchestrator's name on the workers' network.
	NATSAdvertise string
	// Image runs the workers (default DefaultImage).
	Image string
	// Network, Stack: see dockerrt.Runtime (empty: found from this process's container).
	Network, Stack string
	// AddHosts are host:address entries for the workers' /etc/hosts.
	AddHosts []string
	// KeepWorkers leaves the worker containers running on Close, for the next orchestrator.
	KeepWorkers bool
	// StopTimeout bounds a worker's clean stop; zero: the runtime's default.
	StopTimeout time.Duration
}

// DefaultImage is the workers' image: the one `make image` builds.
const DefaultImage = "rideshare:latest"

// defaultNATSPort is the NATS server's port when the orchestrator runs in a container: a
// fixed one, so compose files can name it.
const defaultNATSPort = 4222

// runtime builds (does not open) the Docker runtime this config describes.
func (d DockerConfig) runtime(workerArgs func(id, dir string) []string) *dockerrt.Runtime {
	image := d.Image
	if image == "" {
		image = DefaultImage
	}
	rt := dockerrt.New(image, d.Stack, workerArgs)
	rt.Network = d.Network
	rt.ExtraHosts = nil
	for _, h := range d.AddHosts {
		if h = strings.TrimSpace(h); h != "" {
			rt.ExtraHosts = append(rt.ExtraHosts, h)
		}
	}
	rt.KeepWorkers = d.KeepWorkers
	if d.StopTimeout > 0 {
		rt.StopTimeout = d.StopTimeout
	}
	return rt
}

// natsListen is where the embedded NATS server listens: NATSListen, else 127.0.0.1 on a free
// port without Docker (drt nil), 0.0.0.0:4222 when the orchestrator runs in a container, and
// the host's address on the workers' network otherwise. Port -1 means a free port.
func (d DockerConfig) natsListen(ctx context.Context, drt *dockerrt.Runtime) (string, int, error) {
	switch {
	case d.NATSListen != "":
		return hostPort(d.NATSListen)
	case drt == nil:
		return "127.0.0.1", -1, nil
	case drt.Self() != nil:
		return "0.0.0.0", defaultNATSPort, nil
	}
	gw, err := drt.Gateway(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("--runtime docker: %w", err)
	}
	return gw, -1, nil
}

// natsAdvertise is the NATS URL given to workers: NATSAdvertise, else the orchestrator's name
// on the workers' network when it runs in a container, else the server's own client URL.
func (d DockerConfig) natsAdvertise(drt *dockerrt.Runtime, clientURL string) string {
	if d.NATSAdvertise != "" {
		return d.NATSAdvertise
	}
	if drt == nil || drt.Self() == nil {
		return clientURL
	}
	port := strconv.Itoa(defaultNATSPort)
	if _, p, err := net.SplitHostPort(strings.TrimPrefix(clientURL, "nats://")); err == nil {
		port = p
	}
	return "nats://" + net.JoinHostPort(drt.SelfName(), port)
}
