package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/cmd/rideshare/systemtest"

	"github.com/rideshare/rideshare/broker/synclog"
	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/orchestrator/client"
	"github.com/rideshare/rideshare/worker/store"
)

// coordinators lists the coordinators the HA tests run against.
func coordinators(t *testing.T) []struct {
	name string
	opt  func(*testing.T) stackOpt
} {
	cs := []struct {
		name string
		opt  func(*testing.T) stackOpt
	}{{"embedded", func(*testing.T) stackOpt { return func(*system.Config) {} }}}
	if os.Getenv("RIDESHARE_SKIP_AMQP") != "1" {
		cs = append(cs, struct {
			name string
			opt  func(*testing.T) stackOpt
		}{"embedded-on-rabbitmq", withAMQP})
	}
	if os.Getenv("RIDESHARE_SKIP_ZK") == "1" {
		t.Log("RIDESHARE_SKIP_ZK=1: ZooKeeper variants skipped")
		return cs
	}
	return append(cs, struct {
		name string
		opt  func(*testing.T) stackOpt
	}{"zookeeper", withZK})
}

func withZK(t *testing.T) stackOpt { return systemtest.ZK(t) }

// writeLoad keeps writing rides, each with a unique ts, through the database API and
// remembers which were acknowledged.
type writeLoad struct {
	st     *stack
	next   atomic.Int64
	mu     sync.Mutex
	acked  []int64
	failed int
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startWriteLoad(t *testing.T, st *stack, writers int) *writeLoad {
	t.Helper()
	mustCall(t, 201, "PUT", st.GatewayURL+"/api/v1/users", map[string]string{"username": "load", "password": sha1hex(0)})
	l := &writeLoad{st: st, stop: make(chan struct{})}
	hc := &http.Client{Timeout: 60 * time.Second}
	// With several nodes the load goes through the users' and rides' client: it moves to
	// another node when one is down, and its request IDs make a retried write apply once.
	var db *client.Client
	if st.Nodes != nil {
		db = client.New(st.OrchestratorURL, "")
	}
	for range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ts := l.next.Add(1)
				op := loadRide(ts)
				var ok bool
				if db != nil {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					_, err := db.Write(ctx, op)
					cancel()
					ok = err == nil
				} else {
					b, _ := json.Marshal(op)
					resp, err := hc.Post(st.OrchestratorURL+"/api/v1/db/write", "application/json", bytesReader(b))
					ok = err == nil && resp.StatusCode == 200
					if resp != nil {
						resp.Body.Close()
					}
				}
				l.mu.Lock()
				if ok {
					l.acked = append(l.acked, ts)
				} else {
					l.failed++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// loadRide is the load's write of the ride with the given ts, by the user "load".
func loadRide(ts int64) rideshare.Write {
	return rideshare.Write{Table: "rides", Insert: map[string]any{"created_by": "load", "timestamp": "01-01-2031:00-00-00", "ts": ts, "source": 1, "destination": 2}}
}

// lastAcked is the ts of the newest acknowledged write.
func (l *writeLoad) lastAcked() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Max(l.acked)
}

func (l *writeLoad) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// waitAcks waits until n more writes have been acknowledged.
func (l *writeLoad) waitAcks(t *testing.T, n int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	want := l.ackedCount() + n
	eventually(t, timeout, fmt.Sprintf("%d acknowledged writes", want), func() bool { return l.ackedCount() >= want })
	return time.Since(start)
}

func (l *writeLoad) finish() []int64 {
	close(l.stop)
	l.wg.Wait()
	return l.acked
}

// settled waits until the wanted workers run, all ready, one of them master, and (unless
// writes are still coming) all at the log's head.
func settled(t *testing.T, st *stack, wantWorkers int) []orchestrator.WorkerInfo {
	return waitWorkers(t, st, wantWorkers, true)
}

func waitWorkers(t *testing.T, st *stack, wantWorkers int, atHead bool) []orchestrator.WorkerInfo {
	t.Helper()
	ctx := context.Background()
	nc, err := st.ConnectNATS("test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	log, err := synclog.Open(ctx, nc, false)
	if err != nil {
		t.Fatal(err)
	}
	var ws []orchestrator.WorkerInfo
	state := "nothing seen"
	defer func() {
		if t.Failed() {
			t.Logf("last seen: %s", state)
		}
	}()
	eventually(t, 60*time.Second, fmt.Sprintf("%d ready workers at the log's head", wantWorkers), func() bool {
		last, err := log.Last(ctx)
		if err != nil {
			state = "log head: " + err.Error()
			return false
		}
		ws = workers(t, st)
		state = fmt.Sprintf("log head %d, workers %+v", last, ws)
		if len(ws) != wantWorkers {
			return false
		}
		masters := 0
		for _, w := range ws {
			if !w.Ready || (atHead && w.Applied != last) {
				return false
			}
			if w.Role == "master" {
				masters++
			}
		}
		return masters == 1
	})
	return ws
}

// checkReplicas opens every worker's SQLite file and checks that each acknowledged write is
// there exactly once, and that no write is there twice.
func checkReplicas(t *testing.T, st *stack, ws []orchestrator.WorkerInfo, acked []int64) {
	t.Helper()
	ctx := context.Background()
	for _, w := range ws {
		db := store.New(filepath.Join(workersDir(st), w.ID, "db.sqlite"))
		if err := db.Open(ctx); err != nil {
			t.Fatal(err)
		}
		rows, err := db.Query(ctx, rideshare.Read{Table: "rides", Columns: []string{"ts"}, Where: rideshare.Where{"created_by": "load"}})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int64]int{}
		for _, r := range rows {
			seen[r["ts"].(int64)]++
		}
		for ts, n := range seen {
			if n != 1 {
				t.Errorf("%s %s: write %d applied %d times", w.Role, w.ID, ts, n)
			}
		}
		missing := 0
		for _, ts := range acked {
			if seen[ts] != 1 {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("%s %s (pid %d): %d of %d acknowledged writes missing", w.Role, w.ID, w.PID, missing, len(acked))
		}
	}
}

// workersDir holds the workers' databases.
func workersDir(st *stack) string {
	if st.Nodes != nil {
		return st.Nodes.WorkersDir()
	}
	return st.Runtime.DataDir
}

// gone waits until pid is no longer listed as a worker.
func gone(t *testing.T, st *stack, pid int) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("worker %d to be noticed dead", pid), func() bool {
		for _, w := range workers(t, st) {
			if w.PID == pid {
				return false
			}
		}
		return true
	})
}

func postPIDs(t *testing.T, url string) []int {
	t.Helper()
	var pids []int
	if err := json.Unmarshal(mustCall(t, 200, "POST", url, nil), &pids); err != nil || len(pids) != 1 {
		t.Fatalf("POST %s answered %v (%v)", url, pids, err)
	}
	return pids
}

func TestHA(t *testing.T) {
	if testing.Short() {
		t.Skip("fault tests")
	}
	for _, c := range coordinators(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Run("master killed ten times under writes loses nothing", func(t *testing.T) {
				st := mustStack(t, c.opt(t), withSlaves(2))
				load := startWriteLoad(t, st, 4)
				load.waitAcks(t, 20, 30*time.Second)
				for i := range 10 {
					waitWorkers(t, st, 3, false)
					old := postPIDs(t, st.OrchestratorURL+"/api/v1/crash/master")[0]
					d := load.waitAcks(t, 5, 30*time.Second)
					t.Logf("kill %d (pid %d): writes acknowledged again after %v", i+1, old, d.Round(time.Millisecond))
				}
				acked := load.finish()
				ws := settled(t, st, 3)
				checkReplicas(t, st, ws, acked)
				t.Logf("%d writes acknowledged, %d not (in flight during a kill)", len(acked), load.failed)
			})
			t.Run("a new master is listed before its first acknowledged write", func(t *testing.T) {
				st := mustStack(t, c.opt(t), withSlaves(2))
				for i := range 5 {
					waitWorkers(t, st, 3, false)
					old := postPIDs(t, st.OrchestratorURL+"/api/v1/crash/master")[0]
					for n := 0; ; n++ {
						if n == 20 {
							t.Fatalf("kill %d: no write acknowledged in 20 tries", i+1)
						}
						code, body := call(t, "POST", st.OrchestratorURL+"/api/v1/db/write",
							rideshare.Write{Table: "users", Insert: map[string]any{"username": fmt.Sprintf("m%d-%d", i, n), "password": sha1hex(n)}})
						if code != 200 {
							continue // 503 while no master takes writes: try the next
						}
						// The write is acknowledged: whoever took it is listed as master now.
						ws := st.Orchestrator.Workers()
						if !slices.ContainsFunc(ws, func(w orchestrator.WorkerInfo) bool { return w.Role == "master" && w.PID != old }) {
							t.Fatalf("kill %d: a write was acknowledged (%s) while the workers listed no new master: %+v", i+1, body, ws)
						}
						break
					}
				}
			})
			t.Run("slaves killed under reads keep answering", func(t *testing.T) {
				st := mustStack(t, c.opt(t), withSlaves(2))
				stop := make(chan struct{})
				var failures, reads atomic.Int64
				var wg sync.WaitGroup
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-stop:
								return
							default:
							}
							code, body := call(t, "POST", st.OrchestratorURL+"/api/v1/db/read", rideshare.Read{Table: "users", Count: true})
							reads.Add(1)
							if code != 200 {
								failures.Add(1)
								t.Logf("read failed: %d %s", code, body)
							}
						}
					}()
				}
				for range 3 {
					settled(t, st, 3)
					gone(t, st, postPIDs(t, st.OrchestratorURL+"/api/v1/crash/slave")[0])
					before := reads.Load()
					eventually(t, 30*time.Second, "more reads", func() bool { return reads.Load() > before+20 })
				}
				settled(t, st, 3)
				close(stop)
				wg.Wait()
				if f := failures.Load(); f > 0 {
					t.Fatalf("%d of %d reads failed while slaves were killed", f, reads.Load())
				}
			})
			t.Run("crashed master is replaced by the lowest-PID slave", func(t *testing.T) {
				st := mustStack(t, c.opt(t), withSlaves(3))
				ws := settled(t, st, 4)
				var slaves []int
				for _, w := range ws {
					if w.Role == "slave" {
						slaves = append(slaves, w.PID)
					}
				}
				sort.Ints(slaves)
				old := postPIDs(t, st.OrchestratorURL+"/api/v1/crash/master")[0]
				gone(t, st, old)
				ws = settled(t, st, 4)
				if m := masterOf(t, st); m.PID != slaves[0] {
					t.Fatalf("new master pid %d, want the lowest slave pid %d (slaves %v)", m.PID, slaves[0], slaves)
				}
				var list []int
				json.Unmarshal(mustCall(t, 200, "GET", st.OrchestratorURL+"/api/v1/worker/list", nil), &list)
				if len(list) != 4 || !sort.IntsAreSorted(list) {
					t.Fatalf("worker/list %v: want 4 ascending pids", list)
				}
				for _, pid := range list {
					if pid == old {
						t.Fatalf("killed master %d still listed: %v", old, list)
					}
				}
				// The highest-PID slave is the one crash/slave kills.
				high := 0
				for _, w := range ws {
					if w.Role == "slave" && w.PID > high {
						high = w.PID
					}
				}
				if got := postPIDs(t, st.OrchestratorURL+"/api/v1/crash/slave")[0]; got != high {
					t.Fatalf("crash/slave killed %d, want the highest slave pid %d", got, high)
				}
				settled(t, st, 4)
			})
			t.Run("paused master acknowledges nothing after it is replaced", func(t *testing.T) {
				st := mustStack(t, c.opt(t), withSlaves(2))
				settled(t, st, 3)
				load := startWriteLoad(t, st, 4)
				load.waitAcks(t, 20, 30*time.Second)
				old := masterOf(t, st)
				if err := syscall.Kill(old.PID, syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				eventually(t, 30*time.Second, "a new master", func() bool {
					for _, w := range workers(t, st) {
						if w.Role == "master" && w.Ready && w.ID != old.ID {
							return true
						}
					}
					return false
				})
				load.waitAcks(t, 20, 30*time.Second)
				if err := syscall.Kill(old.PID, syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
				load.waitAcks(t, 50, 30*time.Second)
				acked := load.finish()
				ws := settled(t, st, 3)
				for _, w := range ws {
					if w.ID == old.ID {
						t.Fatalf("the paused master %s is still a worker after resuming: %+v", old.ID, ws)
					}
				}
				checkReplicas(t, st, ws, acked)
			})
			t.Run("no master or slave to crash is a 409", func(t *testing.T) {
				st := mustStack(t, c.opt(t), withSlaves(0))
				code, body := call(t, "POST", st.OrchestratorURL+"/api/v1/crash/slave", nil)
				if code != 409 {
					t.Fatalf("crash/slave with no slave: %d %s, want 409", code, body)
				}
			})
		})
	}
}
