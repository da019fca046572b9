package httpsvc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/rideshare/rideshare"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rideshare/rideshare/httpsvc"
)

// logBuffer returns a debug-level logger writing into the returned buffer.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

func TestJSONBodiesAreExact(t *testing.T) {
	tests := []struct {
		name  string
		write func(w http.ResponseWriter)
		code  int
		body  string
	}{
		{"empty object", func(w http.ResponseWriter) { httpsvc.Empty(w, 201) }, 201, `{}`},
		{"array", func(w http.ResponseWriter) { httpsvc.JSON(w, 200, []int64{603}) }, 200, `[603]`},
		{"error", func(w http.ResponseWriter) { httpsvc.WriteError(w, 400, "no such user") }, 400, `{"error":"no such user"}`},
		{"html not escaped", func(w http.ResponseWriter) { httpsvc.JSON(w, 200, []string{"<a&b>"}) }, 200, `["<a&b>"]`},
		{"unencodable value is a 500", func(w http.ResponseWriter) { httpsvc.JSON(w, 200, func() {}) }, 500, `{"error":"internal error: cannot encode the answer"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tt.write(rec)
			if rec.Code != tt.code || rec.Body.String() != tt.body {
				t.Fatalf("got %d %q, want %d %q", rec.Code, rec.Body.String(), tt.code, tt.body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	t.Run("no content has no body", func(t *testing.T) {
		rec := httptest.NewRecorder()
		httpsvc.NoContent(rec)
		if rec.Code != 204 || rec.Body.Len() != 0 {
			t.Fatalf("got %d %q", rec.Code, rec.Body.String())
		}
	})
}

func TestStatus(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantReason string
	}{
		{"expected outcome keeps its status", httpsvc.BadRequest("no such %s", "ride"), 400, "no such ride"},
		{"wrapped expected outcome", fmt.Errorf("step: %w", httpsvc.Errorf(404, "no such user")), 404, "no such user"},
		{"body too large", fmt.Errorf("read: %w", &http.MaxBytesError{Limit: 65536}), 413, "request body larger than 65536 bytes"},
		{"database unavailable", fmt.Errorf("insert: %w", fmt.Errorf("%w: no master", rideshare.ErrUnavailable)), 503, "database unavailable, try again shortly"},
		{"deadline", fmt.Errorf("read: %w", context.DeadlineExceeded), 503, "timed out waiting for the database, try again shortly"},
		{"unexpected constraint is a bug", fmt.Errorf("insert: %w", rideshare.ErrConstraint), 500, "internal error"},
		{"invalid operation is a bug", fmt.Errorf("read: %w", rideshare.ErrInvalid), 500, "internal error"},
		{"anything else", errors.New("disk on fire"), 500, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, reason := httpsvc.Status(tt.err)
			if status != tt.wantStatus || reason != tt.wantReason {
				t.Fatalf("Status = %d %q, want %d %q", status, reason, tt.wantStatus, tt.wantReason)
			}
		})
	}
}

func TestFailLogsServerSideFailuresOnly(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantLog  string // "" for no log line
		wantCode int
	}{
		{"client error not logged", httpsvc.BadRequest("bad"), "", 400},
		{"unavailable logged as warning", rideshare.ErrUnavailable, "level=WARN", 503},
		{"bug logged as error with cause", errors.New("disk on fire"), "disk on fire", 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, buf := logBuffer()
			rec := httptest.NewRecorder()
			httpsvc.Fail(rec, httptest.NewRequest(http.MethodGet, "/x", nil), log, tt.err)
			if rec.Code != tt.wantCode {
				t.Fatalf("status %d, want %d", rec.Code, tt.wantCode)
			}
			if tt.wantLog == "" && buf.Len() != 0 {
				t.Fatalf("logged %q", buf.String())
			}
			if tt.wantLog != "" && !strings.Contains(buf.String(), tt.wantLog) {
				t.Fatalf("log %q lacks %q", buf.String(), tt.wantLog)
			}
			if tt.wantCode == 503 && rec.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		})
	}
}

func mustRouter(tb testing.TB) (*httptest.Server, *bytes.Buffer) {
	tb.Helper()
	log, buf := logBuffer()
	r := httpsvc.NewRouter(log)
	r.Handle("/things", httpsvc.Methods{
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) { httpsvc.JSON(w, 200, []string{}) },
		http.MethodPut: func(w http.ResponseWriter, r *http.Request) { httpsvc.Empty(w, 201) },
	})
	r.Handle("/things/{name}", httpsvc.Methods{
		http.MethodGet: httpsvc.Handle(log, func(w http.ResponseWriter, r *http.Request) error {
			name, err := httpsvc.PathParam(r, "name")
			if err != nil {
				return err
			}
			if name == "missing" {
				return httpsvc.Errorf(404, "no such thing")
			}
			httpsvc.JSON(w, 200, map[string]string{"name": name})
			return nil
		}),
	})
	r.Handle("/panic", httpsvc.Methods{http.MethodGet: func(w http.ResponseWriter, r *http.Request) { panic("boom") }})
	r.Handle("/healthz", httpsvc.Methods{http.MethodGet: httpsvc.Healthz})
	srv := httptest.NewServer(r)
	tb.Cleanup(srv.Close)
	return srv, buf
}

type answer struct {
	code  int
	body  string
	allow string
}

func mustDo(tb testing.TB, method, url string) answer {
	tb.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(body), strings.Join(resp.Header.Values("Allow"), ",")}
}

func TestRouter(t *testing.T) {
	srv, logs := mustRouter(t)
	tests := []struct {
		name         string
		method, path string
		want         answer
	}{
		{"routed method served", "GET", "/things", answer{200, `[]`, ""}},
		{"other routed method served", "PUT", "/things", answer{201, `{}`, ""}},
		{"unrouted method is 405 with Allow", "DELETE", "/things", answer{405, `{"error":"method DELETE not allowed here; allowed: GET, PUT"}`, "GET, PUT"}},
		{"unknown method on a known path is 405 with Allow", "PROPFIND", "/things", answer{405, `{"error":"method PROPFIND not allowed here; allowed: GET, PUT"}`, "GET, PUT"}},
		{"unknown path is a JSON 404", "GET", "/nothing/here", answer{404, `{"error":"no such path: /nothing/here"}`, ""}},
		{"unknown method on an unknown path is 404", "PROPFIND", "/nothing", answer{404, `{"error":"no such path: /nothing"}`, ""}},
		{"path parameter", "GET", "/things/bob", answer{200, `{"name":"bob"}`, ""}},
		{"escaped slash in a parameter", "GET", "/things/a%2Fb", answer{200, `{"name":"a/b"}`, ""}},
		{"escaped percent in a parameter", "GET", "/things/100%25", answer{200, `{"name":"100%"}`, ""}},
		{"escaped slash and percent", "GET", "/things/a%2F100%25", answer{200, `{"name":"a/100%"}`, ""}},
		{"handler error answered", "GET", "/things/missing", answer{404, `{"error":"no such thing"}`, ""}},
		{"panic is a JSON 500", "GET", "/panic", answer{500, `{"error":"internal error"}`, ""}},
		{"healthz", "GET", "/healthz", answer{200, `{"status":"ok"}`, ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustDo(t, tt.method, srv.URL+tt.path); got != tt.want {
				t.Fatalf("%s %s = %+v, want %+v", tt.method, tt.path, got, tt.want)
			}
		})
	}
	t.Run("panic logged with its value", func(t *testing.T) {
		if !strings.Contains(logs.String(), "panic=boom") {
			t.Fatalf("log %q lacks the panic", logs.String())
		}
	})
}

func TestReadyz(t *testing.T) {
	tests := []struct {
		name  string
		check func(context.Context) error
		want  answer
	}{
		{"ready", func(context.Context) error { return nil }, answer{200, `{"status":"ok"}`, ""}},
		{"dependency down", func(context.Context) error { return errors.New("database read: no slave") }, answer{503, `{"error":"not ready: database read: no slave"}`, ""}},
		{"check bounded by a deadline", func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			return nil
		}, answer{200, `{"status":"ok"}`, ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := logBuffer()
			rec := httptest.NewRecorder()
			httpsvc.Readyz(log, tt.check)(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if got := (answer{rec.Code, rec.Body.String(), ""}); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLoggerSetsComponent(t *testing.T) {
	log, buf := logBuffer()
	httpsvc.Logger(log, "users").Info("hello")
	if !strings.Contains(buf.String(), "component=users") {
		t.Fatalf("log %q lacks the component", buf.String())
	}
}
