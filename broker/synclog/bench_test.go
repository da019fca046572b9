package synclog_test

// Benchmarks of the sync log on the embedded JetStream server. Measured, never asserted:
//
//	go test ./broker/synclog -run '^$' -bench . -benchmem

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
)

// benchEntry is the size of a resolved ride insert as the master appends it (~270 bytes).
var benchEntry = []byte(`{"table":"rides","insert":{"created_by":"b18c2f3a9u42","destination":117,"ride_id":123456,` +
	`"source":12,"timestamp":"17-03-2032:41-27-09","ts":1963200461},"request_id":"0123456789abcdef0123456789abcdef"}`)

// benchLog starts a JetStream server in b.TempDir() and opens the log twice: through the
// orchestrator's in-process connection (which creates the stream) and through a TCP
// connection, as a worker has. It returns the worker-side log.
func benchLog(b *testing.B, inProcess bool) *synclog.Log {
	b.Helper()
	srv := &natsq.Server{StoreDir: b.TempDir(), Port: -1}
	if err := srv.Open(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	orch, err := natsq.Connect(srv.ClientURL(), "bench-orchestrator", srv.InProcess(), quiet)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(orch.Close)
	ctx := context.Background()
	log, err := synclog.Open(ctx, orch, true)
	if err != nil {
		b.Fatal(err)
	}
	if inProcess {
		return log
	}
	var nc *nats.Conn
	if nc, err = natsq.Connect(srv.ClientURL(), "bench-worker", nil, quiet); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	wlog, err := synclog.Open(ctx, nc, false)
	if err != nil {
		b.Fatal(err)
	}
	return wlog
}

// BenchmarkAppend is the master's fenced append (ExpectLastSequence), one at a time as the
// master does: a round trip to JetStream and its file store per acknowledged write. "tcp" is
// how a worker process reaches the orchestrator's server; "inprocess" is the floor.
func BenchmarkAppend(b *testing.B) {
	for _, mode := range []string{"tcp", "inprocess"} {
		b.Run(mode, func(b *testing.B) {
			log := benchLog(b, mode == "inprocess")
			ctx := context.Background()
			var last uint64
			for b.Loop() {
				seq, err := log.Append(ctx, last, benchEntry)
				if err != nil {
					b.Fatal(err)
				}
				last = seq
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

// BenchmarkRead is a new slave reading the log from the start in batches of 2000 (the
// worker's CatchUpBatch), over TCP: one op is one entry delivered.
func BenchmarkRead(b *testing.B) {
	for _, n := range []int{100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			log := benchLog(b, false)
			ctx := context.Background()
			for i := range n {
				if _, err := log.Append(ctx, uint64(i), benchEntry); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			read := 0
			for read < b.N {
				want := min(n, b.N-read)
				got := 0
				if err := log.Read(ctx, 1, uint64(want), 2000, func(msgs []synclog.Msg) error {
					got += len(msgs)
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				if got != want {
					b.Fatalf("read %d entries, want %d", got, want)
				}
				read += got
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
