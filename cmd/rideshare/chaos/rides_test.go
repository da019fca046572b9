package chaos

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The rides check against a fake gateway whose answers the test sets: it holds when the
// listing agrees with the outcomes, and names each kind of disagreement.
func TestRidesCheck(t *testing.T) {
	type listed struct {
		RideID    int64  `json:"rideId"`
		Username  string `json:"username"`
		Timestamp string `json:"timestamp"`
	}
	ops := []rideOp{
		{ts: "a", class: Ok, id: 1, tried: true, joined: Ok},
		{ts: "b", class: Failed},
		{ts: "c", class: Indeterminate},
		{ts: "d", class: Ok, id: 4, tried: true, joined: Failed},
	}
	good := []listed{{1, "creator", "a"}, {3, "creator", "c"}, {4, "creator", "d"}}
	goodUsers := map[string][]string{"/api/v1/rides/1": {"rider"}, "/api/v1/rides/4": {}}
	for _, tc := range []struct {
		name  string
		list  []listed
		users map[string][]string
		want  string // "" holds
	}{
		{"agrees", good, goodUsers, ""},
		{"acknowledged ride lost", good[1:], goodUsers, "acknowledged ride 1"},
		{"refused ride present", append(good, listed{2, "creator", "b"}), goodUsers, "refused ride b"},
		{"lost answer applied twice", append(good, listed{5, "creator", "c"}), goodUsers, "exists 2 times"},
		{"acknowledged join lost", good, map[string][]string{"/api/v1/rides/1": {}, "/api/v1/rides/4": {}}, "acknowledged join of ride 1"},
		{"refused join present", good, map[string][]string{"/api/v1/rides/1": {"rider"}, "/api/v1/rides/4": {"rider"}}, "refused join of ride 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/api/v1/rides" {
					json.NewEncoder(w).Encode(tc.list)
					return
				}
				json.NewEncoder(w).Encode(map[string]any{"users": tc.users[r.URL.Path]})
			}))
			defer srv.Close()
			l := newRideLoad(srv.URL, "", time.Second)
			l.creator, l.rider, l.ops = "creator", "rider", ops
			res := l.check(context.Background())
			if tc.want == "" {
				if !res.Holds {
					t.Fatalf("violated: %s", res)
				}
				return
			}
			if res.Holds || !strings.Contains(res.Evidence, tc.want) {
				t.Fatalf("got %s, want a violation naming %q", res, tc.want)
			}
		})
	}
}
