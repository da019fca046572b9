package dockerrt

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/network"
)

// Disconnect cuts worker id off the workers' network: it keeps running but reaches neither
// the broker nor the coordinator, as on the far side of a network partition. Reconnect heals
// it. For fault injection (`rideshare chaos`); a runtime on the host network cannot do it.
func (r *Runtime) Disconnect(ctx context.Context, id string) error {
	cid, err := r.partitionable(ctx, id)
	if err != nil {
		return err
	}
	if err := r.cli.NetworkDisconnect(ctx, r.Network, cid, true); err != nil {
		return fmt.Errorf("disconnect worker %s from %s: %w", id, r.Network, err)
	}
	return nil
}

// Reconnect puts worker id back on the workers' network.
func (r *Runtime) Reconnect(ctx context.Context, id string) error {
	cid, err := r.partitionable(ctx, id)
	if err != nil {
		return err
	}
	if err := r.cli.NetworkConnect(ctx, r.Network, cid, &network.EndpointSettings{}); err != nil {
		return fmt.Errorf("reconnect worker %s to %s: %w", id, r.Network, err)
	}
	return nil
}

func (r *Runtime) partitionable(ctx context.Context, id string) (string, error) {
	if builtinNetwork(r.Network) {
		return "", fmt.Errorf("workers on network %q cannot be cut off", r.Network)
	}
	return r.containerID(ctx, id)
}
