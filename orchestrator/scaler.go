package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/errgroup"

	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/metrics"
)

// ReadsPerSlave is how many db reads in one interval call for one slave (SPEC §8).
const ReadsPerSlave = 20

// AutoMax as Scaler.Max derives the maximum from the machine (Host.DefaultMaxSlaves).
const AutoMax = -1

// DefaultStep is the most slaves one scaling decision adds by default: a new slave catches up
// from the log, and several catching up at once compete with the reads they are meant to take.
const DefaultStep = 2

// The requests the scaler counts: POST /api/v1/db/read as the orchestrator's HTTP middleware
// labels them in rideshare_http_requests_total. Nothing else counts (SPEC §8).
const (
	readsMetric  = metrics.Namespace + "_http_requests_total"
	readsService = "orchestrator"
	readsRoute   = "/api/v1/db/read"
	readsMethod  = http.MethodPost
)

// DesiredSlaves is the scaling rule: max(min, ceil(reads/20)), capped at max when max > 0.
// 0–20 reads give 1 slave with min 1, 21–40 give 2, 41–60 give 3, and so on.
func DesiredSlaves(reads float64, minSlaves, maxSlaves int) int {
	if math.IsNaN(reads) || reads < 0 {
		reads = 0
	}
	n := max(int(math.Min(math.Ceil(reads/ReadsPerSlave), math.MaxInt32)), minSlaves, 0)
	if maxSlaves > 0 && n > maxSlaves {
		n = maxSlaves
	}
	return n
}

// Pool is what the scaler resizes: the orchestrator's slave pool.
type Pool interface {
	SetSlaves(n int)
}

// Supervisor is a pool that may be resized only by one node of several (the Orchestrator): the
// scaler decides only while Supervising.
type Supervisor interface {
	Supervising() bool
}

// EventRecorder is a pool that keeps the operator's recent events (the Orchestrator): the
// scaler adds its decisions that changed something.
type EventRecorder interface {
	RecordEvent(Event)
}

var _ Pool = (*Orchestrator)(nil)

// ReadCounter is the local source of the db-read count: the total so far, never reset.
type ReadCounter interface {
	DBReads() (float64, error)
}

// RegistryReads reads the db-read count from the orchestrator's own Prometheus counter,
// rideshare_http_requests_total{service="orchestrator",route="/api/v1/db/read",method="POST"},
// summed over the status codes.
type RegistryReads struct {
	Gatherer prometheus.Gatherer
}

var _ ReadCounter = RegistryReads{}

// DBReads gathers the registry and sums the counter. Before the first read the counter has no
// series yet, which is a count of 0.
func (r RegistryReads) DBReads() (float64, error) {
	mfs, err := r.Gatherer.Gather()
	var sum float64
	found := false
	for _, mf := range mfs {
		if mf.GetName() != readsMetric {
			continue
		}
		found = true
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, readsService, readsRoute, readsMethod) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	// Gather reports the failure of any collector; the counter gathered fine if it is there.
	if err != nil && !found {
		return 0, fmt.Errorf("gather metrics: %w", err)
	}
	return sum, nil
}

func labelsMatch(m *dto.Metric, service, route, method string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		switch l.GetName() {
		case "service":
			if l.GetValue() != service {
				return false
			}
			n++
		case "route":
			if l.GetValue() != route {
				return false
			}
			n++
		case "method":
			if l.GetValue() != method {
				return false
			}
			n++
		}
	}
	return n == 3
}

