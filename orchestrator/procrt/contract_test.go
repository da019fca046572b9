package procrt_test

import (
	"context"
	"log/slog"
	"sync"
	"syscall"
	"testing"

	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/procrt"
	"github.com/rideshare/rideshare/orchestrator/runtimetest"
)

var _ orchestrator.Runtime = (*procrt.Runtime)(nil)

// exits keeps how each worker ended, from the runtime's "worker exited" log record.
type exits struct {
	mu     sync.Mutex
	status map[string]string
}

func (e *exits) Enabled(context.Context, slog.Level) bool { return true }
func (e *exits) WithAttrs([]slog.Attr) slog.Handler       { return e }
func (e *exits) WithGroup(string) slog.Handler            { return e }

func (e *exits) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "worker exited" {
		return nil
	}
	var id, status string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "worker":
			id = a.Value.String()
		case "status":
			status = a.Value.String()
		}
		return true
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status[id] = status
	return nil
}

// newRuntime runs `sleep infinity` as the workers: it ends on SIGTERM at once (it is never
// too early to stop it cleanly), and its exit status says which signal ended it.
func newRuntime(t *testing.T, e *exits, dataDir string) *procrt.Runtime {
	rt := procrt.New([]string{"sleep", "infinity"}, dataDir, func(string, string) []string { return nil })
	rt.Logger = slog.New(e)
	t.Cleanup(func() { rt.Close() })
	return rt
}

func TestContract(t *testing.T) {
	// Workers are children that die with their orchestrator (Pdeathsig): a new runtime
	// starts from none.
	runContract(t, newRuntime, false)
}

// runContract runs the runtime contract on runtimes from newRuntime; reopened, a deployment's
// runtime is another from newRuntime on the same DataDir, which lists the first one's workers
// if adopts.
func runContract(t *testing.T, newRuntime func(t *testing.T, e *exits, dataDir string) *procrt.Runtime, adopts bool) {
	logs := map[orchestrator.Runtime]*exits{}
	runtimetest.Run(t, func(t *testing.T) orchestrator.Runtime {
		e := &exits{status: map[string]string{}}
		rt := newRuntime(t, e, t.TempDir())
		logs[rt] = e
		return rt
	}, runtimetest.Hooks{
		// A crash: SIGKILL from outside the runtime.
		Exit: func(t *testing.T, rt orchestrator.Runtime, id string) {
			ws, err := rt.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			pid, ok := ws[id]
			if !ok {
				t.Fatalf("no running worker %s to end", id)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		},
		// Clean: ended by the stop signal (SIGTERM), not by SIGKILL after StopTimeout. The
		// record is logged before the worker leaves the list, so it is there already.
		Clean: func(t *testing.T, rt orchestrator.Runtime, id string) bool {
			e := logs[rt]
			e.mu.Lock()
			defer e.mu.Unlock()
			t.Logf("worker %s exited: %s", id, e.status[id])
			return e.status[id] == "signal: terminated"
		},
		Reopen: func(t *testing.T, rt orchestrator.Runtime) orchestrator.Runtime {
			return newRuntime(t, logs[rt], rt.(*procrt.Runtime).DataDir)
		},
		Adopts: adopts,
	})
}
