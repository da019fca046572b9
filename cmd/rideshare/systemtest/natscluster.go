package systemtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
)

// NATSCluster is a JetStream cluster of nats-server processes on loopback, for the tests of
// `--nats`: clients present Token, routes their own credentials.
type NATSCluster struct {
	Token string
	nodes []*natsNode
	t     *testing.T
	bin   string
}

// natsServerBin is the nats-server the cluster runs: $RIDESHARE_NATS_SERVER, else Debian's
// package (nats-server on PATH, else /usr/sbin/nats-server; scripts/services.sh installs it:
// 2.9.10 on bookworm, the oldest server `--nats` is tested against), else nats-server built
// from the module the project embeds (github.com/nats-io/nats-server/v2 in go.mod, the
// server `rideshare up` runs). With RIDESHARE_REQUIRE_NATS_SERVER set (`make test`) a missing
// Debian package is an error, not a reason to build. A 2.9 server ignores what came later (a
// consumer's filter_subjects: the log's catch-up reads through a consumer were all refused,
// and workers that replaced lost ones never got ready); docs/DESIGN.md.
func natsServerBin(t *testing.T) (string, error) {
	if b := os.Getenv("RIDESHARE_NATS_SERVER"); b != "" {
		return b, nil
	}
	if b, err := exec.LookPath("nats-server"); err == nil {
		return b, nil
	}
	if _, err := os.Stat(debianNATSServer); err == nil {
		return debianNATSServer, nil
	}
	if os.Getenv("RIDESHARE_REQUIRE_NATS_SERVER") != "" {
		return "", fmt.Errorf("RIDESHARE_REQUIRE_NATS_SERVER is set and no nats-server is installed (scripts/services.sh installs Debian's)")
	}
	bin := filepath.Join(t.TempDir(), "nats-server")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build nats-server: %v\n%s", err, out)
	}
	return bin, nil
}

// debianNATSServer is where Debian's nats-server package installs the server.
const debianNATSServer = "/usr/sbin/nats-server"

type natsNode struct {
	name, conf string
	port       int
	cmd        *exec.Cmd
	exited     chan struct{}
}

// StartNATSCluster starts n nats-server processes joined in one cluster, and waits until
// JetStream answers through each. They are killed at cleanup.
func StartNATSCluster(t *testing.T, n int) *NATSCluster {
	t.Helper()
	bin, err := natsServerBin(t)
	if err != nil {
		t.Fatal(err)
	}
	c := &NATSCluster{Token: randomHex(16), t: t, bin: bin}
	routePass := randomHex(16)
	ports, routes := freePorts(t, n), freePorts(t, n)
	var routeURLs []string
	for _, p := range routes {
		routeURLs = append(routeURLs, fmt.Sprintf("nats-route://route:%s@127.0.0.1:%d", routePass, p))
	}
	dir := t.TempDir()
	for i := range n {
		node := &natsNode{name: fmt.Sprintf("n%d", i+1), port: ports[i]}
		node.conf = filepath.Join(dir, node.name+".conf")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
authorization { token: %q }
jetstream { store_dir: %q }
cluster {
  name: rideshare-test
  listen: 127.0.0.1:%d
  authorization { user: route, password: %q }
  routes: [%s]
}
`, node.name, node.port, c.Token, filepath.Join(dir, node.name), routes[i], routePass, strings.Join(routeURLs, ", "))
		if err := os.WriteFile(node.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, node)
		c.start(bin, node)
	}
	t.Cleanup(func() {
		for _, node := range c.nodes {
			c.Kill(node.name)
		}
	})
	for _, node := range c.nodes {
		c.WaitJetStream(node.name, time.Minute)
	}
	return c
}

func (c *NATSCluster) start(bin string, node *natsNode) {
	c.t.Helper()
	node.cmd = exec.Command(bin, "-c", node.conf)
	node.cmd.Stdout, node.cmd.Stderr = nil, nil
	if err := node.cmd.Start(); err != nil {
		c.t.Fatalf("start nats-server %s: %v", node.name, err)
	}
	node.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(node.cmd, node.exited)
}

func (c *NATSCluster) node(name string) *natsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no nats-server %s", name)
	return nil
}

// URLs is the client URL list of every server, as --nats takes it.
func (c *NATSCluster) URLs() string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, c.URL(n.name))
	}
	return strings.Join(urls, ",")
}

// URL is one server's client URL.
func (c *NATSCluster) URL(name string) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.node(name).port)
}

// Option points a stack at the cluster, with its token.
func (c *NATSCluster) Option() Option {
	return func(cfg *system.Config) { cfg.NATS, cfg.NATSToken = c.URLs(), c.Token }
}

// Kill SIGKILLs a server and waits until it is gone.
func (c *NATSCluster) Kill(name string) {
	n := c.node(name)
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
	n.cmd = nil
}

// Restart starts a killed server again with its data, and waits until JetStream answers
// through it.
func (c *NATSCluster) Restart(name string) {
	c.t.Helper()
	c.start(c.bin, c.node(name))
	c.WaitJetStream(name, time.Minute)
}

// WaitJetStream waits until JetStream answers through the server name.
func (c *NATSCluster) WaitJetStream(name string, timeout time.Duration) {
	c.t.Helper()
	Eventually(c.t, timeout, "JetStream through nats-server "+name, func() bool {
		nc, err := nats.Connect(c.URL(name), nats.Token(c.Token), nats.Timeout(time.Second), nats.NoReconnect())
		if err != nil {
			return false
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil
	})
}

// StreamInfo is a stream's state as the cluster reports it (its leader, its replicas), asked
// of each running server in turn until one answers.
func (c *NATSCluster) StreamInfo(stream string) (*jetstream.StreamInfo, error) {
	var last error
	for _, n := range c.nodes {
		if n.cmd == nil {
			continue
		}
		info, err := c.streamInfoVia(n.name, stream)
		if err == nil {
			return info, nil
		}
		last = err
	}
	return nil, fmt.Errorf("stream %s: %w", stream, last)
}

func (c *NATSCluster) streamInfoVia(server, stream string) (*jetstream.StreamInfo, error) {
	nc, err := nats.Connect(c.URL(server), nats.Token(c.Token), nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
