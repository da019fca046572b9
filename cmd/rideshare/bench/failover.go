package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// benchWorker is one row of GET /api/v1/workers.
type benchWorker struct {
	ID      string `json:"id"`
	PID     int    `json:"pid"`
	Role    string `json:"role"`
	Applied uint64 `json:"applied_seq"`
	Ready   bool   `json:"ready"`
}

func (b *bencher) workers(ctx context.Context) ([]benchWorker, error) {
	var ws []benchWorker
	err := b.orch(ctx, http.MethodGet, "/api/v1/workers", nil, &ws)
	return ws, err
}

// healthy reports whether there are n workers, one ready master and every slave ready.
func healthy(ws []benchWorker, n int) bool {
	masters := 0
	for _, w := range ws {
		if !w.Ready {
			return false
		}
		if w.Role == "master" {
			masters++
		}
	}
	return len(ws) == n && masters == 1
}

// waitHealthy polls the worker view until healthy(n) or the timeout.
func (b *bencher) waitHealthy(ctx context.Context, n int, timeout time.Duration) ([]benchWorker, error) {
	deadline := time.Now().Add(timeout)
	for {
		ws, err := b.workers(ctx)
		if err == nil && healthy(ws, n) {
			return ws, nil
		}
		if time.Now().After(deadline) {
			return ws, fmt.Errorf("the system is not back to %d ready workers with one master after %v (now %+v, err %v)", n, timeout, ws, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ack is one acknowledged write.
type ack struct {
	username string
	id       int64
	seq      uint64
}

// FailoverRun is one kill of the master.
type FailoverRun struct {
	Run        int     `json:"run"`
	KilledPID  int     `json:"killed_pid"`
	FailoverMs float64 `json:"kill_to_first_ack_ms"`
	// FirstAckMs is the first acknowledgement after the kill of any write, including writes
	// sent before it and retried by the orchestrator (may come from the old master's last
	// answers in flight, so it is reported, not used).
	FirstAnyAckMs float64        `json:"first_any_ack_ms"`
	MaxWriteMs    float64        `json:"slowest_write_ms"`
	Acked         int            `json:"acked_writes"`
	Failed        map[string]int `json:"failed_writes,omitempty"`
	Lost          int            `json:"lost_writes"`
	NewMasterPID  int            `json:"new_master_pid"`
}

// FailoverReport is the result of the failover mode.
type FailoverReport struct {
	Mode        string        `json:"mode"`
	Label       string        `json:"label,omitempty"`
	Target      string        `json:"target"`
	Concurrency int           `json:"concurrency"`
	Runs        []FailoverRun `json:"runs"`
	MedianMs    float64       `json:"median_kill_to_first_ack_ms"`
	MaxMs       float64       `json:"max_kill_to_first_ack_ms"`
	Acked       int           `json:"acked_writes"`
	Lost        int           `json:"lost_writes"`
	Verified    int           `json:"verified_readable"`
	LoadAvg     string        `json:"loadavg_before_after,omitempty"`
}

func (r *FailoverReport) table(w io.Writer) {
	fmt.Fprintf(w, "failover: crash/master under a db/write load of %d clients against %s", r.Concurrency, r.Target)
	if r.Label != "" {
		fmt.Fprintf(w, " [%s]", r.Label)
	}
	if r.LoadAvg != "" {
		fmt.Fprintf(w, " (load average %s)", r.LoadAvg)
	}
	fmt.Fprintln(w)
	t := &tableWriter{}
	t.row("run", "killed pid", "new master", "kill→first ack ms", "first any ack ms", "slowest write ms", "acked", "failed", "lost")
	for _, x := range r.Runs {
		t.row(x.Run, x.KilledPID, x.NewMasterPID, x.FailoverMs, x.FirstAnyAckMs, x.MaxWriteMs, x.Acked, formatCodes(x.Failed), x.Lost)
	}
	t.flush(w)
	fmt.Fprintf(w, "kill → first acknowledged write: median %.0f ms, max %.0f ms over %d runs\n", r.MedianMs, r.MaxMs, len(r.Runs))
	fmt.Fprintf(w, "acknowledged writes: %d, verified readable via db/read afterwards: %d, lost: %d\n", r.Acked, r.Verified, r.Lost)
}

// writeUser inserts one user through db/write and returns the result.
func (b *bencher) writeUser(ctx context.Context, name string) (int, ack, error) {
	body := []byte(`{"table":"users","insert":{"username":"` + name + `","password":"` + benchPassword + `"}}`)
	st, data, _, err := b.do(ctx, http.MethodPost, b.cfg.orchestrator+"/api/v1/db/write", body, true)
	if err != nil || st != http.StatusOK {
		return st, ack{}, err
	}
	var res struct {
		Seq uint64 `json:"seq"`
		ID  int64  `json:"id"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return st, ack{}, err
	}
	return st, ack{username: name, id: res.ID, seq: res.Seq}, nil
}

func (b *bencher) runFailover(ctx context.Context) (*FailoverReport, error) {
	ws, err := b.workers(ctx)
	if err != nil {
		return nil, err
	}
	n := len(ws)
	if _, err := b.waitHealthy(ctx, n, 60*time.Second); err != nil {
		return nil, err
	}
	rep := &FailoverReport{Mode: "failover", Label: b.cfg.label, Target: b.cfg.orchestrator, Concurrency: b.cfg.concurrency}
	loadBefore := loadAvg()
	defer func() { rep.LoadAvg = loadBefore + " → " + loadAvg() }()
	acked := map[string]int64{} // every acknowledged username → id
	for run := 1; run <= b.cfg.runs; run++ {
		fr, acks, err := b.failoverOnce(ctx, run)
		if err != nil {
			return rep, fmt.Errorf("run %d: %w", run, err)
		}
		for _, a := range acks {
			acked[a.username] = a.id
		}
		// Wait for the replacement slave, then check this run's writes.
		after, err := b.waitHealthy(ctx, n, 90*time.Second)
		if err != nil {
			return rep, fmt.Errorf("run %d: %w", run, err)
		}
		for _, w := range after {
			if w.Role == "master" {
				fr.NewMasterPID = w.PID
			}
		}
		have, err := b.readUsers(ctx)
		if err != nil {
			return rep, fmt.Errorf("run %d: verify: %w", run, err)
		}
		for _, a := range acks {
			if id, ok := have[a.username]; !ok || id != a.id {
				fr.Lost++
			}
		}
		rep.Runs = append(rep.Runs, *fr)
		b.prog.line("failover run %d/%d: kill → first ack %.0f ms, %d acked, %d lost", run, b.cfg.runs, fr.FailoverMs, fr.Acked, fr.Lost)
	}
	b.prog.done()
	// The final check, over every run's writes at once.
	have, err := b.readUsers(ctx)
	if err != nil {
		return rep, err
	}
	var times []time.Duration
	for _, x := range rep.Runs {
		times = append(times, time.Duration(x.FailoverMs*float64(time.Millisecond)))
	}
	rep.MedianMs, rep.MaxMs = medianMax(times)
	rep.Acked = len(acked)
	for name, id := range acked {
		if got, ok := have[name]; ok && got == id {
			rep.Verified++
		} else {
			rep.Lost++
		}
	}
	return rep, nil
}

// failoverOnce runs a write load, kills the master once and returns when a write sent after the
// kill has been acknowledged (plus one second of load after it).
func (b *bencher) failoverOnce(ctx context.Context, run int) (*FailoverRun, []ack, error) {
	fr := &FailoverRun{Run: run, Failed: map[string]int{}}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var (
		mu       sync.Mutex
		acks     []ack
		maxWrite time.Duration
		killAt   atomic.Int64 // UnixNano of the crash request being sent; 0 before
		firstAny atomic.Int64 // UnixNano of the first ack after killAt
		stopping atomic.Bool
	)
	record := func(st int, a ack, err error, sent time.Time) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if d := now.Sub(sent); d > maxWrite {
			maxWrite = d
		}
		if err != nil || st != http.StatusOK {
			key := "net"
			if st != 0 {
				key = strconv.Itoa(st)
			}
			fr.Failed[key]++
			return
		}
		acks = append(acks, a)
		if k := killAt.Load(); k != 0 && now.UnixNano() > k && firstAny.Load() == 0 {
			firstAny.Store(now.UnixNano())
		}
	}
	var wg sync.WaitGroup
	var seq atomic.Int64
	for c := range b.cfg.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopping.Load() && ctx.Err() == nil {
				name := "f" + b.runID + "r" + strconv.Itoa(run) + "c" + strconv.Itoa(c) + "n" + strconv.FormatInt(seq.Add(1), 10)
				sent := time.Now()
				st, a, err := b.writeUser(ctx, name)
				record(st, a, err, sent)
			}
		}()
	}
	// Let the load settle, then kill the master.
	select {
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case <-time.After(time.Second):
	}
	t0 := time.Now()
	killAt.Store(t0.UnixNano())
	var pids []int
	if err := b.orch(ctx, http.MethodPost, "/api/v1/crash/master", nil, &pids); err != nil {
		stopping.Store(true)
		wg.Wait()
		return nil, nil, err
	}
	if len(pids) > 0 {
		fr.KilledPID = pids[0]
	}
	// The probe: the first write sent after the kill was answered. It waits out the failover
	// inside the orchestrator (writes wait up to the write timeout); if it fails, send again.
	var probeAck time.Time
	for i := 0; ctx.Err() == nil; i++ {
		name := "f" + b.runID + "r" + strconv.Itoa(run) + "probe" + strconv.Itoa(i)
		sent := time.Now()
		st, a, err := b.writeUser(ctx, name)
		record(st, a, err, sent)
		if err == nil && st == http.StatusOK {
			probeAck = time.Now()
			break
		}
	}
	if probeAck.IsZero() {
		stopping.Store(true)
		wg.Wait()
		return nil, nil, errors.New("no write was acknowledged after the kill")
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
	stopping.Store(true)
	wg.Wait()
	fr.FailoverMs = ms(probeAck.Sub(t0))
	if f := firstAny.Load(); f != 0 {
		fr.FirstAnyAckMs = ms(time.Duration(f - t0.UnixNano()))
	}
	fr.MaxWriteMs = ms(maxWrite)
	fr.Acked = len(acks)
	if len(fr.Failed) == 0 {
		fr.Failed = nil
	}
	return fr, acks, nil
}

// readUsers reads every user (id, username) through db/read, in pages.
func (b *bencher) readUsers(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	var last int64
	for {
		q := map[string]any{
			"table": "users", "columns": []string{"id", "username"},
			"where": map[string]any{"id": map[string]any{"gt": last}},
			"order": []map[string]any{{"column": "id"}}, "limit": 50000,
		}
		var res struct {
			Rows []struct {
				ID       json.Number `json:"id"`
				Username string      `json:"username"`
			} `json:"rows"`
		}
		if err := b.orch(ctx, http.MethodPost, "/api/v1/db/read", q, &res); err != nil {
			return nil, err
		}
		for _, r := range res.Rows {
			id, err := r.ID.Int64()
			if err != nil {
				return nil, err
			}
			out[r.Username] = id
			last = id
		}
		if len(res.Rows) < 50000 {
			return out, nil
		}
	}
}
