// Package metrics holds what every RideShare HTTP service exports to Prometheus: a registry,
// an HTTP middleware recording requests by service, route, method and code, and the request
// counter behind the users and rides services' resettable /api/v1/_count.
package metrics

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric of the project.
const Namespace = "rideshare"

// Unmatched is the route label of a request that matched no route (a 404).
const Unmatched = "unmatched"

// NewRegistry returns a registry with the Go runtime and process collectors. A process that
// runs several services may give them all the same registry: the metrics are labelled by
// service and registering them twice reuses the first registration.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves the registry's metrics in the Prometheus text format (GET /metrics).
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// Register registers c with reg and returns it, or returns the collector already registered
// under the same description, so that several services (or several handlers of one service)
// can share a registry. A nil reg registers nothing. Any other registration error is a
// programming error and panics.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// HTTP records every request a service answers:
//
//	rideshare_http_requests_total{service,route,method,code}
//	rideshare_http_request_duration_seconds{service,route,method}
//
// route is the chi route pattern (/api/v1/rides/{rideId}), or "unmatched": never a raw path,
// so the label set stays bounded. Methods outside the standard set are labelled "OTHER".
type HTTP struct {
	service  string
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewHTTP returns the middleware for one service, registering its metrics with reg.
func NewHTTP(service string, reg prometheus.Registerer) *HTTP {
	return &HTTP{
		service: service,
		requests: Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "http_requests_total",
			Help:      "HTTP requests answered, by service, route pattern, method and status code.",
		}, []string{"service", "route", "method", "code"})),
		duration: Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace,
			Name:      "http_request_duration_seconds",
			Help:      "Time to answer an HTTP request, by service, route pattern and method.",
			Buckets:   prometheus.DefBuckets,
		}, []string{"service", "route", "method"})),
	}
}

// Middleware records the request once the handler has returned. It must run inside a chi
// router (Mux.Use) so that the matched route pattern is known.
func (m *HTTP) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			code := sw.status
			// A panic still counts, as the 500 the recoverer above this middleware answers.
			rec := recover()
			if code == 0 {
				code = http.StatusOK
				if rec != nil {
					code = http.StatusInternalServerError
				}
			}
			route := Unmatched
			if rctx := chi.RouteContext(r.Context()); rctx != nil {
				if p := rctx.RoutePattern(); p != "" {
					route = p
				}
			}
			method := methodLabel(r.Method)
			m.requests.WithLabelValues(m.service, route, method, strconv.Itoa(code)).Inc()
			m.duration.WithLabelValues(m.service, route, method).Observe(time.Since(start).Seconds())
			if rec != nil {
				panic(rec)
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "OTHER"
}

// statusWriter remembers the final status code written. Unwrap lets http.ResponseController
// (used by httputil.ReverseProxy to flush) reach the underlying writer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// APIPrefix is the path prefix of the requests that /api/v1/_count counts.
const APIPrefix = "/api/v1/"

// Counted reports whether a request to path counts towards /api/v1/_count: every path under
// /api/v1/ except /api/v1/_count itself and /api/v1/db/clear.
func Counted(path string) bool {
	return strings.HasPrefix(path, APIPrefix) && path != "/api/v1/_count" && path != "/api/v1/db/clear"
}

// RequestCounter counts the requests a service receives under /api/v1/ (see Counted), whatever
// their outcome. Prometheus sees a monotonic counter, rideshare_api_requests_total{service};
// the value served by /api/v1/_count is a separate one that Reset sets back to zero.
type RequestCounter struct {
	total prometheus.Counter
	n     atomic.Int64
}

// NewRequestCounter returns the counter for one service, registering it with reg.
func NewRequestCounter(service string, reg prometheus.Registerer) *RequestCounter {
	vec := Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "api_requests_total",
		Help:      "Requests received under /api/v1/, except /api/v1/_count and /api/v1/db/clear (never reset).",
	}, []string{"service"}))
	return &RequestCounter{total: vec.WithLabelValues(service)}
}

// Middleware counts each request as it arrives, before it is routed, so that 404s and 405s
// count too.
func (c *RequestCounter) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if Counted(r.URL.Path) {
			c.Inc()
		}
		next.ServeHTTP(w, r)
	})
}

// Inc counts one request.
func (c *RequestCounter) Inc() {
	c.n.Add(1)
	c.total.Inc()
}

// Count is the number of requests counted since the last Reset.
func (c *RequestCounter) Count() int64 { return c.n.Load() }

// Reset sets Count back to zero. The Prometheus counter is left alone.
func (c *RequestCounter) Reset() { c.n.Store(0) }
