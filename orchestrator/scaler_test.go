package orchestrator_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rideshare/rideshare/metrics"
	"github.com/rideshare/rideshare/orchestrator"
)

func TestScalerDecision(t *testing.T) {
	for _, c := range []struct {
		reads    float64
		min, max int
		want     int
	}{
		{0, 1, 0, 1},
		{1, 1, 0, 1},
		{20, 1, 0, 1},
		{21, 1, 0, 2},
		{40, 1, 0, 2},
		{41, 1, 0, 3},
		{60, 1, 0, 3},
		{1000, 1, 0, 50},
		// The minimum holds when there are few reads, and only then.
		{0, 3, 0, 3},
		{41, 3, 0, 3},
		{61, 3, 0, 4},
		{0, 0, 0, 0},
		{1, 0, 0, 1},
		// The maximum caps, even a minimum set above it.
		{1000, 1, 5, 5},
		{100, 1, 5, 5},
		{99, 1, 5, 5},
		{80, 1, 5, 4},
		{0, 2, 1, 1},
		// A counter reset or a rounding artefact never asks for fewer than the minimum.
		{-3, 1, 0, 1},
	} {
		t.Run(fmt.Sprintf("%v reads min %d max %d gives %d", c.reads, c.min, c.max, c.want), func(t *testing.T) {
			if got := orchestrator.DesiredSlaves(c.reads, c.min, c.max); got != c.want {
				t.Fatalf("DesiredSlaves(%v, %d, %d) = %d, want %d", c.reads, c.min, c.max, got, c.want)
			}
		})
	}
}

// dbAPI is the part of the orchestrator's HTTP API the scaler counts from: the real metrics
// middleware on a chi router, with handlers that answer without a database.
type dbAPI struct {
	reg *prometheus.Registry
	url string
}

func mustDBAPI(tb testing.TB) *dbAPI {
	tb.Helper()
	reg := metrics.NewRegistry()
	r := chi.NewRouter()
	r.Use(metrics.NewHTTP("orchestrator", reg).Middleware)
	answer := func(w http.ResponseWriter, r *http.Request) {
		if b, _ := io.ReadAll(r.Body); string(b) == "bad" {
			w.WriteHeader(http.StatusBadRequest)
		}
		fmt.Fprint(w, "{}")
	}
	r.Post("/api/v1/db/read", answer)
	r.Post("/api/v1/db/write", answer)
	r.Get("/api/v1/workers", answer)
	srv := httptest.NewServer(r)
	tb.Cleanup(srv.Close)
	return &dbAPI{reg: reg, url: srv.URL}
}

// do sends n requests, a few at a time, and requires them answered.
func (a *dbAPI) do(tb testing.TB, n int, method, path, body string) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			req, err := http.NewRequest(method, a.url+path, strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func (a *dbAPI) reads(tb testing.TB, n int) {
	tb.Helper()
	a.do(tb, n, "POST", "/api/v1/db/read", "{}")
}

// pool records what the scaler asks for.
type pool chan int

func (p pool) SetSlaves(n int) { p <- n }

// next waits for the scaler's next decision.
func (p pool) next(tb testing.TB) int {
	tb.Helper()
	select {
	case n := <-p:
		return n
	case <-time.After(10 * time.Second):
		tb.Fatal("no scaling decision within 10s")
	}
	return 0
}

// syncBuffer is a log destination the scaler writes to from its goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func mustScaler(tb testing.TB, api *dbAPI, interval time.Duration, edit func(*orchestrator.Scaler)) (pool, *syncBuffer) {
	tb.Helper()
	p := make(pool, 16)
	return p, openScaler(tb, api, p, func(s *orchestrator.Scaler) {
		s.Interval, s.Min, s.Slaves = interval, 1, 1
		if edit != nil {
			edit(s)
		}
	})
}

