package console_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rideshare/rideshare/httpsvc"
	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/console"
	"github.com/rideshare/rideshare/orchestrator/console/consoletest"
)

// EnvScreenshot names a file: the browser test saves a screenshot of the console there, as
// docs/console.png was made (RIDESHARE_CONSOLE_SCREENSHOT=$PWD/docs/console.png).
const EnvScreenshot = "RIDESHARE_CONSOLE_SCREENSHOT"

const fakeToken = "s3cret-admin-token"

// crashCall is a crash request the fake API got.
type crashCall struct {
	path, auth string
}

// fakeAPI serves the console and a status and crash API whose state the test controls. Its
// clock moves one second per status answer and its counters by fixed steps, so the rates the
// page computes are exact: 120 reads/s and 30 writes/s.
type fakeAPI struct {
	mu      sync.Mutex
	now     time.Time
	head    uint64
	reads   uint64
	writes  uint64
	workers []orchestrator.WorkerStatus // master first, then by ID, as the real status
	events  []orchestrator.Event
	nextID  int
	nextPID int
	failing string // a status answers 503 with this reason while it is set
	crashes []crashCall
}

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), head: 1200, nextID: 1, nextPID: 4101}
	f.start("master", true)
	f.start("slave", true)
	f.start("slave", true)
	reads := 1234.0
	f.event(orchestrator.Event{Kind: orchestrator.EventScale, Reads: &reads, Message: "1234 db reads in the last 2m0s: 2 → 3 slaves"})
	f.start("slave", false)
	f.workers[2].Applied -= 3 // worker-3 is 3 entries behind
	return f
}

func (f *fakeAPI) event(e orchestrator.Event) {
	f.now = f.now.Add(10 * time.Millisecond)
	e.Time = f.now
	f.events = append(f.events, e)
}

// start adds a worker; role "slave" and not ready is a worker still starting.
func (f *fakeAPI) start(role string, ready bool) orchestrator.WorkerStatus {
	id, pid := fmt.Sprintf("worker-%d", f.nextID), f.nextPID
	f.nextID++
	f.nextPID++
	if !ready {
		role = "starting"
	}
	w := orchestrator.WorkerStatus{WorkerInfo: orchestrator.WorkerInfo{ID: id, PID: pid, Role: role, Applied: f.head, Ready: ready}}
	f.workers = append(f.workers, w)
	f.event(orchestrator.Event{Kind: orchestrator.EventWorkerStarted, Worker: id, PID: pid, Message: fmt.Sprintf("worker %s started (pid %d)", id, pid)})
	return w
}

func (f *fakeAPI) remove(i int, why string) orchestrator.WorkerStatus {
	w := f.workers[i]
	f.workers = slices.Delete(f.workers, i, i+1)
	f.event(orchestrator.Event{Kind: orchestrator.EventWorkerLost, Worker: w.ID, PID: w.PID, Message: fmt.Sprintf("%s %s (pid %d) lost: %s", w.Role, w.ID, w.PID, why)})
	return w
}

func (f *fakeAPI) status() orchestrator.Status {
	f.now = f.now.Add(time.Second)
	f.head += 30
	f.reads += 120
	f.writes += 30
	for i := range f.workers {
		if f.workers[i].Ready {
			f.workers[i].Applied += 30
		}
		f.workers[i].Lag = f.head - f.workers[i].Applied
	}
	return orchestrator.Status{
		Time:       f.now,
		Nodes:      []orchestrator.NodeStatus{{Name: "orchestrator", PID: 4100, URL: "http://127.0.0.1:8083", Up: true, Supervisor: true}},
		LogHead:    f.head,
		Workers:    slices.Clone(f.workers),
		Events:     slices.Clone(f.events),
		EventsSeen: uint64(len(f.events)),
		Reads:      f.reads,
		Writes:     f.writes,
	}
}

