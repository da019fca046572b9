package users_test

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/rideshare/rideshare"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/httpsvc/users"
	"github.com/rideshare/rideshare/worker/store"
)

const (
	pw      = "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8" // sha1("password")
	pwUpper = "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8"
	form    = "application/x-www-form-urlencoded"
)

// mustLocal opens a real single-SQLite database in a temporary directory.
func mustLocal(tb testing.TB) *store.Local {
	tb.Helper()
	s := store.New(filepath.Join(tb.TempDir(), "db.sqlite"))
	if err := s.Open(context.Background()); err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return &store.Local{Store: s}
}

type env struct {
	url  string
	db   *store.Local
	logs *bytes.Buffer
	reg  *prometheus.Registry
}

// mustUsers serves a users service on a real database and captures its debug logs.
func mustUsers(tb testing.TB) *env {
	tb.Helper()
	var logs bytes.Buffer
	e := &env{db: mustLocal(tb), logs: &logs, reg: prometheus.NewRegistry()}
	svc := &users.Service{
		DB:       e.db,
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: e.reg,
	}
	srv := httptest.NewServer(svc.Handler())
	tb.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

type answer struct {
	Code  int
	Body  string
	Allow string
}

func (e *env) do(tb testing.TB, method, path, body, contentType string) answer {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return answer{resp.StatusCode, string(b), resp.Header.Get("Allow")}
}

func (e *env) mustCreate(tb testing.TB, username string) {
	tb.Helper()
	body := `{"username":` + quote(username) + `,"password":"` + pw + `"}`
	if got := e.do(tb, "PUT", "/api/v1/users", body, "application/json"); got != (answer{Code: 201, Body: "{}"}) {
		tb.Fatalf("create %q: %+v", username, got)
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func userPath(name string) string { return "/api/v1/users/" + url.PathEscape(name) }

func check(tb testing.TB, got, want answer) {
	tb.Helper()
	if got != want {
		tb.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestCreateUser(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		contentType string
		want        answer
	}{
		{"created", `{"username":"alice","password":"` + pw + `"}`, "application/json", answer{Code: 201, Body: `{}`}},
		{"created with upper-case hex", `{"username":"bob","password":"` + pwUpper + `"}`, "application/json", answer{Code: 201, Body: `{}`}},
		{"created from form fields", "username=carol&password=" + pw, form, answer{Code: 201, Body: `{}`}},
		{"names are case-sensitive", `{"username":"Alice","password":"` + pw + `"}`, "application/json", answer{Code: 201, Body: `{}`}},
		{"taken", `{"username":"alice","password":"` + pw + `"}`, "application/json", answer{Code: 400, Body: `{"error":"username already taken"}`}},
		{"taken via form", "username=carol&password=" + pw, form, answer{Code: 400, Body: `{"error":"username already taken"}`}},
		{"empty username", `{"username":"","password":"` + pw + `"}`, "", answer{Code: 400, Body: `{"error":"username must not be empty"}`}},
		{"password of 39 digits", `{"username":"dave","password":"` + pw[:39] + `"}`, "", answer{Code: 400, Body: `{"error":"password must be exactly 40 hexadecimal digits (a SHA-1 hash)"}`}},
		{"password of 41 digits", `{"username":"dave","password":"` + pw + `0"}`, "", answer{Code: 400, Body: `{"error":"password must be exactly 40 hexadecimal digits (a SHA-1 hash)"}`}},
		{"password not hex", `{"username":"dave","password":"` + pw[:39] + `g"}`, "", answer{Code: 400, Body: `{"error":"password must be exactly 40 hexadecimal digits (a SHA-1 hash)"}`}},
		{"missing password", `{"username":"dave"}`, "", answer{Code: 400, Body: `{"error":"missing field \"password\""}`}},
		{"missing username", `{"password":"` + pw + `"}`, "", answer{Code: 400, Body: `{"error":"missing field \"username\""}`}},
		{"unknown field", `{"username":"dave","password":"` + pw + `","admin":true}`, "", answer{Code: 400, Body: `{"error":"unknown field \"admin\" (expected \"username\", \"password\")"}`}},
		{"username not a string", `{"username":7,"password":"` + pw + `"}`, "", answer{Code: 400, Body: `{"error":"field \"username\" must be a string, not a number"}`}},
		{"malformed JSON", `{"username":"dave",`, "", answer{Code: 400, Body: `{"error":"malformed JSON: unexpected end of the body"}`}},
		{"trailing garbage", `{"username":"dave","password":"` + pw + `"}garbage`, "", answer{Code: 400, Body: `{"error":"unexpected data after the JSON object"}`}},
		{"oversized body", `{"username":"` + strings.Repeat("d", 70000) + `","password":"` + pw + `"}`, "", answer{Code: 413, Body: `{"error":"request body larger than 65536 bytes"}`}},
	}
	e := mustUsers(t)
	for _, tt := range tests { // in order: "taken" needs "created"
		t.Run(tt.name, func(t *testing.T) {
			check(t, e.do(t, "PUT", "/api/v1/users", tt.body, tt.contentType), tt.want)
		})
	}
	t.Run("only the valid ones stored", func(t *testing.T) {
		check(t, e.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 200, Body: `["alice","bob","carol","Alice"]`})
	})
}

func TestUsersMethodNotAllowed(t *testing.T) {
	e := mustUsers(t)
	e.mustCreate(t, "alice")
	tests := []struct {
		method, path, allow string
	}{
		{"POST", "/api/v1/users", "GET, PUT"},
		{"DELETE", "/api/v1/users", "GET, PUT"},
		{"PATCH", "/api/v1/users", "GET, PUT"},
		{"PUT", "/api/v1/users/alice", "DELETE, GET"},
		{"POST", "/api/v1/users/alice", "DELETE, GET"},
		{"PATCH", "/api/v1/users/alice", "DELETE, GET"},
		{"GET", "/api/v1/db/clear", "POST"},
		{"DELETE", "/api/v1/db/clear", "POST"},
		{"POST", "/api/v1/_count", "DELETE, GET"},
		{"PUT", "/api/v1/_count", "DELETE, GET"},
		{"PROPFIND", "/api/v1/users", "GET, PUT"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" is 405", func(t *testing.T) {
			got := e.do(t, tt.method, tt.path, "", "")
			want := answer{Code: 405, Body: `{"error":"method ` + tt.method + ` not allowed here; allowed: ` + tt.allow + `"}`, Allow: tt.allow}
			check(t, got, want)
		})
	}
	t.Run("nothing changed", func(t *testing.T) {
		check(t, e.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 200, Body: `["alice"]`})
	})
}

func TestListUsers(t *testing.T) {
	e := mustUsers(t)
	t.Run("no users is 204 without a body", func(t *testing.T) {
		check(t, e.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 204})
	})
	for _, name := range []string{"zoe", "bob", "alice"} {
		e.mustCreate(t, name)
	}
	t.Run("in creation order", func(t *testing.T) {
		check(t, e.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 200, Body: `["zoe","bob","alice"]`})
	})
}

