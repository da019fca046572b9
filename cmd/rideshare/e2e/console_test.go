package e2e

import (
	"os"
	"testing"
	"time"

	"github.com/rideshare/rideshare/orchestrator/console/consoletest"
)

// The console against a real stack in a real browser (headless Chromium): it shows the
// workers the orchestrator has, refuses a crash without the admin token, and after "Crash
// master" with the token shows a new master, as the failover event says, all read from the
// DOM. RIDESHARE_CONSOLE_SCREENSHOT=FILE saves what the page shows at the end.
func TestConsoleInBrowserAgainstTheStack(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	const tok = "console-test-token"
	st := mustStack(t, withSlaves(2), withAdminToken(tok))
	ctx := consoletest.NewBrowser(t)
	c, err := consoletest.Open(ctx, st.OrchestratorURL+"/", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	before, err := c.WaitFor(30*time.Second, "a master and two ready slaves", func(s consoletest.Snapshot) bool {
		ready := 0
		for _, w := range s.Workers {
			if w.Ready {
				ready++
			}
		}
		_, ok := s.Master()
		return ok && ready == 3
	})
	if err != nil {
		t.Fatal(err)
	}
	old, _ := before.Master()
	if want := masterOf(t, st); old.PID != want.PID || old.ID != want.ID {
		t.Fatalf("console shows master %s (pid %d), the orchestrator says %s (pid %d)", old.ID, old.PID, want.ID, want.PID)
	}

	// Without the token the orchestrator refuses, and the page says so; nothing is killed.
	res, err := c.Crash("master", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != "error" || res.Status != 401 {
		t.Fatalf("crash without the token: %+v, want a 401 shown", res)
	}
	if m := masterOf(t, st); m.PID != old.PID {
		t.Fatalf("a refused crash changed the master: %d → %d", old.PID, m.PID)
	}

	if err := c.SetToken(tok); err != nil {
		t.Fatal(err)
	}
	if res, err = c.Crash("master", 10*time.Second); err != nil || res.State != "ok" {
		t.Fatalf("crash master with the token: %+v, %v", res, err)
	}
	after, err := c.WaitFor(60*time.Second, "a new master", func(s consoletest.Snapshot) bool {
		m, ok := s.Master()
		return ok && m.PID != old.PID && m.Ready
	})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := after.Master()
	if want := masterOf(t, st); m.PID != want.PID {
		t.Fatalf("console shows new master pid %d, the orchestrator says %d", m.PID, want.PID)
	}
	if _, still := after.Worker(old.ID); still {
		t.Errorf("the crashed master %s is still listed: %s", old.ID, after)
	}
	if p := c.Problems(); len(p) > 0 {
		t.Errorf("the page reported problems: %v", p)
	}
	if path := os.Getenv("RIDESHARE_CONSOLE_SCREENSHOT"); path != "" {
		if err := c.Screenshot(path); err != nil {
			t.Fatal(err)
		}
	}
}
