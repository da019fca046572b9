package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The soak mode runs the load mix for a long time against a system with its default settings
// and watches what a long run does to it: the worker pool against the scaler's cap, each
// process's memory, the sync log's size. It fails when the pool outgrew the cap, a request
// failed, or a process's memory kept growing.

// SoakSample is the system as seen at one moment of a soak run.
type SoakSample struct {
	Seconds      float64       `json:"seconds"`
	Workers      int           `json:"workers"`
	SlavesWanted int           `json:"slaves_wanted"`
	LogHead      uint64        `json:"synclog_head_seq"`
	LogBytes     uint64        `json:"synclog_bytes"`
	LogReaders   int           `json:"synclog_consumers"`
	RSSKiB       map[int]int64 `json:"rss_kib"` // by PID
	hwmKiB       map[int]int64 // VmHWM by PID, read with RSSKiB
}

// SoakProcess is one process of the system over a soak run.
type SoakProcess struct {
	PID     int    `json:"pid"`
	What    string `json:"what"` // master, slave, or orchestrator (the workers' parent)
	Samples int    `json:"samples"`
	FirstKB int64  `json:"first_rss_kib"`
	LastKB  int64  `json:"last_rss_kib"`
	PeakKB  int64  `json:"peak_rss_kib"` // VmHWM: the highest the kernel saw
	Growing bool   `json:"memory_keeps_growing"`
}

// SoakReport is the result of a soak run.
type SoakReport struct {
	Load         *LoadReport    `json:"load"`
	SampleEvery  string         `json:"sample_every"`
	MaxSlaves    int            `json:"max_slaves"` // the scaler's cap (rideshare_scaler_max_slaves)
	PeakWorkers  int            `json:"peak_workers"`
	Capped       map[string]int `json:"scale_outs_capped"` // rideshare_scaler_capped_total by reason
	Samples      []SoakSample   `json:"samples"`
	Processes    []SoakProcess  `json:"processes"`
	LogBytesFrom uint64         `json:"synclog_bytes_start"`
	LogBytesTo   uint64         `json:"synclog_bytes_end"`
	Violations   []string       `json:"violations"`
}

