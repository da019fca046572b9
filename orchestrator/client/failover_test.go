package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rideshare/rideshare"
)

// node is a fake orchestrator node on a real HTTP server: it answers status (200 with a
// plausible answer by default), or breaks the connection after reading the request, and
// records what it was sent.
type node struct {
	srv *httptest.Server

	mu       sync.Mutex
	status   int  // 0: 200
	hangUp   bool // close the connection without answering
	stall    bool // never answer (a stopped process whose kernel took the connection)
	requests []string
	ids      []string // request_id of each write
}

func mustNode(tb testing.TB, status int) *node {
	tb.Helper()
	n := &node{status: status}
	n.srv = httptest.NewServer(http.HandlerFunc(n.serve))
	tb.Cleanup(n.srv.Close)
	return n
}

func (n *node) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	n.mu.Lock()
	n.requests = append(n.requests, r.URL.Path)
	if r.URL.Path == "/api/v1/db/write" {
		var wr rideshare.Write
		_ = json.Unmarshal(body, &wr)
		n.ids = append(n.ids, wr.RequestID)
	}
	status, hangUp, stall := n.status, n.hangUp, n.stall
	n.mu.Unlock()
	if stall {
		<-r.Context().Done() // until the client gives up
		return
	}
	if hangUp {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if status != 0 && status != http.StatusOK {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":"node says ` + http.StatusText(status) + `"}`))
		return
	}
	switch r.URL.Path {
	case "/api/v1/db/write":
		_, _ = w.Write([]byte(`{"seq":7,"id":3,"affected":1}`))
	case "/api/v1/db/read":
		_, _ = w.Write([]byte(`{"rows":[{"id":3,"username":"alice"}],"seq":7}`))
	case "/api/v1/db/backup":
		w.Header().Set("X-Rideshare-Seq", "7")
		_, _ = w.Write([]byte("a copy"))
	default:
		_, _ = w.Write([]byte(`{}`))
	}
}

func (n *node) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.requests)
}

func (n *node) requestIDs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.ids...)
}

// refusedURL is the base URL of a port nothing listens on (it was, a moment ago).
func refusedURL(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// dialCounter counts the client's dials per address.
type dialCounter struct {
	mu    sync.Mutex
	dials map[string]int
}

func countDials(c *Client) *dialCounter {
	d := &dialCounter{dials: map[string]int{}}
	t := c.HTTP.Transport.(*http.Transport)
	dial := t.DialContext
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d.mu.Lock()
		d.dials[addr]++
		d.mu.Unlock()
		return dial(ctx, network, addr)
	}
	return d
}

func (d *dialCounter) of(baseURL string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials[strings.TrimPrefix(baseURL, "http://")]
}

func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func TestFailoverPassesARefusedNode(t *testing.T) {
	down := refusedURL(t)
	good := mustNode(t, 0)
	c := New(down+","+good.srv.URL, "")
	dials := countDials(c)
	ctx := testContext(t)

	rows, err := c.Read(ctx, rideshare.Read{Table: "users"})
	if err != nil || len(rows) != 1 || rows[0]["username"] != "alice" {
		t.Fatalf("read: %v %v", rows, err)
	}
	res, err := c.Write(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "bob"}})
	if err != nil || res.Seq != 7 {
		t.Fatalf("write: %+v %v", res, err)
	}
	if err := c.Clear(ctx); err != nil {
		t.Fatalf("clear: %v", err)
	}
	if got := good.count(); got != 3 {
		t.Errorf("the good node got %d requests, want 3", got)
	}
	if got := dials.of(down); got != 1 {
		t.Errorf("the refused node was dialed %d times, want 1: later calls must go straight to the good one", got)
	}
}

