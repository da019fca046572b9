package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rideshare/rideshare"

	"github.com/rideshare/rideshare/httpsvc"
	"github.com/rideshare/rideshare/worker/store"
)

// The baseline is the floor of what any design can do for list rides on this machine: one
// process, one SQLite file (the worker's schema and indexes, through store.Local), a plain
// net/http handler that runs the rides service's list query and writes the same JSON. No
// gateway, no service hop, no queue, no replication.

// baselineServer is the baseline's HTTP server.
type baselineServer struct {
	URL   string
	local *store.Local
	srv   *http.Server
	dir   string
}

func startBaseline(ctx context.Context, users []string, seedRides, routes int) (*baselineServer, []int64, error) {
	dir, err := os.MkdirTemp("", "rideshare-baseline-")
	if err != nil {
		return nil, nil, err
	}
	bs := &baselineServer{dir: dir}
	st := store.New(filepath.Join(dir, "baseline.sqlite"))
	if err := st.Open(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	bs.local = &store.Local{Store: st}
	ids, err := bs.seed(ctx, users, seedRides, routes)
	if err != nil {
		bs.Close()
		return nil, nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		bs.Close()
		return nil, nil, err
	}
	bs.URL = "http://" + l.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/rides", bs.list)
	bs.srv = httpsvc.NewServer(mux, httpsvc.DefaultLimits)
	go bs.srv.Serve(l)
	return bs, ids, nil
}

// seed writes the same users and rides a load run seeds, in batches.
func (bs *baselineServer) seed(ctx context.Context, users []string, n, routes int) ([]int64, error) {
	var batch []rideshare.Write
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := bs.local.Write(ctx, rideshare.Write{Batch: batch})
		batch = batch[:0]
		return err
	}
	for _, u := range users {
		batch = append(batch, rideshare.Write{Table: "users", Insert: map[string]any{"username": u, "password": benchPassword}})
	}
	if err := flush(); err != nil {
		return nil, err
	}
	pairs := routePairs(routes)
	for i := range n {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		p := pairs[i%len(pairs)]
		stamp := futureStamp(rng)
		t, err := time.Parse("02-01-2006:05-04-15", stamp)
		if err != nil {
			return nil, err
		}
		batch = append(batch, rideshare.Write{Table: "rides", Insert: map[string]any{
			"created_by": users[i%len(users)], "timestamp": stamp, "ts": t.Unix(),
			"source": int64(p[0]), "destination": int64(p[1]),
		}})
		if len(batch) == rideshare.MaxBatch {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	return ids, nil
}

type baselineRide struct {
	RideID    int64  `json:"rideId"`
	Username  string `json:"username"`
	Timestamp string `json:"timestamp"`
}

// list answers R2 as the rides service does: the same query, the same JSON.
func (bs *baselineServer) list(w http.ResponseWriter, r *http.Request) {
	src, err1 := strconv.ParseInt(r.URL.Query().Get("source"), 10, 64)
	dst, err2 := strconv.ParseInt(r.URL.Query().Get("destination"), 10, 64)
	if err1 != nil || err2 != nil || src == dst || src < 1 || dst < 1 || src > 198 || dst > 198 {
		http.Error(w, `{"error":"bad source or destination"}`, http.StatusBadRequest)
		return
	}
	rows, err := bs.local.Read(r.Context(), rideshare.Read{
		Table:   "rides",
		Columns: []string{"ride_id", "created_by", "timestamp"},
		Where:   rideshare.Where{"source": src, "destination": dst, "ts": map[string]any{"gt": time.Now().Unix()}},
		Order:   []rideshare.Order{{Column: "ts"}, {Column: "ride_id"}},
	})
	if err != nil {
		http.Error(w, `{"error":"`+err.Error()+`"}`, http.StatusInternalServerError)
		return
	}
	if len(rows) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	out := make([]baselineRide, len(rows))
	for i, row := range rows {
		out[i].RideID, _ = row["ride_id"].(int64)
		out[i].Username, _ = row["created_by"].(string)
		out[i].Timestamp, _ = row["timestamp"].(string)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(out)
}

func (bs *baselineServer) Close() error {
	var errs []error
	if bs.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, bs.srv.Shutdown(ctx))
		cancel()
	}
	if bs.local != nil {
		errs = append(errs, bs.local.Store.Close())
	}
	errs = append(errs, os.RemoveAll(bs.dir))
	return errors.Join(errs...)
}

// runBaseline starts the baseline and loads it with the list-rides client loop.
func (b *bencher) runBaseline(ctx context.Context) (*LoadReport, error) {
	users := make([]string, max(b.cfg.seedUsers, 1))
	for i := range users {
		users[i] = "b" + b.runID + "u" + strconv.Itoa(i)
	}
	bs, ids, err := startBaseline(ctx, users, b.cfg.seedRides, b.cfg.routes)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	defer bs.Close()
	ls := &loadState{base: bs.URL, runID: b.runID, routes: b.cfg.routes, users: users, seeded: ids, rides: ids}
	saved := b.cfg.only
	b.cfg.only = "list-rides"
	defer func() { b.cfg.only = saved }()
	rep, err := b.drive(ctx, ls, []*endpoint{endpointByName("list-rides")}, "baseline")
	if rep != nil {
		rep.Target = "in-process SQLite baseline " + bs.URL
	}
	return rep, err
}

func (b *bencher) runBaselineOnly(ctx context.Context) (*LoadReport, error) {
	return b.runBaseline(ctx)
}
