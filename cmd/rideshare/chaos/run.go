package chaos

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "modernc.org/sqlite" // the replicas' copies, read at the end

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/client"
	"github.com/rideshare/rideshare/orchestrator/dockerrt"
)

// The faults a run can inject. Each is available where the configuration has what it breaks.
const (
	KillMaster       = "kill-master"       // SIGKILL the master
	KillSlave        = "kill-slave"        // SIGKILL a slave
	PauseMaster      = "pause-master"      // SIGSTOP the master past the session timeout, then SIGCONT
	RestartRabbitMQ  = "restart-rabbitmq"  // with --amqp: stop and start RabbitMQ's application
	RestartZooKeeper = "restart-zookeeper" // with --zk: Config.RestartZooKeeper
	PartitionWorker  = "partition-worker"  // with --runtime docker: cut a worker off the network past the session timeout, then heal
)

// RunConfig is one chaos run.
type RunConfig struct {
	// System is the stack to start, as `rideshare up` would.
	System system.Config
	// Duration of the load; faults are injected during it.
	Duration time.Duration
	// Seed draws the fault schedule and the clients' choices; printed, so a run can be
	// replayed (the schedule exactly; the interleaving is the machine's).
	Seed uint64
	// Clients run one operation at a time each, on Keys usernames.
	Clients, Keys int
	// Rides adds a client that creates rides and joins them through the gateway.
	Rides bool
	// OpTimeout bounds one operation; one that runs out is indeterminate.
	OpTimeout time.Duration
	// Faults to inject (nil: every fault the configuration supports), each at least once,
	// one every FaultEvery on average; they may overlap.
	Faults     []string
	FaultEvery time.Duration
	// RestartRabbitMQ and RestartZooKeeper are the commands that restart them, each a list of
	// argv run in order (RabbitMQ's default: rabbitmqctl stop_app, start_app).
	RestartRabbitMQ, RestartZooKeeper [][]string
	// Out is where a violation's visualisation goes (default: the data directory).
	Out      string
	Logger   *slog.Logger
	Progress io.Writer // a line per fault; nil: none
}

// FaultRun is one injected fault.
type FaultRun struct {
	Name   string
	At     time.Duration // since the start of the load
	Took   time.Duration
	Target string // the worker hit, if any
	Err    string // why it could not be injected
}

// Report is a run's outcome.
type Report struct {
	Seed     uint64
	Duration time.Duration
	Ops      map[Class]int
	Faults   []FaultRun
	Results  []Result
	// Evidence is where the history and the log of a violated run were written.
	Evidence string
}

// Violated says some check did not hold.
func (r *Report) Violated() bool {
	for _, c := range r.Results {
		if !c.Holds {
			return true
		}
	}
	return false
}

// Holds says every check held.
func (r *Report) Holds() bool {
	for _, c := range r.Results {
		if !c.Holds {
			return false
		}
	}
	return len(r.Results) > 0
}

// Print writes the report for a person.
func (r *Report) Print(w io.Writer) {
	total := 0
	for _, n := range r.Ops {
		total += n
	}
	fmt.Fprintf(w, "chaos run: seed %d, %v, %d operations (%d ok, %d failed, %d indeterminate), %d faults\n",
		r.Seed, r.Duration.Round(time.Second), total, r.Ops[Ok], r.Ops[Failed], r.Ops[Indeterminate], len(r.Faults))
	for _, f := range r.Faults {
		line := fmt.Sprintf("  %7.1fs %-18s", f.At.Seconds(), f.Name)
		if f.Target != "" {
			line += " " + f.Target
		}
		if f.Err != "" {
			line += " (not injected: " + f.Err + ")"
		}
		fmt.Fprintln(w, line)
	}
	for _, c := range r.Results {
		fmt.Fprintln(w, "  "+c.String())
	}
	if r.Evidence != "" {
		fmt.Fprintln(w, "  history and log: "+r.Evidence)
	}
}

// Available lists the faults cfg's configuration supports.
func Available(cfg system.Config, restartZK [][]string) []string {
	f := []string{KillMaster, KillSlave, PauseMaster}
	if cfg.Runtime == "docker" {
		f = append(f, PartitionWorker)
	}
	if cfg.AMQP != "" {
		f = append(f, RestartRabbitMQ)
	}
	if cfg.ZK != "" && len(restartZK) > 0 {
		f = append(f, RestartZooKeeper)
	}
	return f
}

const keyPrefix = "chaos_"