// openScaler opens a scaler of p counting api's reads, as edit sets it, logging to the buffer
// it returns; it is closed when the test ends.
func openScaler(tb testing.TB, api *dbAPI, p orchestrator.Pool, edit func(*orchestrator.Scaler)) *syncBuffer {
	tb.Helper()
	logs := &syncBuffer{}
	s := &orchestrator.Scaler{
		Pool: p, Reads: orchestrator.RegistryReads{Gatherer: api.reg}, Registry: api.reg,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	edit(s)
	if err := s.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return logs
}

// gathered is the value of the counter or gauge name, with label=value when label is set.
func gathered(tb testing.TB, g prometheus.Gatherer, name, label, value string) float64 {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == label && l.GetValue() == value
			}) {
				if m.Counter != nil {
					return m.Counter.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	tb.Fatalf("%s{%s=%q} not gathered", name, label, value)
	return 0
}

func TestScalerCountsOnlyDBReads(t *testing.T) {
	api := mustDBAPI(t)
	rr := orchestrator.RegistryReads{Gatherer: api.reg}
	if n, err := rr.DBReads(); err != nil || n != 0 {
		t.Fatalf("before any request: %v, %v; want 0", n, err)
	}
	api.reads(t, 3)
	api.do(t, 2, "POST", "/api/v1/db/read", "bad") // a 400 is a read too
	api.do(t, 5, "POST", "/api/v1/db/write", "{}")
	api.do(t, 4, "GET", "/api/v1/workers", "")
	api.do(t, 1, "GET", "/api/v1/db/read", "") // 405: not a POST
	if n, err := rr.DBReads(); err != nil || n != 5 {
		t.Fatalf("after 3 + 2 reads, writes and others: %v, %v; want 5", n, err)
	}
}

func TestScalerInterval(t *testing.T) {
	const interval = 500 * time.Millisecond
	api := mustDBAPI(t)
	p, logs := mustScaler(t, api, interval, nil)

	t.Run("no decision before the first read", func(t *testing.T) {
		// Absence can only be watched for a while: three intervals of writes and other
		// requests, none of which starts the timer.
		deadline := time.After(3 * interval)
		for {
			api.do(t, 1, "POST", "/api/v1/db/write", "{}")
			api.do(t, 1, "GET", "/api/v1/workers", "")
			select {
			case n := <-p:
				t.Fatalf("scaled to %d before any read", n)
			case <-deadline:
				return
			case <-time.After(interval / 10):
			}
		}
	})
	t.Run("50 reads in an interval give 3 slaves", func(t *testing.T) {
		api.reads(t, 45)
		api.do(t, 5, "POST", "/api/v1/db/read", "bad")
		api.do(t, 30, "POST", "/api/v1/db/write", "{}")
		if n := p.next(t); n != 3 {
			t.Fatalf("scaled to %d, want 3", n)
		}
		if got := gathered(t, api.reg, "rideshare_scaler_last_interval_reads", "", ""); got != 50 {
			t.Fatalf("last interval reads %v, want 50", got)
		}
	})
	t.Run("an idle interval gives 1 slave", func(t *testing.T) {
		if n := p.next(t); n != 1 {
			t.Fatalf("scaled to %d, want 1", n)
		}
	})
	t.Run("each interval counts from zero", func(t *testing.T) {
		// Right after a decision: these reads fall in the interval that has just begun.
		api.reads(t, 21)
		if n := p.next(t); n != 2 {
			t.Fatalf("scaled to %d, want 2", n)
		}
		api.reads(t, 20)
		if n := p.next(t); n != 1 {
			t.Fatalf("scaled to %d, want 1", n)
		}
	})
	t.Run("decisions are counted by direction", func(t *testing.T) {
		for dir, want := range map[string]float64{"up": 2, "down": 2} {
			if got := gathered(t, api.reg, "rideshare_scaler_decisions_total", "direction", dir); got != want {
				t.Errorf("decisions %s = %v, want %v", dir, got, want)
			}
		}
		if !strings.Contains(logs.String(), "scaling timer started") {
			t.Errorf("no log line for the start of the timer:\n%s", logs)
		}
	})
}

func TestScalerMinMax(t *testing.T) {
	api := mustDBAPI(t)
	p, _ := mustScaler(t, api, 500*time.Millisecond, func(s *orchestrator.Scaler) { s.Min, s.Max, s.Slaves = 2, 4, 2 })
	api.reads(t, 100)
	if n := p.next(t); n != 4 {
		t.Fatalf("100 reads with max 4: scaled to %d", n)
	}
	if n := p.next(t); n != 2 {
		t.Fatalf("idle with min 2: scaled to %d", n)
	}
}

// fakePrometheus answers /api/v1/query the way Prometheus does, with what answer returns.
func fakePrometheus(tb testing.TB, wantQuery string, answer func() (int, string)) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" || r.URL.Query().Get("query") != wantQuery {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"unexpected %s %q"}`, r.URL.Path, r.URL.Query().Get("query"))
			return
		}
		code, body := answer()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func TestScalerPrometheus(t *testing.T) {
	const interval = 500 * time.Millisecond
	wantQuery := `sum(increase(rideshare_http_requests_total{service="orchestrator",route="/api/v1/db/read",method="POST"}[500ms]))`
	if q := (&orchestrator.Scaler{Interval: 2 * time.Minute}).ReadsQuery(); q != strings.Replace(wantQuery, "500ms", "120s", 1) {
		t.Fatalf("query for 2m: %s", q)
	}
	var mu sync.Mutex
	code, body := 200, ""
	set := func(c int, b string) { mu.Lock(); code, body = c, b; mu.Unlock() }
	prom := fakePrometheus(t, wantQuery, func() (int, string) { mu.Lock(); defer mu.Unlock(); return code, body })
	api := mustDBAPI(t)
	p, logs := mustScaler(t, api, interval, func(s *orchestrator.Scaler) { s.PrometheusURL = prom.URL })

	t.Run("the count comes from Prometheus", func(t *testing.T) {
		// 44.6 reads over every orchestrator (increase() extrapolates): 45, 3 slaves.
		set(200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"44.6"]}]}}`)
		api.reads(t, 1) // starts the timer
		if n := p.next(t); n != 3 {
			t.Fatalf("scaled to %d, want 3", n)
		}
	})
	t.Run("an unreachable Prometheus falls back to the local count", func(t *testing.T) {
		set(503, `{"status":"error","errorType":"unavailable","error":"shutting down"}`)
		api.reads(t, 25)
		if n := p.next(t); n != 2 {
			t.Fatalf("scaled to %d, want 2 from the 25 local reads", n)
		}
		if !strings.Contains(logs.String(), "Prometheus did not answer") {
			t.Fatalf("no warning about the fallback:\n%s", logs)
		}
	})
	t.Run("Prometheus never counts fewer reads than the local counter", func(t *testing.T) {
		// The first increment of a series born in the window escapes increase().
		set(200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"0"]}]}}`)
		api.reads(t, 30)
		if n := p.next(t); n != 2 {
			t.Fatalf("scaled to %d, want 2 from the 30 local reads", n)
		}
	})
	t.Run("no series in Prometheus falls back to the local count", func(t *testing.T) {
		set(200, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
		api.reads(t, 41)
		if n := p.next(t); n != 3 {
			t.Fatalf("scaled to %d, want 3 from the 41 local reads", n)
		}
	})
}