// Scaler resizes the slave pool from the number of db reads per interval (SPEC §8). Its timer
// starts at the first db read; at the end of every interval it sets the slaves to
// DesiredSlaves(reads in that interval, Min, Max) and counts the next interval from zero.
type Scaler struct {
	// Pool is resized.
	Pool Pool
	// Reads is the db-read counter: this node's (RegistryReads), or every node's of a
	// cluster (ClusterReads). It also tells when the first read happened.
	Reads ReadCounter
	// Registry receives the scaler's metrics (and, from NewScaler, the pool's); nil: none.
	Registry prometheus.Registerer
	// Interval is the scaling period (default 2 minutes).
	Interval time.Duration
	// Ticks, if set, ends each interval instead of a clock every Interval: tests decide when
	// an interval is over, so that the reads they count fall in the interval they mean.
	Ticks <-chan time.Time
	// Min and Max bound the slaves; Max 0 means no bound but the machine's room, AutoMax
	// (NewScaler's default) the host's DefaultMaxSlaves, asked of the pool when the scaler
	// starts (and no bound but the room if the pool cannot tell).
	Min, Max int
	// Step is the most slaves one decision adds (scale-in is not limited), so that a burst
	// of reads cannot start dozens of catch-ups at once; 0: no limit.
	Step int
	// Slaves is the number of slaves wanted before the first decision: the reference for the
	// direction of the first decision.
	Slaves int
	// PrometheusURL, if set, is a Prometheus server scraping every orchestrator: the count of
	// an interval is then the PromQL ReadsQuery, so that the reads of all orchestrators count
	// (never less than the local count). When the server cannot answer, the local counter
	// is used, with a warning.
	PrometheusURL string
	// Client queries Prometheus; nil: one with a QueryTimeout timeout.
	Client *http.Client
	// QueryTimeout bounds one Prometheus query (default 5s).
	QueryTimeout time.Duration
	// Poll is how often the local counter is looked at while waiting for the first read
	// (default: 100ms or Interval/50, whichever is smaller).
	Poll   time.Duration
	Logger *slog.Logger

	max    int    // Max, resolved
	maxWhy string // what set max
	once   sync.Once
	m      *scalerMetrics
	log    *slog.Logger
	cancel context.CancelFunc
	group  *errgroup.Group
}

// NewScaler returns a scaler for o, which must be open: it counts the reads of o's HTTP API
// from o's registry (in a cluster, the reads every node served: ClusterReads), resizes o's
// slave pool, and exports its metrics on o's registry (the pool's own — workers by role,
// applied sequence and lag, sync-log head — come from o).
func NewScaler(o *Orchestrator) *Scaler {
	var reads ReadCounter = RegistryReads{Gatherer: o.Registry}
	if o.NodeRegistry != nil {
		reads = &ClusterReads{Self: o.Name, Registry: o.NodeRegistry,
			Own: func() float64 { return float64(o.served[servedReads].Load()) }}
	}
	return &Scaler{
		Pool: o, Reads: reads, Registry: o.Registry,
		Interval: 2 * time.Minute, Min: 1, Max: AutoMax, Step: DefaultStep, Slaves: o.Slaves,
		QueryTimeout: 5 * time.Second, Logger: slog.Default(),
	}
}

// scalerMetrics are the scaler's own metrics.
type scalerMetrics struct {
	decisions *prometheus.CounterVec
	lastReads prometheus.Gauge
	capped    *prometheus.CounterVec
	maxSlaves prometheus.Gauge
}

func (s *Scaler) init() {
	s.once.Do(func() {
		if s.Logger == nil {
			s.Logger = slog.Default()
		}
		s.log = s.Logger.With("component", "scaler")
		s.m = &scalerMetrics{
			decisions: metrics.Register(s.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "rideshare_scaler_decisions_total",
				Help: "Scaling decisions, by direction relative to the slaves wanted before (up, down, same).",
			}, []string{"direction"})),
			lastReads: metrics.Register(s.Registry, prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "rideshare_scaler_last_interval_reads",
				Help: "Db reads counted in the last completed scaling interval.",
			})),
			capped: metrics.Register(s.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "rideshare_scaler_capped_total",
				Help: "Scale-outs that added fewer slaves than the rule asked, by what capped them: max_slaves (--max-slaves), step (--scale-step), room (the machine's free memory).",
			}, []string{"reason"})),
			maxSlaves: metrics.Register(s.Registry, prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "rideshare_scaler_max_slaves",
				Help: "Most slaves the scaler asks for (0: no bound but the machine's room).",
			})),
		}
		for _, d := range []string{"up", "down", "same"} {
			s.m.decisions.WithLabelValues(d)
		}
		for _, r := range []string{capMax, capStep, capRoom} {
			s.m.capped.WithLabelValues(r)
		}
	})
}

