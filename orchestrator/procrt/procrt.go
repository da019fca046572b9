// Package procrt runs workers as child processes of the orchestrator (`rideshare up`). A
// worker's PID is its OS PID. Children get SIGKILL when the orchestrator dies (Pdeathsig), so
// they never outlive it.
package procrt

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Runtime starts and stops worker processes.
type Runtime struct {
	// Command is the program and leading arguments, e.g. ["/usr/bin/rideshare", "worker"].
	Command []string
	// Args returns the per-worker arguments appended to Command.
	Args func(id, dataDir string) []string
	// Env is added to the orchestrator's environment for each worker.
	Env []string
	// DataDir holds one directory per worker, removed when the worker exits.
	DataDir string
	// StopTimeout bounds a clean stop before SIGKILL.
	StopTimeout time.Duration
	Logger      *slog.Logger

	mu    sync.Mutex
	procs map[string]*proc
	reqs  chan startReq
	once  sync.Once
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

type startReq struct {
	cmd  *exec.Cmd
	errc chan error
}

// New returns a runtime that runs command with per-worker args.
func New(command []string, dataDir string, args func(id, dataDir string) []string) *Runtime {
	return &Runtime{Command: command, Args: args, DataDir: dataDir, StopTimeout: 10 * time.Second, Logger: slog.Default()}
}

// starter forks children from one locked OS thread that never exits: Pdeathsig fires when
// the *thread* that forked a child ends, and Go may retire other threads at any time.
func (r *Runtime) starter() {
	runtime.LockOSThread()
	for req := range r.reqs {
		req.errc <- req.cmd.Start()
	}
}

// Start launches worker id and returns its PID.
func (r *Runtime) Start(_ context.Context, id string) (int, error) {
	r.once.Do(func() {
		r.procs = map[string]*proc{}
		r.reqs = make(chan startReq)
		go r.starter()
	})
	dir := filepath.Join(r.DataDir, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("worker %s data dir: %w", id, err)
	}
	args := append(append([]string{}, r.Command[1:]...), r.Args(id, dir)...)
	cmd := exec.Command(r.Command[0], args...)
	cmd.Env = append(os.Environ(), r.Env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	errc := make(chan error, 1)
	r.reqs <- startReq{cmd: cmd, errc: errc}
	if err := <-errc; err != nil {
		return 0, fmt.Errorf("start worker %s: %w", id, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	r.mu.Lock()
	r.procs[id] = p
	r.mu.Unlock()
	go func() {
		err := cmd.Wait()
		r.Logger.Info("worker exited", "component", "procrt", "worker", id, "pid", cmd.Process.Pid, "status", fmt.Sprint(err))
		r.mu.Lock()
		delete(r.procs, id)
		r.mu.Unlock()
		os.RemoveAll(dir)
		close(p.done)
	}()
	return cmd.Process.Pid, nil
}

func (r *Runtime) get(id string) (*proc, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.procs[id]
	if !ok {
		return nil, fmt.Errorf("no running worker %s", id)
	}
	return p, nil
}

// Stop asks worker id to shut down (SIGTERM) and waits, then kills it after StopTimeout.
func (r *Runtime) Stop(ctx context.Context, id string) error {
	p, err := r.get(id)
	if err != nil {
		return err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(r.StopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return nil
}

// Kill sends SIGKILL to worker id: no clean shutdown.
func (r *Runtime) Kill(id string) error {
	p, err := r.get(id)
	if err != nil {
		return err
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill worker %s: %w", id, err)
	}
	return nil
}

// List returns the running workers: ID to PID.
func (r *Runtime) List(context.Context) (map[string]int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.procs))
	for id, p := range r.procs {
		out[id] = p.cmd.Process.Pid
	}
	return out, nil
}

// Close stops every worker.
func (r *Runtime) Close() error {
	procs, _ := r.List(context.Background())
	var wg sync.WaitGroup
	for id := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); r.Stop(context.Background(), id) }()
	}
	wg.Wait()
	return nil
}
