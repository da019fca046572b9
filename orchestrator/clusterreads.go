package orchestrator

import (
	"context"
	"sync"
	"time"
)

// ClusterReads counts the db reads of every node of a cluster, for the scaler of the node that
// supervises: its own count, and what each other node last announced in the node registry
// (NodeEntry.DBReads, refreshed every second). Users and rides send every call to one node,
// which need not be the one that supervises: counting its own reads only, the supervisor
// scaled for almost none. The total never goes down: a node whose count fell (it restarted)
// adds its new count from zero.
type ClusterReads struct {
	Self     string           // this node's name in the registry
	Own      func() float64   // this node's count
	Registry NodeRegistry     // the others' announcements
	Every    time.Duration    // the registry is read at most this often (default 1 s)
	Timeout  time.Duration    // bounds one registry read (default 1 s)
	Now      func() time.Time // nil: time.Now

	mu      sync.Mutex
	last    map[string]float64 // each node's count when last seen
	total   float64
	fetched time.Time
}

var _ ReadCounter = (*ClusterReads)(nil)

// DBReads is the cluster's db reads so far. If the registry cannot be read, the others count
// as last seen (their reads come in at the next read that works).
func (c *ClusterReads) DBReads() (float64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[string]float64{}
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	c.add(c.Self, c.Own())
	every, timeout := c.Every, c.Timeout
	if every <= 0 {
		every = time.Second
	}
	if timeout <= 0 {
		timeout = time.Second
	}
	if t := now(); c.fetched.IsZero() || t.Sub(c.fetched) >= every {
		c.fetched = t
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		entries, err := c.Registry.Entries(ctx)
		cancel()
		if err == nil {
			for _, e := range entries {
				if e.Name != c.Self {
					c.add(e.Name, float64(e.DBReads))
				}
			}
		}
	}
	return c.total, nil
}

// add counts node's reads since it was last seen at n.
func (c *ClusterReads) add(node string, n float64) {
	prev, seen := c.last[node]
	switch {
	case !seen || n >= prev:
		c.total += n - prev
	default: // the node's count started again from zero
		c.total += n
	}
	c.last[node] = n
}
