package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/status"
	"github.com/rideshare/rideshare/orchestrator"
)

// `rideshare status` against a real stack: the workers it lists are the orchestrator's, with
// their lag; after a crash of the master its events show the master lost and the failover
// with its duration, and the table names the new master.
func TestStatusCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a stack")
	}
	st := mustStack(t, withSlaves(2))
	ctx := context.Background()
	look := func(format string) []byte {
		t.Helper()
		var out bytes.Buffer
		if err := status.Run(ctx, status.Config{Orchestrator: st.OrchestratorURL, Format: format, Events: 20}, &out); err != nil {
			t.Fatalf("status --format %s: %v", format, err)
		}
		return out.Bytes()
	}
	var s orchestrator.Status
	if err := json.Unmarshal(look("json"), &s); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, w := range s.Workers {
		ids = append(ids, w.ID)
	}
	var want []string
	for _, w := range st.Orchestrator.Workers() {
		want = append(want, w.ID)
	}
	slices.Sort(ids)
	slices.Sort(want)
	if !slices.Equal(ids, want) || len(ids) != 3 || s.Workers[0].Role != "master" || len(s.Nodes) != 1 || !s.Nodes[0].Supervisor {
		t.Fatalf("status lists %v (first %+v), nodes %+v; the orchestrator %v", ids, s.Workers[0], s.Nodes, want)
	}
	old := s.Workers[0]

	mustCall(t, http.StatusOK, "POST", st.OrchestratorURL+"/api/v1/crash/master", nil)
	var failover *orchestrator.Event
	eventually(t, 60*time.Second, "a failover event in the status", func() bool {
		if err := json.Unmarshal(look("json"), &s); err != nil {
			t.Fatal(err)
		}
		for _, e := range s.Events {
			if e.Kind == orchestrator.EventFailover {
				failover = &e
				return true
			}
		}
		return false
	})
	if failover.Worker == old.ID || failover.Duration <= 0 {
		t.Fatalf("failover event %+v after crashing %s", failover, old.ID)
	}
	kinds := map[string]bool{}
	for _, e := range s.Events {
		kinds[e.Kind] = true
	}
	for _, k := range []string{orchestrator.EventCrash, orchestrator.EventWorkerLost, orchestrator.EventWorkerStarted} {
		if !kinds[k] {
			t.Errorf("no %s event after a crash: %+v", k, s.Events)
		}
	}
	table := string(look("table"))
	if !strings.Contains(table, failover.Worker) || !strings.Contains(table, "failover") {
		t.Fatalf("table does not show the new master %s and the failover:\n%s", failover.Worker, table)
	}
}

// GET /api/v1/cluster lists the orchestrator nodes: one, which supervises, and whose embedded
// NATS server leads the sync log.
func TestClusterView(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	st := mustStack(t)
	var nodes []orchestrator.NodeStatus
	if err := json.Unmarshal(mustCall(t, 200, "GET", st.OrchestratorURL+"/api/v1/cluster", nil), &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || !nodes[0].Up || !nodes[0].Supervisor || !nodes[0].LogLeader || nodes[0].PID != os.Getpid() || nodes[0].URL != st.OrchestratorURL {
		t.Fatalf("cluster view %+v, want this process as the one node: up, supervising, leading the log at %s", nodes, st.OrchestratorURL)
	}
}
