package procrt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// In Shared mode a worker is known from files in its directory <DataDir>/<id>, so that every
// node of the deployment sees the same workers, whichever started them.
const (
	pidFile = "pid"        // the worker's PID, written by the node that started it
	logFile = "worker.log" // its stdout and stderr
	// startGrace is how long a directory without a pid file is taken for a Start in progress
	// (maybe on another node) rather than the remains of a failed one.
	startGrace = 10 * time.Second
	// pollEvery paces waiting for another node's worker to end: it is not this process's
	// child, so no exit event reaches it.
	pollEvery = 20 * time.Millisecond
)

// KeptLogs is how many logs of exited workers a workers directory keeps, as
// <DataDir>/<id>.exited.log: why a worker stopped is in its log, and its directory (its
// database too) is removed once it has exited.
const KeptLogs = 20

// exitedSuffix ends the name of a kept log: a file, so List, which looks at directories
// only, never takes it for a worker.
const exitedSuffix = ".exited.log"

// remove deletes the directory of worker id, which has exited, keeping its log (if any) beside
// it and only the newest KeptLogs logs of exited workers.
func remove(dataDir, id string) {
	dir := filepath.Join(dataDir, id)
	_ = os.Rename(filepath.Join(dir, logFile), filepath.Join(dataDir, id+exitedSuffix))
	pruneLogs(dataDir)
	os.RemoveAll(dir)
}

// pruneLogs deletes all but the newest KeptLogs logs of exited workers in dataDir.
func pruneLogs(dataDir string) {
	logs, _ := filepath.Glob(filepath.Join(dataDir, "*"+exitedSuffix))
	if len(logs) <= KeptLogs {
		return
	}
	mtime := func(f string) time.Time {
		fi, err := os.Stat(f)
		if err != nil {
			return time.Time{}
		}
		return fi.ModTime()
	}
	sort.Slice(logs, func(i, j int) bool { return mtime(logs[i]).After(mtime(logs[j])) })
	for _, f := range logs[KeptLogs:] {
		os.Remove(f)
	}
}

// writePID records pid in dir through a rename, so that a reader never sees part of it.
func writePID(dir string, pid int) error {
	tmp := filepath.Join(dir, pidFile+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, pidFile))
}

func readPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// alive reports whether pid is worker id's process, still running: see running, and not a
// later process given the same PID: the worker's command line has its id among the
// arguments. (An exiting process has an empty command line already: it is not alive either.)
func alive(pid int, id string) bool {
	if !running(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return slices.Contains(strings.Split(string(cmdline), "\x00"), id)
}

// awaitArgs waits until child pid shows id in its command line, or has ended, for a second
// at most. The kernel reports an exec done (Start returns) some µs before the new command
// line is in place; meanwhile the child's command line is empty. No event marks the moment:
// this polls.
func awaitArgs(pid int, id string) {
	deadline := time.Now().Add(time.Second)
	for running(pid) && !alive(pid, id) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Microsecond)
	}
}

// running reports whether process pid exists and is not a zombie: once the node that started
// a worker is gone, nobody may reap it (PID 1 need not).
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) state ...", where comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// listShared finds the running workers in DataDir, and removes the directories of those that
// have ended (the node that started them may be gone, and with it whoever would clean up).
func (r *Runtime) listShared() (map[string]int, error) {
	entries, err := os.ReadDir(r.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]int{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	out := map[string]int{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		id, dir := e.Name(), filepath.Join(r.DataDir, e.Name())
		pid, err := readPID(dir)
		switch {
		case err == nil && alive(pid, id):
			out[id] = pid
		case errors.Is(err, fs.ErrNotExist) && young(dir):
			// Started just now; its pid file comes next.
		default:
			remove(r.DataDir, id)
		}
	}
	return out, nil
}

func young(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && time.Since(fi.ModTime()) < startGrace
}

// process returns a handle on worker id's process. The handle is taken before
// the process is checked to be the worker's: on Linux it holds a pidfd, so signals sent
// through it cannot reach a later process given the same PID.
func (r *Runtime) process(id string) (*os.Process, error) {
	pid, err := readPID(filepath.Join(r.DataDir, id))
	if err != nil {
		return nil, notRunning(id)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil, notRunning(id)
	}
	if !alive(pid, id) {
		p.Release()
		return nil, notRunning(id)
	}
	return p, nil
}

// stopShared stops worker id that this node did not start: SIGTERM, SIGKILL after
// StopTimeout, and its directory removed once it has ended.
func (r *Runtime) stopShared(ctx context.Context, id string) error {
	p, err := r.process(id)
	if err != nil {
		return err
	}
	defer p.Release()
	_ = p.Signal(syscall.SIGTERM)
	clean, cancel := context.WithTimeout(ctx, r.StopTimeout)
	defer cancel()
	if !awaitExit(clean, p) {
		_ = p.Signal(syscall.SIGKILL)
		awaitExit(context.Background(), p)
	}
	remove(r.DataDir, id)
	return nil
}

// awaitExit polls until process p has ended (true) or ctx is done (false). Ended: reaped
// (the handle tells, whoever reuses the PID), or a zombie. Not merely an empty command line,
// which a process has while it is still being torn down.
func awaitExit(ctx context.Context, p *os.Process) bool {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !errors.Is(p.Signal(syscall.Signal(0)), os.ErrProcessDone) && running(p.Pid) {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// killShared sends SIGKILL to worker id, whichever node started it.
func (r *Runtime) killShared(id string) error {
	p, err := r.process(id)
	if err != nil {
		return err
	}
	defer p.Release()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill worker %s: %w", id, err)
	}
	return nil
}
