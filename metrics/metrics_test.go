package metrics_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rideshare/rideshare/metrics"
)

// metricValue returns the value of the counter (or the sample count of the histogram) named
// name whose labels include want, and whether there is one.
func metricValue(tb testing.TB, g prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// labelValues lists every value the label takes in the metric family.
func labelValues(tb testing.TB, g prometheus.Gatherer, name, label string) []string {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	return out
}

func mustServer(tb testing.TB, reg prometheus.Registerer, counter *metrics.RequestCounter) *httptest.Server {
	tb.Helper()
	r := chi.NewRouter()
	r.Use(metrics.NewHTTP("svc", reg).Middleware)
	if counter != nil {
		r.Use(counter.Middleware)
	}
	r.Get("/api/v1/rides/{rideId}", func(w http.ResponseWriter, r *http.Request) {
		if chi.URLParam(r, "rideId") == "0" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		io.WriteString(w, "ok")
	})
	r.Post("/api/v1/db/clear", func(w http.ResponseWriter, r *http.Request) {})
	r.Get("/api/v1/_count", func(w http.ResponseWriter, r *http.Request) {})
	srv := httptest.NewServer(r)
	tb.Cleanup(srv.Close)
	return srv
}

func mustDo(tb testing.TB, method, url string) int {
	tb.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestHTTPRecordsRoutePatternNotPath(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := mustServer(t, reg, nil)
	for _, id := range []string{"1", "2", "3", "0"} {
		mustDo(t, http.MethodGet, srv.URL+"/api/v1/rides/"+id)
	}
	mustDo(t, http.MethodGet, srv.URL+"/no/such/path/1")
	mustDo(t, http.MethodGet, srv.URL+"/no/such/path/2")
	mustDo(t, "PROPFIND", srv.URL+"/api/v1/rides/1")

	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"matched route counted by pattern", map[string]string{"service": "svc", "route": "/api/v1/rides/{rideId}", "method": "GET", "code": "200"}, 3},
		{"status code recorded", map[string]string{"route": "/api/v1/rides/{rideId}", "code": "400"}, 1},
		{"unknown paths share one label", map[string]string{"route": "unmatched", "method": "GET", "code": "404"}, 2},
		{"unknown method labelled OTHER", map[string]string{"method": "OTHER", "code": "405"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := metricValue(t, reg, "rideshare_http_requests_total", tt.labels)
			if !ok || got != tt.want {
				t.Fatalf("rideshare_http_requests_total%v = %v (found %v), want %v", tt.labels, got, ok, tt.want)
			}
		})
	}
	t.Run("histogram observes every request", func(t *testing.T) {
		got, _ := metricValue(t, reg, "rideshare_http_request_duration_seconds", map[string]string{"route": "/api/v1/rides/{rideId}", "method": "GET"})
		if got != 4 {
			t.Fatalf("histogram samples = %v, want 4", got)
		}
	})
	t.Run("no raw path in any label", func(t *testing.T) {
		for _, route := range labelValues(t, reg, "rideshare_http_requests_total", "route") {
			if strings.Contains(route, "/1") || strings.Contains(route, "no/such") {
				t.Fatalf("route label %q holds a raw path", route)
			}
		}
	})
}

func TestHTTPRecordsPanicAs500(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := metrics.NewHTTP("svc", reg)
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler { // a recoverer above the metrics
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if recover() != nil {
					w.WriteHeader(http.StatusInternalServerError)
				}
			}()
			next.ServeHTTP(w, r)
		})
	}, h.Middleware)
	r.Get("/panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/panic", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500 from the recoverer", rec.Code)
	}
	if got, ok := metricValue(t, reg, "rideshare_http_requests_total", map[string]string{"route": "/panic", "code": "500"}); !ok || got != 1 {
		t.Fatalf("panic recorded %v times (found %v), want once as 500", got, ok)
	}
}