func (s *Scaler) check() error {
	switch {
	case s.Pool == nil || s.Reads == nil:
		return errors.New("scaler: no pool or read counter")
	case s.Interval <= 0:
		return fmt.Errorf("scaler: interval %v: must be positive", s.Interval)
	case s.Min < 0 || s.Max < AutoMax:
		return fmt.Errorf("scaler: min %d, max %d: must not be negative", s.Min, s.Max)
	case s.Step < 0:
		return fmt.Errorf("scaler: step %d: must not be negative", s.Step)
	case s.Max > 0 && s.Min > s.Max:
		return fmt.Errorf("scaler: min %d above max %d", s.Min, s.Max)
	}
	if s.PrometheusURL != "" {
		u, err := url.Parse(s.PrometheusURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("scaler: Prometheus URL %q: want http(s)://host[:port]", s.PrometheusURL)
		}
	}
	return nil
}

// Open registers the metrics and runs the scaler in the background until Close.
func (s *Scaler) Open(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	s.init()
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.group, ctx = errgroup.WithContext(ctx)
	s.group.Go(func() error { return s.Run(ctx) })
	return nil
}

// Close stops the scaler and waits for it. The slaves stay as they are.
func (s *Scaler) Close() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	return s.group.Wait()
}

// Run waits for the first db read, then decides once per interval, until ctx ends.
func (s *Scaler) Run(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	s.init()
	s.resolveMax(ctx)
	base := s.waitFirstRead(ctx)
	if ctx.Err() != nil {
		return nil
	}
	s.log.Info("first db read: scaling timer started", "interval", s.Interval.String(), "min_slaves", s.Min,
		"max_slaves", s.max, "max_slaves_from", s.maxWhy, "step", s.Step)
	wanted := s.Slaves
	ticks := s.Ticks
	if ticks == nil {
		t := time.NewTicker(s.Interval)
		defer t.Stop()
		ticks = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticks:
		}
		total, err := s.Reads.DBReads()
		if err != nil {
			// The reads of this interval will count in the next one.
			s.log.Warn("no decision this interval: cannot read the db-read counter", "err", err)
			continue
		}
		if total < base { // the counter was reset (a new registry): count from zero
			base = 0
		}
		reads, source := total-base, "local"
		base = total
		if s.PrometheusURL != "" {
			// Every orchestrator's reads count, so the sum is at least this one's own count.
			// It can be less: increase() misses a series' first increment when the series
			// is born inside the window (it is, in the first interval: no read, no series),
			// and sees reads only once scraped. The local count is then the better one.
			n, err := s.promReads(ctx)
			switch {
			case err != nil:
				if ctx.Err() == nil {
					s.log.Warn("counting reads with the local counter: Prometheus did not answer", "url", s.PrometheusURL, "err", err)
				}
			case n >= reads:
				reads, source = n, "prometheus"
			default:
				s.log.Debug("Prometheus counted fewer reads than this orchestrator: using the local count", "prometheus", n, "local", reads)
			}
		}
		if sp, ok := s.Pool.(Supervisor); ok && !sp.Supervising() {
			// Another node supervises and resizes the pool; this one's reads count there
			// through its announcements (ClusterReads) or Prometheus.
			s.log.Debug("no decision: this node does not supervise")
			continue
		}
		wanted = s.decide(ctx, reads, wanted, source)
	}
}

// resolveMax sets max from Max, asking the pool for its machine when Max is AutoMax.
func (s *Scaler) resolveMax(ctx context.Context) {
	s.max, s.maxWhy = s.Max, "--max-slaves"
	if s.Max == 0 {
		s.maxWhy = "no maximum: the machine's room only"
	}
	if s.Max == AutoMax {
		s.max, s.maxWhy = 0, "the machine could not be measured: its room only"
		if hp, ok := s.Pool.(HostPool); ok {
			h, known, err := hp.Host(ctx)
			switch {
			case err != nil:
				s.log.Warn("no default maximum of slaves: cannot measure the machine", "err", err)
			case known:
				s.max, s.maxWhy = h.DefaultMaxSlaves()
			}
		}
	}
	if s.Min > s.max && s.max > 0 {
		// A minimum set above what the machine is sized for is the operator's call.
		s.max, s.maxWhy = s.Min, "--min-slaves, above the machine's default maximum"
	}
	s.m.maxSlaves.Set(float64(s.max))
}

