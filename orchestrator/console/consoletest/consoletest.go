// Package consoletest drives the operator console (package console) in a real headless
// Chromium, for tests: the console package's own browser test against a fake API, and an
// end-to-end test against a real `rideshare up` stack. It is a separate package so that the
// orchestrator's binary does not link the browser driver.
//
// A test gets a browser tab with NewBrowser, opens the console with Open, and then reads
// what the page shows (Snapshot, WaitFor), types the admin token (SetToken), presses the
// crash buttons (Crash) and saves a picture of it (Screenshot). Everything is read from the
// DOM, through the ids and data attributes that package console documents.
//
// NewBrowser skips the test when no Chromium is installed, unless RIDESHARE_REQUIRE_BROWSER
// is set (as `make test` does), when it fails instead.
package consoletest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Environment variables that steer the helpers.
const (
	// EnvRequireBrowser, set to anything, makes NewBrowser fail rather than skip when no
	// browser is found: CI must not pass by skipping the browser tests.
	EnvRequireBrowser = "RIDESHARE_REQUIRE_BROWSER"
	// EnvBrowser names the browser binary to use, instead of looking for one on PATH.
	EnvBrowser = "RIDESHARE_BROWSER"
)

// browserNames are the binaries BrowserAvailable looks for on PATH, Debian's first.
var browserNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"}

// BrowserAvailable returns the path of a Chromium-family browser: the one RIDESHARE_BROWSER
// names, else the first of chromium, chromium-browser, google-chrome, google-chrome-stable
// and headless-shell found on PATH. Debian's is the `chromium` package.
func BrowserAvailable() (path string, ok bool) {
	if p := os.Getenv(EnvBrowser); p != "" {
		if path, err := exec.LookPath(p); err == nil {
			return path, true
		}
		return "", false
	}
	for _, name := range browserNames {
		if path, err := exec.LookPath(name); err == nil {
			return path, true
		}
	}
	return "", false
}

// BrowserRequired reports whether RIDESHARE_REQUIRE_BROWSER is set.
func BrowserRequired() bool { return os.Getenv(EnvRequireBrowser) != "" }

// AllocatorOptions are the flags the browser is started with: chromedp's defaults (headless,
// no first-run, /dev/shm not used, …), the binary at path, no sandbox (tests run as root,
// and Chromium refuses to start its sandbox as root) and a 1280×900 window.
func AllocatorOptions(path string) []chromedp.ExecAllocatorOption {
	return append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("disable-gpu", true),
	)
}

// NewBrowser starts a headless browser for tb and returns the context of a tab in it, to
// pass to Open or to chromedp. The browser stops when tb ends. With no browser installed, tb
// is skipped with the reason, or fails if RIDESHARE_REQUIRE_BROWSER is set.
func NewBrowser(tb testing.TB) context.Context {
	tb.Helper()
	path, ok := BrowserAvailable()
	if !ok {
		where := "none of " + strings.Join(browserNames, ", ") + " on PATH"
		if p := os.Getenv(EnvBrowser); p != "" {
			where = EnvBrowser + "=" + p + " not found"
		}
		if BrowserRequired() {
			tb.Fatalf("no browser (%s) and %s is set: install Debian's chromium (scripts/services.sh does)", where, EnvRequireBrowser)
		}
		tb.Skipf("no browser (%s): install Debian's chromium (scripts/services.sh does), or set %s to a Chromium binary; set %s=1 to fail instead of skipping", where, EnvBrowser, EnvRequireBrowser)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), AllocatorOptions(path)...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	tb.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser now, so that a broken install fails here, with the reason.
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("start the browser %s: %v", path, err)
	}
	return ctx
}

// Console is the console page open in a browser tab.
type Console struct {
	ctx context.Context
	url string

	mu       sync.Mutex
	problems []string
}

// Open loads the console at url (the orchestrator's base URL; the page is at /) in the tab
// of ctx, and waits up to timeout for it to render a first status. If it renders none, the
// error has what the page reported (a script error, a policy violation), if anything.
func Open(ctx context.Context, url string, timeout time.Duration) (*Console, error) {
	c := &Console{ctx: ctx, url: strings.TrimSuffix(url, "/") + "/"}
	messages := chromedp.Console(ctx) // subscribed now: nothing the page says is missed
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// A refused request (a 401 from a crash without the token, a 503 status) is
			// logged by the browser as a network error: the page shows those itself.
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
				c.mu.Lock()
				c.problems = append(c.problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
				c.mu.Unlock()
			}
		}
	}()
	if err := c.run(timeout, chromedp.Navigate(c.url)); err != nil {
		return nil, fmt.Errorf("open %s: %w", c.url, err)
	}
	if _, err := c.WaitFor(timeout, "a first status rendered", func(s Snapshot) bool { return s.Polls > 0 }); err != nil {
		if p := c.Problems(); len(p) > 0 {
			err = fmt.Errorf("%w; the page reported: %s", err, strings.Join(p, "; "))
		}
		return nil, err
	}
	return c, nil
}

