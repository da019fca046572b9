package console_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/console"
)

// orchestratorHandler is the orchestrator's real router, with an admin token: routing and
// the console need no workers.
func orchestratorHandler() http.Handler {
	return (&orchestrator.Orchestrator{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), AdminToken: "s3cret"}).Handler()
}

func serve(h http.Handler, method, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

// GET / is the page, as HTML, with its policy; the query string does not matter.
func TestConsoleServedAtRoot(t *testing.T) {
	h := orchestratorHandler()
	for _, target := range []string{"/", "/?refresh=1"} {
		rec := serve(h, http.MethodGet, target)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", target, rec.Code, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", target, ct)
		}
		if got := rec.Header().Get("Content-Security-Policy"); got != console.CSP {
			t.Errorf("GET %s: Content-Security-Policy %q, want %q", target, got, console.CSP)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" || rec.Header().Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("GET %s: headers %v", target, rec.Header())
		}
		if rec.Body.String() != string(console.Page()) {
			t.Errorf("GET %s: the body is not the page (%d bytes)", target, rec.Body.Len())
		}
		if !strings.HasPrefix(rec.Body.String(), "<!DOCTYPE html>") {
			t.Errorf("GET %s: body starts %.40q", target, rec.Body)
		}
	}
}

// The policy allows nothing by default, the page's own inline script and style by their
// hashes, and requests to its own origin only; never 'unsafe-inline' or 'unsafe-eval'.
func TestConsolePolicy(t *testing.T) {
	directives := map[string]string{}
	for _, d := range strings.Split(console.CSP, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	page := string(console.Page())
	inline := func(tag string) string {
		m := regexp.MustCompile(`(?s)<`+tag+`>(.*?)</`+tag+`>`).FindAllStringSubmatch(page, -1)
		if len(m) != 1 {
			t.Fatalf("%d <%s> elements, want 1", len(m), tag)
		}
		sum := sha256.Sum256([]byte(m[0][1]))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	for name, want := range map[string]string{
		"default-src":     "'none'",
		"script-src":      inline("script"),
		"style-src":       inline("style"),
		"connect-src":     "'self'",
		"base-uri":        "'none'",
		"form-action":     "'none'",
		"frame-ancestors": "'none'",
	} {
		if got := directives[name]; got != want {
			t.Errorf("%s %q, want %q (policy %q)", name, got, want, console.CSP)
		}
	}
	if strings.Contains(console.CSP, "unsafe") {
		t.Errorf("policy %q allows something unsafe", console.CSP)
	}
	// An inline event handler or style attribute would be refused by the policy.
	if m := regexp.MustCompile(`(?i)\s(on[a-z]+|style)\s*=`).FindString(page); m != "" {
		t.Errorf("the page has an inline %q attribute, which its policy refuses", m)
	}
}

// Nothing external: no absolute URL at all, no script or stylesheet by address, no CSS
// import; the page asks only for the API, by relative paths.
func TestConsoleHasNoExternalAssets(t *testing.T) {
	page := string(console.Page())
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)https?://`),
		regexp.MustCompile(`(?i)(src|href|action)\s*=\s*["']?\s*//`),
		regexp.MustCompile(`(?i)<script[^>]*\ssrc`),
		regexp.MustCompile(`(?i)<link[^>]*stylesheet`),
		regexp.MustCompile(`(?i)@import|url\(`),
		regexp.MustCompile(`(?i)<(iframe|object|embed|img)`),
	} {
		if m := bad.FindString(page); m != "" {
			t.Errorf("the page has %q (%s)", m, bad)
		}
	}
	for _, href := range regexp.MustCompile(`(?i)(?:src|href)\s*=\s*"([^"]*)"`).FindAllStringSubmatch(page, -1) {
		if href[1] != "data:," {
			t.Errorf("the page refers to %q", href[1])
		}
	}
	for _, want := range []string{`'api/v1/status'`, `'api/v1/crash/' + which`, `sessionStorage`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page has no %s", want)
		}
	}
	// The token lives in sessionStorage and an Authorization header, never in a URL or in
	// storage that outlives the tab.
	for _, bad := range []string{"localStorage", "location.", "URLSearchParams", "document.cookie"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page uses %s", bad)
		}
	}
}

// The elements the browser tests and consoletest read are there.
func TestConsoleStableIDs(t *testing.T) {
	page := string(console.Page())
	for _, id := range []string{"conn", "updated", "log-head", "reads-rate", "writes-rate", "worker-count", "master",
		"workers", "nodes", "events", "token", "crash-master", "crash-slave", "crash-result"} {
		if n := strings.Count(page, `id="`+id+`"`); n != 1 {
			t.Errorf(`id="%s" %d times, want once`, id, n)
		}
	}
	for _, attr := range []string{"dataset.role", "dataset.pid", "dataset.applied", "dataset.lag", "dataset.ready", "dataset.kind", "dataset.duration", "dataset.reads", "dataset.rate", "dataset.done"} {
		if !strings.Contains(page, attr) {
			t.Errorf("the page sets no %s", attr)
		}
	}
}

// Like every other route: another method is a 405 with Allow: GET and the JSON error (HEAD
// included, as for /healthz), and it comes before the admin token; only "/" itself is the
// console, any other unknown path keeps its JSON 404.
func TestConsoleMethodsAndPaths(t *testing.T) {
	h := orchestratorHandler()
	for _, method := range []string{http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, "PROPFIND"} {
		for _, path := range []string{"/", "/healthz"} {
			rec := serve(h, method, path)
			if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET" {
				t.Errorf("%s %s: %d, Allow %q, want 405 with Allow GET", method, path, rec.Code, rec.Header().Get("Allow"))
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s %s: Content-Type %q", method, path, ct)
			}
		}
	}
	for _, path := range []string{"/index.html", "/console", "/x/", "/favicon.ico", "/api/v1/nothing"} {
		rec := serve(h, http.MethodGet, path)
		var body map[string]string
		if rec.Code != http.StatusNotFound || json.Unmarshal(rec.Body.Bytes(), &body) != nil || body["error"] == "" {
			t.Errorf("GET %s: %d %s, want the JSON 404", path, rec.Code, rec.Body)
		}
		if rec.Header().Get("Content-Security-Policy") != "" {
			t.Errorf("GET %s: has the console's policy", path)
		}
	}
}

// The console is open even when the crash APIs need the token: the page holds no secret.
func TestConsoleNeedsNoToken(t *testing.T) {
	h := orchestratorHandler()
	if rec := serve(h, http.MethodGet, "/"); rec.Code != http.StatusOK {
		t.Fatalf("GET /: %d", rec.Code)
	}
	if rec := serve(h, http.MethodPost, "/api/v1/crash/master"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("POST /api/v1/crash/master without the token: %d, want 401", rec.Code)
	}
}
