package status

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rideshare/rideshare/orchestrator"
)

func sample(at time.Time, reads, writes uint64) orchestrator.Status {
	return orchestrator.Status{
		Time:    at,
		Nodes:   []orchestrator.NodeStatus{{Name: "db-1", PID: 100, URL: "http://127.0.0.1:8083", Up: true, Supervisor: true}},
		LogHead: 42,
		Workers: []orchestrator.WorkerStatus{
			{WorkerInfo: orchestrator.WorkerInfo{ID: "worker-1", PID: 201, Role: "master", Applied: 42, Ready: true}},
			{WorkerInfo: orchestrator.WorkerInfo{ID: "worker-2", PID: 202, Role: "slave", Applied: 40, Ready: true}, Lag: 2},
		},
		Events: []orchestrator.Event{{Time: at, Kind: orchestrator.EventFailover, Worker: "worker-1", Message: "worker-1 took writes 1.2s after the master was lost"}},
		Reads:  reads, Writes: writes,
	}
}

// The table shows every node and worker with its lag, the recent events, and with a previous
// look the rates between the two.
func TestRenderTable(t *testing.T) {
	now := time.Now()
	var out bytes.Buffer
	prev := sample(now.Add(-2*time.Second), 100, 10)
	Render(&out, "http://x", sample(now, 300, 30), &prev, 8)
	got := out.String()
	for _, want := range []string{
		"sync log head 42", "100.0 reads/s", "10.0 writes/s",
		"db-1", "worker-1  201  master  42", "worker-2  202  slave   40       2",
		"failover", "took writes 1.2s",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

// Run asks GET /api/v1/status and prints JSON or a table; an unknown format, an orchestrator
// that answers an error, or one that cannot be reached is an error naming it.
func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/status" {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":"sync log unreadable"}`))
			return
		}
		json.NewEncoder(w).Encode(sample(time.Now(), 1, 2))
	}))
	defer srv.Close()
	ctx := context.Background()
	var out bytes.Buffer
	if err := Run(ctx, Config{Orchestrator: srv.URL, Format: "json"}, &out); err != nil {
		t.Fatal(err)
	}
	var st orchestrator.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil || st.LogHead != 42 || len(st.Workers) != 2 {
		t.Fatalf("json output %q: %v", out.String(), err)
	}
	out.Reset()
	if err := Run(ctx, Config{Orchestrator: srv.URL, Format: "table", Events: 8}, &out); err != nil || !strings.Contains(out.String(), "WORKER") {
		t.Fatalf("table: %v\n%s", err, out.String())
	}
	if err := Run(ctx, Config{Orchestrator: srv.URL, Format: "yaml"}, &out); err == nil {
		t.Fatal("format yaml accepted")
	}
	if err := Run(ctx, Config{Orchestrator: srv.URL + "/nope", Format: "table"}, &out); err == nil || !strings.Contains(err.Error(), "sync log unreadable") {
		t.Fatalf("error answer: %v", err)
	}
	srv.Close()
	if err := Run(ctx, Config{Orchestrator: srv.URL, Format: "table"}, &out); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("unreachable orchestrator: %v", err)
	}
}
