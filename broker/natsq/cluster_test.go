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

// Three embedded servers form one JetStream cluster: a stream created through one with three
// replicas is stored on all three, and a message published through another is in it.
func TestClusterKeepsAStreamOnThreeServers(t *testing.T) {
	srvs := cluster(t, 3, "secret-token")
	nc, err := srvs[0].Connect("test", testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The meta group elects a leader once the routes are up: until then JetStream answers
	// "temporarily unavailable".
	var st jetstream.Stream
	for {
		try, cancelTry := context.WithTimeout(ctx, 2*time.Second)
		st, err = js.CreateStream(try, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}, Replicas: 3})
		cancelTry()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("create R3 stream: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling the cluster's formation: no event to wait on
	}
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
