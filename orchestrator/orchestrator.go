// Package orchestrator is the database as a service: its HTTP API turns db/read and db/write
// requests into messages on readQ and writeQ, it supervises the workers (replacing the dead,
// designating a new master) and it resizes the slave pool.
package orchestrator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/metrics"
)

// orchMetrics are the orchestrator's own metrics (the HTTP ones come from metrics.HTTP).
type orchMetrics struct {
	workersLost prometheus.Counter
	failovers   prometheus.Counter
	dbRequests  *prometheus.CounterVec
	dbLatency   *prometheus.HistogramVec
	ackedSeq    prometheus.Gauge
	roundTrip   *prometheus.HistogramVec
}

func newOrchMetrics(reg prometheus.Registerer) *orchMetrics {
	return &orchMetrics{
		workersLost: metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rideshare_workers_lost_total", Help: "Workers that died or lost their coordination session without being stopped on purpose.",
		})),
		failovers: metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rideshare_failovers_total", Help: "Times a slave was designated master because there was none.",
		})),
		dbRequests: metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_db_requests_total", Help: "Database API requests by operation and outcome.",
		}, []string{"op", "outcome"})),
		dbLatency: metrics.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rideshare_db_request_duration_seconds", Help: "Database API latency, queue round trip included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"op"})),
		roundTrip: metrics.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rideshare_queue_roundtrip_seconds", Help: "One try on a queue: publish to answer on responseQ, by queue.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 15),
		}, []string{"queue"})),
		ackedSeq: metrics.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rideshare_synclog_acknowledged_seq", Help: "Highest sync-log sequence acknowledged to a client.",
		})),
	}
}

// Orchestrator is the DBaaS control plane.
type Orchestrator struct {
	Broker  broker.Broker
	Coord   coord.Coordinator
	Runtime Runtime
	Log     *synclog.Log
	Logger  *slog.Logger
	// Registry receives the orchestrator's metrics and is served on /metrics; nil: its own.
	Registry *prometheus.Registry

	// Slaves is the number of slaves to keep (the minimum once the scaler runs).
	Slaves int
	// WriteTimeout bounds how long a write waits for a master, failovers included.
	WriteTimeout time.Duration
	// WriteAttempt bounds one try before the write is sent again (safe: writes carry a
	// request ID and are applied once).
	WriteAttempt time.Duration
	// ReadTimeout bounds how long a read waits for a slave.
	ReadTimeout time.Duration
	// ReadAttempt bounds one try on one slave before the read is sent again.
	ReadAttempt time.Duration
	// AdminToken, if set, is required as a bearer token on the database and crash APIs.
	AdminToken string
	// Snapshots, if set, is the store slaves copy the database to; it makes backups possible.
	Snapshots SnapshotSource
	// NATSServer is the name of the NATS server this node embeds ("" if none: --nats), for
	// the cluster view's log_leader.
	NATSServer string
	// Name and URL identify this node in the status view (default: the host name, none).
	Name, URL string
	// Supervision, if set, opens a coordination session in which the nodes of a cluster
	// contend for the supervisor role (role.go); nil: this node is alone and supervises.
	Supervision func(context.Context) (coord.Coordinator, error)
	// SessionTimeout is Supervision's session timeout (default 3 s).
	SessionTimeout time.Duration
	// Registry of the cluster's nodes, for the cluster view; nil: this node alone.
	NodeRegistry NodeRegistry
	// ReadIndex makes every strong read wait for the log's last sequence, fetched after the
	// read arrived (once for each batch of waiting reads): with several nodes, a write
	// acknowledged through another node is in the log but not in this node's shown.
	ReadIndex bool
	// Poll is how often the supervisor reconciles without a coordination event.
	Poll time.Duration
	// StartTimeout is how long a new worker may take to join before it is replaced.
	StartTimeout time.Duration
	// PromoteTimeout is how long a designated worker may take to take the lock.
	PromoteTimeout time.Duration
	// GhostGrace is how long a worker whose session expired may keep running (it may only
	// be paused, and exits by itself on resuming) before it is killed.
	GhostGrace time.Duration

	lastAck atomic.Uint64
	// shown is the highest sequence a client may have seen: acknowledged to a writer
	// (lastAck) or shown by a read. A strong read waits for it, not for lastAck alone: a write
	// is on the slaves before its acknowledgement reaches this node, so a read can show it
	// first, and a later read must not then miss it (found by `rideshare chaos`:
	// TestChaosStrongReadsDoNotGoBackInTime).
	shown  atomic.Uint64
	events eventLog
	served [2]atomic.Uint64 // db reads and writes answered, for the status view's rates
	m      *orchMetrics
	sup    *supervisor
	role   role
	index  readIndex
	awake  *pauseWatch // this process's running, when the log's leader may be in it
	// lostServers tells when a connection lost its server, in a cluster (ReadIndex): there the
	// workers may use another node's server. One node's workers use its own, which dies only
	// with it, so a single node's calls need not watch (no goroutine per attempt).
	lostServers reconnects
	cancel      context.CancelFunc
	group       *errgroup.Group
}

