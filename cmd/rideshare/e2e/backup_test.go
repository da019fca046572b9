package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rideshare/rideshare/cmd/rideshare/internal/cli"
	"github.com/rideshare/rideshare/cmd/rideshare/system"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/orchestrator/client"
	"github.com/rideshare/rideshare/worker/store"
)

// dumpAll reads every row of every table through the database API, in a fixed order.
func dumpAll(t *testing.T, orchURL string) map[string][]rideshare.Row {
	t.Helper()
	c := client.New(orchURL, "")
	out := map[string][]rideshare.Row{}
	for table, order := range map[string][]rideshare.Order{
		"users":      {{Column: "username"}},
		"rides":      {{Column: "ride_id"}},
		"ride_users": {{Column: "ride_id"}, {Column: "username"}},
	} {
		rows, err := c.Read(context.Background(), rideshare.Read{Table: table, Order: order})
		if err != nil {
			t.Fatalf("read %s: %v", table, err)
		}
		out[table] = rows
	}
	return out
}

// A backup round-trips: write, back up (through the CLI), restore into a new data directory
// (through the CLI), start a new stack on it, and every row of every table is there; the new
// deployment's writes follow the backup's sequence. A truncated or foreign file is refused
// with a clear error and writes nothing.
func TestBackupRestoreRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two stacks")
	}
	st := mustStack(t)
	for i := range 20 {
		mustCall(t, http.StatusCreated, "PUT", st.GatewayURL+"/api/v1/users", map[string]string{"username": fmt.Sprint("user", i), "password": sha1hex(i)})
	}
	for i := range 10 {
		body := map[string]any{"created_by": fmt.Sprint("user", i), "timestamp": "01-12-2030:00-00-10", "source": i%198 + 1, "destination": (i+7)%198 + 1}
		mustCall(t, http.StatusCreated, "POST", st.GatewayURL+"/api/v1/rides", body)
	}
	for i, ride := range dumpAll(t, st.OrchestratorURL)["rides"] {
		mustCall(t, http.StatusOK, "POST", fmt.Sprintf("%s/api/v1/rides/%v", st.GatewayURL, ride["ride_id"]), map[string]string{"username": fmt.Sprint("user", (i+1)%20)})
	}
	before := dumpAll(t, st.OrchestratorURL)
	if len(before["users"]) != 20 || len(before["rides"]) != 10 || len(before["ride_users"]) != 10 {
		t.Fatalf("before the backup: %d users, %d rides, %d joins", len(before["users"]), len(before["rides"]), len(before["ride_users"]))
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "backup.sqlite")
	ctx := context.Background()
	if err := cli.Run(ctx, []string{"backup", "--orchestrator", st.OrchestratorURL, "--out", file}); err != nil {
		t.Fatalf("rideshare backup: %v", err)
	}
	seq, err := store.CheckCopy(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	if head, err := st.Orchestrator.Log.Last(ctx); err != nil || seq != head {
		t.Fatalf("backup at %d, the log's head %d (%v): a backup holds every acknowledged write", seq, head, err)
	}
	st.Close()

	data := filepath.Join(dir, "restored")
	if err := cli.Run(ctx, []string{"restore", file, "--data", data}); err != nil {
		t.Fatalf("rideshare restore: %v", err)
	}
	again := mustStack(t, func(c *system.Config) { c.Data = data })
	after := dumpAll(t, again.OrchestratorURL)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("restored rows differ:\nbefore %v\nafter  %v", before, after)
	}
	res, err := client.New(again.OrchestratorURL, "").Write(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "after-restore", "password": sha1hex(99)}})
	if err != nil {
		t.Fatalf("write after restore: %v", err)
	}
	if res.Seq <= seq {
		t.Fatalf("first write after restoring %d got sequence %d", seq, res.Seq)
	}

	// What restore must refuse.
	whole, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.sqlite")
	foreign := filepath.Join(dir, "notes.txt")
	os.WriteFile(truncated, whole[:len(whole)/3], 0o644)
	os.WriteFile(foreign, []byte("these are not the rows you are looking for"), 0o644)
	for _, bad := range []string{truncated, foreign} {
		target := filepath.Join(dir, "refused-"+filepath.Base(bad))
		err := cli.Run(ctx, []string{"restore", bad, "--data", target})
		if err == nil || !strings.Contains(err.Error(), "not a RideShare database copy") {
			t.Errorf("restore %s: %v, want a refusal naming it", filepath.Base(bad), err)
		}
		if _, serr := os.Stat(target); !os.IsNotExist(serr) {
			t.Errorf("refused restore of %s left %s", filepath.Base(bad), target)
		}
	}
	if err := cli.Run(ctx, []string{"restore", file, "--data", data}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("restore over a used data directory: %v, want a refusal", err)
	}
}