// What capped a scale-out, as rideshare_scaler_capped_total labels it.
const (
	capMax  = "max_slaves"
	capStep = "step"
	capRoom = "room"
)

// waitFirstRead polls the local counter until it moves, and returns the count before the
// first read (normally 0), from which the first interval counts.
func (s *Scaler) waitFirstRead(ctx context.Context) float64 {
	base, err := s.Reads.DBReads()
	if err != nil {
		s.log.Warn("cannot read the db-read counter yet", "err", err)
		base = 0
	}
	if base > 0 {
		// Reads happened before the scaler started: the timer starts now, and the first
		// interval counts from here.
		return base
	}
	poll := s.Poll
	if poll <= 0 {
		poll = min(100*time.Millisecond, s.Interval/50)
	}
	poll = max(poll, time.Millisecond)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-t.C:
		}
		n, err := s.Reads.DBReads()
		if err == nil && n > base {
			return base
		}
	}
}

// decide sets the slaves for an interval with reads db reads and records the decision. A
// scale-out is capped by the maximum, by the step and by the room the machine has now.
func (s *Scaler) decide(ctx context.Context, reads float64, wanted int, source string) int {
	rule := DesiredSlaves(reads, s.Min, 0)
	desired := DesiredSlaves(reads, s.Min, s.max)
	reason, why := "", ""
	if desired < rule {
		reason, why = capMax, s.maxWhy
	}
	if s.Step > 0 && desired > wanted+s.Step {
		desired, reason, why = wanted+s.Step, capStep, fmt.Sprintf("at most %d more slaves an interval", s.Step)
	}
	if desired > wanted {
		if rr, ok := s.Pool.(RoomReporter); ok {
			room, rwhy, err := rr.Room(ctx)
			switch {
			case err != nil:
				// A machine that cannot be measured gets no new worker: starting one it cannot
				// hold is what this check is for.
				desired, reason, why = wanted, capRoom, "cannot measure the machine: "+err.Error()
			case room != SlotsUnknown && desired > wanted+room:
				desired, reason, why = wanted+room, capRoom, rwhy
			}
		}
	}
	if reason != "" {
		s.m.capped.WithLabelValues(reason).Inc()
		s.log.Warn("scale-out capped", "reads", reads, "rule_slaves", rule, "slaves", desired,
			"slaves_before", wanted, "capped_by", reason, "why", why)
	}
	direction := "same"
	switch {
	case desired > wanted:
		direction = "up"
	case desired < wanted:
		direction = "down"
	}
	s.m.lastReads.Set(reads)
	s.m.decisions.WithLabelValues(direction).Inc()
	level := slog.LevelDebug
	if direction != "same" {
		level = slog.LevelInfo
	}
	s.log.Log(context.Background(), level, "scaling decision", "reads", reads, "source", source,
		"slaves_before", wanted, "slaves", desired, "direction", direction)
	if er, ok := s.Pool.(EventRecorder); ok && (direction != "same" || reason != "") {
		msg := fmt.Sprintf("%.0f db reads in the last %v: %d → %d slaves", reads, s.Interval, wanted, desired)
		if reason != "" {
			msg += " (capped: " + why + ")"
		}
		er.RecordEvent(Event{Kind: EventScale, Reads: &reads, Message: msg})
	}
	// Acted on last: whoever sees the pool change finds the decision already recorded.
	s.Pool.SetSlaves(desired)
	return desired
}

// ReadsQuery is the PromQL expression for the db reads of the last interval, over every
// orchestrator Prometheus scrapes.
func (s *Scaler) ReadsQuery() string {
	return fmt.Sprintf(`sum(increase(%s{service=%q,route=%q,method=%q}[%s]))`,
		readsMetric, readsService, readsRoute, readsMethod, promDuration(s.Interval))
}

// promDuration writes d as a PromQL duration: whole seconds when it is, milliseconds otherwise.
func promDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "ms"
}

