package natsq_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
)

// freeAddrs returns n loopback addresses nothing listens on (yet).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l.Addr().String())
		l.Close()
	}
	return out
}

// cluster starts n embedded servers joined by routes with the given token.
func cluster(t *testing.T, n int, token string) []*natsq.Server {
	t.Helper()
	routes := freeAddrs(t, n)
	var out []*natsq.Server
	for i := range n {
		s := &natsq.Server{StoreDir: t.TempDir(), Port: -1, Token: token, Name: fmt.Sprintf("node%d", i+1),
			Cluster: &natsq.Cluster{Listen: routes[i], Routes: routes}}
		if err := s.Open(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		out = append(out, s)
	}
	return out
}

// clusterConn starts n servers (cluster) with a token and connects to the first as name.
func clusterConn(t *testing.T, n int, name string) ([]*natsq.Server, *nats.Conn) {
	t.Helper()
	srvs := cluster(t, n, "secret-token")
	nc, err := srvs[0].Connect(name, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return srvs, nc
}

// untilFormed calls try, bounded to 2 s a time, until it succeeds or ctx ends: the meta group
// elects a leader once the routes are up, and until then JetStream answers "temporarily
// unavailable".
func untilFormed(t *testing.T, ctx context.Context, what string, try func(context.Context) error) {
	t.Helper()
	for {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := try(tctx)
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond) // polling the cluster's formation: no event to wait on
	}
}

// Three embedded servers form one JetStream cluster: a stream created through one with three
// replicas is stored on all three, and a message published through another is in it.
func TestClusterKeepsAStreamOnThreeServers(t *testing.T) {
	srvs, nc := clusterConn(t, 3, "test")
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var st jetstream.Stream
	untilFormed(t, ctx, "create R3 stream", func(ctx context.Context) (err error) {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}, Replicas: 3})
		return err
	})
	nc2, err := nats.Connect(srvs[2].ClientURL(), nats.Token("secret-token"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	if _, err := js2.Publish(ctx, "t", []byte("x")); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || len(info.Cluster.Replicas) != 2 || info.State.Msgs != 1 {
		t.Fatalf("stream: cluster %+v, %d messages; want a leader, 2 replicas and 1 message", info.Cluster, info.State.Msgs)
	}
	names := map[string]bool{info.Cluster.Leader: true}
	for _, r := range info.Cluster.Replicas {
		names[r.Name] = true
	}
	for _, s := range srvs {
		if !names[s.ServerName()] {
			t.Errorf("server %s holds no replica (%v)", s.ServerName(), names)
		}
	}
}

// A route that does not present the deployment's token is refused: nothing without it can
// join the cluster and read the log.
func TestClusterRefusesRoutesWithoutTheToken(t *testing.T) {
	srvs := cluster(t, 1, "right-token")
	addr := srvs[0].Cluster.Listen
	for _, pass := range []string{"wrong-token", ""} {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(conn)
		line, err := r.ReadString('\n') // the server's INFO
		if err != nil || !strings.HasPrefix(line, "INFO") {
			t.Fatalf("want INFO, got %q, %v", line, err)
		}
		fmt.Fprintf(conn, "CONNECT {\"user\":%q,\"pass\":%q,\"verbose\":false,\"pedantic\":false,\"name\":\"intruder\"}\r\nPING\r\n", natsq.RouteUser, pass)
		line, err = r.ReadString('\n')
		if err != nil && !errors.Is(err, net.ErrClosed) && line == "" {
			t.Fatalf("password %q: read: %v", pass, err)
		}
		if !strings.Contains(line, "Authorization Violation") {
			t.Errorf("password %q: got %q, want an authorization violation", pass, line)
		}
		conn.Close()
	}
}

// A cluster without a token is refused before it starts.
func TestClusterNeedsAToken(t *testing.T) {
	s := &natsq.Server{StoreDir: t.TempDir(), Port: -1, Cluster: &natsq.Cluster{Listen: freeAddrs(t, 1)[0]}}
	if err := s.Open(); err == nil || !strings.Contains(err.Error(), "token") {
		s.Close()
		t.Fatalf("Open without a token: %v, want an error about the token", err)
	}
}

// A connection that loses its server and reconnects to another says so, and a broker on any
// server of the cluster hears it: its callers send again what was in flight through the lost
// server instead of waiting out their attempt.
func TestReconnectionIsAnnouncedAcrossTheCluster(t *testing.T) {
	srvs, nc := clusterConn(t, 2, "orchestrator")
	b := natsq.FromConn(nc, testLogger())
	lost := b.Reconnects()
	// A worker on the second server, which knows the first as the one to go to next.
	w, err := natsq.Connect(srvs[1].ClientURL()+","+srvs[0].ClientURL(), "worker-1", nil, testLogger(),
		nats.Token("secret-token"), nats.DontRandomize())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	select {
	case <-lost:
		t.Fatal("a reconnection announced before any connection lost its server")
	default:
	}
	srvs[1].Close()
	select {
	case <-lost:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker's reconnection was not announced")
	}
	if got := w.ConnectedUrl(); got != srvs[0].ClientURL() {
		t.Fatalf("worker connected to %s, want %s", got, srvs[0].ClientURL())
	}
	// The next reconnection gets a channel of its own.
	select {
	case <-b.Reconnects():
		t.Fatal("the next channel is closed already")
	default:
	}
}

// A stream leader cut off from its followers goes on answering for the log as its leader
// until its lost-quorum check steps it down, 10 to 20 s later, while the followers may have
// elected another leader after 4 to 9 s. synclog.Log.Confirmed stops taking its answer once it
// has heard from no follower for the lease, while it still calls itself leader.
func TestConfirmedRefusesALeaderThatLostItsFollowers(t *testing.T) {
	srvs, nc := clusterConn(t, 3, "test")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var l *synclog.Log
	untilFormed(t, ctx, "create the log on three replicas", func(ctx context.Context) (err error) {
		l, err = synclog.Ensure(ctx, nc, 3)
		return err
	})
	if _, err := l.Append(ctx, 0, []byte("one")); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	leader := func() string {
		s, err := js.Stream(ctx, synclog.Stream)
		if err != nil {
			return ""
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return ""
		}
		return info.Cluster.Leader
	}
	// Move the log's leadership to the first server, whose followers are then stopped.
	for leader() != srvs[0].ServerName() {
		if ctx.Err() != nil {
			t.Fatal("the log's leadership did not move to the first server")
		}
		req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, srvs[0].ServerName())
		_, _ = nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+synclog.Stream, []byte(req))
		time.Sleep(200 * time.Millisecond) // a step-down's election: polled, no event here
	}
	if seq, err := l.Confirmed(ctx); err != nil || seq != 1 {
		t.Fatalf("Confirmed with every server up: %d, %v; want 1", seq, err)
	}
	srvs[1].Close()
	srvs[2].Close()
	cut := time.Now()
	for {
		// Confirmed asks again until its context ends: each look gets half a second.
		try, cancelTry := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := l.Confirmed(try)
		cancelTry()
		if errors.Is(err, synclog.ErrUnconfirmed) {
			break
		}
		if time.Since(cut) > 10*time.Second {
			t.Fatalf("Confirmed still answers 10 s after the followers stopped: %v", err)
		}
	}
	t.Logf("Confirmed refused %v after the followers stopped", time.Since(cut).Round(time.Millisecond))
	if got := leader(); got != srvs[0].ServerName() {
		t.Fatalf("the first server no longer calls itself leader (%q): the refusal shows nothing", got)
	}
	if seq, err := l.Last(ctx); err != nil || seq != 1 {
		t.Fatalf("Last, which takes the answer as it comes: %d, %v; want 1", seq, err)
	}
}
