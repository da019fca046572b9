package orchestrator

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeNodes is a node registry whose entries the test sets.
type fakeNodes struct {
	entries []NodeEntry
	err     error
}

func (f *fakeNodes) Announce(context.Context, NodeEntry) error { return nil }
func (f *fakeNodes) Entries(context.Context) ([]NodeEntry, error) {
	return f.entries, f.err
}

// The supervisor's scaler counts the reads of every node, as each last announced them: the
// node users and rides call need not be the one that supervises.
func TestClusterReadsCountsEveryNode(t *testing.T) {
	var own float64
	nodes := &fakeNodes{}
	clock := time.Unix(0, 0)
	c := &ClusterReads{Self: "node2", Own: func() float64 { return own }, Registry: nodes, Now: func() time.Time { return clock }}
	total := func(want float64) {
		t.Helper()
		clock = clock.Add(time.Second) // the registry is read at most once a second
		got, err := c.DBReads()
		if err != nil || got != want {
			t.Fatalf("DBReads = %v, %v; want %v", got, err, want)
		}
	}
	nodes.entries = []NodeEntry{{Name: "node1", DBReads: 100}, {Name: "node2", DBReads: 1}, {Name: "node3"}}
	own = 2
	total(102) // node2's own count, not its older announcement
	nodes.entries[0].DBReads = 150
	nodes.entries[2].DBReads = 7
	own = 5
	total(162)
	// node1 restarted: its count starts from zero again, and what it serves now still counts.
	nodes.entries[0].DBReads = 10
	total(172)
	// The registry does not answer: the others count as last seen, this node's own reads do.
	nodes.err = errors.New("no responders")
	own = 8
	total(175)
	nodes.err = nil
	nodes.entries[2].DBReads = 27
	total(195)
	// Read again within the second: the registry is not asked, this node's count is.
	nodes.entries[0].DBReads = 1000
	own = 9
	if got, _ := c.DBReads(); got != 196 {
		t.Fatalf("DBReads within the second = %v, want 196", got)
	}
}