func TestScalerRefusesBadSettings(t *testing.T) {
	api := mustDBAPI(t)
	for name, edit := range map[string]func(*orchestrator.Scaler){
		"zero interval":  func(s *orchestrator.Scaler) { s.Interval = 0 },
		"min above max":  func(s *orchestrator.Scaler) { s.Min, s.Max = 3, 2 },
		"negative min":   func(s *orchestrator.Scaler) { s.Min = -1 },
		"not a http URL": func(s *orchestrator.Scaler) { s.PrometheusURL = "prometheus:9090" },
	} {
		t.Run(name, func(t *testing.T) {
			s := &orchestrator.Scaler{Pool: make(pool), Reads: orchestrator.RegistryReads{Gatherer: api.reg}, Interval: time.Second, Min: 1}
			edit(s)
			if err := s.Open(context.Background()); err == nil {
				s.Close()
				t.Fatal("Open accepted it")
			}
		})
	}
}

// countedReads is a read counter the test moves by hand: the reads of an interval are exactly
// those added in it, however slow the machine (TestScalerInterval counts real HTTP reads).
// looked is closed when the scaler first looks at the counter: reads counted before that
// would count as before its start.
type countedReads struct {
	n      atomic.Int64
	once   sync.Once
	looked chan struct{}
}

func (c *countedReads) DBReads() (float64, error) {
	c.once.Do(func() { close(c.looked) })
	return float64(c.n.Load()), nil
}

