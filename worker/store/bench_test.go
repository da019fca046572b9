package store_test

// Benchmarks of the store's hot paths. Speed is measured here, never asserted: run
//
//	go test ./worker/store -run '^$' -bench . -benchmem
//
// and see docs/BENCHMARKS.md for the figures on the reference machine.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/rideshare/rideshare"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rideshare/rideshare/worker/store"
)

const benchPassword = "3d725c5ee53025f5f8abd6d2ab1c9d3d0bd0ad4e"

func benchOpen(b *testing.B) *store.Store {
	b.Helper()
	s := store.New(filepath.Join(b.TempDir(), "bench.sqlite"))
	if err := s.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// benchRide is a ride insert as a client sends it (no ride_id: the master assigns it).
func benchRide(rng *rand.Rand, by string, areas int) rideshare.Write {
	src := 1 + rng.IntN(areas)
	dst := 1 + rng.IntN(areas-1)
	if dst >= src {
		dst++
	}
	ts := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC).Unix() + int64(rng.IntN(5*365*24*3600))
	return rideshare.Write{Table: "rides", Insert: map[string]any{
		"created_by": by, "timestamp": time.Unix(ts, 0).UTC().Format("02-01-2006:05-04-15"),
		"ts": ts, "source": int64(src), "destination": int64(dst),
	}}
}

// benchAppender is an in-memory sync log: the next sequence, always accepted.
func benchAppender(s *store.Store) func(store.LogOp) (uint64, error) {
	return func(store.LogOp) (uint64, error) { return s.Applied() + 1, nil }
}

// logEntries returns n resolved log entries as a master would have appended them: a user, then
// n-1 ride inserts with their assigned ride_id and a request id each.
func logEntries(n int) []store.Entry {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([]store.Entry, 0, n)
	out = append(out, store.Entry{Seq: 1, Op: store.LogOp{Write: rideshare.Write{Table: "users", RequestID: "u0",
		Insert: map[string]any{"id": int64(1), "username": "alice", "password": benchPassword}}}})
	for i := 1; i < n; i++ {
		w := benchRide(rng, "alice", 198)
		w.Insert["ride_id"] = int64(i)
		// As the orchestrator makes them: a clock prefix, then random bits.
		w.RequestID = fmt.Sprintf("%016x%016x", 1_800_000_000_000_000_000+i*1000, rng.Uint64())
		out = append(out, store.Entry{Seq: uint64(i + 1), Op: store.LogOp{Write: w}})
	}
	return out
}

