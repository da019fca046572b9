package orchestrator

import (
	"context"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NodeRegistry is where the nodes of a cluster announce themselves, for the cluster view.
type NodeRegistry interface {
	// Announce records n (Seen is set by the registry).
	Announce(ctx context.Context, n NodeEntry) error
	// Entries lists every node ever announced, with when it was last seen.
	Entries(ctx context.Context) ([]NodeEntry, error)
}

// NodeEntry is what a node announces about itself.
type NodeEntry struct {
	Name       string `json:"name"`
	PID        int    `json:"pid"`
	URL        string `json:"url,omitempty"`
	NATSServer string `json:"nats_server,omitempty"`
	// DBReads is how many db reads the node has served since it started, for the scaler of
	// the node that supervises (ClusterReads).
	DBReads uint64    `json:"db_reads,omitempty"`
	Seen    time.Time `json:"-"`
}

// Announcements: a node is up while its entry is younger than announceUp.
const (
	announceEvery = time.Second
	announceUp    = 3 * announceEvery
)

// announce refreshes this node's entry in the registry every announceEvery until ctx ends.
func (o *Orchestrator) announce(ctx context.Context) {
	t := time.NewTicker(announceEvery)
	defer t.Stop()
	for {
		actx, cancel := context.WithTimeout(ctx, announceEvery)
		err := o.NodeRegistry.Announce(actx, o.self())
		cancel()
		if err != nil && ctx.Err() == nil {
			o.Logger.Debug("announce node", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (o *Orchestrator) self() NodeEntry {
	return NodeEntry{Name: o.Name, PID: os.Getpid(), URL: o.URL, NATSServer: o.NATSServer, DBReads: o.served[servedReads].Load()}
}

// Nodes is the cluster view (`GET /api/v1/cluster`): one entry per orchestrator node, this
// one first. A node leads the sync log when the NATS server it embeds leads the log's stream
// (with --nats it embeds none, and the cluster's servers lead).
func (o *Orchestrator) Nodes(ctx context.Context) ([]NodeStatus, error) {
	log, err := o.Log.State(ctx)
	if err != nil {
		return nil, err
	}
	return o.nodes(ctx, log.Leader)
}

// nodes is the cluster view, given the name of the server leading the log's stream.
func (o *Orchestrator) nodes(ctx context.Context, logLeader string) ([]NodeStatus, error) {
	leads := func(server string) bool {
		return server != "" && (logLeader == server || logLeader == "" && o.NodeRegistry == nil)
	}
	me := o.self()
	out := []NodeStatus{{Name: me.Name, PID: me.PID, URL: me.URL, Up: true, Supervisor: o.role.held(), LogLeader: leads(me.NATSServer)}}
	if o.NodeRegistry == nil {
		return out, nil
	}
	entries, err := o.NodeRegistry.Entries(ctx)
	if err != nil {
		return nil, err
	}
	supervisor := o.role.supervisorName()
	slices.SortFunc(entries, func(a, b NodeEntry) int { return strings.Compare(a.Name, b.Name) })
	for _, e := range entries {
		if e.Name == me.Name {
			continue
		}
		out = append(out, NodeStatus{Name: e.Name, PID: e.PID, URL: e.URL, Up: time.Since(e.Seen) < announceUp,
			Supervisor: e.Name == supervisor && !o.role.held(), LogLeader: leads(e.NATSServer)})
	}
	return out, nil
}

// clusterCollector exports the cluster view as this node sees it.
type clusterCollector struct {
	o                             *Orchestrator
	timeout                       time.Duration
	up, supervisor, leader, nodes *prometheus.Desc
}

func newClusterCollector(o *Orchestrator) *clusterCollector {
	return &clusterCollector{o: o, timeout: time.Second,
		up:         prometheus.NewDesc("rideshare_cluster_node_up", "1 if the orchestrator node announced itself within the last 3 s, as this node sees it.", []string{"node"}, nil),
		supervisor: prometheus.NewDesc("rideshare_cluster_node_supervisor", "1 if the node holds the supervisor role, as this node sees it.", []string{"node"}, nil),
		leader:     prometheus.NewDesc("rideshare_cluster_node_log_leader", "1 if the node's NATS server leads the sync log's stream.", []string{"node"}, nil),
		nodes:      prometheus.NewDesc("rideshare_cluster_nodes", "Orchestrator nodes this node knows of.", nil, nil),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.supervisor
	ch <- c.leader
	ch <- c.nodes
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	nodes, err := c.o.Nodes(ctx)
	if err != nil {
		return // the scrape shows no cluster series rather than wrong ones
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, n := range nodes {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, b(n.Up), n.Name)
		ch <- prometheus.MustNewConstMetric(c.supervisor, prometheus.GaugeValue, b(n.Supervisor), n.Name)
		ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, b(n.LogLeader), n.Name)
	}
	ch <- prometheus.MustNewConstMetric(c.nodes, prometheus.GaugeValue, float64(len(nodes)))
}