// crash kills the master (the live slave with the lowest PID takes over, a new slave is
// started) or the slave with the highest PID (a replacement is started), as the real
// orchestrator does.
func (f *fakeAPI) crash(target string) (int, error) {
	victim := -1
	for i, w := range f.workers {
		switch {
		case target == "master" && w.Role == "master":
			victim = i
		case target == "slave" && w.Role == "slave" && (victim < 0 || w.PID > f.workers[victim].PID):
			victim = i
		}
	}
	if victim < 0 {
		return 0, fmt.Errorf("there is no %s to crash", target)
	}
	w := f.workers[victim]
	f.event(orchestrator.Event{Kind: orchestrator.EventCrash, Worker: w.ID, PID: w.PID, Message: fmt.Sprintf("%s (pid %d) killed through /api/v1/crash/%s", w.ID, w.PID, target)})
	f.remove(victim, "process exited")
	if target == "master" {
		next := -1
		for i, s := range f.workers {
			if s.Role == "slave" && s.Ready && (next < 0 || s.PID < f.workers[next].PID) {
				next = i
			}
		}
		if next >= 0 {
			f.workers[next].Role = "master"
			nw := f.workers[next]
			f.workers = slices.Delete(f.workers, next, next+1)
			f.workers = slices.Insert(f.workers, 0, nw)
			f.event(orchestrator.Event{Kind: orchestrator.EventFailover, Worker: nw.ID, Duration: 0.412, Message: nw.ID + " is master, 412ms after the old master was lost"})
		}
	}
	f.start("slave", true)
	return w.PID, nil
}

func (f *fakeAPI) handler() http.Handler {
	r := httpsvc.NewRouter(slog.New(slog.DiscardHandler))
	r.Handle("/", httpsvc.Methods{http.MethodGet: console.Handler()})
	r.Handle("/api/v1/status", httpsvc.Methods{http.MethodGet: func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.failing != "" {
			httpsvc.WriteError(w, http.StatusServiceUnavailable, f.failing)
			return
		}
		httpsvc.JSON(w, http.StatusOK, f.status())
	}})
	for _, target := range []string{"master", "slave"} {
		r.Handle("/api/v1/crash/"+target, httpsvc.Methods{http.MethodPost: func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.crashes = append(f.crashes, crashCall{path: r.URL.Path, auth: r.Header.Get("Authorization")})
			if r.Header.Get("Authorization") != "Bearer "+fakeToken {
				w.Header().Set("WWW-Authenticate", `Bearer realm="rideshare"`)
				httpsvc.WriteError(w, http.StatusUnauthorized, "missing or wrong bearer token")
				return
			}
			pid, err := f.crash(target)
			if err != nil {
				httpsvc.WriteError(w, http.StatusConflict, err.Error())
				return
			}
			httpsvc.JSON(w, http.StatusOK, []int{pid})
		}})
	}
	return r
}

func (f *fakeAPI) lastCrash() (crashCall, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.crashes) == 0 {
		return crashCall{}, 0
	}
	return f.crashes[len(f.crashes)-1], len(f.crashes)
}

func (f *fakeAPI) setFailing(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = reason
}

const wait = 15 * time.Second

