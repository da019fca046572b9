package amqpq_test

// Benchmark of one queue round trip on RabbitMQ, the same as natsq's so that the two
// transports compare. Measured, never asserted (needs `make services`):
//
//	go test ./broker/amqpq -run '^$' -bench . -benchmem

import (
	"testing"

	"github.com/rideshare/rideshare/broker/brokertest"
)

// BenchmarkCall is one request/reply on readQ through RabbitMQ (publisher confirms, manual
// acks), caller and consumer each on its own connection, in a fresh virtual host.
func BenchmarkCall(b *testing.B) {
	mustRabbit(b)
	v := mustVhost(b)
	brokertest.BenchmarkCall(b, mustBroker(b, v, "bench-orchestrator"), mustBroker(b, v, "bench-slave"))
}
