package dockerrt_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/dockerrt"
	"github.com/rideshare/rideshare/orchestrator/dockerrt/dockertest"
	"github.com/rideshare/rideshare/orchestrator/runtimetest"
)

// waiterSource is the contract's worker: it handles SIGTERM before saying "up <id>" (a stop
// that comes earlier, before the Go runtime handed the signal over, would not be clean), and
// exits 0 on it; killed, the engine reports exit code 137.
const waiterSource = `package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	id := ""
	for i, a := range os.Args {
		if a == "--id" && i+1 < len(os.Args) {
			id = os.Args[i+1]
		}
	}
	fmt.Println("up", id)
	<-c
	fmt.Println("down", id)
}
`

// waiterImage builds an image FROM scratch holding the waiter as /rideshare.
func waiterImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module waiter\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(waiterSource), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := dockertest.GoBinary(t, src, ".")
	tag := fmt.Sprintf("rideshare-dockerrt-contract:%06x", rand.Uint32()&0xffffff)
	dockertest.BuildImage(t, cli, tag, "Dockerfile", []dockertest.File{
		{Name: "Dockerfile", Body: []byte("FROM scratch\nCOPY waiter /rideshare\nUSER 65534:65534\nENTRYPOINT [\"/rideshare\"]\n")},
		{Name: "waiter", Mode: 0o755, Body: bin},
	})
	return tag
}

// deaths follows the engine's "die" events of a stack's containers: each worker's exit code.
type deaths struct {
	mu    sync.Mutex
	codes map[string]string // worker ID → exit code
	seen  chan struct{}     // closed and replaced on every death
}

func watchDeaths(t *testing.T, cli *client.Client, stack string) *deaths {
	ctx, cancel := context.WithCancel(context.Background())
	msgs, errs := cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)), filters.Arg("event", string(events.ActionDie)),
		filters.Arg("label", dockerrt.LabelStack+"="+stack))})
	d := &deaths{codes: map[string]string{}, seen: make(chan struct{})}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for {
			select {
			case m := <-msgs:
				d.mu.Lock()
				d.codes[m.Actor.Attributes[dockerrt.LabelWorker]] = m.Actor.Attributes["exitCode"]
				close(d.seen)
				d.seen = make(chan struct{})
				d.mu.Unlock()
			case <-errs:
				return
			}
		}
	}()
	return d
}

// code waits for worker id's death and returns its exit code.
func (d *deaths) code(t *testing.T, id string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		d.mu.Lock()
		code, ok := d.codes[id]
		seen := d.seen
		d.mu.Unlock()
		if ok {
			return code
		}
		select {
		case <-seen:
		case <-timeout:
			t.Fatalf("no death of worker %s reported by the engine in 20s", id)
		}
	}
}

// The runtime contract on the real engine, every runtime on a stack (and network) of its own.
func TestContract(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image and runs containers")
	}
	cli := dockertest.Client(t)
	image := waiterImage(t, cli)
	type stackOf struct {
		logs   *dockertest.Lines
		deaths *deaths
	}
	stacks := map[orchestrator.Runtime]stackOf{}
	runtimetest.Run(t, func(t *testing.T) orchestrator.Runtime {
		stack := fmt.Sprintf("rstest-rc-%06x", rand.Uint32()&0xffffff)
		t.Cleanup(func() { // runs last: after the runtimes' Close
			left, err := dockertest.Leftovers(context.Background(), cli, stack)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
		s := stackOf{logs: &dockertest.Lines{}, deaths: watchDeaths(t, cli, stack)}
		rt := openRuntime(t, image, stack, s.logs)
		stacks[rt] = s // the suite runs one subtest at a time
		return rt
	}, runtimetest.Hooks{
		// A crash: SIGKILL through the engine, behind the runtime's back.
		Exit: func(t *testing.T, rt orchestrator.Runtime, id string) {
			if err := cli.ContainerKill(context.Background(), rt.(*dockerrt.Runtime).ContainerName(id), "KILL"); err != nil {
				t.Fatal(err)
			}
		},
		Up: func(t *testing.T, rt orchestrator.Runtime, id string) {
			logs := stacks[rt].logs
			eventually(t, 20*time.Second, "worker "+id+" up", func() bool { return logs.Contains("up " + id) })
		},
		Clean: func(t *testing.T, rt orchestrator.Runtime, id string) bool {
			code := stacks[rt].deaths.code(t, id)
			t.Logf("worker %s exited with code %s", id, code)
			return code == "0"
		},
		// A restarted orchestrator adopts the running workers of its stack.
		Reopen: func(t *testing.T, rt orchestrator.Runtime) orchestrator.Runtime {
			s := stacks[rt]
			again := openRuntime(t, image, rt.(*dockerrt.Runtime).Stack, s.logs)
			stacks[again] = s
			return again
		},
		Adopts: true,
	})
}
