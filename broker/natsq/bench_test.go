package natsq_test

// Benchmark of one queue round trip on the embedded NATS server. Measured, never asserted:
//
//	go test ./broker/natsq -run '^$' -bench . -benchmem

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/rideshare/rideshare/broker/brokertest"
	"github.com/rideshare/rideshare/broker/natsq"
)

// BenchmarkCall is one request/reply on readQ (brokertest.BenchmarkCall): the caller on the
// orchestrator's in-process connection, the consumer (a slave) on its own TCP connection.
func BenchmarkCall(b *testing.B) {
	srv := &natsq.Server{StoreDir: b.TempDir(), Port: -1}
	if err := srv.Open(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	worker := natsq.New(srv.ClientURL(), "bench-slave")
	worker.Logger = quiet
	if err := worker.Open(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { worker.Close() })
	orch := natsq.New(srv.ClientURL(), "bench-orchestrator")
	orch.Logger, orch.InProcess = quiet, srv.InProcess()
	if err := orch.Open(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { orch.Close() })

	brokertest.BenchmarkCall(b, orch, worker)
}
