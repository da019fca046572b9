package orchestrator

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/rideshare/rideshare/broker/coord"
)

// Status is what an operator looks at first (`GET /api/v1/status`; the console and
// `rideshare status` show it): this node, the sync log's head, every worker with its lag
// behind the head, the recent events, and the db requests served so far (two looks a few
// seconds apart give the rates).
type Status struct {
	Time    time.Time      `json:"time"`
	Nodes   []NodeStatus   `json:"nodes"`
	LogHead uint64         `json:"log_head"`
	Workers []WorkerStatus `json:"workers"`
	Events  []Event        `json:"events"`
	// EventsSeen counts every event since the node started, so a reader can tell how many
	// fell out of the list between two looks.
	EventsSeen uint64 `json:"events_seen"`
	Reads      uint64 `json:"db_reads"`
	Writes     uint64 `json:"db_writes"`
}

// NodeStatus is one orchestrator node.
type NodeStatus struct {
	Name       string `json:"name"`
	PID        int    `json:"pid"`
	URL        string `json:"url,omitempty"`
	Up         bool   `json:"up"`
	Supervisor bool   `json:"supervisor"`
	// LogLeader: this node's NATS server leads the sync log's stream.
	LogLeader bool `json:"log_leader"`
}

// WorkerStatus is a worker as the status view shows it.
type WorkerStatus struct {
	WorkerInfo
	// Lag is how many log entries the worker has yet to apply.
	Lag uint64 `json:"lag"`
}

const (
	servedReads = iota
	servedWrites
)

// Status returns the status view. Workers are listed master first, then by ID.
func (o *Orchestrator) Status(ctx context.Context) (Status, error) {
	log, err := o.Log.State(ctx) // one look gives the head and the leader
	if err != nil {
		return Status{}, err
	}
	head := log.Last
	nodes, err := o.nodes(ctx, log.Leader)
	if err != nil {
		return Status{}, err
	}
	st := Status{
		Time:    time.Now().UTC(),
		Nodes:   nodes,
		LogHead: head,
		Reads:   o.served[servedReads].Load(),
		Writes:  o.served[servedWrites].Load(),
	}
	for _, w := range o.Workers() {
		ws := WorkerStatus{WorkerInfo: w}
		if head > w.Applied {
			ws.Lag = head - w.Applied
		}
		st.Workers = append(st.Workers, ws)
	}
	slices.SortFunc(st.Workers, func(a, b WorkerStatus) int {
		if (a.Role == coord.RoleMaster) != (b.Role == coord.RoleMaster) {
			if a.Role == coord.RoleMaster {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if st.Workers == nil {
		st.Workers = []WorkerStatus{}
	}
	st.Events, st.EventsSeen = o.events.list()
	return st, nil
}