// promReads runs ReadsQuery as an instant query on Prometheus's HTTP API. increase()
// extrapolates, so the count is rounded to a whole number of reads. An empty answer (no
// series: the orchestrators are not scraped, or not for long enough) is an error, so that the
// local count is used instead.
func (s *Scaler) promReads(ctx context.Context) (float64, error) {
	timeout := s.QueryTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: timeout}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := strings.TrimRight(s.PrometheusURL, "/") + "/api/v1/query?" + url.Values{"query": {s.ReadsQuery()}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("query Prometheus: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("read Prometheus answer: %w", err)
	}
	var ans struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value []any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return 0, fmt.Errorf("Prometheus answered %s: unreadable: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || ans.Status != "success" {
		return 0, fmt.Errorf("Prometheus answered %s: %s", resp.Status, ans.Error)
	}
	if ans.Data.ResultType != "vector" || len(ans.Data.Result) != 1 || len(ans.Data.Result[0].Value) != 2 {
		return 0, fmt.Errorf("Prometheus has no db-read series for the last %s", promDuration(s.Interval))
	}
	str, _ := ans.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("Prometheus answered the value %q", str)
	}
	return math.Round(v), nil
}

// poolCollector exports the worker pool as it is at scrape time, so that the per-worker series
// of a dead or stopped worker disappear with it (the worker label stays bounded by the pool).
type poolCollector struct {
	o           *Orchestrator
	headTimeout time.Duration
}

var (
	descWorkers = prometheus.NewDesc("rideshare_workers",
		"Live workers by role (starting: launched, not yet joined).", []string{"role"}, nil)
	descSlavesWanted = prometheus.NewDesc("rideshare_slaves_wanted",
		"Slaves the orchestrator keeps (set by --slaves, then by the scaler).", nil, nil)
	descSlavesRunning = prometheus.NewDesc("rideshare_slaves_running",
		"Slaves that have caught up and serve reads.", nil, nil)
	descApplied = prometheus.NewDesc("rideshare_worker_applied_seq",
		"Highest sync-log sequence the worker has applied.", []string{"worker", "role"}, nil)
	descLag = prometheus.NewDesc("rideshare_worker_lag",
		"Sync-log entries acknowledged to clients that the worker has not applied yet.", []string{"worker", "role"}, nil)
	descHead = prometheus.NewDesc("rideshare_synclog_head_seq",
		"Sequence of the newest sync-log entry.", nil, nil)
	descLogBytes = prometheus.NewDesc("rideshare_synclog_bytes",
		"Size of the sync log as stored by JetStream.", nil, nil)
	descLogConsumers = prometheus.NewDesc("rideshare_synclog_consumers",
		"Readers JetStream keeps for the sync log (each catch-up has one while it reads).", nil, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWorkers, descSlavesWanted, descSlavesRunning, descApplied, descLag, descHead, descLogBytes, descLogConsumers} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	o := c.o
	ws := o.Workers()
	roles := map[string]int{coord.RoleMaster: 0, coord.RoleSlave: 0, "starting": 0}
	acked := o.lastAck.Load()
	running := 0
	for _, w := range ws {
		roles[w.Role]++
		if w.Role == coord.RoleSlave && w.Ready {
			running++
		}
		if w.Role == "starting" {
			continue
		}
		lag := uint64(0)
		if acked > w.Applied {
			lag = acked - w.Applied
		}
		ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(w.Applied), w.ID, w.Role)
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(lag), w.ID, w.Role)
	}
	for role, n := range roles {
		ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(n), role)
	}
	o.sup.mu.Lock()
	wanted := o.sup.slaves
	o.sup.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descSlavesWanted, prometheus.GaugeValue, float64(wanted))
	ch <- prometheus.MustNewConstMetric(descSlavesRunning, prometheus.GaugeValue, float64(running))
	if o.Log != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.headTimeout)
		state, err := o.Log.State(ctx)
		cancel()
		if err != nil {
			// Left out of this scrape rather than failing it: the other metrics still count.
			o.Logger.Debug("metrics: sync-log head unknown", "err", err)
			return
		}
		ch <- prometheus.MustNewConstMetric(descHead, prometheus.GaugeValue, float64(state.Last))
		ch <- prometheus.MustNewConstMetric(descLogBytes, prometheus.GaugeValue, float64(state.Bytes))
		ch <- prometheus.MustNewConstMetric(descLogConsumers, prometheus.GaugeValue, float64(state.Consumers))
	}
}
