package brokertest

import (
	"bytes"
	"context"
	"testing"

	"github.com/rideshare/rideshare/broker"
)

// Sizes close to a list-rides read: the query the orchestrator sends and ~11 rows back.
var (
	benchQuery = []byte(`{"table":"rides","columns":["ride_id","created_by","timestamp"],"where":{"destination":7,"source":3,` +
		`"ts":{"gt":1795000000}},"order":[{"column":"ts"},{"column":"ride_id"}],"min_seq":123456}`)
	benchReply = append([]byte(`{"rows":[`), append(bytes.Repeat([]byte(`{"created_by":"b18c2f3a9u42","ride_id":123456,"timestamp":"17-03-2032:41-27-09"},`), 11), []byte(`{}],"seq":123456}`)...)...)
)

// BenchmarkCall measures one request/reply on readQ, the same way on every transport so that
// they compare: consumer (a slave) answers a fixed reply with the worker's read concurrency
// (8); caller (the orchestrator) calls. /serial is one caller (latency); /parallel is 32
// callers (throughput, as 32 HTTP clients make).
func BenchmarkCall(b *testing.B, caller, consumer broker.Broker) {
	ctx := context.Background()
	sub, err := consumer.Consume(ctx, broker.ReadQ, 8, func(context.Context, []byte) []byte { return benchReply })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sub.Stop() })
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := caller.Call(ctx, broker.ReadQ, benchQuery); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(16) // 32 goroutines on 2 cores
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := caller.Call(ctx, broker.ReadQ, benchQuery); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
}
