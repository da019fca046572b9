package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/cmd/rideshare/systemtest"

	"github.com/docker/docker/client"

	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/dockerrt"
	"github.com/rideshare/rideshare/orchestrator/dockerrt/dockertest"
)

// withDocker runs the stack's workers as containers of image, on a network of their own
// named after the stack. The longer session timeout lets workers keep their coordination
// leases while the orchestrator (and its embedded NATS server) restarts; crashes are still
// noticed at once, from the engine.
func withDocker(image, stack string) stackOpt {
	docker := systemtest.Docker(image, stack)
	return func(c *system.Config) {
		docker(c)
		c.SessionTimeout = 10 * time.Second
	}
}

// withNATSListen fixes where the embedded NATS server listens (host:port).
func withNATSListen(addr string) stackOpt {
	return func(c *system.Config) { c.Docker.NATSListen = addr }
}

func mustRideshareImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	return systemtest.RideshareImage(t, cli)
}

// workerList is GET /api/v1/worker/list.
func workerList(t *testing.T, st *stack) []int {
	t.Helper()
	var pids []int
	if err := json.Unmarshal(mustCall(t, 200, "GET", st.OrchestratorURL+"/api/v1/worker/list", nil), &pids); err != nil {
		t.Fatal(err)
	}
	return pids
}

// sameAsEngine checks that worker/list names exactly the PIDs the engine reports for the
// stack's running worker containers.
func sameAsEngine(t *testing.T, cli *client.Client, st *stack, stackName string) {
	t.Helper()
	eventually(t, 10*time.Second, "worker/list to equal the engine's PIDs", func() bool {
		return slices.Equal(workerList(t, st), slices.Sorted(maps.Values(dockertest.Running(t, cli, stackName))))
	})
}