// Run starts the stack, loads it while injecting faults, lets it settle, and checks the
// history, the log and the replicas. An error means the run could not be made or judged (the
// stack did not start or settle); violations are in the report.
func Run(ctx context.Context, cfg RunConfig) (*Report, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if cfg.Clients < 1 || cfg.Keys < 1 || cfg.Duration <= 0 || cfg.FaultEvery <= 0 || cfg.OpTimeout <= 0 {
		return nil, errors.New("chaos: Clients, Keys, Duration, FaultEvery and OpTimeout must be positive")
	}
	avail := Available(cfg.System, cfg.RestartZooKeeper)
	if cfg.Faults == nil {
		cfg.Faults = avail
	}
	for _, f := range cfg.Faults {
		if !slices.Contains(avail, f) {
			return nil, fmt.Errorf("fault %q is not available in this configuration (available: %s)", f, strings.Join(avail, ", "))
		}
	}
	if cfg.RestartRabbitMQ == nil {
		cfg.RestartRabbitMQ = [][]string{{"rabbitmqctl", "-q", "stop_app"}, {"rabbitmqctl", "-q", "start_app"}}
	}
	if cfg.Out == "" {
		cfg.Out = cfg.System.Data
	}
	s, err := system.Open(ctx, cfg.System, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("start the stack: %w", err)
	}
	defer s.Close()

	rep := &Report{Seed: cfg.Seed, Ops: map[Class]int{}}
	rec := NewRecorder()
	db := client.New(s.OrchestratorURL, cfg.System.AdminToken)
	loadCtx, stopLoad := context.WithTimeout(ctx, cfg.Duration)
	defer stopLoad()

	var clients sync.WaitGroup
	for i := range cfg.Clients {
		clients.Add(1)
		go func() {
			defer clients.Done()
			runClient(loadCtx, NewClient(i, db, rec), rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)), cfg)
		}()
	}
	var rides *rideLoad
	if cfg.Rides {
		rides = newRideLoad(s.GatewayURL, strconv.FormatUint(cfg.Seed%1e6, 10), cfg.OpTimeout)
		sctx, cancel := context.WithTimeout(loadCtx, 30*time.Second)
		err := rides.setUp(sctx)
		cancel()
		if err != nil {
			stopLoad()
			clients.Wait()
			return rep, err
		}
		clients.Add(1)
		go func() {
			defer clients.Done()
			rides.run(loadCtx)
		}()
	}
	rep.Faults = injectFaults(loadCtx, s, cfg, rec)
	clients.Wait()
	rep.Duration = rec.Now()

	if err := settle(ctx, s, cfg.System.Slaves, 2*time.Minute); err != nil {
		return rep, fmt.Errorf("after the faults: %w", err)
	}
	h := rec.History()
	for _, op := range h {
		rep.Ops[op.Class]++
	}
	log, err := readLog(ctx, s, cfg.Logger)
	if err != nil {
		return rep, err
	}
	rows, err := Users(ctx, db)
	if err != nil {
		return rep, fmt.Errorf("final read: %w", err)
	}
	final := FinalState(ours(rows))
	expected, err := ReplayUsers(log)
	if err != nil {
		return rep, err
	}
	rep.Results = append(rep.Results,
		CheckLinearizable(h, cfg.Out, time.Minute),
		CheckAcknowledged(h, final, log),
		CheckEventualReads(h, log),
		CheckOneMaster(log, h),
	)
	if rides != nil {
		rep.Results = append(rep.Results, rides.check(ctx))
	}
	defer func() {
		// A violation is only as useful as its evidence: keep the whole history and log
		// beside the visualisation, for an analysis the checks do not make.
		if rep.Violated() {
			if path, err := WriteEvidence(cfg.Out, h, log); err != nil {
				rep.Evidence = "history not written: " + err.Error()
			} else {
				rep.Evidence = path
			}
		}
	}()
	if cfg.System.Runtime == "docker" {
		rep.Results = append(rep.Results, Result{Name: "every replica equals the log", Holds: true,
			Evidence: "not checked with --runtime docker: the copies are inside the containers"})
	} else {
		replicas, err := readReplicas(ctx, s, filepath.Join(cfg.System.Data, "workers"))
		if err != nil {
			return rep, err
		}
		rep.Results = append(rep.Results, CheckReplicas(ours(expected), replicas))
	}
	return rep, nil
}

