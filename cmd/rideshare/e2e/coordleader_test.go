package e2e

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/orchestrator"
)

// The workers' coordination buckets (their leases and the master designation): each a
// JetStream stream of three replicas with a leader of its own.
var coordStreams = []string{"KV_rideshare_coord", "KV_rideshare_coord_persist"}

// moveLeader makes the NATS server named to lead stream (a leader step-down naming the
// preferred successor) and waits until it does.
func moveLeader(t *testing.T, st *stack, stream, to string) {
	t.Helper()
	nc, err := st.ConnectNATS("test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	body := fmt.Sprintf(`{"placement":{"preferred":%q}}`, to)
	eventually(t, time.Minute, stream+" led by "+to, func() bool {
		leader := streamLeader(t, st, stream)
		if leader == to {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if m, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, []byte(body)); err == nil {
			t.Logf("%s: leader %s, step-down towards %s: %s", stream, leader, to, m.Data)
		}
		return false
	})
}

// streamLeader is the NATS server leading stream ("" while it has none, or on error).
func streamLeader(t *testing.T, st *stack, stream string) string {
	t.Helper()
	info, err := streamInfo(t, st, stream)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// SIGKILL of a node that neither supervises nor leads the log, but leads the workers'
// coordination buckets: the buckets elect new leaders, and meanwhile no worker loses its
// session or stops (a slave once did, its lease not refreshed in time), writes go on, and
// nothing acknowledged is lost.
func TestClusterCoordinationLeaderNodeKilled(t *testing.T) {
	st := mustCluster(t)
	load := startWriteLoad(t, st, 2)
	load.waitAcks(t, 20, time.Minute)
	victim := nodeWhere(t, st, "a node neither supervising nor leading the log", func(n orchestrator.NodeStatus) bool {
		return !n.Supervisor && !n.LogLeader
	})
	for _, s := range coordStreams {
		moveLeader(t, st, s, victim.Name)
	}
	before := waitWorkers(t, st, 2, false)
	killed := time.Now()
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, s := range coordStreams {
		eventually(t, time.Minute, s+" led by another node", func() bool {
			l := streamLeader(t, st, s)
			return l != "" && l != victim.Name
		})
	}
	t.Logf("coordination buckets led again %v after the kill", time.Since(killed).Round(time.Millisecond))
	// The fault's length, not a wait for an event: a session not refreshed while the buckets
	// had no leader ends at most one session timeout after the kill.
	time.Sleep(time.Until(killed.Add(system.ClusterSessionTimeout + 2*time.Second)))
	load.waitAcks(t, 20, time.Minute)
	for _, w := range before {
		if err := syscall.Kill(w.PID, 0); err != nil {
			t.Errorf("worker %s (pid %d, %s) stopped after %s was killed: %v", w.ID, w.PID, w.Role, victim.Name, err)
		}
	}
	adopted(t, before, waitWorkers(t, st, 2, false))
	restartNode(t, st, victim)
	acked := load.finish()
	checkReplicas(t, st, settled(t, st, 2), acked)
}
