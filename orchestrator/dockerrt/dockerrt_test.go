package dockerrt_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/dockerrt"
	"github.com/rideshare/rideshare/orchestrator/dockerrt/dockertest"
)

var _ orchestrator.Runtime = (*dockerrt.Runtime)(nil)

// sleeperSource stands in for `rideshare worker`: it writes a file in its data directory,
// prints what it does, and exits cleanly on SIGTERM; "--exit CODE" makes it exit at once.
const sleeperSource = `package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
)

func main() {
	args := os.Args[1:]
	fmt.Println("sleeper started", args)
	data := ""
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--data":
			data = args[i+1]
		case "--exit":
			code, _ := strconv.Atoi(args[i+1])
			fmt.Println("exiting with", code)
			os.Exit(code)
		}
	}
	if data != "" {
		if err := os.MkdirAll(data, 0o755); err != nil {
			fmt.Println("data dir:", err)
			os.Exit(3)
		}
		if err := os.WriteFile(filepath.Join(data, "probe"), []byte("ok"), 0o644); err != nil {
			fmt.Println("data dir:", err)
			os.Exit(3)
		}
		fmt.Println("data dir writable")
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("stopping cleanly on", <-c)
}
`

// sleeperImage builds an image FROM scratch holding the sleeper as /rideshare, shaped like
// the real one (non-root user, /data owned by it).
func sleeperImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module sleeper\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(sleeperSource), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := dockertest.GoBinary(t, src, ".")
	tag := fmt.Sprintf("rideshare-dockerrt-test:%06x", rand.Uint32()&0xffffff)
	dockertest.BuildImage(t, cli, tag, "Dockerfile", []dockertest.File{
		{Name: "Dockerfile", Body: []byte("FROM scratch\nCOPY --chown=65534:65534 rootfs/ /\nCOPY sleeper /rideshare\nUSER 65534:65534\nENTRYPOINT [\"/rideshare\"]\n")},
		{Name: "rootfs/data/.keep"},
		{Name: "sleeper", Mode: 0o755, Body: bin},
	})
	return tag
}

func workerArgs(id, dir string) []string {
	args := []string{"--id", id, "--data", dir}
	if strings.HasPrefix(id, "exit") {
		args = append(args, "--exit", "1")
	}
	return args
}

