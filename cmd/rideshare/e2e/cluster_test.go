package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/cmd/rideshare/systemtest"
	"github.com/rideshare/rideshare/orchestrator"
)

// Three orchestrator nodes, each a process of its own (`rideshare up --orchestrators 3`), their
// embedded NATS servers one JetStream cluster with the sync log on three replicas, one node
// supervising. Each fault test runs under a steady write load through the users' client (which
// moves to another node when one is down) and ends by checking that every acknowledged write
// is on every worker's copy exactly once.

func mustCluster(t *testing.T, opts ...stackOpt) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("runs three orchestrator nodes")
	}
	st := mustStack(t, append([]stackOpt{systemtest.Orchestrators(3), withSlaves(1)}, opts...)...)
	if st.Nodes == nil || len(st.Nodes.Nodes) != 3 {
		t.Fatal("no three orchestrator nodes")
	}
	return st
}

// clusterHTTP bounds each look: a paused node takes the connection and never answers.
var clusterHTTP = &http.Client{Timeout: 3 * time.Second}

// clusterGet GETs path from the first node that answers it with 200.
func clusterGet(tb testing.TB, st *stack, path string, into any) {
	tb.Helper()
	if err := tryClusterGet(st, path, into); err != nil {
		tb.Fatal(err)
	}
}

// tryClusterGet is clusterGet for a condition that is polled: while a node is being lost the
// others may answer 503 for a while (their JetStream electing a leader).
func tryClusterGet(st *stack, path string, into any) error {
	var last error
	for _, n := range st.Nodes.Nodes {
		if last = getFrom(n, path, into); last == nil {
			return nil
		}
	}
	return fmt.Errorf("no node answered %s: %v", path, last)
}