// The console in headless Chromium against the fake API: it shows the workers, the nodes,
// the log head, the events and the rates; "Crash master" without the token shows the API's
// refusal, with it sends the POST with the bearer token, and the new master appears.
func TestConsoleInBrowser(t *testing.T) {
	api := newFakeAPI()
	srv := httptest.NewServer(api.handler())
	defer srv.Close()

	ctx := consoletest.NewBrowser(t)
	c, err := consoletest.Open(ctx, srv.URL, wait)
	if err != nil {
		t.Fatal(err)
	}

	// The workers, master first, with their PIDs, roles, applied sequences, lag and readiness.
	s, err := c.WaitFor(wait, "four workers and both rates", func(s consoletest.Snapshot) bool {
		return len(s.Workers) == 4 && s.ReadsRate != nil && s.WritesRate != nil
	})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id, role string
		pid      int
		ready    bool
	}
	var got []row
	for _, w := range s.Workers {
		got = append(got, row{w.ID, w.Role, w.PID, w.Ready})
	}
	want := []row{{"worker-1", "master", 4101, true}, {"worker-2", "slave", 4102, true}, {"worker-3", "slave", 4103, true}, {"worker-4", "starting", 4104, false}}
	if !slices.Equal(got, want) {
		t.Fatalf("workers %v, want %v", got, want)
	}
	if s.MasterID != "worker-1" || s.MasterPID != 4101 {
		t.Errorf("master %q pid %d", s.MasterID, s.MasterPID)
	}
	if w, _ := s.Worker("worker-3"); w.Lag != 3 || w.Applied == 0 || !strings.Contains(w.Text, "4103") {
		t.Errorf("worker-3 shows lag %d, applied %d: %q", w.Lag, w.Applied, w.Text)
	}
	if w, _ := s.Worker("worker-1"); w.Lag != 0 || s.LogHead != fmt.Sprint(w.Applied) {
		t.Errorf("master applied %d lag %d, log head %s", w.Applied, w.Lag, s.LogHead)
	}
	if *s.ReadsRate != 120 || *s.WritesRate != 30 || s.ReadsText != "120" || s.WritesText != "30.0" {
		t.Errorf("rates %v (%q) and %v (%q), want 120 reads/s and 30 writes/s", *s.ReadsRate, s.ReadsText, *s.WritesRate, s.WritesText)
	}
	if len(s.Nodes) != 1 || s.Nodes[0].Name != "orchestrator" || s.Nodes[0].PID != 4100 || !s.Nodes[0].Up {
		t.Errorf("nodes %+v", s.Nodes)
	}
	if len(s.Events) != 5 || s.Events[0].Kind != orchestrator.EventWorkerStarted || s.Events[0].Worker != "worker-4" {
		t.Fatalf("events %+v, want 5, newest first", s.Events)
	}
	if e := s.Events[1]; e.Kind != orchestrator.EventScale || e.Reads == nil || *e.Reads != 1234 || !strings.Contains(e.Text, "1234 reads") {
		t.Errorf("scale event %+v", e)
	}
	if s.Conn != "ok" {
		t.Errorf("connection %q %q", s.Conn, s.ConnText)
	}

	// Without the token, the crash is refused and the page says why.
	res, err := c.Crash("master", wait)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != "error" || res.Status != http.StatusUnauthorized || !strings.Contains(res.Text, "missing or wrong bearer token") {
		t.Fatalf("crash without the token: %+v", res)
	}
	if call, n := api.lastCrash(); n != 1 || call.path != "/api/v1/crash/master" || call.auth != "" {
		t.Fatalf("crash request %d: %+v, want one without Authorization", n, call)
	}

	// With the token typed in, the POST carries it, and the new master shows up: the slave
	// with the lowest PID, worker-2.
	if err := c.SetToken(fakeToken); err != nil {
		t.Fatal(err)
	}
	res, err = c.Crash("master", wait)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != "ok" || res.Status != http.StatusOK || !strings.Contains(res.Text, "4101") {
		t.Fatalf("crash with the token: %+v", res)
	}
	if call, n := api.lastCrash(); n != 2 || call.path != "/api/v1/crash/master" || call.auth != "Bearer "+fakeToken {
		t.Fatalf("crash request %d: %+v, want POST /api/v1/crash/master with the bearer token", n, call)
	}
	s, err = c.WaitFor(wait, "worker-2 as the new master", func(s consoletest.Snapshot) bool {
		m, ok := s.Master()
		_, old := s.Worker("worker-1")
		return ok && m.ID == "worker-2" && m.PID == 4102 && !old && s.MasterPID == 4102
	})
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{}
	for _, e := range s.Events[:4] {
		kinds = append(kinds, e.Kind)
	}
	if want := []string{"worker_started", "failover", "worker_lost", "crash"}; !slices.Equal(kinds, want) {
		t.Errorf("newest events %v, want %v", kinds, want)
	}
	if e := s.Events[1]; e.Duration == nil || *e.Duration != 0.412 || !strings.Contains(e.Text, "took 0.412 s") {
		t.Errorf("failover event %+v", e)
	}
	if _, ok := s.Worker("worker-5"); !ok {
		t.Errorf("no replacement worker-5: %s", s)
	}

	// The token stays in the tab's sessionStorage, never in the URL.
	stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem('rideshare.console.token') || ''`))
	if err != nil || stored != fakeToken {
		t.Errorf("sessionStorage holds %q (%v)", stored, err)
	}
	if href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`)); err != nil || strings.Contains(href, fakeToken) {
		t.Errorf("the URL is %q (%v)", href, err)
	}

	// Crash slave: the highest PID.
	res, err = c.Crash("slave", wait)
	if err != nil {
		t.Fatal(err)
	}
	if call, _ := api.lastCrash(); res.State != "ok" || call.path != "/api/v1/crash/slave" || call.auth != "Bearer "+fakeToken {
		t.Fatalf("crash slave: %+v, request %+v", res, call)
	}
	if _, err := c.WaitFor(wait, "worker-5 (pid 4105) gone", func(s consoletest.Snapshot) bool {
		_, ok := s.Worker("worker-5")
		return !ok && len(s.Workers) == 4
	}); err != nil {
		t.Fatal(err)
	}

	if path := os.Getenv(EnvScreenshot); path != "" {
		if _, err := c.WaitFor(wait, "fresh rates", func(s consoletest.Snapshot) bool { return s.ReadsRate != nil }); err != nil {
			t.Fatal(err)
		}
		if err := c.Screenshot(path); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot saved to %s", path)
	}

	// The API going away shows, with its reason, and the page recovers by itself.
	api.setFailing("no ready master and slaves yet")
	if _, err := c.WaitFor(wait, "the connection error", func(s consoletest.Snapshot) bool {
		return s.Conn == "error" && strings.Contains(s.ConnText, "no ready master and slaves yet")
	}); err != nil {
		t.Fatal(err)
	}
	api.setFailing("")
	if _, err := c.WaitFor(wait, "the connection back", func(s consoletest.Snapshot) bool { return s.Conn == "ok" }); err != nil {
		t.Fatal(err)
	}

	if p := c.Problems(); len(p) > 0 {
		t.Fatalf("the page reported problems (a script error or a Content-Security-Policy violation):\n  %s", strings.Join(p, "\n  "))
	}
}

