package httpsvc

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// Methods serves one path: each method its handler, any other method a 405 with an Allow
// header listing the methods served. Register it with chi's Handle (every method), so the
// route pattern is known even for a 405.
type Methods map[string]http.HandlerFunc

func (m Methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := m[r.Method]; ok {
		h(w, r)
		return
	}
	MethodNotAllowed(w, r, m.Allow()...)
}

// Allow lists the methods served, sorted.
func (m Methods) Allow() []string {
	allow := make([]string, 0, len(m))
	for method := range m {
		allow = append(allow, method)
	}
	slices.Sort(allow)
	return allow
}

// MethodNotAllowed answers 405 with the Allow header.
func MethodNotAllowed(w http.ResponseWriter, r *http.Request, allow ...string) {
	list := strings.Join(allow, ", ")
	w.Header().Set("Allow", list)
	WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; allowed: %s", r.Method, list))
}

// NotFound answers 404 for a path nothing is routed to.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteError(w, http.StatusNotFound, "no such path: "+r.URL.Path)
}

// chiMethods are the methods chi routes; it refuses any other before routing.
var chiMethods = []string{
	http.MethodConnect, http.MethodDelete, http.MethodGet, http.MethodHead, http.MethodOptions,
	http.MethodPatch, http.MethodPost, http.MethodPut, http.MethodTrace,
}

// NewRouter returns a chi router that answers unknown paths with a JSON 404 and recovers from
// panics with a JSON 500 (logged). Paths should be registered with Handle and Methods, which
// answer 405 with Allow; a method chi does not know (PROPFIND, say) is routed like GET so that
// it too reaches Methods and gets its 405 with Allow, or the 404 of an unknown path.
func NewRouter(log *slog.Logger) *chi.Mux {
	r := chi.NewRouter()
	r.Use(Recoverer(log), routeUnknownMethods)
	r.NotFound(NotFound)
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		// Only reached for a route registered per method (r.Get…), not through Methods.
		WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here", r.Method))
	})
	return r
}

func routeUnknownMethods(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !slices.Contains(chiMethods, r.Method) {
			if rctx := chi.RouteContext(r.Context()); rctx != nil && rctx.RouteMethod == "" {
				rctx.RouteMethod = http.MethodGet
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Recoverer turns a handler's panic into a logged JSON 500. http.ErrAbortHandler passes
// through, as net/http expects.
func Recoverer(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				rec := recover()
				if rec == nil {
					return
				}
				if rec == http.ErrAbortHandler {
					panic(rec)
				}
				log.ErrorContext(r.Context(), "handler panicked", "method", r.Method, "route", routeOf(r),
					"panic", fmt.Sprint(rec), "stack", string(debug.Stack()))
				WriteError(w, http.StatusInternalServerError, "internal error")
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// PathParam is the chi URL parameter name, unescaped. chi matches on the escaped path when it
// differs from the default encoding (a "/" inside a segment, sent as %2F) and then hands back
// the escaped segment; this undoes that.
func PathParam(r *http.Request, name string) (string, error) {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v, nil
	}
	s, err := url.PathUnescape(v)
	if err != nil {
		return "", BadRequest("malformed path parameter %s: %v", name, err)
	}
	return s, nil
}

// Healthz answers 200 {"status":"ok"} while the process serves HTTP.
func Healthz(w http.ResponseWriter, r *http.Request) {
	JSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// ReadyTimeout bounds one readiness check.
const ReadyTimeout = 3 * time.Second

// Readyz answers 200 {"status":"ok"} when check succeeds within ReadyTimeout, else 503 with
// the reason.
func Readyz(log *slog.Logger, check func(ctx context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
		defer cancel()
		if err := check(ctx); err != nil {
			log.WarnContext(r.Context(), "not ready", "err", err)
			WriteError(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
		JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}
