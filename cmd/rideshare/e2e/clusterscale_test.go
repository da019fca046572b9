package e2e

import (
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
)

// The supervising node scales the pool from the reads of every node: users and rides send
// every call to one node, which need not be the one that supervises. Reads go only through
// another node; the supervisor's scaler counts them (from the node registry) and wants more
// slaves. Counting its own reads only, it saw none and never started its timer.
func TestClusterScalesFromReadsThroughAnotherNode(t *testing.T) {
	const interval = 3 * time.Second
	st := mustCluster(t, withScaleInterval(interval))
	settled(t, st, 2) // a master and a slave
	sup := supervisorNode(t, st)
	var other *system.Node
	for _, n := range st.Nodes.Nodes {
		if n != sup {
			other = n
			break
		}
	}
	t.Logf("reads through %s, %s supervises", other.Name, sup.Name)
	var wanted, counted float64
	eventually(t, 2*time.Minute, sup.Name+" wanting more than 1 slave", func() bool {
		dbReadsAt(t, other.URL, 10, 5)
		fams := scrape(t, sup.URL)
		wanted, _ = sample(fams, "rideshare_slaves_wanted", nil)
		counted, _ = sample(fams, "rideshare_scaler_last_interval_reads", nil)
		return wanted > 1
	})
	t.Logf("%s wants %v slaves after an interval of %v reads", sup.Name, wanted, counted)
	if counted < 21 {
		t.Errorf("the supervisor's last interval counted %v reads: more than 1 slave is wanted only from 21", counted)
	}
}