// BenchmarkApply is a slave applying the log: one op is one entry (a ride insert), applied in
// transactions of `batch` entries (the worker uses up to 2000 while catching up, and whatever
// has queued on syncQ otherwise). batch=1 vs batch=100 is the cost of one transaction each.
func BenchmarkApply(b *testing.B) {
	for _, batch := range []int{1, 10, 100, 2000} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			ctx := context.Background()
			s := benchOpen(b)
			entries := logEntries(b.N + 1)
			if err := s.Apply(ctx, entries[:1]); err != nil {
				b.Fatal(err)
			}
			entries = entries[1:]
			b.ResetTimer()
			for i := 0; i < len(entries); i += batch {
				if err := s.Apply(ctx, entries[i:min(i+batch, len(entries))]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkApplyFromJSON is BenchmarkApply with batch=2000 plus decoding each entry from the
// JSON the log stores, as worker.catchUp does: the slave's whole per-entry cost of a catch-up
// apart from fetching from JetStream.
func BenchmarkApplyFromJSON(b *testing.B) {
	ctx := context.Background()
	s := benchOpen(b)
	entries := logEntries(b.N + 1)
	if err := s.Apply(ctx, entries[:1]); err != nil {
		b.Fatal(err)
	}
	raw := make([][]byte, b.N)
	for i, e := range entries[1:] {
		raw[i], _ = json.Marshal(e.Op)
	}
	const batch = 2000
	b.ResetTimer()
	for i := 0; i < len(raw); i += batch {
		part := raw[i:min(i+batch, len(raw))]
		es := make([]store.Entry, 0, len(part))
		for j, data := range part {
			var op store.LogOp
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.UseNumber()
			if err := dec.Decode(&op); err != nil {
				b.Fatal(err)
			}
			es = append(es, store.Entry{Seq: uint64(i + j + 2), Op: op})
		}
		if err := s.Apply(ctx, es); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// seedRides fills s with n rides between areas 1..areas (so about n/(areas×(areas-1)) rides
// per route), all upcoming, in batches.
func seedRides(b *testing.B, s *store.Store, n, areas int) {
	b.Helper()
	ctx := context.Background()
	l := &store.Local{Store: s}
	if _, err := l.Write(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "alice", "password": benchPassword}}); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for done := 0; done < n; {
		k := min(rideshare.MaxBatch, n-done)
		batch := make([]rideshare.Write, k)
		for i := range batch {
			batch[i] = benchRide(rng, "alice", areas)
		}
		if _, err := l.Write(ctx, rideshare.Write{Batch: batch}); err != nil {
			b.Fatal(err)
		}
		done += k
	}
}

// listQuery is the rides service's R2 query.
func listQuery(rng *rand.Rand, areas int) rideshare.Read {
	src := 1 + rng.IntN(areas)
	dst := 1 + rng.IntN(areas-1)
	if dst >= src {
		dst++
	}
	return rideshare.Read{
		Table:   "rides",
		Columns: []string{"ride_id", "created_by", "timestamp"},
		Where:   rideshare.Where{"source": int64(src), "destination": int64(dst), "ts": map[string]any{"gt": time.Now().Unix()}},
		Order:   []rideshare.Order{{Column: "ts"}, {Column: "ride_id"}},
	}
}

// BenchmarkQueryRoute is a slave answering list rides (R2) on 100,000 rides: areas=198 spreads
// them over every route (~2.6 rides a route), areas=96 gives ~11 a route (what the load
// command's seed returns), areas=30 ~115. /parallel runs the query from GOMAXPROCS×4
// goroutines on the store's read pool; /json adds marshalling the answer as the slave does.
func BenchmarkQueryRoute(b *testing.B) {
	for _, areas := range []int{198, 96, 30} {
		b.Run("areas="+strconv.Itoa(areas), func(b *testing.B) {
			s := benchOpen(b)
			seedRides(b, s, 100_000, areas)
			ctx := context.Background()
			b.Run("serial", func(b *testing.B) {
				rng := rand.New(rand.NewPCG(5, 6))
				rows := 0
				for b.Loop() {
					r, err := s.Query(ctx, listQuery(rng, areas))
					if err != nil {
						b.Fatal(err)
					}
					rows += len(r)
				}
				b.ReportMetric(float64(rows)/float64(b.N), "rows/op")
			})
			b.Run("json", func(b *testing.B) {
				rng := rand.New(rand.NewPCG(5, 6))
				for b.Loop() {
					r, err := s.Query(ctx, listQuery(rng, areas))
					if err != nil {
						b.Fatal(err)
					}
					if _, err := json.Marshal(map[string]any{"rows": r, "seq": 42}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					rng := rand.New(rand.NewPCG(rand.Uint64(), 6))
					for pb.Next() {
						if _, err := s.Query(ctx, listQuery(rng, areas)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// BenchmarkExecute is the master's write path without the network: validate, one
// transaction with the request-id check, the insert, the (in-memory) log append, the request
// record and the applied sequence, commit. One op is one acknowledged ride.
func BenchmarkExecute(b *testing.B) {
	ctx := context.Background()
	s := benchOpen(b)
	appendLog := benchAppender(s)
	if _, err := s.Execute(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "alice", "password": benchPassword}}, appendLog); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	ops := make([]rideshare.Write, b.N)
	for i := range ops {
		ops[i] = benchRide(rng, "alice", 198)
		ops[i].RequestID = fmt.Sprintf("%032x", i)
	}
	b.ResetTimer()
	for i := range ops {
		if _, err := s.Execute(ctx, ops[i], appendLog); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// BenchmarkExecuteBatch100 is one Execute of a batch of 100 ride inserts: what a master with
// group commit would pay for 100 client writes in one transaction (an upper bound on what
// grouping can save: one op is one ride).
func BenchmarkExecuteBatch100(b *testing.B) {
	ctx := context.Background()
	s := benchOpen(b)
	appendLog := benchAppender(s)
	if _, err := s.Execute(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "alice", "password": benchPassword}}, appendLog); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 10))
	const per = 100
	b.ResetTimer()
	for i := 0; i < b.N; i += per {
		k := min(per, b.N-i)
		batch := make([]rideshare.Write, k)
		for j := range batch {
			batch[j] = benchRide(rng, "alice", 198)
		}
		if _, err := s.Execute(ctx, rideshare.Write{Batch: batch, RequestID: fmt.Sprintf("%032x", i)}, appendLog); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rides/s")
}

// BenchmarkExecuteGroup is the master's group commit: ExecuteGroup of `group` independent
// ride inserts (each in its own savepoint, one transaction, one log entry). One op is one
// acknowledged ride; group=1 is Execute.
func BenchmarkExecuteGroup(b *testing.B) {
	for _, group := range []int{1, 8, 32} {
		b.Run("group="+strconv.Itoa(group), func(b *testing.B) {
			ctx := context.Background()
			s := benchOpen(b)
			appendLog := benchAppender(s)
			if _, err := s.Execute(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "alice", "password": benchPassword}}, appendLog); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(11, 12))
			ops := make([]rideshare.Write, b.N)
			for i := range ops {
				ops[i] = benchRide(rng, "alice", 198)
				ops[i].RequestID = fmt.Sprintf("%032x", i)
			}
			b.ResetTimer()
			for i := 0; i < len(ops); i += group {
				for _, o := range s.ExecuteGroup(ctx, ops[i:min(i+group, len(ops))], appendLog) {
					if o.Err != nil {
						b.Fatal(o.Err)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}
