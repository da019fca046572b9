// Package procrt runs workers as child processes of the orchestrator (`rideshare up`). A
// worker's PID is its OS PID. Children get SIGKILL when the orchestrator dies (Pdeathsig), so
// they never outlive it, unless the Runtime is Shared (several orchestrator nodes on one
// machine): then workers are detached and known from their files in DataDir (shared.go).
package procrt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
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
	// Shared is for several orchestrator nodes on one machine, any of which may become the
	// supervisor: the death of a node must kill no worker, and the next supervisor must adopt
	// the workers another node started. So workers run in their own session without
	// Pdeathsig, log to <DataDir>/<id>/worker.log, and are known from <DataDir>/<id>/pid
	// rather than from memory: List, Stop and Kill reach any node's workers, and Close stops
	// none (StopAll does). Args must put the worker's id among the arguments: with the
	// PID, it is how List tells the worker from a later process given the same PID.
	Shared bool

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
	args := append(append([]string{}, r.Command[1:]...), r.Args(id, dir)...)
	if r.Shared && !slices.Contains(args, id) {
		return 0, fmt.Errorf("start worker %s: a shared runtime needs the id among the arguments, to recognise the process", id)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("worker %s data dir: %w", id, err)
	}
	cmd := exec.Command(r.Command[0], args...)
	cmd.Env = append(os.Environ(), r.Env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if r.Shared {
		// A file, not this node's stderr: the logs survive the node, and a worker never
		// writes into a pipe nobody reads any more.
		logf, err := os.OpenFile(filepath.Join(dir, logFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return 0, fmt.Errorf("worker %s log: %w", id, err)
		}
		defer logf.Close() // the child has its own copy once started
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no Pdeathsig: it outlives this node
	}
	errc := make(chan error, 1)
	r.reqs <- startReq{cmd: cmd, errc: errc}
	if err := <-errc; err != nil {
		return 0, fmt.Errorf("start worker %s: %w", id, err)
	}
	if r.Shared {
		// Before anything reaps the child, so the PID written is still the worker's, and once
		// its command line shows, so that no node takes it for a stranger with its PID.
		awaitArgs(cmd.Process.Pid, id)
		if err := writePID(dir, cmd.Process.Pid); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			os.RemoveAll(dir)
			return 0, fmt.Errorf("worker %s pid file: %w", id, err)
		}
	}
	// This node reaps its own child (also in Shared mode, where others may stop it), so no
	// zombie remains while the node lives.
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
		remove(r.DataDir, id)
		close(p.done)
	}()
	return cmd.Process.Pid, nil
}

func (r *Runtime) get(id string) (*proc, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.procs[id]
	if !ok {
		return nil, notRunning(id)
	}
	return p, nil
}

// errNotRunning is in the errors for a worker that is not running, which StopAll passes over.
var errNotRunning = errors.New("no running worker")

func notRunning(id string) error { return fmt.Errorf("%w %s", errNotRunning, id) }

// Stop asks worker id to shut down (SIGTERM) and waits, then kills it after StopTimeout.
func (r *Runtime) Stop(ctx context.Context, id string) error {
	p, err := r.get(id)
	if err != nil {
		if r.Shared { // not this node's child: maybe another node's
			return r.stopShared(ctx, id)
		}
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
	if r.Shared {
		return r.killShared(id)
	}
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
	if r.Shared {
		return r.listShared()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.procs))
	for id, p := range r.procs {
		out[id] = p.cmd.Process.Pid
	}
	return out, nil
}

// Close stops every worker; in Shared mode none, since the other nodes go on supervising
// them.
func (r *Runtime) Close() error {
	if r.Shared {
		return nil
	}
	return r.StopAll(context.Background())
}

// StopAll stops every worker, in Shared mode those of every node (the whole deployment shuts
// down). A worker that ends meanwhile is no error.
func (r *Runtime) StopAll(ctx context.Context) error {
	ws, err := r.List(ctx)
	if err != nil {
		return err
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for id := range ws {
		wg.Go(func() {
			if err := r.Stop(ctx, id); err != nil && !errors.Is(err, errNotRunning) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
