package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// benchAgainst runs `rideshare bench` mode code against st with args. Speed is never asserted
// here (docs/BENCHMARKS.md has the figures); what is checked is that every mode runs to its
// report and that the report's correctness columns hold.
func benchAgainst(t *testing.T, st *stack, args ...string) *bencher {
	t.Helper()
	var cfg benchConfig
	fs := cfg.flags()
	args = append([]string{"--gateway", st.GatewayURL, "--orchestrator", st.OrchestratorURL, "--quiet",
		"--concurrency", "4", "--duration", "1s", "--warmup", "200ms", "--seed-users", "5", "--seed-rides", "20"}, args...)
	if err := parse(fs, args); err != nil {
		t.Fatal(err)
	}
	return newBencher(cfg)
}

func TestBenchModes(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	st := mustStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("load create-ride: every acknowledged ride is stored", func(t *testing.T) {
		rep, err := benchAgainst(t, st, "--only", "create-ride").runLoad(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Total.OK == 0 || len(rep.Total.ErrorCodes) != 0 {
			t.Fatalf("create-ride: %d ok, errors %v", rep.Total.OK, rep.Total.ErrorCodes)
		}
		if rep.RidesAcked == nil || rep.RidesStored == nil {
			t.Fatal("the report does not say whether the acknowledged rides are stored")
		}
		// Warmup rides are stored too but not counted as acknowledged in the measured window.
		if *rep.RidesStored < *rep.RidesAcked {
			t.Fatalf("%d rides acknowledged, %d stored", *rep.RidesAcked, *rep.RidesStored)
		}
	})
	t.Run("load mix with baseline", func(t *testing.T) {
		rep, err := benchAgainst(t, st, "--baseline").runLoad(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Endpoints) < 5 || rep.Baseline == nil || rep.Baseline.Total.OK == 0 {
			t.Fatalf("mix report: %d endpoints, baseline %+v", len(rep.Endpoints), rep.Baseline)
		}
		// Both report formats carry it: the table names every endpoint, the JSON decodes back.
		var table, js bytes.Buffer
		if err := printReport(&table, "table", rep); err != nil {
			t.Fatal(err)
		}
		if err := printReport(&js, "json", rep); err != nil {
			t.Fatal(err)
		}
		var back LoadReport
		if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Total.OK != rep.Total.OK {
			t.Fatalf("JSON report does not decode back (%v): %s", err, js.Bytes())
		}
		for _, e := range rep.Endpoints {
			if !strings.Contains(table.String(), e.Endpoint) {
				t.Errorf("table report lacks %s:\n%s", e.Endpoint, table.String())
			}
		}
		for _, e := range rep.Endpoints {
			if e.OK == 0 || len(e.ErrorCodes) != 0 {
				t.Errorf("%s: %d ok, errors %v", e.Endpoint, e.OK, e.ErrorCodes)
			}
		}
	})
	t.Run("baseline alone", func(t *testing.T) {
		rep, err := benchAgainst(t, st, "--mode", "baseline").runBaselineOnly(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Total.OK == 0 || len(rep.Total.ErrorCodes) != 0 {
			t.Fatalf("baseline: %d ok, errors %v", rep.Total.OK, rep.Total.ErrorCodes)
		}
	})
	t.Run("failover loses no acknowledged write", func(t *testing.T) {
		rep, err := benchAgainst(t, st, "--mode", "failover", "--runs", "1").runFailover(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Runs) != 1 || rep.Acked == 0 || rep.Lost != 0 || rep.Verified != rep.Acked {
			t.Fatalf("failover: %d runs, %d acked, %d lost, %d verified", len(rep.Runs), rep.Acked, rep.Lost, rep.Verified)
		}
	})
	t.Run("catchup", func(t *testing.T) {
		rep, err := benchAgainst(t, st, "--mode", "catchup", "--entries", "300", "--batch", "1").runCatchup(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.NewPID == 0 || rep.NewPID == rep.KilledPID || rep.Rows != 300 || rep.RSSKiB == 0 {
			t.Fatalf("catchup report: %+v", rep)
		}
	})
}

// A system that cannot be reached is an error with a reason, in every mode, never a crash.
func TestBenchUnreachableSystemIsAnError(t *testing.T) {
	for _, mode := range []string{"load", "failover", "catchup"} {
		err := Main(context.Background(), []string{"--mode", mode, "--quiet", "--duration", "1s", "--timeout", "20s",
			"--gateway", "http://127.0.0.1:1", "--orchestrator", "http://127.0.0.1:1"})
		if err == nil {
			t.Errorf("--mode %s against nothing: no error", mode)
		}
	}
}

// The soak mode, short: three scaling intervals of the mix at 32 clients against a stack with
// up's defaults but a short interval. The mix asks for far more slaves than the machine holds;
// the pool must stay within the cap, every request must succeed, and no process's memory may
// keep growing (the checks are runSoak's own, so a violation is its error).
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	const interval = 8 * time.Second
	st := mustStack(t, withScaleInterval(interval))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// One interval of warm-up, then three measured: memory is judged over those three.
	rep, err := benchAgainst(t, st, "--mode", "soak", "--concurrency", "32", "--warmup", interval.String(),
		"--duration", (3*interval + interval/2).String(), "--sample-every", "1s").runSoak(ctx)
	if rep != nil {
		var table bytes.Buffer
		rep.table(&table)
		t.Logf("soak report:\n%s", table.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if rep.MaxSlaves < 1 || rep.PeakWorkers > rep.MaxSlaves+1 {
		t.Fatalf("peak %d workers with a cap of %d slaves", rep.PeakWorkers, rep.MaxSlaves)
	}
	// The load asked for more than the step allows: the cap was exercised, not idle.
	if rep.Capped["step"]+rep.Capped["max_slaves"]+rep.Capped["room"] == 0 {
		t.Fatalf("no scale-out was capped under the mix at 32 clients: %+v", rep.Capped)
	}
	if rep.PeakWorkers < 3 {
		t.Fatalf("the pool never scaled out (peak %d workers)", rep.PeakWorkers)
	}
	if len(rep.Processes) == 0 || rep.LogBytesTo <= rep.LogBytesFrom {
		t.Fatalf("no process measured (%d) or the log did not grow (%d → %d bytes)", len(rep.Processes), rep.LogBytesFrom, rep.LogBytesTo)
	}
}

func TestKeepsGrowing(t *testing.T) {
	const mib = 1 << 10 // series are in KiB
	for name, c := range map[string]struct {
		series []int64
		want   bool
	}{
		"a leak: 40 MiB rising to 160 MiB": {[]int64{40 * mib, 50 * mib, 60 * mib, 80 * mib, 100 * mib, 120 * mib, 140 * mib, 150 * mib, 160 * mib}, true},
		"flat after warming up":            {[]int64{20 * mib, 36 * mib, 37 * mib, 36 * mib, 37 * mib, 37 * mib, 36 * mib, 37 * mib, 37 * mib}, false},
		"the GC's swing":                   {[]int64{40 * mib, 90 * mib, 40 * mib, 90 * mib, 40 * mib, 90 * mib, 40 * mib, 90 * mib, 40 * mib}, false},
		"small growth of a cache":          {[]int64{30 * mib, 32 * mib, 34 * mib, 36 * mib, 38 * mib, 40 * mib, 42 * mib, 44 * mib, 46 * mib}, false},
		"warming up by half, under 64 MiB": {[]int64{60 * mib, 70 * mib, 80 * mib, 90 * mib, 100 * mib, 110 * mib, 115 * mib, 120 * mib, 123 * mib}, false},
		"too few samples to tell":          {[]int64{10 * mib, 100 * mib, 200 * mib}, false},
	} {
		t.Run(name, func(t *testing.T) {
			if got := keepsGrowing(c.series); got != c.want {
				t.Fatalf("keepsGrowing = %v, want %v", got, c.want)
			}
		})
	}
}
