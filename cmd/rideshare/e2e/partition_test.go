package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/orchestrator"
)

// The supervising node is cut off from the other two (each node in a network namespace of its
// own; the cut node keeps its workers, which run beside it, as a machine cut off keeps what
// runs on it). It acknowledges no write sent to it while cut off, the other two take over and
// serve, and once healed it rejoins, supervises no more, and nothing acknowledged is lost.
func TestClusterNodeCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three orchestrator nodes")
	}
	nn := newNetnet(t, 3)
	st := mustCluster(t, nn.option())
	load := startWriteLoad(t, st, 2)
	load.waitAcks(t, 20, time.Minute)
	cut := supervisorNode(t, st)
	i := slices.Index(st.Nodes.Nodes, cut)
	var others []*system.Node
	for _, n := range st.Nodes.Nodes {
		if n != cut {
			others = append(others, n)
		}
	}
	nn.cut(t, i)
	cutAt := time.Now()
	t.Logf("%s (supervising) cut off from %s and %s", cut.Name, others[0].Name, others[1].Name)

	// Writes sent to the cut-off node right away, and again once the others have taken over:
	// none may be acknowledged (it cannot reach a majority of the log's replicas).
	refused := writesTo(t, cut, 1<<40, 4)
	next := supervisingAmong(t, others, 2*time.Minute)
	t.Logf("%s supervises %v after the cut", next, time.Since(cutAt).Round(time.Millisecond))
	refusedLater := writesTo(t, cut, 1<<40+100, 4)
	d := load.waitAcks(t, 50, 2*time.Minute)
	t.Logf("the other two acknowledged 50 writes in %v", d.Round(time.Millisecond))
	answers := append(refused(), refusedLater()...)
	for _, got := range answers {
		if got == http.StatusOK {
			t.Errorf("the cut-off node acknowledged a write: %s", got)
		}
	}
	t.Logf("writes sent to the cut-off node: %v", answers)

	// Strong reads through the cut-off node of writes the other two acknowledged since the
	// cut: each is refused (its node cannot confirm the log's head with a majority) or sees
	// the write, never misses it. Its slaves, cut off with it, hold none of them.
	for k := range 3 {
		ts := load.lastAcked()
		code, rows := strongRead(t, cut, ts)
		t.Logf("strong read %d through %s of ride ts=%d (acknowledged by the others): status %d, %d rows", k+1, cut.Name, ts, code, rows)
		if code == http.StatusOK && rows != 1 {
			t.Errorf("the cut-off node answered a strong read without a write acknowledged before it (ts=%d): %d rows", ts, rows)
		}
		load.waitAcks(t, 5, time.Minute)
	}

	nn.heal(t, i)
	healed := time.Now()
	replicasCurrent(t, st, "the healed node's copy of the log current")
	var last any // the last view or error seen, for the failure message
	defer func() {
		if t.Failed() {
			t.Logf("last cluster view from %s: %+v", others[0].Name, last)
		}
	}()
	eventually(t, time.Minute, cut.Name+" back in the view, not supervising", func() bool {
		view, err := viewFrom(others[0])
		if err != nil {
			last = err
			return false
		}
		last = view
		sup := 0
		back := false
		for _, n := range view {
			if n.Supervisor {
				sup++
			}
			if n.Name == cut.Name {
				back = n.Up && !n.Supervisor
			}
		}
		return back && sup == 1
	})
	t.Logf("%s rejoined %v after the heal", cut.Name, time.Since(healed).Round(time.Millisecond))
	load.waitAcks(t, 20, time.Minute)
	acked := load.finish()
	checkReplicas(t, st, settled(t, st, 2), acked)
	t.Logf("%d writes acknowledged, %d not (in flight through the cut node)", len(acked), load.failed)
}

// writeStatus is one write's answer: its HTTP status, or 0 if none came.
type writeStatus int

func (s writeStatus) String() string {
	if s == 0 {
		return "no answer"
	}
	return fmt.Sprintf("status %d", int(s))
}

// writesTo sends n writes (rides with ts from ts0) to node at once and returns a function that
// waits for their answers.
func writesTo(t *testing.T, node *system.Node, ts0 int64, n int) func() []writeStatus {
	t.Helper()
	hc := &http.Client{Timeout: time.Minute}
	out := make([]writeStatus, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() {
			b, _ := json.Marshal(loadRide(ts0 + int64(k)))
			resp, err := hc.Post(node.URL+"/api/v1/db/write", "application/json", bytesReader(b))
			if err != nil {
				t.Logf("write to %s: %v", node.Name, err)
				return
			}
			resp.Body.Close()
			out[k] = writeStatus(resp.StatusCode)
		})
	}
	return func() []writeStatus {
		wg.Wait()
		return out
	}
}

// supervisingAmong waits until one of nodes, asked itself, says a node among them supervises,
// and returns its name.
func supervisingAmong(t *testing.T, nodes []*system.Node, timeout time.Duration) string {
	t.Helper()
	var name string
	eventually(t, timeout, "one of the other nodes supervising", func() bool {
		for _, asked := range nodes {
			view, err := viewFrom(asked)
			if err != nil {
				continue
			}
			for _, n := range view {
				among := slices.ContainsFunc(nodes, func(o *system.Node) bool { return o.Name == n.Name })
				if n.Up && n.Supervisor && among {
					name = n.Name
					return true
				}
			}
		}
		return false
	})
	return name
}

// viewFrom is node's own /api/v1/cluster.
func viewFrom(node *system.Node) ([]orchestrator.NodeStatus, error) {
	var view []orchestrator.NodeStatus
	return view, getFrom(node, "/api/v1/cluster", &view)
}

// strongRead reads the load's ride with ts through node, as a strong read, and returns the
// answer's status and, for a 200, how many rows it held. It logs why a read was refused.
func strongRead(t *testing.T, node *system.Node, ts int64) (int, int) {
	t.Helper()
	q := rideshare.Read{Table: "rides", Columns: []string{"ride_id"}, Where: rideshare.Where{"ts": ts}}
	b, _ := json.Marshal(q)
	hc := &http.Client{Timeout: time.Minute}
	resp, err := hc.Post(node.URL+"/api/v1/db/read", "application/json", bytesReader(b))
	if err != nil {
		t.Fatalf("read through %s: %v", node.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		why, _ := io.ReadAll(resp.Body)
		t.Logf("strong read through %s: %d %s", node.Name, resp.StatusCode, bytes.TrimSpace(why))
		return resp.StatusCode, 0
	}
	var out struct {
		Rows []json.RawMessage `json:"rows"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("read through %s: %v", node.Name, err)
	}
	return resp.StatusCode, len(out.Rows)
}