// New returns an orchestrator with default timeouts.
func New(b broker.Broker, c coord.Coordinator, rt Runtime, log *synclog.Log) *Orchestrator {
	return &Orchestrator{
		Broker: b, Coord: c, Runtime: rt, Log: log, Logger: slog.Default(),
		Slaves: 1, WriteTimeout: 10 * time.Second, WriteAttempt: 2 * time.Second, ReadTimeout: 10 * time.Second, ReadAttempt: 2 * time.Second,
		Poll: 250 * time.Millisecond, StartTimeout: 60 * time.Second, PromoteTimeout: 10 * time.Second,
		GhostGrace: 30 * time.Second,
	}
}

// Open adopts running workers, starts the missing ones and supervises them.
func (o *Orchestrator) Open(ctx context.Context) error {
	o.Logger = o.Logger.With("component", "orchestrator")
	if o.Registry == nil {
		o.Registry = metrics.NewRegistry()
	}
	o.m = newOrchMetrics(o.Registry)
	if o.AdminToken == "" {
		o.Logger.Warn("no admin token: the database and crash APIs are open to anyone who can reach them")
	}
	// Reads must see every write acknowledged before: start from the log's end, since a
	// previous orchestrator may have acknowledged writes up to there.
	if o.Log != nil {
		last, err := o.Log.Last(ctx)
		if err != nil {
			return err
		}
		o.ack(last)
	}
	if o.Name == "" {
		o.Name, _ = os.Hostname()
	}
	o.role.alone = o.Supervision == nil
	if o.Log != nil {
		// Confirmed, not Last: a look answered by a leader cut off from the others
		// (or one that has no leader) may be older than what they acknowledged since.
		o.index.last = o.Log.Confirmed
		if r, ok := o.Broker.(reconnects); ok && o.ReadIndex {
			o.lostServers = r
		}
		if o.ReadIndex && o.NATSServer != "" {
			o.awake = newPauseWatch()
			o.index.last = confirmedHere(o.Log.ConfirmedHead, o.NATSServer, o.awake)
		}
	}
	o.sup = &supervisor{o: o, workers: map[string]*tracked{}, ghosts: map[string]time.Time{}, slaves: o.Slaves}
	// The pool is exported whether or not a scaler runs.
	metrics.Register(o.Registry, &poolCollector{o: o, headTimeout: time.Second})
	if o.Log != nil {
		metrics.Register(o.Registry, newClusterCollector(o))
	}
	if err := o.sup.adopt(ctx); err != nil {
		return fmt.Errorf("adopt workers: %w", err)
	}
	ctx, o.cancel = context.WithCancel(context.Background())
	o.group, ctx = errgroup.WithContext(ctx)
	o.group.Go(func() error { return o.sup.run(ctx) })
	if o.awake != nil {
		o.group.Go(func() error { o.awake.run(ctx); return nil })
	}
	if o.Supervision != nil {
		o.group.Go(func() error { o.campaign(ctx); return nil })
	}
	if o.NodeRegistry != nil {
		o.group.Go(func() error { o.announce(ctx); return nil })
	}
	return nil
}

// Close stops supervising and returns once nothing the orchestrator started runs any more: the
// supervisor returns only after its scale-in stops and its watch have ended, so no stop
// outlives the orchestrator. Workers keep running; the runtime decides their fate.
func (o *Orchestrator) Close() error {
	if o.cancel == nil {
		return nil
	}
	o.cancel()
	return o.group.Wait()
}

// WaitReady waits until a master and the wanted slaves are ready.
func (o *Orchestrator) WaitReady(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !o.sup.ready() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("database not ready: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Ready reports whether a master and the wanted slaves are ready.
func (o *Orchestrator) Ready() bool { return o.sup.ready() }

// Workers is the operator's view of the live workers.
func (o *Orchestrator) Workers() []WorkerInfo { return o.sup.view() }

// SetSlaves changes the number of slaves to keep.
func (o *Orchestrator) SetSlaves(n int) {
	o.sup.mu.Lock()
	o.sup.slaves = n
	o.sup.mu.Unlock()
}

// ack records a sequence acknowledged to a client; reads arriving later wait for it.
func (o *Orchestrator) ack(seq uint64) {
	raise(&o.lastAck, seq)
	raise(&o.shown, seq)
	o.m.ackedSeq.Set(float64(o.lastAck.Load()))
}

// raise sets v to seq unless it already holds more.
func raise(v *atomic.Uint64, seq uint64) {
	for {
		cur := v.Load()
		if seq <= cur || v.CompareAndSwap(cur, seq) {
			return
		}
	}
}
