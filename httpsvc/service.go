package httpsvc

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/httpsvc/openapi"
	"github.com/rideshare/rideshare/metrics"
)

// Pinger is a database that can say whether it serves without a db read (which the
// orchestrator's scaler would count).
type Pinger interface {
	Ping(ctx context.Context) error
}

// NewServiceRouter is the skeleton the users and rides services share: the router of
// NewRouter with the metrics and request-count middleware, GET/DELETE /api/v1/_count,
// /healthz, /readyz (ready when db answers its ping), /metrics and GET /openapi.json serving
// doc, the service's OpenAPI document (taken here so that no service can go without one).
// The service adds its routes.
func NewServiceRouter(name string, log *slog.Logger, reg *prometheus.Registry, counter *metrics.RequestCounter, db Pinger, doc *openapi.Doc) *chi.Mux {
	r := NewRouter(log)
	r.Use(metrics.NewHTTP(name, reg).Middleware, counter.Middleware)
	r.Handle("/api/v1/_count", Methods{
		http.MethodGet: func(w http.ResponseWriter, _ *http.Request) {
			JSON(w, http.StatusOK, []int64{counter.Count()})
		},
		http.MethodDelete: func(w http.ResponseWriter, _ *http.Request) {
			counter.Reset()
			Empty(w, http.StatusOK)
		},
	})
	r.Handle("/healthz", Methods{http.MethodGet: Healthz})
	r.Handle("/readyz", Methods{http.MethodGet: Readyz(log, func(ctx context.Context) error {
		if err := db.Ping(ctx); err != nil {
			return fmt.Errorf("database: %w", err)
		}
		return nil
	})})
	r.Handle("/metrics", Methods{http.MethodGet: metrics.Handler(reg).ServeHTTP})
	r.Handle("/openapi.json", Methods{http.MethodGet: openapi.Handler(doc)})
	return r
}
