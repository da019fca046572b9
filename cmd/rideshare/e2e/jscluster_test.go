package e2e

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/cmd/rideshare/systemtest"
	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/worker/snapshot"
)

// With --nats, the orchestrator embeds no server: it and its workers use an existing JetStream
// cluster (three of Debian's nats-server, token and route credentials required), and the sync
// log, the coordination buckets and the snapshots are kept on three replicas. SIGKILL of the
// server leading the sync log, under a steady write load, three times in a row, each time
// restarted: writes are acknowledged again, the restarted server catches up, and every
// acknowledged write is on every replica exactly once.
func TestJetStreamClusterSurvivesTheLossOfAServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS cluster")
	}
	cl := systemtest.StartNATSCluster(t, 3)
	st := mustStack(t, cl.Option(), withSlaves(1))
	if st.NATS != nil {
		t.Fatal("an embedded NATS server runs beside --nats")
	}
	for _, stream := range []string{synclog.Stream, "KV_rideshare_coord", "KV_rideshare_coord_persist", "OBJ_" + snapshot.Bucket} {
		info, err := cl.StreamInfo(stream)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s has %d replicas, want 3", stream, info.Config.Replicas)
		}
	}

	// This node embeds no NATS server, so it leads no stream.
	var nodes []orchestrator.NodeStatus
	if err := json.Unmarshal(mustCall(t, 200, "GET", st.OrchestratorURL+"/api/v1/cluster", nil), &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].LogLeader {
		t.Errorf("cluster view with --nats: %+v, want one node that is not the log's leader", nodes)
	}

	load := startWriteLoad(t, st, 4)
	load.waitAcks(t, 20, 30*time.Second)
	for i := range 3 {
		info, err := cl.StreamInfo(synclog.Stream)
		if err != nil {
			t.Fatal(err)
		}
		leader := info.Cluster.Leader
		cl.Kill(leader)
		for _, stream := range []string{synclog.Stream, "KV_rideshare_coord", "KV_rideshare_coord_persist"} {
			eventually(t, 30*time.Second, "a new leader for "+stream, func() bool {
				info, err := cl.StreamInfo(stream)
				return err == nil && info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != leader
			})
		}
		d := load.waitAcks(t, 20, time.Minute)
		t.Logf("kill %d: nats-server %s (the sync log's leader) killed; writes acknowledged again after %v", i+1, leader, d.Round(time.Millisecond))
		cl.Restart(leader)
		eventually(t, time.Minute, "the restarted server to hold the whole log", func() bool {
			info, err := cl.StreamInfo(synclog.Stream)
			if err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
				return false
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current || r.Offline {
					return false
				}
			}
			return true
		})
	}
	acked := load.finish()
	ws := settled(t, st, 2)
	checkReplicas(t, st, ws, acked)
	t.Logf("%d writes acknowledged, %d not (in flight during a kill)", len(acked), load.failed)
}
