package system

import (
	"slices"
	"strings"
	"testing"
)

// The log is kept on three replicas as soon as there are three servers to hold them.
func TestNATSReplicas(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want int
	}{
		{Config{}, 1},
		{Config{NATS: "nats://a:4222"}, 1},
		{Config{NATS: "nats://a:4222,nats://b:4222"}, 1},
		{Config{NATS: "nats://a:4222,nats://b:4222,nats://c:4222"}, 3},
		{Config{NATS: "nats://a:4222,nats://b:4222,nats://c:4222,nats://d:4222,nats://e:4222"}, 3},
		{Config{NATS: "nats://a:4222,nats://b:4222,nats://c:4222", NATSReplicas: 1}, 1},
		{Config{NATSReplicas: 5}, 5},
		// Embedded servers joined by routes: this node's own route may or may not be listed.
		{Config{ClusterListen: "a:6222", Peers: "a:6222,b:6222,c:6222"}, 3},
		{Config{ClusterListen: "a:6222", Peers: "b:6222,c:6222"}, 3},
		{Config{ClusterListen: "a:6222", Peers: "a:6222,b:6222"}, 1},
		{Config{ClusterListen: "a:6222", Peers: "b:6222"}, 1},
	} {
		if got := c.cfg.natsReplicas(); got != c.want {
			t.Errorf("%+v: %d replicas, want %d", c.cfg, got, c.want)
		}
	}
}

// --orchestrator for --orchestrators N: one address each, a first port counted up, or port 0
// for N free ports; anything else is refused with the reason.
func TestNodeAddrs(t *testing.T) {
	if got, err := nodeAddrs("127.0.0.1:8000", 3); err != nil || !slices.Equal(got, []string{"127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002"}) {
		t.Errorf("a first port: %v, %v", got, err)
	}
	if got, err := nodeAddrs("a:1,b:2,c:3", 3); err != nil || !slices.Equal(got, []string{"a:1", "b:2", "c:3"}) {
		t.Errorf("a list: %v, %v", got, err)
	}
	got, err := nodeAddrs("127.0.0.1:0", 3)
	if err != nil || len(got) != 3 || got[0] == got[1] || got[1] == got[2] || got[0] == got[2] {
		t.Errorf("port 0: %v, %v: want three different free ports", got, err)
	}
	for _, bad := range []string{"a:1,b:2", "nohost", "127.0.0.1:65534", "127.0.0.1:x"} {
		if got, err := nodeAddrs(bad, 3); err == nil {
			t.Errorf("nodeAddrs(%q, 3) = %v, want an error", bad, got)
		}
	}
}

// Too few nodes, or nodes with the Docker runtime (their NATS servers on loopback), are
// refused before anything starts, with the reason, as are places not one for each node.
func TestStartNodesRefuses(t *testing.T) {
	addrs := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
	if _, err := StartNodes(t.Context(), Config{}, addrs[:2], nil, nil); err == nil || !strings.Contains(err.Error(), "at least 3") {
		t.Errorf("two nodes: %v", err)
	}
	if _, err := StartNodes(t.Context(), Config{Runtime: "docker"}, addrs, nil, nil); err == nil || !strings.Contains(err.Error(), "deploy/cluster") {
		t.Errorf("docker runtime: %v", err)
	}
	if _, err := StartNodes(t.Context(), Config{NodePlaces: []NodePlace{{Host: "10.0.0.1"}}}, addrs, nil, nil); err == nil || !strings.Contains(err.Error(), "1 node places for 3 nodes") {
		t.Errorf("places: %v", err)
	}
}