// URL is the page's address.
func (c *Console) URL() string { return c.url }

// Context is the tab's context, for chromedp actions of a test's own.
func (c *Console) Context() context.Context { return c.ctx }

// Problems lists what went wrong in the page since Open: uncaught exceptions and the
// browser's error messages (a Content-Security-Policy violation among them), but not the
// network errors of refused requests, which the page shows.
func (c *Console) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.problems...)
}

func (c *Console) run(timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// Worker is a row of the workers table.
type Worker struct {
	ID      string `json:"id"`
	PID     int    `json:"pid"`
	Role    string `json:"role"`
	Applied uint64 `json:"applied"`
	Lag     uint64 `json:"lag"`
	Ready   bool   `json:"ready"`
	// Text is the row as shown, cells separated by tabs.
	Text string `json:"text"`
}

// Node is a row of the orchestrator nodes table.
type Node struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	URL  string `json:"url"`
	Up   bool   `json:"up"`
}

// Event is a row of the recent events, newest first.
type Event struct {
	Kind     string   `json:"kind"`
	Worker   string   `json:"worker"`
	PID      int      `json:"pid"`
	Duration *float64 `json:"duration"` // a failover's, in seconds
	Reads    *float64 `json:"reads"`    // a scaling decision's read count
	Text     string   `json:"text"`
}

// CrashResult is what the page says of the last crash request.
type CrashResult struct {
	State  string `json:"state"`  // "", "pending", "ok" or "error"
	Status int    `json:"status"` // the HTTP status, 0 if the request failed
	Text   string `json:"text"`
	Done   int    `json:"done"` // crash requests finished since the page loaded
}

// Snapshot is everything the page shows, read from the DOM at once.
type Snapshot struct {
	Conn       string      `json:"conn"` // loading, ok, error
	ConnText   string      `json:"conn_text"`
	Polls      int         `json:"polls"` // status answers rendered
	LogHead    string      `json:"log_head"`
	ReadsRate  *float64    `json:"reads_rate"` // nil until two statuses were seen
	WritesRate *float64    `json:"writes_rate"`
	ReadsText  string      `json:"reads_text"`
	WritesText string      `json:"writes_text"`
	MasterID   string      `json:"master_id"`
	MasterPID  int         `json:"master_pid"`
	Nodes      []Node      `json:"nodes"`
	Workers    []Worker    `json:"workers"`
	Events     []Event     `json:"events"`
	Crash      CrashResult `json:"crash"`
	Token      string      `json:"token"` // the token field's value
}

// Master returns the worker whose row says master.
func (s Snapshot) Master() (Worker, bool) {
	for _, w := range s.Workers {
		if w.Role == "master" {
			return w, true
		}
	}
	return Worker{}, false
}

// Worker returns the row of the worker with this ID.
func (s Snapshot) Worker(id string) (Worker, bool) {
	for _, w := range s.Workers {
		if w.ID == id {
			return w, true
		}
	}
	return Worker{}, false
}

// snapshotJS reads the page into a Snapshot, as JSON.
const snapshotJS = `(() => {
  const $ = (id) => document.getElementById(id);
  const num = (v) => (v === undefined || v === '' ? 0 : Number(v));
  const opt = (v) => (v === undefined || v === '' ? null : Number(v));
  const cells = (tr) => Array.from(tr.cells, (td) => td.textContent).join('\t');
  const rows = (id) => Array.from($(id).tBodies[0].rows).filter((tr) => !tr.classList.contains('empty'));
  const cr = $('crash-result');
  return JSON.stringify({
    conn: $('conn').dataset.state || '',
    conn_text: $('conn').textContent,
    polls: num($('updated').dataset.polls),
    log_head: $('log-head').textContent,
    reads_rate: opt($('reads-rate').dataset.rate),
    writes_rate: opt($('writes-rate').dataset.rate),
    reads_text: $('reads-rate').textContent,
    writes_text: $('writes-rate').textContent,
    master_id: $('master').dataset.id || '',
    master_pid: num($('master').dataset.pid),
    nodes: rows('nodes').map((tr) => ({ name: tr.dataset.name, pid: num(tr.dataset.pid), url: tr.querySelector('.url').textContent, up: tr.dataset.up === 'true' })),
    workers: rows('workers').map((tr) => ({ id: tr.dataset.id, pid: num(tr.dataset.pid), role: tr.dataset.role,
      applied: num(tr.dataset.applied), lag: num(tr.dataset.lag), ready: tr.dataset.ready === 'true', text: cells(tr) })),
    events: rows('events').map((tr) => ({ kind: tr.dataset.kind, worker: tr.dataset.worker || '', pid: num(tr.dataset.pid),
      duration: opt(tr.dataset.duration), reads: opt(tr.dataset.reads), text: cells(tr) })),
    crash: { state: cr.dataset.state || '', status: num(cr.dataset.status), text: cr.textContent, done: num(cr.dataset.done) },
    token: $('token').value,
  });
})()`