func TestFailoverPassesANodeAnswering503(t *testing.T) {
	busy := mustNode(t, http.StatusServiceUnavailable)
	good := mustNode(t, 0)
	c := New(busy.srv.URL+","+good.srv.URL, "")
	ctx := testContext(t)

	if _, err := c.Read(ctx, rideshare.Read{Table: "users"}); err != nil {
		t.Fatalf("read: %v", err)
	}
	if _, err := c.Write(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "bob"}}); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.Clear(ctx); err != nil {
		t.Fatalf("clear: %v", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if busy.count() != 1 || good.count() != 4 {
		t.Errorf("the 503 node got %d requests, the good one %d; want 1 and 4", busy.count(), good.count())
	}
}

func TestWritesKeepOneRequestIDAcrossNodes(t *testing.T) {
	insert := rideshare.Write{Table: "users", Insert: map[string]any{"username": "bob"}}

	t.Run("a fresh id, the same on the retry", func(t *testing.T) {
		busy, good := mustNode(t, http.StatusServiceUnavailable), mustNode(t, 0)
		c := New(busy.srv.URL+","+good.srv.URL, "")
		if _, err := c.Write(testContext(t), insert); err != nil {
			t.Fatal(err)
		}
		a, b := busy.requestIDs(), good.requestIDs()
		if len(a) != 1 || len(b) != 1 || a[0] != b[0] || !strings.HasPrefix(a[0], "c-") || len(a[0]) > rideshare.MaxRequestID {
			t.Errorf("request ids: first node %q, second %q; want one c-… id on both", a, b)
		}
	})
	t.Run("its own id, kept on the retry", func(t *testing.T) {
		busy, good := mustNode(t, http.StatusServiceUnavailable), mustNode(t, 0)
		c := New(busy.srv.URL+","+good.srv.URL, "")
		w := insert
		w.RequestID = "mine-1"
		if _, err := c.Write(testContext(t), w); err != nil {
			t.Fatal(err)
		}
		if a, b := busy.requestIDs(), good.requestIDs(); len(a) != 1 || len(b) != 1 || a[0] != "mine-1" || b[0] != "mine-1" {
			t.Errorf("request ids: first node %q, second %q; want mine-1 on both", a, b)
		}
	})
	t.Run("different writes, different ids", func(t *testing.T) {
		good := mustNode(t, 0)
		c := New(good.srv.URL, "")
		ctx := testContext(t)
		for range 2 {
			if _, err := c.Write(ctx, insert); err != nil {
				t.Fatal(err)
			}
		}
		if ids := good.requestIDs(); len(ids) != 2 || ids[0] == "" || ids[0] == ids[1] {
			t.Errorf("request ids %q, want two different ones", ids)
		}
	})
}

// A connection that breaks after the request was sent: reads and writes (which carry a
// request id) go on to the next node, clear does not.
func TestFailoverAfterABrokenConnection(t *testing.T) {
	setup := func(t *testing.T) (*node, *node, *Client) {
		broken, good := mustNode(t, 0), mustNode(t, 0)
		broken.hangUp = true
		return broken, good, New(broken.srv.URL+","+good.srv.URL, "")
	}
	t.Run("a write goes on with its request id", func(t *testing.T) {
		broken, good, c := setup(t)
		if _, err := c.Write(testContext(t), rideshare.Write{Table: "users", Insert: map[string]any{"username": "bob"}}); err != nil {
			t.Fatal(err)
		}
		if a, b := broken.requestIDs(), good.requestIDs(); len(a) != 1 || len(b) != 1 || a[0] != b[0] || a[0] == "" {
			t.Errorf("request ids: broken node %q, good %q; want the same id on both", a, b)
		}
	})
	t.Run("a read goes on", func(t *testing.T) {
		broken, good, c := setup(t)
		if _, err := c.Read(testContext(t), rideshare.Read{Table: "users"}); err != nil {
			t.Fatal(err)
		}
		if broken.count() != 1 || good.count() != 1 {
			t.Errorf("broken node got %d requests, good %d; want 1 and 1", broken.count(), good.count())
		}
	})
	t.Run("a clear stops", func(t *testing.T) {
		broken, good, c := setup(t)
		err := c.Clear(testContext(t))
		if !errors.Is(err, rideshare.ErrUnavailable) {
			t.Errorf("clear: %v, want ErrUnavailable", err)
		}
		if broken.count() != 1 || good.count() != 0 {
			t.Errorf("broken node got %d requests, good %d; want 1 and 0", broken.count(), good.count())
		}
	})
}

func TestAnswersOtherThan503StayWithTheirNode(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   error
	}{
		{http.StatusBadRequest, rideshare.ErrInvalid},
		{http.StatusConflict, rideshare.ErrConstraint},
		{http.StatusInternalServerError, rideshare.ErrInternal},
		{http.StatusNotFound, rideshare.ErrInternal},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			first, second := mustNode(t, tc.status), mustNode(t, 0)
			c := New(first.srv.URL+","+second.srv.URL, "")
			ctx := testContext(t)
			if _, err := c.Write(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "bob"}}); !errors.Is(err, tc.want) {
				t.Errorf("write: %v, want %v", err, tc.want)
			}
			if _, err := c.Read(ctx, rideshare.Read{Table: "users"}); !errors.Is(err, tc.want) {
				t.Errorf("read: %v, want %v", err, tc.want)
			}
			if first.count() != 2 || second.count() != 0 {
				t.Errorf("first node got %d requests, second %d; want 2 and 0", first.count(), second.count())
			}
		})
	}
}

func TestEveryNodeDownIsUnavailableAtTheDeadline(t *testing.T) {
	for name, urls := range map[string]func(t *testing.T) string{
		"refused": func(t *testing.T) string { return refusedURL(t) + "," + refusedURL(t) },
		"503": func(t *testing.T) string {
			return mustNode(t, http.StatusServiceUnavailable).srv.URL + "," + mustNode(t, http.StatusServiceUnavailable).srv.URL
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := New(urls(t), "")
			for op, call := range map[string]func(ctx context.Context) error{
				"write": func(ctx context.Context) error {
					_, err := c.Write(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "bob"}})
					return err
				},
				"read":  func(ctx context.Context) error { _, err := c.Read(ctx, rideshare.Read{Table: "users"}); return err },
				"clear": c.Clear,
				"ping":  c.Ping,
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				err := call(ctx)
				cancel()
				if !errors.Is(err, rideshare.ErrUnavailable) {
					t.Errorf("%s: %v, want ErrUnavailable", op, err)
				}
			}
		})
	}
}

