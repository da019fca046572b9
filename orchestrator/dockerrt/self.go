package dockerrt

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
)

// Labels Docker Compose puts on the containers of a project.
const (
	composeProject = "com.docker.compose.project"
	composeService = "com.docker.compose.service"
	composeOneOff  = "com.docker.compose.oneoff"
)

// containerIDInMounts matches the files the engine bind-mounts into every container
// (/etc/hostname, /etc/hosts, /etc/resolv.conf) from its directory for that container.
var containerIDInMounts = regexp.MustCompile(`/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)`)

// Self returns the container this process runs in, or nil when it does not run in a
// container of the engine cli talks to (a process on the host, another engine).
func Self(ctx context.Context, cli *client.Client) (*container.InspectResponse, error) {
	var candidates []string
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		if m := containerIDInMounts.FindSubmatch(b); m != nil {
			candidates = append(candidates, string(m[1]))
		}
	}
	if _, err := os.Stat("/.dockerenv"); err == nil || len(candidates) > 0 {
		// The engine names a container's host after its short ID unless told otherwise.
		if h, err := os.Hostname(); err == nil {
			candidates = append(candidates, h)
		}
	}
	for _, c := range candidates {
		info, err := cli.ContainerInspect(ctx, c)
		if cerrdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("inspect own container %s: %w", c, err)
		}
		return &info, nil
	}
	return nil, nil
}

// ComposeLabels returns, for a container of a Docker Compose project, the labels that make
// another container a one-off container of the same project and service (as `docker-compose
// run` makes them): `docker-compose down` then stops and removes the workers with the rest of
// the project, `docker-compose ps` shows them, and `up`/`restart` leave them alone. Nil when
// c is not a Compose container.
func ComposeLabels(c *container.InspectResponse) map[string]string {
	if c == nil || c.Config == nil || c.Config.Labels[composeProject] == "" {
		return nil
	}
	return map[string]string{
		composeProject: c.Config.Labels[composeProject],
		composeService: c.Config.Labels[composeService],
		composeOneOff:  "True",
	}
}

// Self is the container this process runs in, as Open found it; nil on a host. Valid after
// Open.
func (r *Runtime) Self() *container.InspectResponse { return r.self }

// SelfName is a name of this process's container that resolves on the workers' network (its
// first alias there, the Compose service name, else its container name); "" on a host.
func (r *Runtime) SelfName() string {
	c := r.self
	if c == nil {
		return ""
	}
	if c.NetworkSettings != nil {
		if ep, ok := c.NetworkSettings.Networks[r.Network]; ok && ep != nil {
			for _, a := range ep.Aliases {
				if a != "" && !strings.HasPrefix(c.ID, a) {
					return a
				}
			}
		}
	}
	return strings.TrimPrefix(c.Name, "/")
}

// selfNetwork is the network of container me (its first user-defined one), else
// DefaultNetwork.
func selfNetwork(me *container.InspectResponse) string {
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
	return DefaultNetwork
}

// selfStack is the Compose project (else the name) of container me, else DefaultStack.
func selfStack(me *container.InspectResponse) string {
	switch {
	case me == nil:
		return DefaultStack
	case me.Config != nil && me.Config.Labels[composeProject] != "":
		return me.Config.Labels[composeProject]
	}
	return strings.TrimPrefix(me.Name, "/")
}
