package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
)

// netnet is a network of its own for each of a cluster's nodes: one network namespace per
// node, joined by a bridge in a hub namespace, with this process (the test, the users' and
// rides' side) on the same network through one more link. Cutting a node off drops, inside
// its namespace, what goes to or comes from the other nodes: it still reaches its own
// workers (they run in the namespace of the node that started them) and this process, as
// a machine cut off from its peers still answers the clients beside it.
//
// The bridge is in a namespace of its own, not on this machine's: bridged traffic passes
// the machine's firewall (br_netfilter), whose forwarding policy Docker sets to drop.
type netnet struct {
	prefix string // of the names: unique to this run
	subnet string // 10.213.X.
	nodes  []string
}

// newNetnet makes n node namespaces; the test skips where it cannot (not root, no ip or
// iptables). Everything is removed when the test ends.
func newNetnet(t *testing.T, n int) *netnet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
	}
	id := os.Getpid() % 250
	nn := &netnet{prefix: fmt.Sprintf("rs%d", os.Getpid()), subnet: fmt.Sprintf("10.213.%d.", id)}
	hub, host := nn.prefix+"-hub", nn.prefix+"h"
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", host).Run()
		for _, ns := range append(nn.nodes, hub) {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", hub)
	run("-n", hub, "link", "add", "br0", "type", "bridge")
	run("-n", hub, "link", "set", "br0", "up")
	run("link", "add", host, "type", "veth", "peer", "name", "up0", "netns", hub)
	run("-n", hub, "link", "set", "up0", "master", "br0")
	run("-n", hub, "link", "set", "up0", "up")
	run("addr", "add", nn.subnet+"254/24", "dev", host)
	run("link", "set", host, "up")
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("%s-%d", nn.prefix, i)
		run("netns", "add", ns)
		nn.nodes = append(nn.nodes, ns)
		port := fmt.Sprintf("n%d", i)
		run("-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run("-n", hub, "link", "set", port, "master", "br0")
		run("-n", hub, "link", "set", port, "up")
		run("-n", ns, "addr", "add", fmt.Sprintf("%s%d/24", nn.subnet, i), "dev", "eth0")
		run("-n", ns, "link", "set", "eth0", "up")
		run("-n", ns, "link", "set", "lo", "up")
	}
	return nn
}

// host is node i's address (0-based).
func (nn *netnet) host(i int) string { return fmt.Sprintf("%s%d", nn.subnet, i+1) }

// option runs node i in namespace i, its API at port 8080 there.
func (nn *netnet) option() stackOpt {
	return func(c *system.Config) {
		var addrs []string
		for i, ns := range nn.nodes {
			c.NodePlaces = append(c.NodePlaces, system.NodePlace{Host: nn.host(i), Wrap: []string{"ip", "netns", "exec", ns}})
			addrs = append(addrs, nn.host(i)+":8080")
		}
		c.OrchestratorAddr = strings.Join(addrs, ",")
	}
}

// cut drops, in node i's namespace, everything to and from the other nodes.
func (nn *netnet) cut(t *testing.T, i int) {
	t.Helper()
	for j := range nn.nodes {
		if j == i {
			continue
		}
		nn.iptables(t, i, "-I", "INPUT", "-s", nn.host(j), "-j", "DROP")
		nn.iptables(t, i, "-I", "OUTPUT", "-d", nn.host(j), "-j", "DROP")
	}
}

// heal removes node i's cut.
func (nn *netnet) heal(t *testing.T, i int) {
	t.Helper()
	nn.iptables(t, i, "-F", "INPUT")
	nn.iptables(t, i, "-F", "OUTPUT")
}

func (nn *netnet) iptables(t *testing.T, i int, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", nn.nodes[i], "iptables"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("iptables %s in %s: %v: %s", strings.Join(args, " "), nn.nodes[i], err, out)
	}
}