func TestCounted(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/api/v1/users", true},
		{"/api/v1/rides/17", true},
		{"/api/v1/no/such/path", true},
		{"/api/v1/_count/", true},
		{"/api/v1/db/clear/x", true},
		{"/api/v1/_count", false},
		{"/api/v1/db/clear", false},
		{"/api/v1", false},
		{"/metrics", false},
		{"/healthz", false},
		{"/api/v2/users", false},
	}
	for _, tt := range tests {
		name := "not counted"
		if tt.want {
			name = "counted"
		}
		t.Run(name+" "+tt.path, func(t *testing.T) {
			if got := metrics.Counted(tt.path); got != tt.want {
				t.Fatalf("Counted(%q) = %v, want %v", tt.path, got, tt.want)
			}
		})
	}
}

func TestRequestCounterCountsEveryAPIRequestAndResets(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := metrics.NewRequestCounter("svc", reg)
	srv := mustServer(t, reg, c)

	codes := []int{
		mustDo(t, http.MethodGet, srv.URL+"/api/v1/rides/1"),     // 200
		mustDo(t, http.MethodGet, srv.URL+"/api/v1/rides/0"),     // 400
		mustDo(t, http.MethodGet, srv.URL+"/api/v1/nothing"),     // 404
		mustDo(t, http.MethodPut, srv.URL+"/api/v1/rides/1"),     // 405
		mustDo(t, http.MethodPost, srv.URL+"/api/v1/db/clear"),   // not counted
		mustDo(t, http.MethodGet, srv.URL+"/api/v1/_count"),      // not counted
		mustDo(t, http.MethodDelete, srv.URL+"/api/v1/_count"),   // not counted, 405
		mustDo(t, http.MethodGet, srv.URL+"/outside/the/api/v1"), // not counted
	}
	if want := []int{200, 400, 404, 405, 200, 200, 405, 404}; !slices.Equal(codes, want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	if got := c.Count(); got != 4 {
		t.Fatalf("Count() = %d, want 4", got)
	}
	c.Reset()
	if got := c.Count(); got != 0 {
		t.Fatalf("Count() after Reset = %d, want 0", got)
	}
	mustDo(t, http.MethodGet, srv.URL+"/api/v1/rides/1")
	if got := c.Count(); got != 1 {
		t.Fatalf("Count() = %d after one more request, want 1", got)
	}
	t.Run("prometheus counter never resets", func(t *testing.T) {
		got, ok := metricValue(t, reg, "rideshare_api_requests_total", map[string]string{"service": "svc"})
		if !ok || got != 5 {
			t.Fatalf("rideshare_api_requests_total = %v (found %v), want 5", got, ok)
		}
	})
}

func TestRequestCounterIsSafeConcurrently(t *testing.T) {
	c := metrics.NewRequestCounter("svc", nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				c.Inc()
			}
		})
	}
	wg.Wait()
	if got := c.Count(); got != 8000 {
		t.Fatalf("Count() = %d, want 8000", got)
	}
}

func TestSharedRegistryReusesCollectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := metrics.NewRequestCounter("users", reg)
	b := metrics.NewRequestCounter("rides", reg)
	metrics.NewHTTP("users", reg)
	metrics.NewHTTP("rides", reg)
	a.Inc()
	b.Inc()
	b.Inc()
	for service, want := range map[string]float64{"users": 1, "rides": 2} {
		t.Run(service+" counted apart", func(t *testing.T) {
			got, ok := metricValue(t, reg, "rideshare_api_requests_total", map[string]string{"service": service})
			if !ok || got != want {
				t.Fatalf("got %v (found %v), want %v", got, ok, want)
			}
		})
	}
}

func TestHandlerServesTextFormat(t *testing.T) {
	reg := metrics.NewRegistry()
	metrics.NewRequestCounter("svc", reg).Inc()
	rec := httptest.NewRecorder()
	metrics.Handler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{`rideshare_api_requests_total{service="svc"} 1`, "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
