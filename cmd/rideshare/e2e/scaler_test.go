package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/cmd/rideshare/system"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rideshare/rideshare/orchestrator"
)

func withScaleInterval(d time.Duration) stackOpt {
	return func(c *system.Config) { c.ScaleInterval = d }
}

// scrape reads a service's /metrics.
func scrape(tb testing.TB, baseURL string) map[string]*dto.MetricFamily {
	tb.Helper()
	resp, err := http.Get(baseURL + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s/metrics: %s", baseURL, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s/metrics: %v", baseURL, err)
	}
	return fams
}

// sample is the value of the first series of the family whose labels include want (the sample
// count for a histogram), and whether there is one.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		labels := labelMap(m)
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// orchMetric is a value on the orchestrator's /metrics (0 when absent).
func orchMetric(tb testing.TB, st *stack, name string, labels map[string]string) float64 {
	tb.Helper()
	v, _ := sample(scrape(tb, st.OrchestratorURL), name, labels)
	return v
}

func decisions(tb testing.TB, st *stack) float64 {
	tb.Helper()
	fams := scrape(tb, st.OrchestratorURL)
	total := 0.0
	for _, d := range []string{"up", "down", "same"} {
		v, _ := sample(fams, "rideshare_scaler_decisions_total", map[string]string{"direction": d})
		total += v
	}
	return total
}

// dbReads sends n reads to the database API, concurrency at a time, and requires them
// answered.
func dbReads(tb testing.TB, st *stack, n, concurrency int) {
	tb.Helper()
	dbReadsAt(tb, st.OrchestratorURL, n, concurrency)
}

// dbReadsAt is dbReads through the orchestrator (node) at base.
func dbReadsAt(tb testing.TB, base string, n, concurrency int) {
	tb.Helper()
	body, err := json.Marshal(rideshare.Read{Table: "users", Count: true})
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range concurrency {
		wg.Go(func() {
			for range jobs {
				resp, err := http.Post(base+"/api/v1/db/read", "application/json", bytes.NewReader(body))
				if err != nil {
					errs <- err
					continue
				}
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("db read: %s %s", resp.Status, out)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// consistently requires cond to hold throughout d: for asserting that something does not
// happen, which no event can announce.
func consistently(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !cond() {
			tb.Fatalf("%s stopped holding", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countRoles counts the workers by role and tells whether all are ready.
func countRoles(ws []orchestrator.WorkerInfo) (masters, slaves int, ready bool) {
	ready = true
	for _, w := range ws {
		switch w.Role {
		case "master":
			masters++
		case "slave":
			slaves++
		}
		ready = ready && w.Ready
	}
	return masters, slaves, ready
}

func TestScaler(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	const interval = 3 * time.Second
	st := mustStack(t, withSlaves(2), withScaleInterval(interval))
	start := settled(t, st, 3)
	master := masterOf(t, st)
	failovers := orchMetric(t, st, "rideshare_failovers_total", nil)

	t.Run("no scaling before the first read", func(t *testing.T) {
		// A scaler that ran without a read would take the pool down to 1 slave.
		consistently(t, 2*interval+interval/2, "2 slaves and no decision", func() bool {
			return decisions(t, st) == 0 && orchMetric(t, st, "rideshare_slaves_wanted", nil) == 2
		})
	})

	var scaled []orchestrator.WorkerInfo
	t.Run("50 reads in one interval give 3 slaves", func(t *testing.T) {
		dbReads(t, st, 50, 10)
		// Each decision starts an interval: 50 reads right after each keep the pool at 3
		// slaves until they have all started and caught up.
		seen := 0.0
		eventually(t, 60*time.Second, "1 master and 3 ready slaves", func() bool {
			if d := decisions(t, st); d > seen {
				seen = d
				dbReads(t, st, 50, 10)
			}
			scaled = workers(t, st)
			m, s, ready := countRoles(scaled)
			return m == 1 && s == 3 && ready && len(scaled) == 4
		})
		fams := scrape(t, st.OrchestratorURL)
		if v, _ := sample(fams, "rideshare_slaves_wanted", nil); v != 3 {
			t.Errorf("rideshare_slaves_wanted %v, want 3", v)
		}
		if v, _ := sample(fams, "rideshare_scaler_last_interval_reads", nil); v != 50 {
			t.Errorf("rideshare_scaler_last_interval_reads %v, want 50", v)
		}
		for _, w := range start {
			if !slices.ContainsFunc(scaled, func(x orchestrator.WorkerInfo) bool { return x.ID == w.ID }) {
				t.Errorf("worker %s (%s, pid %d) is gone after the scale-out: %+v", w.ID, w.Role, w.PID, scaled)
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("an idle interval gives 1 slave; scale-in spares the master and replaces a crashed slave", func(t *testing.T) {
		var slaves []orchestrator.WorkerInfo
		for _, w := range scaled {
			if w.Role == "slave" {
				slaves = append(slaves, w)
			}
		}
		slices.SortFunc(slaves, func(a, b orchestrator.WorkerInfo) int { return a.PID - b.PID })
		keep, stop := slaves[0], slaves[1:]
		lost := orchMetric(t, st, "rideshare_workers_lost_total", nil)

		eventually(t, 4*interval, "the scaler to want 1 slave", func() bool {
			return orchMetric(t, st, "rideshare_slaves_wanted", nil) == 1
		})
		// Scale-in is under way once one of the highest-PID slaves has stopped: crash the
		// slave that was to stay.
		eventually(t, 30*time.Second, "a highest-PID slave to stop", func() bool {
			ws := workers(t, st)
			for _, w := range stop {
				if !slices.ContainsFunc(ws, func(x orchestrator.WorkerInfo) bool { return x.ID == w.ID }) {
					return true
				}
			}
			return false
		})
		if err := syscall.Kill(keep.PID, syscall.SIGKILL); err != nil {
			t.Fatalf("kill slave %d: %v", keep.PID, err)
		}
		gone(t, st, keep.PID)

		ws := settled(t, st, 2)
		m := masterOf(t, st)
		if m.ID != master.ID || m.PID != master.PID {
			t.Fatalf("master %s (pid %d) after scale-in, want %s (pid %d) untouched", m.ID, m.PID, master.ID, master.PID)
		}
		for _, w := range ws {
			if w.Role == "slave" && slices.ContainsFunc(scaled, func(x orchestrator.WorkerInfo) bool { return x.ID == w.ID }) {
				t.Fatalf("slave %s (pid %d) was there before: the crashed slave %d was not replaced, or a stopped one was (%+v)", w.ID, w.PID, keep.PID, ws)
			}
		}
		fams := scrape(t, st.OrchestratorURL)
		if v, _ := sample(fams, "rideshare_failovers_total", nil); v != failovers {
			t.Errorf("failovers %v during scaling, want %v", v, failovers)
		}
		if v, _ := sample(fams, "rideshare_workers_lost_total", nil); v != lost+1 {
			t.Errorf("workers lost went from %v to %v: want only the crashed slave counted, not the stopped ones", lost, v)
		}
		// The series of stopped and crashed workers are gone with them.
		var series []string
		for _, m := range fams["rideshare_worker_lag"].GetMetric() {
			series = append(series, labelMap(m)["worker"])
		}
		slices.Sort(series)
		var live []string
		for _, w := range ws {
			live = append(live, w.ID)
		}
		slices.Sort(live)
		if !slices.Equal(series, live) {
			t.Errorf("rideshare_worker_lag series for %v, want the live workers %v", series, live)
		}
	})
}
