// Package broker is the queue contract between the orchestrator and the workers: requests on
// writeQ (to the master) and readQ (to the slaves, round robin), their answers on responseQ,
// and committed writes fanned out on syncQ. Implementations: natsq (embedded NATS, the default)
// and amqpq (RabbitMQ). The durable sync log is separate (package synclog).
package broker

import (
	"context"
	"errors"
)

// Queue names, as the product documents them.
const (
	WriteQ    = "writeQ"
	ReadQ     = "readQ"
	SyncQ     = "syncQ"
	ResponseQ = "responseQ"
)

// ErrNoConsumer means nobody consumes the queue right now (no master during a failover, no
// ready slave): the request was not delivered and may be retried.
var ErrNoConsumer = errors.New("no consumer on the queue")

// ErrTimeout means the request may have been delivered but no answer came in time.
var ErrTimeout = errors.New("no answer in time")

// Handler answers one request. It must not block past ctx.
type Handler func(ctx context.Context, body []byte) (reply []byte)

// Subscription is a running consumer. Stop ends it: no new message is taken, those already
// taken are answered, then Stop returns.
type Subscription interface {
	Stop() error
}

// Broker carries the four queues.
type Broker interface {
	// Call publishes body on queue (WriteQ or ReadQ) and waits for its answer on responseQ.
	// It returns ErrNoConsumer if the request could not be delivered, ErrTimeout or the
	// context's error if no answer came.
	Call(ctx context.Context, queue string, body []byte) ([]byte, error)
	// Consume takes requests from queue and answers them with h, running up to concurrency
	// handlers at once. Consumers of one queue share its messages round robin.
	Consume(ctx context.Context, queue string, concurrency int, h Handler) (Subscription, error)
	// PublishSync sends body to every current syncQ subscriber.
	PublishSync(ctx context.Context, body []byte) error
	// SubscribeSync delivers every syncQ message published from now on, in order, to fn.
	// Delivery is best effort: a subscriber fills gaps from the sync log.
	SubscribeSync(ctx context.Context, fn func(body []byte)) (Subscription, error)
	Close() error
}
