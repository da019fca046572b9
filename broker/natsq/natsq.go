// Package natsq carries the broker's queues on NATS: writeQ and readQ are queue-group
// subjects served request/reply (responseQ is the requester's reply inbox), syncQ a plain
// subject every slave subscribes to.
package natsq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/metrics"
)

// Broker is a broker.Broker on one NATS connection.
type Broker struct {
	URL    string
	Name   string // connection name, shown by the server
	Logger *slog.Logger
	// InProcess, if set, connects to an embedded server without a socket.
	InProcess nats.InProcessConnProvider
	// Registerer receives the broker's metrics; nil registers nothing.
	Registerer prometheus.Registerer

	nc     *nats.Conn
	shared bool // the connection belongs to the caller

	poisonOnce sync.Once
	poison     *prometheus.CounterVec

	reconnectOnce sync.Once
	reconnectMu   sync.Mutex
	reconnected   chan struct{} // closed at the next announced reconnection; nil: not watched
}

// ReconnectedSubject is where a connection made by Connect says, once it has reconnected,
// that it lost its server. Whatever was in flight through that server is gone: requests to
// the workers connected to it, their answers, their appends to the log. A caller waiting for
// an answer sends its request again at once (Reconnects) rather than at the end of its
// attempt: with three nodes, the workers are connected to one node's server, and killing that
// node made every write wait out the orchestrator's 2 s attempt.
const ReconnectedSubject = "rideshare.reconnected"

var _ broker.Broker = (*Broker)(nil)

// New returns a broker for the NATS server at url.
func New(url, name string) *Broker { return &Broker{URL: url, Name: name, Logger: slog.Default()} }

// Open connects. The connection reconnects by itself, forever, after a server restart.
func (b *Broker) Open(ctx context.Context) error {
	nc, err := Connect(b.URL, b.Name, b.InProcess, b.Logger)
	if err != nil {
		return err
	}
	b.nc = nc
	return nil
}

// Conn is the underlying connection (the sync log shares it).
func (b *Broker) Conn() *nats.Conn { return b.nc }

// Connect opens a NATS connection that retries forever and logs its state changes.
func Connect(url, name string, inProcess nats.InProcessConnProvider, logger *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if logger == nil {
		logger = slog.Default()
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedServerName())
			if err := nc.Publish(ReconnectedSubject, []byte(name)); err != nil {
				logger.Warn("announce reconnection", "err", err)
			}
		}),
	}
	if inProcess != nil {
		opts = append(opts, nats.InProcessServer(inProcess))
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	return nc, nil
}

// Reconnects returns a channel closed when a connection next announces on ReconnectedSubject
// that it reconnected (this broker's own included). If the broker cannot watch for that, the
// channel is never closed.
func (b *Broker) Reconnects() <-chan struct{} {
	b.reconnectOnce.Do(func() {
		b.reconnectMu.Lock()
		defer b.reconnectMu.Unlock()
		if _, err := b.nc.Subscribe(ReconnectedSubject, func(m *nats.Msg) {
			b.reconnectMu.Lock()
			defer b.reconnectMu.Unlock()
			close(b.reconnected)
			b.reconnected = make(chan struct{})
		}); err != nil {
			b.Logger.Warn("watch reconnections", "err", err)
			return
		}
		_ = b.nc.Flush() // the server knows of the watch before the first caller relies on it
		b.reconnected = make(chan struct{})
	})
	b.reconnectMu.Lock()
	defer b.reconnectMu.Unlock()
	return b.reconnected // nil if not watched: never closed
}

// Call sends a request and waits for its answer.
func (b *Broker) Call(ctx context.Context, queue string, body []byte) ([]byte, error) {
	msg, err := b.nc.RequestWithContext(ctx, queue, body)
	switch {
	case err == nil:
		return msg.Data, nil
	case errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("%s: %w", queue, broker.ErrNoConsumer)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, nats.ErrTimeout):
		return nil, fmt.Errorf("%s: %w", queue, broker.ErrTimeout)
	}
	return nil, fmt.Errorf("%s: %w", queue, err)
}

type subscription struct {
	sub     *nats.Subscription
	nc      *nats.Conn
	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	once    sync.Once
	err     error
}

