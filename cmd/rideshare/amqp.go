package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/amqpq"
)

// openAMQP connects the four queues to RabbitMQ. The orchestrator (name "orchestrator")
// declares its reply queue, responseQ, as soon as it connects; workers never declare one.
func openAMQP(ctx context.Context, url, name string, reg prometheus.Registerer, logger *slog.Logger) (broker.Broker, error) {
	b := amqpq.New(url, name)
	b.Logger, b.Registerer = logger, reg
	b.Caller = name == "orchestrator"
	if err := b.Open(ctx); err != nil {
		return nil, fmt.Errorf("--amqp: %w", err)
	}
	return b, nil
}