// sizedPool is a pool on a machine of a given size, with the room it has now.
type sizedPool struct {
	pool
	ticks   chan time.Time // ends an interval (Scaler.Ticks)
	reads   countedReads
	host    orchestrator.Host
	mu      sync.Mutex
	room    int
	roomErr error
	events  []orchestrator.Event
}

func (p *sizedPool) RecordEvent(e orchestrator.Event) {
	p.mu.Lock()
	p.events = append(p.events, e)
	p.mu.Unlock()
}

func (p *sizedPool) Host(context.Context) (orchestrator.Host, bool, error) { return p.host, true, nil }

func (p *sizedPool) Room(context.Context) (int, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.room, "test machine", p.roomErr
}

func (p *sizedPool) setRoom(n int, err error) {
	p.mu.Lock()
	p.room, p.roomErr = n, err
	p.mu.Unlock()
}

// mustSizedScaler is mustScaler on a sized pool: 2 CPUs, 24 GiB, so AutoMax is 7 slaves.
func mustSizedScaler(tb testing.TB, api *dbAPI, room int, edit func(*orchestrator.Scaler)) (*sizedPool, *syncBuffer) {
	tb.Helper()
	p := &sizedPool{pool: make(pool, 16), ticks: make(chan time.Time), host: orchestrator.Host{CPUs: 2, MemTotal: 24 << 30, MemAvailable: 20 << 30}, room: room}
	p.reads.looked = make(chan struct{})
	logs := openScaler(tb, api, p, func(s *orchestrator.Scaler) {
		s.Reads = &p.reads
		s.Interval, s.Min, s.Max, s.Step, s.Slaves = time.Hour, 1, orchestrator.AutoMax, 2, 1
		s.Ticks = p.ticks
		if edit != nil {
			edit(s)
		}
	})
	select {
	case <-p.reads.looked: // the scaler is counting
	case <-time.After(10 * time.Second):
		tb.Fatal("the scaler never looked at its read counter")
	}
	return p, logs
}

// readsEachInterval counts n reads in each of the next intervals and returns the decision
// made at the end of each.
func readsEachInterval(t *testing.T, p *sizedPool, n, decisions int) []int {
	t.Helper()
	var got []int
	for range decisions {
		p.reads.n.Add(int64(n))
		got = append(got, p.endInterval(t))
	}
	return got
}

// endInterval ends the scaler's interval and returns its decision.
func (p *sizedPool) endInterval(t *testing.T) int {
	t.Helper()
	select {
	case p.ticks <- time.Now():
	case <-time.After(10 * time.Second):
		t.Fatal("the scaler is not waiting for the end of an interval")
	}
	return p.next(t)
}

func TestScalerStepBoundsScaleOut(t *testing.T) {
	api := mustDBAPI(t)
	p, logs := mustSizedScaler(t, api, 100, func(s *orchestrator.Scaler) { s.Max = 0 })
	// 300 reads ask for 15 slaves: two more an interval, every interval.
	if got := readsEachInterval(t, p, 300, 3); !slices.Equal(got, []int{3, 5, 7}) {
		t.Fatalf("300 reads an interval with step 2 from 1 slave: %v, want [3 5 7]", got)
	}
	if v := gathered(t, api.reg, "rideshare_scaler_capped_total", "reason", "step"); v != 3 {
		t.Errorf("capped by step %v times, want 3", v)
	}
	if !strings.Contains(logs.String(), "scale-out capped") || !strings.Contains(logs.String(), "capped_by=step") {
		t.Errorf("no log line says the scale-out was capped by the step:\n%s", logs)
	}
	// Each decision is an operator event carrying the read count behind it.
	p.mu.Lock()
	events := append([]orchestrator.Event(nil), p.events...)
	p.mu.Unlock()
	if len(events) < 3 {
		t.Fatalf("%d scaling events for 3 decisions: %+v", len(events), events)
	}
	for _, e := range events[:3] {
		if e.Kind != orchestrator.EventScale || e.Reads == nil || *e.Reads != 300 || !strings.Contains(e.Message, "capped") {
			t.Errorf("scaling event %+v, want kind scale, 300 reads, capped", e)
		}
	}
	// Scale-in is not limited: an idle interval goes straight back to the minimum.
	if n := p.endInterval(t); n != 1 {
		t.Fatalf("idle interval after scaling to 7: %d slaves, want 1", n)
	}
}

