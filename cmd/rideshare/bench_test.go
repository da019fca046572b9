package main

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
		err := cmdBench(context.Background(), []string{"--mode", mode, "--quiet", "--duration", "1s", "--timeout", "20s",
			"--gateway", "http://127.0.0.1:1", "--orchestrator", "http://127.0.0.1:1"})
		if err == nil {
			t.Errorf("--mode %s against nothing: no error", mode)
		}
	}
}