func openRuntime(t *testing.T, image, stack string, logs *dockertest.Lines) *dockerrt.Runtime {
	t.Helper()
	rt := dockerrt.New(image, stack, workerArgs)
	rt.Network = stack
	rt.StopTimeout = 5 * time.Second
	rt.LogOutput = logs
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("close runtime: %v", err)
		}
	})
	return rt
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func list(t *testing.T, rt *dockerrt.Runtime) map[string]int {
	t.Helper()
	ws, err := rt.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// containers lists worker id's containers in any state.
func containers(t *testing.T, cli *client.Client, stack, id string) []container.Summary {
	t.Helper()
	cs, err := cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", dockerrt.LabelStack+"="+stack), filters.Arg("label", dockerrt.LabelWorker+"="+id))})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func sortedPIDs(m map[string]int) []int { return slices.Sorted(maps.Values(m)) }

// The worker-runtime contract (start, list, kill, stop, adopt) on the real engine.
func TestDockerRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image and runs containers")
	}
	cli := dockertest.Client(t)
	image := sleeperImage(t, cli)
	stack := fmt.Sprintf("rstest-rt-%06x", rand.Uint32()&0xffffff)
	t.Cleanup(func() { // runs last: after every runtime's Close
		left, err := dockertest.Leftovers(context.Background(), cli, stack)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
	ctx := context.Background()
	logs := &dockertest.Lines{}
	rt := openRuntime(t, image, stack, logs)

	pa, err := rt.Start(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	pb, err := rt.Start(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("started workers are listed with the PIDs the engine reports", func(t *testing.T) {
		if pa <= 0 || pb <= 0 || pa == pb {
			t.Fatalf("PIDs %d and %d", pa, pb)
		}
		if got, want := list(t, rt), map[string]int{"a": pa, "b": pb}; !maps.Equal(got, want) {
			t.Fatalf("List = %v, want %v", got, want)
		}
		if got, want := sortedPIDs(dockertest.Running(t, cli, stack)), []int{min(pa, pb), max(pa, pb)}; !slices.Equal(got, want) {
			t.Fatalf("engine reports PIDs %v, runtime %v", got, want)
		}
	})

	t.Run("the engine's machine is measured for the scaler", func(t *testing.T) {
		h, err := rt.Host(ctx)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cli.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h.CPUs != info.NCPU || h.MemTotal != uint64(info.MemTotal) || h.MemAvailable != 0 {
			t.Fatalf("Host = %+v, engine says %d CPUs, %d bytes", h, info.NCPU, info.MemTotal)
		}
	})

	t.Run("a worker container is labelled, on the network, with its data inside", func(t *testing.T) {
		info, err := cli.ContainerInspect(ctx, rt.ContainerName("a"))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{dockerrt.LabelRole: "worker", dockerrt.LabelWorker: "a", dockerrt.LabelStack: stack}
		for k, v := range want {
			if info.Config.Labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, info.Config.Labels[k], v)
			}
		}
		if cmd := strings.Join(info.Config.Cmd, " "); cmd != "worker --id a --data /data" {
			t.Errorf("command %q", cmd)
		}
		if _, ok := info.NetworkSettings.Networks[stack]; !ok {
			t.Errorf("not on network %s: %v", stack, slices.Collect(maps.Keys(info.NetworkSettings.Networks)))
		}
		if len(info.Mounts) != 0 {
			t.Errorf("mounts %v: a worker's data lives in its container", info.Mounts)
		}
		if !slices.Contains(info.HostConfig.ExtraHosts, "host.docker.internal:host-gateway") {
			t.Errorf("extra hosts %v", info.HostConfig.ExtraHosts)
		}
		eventually(t, 10*time.Second, "the worker's output, showing a writable data dir", func() bool {
			return logs.Contains("data dir writable")
		})
	})

	t.Run("kill returns at once; the worker disappears and its container is removed", func(t *testing.T) {
		start := time.Now()
		if err := rt.Kill("a"); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Kill took %v", d)
		}
		eventually(t, 10*time.Second, "a to leave the list", func() bool { _, ok := list(t, rt)["a"]; return !ok })
		eventually(t, 20*time.Second, "a's container to be removed", func() bool { return len(containers(t, cli, stack, "a")) == 0 })
		if logs.Contains("stopping cleanly on") {
			t.Error("a killed worker shut down cleanly")
		}
		if err := rt.Kill("a"); !errors.Is(err, dockerrt.ErrNoWorker) {
			t.Errorf("Kill of a gone worker: %v, want ErrNoWorker", err)
		}
	})

	t.Run("stop shuts a worker down cleanly and removes its container", func(t *testing.T) {
		if err := rt.Stop(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		if cs := containers(t, cli, stack, "b"); len(cs) != 0 {
			t.Errorf("b's container still there after Stop: %s", cs[0].State)
		}
		if got := list(t, rt); len(got) != 0 {
			t.Errorf("List = %v after Stop", got)
		}
		if !logs.Contains("stopping cleanly on terminated") {
			t.Errorf("no clean shutdown in the output:\n%s", logs)
		}
	})

	t.Run("a worker that exits by itself is removed", func(t *testing.T) {
		_, err := rt.Start(ctx, "exit1") // may or may not see it running
		t.Logf("start of a worker that exits at once: %v", err)
		eventually(t, 20*time.Second, "the exited container to be removed", func() bool {
			_, listed := list(t, rt)["exit1"]
			return !listed && len(containers(t, cli, stack, "exit1")) == 0
		})
	})

	t.Run("a new runtime adopts the running workers of its stack, and only those", func(t *testing.T) {
		pc, err := rt.Start(ctx, "c")
		if err != nil {
			t.Fatal(err)
		}
		rt.KeepWorkers = true
		if err := rt.Close(); err != nil {
			t.Fatal(err)
		}
		if got := sortedPIDs(dockertest.Running(t, cli, stack)); !slices.Equal(got, []int{pc}) {
			t.Fatalf("after Close with KeepWorkers the engine runs %v, want [%d]", got, pc)
		}
		rt2 := openRuntime(t, image, stack, logs)
		if got := list(t, rt2); !maps.Equal(got, map[string]int{"c": pc}) {
			t.Fatalf("new runtime lists %v, want c: %d", got, pc)
		}
		other := openRuntime(t, image, stack+"-other", logs)
		if got := list(t, other); len(got) != 0 {
			t.Fatalf("another stack lists %v", got)
		}
		if err := other.Close(); err != nil {
			t.Fatal(err)
		}
		// Kill works on an adopted worker (found by its labels).
		pd, err := rt2.Start(ctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		if err := rt2.Kill("c"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "c to leave the list", func() bool {
			return maps.Equal(list(t, rt2), map[string]int{"d": pd})
		})
		// Close without KeepWorkers stops the rest and removes the stack's network.
		if err := rt2.Close(); err != nil {
			t.Fatal(err)
		}
		left, err := dockertest.Leftovers(ctx, cli, stack)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Fatalf("left behind after Close: %v", left)
		}
	})

	t.Run("a missing image is reported by Open", func(t *testing.T) {
		rt := dockerrt.New("rideshare-no-such-image:none", stack, workerArgs)
		rt.Network = "host" // nothing to create
		err := rt.Open(ctx)
		if !errors.Is(err, dockerrt.ErrNoImage) {
			t.Fatalf("Open: %v, want ErrNoImage", err)
		}
	})
}