// Snapshot reads what the page shows now.
func (c *Console) Snapshot() (Snapshot, error) {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](snapshotJS))
	if err != nil {
		return Snapshot{}, fmt.Errorf("read the console: %w", err)
	}
	var s Snapshot
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return Snapshot{}, fmt.Errorf("read the console: %w", err)
	}
	return s, nil
}

// WaitFor reads the page every 50 ms until cond holds, for up to timeout; the error says
// what was awaited and what the page showed last.
func (c *Console) WaitFor(timeout time.Duration, what string, cond func(Snapshot) bool) (Snapshot, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := c.Snapshot()
		if err == nil && cond(s) {
			return s, nil
		}
		if time.Now().After(deadline) || c.ctx.Err() != nil {
			if err != nil {
				return s, fmt.Errorf("waiting %v for %s: %w", timeout, what, err)
			}
			return s, fmt.Errorf("waiting %v for %s: the page shows %s", timeout, what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// String is the snapshot in short, for failure messages.
func (s Snapshot) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "conn %s (%q), %d polls, log head %s, reads/s %s, writes/s %s, master %q pid %d;",
		s.Conn, s.ConnText, s.Polls, s.LogHead, s.ReadsText, s.WritesText, s.MasterID, s.MasterPID)
	for _, w := range s.Workers {
		fmt.Fprintf(&b, " [%s]", w.Text)
	}
	fmt.Fprintf(&b, "; %d events", len(s.Events))
	if len(s.Events) > 0 {
		fmt.Fprintf(&b, ", newest [%s]", s.Events[0].Text)
	}
	fmt.Fprintf(&b, "; crash %s %d %q", s.Crash.State, s.Crash.Status, s.Crash.Text)
	return b.String()
}

// SetToken types token into the admin token field (replacing what it held), as an operator
// would; the page keeps it in sessionStorage.
func (c *Console) SetToken(token string) error {
	const clear = `(() => { const t = document.getElementById('token'); t.value = ''; t.dispatchEvent(new Event('input')); })()`
	steps := []chromedp.Action[chromedp.Void]{chromedp.Evaluate[chromedp.Void](clear)}
	if token != "" {
		steps = append(steps, chromedp.SendKeys(chromedp.ID("token"), token))
	}
	if err := c.run(10*time.Second, steps...); err != nil {
		return fmt.Errorf("type the token: %w", err)
	}
	return nil
}

// Crash presses "Crash master" (target "master") or "Crash slave" ("slave") and waits up to
// timeout for the page to show the answer, which it returns: State "ok", or "error" with the
// API's reason in Text.
func (c *Console) Crash(target string, timeout time.Duration) (CrashResult, error) {
	if target != "master" && target != "slave" {
		return CrashResult{}, errors.New(`consoletest: crash "master" or "slave"`)
	}
	before, err := c.Snapshot()
	if err != nil {
		return CrashResult{}, err
	}
	if err := c.run(timeout, chromedp.Click(chromedp.ID("crash-"+target))); err != nil {
		return CrashResult{}, fmt.Errorf("press crash %s: %w", target, err)
	}
	s, err := c.WaitFor(timeout, "the answer to crash "+target, func(s Snapshot) bool { return s.Crash.Done > before.Crash.Done })
	return s.Crash, err
}

// Screenshot saves a PNG of the whole page at path, the mouse moved off the buttons first.
func (c *Console) Screenshot(path string) error {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.MouseEvent(chromedp.MouseMoved, 1, 1)); err != nil {
		return fmt.Errorf("screenshot: move the mouse away: %w", err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	return os.WriteFile(path, png, 0o644)
}