// Without a deadline of its own a call is bounded by the client's Timeout.
func TestTimeoutBoundsACallWithoutDeadline(t *testing.T) {
	c := New(refusedURL(t), "")
	c.Timeout = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() { _, err := c.Read(context.Background(), rideshare.Read{Table: "users"}); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, rideshare.ErrUnavailable) {
			t.Errorf("read: %v, want ErrUnavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a call without a deadline never gave up")
	}
}

func TestASingleURLStillWorks(t *testing.T) {
	var auth []string
	var mu sync.Mutex
	good := mustNode(t, 0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		good.serve(w, r)
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL+"/", "tok")
	if len(c.URLs) != 1 || c.URLs[0] != srv.URL {
		t.Fatalf("URLs %q, want [%s]", c.URLs, srv.URL)
	}
	ctx := testContext(t)
	if res, err := c.Write(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "bob"}}); err != nil || res.ID != 3 {
		t.Errorf("write: %+v %v", res, err)
	}
	if rows, err := c.Read(ctx, rideshare.Read{Table: "users"}); err != nil || len(rows) != 1 || rows[0]["id"] != int64(3) {
		t.Errorf("read: %v %v", rows, err)
	}
	if err := c.Clear(ctx); err != nil {
		t.Errorf("clear: %v", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Errorf("ping: %v", err)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if seq, err := c.Backup(ctx, path); err != nil || seq != 7 {
		t.Errorf("backup: %d %v", seq, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, a := range auth[:3] {
		if a != "Bearer tok" {
			t.Errorf("request %d: Authorization %q", i, a)
		}
	}
}

func TestNewSplitsAList(t *testing.T) {
	c := New(" http://a:8083/ , http://b:8083,,", "")
	if want := []string{"http://a:8083", "http://b:8083"}; strings.Join(c.URLs, " ") != strings.Join(want, " ") {
		t.Errorf("URLs %q, want %q", c.URLs, want)
	}
}

func TestBackupPassesARefusedNode(t *testing.T) {
	good := mustNode(t, 0)
	c := New(refusedURL(t)+","+good.srv.URL, "")
	path := filepath.Join(t.TempDir(), "backup.db")
	if seq, err := c.Backup(testContext(t), path); err != nil || seq != 7 {
		t.Fatalf("backup: %d %v", seq, err)
	}
}

// Many calls at once while the first node is down: each lands on the good node (run with -race).
func TestConcurrentFailover(t *testing.T) {
	good := mustNode(t, 0)
	c := New(refusedURL(t)+","+good.srv.URL, "")
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 40 {
		wg.Go(func() {
			if _, err := c.Write(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "bob"}}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ids := good.requestIDs(); len(ids) != 40 {
		t.Errorf("the good node got %d writes, want 40", len(ids))
	}
}

// A node that takes the connection and never answers (SIGSTOP: its kernel still accepts) holds
// one attempt for AttemptTimeout, not the call's whole timeout: the write goes on, with its
// request id, to the next node, and the calls after it go there first.
func TestFailoverPassesANodeThatNeverAnswers(t *testing.T) {
	stalled, good := mustNode(t, 0), mustNode(t, 0)
	stalled.stall = true
	c := New(stalled.srv.URL+","+good.srv.URL, "")
	if c.AttemptTimeout != DefaultAttemptTimeout {
		t.Fatalf("AttemptTimeout %v with two nodes, want %v", c.AttemptTimeout, DefaultAttemptTimeout)
	}
	c.AttemptTimeout = 200 * time.Millisecond // the call's own timeout stays 30 s
	if _, err := c.Write(testContext(t), rideshare.Write{Table: "users", Insert: map[string]any{"username": "bob"}}); err != nil {
		t.Fatal(err)
	}
	if a, b := stalled.requestIDs(), good.requestIDs(); len(a) != 1 || len(b) != 1 || a[0] != b[0] {
		t.Errorf("request ids: stalled node %q, good %q; want the same id on both", a, b)
	}
	if _, err := c.Read(testContext(t), rideshare.Read{Table: "users"}); err != nil {
		t.Fatal(err)
	}
	if stalled.count() != 1 || good.count() != 2 {
		t.Errorf("stalled node got %d requests, good %d; want 1 and 2", stalled.count(), good.count())
	}
	if one := New(good.srv.URL, ""); one.AttemptTimeout != 0 {
		t.Errorf("AttemptTimeout %v with one node, want none (no other node to try)", one.AttemptTimeout)
	}
}
