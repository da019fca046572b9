// Package nodereg keeps the orchestrator nodes' announcements (orchestrator.NodeRegistry) in a
// JetStream key-value bucket, one key per node, replicated like the sync log: every node reads
// the whole cluster from it, whichever node it asks.
package nodereg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare/rideshare/orchestrator"
)

// Bucket is the key-value bucket of the nodes' entries.
const Bucket = "rideshare_nodes"

// Registry is orchestrator.NodeRegistry on JetStream.
type Registry struct {
	kv jetstream.KeyValue
}

var _ orchestrator.NodeRegistry = (*Registry)(nil)

// Open creates the bucket with the given replicas, or binds to it if it exists.
func Open(ctx context.Context, nc *nats.Conn, replicas int) (*Registry, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, History: 1, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("node registry: %w", err)
	}
	return &Registry{kv: kv}, nil
}

// Announce records n under its name.
func (r *Registry) Announce(ctx context.Context, n orchestrator.NodeEntry) error {
	data, err := json.Marshal(n)
	if err != nil {
		return err
	}
	_, err = r.kv.Put(ctx, n.Name, data)
	return err
}

// Entries lists every node's last announcement; Seen is when the bucket stored it.
func (r *Registry) Entries(ctx context.Context) ([]orchestrator.NodeEntry, error) {
	keys, err := r.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []orchestrator.NodeEntry
	for k := range keys.Keys() {
		e, err := r.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var n orchestrator.NodeEntry
		if err := json.Unmarshal(e.Value(), &n); err != nil {
			return nil, fmt.Errorf("node %s: %w", k, err)
		}
		n.Seen = e.Created()
		out = append(out, n)
	}
	return out, nil
}