// The page's answer when there is nothing to crash: the API's 409 reason.
func TestConsoleInBrowserShowsConflict(t *testing.T) {
	api := newFakeAPI()
	api.workers = api.workers[:1] // the master alone
	srv := httptest.NewServer(api.handler())
	defer srv.Close()
	c, err := consoletest.Open(consoletest.NewBrowser(t), srv.URL, wait)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetToken(fakeToken); err != nil {
		t.Fatal(err)
	}
	res, err := c.Crash("slave", wait)
	if err != nil {
		t.Fatal(err)
	}
	if res.State != "error" || res.Status != http.StatusConflict || !strings.Contains(res.Text, "there is no slave to crash") {
		t.Fatalf("crash slave with no slave: %+v", res)
	}
	if p := c.Problems(); len(p) > 0 {
		t.Fatalf("the page reported problems:\n  %s", strings.Join(p, "\n  "))
	}
}

// A browser that breaks the page's policy is caught: the same page served with a policy
// whose script hash is wrong runs no script, and Problems says so.
func TestConsoleInBrowserCatchesPolicyViolations(t *testing.T) {
	api := newFakeAPI()
	r := httpsvc.NewRouter(slog.New(slog.DiscardHandler))
	r.Handle("/", httpsvc.Methods{http.MethodGet: func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(console.Page())
	}})
	r.Handle("/api/v1/status", api.handler())
	srv := httptest.NewServer(r)
	defer srv.Close()
	_, err := consoletest.Open(consoletest.NewBrowser(t), srv.URL, 3*time.Second)
	if err == nil {
		t.Fatal("the page rendered a status under a policy that refuses its script")
	}
	if !strings.Contains(err.Error(), "Content Security Policy") {
		t.Fatalf("the error does not name the policy violation: %v", err)
	}
	t.Log(err)
}