func TestScalerCourseRuleHoldsWithinTheStep(t *testing.T) {
	api := mustDBAPI(t)
	p, logs := mustSizedScaler(t, api, 100, nil)
	if got := readsEachInterval(t, p, 50, 1); got[0] != 3 {
		t.Fatalf("50 reads: %d slaves, want 3", got[0])
	}
	if strings.Contains(logs.String(), "scale-out capped") {
		t.Fatalf("41–60 reads from 1 slave were capped:\n%s", logs)
	}
}

func TestScalerDefaultMaximumFromTheMachine(t *testing.T) {
	api := mustDBAPI(t)
	// 2 CPUs × 4 workers, less the master: 7 slaves, whatever the step.
	p, logs := mustSizedScaler(t, api, 100, func(s *orchestrator.Scaler) { s.Step = 0 })
	if got := readsEachInterval(t, p, 300, 1); got[0] != 7 {
		t.Fatalf("300 reads on 2 CPUs: %d slaves, want 7", got[0])
	}
	if v := gathered(t, api.reg, "rideshare_scaler_max_slaves", "", ""); v != 7 {
		t.Errorf("rideshare_scaler_max_slaves %v, want 7", v)
	}
	if v := gathered(t, api.reg, "rideshare_scaler_capped_total", "reason", "max_slaves"); v != 1 {
		t.Errorf("capped by max_slaves %v times, want 1", v)
	}
	if !strings.Contains(logs.String(), "cpu: 2 CPUs") {
		t.Errorf("the log does not say what set the maximum:\n%s", logs)
	}
}

func TestScalerNeverOutgrowsTheRoom(t *testing.T) {
	api := mustDBAPI(t)
	p, logs := mustSizedScaler(t, api, 1, func(s *orchestrator.Scaler) { s.Step = 0 })
	if got := readsEachInterval(t, p, 200, 1); got[0] != 2 {
		t.Fatalf("200 reads with room for 1 more worker: %d slaves, want 2", got[0])
	}
	p.setRoom(0, nil)
	if got := readsEachInterval(t, p, 200, 1); got[0] != 2 {
		t.Fatalf("200 reads with no room: %d slaves, want 2 (no scale-out)", got[0])
	}
	p.setRoom(0, errors.New("meminfo unreadable"))
	if got := readsEachInterval(t, p, 200, 1); got[0] != 2 {
		t.Fatalf("200 reads on a machine that cannot be measured: %d slaves, want 2", got[0])
	}
	if v := gathered(t, api.reg, "rideshare_scaler_capped_total", "reason", "room"); v != 3 {
		t.Errorf("capped by room %v times, want 3", v)
	}
	if !strings.Contains(logs.String(), "capped_by=room") || !strings.Contains(logs.String(), "meminfo unreadable") {
		t.Errorf("the log does not say the room capped it, and why:\n%s", logs)
	}
}

func TestHostSizing(t *testing.T) {
	const gib = 1 << 30
	for _, c := range []struct {
		name      string
		h         orchestrator.Host
		running   int
		maxSlaves int
		room      int
	}{
		{"2 CPUs, 24 GiB: CPUs bound", orchestrator.Host{CPUs: 2, MemTotal: 24 * gib, MemAvailable: 20 * gib}, 3, 7, 70},
		{"16 CPUs, 4 GiB: memory bounds", orchestrator.Host{CPUs: 16, MemTotal: 4 * gib, MemAvailable: 2 * gib}, 2, 11, 4},
		{"tiny machine: still one slave", orchestrator.Host{CPUs: 1, MemTotal: gib, MemAvailable: gib / 2}, 2, 1, 0},
		{"engine without free memory: room from the total", orchestrator.Host{CPUs: 8, MemTotal: 8 * gib}, 10, 27, 18},
	} {
		t.Run(c.name, func(t *testing.T) {
			if n, why := c.h.DefaultMaxSlaves(); n != c.maxSlaves || why == "" {
				t.Errorf("DefaultMaxSlaves = %d (%s), want %d", n, why, c.maxSlaves)
			}
			if n, why := c.h.Room(c.running); n != c.room || why == "" {
				t.Errorf("Room(%d) = %d (%s), want %d", c.running, n, why, c.room)
			}
		})
	}
}