func (s *subscription) Stop() error {
	s.once.Do(func() {
		s.err = s.sub.Unsubscribe()
		if s.err == nil && s.nc != nil {
			// Once Stop returns the server no longer routes requests here.
			_ = s.nc.FlushTimeout(2 * time.Second)
		}
		s.mu.Lock()
		s.stopped = true
		s.mu.Unlock()
		s.wg.Wait()
		s.cancel()
	})
	return s.err
}

// poisonCounter is rideshare_broker_poison_messages_total, declared exactly as in package
// amqpq (same name, help and labels) so that both can share a registry.
func (b *Broker) poisonCounter() *prometheus.CounterVec {
	b.poisonOnce.Do(func() {
		b.poison = metrics.Register(b.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "broker_poison_messages_total",
			Help:      "Malformed messages taken off a queue and dropped or dead-lettered, by queue.",
		}, []string{"queue"}))
	})
	return b.poison
}

// Consume serves queue as a member of its queue group. A message without a reply subject is
// dropped (logged and counted as poison).
func (b *Broker) Consume(ctx context.Context, queue string, concurrency int, h broker.Handler) (broker.Subscription, error) {
	if concurrency < 1 {
		concurrency = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	// A fixed pool of handler goroutines rather than one per message: a handler's stack grows
	// deep in SQLite, and growing a fresh goroutine's stack on every request cost a tenth of a
	// slave's CPU.
	work := make(chan *nats.Msg)
	s := &subscription{cancel: func() { cancel(); close(work) }, nc: b.nc}
	for range concurrency {
		go func() {
			for m := range work {
				reply := h(ctx, m.Data)
				if err := m.Respond(reply); err != nil {
					b.Logger.Warn("answer lost", "queue", queue, "err", err)
				}
				s.wg.Done()
			}
		}()
	}
	poison := b.poisonCounter()
	sub, err := b.nc.QueueSubscribe(queue, queue, func(m *nats.Msg) {
		if m.Reply == "" {
			// Nobody waits for an answer: not a request of ours but a stray publish. Never
			// hand it to the handler: a write nobody asked for must not reach the database.
			poison.WithLabelValues(queue).Inc()
			b.Logger.Warn("dropped a request without reply subject", "queue", queue, "bytes", len(m.Data))
			return
		}
		s.mu.Lock()
		if s.stopped {
			// Taken after Stop: leave it unanswered; the caller's try times out and is
			// sent again to another consumer.
			s.mu.Unlock()
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		// The callback runs on the subscription's one goroutine: waiting here for a free
		// handler bounds the handlers in flight and leaves the rest queued for other consumers.
		work <- m
	})
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("consume %s: %w", queue, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		s.cancel()
		return nil, err
	}
	s.sub = sub
	// Flush so that once Consume returns the server routes requests here.
	if err := b.nc.FlushTimeout(5 * time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("consume %s: %w", queue, err)
	}
	return s, nil
}

// PublishSync fans an entry out on syncQ.
func (b *Broker) PublishSync(_ context.Context, body []byte) error {
	if err := b.nc.Publish(broker.SyncQ, body); err != nil {
		return fmt.Errorf("publish on %s: %w", broker.SyncQ, err)
	}
	return nil
}

// SubscribeSync receives syncQ messages in order on one goroutine.
func (b *Broker) SubscribeSync(ctx context.Context, fn func(body []byte)) (broker.Subscription, error) {
	_, cancel := context.WithCancel(ctx)
	s := &subscription{cancel: cancel}
	sub, err := b.nc.Subscribe(broker.SyncQ, func(m *nats.Msg) { fn(m.Data) })
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe %s: %w", broker.SyncQ, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		cancel()
		return nil, err
	}
	s.sub = sub
	if err := b.nc.FlushTimeout(5 * time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("subscribe %s: %w", broker.SyncQ, err)
	}
	return s, nil
}

// Close drains and closes the connection.
func (b *Broker) Close() error {
	if b.nc == nil || b.shared {
		return nil
	}
	b.nc.Close()
	return nil
}

// FromConn returns a broker on an open connection, which the caller closes.
func FromConn(nc *nats.Conn, logger *slog.Logger) *Broker {
	return &Broker{URL: nc.ConnectedUrl(), Logger: logger, nc: nc, shared: true}
}
