package gateway_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/httpsvc/gateway"
)

// echo is what an upstream saw of a proxied request.
type echo struct {
	Upstream string `json:"upstream"`
	Method   string `json:"method"`
	URI      string `json:"uri"`
	Origin   string `json:"origin"`
	Body     string `json:"body"`
	Forward  string `json:"forwarded_for"`
}

// mustUpstream is a stand-in service that answers every request with what it saw: the
// gateway's contract is about forwarding, whatever the service behind it does.
func mustUpstream(tb testing.TB, name string) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(http.StatusOK)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Location", "/from/"+name)
		w.Header().Set("Allow", "GET")
		w.WriteHeader(http.StatusTeapot)
		json.NewEncoder(w).Encode(echo{name, r.Method, r.RequestURI, r.Header.Get("Origin"), string(body), r.Header.Get("X-Forwarded-For")})
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func deadURL(tb testing.TB) string {
	tb.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return srv.URL
}

func mustGateway(tb testing.TB, usersURL, ridesURL string) string {
	tb.Helper()
	g := &gateway.Gateway{
		UsersURL: usersURL, RidesURL: ridesURL,
		Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(),
	}
	srv := httptest.NewServer(g.Handler())
	tb.Cleanup(srv.Close)
	return srv.URL
}

type answer struct {
	Code int
	Body string
}

func do(tb testing.TB, method, u, body string, header http.Header) (answer, http.Header) {
	tb.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b)}, resp.Header
}

func TestRoutesByPath(t *testing.T) {
	gw := mustGateway(t, mustUpstream(t, "users").URL, mustUpstream(t, "rides").URL)
	tests := []struct {
		name         string
		method, path string
		upstream     string
	}{
		{"users collection", "PUT", "/api/v1/users", "users"},
		{"one user", "GET", "/api/v1/users/alice", "users"},
		{"escaped slash kept", "GET", "/api/v1/users/a%2Fb", "users"},
		{"escaped query characters kept", "GET", "/api/v1/users/%27%3B%20DROP%20TABLE%20users%3B--", "users"},
		{"users trailing slash", "GET", "/api/v1/users/", "users"},
		{"rides with query", "GET", "/api/v1/rides?source=1&destination=2", "rides"},
		{"one ride", "POST", "/api/v1/rides/17", "rides"},
		{"rides count", "GET", "/api/v1/rides/count", "rides"},
		{"any method forwarded", "PATCH", "/api/v1/rides", "rides"},
		{"unknown method forwarded", "PROPFIND", "/api/v1/users", "users"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" goes to "+tt.upstream, func(t *testing.T) {
			got, header := do(t, tt.method, gw+tt.path, `{"k":"v"}`, http.Header{"Origin": {"http://rides:80"}})
			if got.Code != http.StatusTeapot {
				t.Fatalf("status %d, want the upstream's 418: %s", got.Code, got.Body)
			}
			var e echo
			if err := json.Unmarshal([]byte(got.Body), &e); err != nil {
				t.Fatal(err)
			}
			want := echo{tt.upstream, tt.method, tt.path, "http://rides:80", `{"k":"v"}`, "127.0.0.1"}
			if e != want {
				t.Fatalf("upstream saw %+v, want %+v", e, want)
			}
			if header.Get("Location") != "/from/"+tt.upstream || header.Get("Allow") != "GET" {
				t.Fatalf("upstream headers not passed back: %v", header)
			}
		})
	}
}

func TestRoutesNothingElse(t *testing.T) {
	gw := mustGateway(t, mustUpstream(t, "users").URL, mustUpstream(t, "rides").URL)
	for _, path := range []string{
		"/", "/api/v1/_count", "/api/v1/db/clear", "/api/v1/usersx", "/api/v1/ridesharing",
		"/api/v2/users", "/api/v1/db/write", "/users",
	} {
		t.Run(path+" is 404", func(t *testing.T) {
			got, _ := do(t, "GET", gw+path, "", nil)
			want := answer{404, `{"error":"no such path: ` + path + `"}`}
			if got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestUpstreamDownIs502(t *testing.T) {
	gw := mustGateway(t, deadURL(t), "::not a url")
	tests := []struct {
		name string
		path string
		want answer
	}{
		{"unreachable upstream", "/api/v1/users/alice", answer{502, `{"error":"users service unavailable, try again shortly"}`}},
		{"misconfigured upstream", "/api/v1/rides", answer{502, `{"error":"rides service not configured"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := do(t, "GET", gw+tt.path, "", nil); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("recorded by route pattern", func(t *testing.T) {
		got, _ := do(t, "GET", gw+"/metrics", "", nil)
		want := `rideshare_http_requests_total{code="502",method="GET",route="/api/v1/users/*",service="gateway"} 1`
		if !strings.Contains(got.Body, want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	})
}

func TestHealthAndReadiness(t *testing.T) {
	up := mustUpstream(t, "users").URL
	tests := []struct {
		name         string
		users, rides string
		want         answer
	}{
		{"both upstreams up", up, up, answer{200, `{"status":"ok"}`}},
		{"rides down", up, deadURL(t), answer{503, `{"error":"not ready: rides service: unreachable: `}},
		{"users answers 418", mustUpstream(t, "x").URL + "/teapot", up, answer{503, `{"error":"not ready: users service: /healthz answered 418"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := mustGateway(t, tt.users, tt.rides)
			if got, _ := do(t, "GET", gw+"/healthz", "", nil); got != (answer{200, `{"status":"ok"}`}) {
				t.Fatalf("healthz: %+v", got)
			}
			got, _ := do(t, "GET", gw+"/readyz", "", nil)
			if got.Code != tt.want.Code || !strings.HasPrefix(got.Body, tt.want.Body) {
				t.Fatalf("readyz: got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name         string
		users, rides string
		wantErr      bool
	}{
		{"http URLs accepted", "http://127.0.0.1:8081", "http://rides", false},
		{"https accepted", "https://users.example", "http://rides", false},
		{"empty refused", "", "http://rides", true},
		{"no scheme refused", "127.0.0.1:8081", "http://rides", true},
		{"other scheme refused", "http://users", "ftp://rides", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&gateway.Gateway{UsersURL: tt.users, RidesURL: tt.rides}).Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
