package rideshare_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/rideshare/rideshare"
)

// The one table, both ways: an error keeps its meaning from the worker's reply through the
// orchestrator's status and the client's error back to the services' status.
func TestErrorCodesRoundTrip(t *testing.T) {
	for _, c := range []struct {
		err    error
		kind   string
		status int
	}{
		{rideshare.ErrInvalid, rideshare.KindInvalid, http.StatusBadRequest},
		{rideshare.ErrConstraint, rideshare.KindConstraint, http.StatusConflict},
		{rideshare.ErrUnavailable, rideshare.KindUnavailable, http.StatusServiceUnavailable},
		{rideshare.ErrInternal, rideshare.KindInternal, http.StatusInternalServerError},
	} {
		t.Run(c.kind, func(t *testing.T) {
			wrapped := fmt.Errorf("step: %w", c.err)
			if k := rideshare.KindOf(wrapped); k != c.kind {
				t.Fatalf("KindOf = %q, want %q", k, c.kind)
			}
			back := rideshare.ErrorOfKind(c.kind, "the reason")
			if !errors.Is(back, c.err) || back.Error() != "the reason" {
				t.Fatalf("ErrorOfKind = %v (is %v: %v)", back, c.err, errors.Is(back, c.err))
			}
			if s := rideshare.StatusOf(back); s != c.status {
				t.Fatalf("StatusOf = %d, want %d", s, c.status)
			}
			again := rideshare.ErrorOfStatus(c.status, "the reason")
			if !errors.Is(again, c.err) || again.Error() != "the reason" {
				t.Fatalf("ErrorOfStatus = %v", again)
			}
		})
	}
	t.Run("anything else is internal", func(t *testing.T) {
		if k := rideshare.KindOf(errors.New("disk full")); k != rideshare.KindInternal {
			t.Errorf("KindOf = %q", k)
		}
		if s := rideshare.StatusOf(errors.New("disk full")); s != http.StatusInternalServerError {
			t.Errorf("StatusOf = %d", s)
		}
		if err := rideshare.ErrorOfStatus(http.StatusTeapot, "x"); !errors.Is(err, rideshare.ErrInternal) {
			t.Errorf("ErrorOfStatus(418) = %v", err)
		}
		if err := rideshare.ErrorOfKind("bogus", "x"); !errors.Is(err, rideshare.ErrInternal) {
			t.Errorf("ErrorOfKind(bogus) = %v", err)
		}
	})
}
