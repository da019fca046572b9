// Package gateway is the path router that stands in for the cloud load balancer:
// /api/v1/users and /api/v1/users/* go to the users service, /api/v1/rides and
// /api/v1/rides/* to the rides service, and nothing else is routed.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/httpsvc"
	"github.com/rideshare/rideshare/metrics"
)

// ServiceName labels the gateway's metrics and logs.
const ServiceName = "gateway"

// Gateway routes by path to the users and rides services. Set the fields, then call Handler.
type Gateway struct {
	// UsersURL and RidesURL are the upstreams' base URLs, e.g. http://127.0.0.1:8081.
	UsersURL, RidesURL string
	// Transport carries the proxied requests and the readiness checks; nil means
	// httpsvc.NewTransport().
	Transport http.RoundTripper
	// Logger receives the gateway's logs; nil means slog.Default().
	Logger *slog.Logger
	// Registry receives the gateway's metrics and is served on /metrics; nil means a
	// registry of its own.
	Registry *prometheus.Registry

	once    sync.Once
	handler http.Handler
	log     *slog.Logger
}

// Validate checks the upstream URLs; main calls it to refuse a bad flag at start.
func (g *Gateway) Validate() error {
	for _, u := range []struct{ name, url string }{{"users", g.UsersURL}, {"rides", g.RidesURL}} {
		if _, err := parseUpstream(u.url); err != nil {
			return fmt.Errorf("%s upstream: %w", u.name, err)
		}
	}
	return nil
}

func parseUpstream(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s)://host[:port] URL", raw)
	}
	return u, nil
}

// Handler returns the gateway's HTTP handler; every call returns the same one.
func (g *Gateway) Handler() http.Handler {
	g.once.Do(g.init)
	return g.handler
}

func (g *Gateway) init() {
	g.log = httpsvc.Logger(g.Logger, ServiceName)
	if g.Registry == nil {
		g.Registry = metrics.NewRegistry()
	}
	if g.Transport == nil {
		g.Transport = httpsvc.NewTransport()
	}
	users := g.proxy("users", g.UsersURL)
	rides := g.proxy("rides", g.RidesURL)

	r := httpsvc.NewRouter(g.log)
	r.Use(metrics.NewHTTP(ServiceName, g.Registry).Middleware)
	r.Handle("/api/v1/users", users)
	r.Handle("/api/v1/users/*", users)
	r.Handle("/api/v1/rides", rides)
	r.Handle("/api/v1/rides/*", rides)
	r.Handle("/healthz", httpsvc.Methods{http.MethodGet: httpsvc.Healthz})
	r.Handle("/readyz", httpsvc.Methods{http.MethodGet: httpsvc.Readyz(g.log, g.ready)})
	r.Handle("/metrics", httpsvc.Methods{http.MethodGet: metrics.Handler(g.Registry).ServeHTTP})
	g.handler = r
}

// proxy forwards every request, whatever its method, to the upstream at base, path and query
// unchanged. An unreachable upstream is a 502 with a JSON error.
func (g *Gateway) proxy(name, base string) http.Handler {
	target, err := parseUpstream(base)
	if err != nil {
		g.log.Error("bad upstream URL; its paths will answer 502", "upstream", name, "err", err)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httpsvc.WriteError(w, http.StatusBadGateway, name+" service not configured")
		})
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: g.Transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				// The client went away; nobody reads the answer.
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			g.log.WarnContext(r.Context(), "upstream unreachable", "upstream", name, "method", r.Method, "err", err)
			httpsvc.WriteError(w, http.StatusBadGateway, name+" service unavailable, try again shortly")
		},
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
}

// ready checks that both upstreams answer GET /healthz with 200. It does not use their
// /api/v1/ paths, which would count in their _count.
func (g *Gateway) ready(ctx context.Context) error {
	var failed []string
	for _, u := range []struct{ name, url string }{{"users", g.UsersURL}, {"rides", g.RidesURL}} {
		if err := g.healthy(ctx, u.url); err != nil {
			failed = append(failed, fmt.Sprintf("%s service: %v", u.name, err))
		}
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

func (g *Gateway) healthy(ctx context.Context, base string) error {
	target, err := parseUpstream(base)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.JoinPath("/healthz").String(), nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: g.Transport}).Do(req)
	if err != nil {
		return fmt.Errorf("unreachable: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %d", resp.StatusCode)
	}
	return nil
}