// ours keeps the rows of the run's own usernames.
func ours(rows []rideshare.Row) []rideshare.Row {
	var out []rideshare.Row
	for _, r := range rows {
		if k, _ := r["username"].(string); strings.HasPrefix(k, keyPrefix) {
			out = append(out, r)
		}
	}
	return out
}

const password = "3d725c5ee53025f5f8abd6d2ab1c9d3d0bd0ad4e"

// runClient runs operations until ctx ends: inserts and deletes (a register per username),
// strong and eventual reads, and two-key batches, on a few keys so that clients contend.
func runClient(ctx context.Context, c *Client, rng *rand.Rand, cfg RunConfig) {
	key := func() string { return fmt.Sprintf("%s%d", keyPrefix, rng.IntN(cfg.Keys)) }
	for ctx.Err() == nil {
		// The op's own deadline, not the load's: an op started before the end may finish
		// after it, so that the load's end does not make every op in flight indeterminate.
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.OpTimeout)
		switch p := rng.IntN(100); {
		case p < 30:
			c.Insert(octx, key(), password)
		case p < 50:
			c.Delete(octx, key())
		case p < 85:
			c.StrongRead(octx, key())
		case p < 95:
			c.EventualRead(octx, key())
		default:
			a, b := key(), key()
			c.Batch(octx, []Part{{Kind: Insert, Key: a, Password: password}, {Kind: Delete, Key: b}})
		}
		cancel()
	}
}

// injectFaults runs the schedule drawn from the seed until ctx ends: every fault of
// cfg.Faults once in a shuffled order, then random ones, FaultEvery apart on average.
func injectFaults(ctx context.Context, s *system.System, cfg RunConfig, rec *Recorder) []FaultRun {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0))
	order := slices.Clone(cfg.Faults)
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	var (
		mu   sync.Mutex
		runs []FaultRun
		wg   sync.WaitGroup
	)
	for i := 0; ; i++ {
		gap := cfg.FaultEvery/2 + time.Duration(rng.Int64N(int64(cfg.FaultEvery)))
		select {
		case <-ctx.Done():
			wg.Wait()
			sort.Slice(runs, func(i, j int) bool { return runs[i].At < runs[j].At })
			return runs
		case <-time.After(gap):
		}
		name := order[rng.IntN(len(order))]
		if i < len(order) {
			name = order[i]
		}
		pick := rng.Uint64()
		wg.Add(1)
		go func() {
			defer wg.Done()
			fr := FaultRun{Name: name, At: rec.Now()}
			fr.Target, fr.Err = inject(s, cfg, name, pick)
			fr.Took = rec.Now() - fr.At
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "chaos: %6.1fs %s %s %s\n", fr.At.Seconds(), name, fr.Target, fr.Err)
			}
			mu.Lock()
			runs = append(runs, fr)
			mu.Unlock()
		}()
	}
}