// End to end on the Docker Engine: the stack with `--runtime docker`, its API, crashes,
// worker/list against `docker inspect`, an orchestrator restart, and a clean teardown.
func TestDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end on the Docker Engine")
	}
	cli := dockertest.Client(t)
	image := mustRideshareImage(t, cli)
	stackName := fmt.Sprintf("rstest-e2e-%06x", rand.Uint32()&0xffffff)
	t.Cleanup(func() { // runs after the stacks' own cleanups
		left, err := dockertest.Leftovers(context.Background(), cli, stackName)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Errorf("teardown left behind: %v", left)
		}
	})
	dir := t.TempDir()
	start := time.Now()
	st := mustStack(t, withDocker(image, stackName), withData(dir), withSlaves(2))
	t.Logf("stack up with 3 worker containers in %v", time.Since(start).Round(time.Millisecond))
	gw := st.GatewayURL

	t.Run("a user and a ride created through the gateway read back", func(t *testing.T) {
		mustCall(t, 201, "PUT", gw+"/api/v1/users", map[string]string{"username": "alice", "password": sha1hex(1)})
		mustCall(t, 201, "POST", gw+"/api/v1/rides", map[string]any{"created_by": "alice", "timestamp": "01-01-2031:00-00-10", "source": 3, "destination": 4})
		if got := string(mustCall(t, 200, "GET", gw+"/api/v1/users", nil)); got != `["alice"]` {
			t.Fatalf("users: %s", got)
		}
		var ride struct {
			RideID    int    `json:"rideId"`
			CreatedBy string `json:"created_by"`
			Source    int    `json:"source"`
		}
		if err := json.Unmarshal(mustCall(t, 200, "GET", gw+"/api/v1/rides/1", nil), &ride); err != nil || ride.CreatedBy != "alice" || ride.Source != 3 {
			t.Fatalf("ride 1: %+v (%v)", ride, err)
		}
	})

	t.Run("worker/list equals the PIDs docker inspect reports", func(t *testing.T) {
		settled(t, st, 3)
		sameAsEngine(t, cli, st, stackName)
	})

	t.Run("crash/slave: the highest-PID slave's container is replaced by a new one", func(t *testing.T) {
		ws := settled(t, st, 3)
		highest := 0
		for _, w := range ws {
			if w.Role == "slave" {
				highest = max(highest, w.PID)
			}
		}
		before := dockertest.Running(t, cli, stackName)
		killed := postPIDs(t, st.OrchestratorURL+"/api/v1/crash/slave")[0]
		if killed != highest {
			t.Fatalf("crash/slave killed %d, the highest slave PID is %d", killed, highest)
		}
		gone(t, st, killed)
		settled(t, st, 3)
		after := dockertest.Running(t, cli, stackName)
		if slices.Contains(slices.Collect(maps.Values(after)), killed) {
			t.Fatalf("PID %d still runs", killed)
		}
		fresh := 0
		for id := range after {
			if _, ok := before[id]; !ok {
				fresh++
			}
		}
		if fresh != 1 || len(after) != 3 {
			t.Fatalf("%d new containers, %d running; want 1 and 3", fresh, len(after))
		}
		sameAsEngine(t, cli, st, stackName)
	})

	t.Run("crash/master: the lowest-PID slave becomes master, a new container replaces the old", func(t *testing.T) {
		ws := settled(t, st, 3)
		var master, lowest int
		for _, w := range ws {
			switch {
			case w.Role == "master":
				master = w.PID
			case lowest == 0 || w.PID < lowest:
				lowest = w.PID
			}
		}
		if killed := postPIDs(t, st.OrchestratorURL+"/api/v1/crash/master")[0]; killed != master {
			t.Fatalf("crash/master killed %d, the master is %d", killed, master)
		}
		gone(t, st, master)
		ws = settled(t, st, 3)
		if m := masterOf(t, st); m.PID != lowest {
			t.Fatalf("new master has PID %d, the lowest slave PID was %d (workers %+v)", m.PID, lowest, ws)
		}
		sameAsEngine(t, cli, st, stackName)
		if got := string(mustCall(t, 200, "GET", gw+"/api/v1/users", nil)); got != `["alice"]` {
			t.Fatalf("users after failover: %s", got)
		}
	})

	t.Run("a restarted orchestrator adopts the same workers and starts no others", func(t *testing.T) {
		before := settled(t, st, 3)
		containersBefore := dockertest.Running(t, cli, stackName)
		natsAddr := strings.TrimPrefix(st.NATS.ClientURL(), "nats://")
		if _, _, err := net.SplitHostPort(natsAddr); err != nil {
			t.Fatal(err)
		}
		// Stop the orchestrator as a container stop would, but leave its workers running.
		st.Orchestrator.Runtime.(*dockerrt.Runtime).KeepWorkers = true
		stopped := time.Now()
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if got := dockertest.Running(t, cli, stackName); !maps.Equal(got, containersBefore) {
			t.Fatalf("workers after the orchestrator stopped: %v, want %v", got, containersBefore)
		}
		st2 := mustStack(t, withDocker(image, stackName), withData(dir), withSlaves(2), withNATSListen(natsAddr))
		t.Logf("orchestrator back, workers ready, %v after it stopped", time.Since(stopped).Round(time.Millisecond))
		after := settled(t, st2, 3)
		pids := func(ws []orchestrator.WorkerInfo) map[string]int {
			m := map[string]int{}
			for _, w := range ws {
				m[w.ID] = w.PID
			}
			return m
		}
		if !maps.Equal(pids(after), pids(before)) {
			t.Fatalf("workers after the restart %+v, before %+v", after, before)
		}
		time.Sleep(time.Second) // a few reconcile rounds: nothing more may start
		if got := dockertest.Running(t, cli, stackName); !maps.Equal(got, containersBefore) {
			t.Fatalf("containers after the restart %v, before %v", got, containersBefore)
		}
		sameAsEngine(t, cli, st2, stackName)
		if got := string(mustCall(t, 200, "GET", st2.GatewayURL+"/api/v1/users", nil)); got != `["alice"]` {
			t.Fatalf("users after the restart: %s", got)
		}
		mustCall(t, 201, "PUT", st2.GatewayURL+"/api/v1/users", map[string]string{"username": "bob", "password": sha1hex(2)})
		if got := string(mustCall(t, 200, "GET", st2.GatewayURL+"/api/v1/users", nil)); got != `["alice","bob"]` {
			t.Fatalf("users after a write following the restart: %s", got)
		}
	})
	// st2's cleanup stops the workers and removes the network; the first cleanup above checks.
}
