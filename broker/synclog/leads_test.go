package synclog

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// What Confirmed takes as the log's head, by the stream's cluster info as the answering server
// reports it (nats-server's clusterInfo: a leader lists the other replicas with the time since
// it last heard from each; anyone else lists the leader among them, or names none).
func TestLeadsTakesOnlyALeaderInTouchWithAMajority(t *testing.T) {
	peer := func(name string, active time.Duration) *jetstream.PeerInfo {
		return &jetstream.PeerInfo{Name: name, Active: active, Current: true}
	}
	ms := time.Millisecond
	cases := []struct {
		name string
		ci   *jetstream.ClusterInfo
		ok   bool
	}{
		{"a server outside a cluster: the only copy", nil, true},
		{"one replica in a cluster", &jetstream.ClusterInfo{Leader: "a"}, true},
		{"leader heard from both others", &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("b", 10*ms), peer("c", 20*ms)}}, true},
		{"leader heard from one other: a majority", &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("b", 900*ms), peer("c", 30*time.Second)}}, true},
		{"leader cut off: heard from no other within the lease", &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("b", 2500*time.Millisecond), peer("c", 12*time.Second)}}, false},
		{"leader never heard from the others", &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("b", 0), peer("c", 0)}}, false},
		{"no leader: a member answered from its own copy", &jetstream.ClusterInfo{Replicas: []*jetstream.PeerInfo{peer("a", ms), peer("b", ms), peer("c", ms)}}, false},
		{"a follower answered", &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("a", ms), peer("c", ms)}}, false},
		{"five replicas, leader heard from two others", &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("b", ms), peer("c", ms), peer("d", time.Minute), peer("e", time.Minute)}}, true},
		{"five replicas, leader heard from one other", &jetstream.ClusterInfo{Leader: "a", Replicas: []*jetstream.PeerInfo{peer("b", ms), peer("c", time.Minute), peer("d", time.Minute), peer("e", time.Minute)}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := leads(c.ci, LeaderLease)
			if c.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !c.ok && !errors.Is(err, ErrUnconfirmed) {
				t.Fatalf("got %v, want ErrUnconfirmed", err)
			}
		})
	}
}
