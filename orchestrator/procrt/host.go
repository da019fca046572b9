package procrt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/rideshare/rideshare/orchestrator"
)

var _ orchestrator.HostReporter = (*Runtime)(nil)

// Host measures this machine, where the worker processes run: its CPUs (as the Go runtime
// counts them, CPU affinity included), and its memory from /proc/meminfo, or from the cgroup
// the orchestrator runs in when that limit is lower (workers are its children, so they share
// it).
func (r *Runtime) Host(context.Context) (orchestrator.Host, error) {
	h := orchestrator.Host{CPUs: runtime.NumCPU()}
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return h, fmt.Errorf("measure memory: %w", err)
	}
	h.MemTotal, h.MemAvailable, err = parseMeminfo(data)
	if err != nil {
		return h, err
	}
	if limit, used, ok := cgroupMemory(); ok && limit < h.MemTotal {
		h.MemTotal = limit
		h.MemAvailable = min(h.MemAvailable, limit-min(used, limit))
	}
	return h, nil
}

// parseMeminfo reads MemTotal and MemAvailable (in kB) from /proc/meminfo.
func parseMeminfo(data []byte) (total, avail uint64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, perr := strconv.ParseUint(f[1], 10, 64)
		if perr != nil {
			continue
		}
		switch f[0] {
		case "MemTotal:":
			total = v << 10
		case "MemAvailable:":
			avail = v << 10
		}
	}
	if total == 0 || avail == 0 {
		return 0, 0, fmt.Errorf("measure memory: /proc/meminfo has no MemTotal or MemAvailable")
	}
	return total, avail, nil
}

// cgroupMemory reads the cgroup v2 memory limit and use of this process, if it has a limit.
func cgroupMemory() (limit, used uint64, ok bool) {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, 0, false
	}
	path := ""
	for _, line := range strings.Split(strings.TrimSpace(string(self)), "\n") {
		if p, found := strings.CutPrefix(line, "0::"); found {
			path = p
		}
	}
	if path == "" {
		return 0, 0, false
	}
	dir := "/sys/fs/cgroup" + path
	read := func(name string) (uint64, bool) {
		b, err := os.ReadFile(dir + "/" + name)
		if err != nil {
			return 0, false
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64) // "max" is no limit
		return v, err == nil
	}
	limit, ok = read("memory.max")
	if !ok {
		return 0, 0, false
	}
	used, _ = read("memory.current")
	return limit, used, true
}
