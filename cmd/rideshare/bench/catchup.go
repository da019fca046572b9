package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// CatchupReport is the result of the catchup mode.
type CatchupReport struct {
	Mode         string  `json:"mode"`
	Label        string  `json:"label,omitempty"`
	Target       string  `json:"target"`
	Rows         int     `json:"rows_written"`
	Batch        int     `json:"inserts_per_entry"`
	WriteSeconds float64 `json:"write_seconds"`
	RowsPerSec   float64 `json:"write_rows_per_second"`
	LogEntries   uint64  `json:"log_entries"`
	KilledPID    int     `json:"killed_pid"`
	NewPID       int     `json:"new_slave_pid"`
	// KillToReadyMs is from the crash request to the replacement reporting ready with the
	// whole log applied; StartToReadyMs from its first appearance in /api/v1/workers.
	KillToReadyMs      float64 `json:"kill_to_ready_ms"`
	StartToReadyMs     float64 `json:"start_to_ready_ms"`
	EntriesPerSec      float64 `json:"entries_per_second"`
	RowsReplayedPerSec float64 `json:"rows_per_second"`
	RSSKiB             int64   `json:"new_slave_rss_kib,omitempty"`
	HWMKiB             int64   `json:"new_slave_peak_rss_kib,omitempty"`
	MasterRSSKiB       int64   `json:"master_rss_kib,omitempty"`
	RowsHeld           int64   `json:"rows_held"`
	LoadAvg            string  `json:"loadavg_before_after,omitempty"`
}

func (r *CatchupReport) table(w io.Writer) {
	fmt.Fprintf(w, "catchup against %s", r.Target)
	if r.Label != "" {
		fmt.Fprintf(w, " [%s]", r.Label)
	}
	if r.LoadAvg != "" {
		fmt.Fprintf(w, " (load average %s)", r.LoadAvg)
	}
	fmt.Fprintln(w)
	t := &tableWriter{}
	t.row("rows written", r.Rows)
	t.row("rows held (users + rides + joins)", r.RowsHeld)
	t.row("inserts per db/write (per log entry)", r.Batch)
	t.row("write time s", r.WriteSeconds)
	t.row("write rows/s", r.RowsPerSec)
	t.row("log entries (sync-log head)", r.LogEntries)
	t.row("killed slave pid → replacement pid", fmt.Sprintf("%d → %d", r.KilledPID, r.NewPID))
	t.row("kill → replacement ready ms", r.KillToReadyMs)
	t.row("replacement start → ready ms", r.StartToReadyMs)
	t.row("log entries/s (kill → ready)", r.EntriesPerSec)
	t.row("rows held/s (kill → ready)", r.RowsReplayedPerSec)
	if r.RSSKiB > 0 {
		t.row("replacement RSS MiB (peak)", fmt.Sprintf("%.1f (%.1f)", float64(r.RSSKiB)/1024, float64(r.HWMKiB)/1024))
	}
	if r.MasterRSSKiB > 0 {
		t.row("master RSS MiB", fmt.Sprintf("%.1f", float64(r.MasterRSSKiB)/1024))
	}
	t.flush(w)
}

// procStatus reads VmRSS and VmHWM (KiB) of a local process.
func procStatus(pid int) (rss, hwm int64) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

