package bench

import (
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// recorder collects the outcome of every request to one endpoint. Each client goroutine has
// its own recorders (no lock on the hot path); they are merged at the end.
type recorder struct {
	lat    []time.Duration // successful requests only
	status map[string]int  // every request, by status ("net" for a transport error)
	errs   int
}

func newRecorder() *recorder { return &recorder{status: map[string]int{}} }

func (r *recorder) add(status int, ok bool, d time.Duration) {
	key := "net"
	if status > 0 {
		key = strconv.Itoa(status)
	}
	r.status[key]++
	if ok {
		r.lat = append(r.lat, d)
	} else {
		r.errs++
	}
}

func (r *recorder) merge(o *recorder) {
	r.lat = append(r.lat, o.lat...)
	for k, v := range o.status {
		r.status[k] += v
	}
	r.errs += o.errs
}

// EndpointStats is one endpoint's line of a load report. Latencies are in milliseconds, of
// successful requests.
type EndpointStats struct {
	Endpoint   string         `json:"endpoint"`
	Requests   int            `json:"requests"`
	OK         int            `json:"ok"`
	Errors     int            `json:"errors"`
	PerSecond  float64        `json:"ok_per_second"`
	MeanMs     float64        `json:"mean_ms"`
	P50Ms      float64        `json:"p50_ms"`
	P95Ms      float64        `json:"p95_ms"`
	P99Ms      float64        `json:"p99_ms"`
	MaxMs      float64        `json:"max_ms"`
	ByStatus   map[string]int `json:"by_status"`
	ErrorCodes map[string]int `json:"errors_by_status,omitempty"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func (r *recorder) stats(name string, elapsed time.Duration, okStatus func(int) bool) EndpointStats {
	slices.Sort(r.lat)
	var sum time.Duration
	for _, d := range r.lat {
		sum += d
	}
	s := EndpointStats{Endpoint: name, OK: len(r.lat), Errors: r.errs, ByStatus: r.status}
	for _, v := range r.status {
		s.Requests += v
	}
	for k, v := range r.status {
		code, err := strconv.Atoi(k)
		if err != nil || !okStatus(code) {
			if s.ErrorCodes == nil {
				s.ErrorCodes = map[string]int{}
			}
			s.ErrorCodes[k] += v
		}
	}
	if elapsed > 0 {
		s.PerSecond = math.Round(float64(len(r.lat))/elapsed.Seconds()*10) / 10
	}
	if len(r.lat) > 0 {
		s.MeanMs = ms(sum / time.Duration(len(r.lat)))
		s.P50Ms, s.P95Ms, s.P99Ms = ms(quantile(r.lat, .50)), ms(quantile(r.lat, .95)), ms(quantile(r.lat, .99))
		s.MaxMs = ms(r.lat[len(r.lat)-1])
	}
	return s
}

// counters are shared by the clients for the progress line.
type counters struct {
	mu       sync.Mutex
	requests int64
	errors   int64
}

func (c *counters) add(ok bool) {
	c.mu.Lock()
	c.requests++
	if !ok {
		c.errors++
	}
	c.mu.Unlock()
}

func (c *counters) get() (int64, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests, c.errors
}

// tableWriter prints aligned columns.
type tableWriter struct {
	rows [][]string
}

func (t *tableWriter) row(cells ...any) {
	r := make([]string, len(cells))
	for i, c := range cells {
		switch v := c.(type) {
		case float64:
			r[i] = strconv.FormatFloat(v, 'f', -1, 64)
			if v >= 100 {
				r[i] = strconv.FormatFloat(v, 'f', 0, 64)
			}
		default:
			r[i] = fmt.Sprint(v)
		}
	}
	t.rows = append(t.rows, r)
}

func (t *tableWriter) flush(w io.Writer) {
	var width []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			if i == 0 {
				b.WriteString(c + strings.Repeat(" ", width[i]-len(c)))
			} else {
				b.WriteString(strings.Repeat(" ", width[i]-len(c)) + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	t.rows = nil
}

func formatCodes(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// medianMax of durations in milliseconds.
func medianMax(ds []time.Duration) (median, maxv float64) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	m := s[n/2]
	if n%2 == 0 {
		m = (s[n/2-1] + s[n/2]) / 2
	}
	return ms(m), ms(s[n-1])
}

// loadAvg is the machine's 1-minute load average (from /proc/loadavg), or "" where there is
// none: other processes on a small machine change every figure, so reports carry it.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// CPUUse tells how busy the machine was during a measured run and who used it: on a small
// shared machine, other processes' CPU time is the main source of noise in every figure.
type CPUUse struct {
	Cores       int     `json:"cores"`
	BusyCores   float64 `json:"busy_cores"`   // average busy CPUs over the run (all processes)
	OursCores   float64 `json:"ours_cores"`   // the bench command, the stack and its workers
	BenchCores  float64 `json:"bench_cores"`  // of which this command (the load generator)
	OthersCores float64 `json:"others_cores"` // everything else on the machine
}

func (c *CPUUse) String() string {
	if c == nil {
		return ""
	}
	return fmt.Sprintf("CPU: %.2f of %d cores busy, %.2f by the system under test and this command (this command %.2f), %.2f by other processes",
		c.BusyCores, c.Cores, c.OursCores, c.BenchCores, c.OthersCores)
}

// cpuSample is the machine's busy CPU time and the listed processes' CPU time, in clock ticks.
type cpuSample struct {
	at          time.Time
	busy, ours  int64
	self        int64
	cores       int
	pids        []int
	unavailable bool
}

// clockTicks is USER_HZ, 100 on Linux for every architecture Go supports.
const clockTicks = 100

func takeCPUSample(pids []int) cpuSample {
	s := cpuSample{at: time.Now(), pids: pids}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		s.unavailable = true
		return s
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "cpu" && len(f) >= 8 {
			var total int64
			for i, v := range f[1:] {
				if i >= 8 { // guest time is already counted in user
					break
				}
				n, _ := strconv.ParseInt(v, 10, 64)
				total += n
				if i == 3 || i == 4 { // idle, iowait
					total -= n
				}
			}
			s.busy = total
		} else if strings.HasPrefix(f[0], "cpu") {
			s.cores++
		}
	}
	for _, pid := range pids {
		n := procCPU(pid)
		s.ours += n
		if pid == os.Getpid() {
			s.self = n
		}
	}
	return s
}

// procCPU is a process's user+system CPU time in clock ticks (0 if it is gone).
func procCPU(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

func cpuUse(a, b cpuSample) *CPUUse {
	secs := b.at.Sub(a.at).Seconds()
	if a.unavailable || b.unavailable || secs <= 0 {
		return nil
	}
	r := func(v float64) float64 { return math.Round(v*100) / 100 }
	busy := float64(b.busy-a.busy) / clockTicks / secs
	ours := float64(b.ours-a.ours) / clockTicks / secs
	self := float64(b.self-a.self) / clockTicks / secs
	return &CPUUse{Cores: b.cores, BusyCores: r(busy), OursCores: r(ours), BenchCores: r(self), OthersCores: r(max(0, busy-ours))}
}

// parentPID reads a process's parent from /proc.
func parentPID(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}
