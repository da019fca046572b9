package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/cmd/rideshare/system"

	"github.com/rideshare/rideshare/orchestrator"
)

func withData(dir string) stackOpt { return func(c *system.Config) { c.Data = dir } }

// Stopping `rideshare up` and starting it again on the same data directory loses nothing:
// the new workers rebuild their copies from the durable sync log.
func TestRestartOnSameDataKeepsEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	dir := t.TempDir()
	st := mustStack(t, withData(dir))
	mustCall(t, 201, "PUT", st.GatewayURL+"/api/v1/users", map[string]string{"username": "alice", "password": sha1hex(1)})
	mustCall(t, 201, "POST", st.GatewayURL+"/api/v1/rides", map[string]any{"created_by": "alice", "timestamp": "01-01-2031:00-00-10", "source": 3, "destination": 4})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = mustStack(t, withData(dir))
	if got := string(mustCall(t, 200, "GET", st.GatewayURL+"/api/v1/users", nil)); got != `["alice"]` {
		t.Fatalf("users after restart: %s", got)
	}
	var ride struct {
		RideID    int    `json:"rideId"`
		CreatedBy string `json:"created_by"`
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", st.GatewayURL+"/api/v1/rides/1", nil), &ride); err != nil || ride.CreatedBy != "alice" {
		t.Fatalf("ride 1 after restart: %+v (%v)", ride, err)
	}
	// Ids keep rising across the restart.
	resp := mustCall(t, 201, "POST", st.GatewayURL+"/api/v1/rides", map[string]any{"created_by": "alice", "timestamp": "01-01-2031:00-00-10", "source": 3, "destination": 4})
	_ = resp
	mustCall(t, 200, "GET", st.GatewayURL+"/api/v1/rides/2", nil)
}

// ZooKeeper restarted (killed and started again) under a write load: workers keep their
// sessions or register again, writes keep being acknowledged, and failover still works.
func TestZooKeeperRestart(t *testing.T) {
	if testing.Short() || os.Getenv("RIDESHARE_SKIP_ZK") == "1" {
		t.Skip("needs ZooKeeper (make services)")
	}
	if os.Getenv("RIDESHARE_ZK") != "" {
		t.Skip("restarts only the ZooKeeper of scripts/services.sh")
	}
	st := mustStack(t, withZK(t), withSlaves(2), func(c *system.Config) { c.SessionTimeout = 4 * time.Second })
	load := startWriteLoad(t, st, 4)
	load.waitAcks(t, 20, 30*time.Second)
	out, err := exec.Command("bash", "../../../scripts/services.sh", "restart-zk").CombinedOutput()
	if err != nil {
		t.Fatalf("restart-zk: %v\n%s", err, out)
	}
	load.waitAcks(t, 50, 30*time.Second)
	waitWorkers(t, st, 3, false)
	old := postPIDs(t, st.OrchestratorURL+"/api/v1/crash/master")[0]
	gone(t, st, old)
	load.waitAcks(t, 20, 30*time.Second)
	acked := load.finish()
	checkReplicas(t, st, settled(t, st, 3), acked)
}

// A new orchestrator on the same broker, coordinator and runtime (what a restarted
// orchestrator finds) adopts the running workers: the same PIDs, no extra worker, no data
// lost.
func TestOrchestratorRestartAdoptsRunningWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	st := mustStack(t, withSlaves(2))
	before := settled(t, st, 3)
	mustCall(t, 201, "PUT", st.GatewayURL+"/api/v1/users", map[string]string{"username": "kept", "password": sha1hex(3)})
	old := st.Orchestrator
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	o := orchestrator.New(old.Broker, old.Coord, old.Runtime, old.Log)
	o.Slaves, o.Logger = 2, old.Logger
	if err := o.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	srv := httptest.NewServer(o.Handler())
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := o.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	pids := func(ws []orchestrator.WorkerInfo) []int {
		var out []int
		for _, w := range ws {
			out = append(out, w.PID)
		}
		sort.Ints(out)
		return out
	}
	want := pids(before)
	// Several reconciles later the pool is still exactly the adopted one.
	for range 3 {
		body := mustCall(t, 200, "POST", srv.URL+"/api/v1/db/read", rideshare.Read{Table: "users", Columns: []string{"username"}, Where: rideshare.Where{"username": "kept"}})
		if !strings.Contains(string(body), `"kept"`) {
			t.Fatalf("user written before the restart not read after it: %s", body)
		}
		if got := pids(o.Workers()); !slices.Equal(got, want) {
			t.Fatalf("workers after restart %v, want the same %v", got, want)
		}
		time.Sleep(o.Poll) // let the supervisor reconcile again before looking once more
	}
	mustCall(t, 200, "POST", srv.URL+"/api/v1/db/write", rideshare.Write{Table: "users", Insert: map[string]any{"username": "after", "password": sha1hex(4)}})
}

// ZooKeeper down for longer than the session timeout: every session expires, the workers
// exit, and once ZooKeeper is back the orchestrator (whose own session expired too) opens a
// new one and supervises again: new workers, writes acknowledged, a crashed slave replaced.
// Before the orchestrator renewed its session, it failed every round for good (found by
// TestChaosRabbitMQZooKeeper).
func TestZooKeeperOutageLongerThanTheSession(t *testing.T) {
	if testing.Short() || os.Getenv("RIDESHARE_SKIP_ZK") == "1" {
		t.Skip("needs ZooKeeper (make services)")
	}
	if os.Getenv("RIDESHARE_ZK") != "" {
		t.Skip("stops only the ZooKeeper of scripts/services.sh")
	}
	zk := func(verb string) {
		t.Helper()
		if out, err := exec.Command("bash", "../../../scripts/services.sh", verb).CombinedOutput(); err != nil {
			t.Fatalf("services.sh %s: %v\n%s", verb, err, out)
		}
	}
	st := mustStack(t, withZK(t), withSlaves(1), func(c *system.Config) { c.SessionTimeout = 2 * time.Second })
	before := settled(t, st, 2)
	mustCall(t, 201, "PUT", st.GatewayURL+"/api/v1/users", map[string]string{"username": "before", "password": sha1hex(1)})

	zk("stop-zk")
	t.Cleanup(func() { zk("start-zk") }) // never leave the machine without it
	for _, w := range before {
		eventually(t, 30*time.Second, fmt.Sprintf("worker %s (pid %d) to exit with its session", w.ID, w.PID), func() bool {
			return syscall.Kill(w.PID, 0) != nil
		})
	}
	zk("start-zk")

	after := settled(t, st, 2)
	for _, w := range after {
		for _, b := range before {
			if w.PID == b.PID {
				t.Fatalf("worker %s (pid %d) outlived its session", w.ID, w.PID)
			}
		}
	}
	mustCall(t, 201, "PUT", st.GatewayURL+"/api/v1/users", map[string]string{"username": "after", "password": sha1hex(2)})
	var users []string
	if err := json.Unmarshal(mustCall(t, 200, "GET", st.GatewayURL+"/api/v1/users", nil), &users); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(users, "before") || !slices.Contains(users, "after") {
		t.Fatalf("users after the outage: %v, want before and after", users)
	}
	slave := postPIDs(t, st.OrchestratorURL+"/api/v1/crash/slave")[0]
	gone(t, st, slave)
	settled(t, st, 2)
}