func (b *bencher) runCatchup(ctx context.Context) (*CatchupReport, error) {
	ws, err := b.waitHealthyAny(ctx)
	if err != nil {
		return nil, err
	}
	n := len(ws)
	rep := &CatchupReport{Mode: "catchup", Label: b.cfg.label, Target: b.cfg.orchestrator, Batch: b.cfg.batch}
	// One user owns every ride.
	owner := "c" + b.runID
	if st, _, err := b.writeUser(ctx, owner); err != nil || st != http.StatusOK {
		return nil, fmt.Errorf("create the rides' owner: status %d, %v", st, err)
	}
	writes := (b.cfg.entries + b.cfg.batch - 1) / b.cfg.batch
	var rows atomic.Int64
	start := time.Now()
	err = b.parallel(ctx, writes, "writing rows", func(ctx context.Context, i int) error {
		k := min(b.cfg.batch, b.cfg.entries-i*b.cfg.batch)
		rng := rand.New(rand.NewPCG(uint64(i), 11))
		var sb strings.Builder
		if k > 1 {
			sb.WriteString(`{"batch":[`)
		}
		for j := range k {
			if j > 0 {
				sb.WriteByte(',')
			}
			s, d := route(rng, 198)
			stamp := futureStamp(rng)
			t, _ := time.Parse("02-01-2006:05-04-15", stamp)
			sb.WriteString(`{"table":"rides","insert":{"created_by":"` + owner + `","timestamp":"` + stamp +
				`","ts":` + strconv.FormatInt(t.Unix(), 10) + `,"source":` + strconv.Itoa(s) + `,"destination":` + strconv.Itoa(d) + `}}`)
		}
		if k > 1 {
			sb.WriteString(`]}`)
		}
		st, data, _, err := b.do(ctx, http.MethodPost, b.cfg.orchestrator+"/api/v1/db/write", []byte(sb.String()), true)
		if err != nil {
			return err
		}
		if st != http.StatusOK {
			return fmt.Errorf("db/write: status %d: %s", st, data)
		}
		rows.Add(int64(k))
		return nil
	})
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	rep.Rows = int(rows.Load())
	rep.WriteSeconds = float64(int(elapsed.Seconds()*10)) / 10
	rep.RowsPerSec = float64(int(float64(rep.Rows) / elapsed.Seconds()))

	// Wait until every worker has applied the log's head (the master's applied sequence).
	var head uint64
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ws, err = b.workers(ctx)
		if err != nil {
			return nil, err
		}
		head = 0
		for _, w := range ws {
			if w.Role == "master" {
				head = w.Applied
			}
		}
		settled := head > 0 && healthy(ws, n)
		for _, w := range ws {
			settled = settled && w.Applied == head
		}
		if settled {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("workers did not all apply the log within 5 minutes: %+v", ws)
		}
		b.prog.line("waiting for every worker to apply the log: %+v", ws)
		time.Sleep(500 * time.Millisecond)
	}
	b.prog.done()
	rep.LogEntries = head
	if rep.RowsHeld, err = b.countRows(ctx); err != nil {
		return nil, err
	}
	before := map[string]bool{}
	for _, w := range ws {
		before[w.ID] = true
		if w.Role == "master" {
			rep.MasterRSSKiB, _ = procStatus(w.PID)
		}
	}

	loadBefore := loadAvg()
	t0 := time.Now()
	var pids []int
	if err := b.orch(ctx, http.MethodPost, "/api/v1/crash/slave", nil, &pids); err != nil {
		return nil, err
	}
	if len(pids) > 0 {
		rep.KilledPID = pids[0]
	}
	var appeared time.Time
	var last []benchWorker
	lastPrint := t0
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("the replacement slave was not ready in time (last view %+v): %w", last, err)
		}
		ws, err := b.workers(ctx)
		now := time.Now()
		if err == nil {
			last = ws
			for _, w := range ws {
				if before[w.ID] {
					continue
				}
				if appeared.IsZero() {
					appeared = now
				}
				if w.Ready && w.Applied >= head {
					rep.NewPID = w.PID
					rep.KillToReadyMs = ms(now.Sub(t0))
					rep.StartToReadyMs = ms(now.Sub(appeared))
					secs := now.Sub(t0).Seconds()
					rep.EntriesPerSec = float64(int(float64(head) / secs))
					rep.RowsReplayedPerSec = float64(int(float64(rep.RowsHeld) / secs))
					rep.LoadAvg = loadBefore + " → " + loadAvg()
					rep.RSSKiB, rep.HWMKiB = procStatus(w.PID)
					return rep, nil
				}
			}
		}
		if time.Since(lastPrint) >= time.Second {
			lastPrint = time.Now()
			b.prog.line("catch-up: %.0fs since the kill, workers %+v", time.Since(t0).Seconds(), last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitHealthyAny waits for a healthy system of whatever size it has.
func (b *bencher) waitHealthyAny(ctx context.Context) ([]benchWorker, error) {
	ws, err := b.workers(ctx)
	if err != nil {
		return nil, err
	}
	if len(ws) < 2 {
		return nil, errors.New("catchup needs a master and at least one slave")
	}
	return b.waitHealthy(ctx, len(ws), 60*time.Second)
}

// countRows counts the rows of every table through db/read.
func (b *bencher) countRows(ctx context.Context) (int64, error) {
	var total int64
	for _, t := range []string{"users", "rides", "ride_users"} {
		n, err := b.countTable(ctx, t)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// countTable counts a table's rows through db/read (strong consistency: every acknowledged
// write is counted).
func (b *bencher) countTable(ctx context.Context, table string) (int64, error) {
	var res struct {
		Rows []struct {
			Count json.Number `json:"count"`
		} `json:"rows"`
	}
	if err := b.orch(ctx, http.MethodPost, "/api/v1/db/read", map[string]any{"table": table, "count": true}, &res); err != nil {
		return 0, err
	}
	if len(res.Rows) != 1 {
		return 0, fmt.Errorf("count %s: %d rows", table, len(res.Rows))
	}
	return res.Rows[0].Count.Int64()
}
