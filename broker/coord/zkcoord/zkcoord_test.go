package zkcoord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/coord/coordtest"
)

// testSession is the session timeout asked for in tests; the project's ZooKeeper
// (scripts/services.sh, tickTime 500 ms) grants 1 s.
const testSession = time.Second

func TestContract(t *testing.T) {
	servers := mustServers(t)
	root := freshRoot(t, servers)
	coordtest.Run(t, func(t *testing.T) coord.Coordinator {
		return mustOpen(t, servers, root, nil)
	}, func(t *testing.T, c coord.Coordinator) {
		cutterOf(t, c.(*ZK)).cut(true)
	})
}

func TestReconnectWithinTimeoutKeepsSession(t *testing.T) {
	servers := mustServers(t)
	root := freshRoot(t, servers)
	states := make(chan zk.State, 64)
	z := mustOpen(t, servers, root, func(z *ZK) {
		z.SessionTimeout = 4 * time.Second // the client redials after 1 s
		z.stateHook = func(s zk.State) {
			select {
			case states <- s:
			default:
			}
		}
	})
	other := mustOpen(t, servers, root, nil)
	ctx := t.Context()
	m := coord.Member{ID: "reconnecting", PID: 1}
	if err := z.Join(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := z.AcquireMaster(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	sid := z.conn.SessionID()
	drainStates(states)

	cutterOf(t, z).cut(false) // drop the connection, let it redial
	awaitState(t, states, zk.StateDisconnected)
	awaitState(t, states, zk.StateHasSession)

	select {
	case <-z.Lost():
		t.Fatal("Lost closed although the session was re-established")
	default:
	}
	if got := z.conn.SessionID(); got != sid {
		t.Errorf("session ID after reconnecting = %#x, want %#x", got, sid)
	}
	ms, err := other.Members(ctx)
	if err != nil || len(ms) != 1 || ms[0].ID != m.ID {
		t.Errorf("Members after reconnecting = %v, %v; want [%s]", ms, err, m.ID)
	}
	m.Ready = true
	if err := z.Update(ctx, m); err != nil {
		t.Errorf("Update after reconnecting: %v", err)
	}
	if err := z.AcquireMaster(ctx, m.ID); err != nil {
		t.Errorf("holder's AcquireMaster after reconnecting: %v", err)
	}
}

func TestExpiredSessionIsLostOnReconnect(t *testing.T) {
	servers := mustServers(t)
	root := freshRoot(t, servers)
	z := mustOpen(t, servers, root, func(z *ZK) {
		z.LostAfter = time.Hour // only the server's verdict ends the session
	})
	other := mustOpen(t, servers, root, nil)
	ctx := t.Context()
	if err := z.Join(ctx, coord.Member{ID: "expiring"}); err != nil {
		t.Fatal(err)
	}
	w, err := other.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := cutterOf(t, z)
	c.cut(true)
	deadline := time.After(coordtest.Timeout)
	for {
		ms, err := other.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		select {
		case <-w:
		case <-deadline:
			t.Fatal("the server did not expire the cut session")
		}
	}
	select {
	case <-z.Lost():
		t.Fatal("Lost closed before the client heard of the expiry")
	default:
	}
	c.heal()
	select {
	case <-z.Lost():
	case <-time.After(coordtest.Timeout):
		t.Fatal("Lost not closed after the server reported the session expired")
	}
	if _, err := z.Members(ctx); !errors.Is(err, coord.ErrSessionLost) {
		t.Errorf("Members after expiry: %v, want ErrSessionLost", err)
	}
}

func TestLostWaitsForTheGrantedTimeout(t *testing.T) {
	servers := mustServers(t)
	root := freshRoot(t, servers)
	z := mustOpen(t, servers, root, func(z *ZK) { z.SessionTimeout = time.Hour })
	granted := time.Duration(z.granted.Load())
	if granted <= 0 || granted >= time.Hour {
		t.Fatalf("granted session timeout = %v, want the server's maximum (below 1h)", granted)
	}
	if got := z.lostAfterDuration(); got != granted {
		t.Errorf("Lost after %v of disconnection, want the granted %v", got, granted)
	}
	// A lock holder counts with what was granted, not what was asked (orchestrator.holdUntil).
	if got := z.Granted(); got != granted {
		t.Errorf("Granted() = %v, want %v", got, granted)
	}
}

func TestLayout(t *testing.T) {
	servers := mustServers(t)
	root := freshRoot(t, servers)
	z := mustOpen(t, servers, root, nil)
	ctx := t.Context()
	if err := z.Join(ctx, coord.Member{ID: "w1", PID: 9, Role: coord.RoleSlave, Applied: 3, Ready: true}); err != nil {
		t.Fatal(err)
	}
	if err := z.AcquireMaster(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if err := z.Designate(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	admin := mustAdmin(t, servers)
	for _, tc := range []struct {
		path, data string
		ephemeral  bool
	}{
		{root + "/members/w1", `{"id":"w1","pid":9,"role":"slave","applied_seq":3,"ready":true}`, true},
		{root + "/master", "w1", true},
		{root + "/designated", "w2", false},
	} {
		data, st, err := admin.Get(tc.path)
		if err != nil {
			t.Errorf("get %s: %v", tc.path, err)
			continue
		}
		if string(data) != tc.data {
			t.Errorf("%s = %s, want %s", tc.path, data, tc.data)
		}
		if got := st.EphemeralOwner != 0; got != tc.ephemeral {
			t.Errorf("%s ephemeral = %v, want %v", tc.path, got, tc.ephemeral)
		}
	}
}

func TestOpenFailsWithoutServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	z := New([]string{addr}, "")
	z.Logger = testLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := z.Open(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open without a server: %v, want a deadline error", err)
	}
	if err := z.Close(); err != nil {
		t.Errorf("Close after a failed Open: %v", err)
	}
}

func TestOpenRejectsInvalidRoot(t *testing.T) {
	for _, root := range []string{"relative", "/", "/a/", "/a//b"} {
		z := New([]string{"127.0.0.1:2181"}, root)
		if err := z.Open(t.Context()); err == nil || !strings.Contains(err.Error(), "invalid root") {
			t.Errorf("Open with root %q: %v, want invalid root", root, err)
		}
	}
}

// ---------------------------------------------------------------- helpers

// mustServers returns the ZooKeeper to test against, failing when there is none.
func mustServers(t *testing.T) []string {
	t.Helper()
	env := os.Getenv("RIDESHARE_ZK")
	if env == "" {
		env = "127.0.0.1:2181"
	}
	servers := strings.Split(env, ",")
	var errs []error
	for _, s := range servers {
		c, err := net.DialTimeout("tcp", s, 2*time.Second)
		if err == nil {
			c.Close()
			return servers
		}
		errs = append(errs, err)
	}
	if os.Getenv("RIDESHARE_SKIP_ZK") == "1" {
		t.Skipf("ZooKeeper not reachable at %s (RIDESHARE_SKIP_ZK=1): %v", env, errors.Join(errs...))
	}
	t.Fatalf("ZooKeeper not reachable at %s: %v\n"+
		"Start it with `make services` (or, as root, scripts/services.sh), point RIDESHARE_ZK at "+
		"another host:port, or set RIDESHARE_SKIP_ZK=1 to skip these tests.", env, errors.Join(errs...))
	return nil
}

// mustOpen opens a session on root through a cutter, closed when the test ends.
func mustOpen(t *testing.T, servers []string, root string, configure func(*ZK)) *ZK {
	t.Helper()
	z := New(servers, root)
	z.SessionTimeout = testSession
	z.Logger = testLogger(t)
	c := &cutter{}
	z.dialer = c.dial
	if configure != nil {
		configure(z)
	}
	cutters.Store(z, c)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := z.Open(ctx); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := z.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		cutters.Delete(z)
	})
	return z
}

// freshRoot returns a root of its own for the test, deleted when it ends.
func freshRoot(t *testing.T, servers []string) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	root := "/rideshare-test-" + hex.EncodeToString(b)
	admin := mustAdmin(t, servers)
	t.Cleanup(func() { // registered after mustAdmin's: runs while admin is open
		if err := deleteAll(admin, root); err != nil {
			t.Errorf("delete %s: %v", root, err)
		}
	})
	return root
}

