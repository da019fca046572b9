package rides_test

import (
	"context"
	"encoding/json"
	"github.com/rideshare/rideshare"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/httpsvc/gateway"
	"github.com/rideshare/rideshare/httpsvc/rides"
	"github.com/rideshare/rideshare/httpsvc/users"
	"github.com/rideshare/rideshare/worker/store"
)

const (
	pw     = "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"
	form   = "application/x-www-form-urlencoded"
	origin = "http://rides.example:8082"
)

// now is the rides service's clock in these tests: 01-06-2025:00-00-12 UTC.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// mustLocal opens a real single-SQLite database in a temporary directory.
func mustLocal(tb testing.TB) *store.Local {
	tb.Helper()
	s := store.New(filepath.Join(tb.TempDir(), "db.sqlite"))
	if err := s.Open(context.Background()); err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return &store.Local{Store: s}
}

// stack is the users and rides services on one database, behind the gateway; the rides
// service checks users through the gateway, as in production.
type stack struct {
	gw, users, rides string // base URLs
	db               *store.Local

	mu      sync.Mutex
	origins []string              // Origin header of each user check the users service received
	hook    func(rideshare.Write) // run before each write of the rides service, if set
}

// hookedDB is the real database with a hook before each write, to make another client's
// change land between a handler's read and its write.
type hookedDB struct {
	*store.Local
	s *stack
}

func (d hookedDB) Write(ctx context.Context, w rideshare.Write) (rideshare.Result, error) {
	d.s.mu.Lock()
	hook := d.s.hook
	d.s.mu.Unlock()
	if hook != nil {
		hook(w)
	}
	return d.Local.Write(ctx, w)
}

// setHook sets the hook run before each write of the rides service; nil removes it.
func (s *stack) setHook(h func(rideshare.Write)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = h
}

func mustStack(tb testing.TB) *stack {
	tb.Helper()
	s := &stack{db: mustLocal(tb)}
	log := slog.New(slog.DiscardHandler)

	usersSvc := &users.Service{DB: s.db, Logger: log, Registry: prometheus.NewRegistry()}
	usersH := usersSvc.Handler()
	usersSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/v1/users/") {
			s.mu.Lock()
			s.origins = append(s.origins, r.Header.Get("Origin"))
			s.mu.Unlock()
		}
		usersH.ServeHTTP(w, r)
	}))
	tb.Cleanup(usersSrv.Close)

	ridesSrv := httptest.NewUnstartedServer(nil) // its address is needed by the gateway first
	gw := &gateway.Gateway{
		UsersURL: usersSrv.URL,
		RidesURL: "http://" + ridesSrv.Listener.Addr().String(),
		Logger:   log,
		Registry: prometheus.NewRegistry(),
	}
	gwSrv := httptest.NewServer(gw.Handler())
	tb.Cleanup(gwSrv.Close)

	ridesSvc := &rides.Service{
		DB:       hookedDB{s.db, s},
		UsersURL: gwSrv.URL,
		Origin:   origin,
		Now:      func() time.Time { return now },
		Logger:   log,
		Registry: prometheus.NewRegistry(),
	}
	ridesSrv.Config.Handler = ridesSvc.Handler()
	ridesSrv.Start()
	tb.Cleanup(ridesSrv.Close)

	s.gw, s.users, s.rides = gwSrv.URL, usersSrv.URL, ridesSrv.URL
	return s
}

// userChecks is the number of user checks the users service has received.
func (s *stack) userChecks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.origins)
}

type answer struct {
	Code     int
	Body     string
	Allow    string
	Location string
}

// do sends a request through the gateway.
func (s *stack) do(tb testing.TB, method, path, body, contentType string) answer {
	tb.Helper()
	return do(tb, method, s.gw+path, body, contentType)
}

func do(tb testing.TB, method, u, body, contentType string) answer {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return answer{resp.StatusCode, string(b), resp.Header.Get("Allow"), resp.Header.Get("Location")}
}

func check(tb testing.TB, got, want answer) {
	tb.Helper()
	if got != want {
		tb.Fatalf("got %+v, want %+v", got, want)
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func userPath(name string) string { return "/api/v1/users/" + url.PathEscape(name) }

func (s *stack) mustUser(tb testing.TB, name string) {
	tb.Helper()
	got := s.do(tb, "PUT", "/api/v1/users", `{"username":`+quote(name)+`,"password":"`+pw+`"}`, "")
	check(tb, got, answer{Code: 201, Body: `{}`})
}

func rideBody(by, stamp string, source, destination any) string {
	b, _ := json.Marshal(map[string]any{"created_by": by, "timestamp": stamp, "source": source, "destination": destination})
	return string(b)
}

// mustRide creates a ride and returns its path from the Location header.
func (s *stack) mustRide(tb testing.TB, by, stamp string, source, destination int) string {
	tb.Helper()
	got := s.do(tb, "POST", "/api/v1/rides", rideBody(by, stamp, source, destination), "")
	if got.Code != 201 || got.Body != `{}` || !strings.HasPrefix(got.Location, "/api/v1/rides/") {
		tb.Fatalf("create ride: %+v", got)
	}
	return got.Location
}

func (s *stack) count(tb testing.TB, base string) string {
	tb.Helper()
	got := do(tb, "GET", base+"/api/v1/_count", "", "")
	if got.Code != 200 {
		tb.Fatalf("_count: %+v", got)
	}
	return got.Body
}

func (s *stack) resetCounts(tb testing.TB) {
	tb.Helper()
	check(tb, do(tb, "DELETE", s.users+"/api/v1/_count", "", ""), answer{Code: 200, Body: `{}`})
	check(tb, do(tb, "DELETE", s.rides+"/api/v1/_count", "", ""), answer{Code: 200, Body: `{}`})
}

var discard = slog.New(slog.DiscardHandler)

// fakeUsers is a stand-in users service answering every request with status: the only way
// to make the real one fail on purpose.
func fakeUsers(tb testing.TB, status int) string {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
	}))
	tb.Cleanup(srv.Close)
	return srv.URL
}

// deadURL is the address of a server that has stopped.
func deadURL(tb testing.TB) string {
	tb.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return srv.URL
}

func serve(tb testing.TB, svc *rides.Service) string {
	tb.Helper()
	srv := httptest.NewServer(svc.Handler())
	tb.Cleanup(srv.Close)
	return srv.URL
}