func TestGetUser(t *testing.T) {
	e := mustUsers(t)
	e.mustCreate(t, "alice")
	e.mustCreate(t, "a/b %?#")
	tests := []struct {
		name string
		path string
		want answer
	}{
		{"found", "/api/v1/users/alice", answer{Code: 200, Body: `{"username":"alice"}`}},
		{"found with escapes", userPath("a/b %?#"), answer{Code: 200, Body: `{"username":"a/b %?#"}`}},
		{"case-sensitive", "/api/v1/users/ALICE", answer{Code: 404, Body: `{"error":"no such user"}`}},
		{"missing", "/api/v1/users/nobody", answer{Code: 404, Body: `{"error":"no such user"}`}},
		{"extra segment is no route", "/api/v1/users/alice/rides", answer{Code: 404, Body: `{"error":"no such path: /api/v1/users/alice/rides"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { check(t, e.do(t, "GET", tt.path, "", ""), tt.want) })
	}
}

func TestDeleteUser(t *testing.T) {
	e := mustUsers(t)
	e.mustCreate(t, "alice")
	e.mustCreate(t, "bob")
	t.Run("deleted", func(t *testing.T) {
		check(t, e.do(t, "DELETE", "/api/v1/users/alice", "", ""), answer{Code: 200, Body: `{}`})
	})
	t.Run("gone afterwards", func(t *testing.T) {
		check(t, e.do(t, "GET", "/api/v1/users/alice", "", ""), answer{Code: 404, Body: `{"error":"no such user"}`})
		check(t, e.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 200, Body: `["bob"]`})
	})
	t.Run("second delete is 400", func(t *testing.T) {
		check(t, e.do(t, "DELETE", "/api/v1/users/alice", "", ""), answer{Code: 400, Body: `{"error":"no such user"}`})
	})
	t.Run("never existed is 400", func(t *testing.T) {
		check(t, e.do(t, "DELETE", "/api/v1/users/nobody", "", ""), answer{Code: 400, Body: `{"error":"no such user"}`})
	})
	t.Run("name can be taken again", func(t *testing.T) {
		e.mustCreate(t, "alice")
	})
}

func TestDeleteUserRemovesTheirRidesAndJoins(t *testing.T) {
	e := mustUsers(t)
	e.mustCreate(t, "alice")
	e.mustCreate(t, "bob")
	ctx := context.Background()
	ride := func(by string) int64 {
		res, err := e.db.Write(ctx, rideshare.Write{Table: "rides", Insert: map[string]any{
			"created_by": by, "timestamp": "01-01-2030:00-00-00", "ts": int64(1893456000), "source": int64(1), "destination": int64(2),
		}})
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}
	alices, bobs := ride("alice"), ride("bob")
	if _, err := e.db.Write(ctx, rideshare.Write{Table: "ride_users", Insert: map[string]any{"ride_id": bobs, "username": "alice"}}); err != nil {
		t.Fatal(err)
	}
	check(t, e.do(t, "DELETE", "/api/v1/users/alice", "", ""), answer{Code: 200, Body: `{}`})
	count := func(table string, where rideshare.Where) int64 {
		rows, err := e.db.Read(ctx, rideshare.Read{Table: table, Where: where, Count: true})
		if err != nil {
			t.Fatal(err)
		}
		return rows[0]["count"].(int64)
	}
	t.Run("their ride is gone", func(t *testing.T) {
		if n := count("rides", rideshare.Where{"ride_id": alices}); n != 0 {
			t.Fatalf("%d rides", n)
		}
	})
	t.Run("their join is gone", func(t *testing.T) {
		if n := count("ride_users", rideshare.Where{"username": "alice"}); n != 0 {
			t.Fatalf("%d joins", n)
		}
	})
	t.Run("other rides stay", func(t *testing.T) {
		if n := count("rides", rideshare.Where{"ride_id": bobs}); n != 1 {
			t.Fatalf("%d rides", n)
		}
	})
}

func TestClearUsers(t *testing.T) {
	e := mustUsers(t)
	e.mustCreate(t, "alice")
	e.mustCreate(t, "bob")
	check(t, e.do(t, "POST", "/api/v1/db/clear", "", ""), answer{Code: 200, Body: `{}`})
	t.Run("no users left", func(t *testing.T) {
		check(t, e.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 204})
	})
	t.Run("clearing nothing is fine", func(t *testing.T) {
		check(t, e.do(t, "POST", "/api/v1/db/clear", "", ""), answer{Code: 200, Body: `{}`})
	})
}

func TestInjectionLookingNameIsPlainData(t *testing.T) {
	e := mustUsers(t)
	evil := "'; DROP TABLE users;--"
	e.mustCreate(t, "alice")
	e.mustCreate(t, evil)
	t.Run("found by its name", func(t *testing.T) {
		check(t, e.do(t, "GET", userPath(evil), "", ""), answer{Code: 200, Body: `{"username":` + quote(evil) + `}`})
	})
	t.Run("every user intact", func(t *testing.T) {
		check(t, e.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 200, Body: `["alice",` + quote(evil) + `]`})
	})
	t.Run("deleted by its name only", func(t *testing.T) {
		check(t, e.do(t, "DELETE", userPath(evil), "", ""), answer{Code: 200, Body: `{}`})
		check(t, e.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 200, Body: `["alice"]`})
	})
}

func TestPasswordNeverReturnedNorLogged(t *testing.T) {
	e := mustUsers(t)
	secret := "0123456789abcdef0123456789abcdef01234567"
	bad := "0123456789abcdef0123456789abcdef0123456z" // refused: must not be echoed either
	var bodies []string
	for _, a := range []answer{
		e.do(t, "PUT", "/api/v1/users", `{"username":"alice","password":"`+secret+`"}`, ""),
		e.do(t, "PUT", "/api/v1/users", `{"username":"alice","password":"`+secret+`"}`, ""),
		e.do(t, "PUT", "/api/v1/users", `{"username":"bob","password":"`+bad+`"}`, ""),
		e.do(t, "PUT", "/api/v1/users", `{"username":"bob","password":"`+bad+`"`, ""),
		e.do(t, "GET", "/api/v1/users", "", ""),
		e.do(t, "GET", "/api/v1/users/alice", "", ""),
	} {
		bodies = append(bodies, a.Body)
	}
	e.db.Store.Close() // the next write fails: an error that is logged
	e.do(t, "PUT", "/api/v1/users", `{"username":"carol","password":"`+secret+`"}`, "")
	for _, tt := range []struct{ name, password string }{{"accepted password", secret}, {"refused password", bad}} {
		t.Run(tt.name+" not in answers", func(t *testing.T) {
			if strings.Contains(strings.Join(bodies, "\n"), tt.password) {
				t.Fatalf("the password is in the answers %q", bodies)
			}
		})
		t.Run(tt.name+" not in logs", func(t *testing.T) {
			if e.logs.Len() == 0 {
				t.Fatal("nothing logged: the failing write should have been")
			}
			if strings.Contains(e.logs.String(), tt.password) {
				t.Fatalf("the password is in the logs %q", e.logs.String())
			}
		})
	}
}

func TestCount(t *testing.T) {
	e := mustUsers(t)
	get := func(t *testing.T) string { t.Helper(); return e.do(t, "GET", "/api/v1/_count", "", "").Body }
	t.Run("starts at zero", func(t *testing.T) {
		if got := get(t); got != `[0]` {
			t.Fatalf("_count = %s", got)
		}
	})
	e.mustCreate(t, "alice")                               // 1
	e.do(t, "PUT", "/api/v1/users", `{"username":""}`, "") // 2: 400
	e.do(t, "POST", "/api/v1/users", "", "")               // 3: 405
	e.do(t, "GET", "/api/v1/nothing", "", "")              // 4: 404
	e.do(t, "GET", "/api/v1/users/alice", "", "")          // 5
	e.do(t, "POST", "/api/v1/db/clear", "", "")            // not counted
	e.do(t, "GET", "/api/v1/db/clear", "", "")             // not counted, 405
	e.do(t, "PATCH", "/api/v1/_count", "", "")             // not counted, 405
	e.do(t, "GET", "/healthz", "", "")                     // not counted
	e.do(t, "GET", "/metrics", "", "")                     // not counted
	t.Run("counts every API request but _count and db/clear", func(t *testing.T) {
		if got := get(t); got != `[5]` {
			t.Fatalf("_count = %s, want [5]", got)
		}
	})
	t.Run("reset", func(t *testing.T) {
		check(t, e.do(t, "DELETE", "/api/v1/_count", "", ""), answer{Code: 200, Body: `{}`})
		if got := get(t); got != `[0]` {
			t.Fatalf("_count = %s after reset", got)
		}
	})
	t.Run("counts again after reset", func(t *testing.T) {
		e.do(t, "GET", "/api/v1/users", "", "")
		if got := get(t); got != `[1]` {
			t.Fatalf("_count = %s, want [1]", got)
		}
	})
}

func TestOperationalEndpoints(t *testing.T) {
	e := mustUsers(t)
	e.mustCreate(t, "alice")
	e.do(t, "GET", "/api/v1/users/bob", "", "")
	t.Run("healthz", func(t *testing.T) {
		check(t, e.do(t, "GET", "/healthz", "", ""), answer{Code: 200, Body: `{"status":"ok"}`})
	})
	t.Run("readyz with the database up", func(t *testing.T) {
		check(t, e.do(t, "GET", "/readyz", "", ""), answer{Code: 200, Body: `{"status":"ok"}`})
	})
	t.Run("metrics by route pattern", func(t *testing.T) {
		body := e.do(t, "GET", "/metrics", "", "").Body
		for _, want := range []string{
			`rideshare_http_requests_total{code="201",method="PUT",route="/api/v1/users",service="users"} 1`,
			`rideshare_http_requests_total{code="404",method="GET",route="/api/v1/users/{username}",service="users"} 1`,
			`rideshare_api_requests_total{service="users"} 2`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
	t.Run("readyz with the database down", func(t *testing.T) {
		e.db.Store.Close()
		got := e.do(t, "GET", "/readyz", "", "")
		if got.Code != 503 || !strings.HasPrefix(got.Body, `{"error":"not ready: database: `) {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("database down is a 500 for a request", func(t *testing.T) {
		check(t, e.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 500, Body: `{"error":"internal error"}`})
	})
}
