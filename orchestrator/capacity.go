package orchestrator

import (
	"context"
	"fmt"
)

// The sizing rules that keep the scaler from starting more workers than the machine holds.
// A worker's budget is what one needs at its peak, a catch-up (142 MiB measured while joining
// a 1,000,000-entry log, docs/BENCHMARKS.md), with headroom; four workers per CPU keep reads
// from queueing behind each other's SQLite work on a small machine.
const (
	// WorkerMemory is the memory budgeted for one worker.
	WorkerMemory = 256 << 20
	// WorkersPerCPU is how many workers the default maximum allows per CPU.
	WorkersPerCPU = 4
	// MinReserve is the least memory always left to the orchestrator and the rest of the
	// machine (or a tenth of it, if that is more).
	MinReserve = 1 << 30
)

// Host is what the machine (or the Docker engine) that runs the workers has.
type Host struct {
	// CPUs is the number of CPUs the workers can use.
	CPUs int
	// MemTotal is the memory the workers can use, in bytes (a cgroup limit if lower).
	MemTotal uint64
	// MemAvailable is the memory free for new processes now, in bytes; 0: not known (the
	// Docker engine does not say), and the room is then counted from MemTotal.
	MemAvailable uint64
}

// HostReporter is a runtime that knows the machine it runs workers on.
type HostReporter interface {
	Host(ctx context.Context) (Host, error)
}

func (h Host) reserve() uint64 { return max(MinReserve, h.MemTotal/10) }

// MaxWorkers is the most workers (master included) this host is sized for, and what bounds it.
func (h Host) MaxWorkers() (int, string) {
	byCPU := WorkersPerCPU * max(h.CPUs, 1)
	byMem := 0
	if h.MemTotal > h.reserve() {
		byMem = int((h.MemTotal - h.reserve()) / WorkerMemory)
	}
	if byMem < byCPU {
		return byMem, fmt.Sprintf("memory: %d MiB less a %d MiB reserve, %d MiB a worker", h.MemTotal>>20, h.reserve()>>20, WorkerMemory>>20)
	}
	return byCPU, fmt.Sprintf("cpu: %d CPUs, %d workers each", h.CPUs, WorkersPerCPU)
}

// DefaultMaxSlaves is the scaler's maximum when none is given: the host's MaxWorkers less the
// master, and never below 1 (a pool of one master and one slave always runs).
func (h Host) DefaultMaxSlaves() (int, string) {
	n, why := h.MaxWorkers()
	return max(n-1, 1), why
}

// Room is how many more workers the host can take now, given the workers it runs, and what
// bounds it: the memory available beyond the reserve, or, when the available memory is not
// known, the memory total less the budgets of the running workers.
func (h Host) Room(running int) (int, string) {
	if h.MemAvailable > 0 {
		if h.MemAvailable <= h.reserve() {
			return 0, fmt.Sprintf("memory: %d MiB available, %d MiB kept in reserve", h.MemAvailable>>20, h.reserve()>>20)
		}
		return int((h.MemAvailable - h.reserve()) / WorkerMemory),
			fmt.Sprintf("memory: %d MiB available less a %d MiB reserve, %d MiB a worker", h.MemAvailable>>20, h.reserve()>>20, WorkerMemory>>20)
	}
	total := 0
	if h.MemTotal > h.reserve() {
		total = int((h.MemTotal - h.reserve()) / WorkerMemory)
	}
	return max(total-running, 0), fmt.Sprintf("memory: %d MiB less a %d MiB reserve holds %d workers, %d running", h.MemTotal>>20, h.reserve()>>20, total, running)
}

// Host asks the runtime for the machine it runs workers on; ok is false when the runtime
// cannot tell.
func (o *Orchestrator) Host(ctx context.Context) (Host, bool, error) {
	hr, ok := o.Runtime.(HostReporter)
	if !ok {
		return Host{}, false, nil
	}
	h, err := hr.Host(ctx)
	return h, err == nil, err
}

// Room is how many more slaves the machine can take now (SlotsUnknown when the runtime cannot
// tell), and why.
func (o *Orchestrator) Room(ctx context.Context) (int, string, error) {
	h, ok, err := o.Host(ctx)
	if err != nil || !ok {
		return SlotsUnknown, "", err
	}
	procs, err := o.Runtime.List(ctx)
	if err != nil {
		return SlotsUnknown, "", fmt.Errorf("list workers: %w", err)
	}
	n, why := h.Room(len(procs))
	return n, why, nil
}

// SlotsUnknown is the room of a pool whose machine cannot be measured: no bound.
const SlotsUnknown = -1

// RoomReporter is a pool that can say how many more slaves its machine holds now.
type RoomReporter interface {
	Room(ctx context.Context) (int, string, error)
}

// HostPool is a pool that can say what its machine is sized for.
type HostPool interface {
	Host(ctx context.Context) (Host, bool, error)
}

var (
	_ RoomReporter = (*Orchestrator)(nil)
	_ HostPool     = (*Orchestrator)(nil)
)
