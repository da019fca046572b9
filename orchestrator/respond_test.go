package orchestrator

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rideshare/rideshare"
)

// An answer carries the contract's status and reason; a 500 says only "internal error" to
// the client and logs the detail.
func TestRespondMapsErrorsAndHidesInternals(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		status int
		body   string
	}{
		{"invalid", rideshare.ErrorOfKind(rideshare.KindInvalid, "unknown table \"x\""), 400, `{"error":"unknown table \"x\""}`},
		{"constraint", rideshare.ErrorOfKind(rideshare.KindConstraint, "duplicate"), 409, `{"error":"duplicate"}`},
		{"unavailable", fail(http.StatusServiceUnavailable, "no master answered"), 503, `{"error":"no master answered"}`},
		{"internal from a worker", rideshare.ErrorOfKind(rideshare.KindInternal, "disk I/O error at /data/w1/db.sqlite"), 500, `{"error":"internal error"}`},
		{"internal here", fmt.Errorf("marshal: %w", errors.New("secret detail")), 500, `{"error":"internal error"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			o := &Orchestrator{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			rec := httptest.NewRecorder()
			o.respond(rec, httptest.NewRequest("POST", "/api/v1/db/write", nil), nil, c.err)
			if rec.Code != c.status || strings.TrimSpace(rec.Body.String()) != c.body {
				t.Fatalf("answer %d %s, want %d %s", rec.Code, rec.Body, c.status, c.body)
			}
			if c.status == 500 && !strings.Contains(logs.String(), c.err.Error()) {
				t.Fatalf("the detail of a 500 is not logged: %q", logs.String())
			}
		})
	}
}