// mustAdmin is a plain client connection for inspecting and cleaning up.
func mustAdmin(t *testing.T, servers []string) *zk.Conn {
	t.Helper()
	conn, _, err := zk.Connect(servers, 5*time.Second, zk.WithLogger(zkLogger{l: testLogger(t)}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

func deleteAll(conn *zk.Conn, p string) error {
	children, _, err := conn.Children(p)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, c := range children {
		if err := deleteAll(conn, p+"/"+c); err != nil {
			return err
		}
	}
	if err := conn.Delete(p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return err
	}
	return nil
}

// cutter dials ZooKeeper and can cut the connections abruptly, as a crash or a partition does:
// the server keeps the session until it expires.
type cutter struct {
	mu     sync.Mutex
	refuse bool
	conns  []net.Conn
}

var cutters sync.Map // *ZK → *cutter

func cutterOf(t *testing.T, z *ZK) *cutter {
	t.Helper()
	c, ok := cutters.Load(z)
	if !ok {
		t.Fatal("session not opened by mustOpen")
	}
	return c.(*cutter)
}

func (c *cutter) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refuse {
		return nil, errors.New("test: connection cut")
	}
	conn, err := net.DialTimeout(network, addr, timeout)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

// cut closes the open connections; with refuse, later dials fail until heal.
func (c *cutter) cut(refuse bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refuse = refuse
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

func (c *cutter) heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refuse = false
}

func drainStates(ch <-chan zk.State) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func awaitState(t *testing.T, ch <-chan zk.State, want zk.State) {
	t.Helper()
	deadline := time.After(coordtest.Timeout)
	for {
		select {
		case s := <-ch:
			if s == want {
				return
			}
		case <-deadline:
			t.Fatalf("session state %v not reached", want)
		}
	}
}

// testLogger logs to the test's output until the test ends (the ZooKeeper client may log from
// its goroutines a moment after).
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{w: t.Output()}
	t.Cleanup(w.stop) // registered before the sessions' Close: runs after it
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	w    io.Writer
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	return w.w.Write(p)
}

func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