func (r *SoakReport) table(w io.Writer) {
	r.Load.table(w)
	fmt.Fprintf(w, "\nworkers over time (sampled every %s; cap: 1 master + %d slaves; peak %d workers):\n", r.SampleEvery, r.MaxSlaves, r.PeakWorkers)
	t := &tableWriter{}
	t.row("t s", "workers", "slaves wanted", "log head", "log MiB", "log readers")
	step := max(len(r.Samples)/30, 1) // at most ~30 rows
	for i, s := range r.Samples {
		if i%step == 0 || i == len(r.Samples)-1 {
			t.row(fmt.Sprintf("%.0f", s.Seconds), s.Workers, s.SlavesWanted, s.LogHead, fmt.Sprintf("%.1f", float64(s.LogBytes)/(1<<20)), s.LogReaders)
		}
	}
	t.flush(w)
	fmt.Fprintln(w, "\nprocesses (resident memory):")
	t = &tableWriter{}
	t.row("pid", "what", "samples", "first MiB", "last MiB", "peak MiB", "keeps growing")
	for _, p := range r.Processes {
		t.row(p.PID, p.What, p.Samples, mib(p.FirstKB), mib(p.LastKB), mib(p.PeakKB), p.Growing)
	}
	t.flush(w)
	fmt.Fprintf(w, "\nsync log: %.1f MiB → %.1f MiB; scale-outs capped: %v\n",
		float64(r.LogBytesFrom)/(1<<20), float64(r.LogBytesTo)/(1<<20), r.Capped)
	if len(r.Violations) == 0 {
		fmt.Fprintln(w, "soak: holds (worker count within the cap, no request failed, no process's memory kept growing)")
	}
	for _, v := range r.Violations {
		fmt.Fprintln(w, "soak: VIOLATED:", v)
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }

// runSoak drives the mix for --duration while sampling the system every --sample-every.
func (b *bencher) runSoak(ctx context.Context) (*SoakReport, error) {
	ls := &loadState{base: b.cfg.gateway, runID: b.runID, routes: b.cfg.routes}
	if err := b.seed(ctx, ls, true); err != nil {
		return nil, err
	}
	rep := &SoakReport{SampleEvery: b.cfg.sampleEvery.String(), Capped: map[string]int{}}
	var (
		mu      sync.Mutex
		samples []SoakSample
		roles   = map[int]string{}
		hwm     = map[int]int64{}
	)
	start := time.Now()
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(b.cfg.sampleEvery)
		defer t.Stop()
		for {
			s, who, err := b.sample(ctx, start)
			if err == nil {
				mu.Lock()
				samples = append(samples, s)
				for pid, what := range who {
					roles[pid] = what
					hwm[pid] = max(hwm[pid], s.hwmKiB[pid])
				}
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	load, err := b.drive(ctx, ls, endpoints, "soak")
	close(stop)
	<-sampled
	if err != nil {
		return nil, err
	}
	// One last look, after the load: what the system settled at.
	if s, _, err := b.sample(ctx, start); err == nil {
		samples = append(samples, s)
	}
	rep.Load, rep.Samples = load, samples
	if len(samples) == 0 {
		return rep, errors.New("soak: the system could not be sampled once (is the orchestrator reachable?)")
	}
	fams, err := b.orchMetrics(ctx)
	if err != nil {
		return rep, err
	}
	rep.MaxSlaves = int(fams["rideshare_scaler_max_slaves"][""])
	for k, v := range fams["rideshare_scaler_capped_total"] {
		rep.Capped[strings.TrimPrefix(k, "reason=")] = int(v)
	}
	rep.LogBytesFrom, rep.LogBytesTo = samples[0].LogBytes, samples[len(samples)-1].LogBytes
	for _, s := range samples {
		rep.PeakWorkers = max(rep.PeakWorkers, s.Workers)
	}
	// Memory is judged after the warm-up: a process's first minutes (caches filling, the
	// race detector's shadow memory) are growth that stops.
	var settled []SoakSample
	for _, s := range samples {
		if s.Seconds >= b.cfg.warmup.Seconds() {
			settled = append(settled, s)
		}
	}
	rep.Processes = soakProcesses(samples, settled, roles, hwm)

	if rep.MaxSlaves > 0 && rep.PeakWorkers > rep.MaxSlaves+1 {
		rep.Violations = append(rep.Violations, fmt.Sprintf("%d workers at the peak, above the cap of 1 master + %d slaves", rep.PeakWorkers, rep.MaxSlaves))
	}
	if load.Total.Errors > 0 {
		rep.Violations = append(rep.Violations, fmt.Sprintf("%d requests failed: %s", load.Total.Errors, formatCodes(load.Total.ErrorCodes)))
	}
	for _, p := range rep.Processes {
		if p.Growing {
			rep.Violations = append(rep.Violations, fmt.Sprintf("the memory of %s %d kept growing: %s MiB → %s MiB", p.What, p.PID, mib(p.FirstKB), mib(p.LastKB)))
		}
	}
	if len(rep.Violations) > 0 {
		return rep, fmt.Errorf("soak: %s", strings.Join(rep.Violations, "; "))
	}
	return rep, nil
}

// sample reads the worker list and the orchestrator's metrics, and the resident memory of
// every process of the system that runs on this machine (the workers and their parent; never
// this command's own process, which holds the load generator).
func (b *bencher) sample(ctx context.Context, start time.Time) (SoakSample, map[int]string, error) {
	ws, err := b.workers(ctx)
	if err != nil {
		return SoakSample{}, nil, err
	}
	fams, err := b.orchMetrics(ctx)
	if err != nil {
		return SoakSample{}, nil, err
	}
	s := SoakSample{Seconds: time.Since(start).Seconds(), Workers: len(ws), RSSKiB: map[int]int64{}, hwmKiB: map[int]int64{},
		SlavesWanted: int(fams["rideshare_slaves_wanted"][""]),
		LogHead:      uint64(fams["rideshare_synclog_head_seq"][""]),
		LogBytes:     uint64(fams["rideshare_synclog_bytes"][""]),
		LogReaders:   int(fams["rideshare_synclog_consumers"][""])}
	who := map[int]string{}
	for _, w := range ws {
		who[w.PID] = w.Role
		if pp := parentPID(w.PID); pp > 1 {
			who[pp] = "orchestrator"
		}
	}
	delete(who, os.Getpid())
	for pid := range who {
		if rss, hwm := procStatus(pid); rss > 0 {
			s.RSSKiB[pid], s.hwmKiB[pid] = rss, hwm
		} else {
			delete(who, pid) // not on this machine, or gone
		}
	}
	return s, who, nil
}

// orchMetrics scrapes the orchestrator's /metrics: family name → labels (k=v,… or "") → value.
// Only the plain text lines are read; that is all the soak needs.
func (b *bencher) orchMetrics(ctx context.Context) (map[string]map[string]float64, error) {
	status, body, _, err := b.do(ctx, http.MethodGet, b.cfg.orchestrator+"/metrics", nil, false)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: status %d", status)
	}
	out := map[string]map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name, labels := line[:sp], ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			labels = strings.ReplaceAll(strings.Trim(name[i:], "{}"), `"`, "")
			name = name[:i]
		}
		if out[name] == nil {
			out[name] = map[string]float64{}
		}
		out[name][labels] = v
	}
	return out, sc.Err()
}

// soakProcesses sums up each process's memory over the samples, and judges its growth over
// the settled ones (after the warm-up). A process's memory keeps growing when, over the
// settled samples it was in (at least six), the highest of each third is above the highest of
// the third before, and the last third's is at least half again and 64 MiB above the first's:
// a leak, rather than caches filling and the GC's usual swing.
func soakProcesses(samples, settled []SoakSample, roles map[int]string, hwm map[int]int64) []SoakProcess {
	seriesOf := func(ss []SoakSample, pid int) []int64 {
		var series []int64
		for _, s := range ss {
			if v, ok := s.RSSKiB[pid]; ok {
				series = append(series, v)
			}
		}
		return series
	}
	var out []SoakProcess
	for pid, what := range roles {
		series := seriesOf(samples, pid)
		if len(series) == 0 {
			continue
		}
		p := SoakProcess{PID: pid, What: what, Samples: len(series), FirstKB: series[0], LastKB: series[len(series)-1], PeakKB: hwm[pid]}
		for _, v := range series {
			p.PeakKB = max(p.PeakKB, v)
		}
		p.Growing = keepsGrowing(seriesOf(settled, pid))
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

func keepsGrowing(series []int64) bool {
	n := len(series)
	if n < 6 {
		return false
	}
	peak := func(part []int64) int64 {
		m := part[0]
		for _, v := range part {
			m = max(m, v)
		}
		return m
	}
	a, b, c := peak(series[:n/3]), peak(series[n/3:2*n/3]), peak(series[2*n/3:])
	return a < b && b < c && c >= a+a/2 && c-a >= 64<<10
}
