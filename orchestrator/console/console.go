// Package console is the operator console: one HTML page, its CSS and JavaScript inline, that
// the orchestrator serves at GET / (issue 15). The page polls GET /api/v1/status every second
// and shows the orchestrator node(s), the sync log's head, the workers (id, PID, role, applied
// sequence, lag, ready), the recent events, db reads and writes per second (from two
// consecutive looks at the counters), and buttons that POST to /api/v1/crash/master and
// /api/v1/crash/slave with the admin token an operator typed (kept in the tab's
// sessionStorage, never in a URL).
//
// There is no build step and nothing external: the page is embedded in the binary, and its
// Content-Security-Policy lets it run only its own inline script and style (by their SHA-256
// hashes) and talk only to the origin that served it.
//
// The page's elements have stable ids and data attributes, which the browser tests read
// (consoletest has the helpers): #workers rows carry data-id, data-pid, data-role,
// data-applied, data-lag and data-ready; #events rows data-kind (and data-worker, data-pid,
// data-duration, data-reads); #nodes rows data-name and data-pid; #log-head data-seq;
// #reads-rate and #writes-rate data-rate; #master data-id and data-pid; #crash-result
// data-state (pending, ok, error) and data-status; #updated data-polls, the count of status
// answers rendered; #conn data-state (loading, ok, error).
package console

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

//go:embed console.html
var page []byte

// CSP is the Content-Security-Policy the page is served with: nothing but its own inline
// script and style (by hash), requests only to its own origin, no frames, forms, plugins or
// base URL.
var CSP = buildCSP(page)

// Page returns a copy of the page's HTML.
func Page() []byte { return bytes.Clone(page) }

// Handler serves the page. Register it for GET only (httpsvc.Methods), like every other
// route, so that another method gets a 405 with Allow.
func Handler() http.HandlerFunc {
	length := strconv.Itoa(len(page))
	return func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Length", length)
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		w.Write(page)
	}
}

// buildCSP hashes the page's one inline <script> and one inline <style>.
func buildCSP(html []byte) string {
	script := inline(html, "script")
	style := inline(html, "style")
	return strings.Join([]string{
		"default-src 'none'",
		"script-src " + hash(script),
		"style-src " + hash(style),
		"connect-src 'self'",
		"img-src data:",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}

// inline returns the text of the page's only <tag> element; the page is ours, so anything
// else is a programming error, caught by the package's tests at the latest.
func inline(html []byte, tag string) []byte {
	open, end := []byte("<"+tag+">"), []byte("</"+tag+">")
	if bytes.Count(html, open) != 1 || bytes.Count(html, end) != 1 {
		panic(fmt.Sprintf("console.html: want exactly one <%s> and one </%s>", tag, tag))
	}
	start := bytes.Index(html, open) + len(open)
	stop := bytes.Index(html, end)
	if stop < start {
		panic(fmt.Sprintf("console.html: </%s> before <%s>", tag, tag))
	}
	return html[start:stop]
}

func hash(b []byte) string {
	sum := sha256.Sum256(b)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}
