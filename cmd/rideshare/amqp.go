package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/rideshare/rideshare/broker"
)

// openAMQP connects the four queues to RabbitMQ.
func openAMQP(ctx context.Context, url, name string, logger *slog.Logger) (broker.Broker, error) {
	return nil, errors.New("--amqp: RabbitMQ transport not built yet")
}