// getFrom GETs path from node and decodes a 200 answer into into.
func getFrom(node *system.Node, path string, into any) error {
	resp, err := clusterHTTP.Get(node.URL + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s%s: status %d", node.URL, path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

// clusterWorkers is the workers view of a node that answers.
func clusterWorkers(tb testing.TB, st *stack) []orchestrator.WorkerInfo {
	tb.Helper()
	var ws []orchestrator.WorkerInfo
	clusterGet(tb, st, "/api/v1/workers", &ws)
	return ws
}

func clusterView(tb testing.TB, st *stack) []orchestrator.NodeStatus {
	tb.Helper()
	var nodes []orchestrator.NodeStatus
	clusterGet(tb, st, "/api/v1/cluster", &nodes)
	return nodes
}

// nodeWhere waits until the cluster view names a live node with the property and returns it.
func nodeWhere(t *testing.T, st *stack, what string, has func(orchestrator.NodeStatus) bool) *system.Node {
	t.Helper()
	var name string
	eventually(t, time.Minute, what, func() bool {
		var view []orchestrator.NodeStatus
		if err := tryClusterGet(st, "/api/v1/cluster", &view); err != nil {
			t.Log(err)
			return false
		}
		for _, n := range view {
			if n.Up && has(n) {
				name = n.Name
				return true
			}
		}
		return false
	})
	return clusterNode(t, st, name)
}

func clusterNode(t *testing.T, st *stack, name string) *system.Node {
	t.Helper()
	for _, n := range st.Nodes.Nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no node %s", name)
	return nil
}

func supervisorNode(t *testing.T, st *stack) *system.Node {
	t.Helper()
	return nodeWhere(t, st, "a supervising node", func(n orchestrator.NodeStatus) bool { return n.Supervisor })
}

// logStream is the sync log's stream, seen through the deployment's NATS servers.
func logStream(t *testing.T, st *stack) (*jetstream.StreamInfo, error) {
	t.Helper()
	return streamInfo(t, st, synclog.Stream)
}

// streamInfo is the named stream, seen through the deployment's NATS servers.
func streamInfo(t *testing.T, st *stack, stream string) (*jetstream.StreamInfo, error) {
	t.Helper()
	nc, err := st.ConnectNATS("test", nil)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// replicasCurrent waits until the log's stream has a leader and two current replicas.
func replicasCurrent(t *testing.T, st *stack, what string) {
	t.Helper()
	eventually(t, 2*time.Minute, what, func() bool {
		info, err := logStream(t, st)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
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

func restartNode(t *testing.T, st *stack, n *system.Node) {
	t.Helper()
	if err := st.Nodes.Start(n); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, n.Name+" up again", func() bool {
		resp, err := clusterHTTP.Get(n.URL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// adopted checks that every worker of before whose process still runs is in after with the
// same PID (adopted, not started again), that as many new workers are in after as before's
// are gone (each replaced once), and that no worker is listed twice.
func adopted(t *testing.T, before, after []orchestrator.WorkerInfo) {
	t.Helper()
	now := map[string]int{}
	for _, w := range after {
		if _, dup := now[w.ID]; dup {
			t.Errorf("worker %s listed twice: %+v", w.ID, after)
		}
		now[w.ID] = w.PID
	}
	gone, kept := 0, 0
	for _, w := range before {
		if err := syscall.Kill(w.PID, 0); err != nil {
			gone++
			t.Logf("worker %s (pid %d, %s) stopped meanwhile: %v", w.ID, w.PID, w.Role, err)
			continue
		}
		if pid, ok := now[w.ID]; !ok || pid != w.PID {
			t.Errorf("worker %s (pid %d) runs but is not adopted: after %+v", w.ID, w.PID, after)
		}
		kept++
	}
	if started := len(after) - kept; started != gone {
		t.Errorf("%d workers gone, %d started: before %v, after %v", gone, started, workerIDs(before), workerIDs(after))
	}
}

func workerIDs(ws []orchestrator.WorkerInfo) []string {
	var ids []string
	for _, w := range ws {
		ids = append(ids, w.ID)
	}
	slices.Sort(ids)
	return ids
}

// The log is on three replicas, every node is in the view, exactly one supervises, and a
// write acknowledged through one node is seen by a strong read through each of the others.
func TestClusterOfThreeNodes(t *testing.T) {
	st := mustCluster(t)
	info, err := logStream(t, st)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 {
		t.Fatalf("sync log on %d replicas, want 3", info.Config.Replicas)
	}
	replicasCurrent(t, st, "the log's replicas current")
	eventually(t, 30*time.Second, "three nodes up, one supervising, one leading the log", func() bool {
		var view []orchestrator.NodeStatus
		if err := tryClusterGet(st, "/api/v1/cluster", &view); err != nil {
			return false
		}
		up, sup, lead := 0, 0, 0
		for _, n := range view {
			if n.Up {
				up++
			}
			if n.Supervisor {
				sup++
			}
			if n.LogLeader {
				lead++
			}
		}
		return len(view) == 3 && up == 3 && sup == 1 && lead == 1
	})
	for i, a := range st.Nodes.Nodes {
		name := fmt.Sprintf("cluster%d", i)
		mustCall(t, 200, "POST", a.URL+"/api/v1/db/write", map[string]any{"table": "users",
			"insert": map[string]any{"username": name, "password": sha1hex(i)}})
		for _, b := range st.Nodes.Nodes {
			var res struct {
				Rows []map[string]any `json:"rows"`
			}
			out := mustCall(t, 200, "POST", b.URL+"/api/v1/db/read", map[string]any{"table": "users",
				"columns": []string{"username"}, "where": map[string]any{"username": name}})
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatal(err)
			}
			if len(res.Rows) != 1 {
				t.Errorf("write through %s, strong read through %s: %d rows, want 1", a.Name, b.Name, len(res.Rows))
			}
		}
	}
	// The gateway's services are given every node.
	mustCall(t, 201, "PUT", st.GatewayURL+"/api/v1/users", map[string]string{"username": "viagateway", "password": sha1hex(1)})
}

// SIGKILL of the node whose NATS server leads the sync log, ten times in a row, each time
// restarted: writes are acknowledged again, and nothing acknowledged is lost.
func TestClusterLogLeaderNodeKilledTenTimes(t *testing.T) {
	st := mustCluster(t)
	load := startWriteLoad(t, st, 4)
	load.waitAcks(t, 20, time.Minute)
	for i := range 10 {
		leader := nodeWhere(t, st, "the node leading the log", func(n orchestrator.NodeStatus) bool { return n.LogLeader })
		pid := leader.PID()
		if err := leader.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		first := load.waitAcks(t, 1, time.Minute)
		d := first + load.waitAcks(t, 19, time.Minute)
		t.Logf("kill %d: %s (pid %d, leading the log) killed; first write acknowledged %v later, 20 %v later",
			i+1, leader.Name, pid, first.Round(time.Millisecond), d.Round(time.Millisecond))
		restartNode(t, st, leader)
		replicasCurrent(t, st, "the restarted node to hold the whole log")
	}
	acked := load.finish()
	checkReplicas(t, st, settled(t, st, 2), acked)
	t.Logf("%d writes acknowledged, %d not (in flight during a kill)", len(acked), load.failed)
}

// SIGKILL of the supervising node: another supervises, no worker is started twice, and a
// slave killed afterwards is still replaced. The role is handed over by the embedded
// coordinator, and by ZooKeeper when the nodes are given one.
func TestClusterSupervisorNodeKilled(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { supervisorNodeKilled(t) })
	t.Run("zookeeper", func(t *testing.T) {
		if os.Getenv("RIDESHARE_SKIP_ZK") == "1" {
			t.Skip("RIDESHARE_SKIP_ZK=1")
		}
		supervisorNodeKilled(t, withZK(t))
	})
}

func supervisorNodeKilled(t *testing.T, opts ...stackOpt) {
	st := mustCluster(t, opts...)
	load := startWriteLoad(t, st, 2)
	load.waitAcks(t, 20, time.Minute)
	before := waitWorkers(t, st, 2, false) // under load: not all at the head
	old := supervisorNode(t, st)
	if err := old.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	next := nodeWhere(t, st, "another node supervising", func(n orchestrator.NodeStatus) bool {
		return n.Supervisor && n.Name != old.Name
	})
	load.waitAcks(t, 20, time.Minute)
	// The workers the dead node started run on, adopted: none was started again. (One may
	// have stopped meanwhile on its own, a master whose append had an unknown outcome when
	// the log's leader was on the killed node; then it alone is replaced.)
	adopted(t, before, waitWorkers(t, st, 2, false))
	var slave orchestrator.WorkerInfo
	for _, w := range clusterWorkers(t, st) {
		if w.Role == "slave" {
			slave = w
		}
	}
	if err := syscall.Kill(slave.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gone(t, st, slave.PID)
	ws := waitWorkers(t, st, 2, false)
	if ids := workerIDs(ws); slices.Contains(ids, slave.ID) || len(ids) != 2 {
		t.Fatalf("after the slave's death under %s: %v", next.Name, ids)
	}
	restartNode(t, st, old)
	acked := load.finish()
	checkReplicas(t, st, settled(t, st, 2), acked)
}

// SIGSTOP of the supervising node until another took over, then SIGCONT: the old one finds
// its role gone, and starts and kills no worker.
func TestClusterSupervisorNodePaused(t *testing.T) {
	st := mustCluster(t)
	load := startWriteLoad(t, st, 2)
	load.waitAcks(t, 20, time.Minute)
	before := waitWorkers(t, st, 2, false)
	old := supervisorNode(t, st)
	// It leads the log too: when it runs again, its server may read its followers' answers
	// from before the pause as new, and strong reads through it must not trust that.
	moveLeader(t, st, synclog.Stream, old.Name)
	if err := old.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = old.Signal(syscall.SIGCONT) })
	nodeWhere(t, st, "another node supervising", func(n orchestrator.NodeStatus) bool {
		return n.Supervisor && n.Name != old.Name
	})
	// The newest write acknowledged by now: through the others, if any was while it was
	// stopped (the log's leader is elected again first, 4 to 9 s after the stop).
	ts := load.lastAcked()
	resumed := time.Now()
	if err := old.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// A strong read through it at once, of a ride acknowledged before: refused, or it sees
	// the ride.
	code, rows := strongRead(t, old, ts)
	t.Logf("strong read through %s as it resumed, of ride ts=%d: status %d, %d rows", old.Name, ts, code, rows)
	if code == http.StatusOK && rows != 1 {
		t.Errorf("%s answered a strong read without a write acknowledged before it (ts=%d)", old.Name, ts)
	}
	// The resumed node announces itself again and supervises no more.
	eventually(t, 30*time.Second, old.Name+" back, not supervising", func() bool {
		var view []orchestrator.NodeStatus
		if err := tryClusterGet(st, "/api/v1/cluster", &view); err != nil {
			return false
		}
		for _, n := range view {
			if n.Name == old.Name {
				return n.Up && !n.Supervisor
			}
		}
		return false
	})
	load.waitAcks(t, 50, time.Minute) // the old node works on for a while, with the role gone
	// What the old node did since it resumed, from its own record: no worker started,
	// stopped or killed.
	var status struct {
		Events []orchestrator.Event `json:"events"`
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", old.URL+"/api/v1/status", nil), &status); err != nil {
		t.Fatal(err)
	}
	for _, e := range status.Events {
		switch e.Kind {
		case orchestrator.EventWorkerStarted, orchestrator.EventWorkerStopped, orchestrator.EventCrash:
			if !e.Time.Before(resumed) {
				t.Errorf("%s acted after it resumed without the role: %+v", old.Name, e)
			}
		}
	}
	adopted(t, before, waitWorkers(t, st, 2, false))
	acked := load.finish()
	checkReplicas(t, st, settled(t, st, 2), acked)
}

// A node whose data directory is lost while it is down rejoins and copies the log from its
// peers: afterwards it can stand in for another lost node.
func TestClusterNodeWithItsDataLostRejoins(t *testing.T) {
	st := mustCluster(t)
	load := startWriteLoad(t, st, 2)
	load.waitAcks(t, 100, time.Minute)
	n := st.Nodes.Nodes[2]
	if err := n.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(n.Data); err != nil {
		t.Fatal(err)
	}
	load.waitAcks(t, 50, time.Minute)
	restartNode(t, st, n)
	replicasCurrent(t, st, n.Name+" to copy the whole log")
	// With another node lost, the rejoined one's copy makes the majority.
	other := st.Nodes.Nodes[0]
	if err := other.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	load.waitAcks(t, 50, time.Minute)
	restartNode(t, st, other)
	replicasCurrent(t, st, "every replica current")
	acked := load.finish()
	checkReplicas(t, st, settled(t, st, 2), acked)
}
