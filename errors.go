package rideshare

import (
	"errors"
	"fmt"
	"net/http"
)

// The errors of the database API. Every side speaks of outcomes through these: a worker's
// reply carries their Kind, the orchestrator answers their Status, the client turns a status
// back into the same sentinel, and the services answer its status again.
var (
	// ErrInvalid marks an operation that can never succeed: unknown table or column, a value
	// of the wrong type, a malformed where clause.
	ErrInvalid = errors.New("invalid operation")
	// ErrConstraint marks a well-formed write that the current data refuses: a duplicate key
	// or a missing parent row.
	ErrConstraint = errors.New("constraint violation")
	// ErrUnavailable means the database could not answer in time (no master or slave), or
	// the outcome of a write is unknown (the log append did not answer). Try again later.
	ErrUnavailable = errors.New("database unavailable")
	// ErrInternal is any other failure; its detail is logged, never sent to a client.
	ErrInternal = errors.New("internal error")
)

// Error kinds in a worker's reply on a queue.
const (
	KindInvalid     = "invalid"
	KindConstraint  = "constraint"
	KindUnavailable = "unavailable"
	KindInternal    = "internal"
	// KindRetry: not applied; another worker may take it (the worker stepped down, or is
	// behind). The orchestrator sends the request again; a client never sees it.
	KindRetry = "retry"
)

// errorCode is one row of the table: a sentinel, its kind on the queues, its HTTP status.
type errorCode struct {
	err    error
	kind   string
	status int
}

// codes is the one table that maps the errors to kinds and statuses, both ways.
var codes = []errorCode{
	{ErrInvalid, KindInvalid, http.StatusBadRequest},
	{ErrConstraint, KindConstraint, http.StatusConflict},
	{ErrUnavailable, KindUnavailable, http.StatusServiceUnavailable},
	{ErrInternal, KindInternal, http.StatusInternalServerError},
}

// codedError is an error of the API as it came from the other side: its reason as it was
// given, and the sentinel it stands for.
type codedError struct {
	sentinel error
	reason   string
}

func (e *codedError) Error() string { return e.reason }
func (e *codedError) Unwrap() error { return e.sentinel }

// KindOf is the kind of err in a reply: that of the sentinel it wraps, internal otherwise.
func KindOf(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.kind
		}
	}
	return KindInternal
}

// ErrorOfKind turns a reply's kind and reason back into an error that says the reason and
// wraps the kind's sentinel (ErrInternal for a kind it does not know).
func ErrorOfKind(kind, reason string) error {
	for _, c := range codes {
		if c.kind == kind {
			return &codedError{c.err, reason}
		}
	}
	return &codedError{ErrInternal, fmt.Sprintf("%s (kind %q)", reason, kind)}
}

// StatusOf is the HTTP status of err: that of the sentinel it wraps, 500 otherwise.
func StatusOf(err error) int {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.status
		}
	}
	return http.StatusInternalServerError
}

// ErrorOfStatus turns an HTTP status and reason back into an error that says the reason and
// wraps the status's sentinel; any other status wraps ErrInternal.
func ErrorOfStatus(status int, reason string) error {
	for _, c := range codes {
		if c.status == status {
			return &codedError{c.err, reason}
		}
	}
	return &codedError{ErrInternal, fmt.Sprintf("status %d: %s", status, reason)}
}
