// Package httpsvc is the HTTP plumbing the RideShare services share: JSON answers and error
// bodies, request body decoding, one mapping from errors to statuses, a router with JSON 404
// and 405 answers, and /healthz and /readyz.
package httpsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/rideshare/rideshare"
)

// Error is an answer other than success: a status and a reason a person can act on. Handlers
// return it for every outcome they expect; Fail writes it as {"error": reason}.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Reason) }

// Errorf returns an *Error with a formatted reason.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Reason: fmt.Sprintf(format, args...)}
}

// BadRequest returns a 400 *Error with a formatted reason.
func BadRequest(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, format, args...)
}

// JSON writes v as the JSON body of a status answer. The body has no trailing newline, so an
// empty object is exactly {}.
func JSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only a programming error (an unencodable type) gets here.
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"internal error: cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// Empty writes the body {} with status.
func Empty(w http.ResponseWriter, status int) { JSON(w, status, struct{}{}) }

// NoContent writes a 204, which has no body.
func NoContent(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

// WriteError writes {"error": reason} with status.
func WriteError(w http.ResponseWriter, status int, reason string) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	JSON(w, status, map[string]string{"error": reason})
}

// Status maps an error to the status and reason a client is answered. It is the one place
// where errors become statuses:
//
//   - *Error: its own status and reason;
//   - a body over the limit (*http.MaxBytesError): 413;
//   - rideshare.ErrUnavailable or a deadline: 503, try again;
//   - anything else, including rideshare.ErrInvalid and rideshare.ErrConstraint that a handler did not
//     expect: 500, a bug or a broken dependency, to be logged.
func Status(err error) (int, string) {
	var e *Error
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &e):
		return e.Status, e.Reason
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)
	case errors.Is(err, rideshare.ErrUnavailable):
		return http.StatusServiceUnavailable, "database unavailable, try again shortly"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "timed out waiting for the database, try again shortly"
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "request canceled"
	}
	return http.StatusInternalServerError, "internal error"
}

// Fail answers err as Status maps it. Server-side failures are logged: 503s as warnings,
// 500s as errors with the underlying error (the client sees only "internal error").
func Fail(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, reason := Status(err)
	switch {
	case status == http.StatusInternalServerError:
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "route", routeOf(r), "err", err)
	case status == http.StatusServiceUnavailable && !errors.Is(err, context.Canceled):
		log.WarnContext(r.Context(), "dependency unavailable", "method", r.Method, "route", routeOf(r), "err", err)
	}
	WriteError(w, status, reason)
}

// routeOf is the route pattern of r, for logs: it never holds a raw path, so a username in a
// path is not copied into every error line.
func routeOf(r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	return "unmatched"
}

// Logger returns l, or slog.Default() if l is nil, with the component attribute set.
func Logger(l *slog.Logger, component string) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	return l.With("component", component)
}

// HandlerFunc is a handler that returns its failure instead of answering it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle turns h into an http.HandlerFunc that answers h's error with Fail.
func Handle(log *slog.Logger, h HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			Fail(w, r, log, err)
		}
	}
}

// NewTransport returns an HTTP transport for one service calling another: it keeps enough
// idle connections per host for many concurrent requests (http.DefaultTransport keeps 2, so
// under load most requests would open and close a connection).
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	return t
}