// inject performs one fault; pick chooses among several targets.
func inject(s *system.System, cfg RunConfig, name string, pick uint64) (target, problem string) {
	ws := s.Orchestrator.Workers()
	var master *orchestrator.WorkerInfo
	var slaves []orchestrator.WorkerInfo
	for i, w := range ws {
		switch {
		case w.Role == coord.RoleMaster:
			master = &ws[i]
		case w.PID > 0:
			slaves = append(slaves, w)
		}
	}
	signal := func(w *orchestrator.WorkerInfo, sig syscall.Signal) error {
		return syscall.Kill(w.PID, sig)
	}
	describe := func(w *orchestrator.WorkerInfo) string { return fmt.Sprintf("%s (pid %d)", w.ID, w.PID) }
	switch name {
	case KillMaster, PauseMaster:
		if master == nil {
			return "", "no master at that moment"
		}
		if name == KillMaster {
			return describe(master), errText(signal(master, syscall.SIGKILL))
		}
		if err := signal(master, syscall.SIGSTOP); err != nil {
			return describe(master), err.Error()
		}
		// Past the session timeout, so that the master's session ends and another is
		// designated while this one still believes it is the master.
		time.Sleep(2*cfg.System.SessionTimeout + time.Second)
		return describe(master), errText(signal(master, syscall.SIGCONT))
	case KillSlave:
		if len(slaves) == 0 {
			return "", "no slave at that moment"
		}
		w := slaves[pick%uint64(len(slaves))]
		return describe(&w), errText(signal(&w, syscall.SIGKILL))
	case PartitionWorker:
		if s.Docker == nil {
			return "", "only with --runtime docker"
		}
		var all []orchestrator.WorkerInfo // master included
		for _, w := range ws {
			if w.PID > 0 {
				all = append(all, w)
			}
		}
		if len(all) == 0 {
			return "", "no worker at that moment"
		}
		w := all[pick%uint64(len(all))]
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Docker.Disconnect(ctx, w.ID); err != nil {
			return describe(&w), err.Error()
		}
		time.Sleep(2*cfg.System.SessionTimeout + time.Second)
		// The worker may have exited meanwhile (a cut-off master steps down) and been
		// removed: nothing left to heal then.
		if err := s.Docker.Reconnect(ctx, w.ID); err != nil && !errors.Is(err, dockerrt.ErrNoWorker) {
			return describe(&w) + " (not healed)", ""
		}
		return describe(&w), ""
	case RestartRabbitMQ:
		return "rabbitmq", errText(runAll(cfg.RestartRabbitMQ))
	case RestartZooKeeper:
		return "zookeeper", errText(runAll(cfg.RestartZooKeeper))
	}
	return "", "unknown fault"
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func runAll(cmds [][]string) error {
	for _, argv := range cmds {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// settle waits until the deployment is whole again and quiet: a master and the slaves asked
// for, all ready, each having applied the log's head, and the head unchanged for two looks a
// second apart (a write still queued when the load ended may yet land).
func settle(ctx context.Context, s *system.System, slaves int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last uint64
	stable := 0
	var why string
	for {
		head, err := s.Orchestrator.Log.Last(ctx)
		switch {
		case err != nil:
			why = "log: " + err.Error()
		default:
			why = whole(s.Orchestrator.Workers(), head, slaves)
		}
		if why == "" && head == last {
			if stable++; stable >= 2 {
				return nil
			}
		} else {
			stable = 0
		}
		last = head
		select {
		case <-ctx.Done():
			return fmt.Errorf("did not settle within %v: %s", timeout, why)
		case <-time.After(time.Second):
		}
	}
}

// whole says what keeps the workers from being whole at head ("" when nothing does).
func whole(ws []orchestrator.WorkerInfo, head uint64, slaves int) string {
	masters, ready := 0, 0
	for _, w := range ws {
		if w.Role == coord.RoleMaster {
			masters++
		}
		if !w.Ready {
			return fmt.Sprintf("worker %s not ready", w.ID)
		}
		if w.Applied != head {
			return fmt.Sprintf("worker %s applied %d of %d", w.ID, w.Applied, head)
		}
		ready++
	}
	if masters != 1 || ready < slaves+1 {
		return fmt.Sprintf("%d masters, %d ready workers", masters, ready)
	}
	return ""
}

// readLog reads the whole sync log.
func readLog(ctx context.Context, s *system.System, logger *slog.Logger) ([]Entry, error) {
	nc, err := s.ConnectNATS("chaos", logger)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	l, err := synclog.Open(ctx, nc, false)
	if err != nil {
		return nil, err
	}
	head, err := l.Last(ctx)
	if err != nil {
		return nil, err
	}
	var log []Entry
	err = l.Read(ctx, 1, head, 1000, func(ms []synclog.Msg) error {
		for _, m := range ms {
			e, err := DecodeEntry(m.Seq, m.Data)
			if err != nil {
				return err
			}
			log = append(log, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the log: %w", err)
	}
	return log, nil
}

// readReplicas reads the users of the run from every worker's SQLite copy (the process
// runtime keeps each under dir/<id>/db.sqlite).
func readReplicas(ctx context.Context, s *system.System, dir string) (map[string][]rideshare.Row, error) {
	out := map[string][]rideshare.Row{}
	for _, w := range s.Orchestrator.Workers() {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, w.ID, "db.sqlite")+"?mode=ro")
		if err != nil {
			return nil, err
		}
		rows, err := db.QueryContext(ctx, "SELECT id, username FROM users WHERE substr(username, 1, ?) = ? ORDER BY id", len(keyPrefix), keyPrefix)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("replica %s: %w", w.ID, err)
		}
		var got []rideshare.Row
		for rows.Next() {
			var id int64
			var name string
			if err := rows.Scan(&id, &name); err != nil {
				rows.Close()
				db.Close()
				return nil, fmt.Errorf("replica %s: %w", w.ID, err)
			}
			got = append(got, rideshare.Row{"id": id, "username": name})
		}
		err = rows.Err()
		rows.Close()
		db.Close()
		if err != nil {
			return nil, fmt.Errorf("replica %s: %w", w.ID, err)
		}
		out[w.ID] = got
	}
	return out, nil
}
