package amqpq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/rideshare/rideshare/broker"
)

// Call publishes body on queue (writeQ or readQ) and waits for its answer on the reply queue.
//
//   - No connection right now, or nobody consumes queue: an error wrapping broker.ErrNoConsumer,
//     at once. Consumers are counted with a queue.declare (which also re-creates the queue if
//     it was deleted); concurrent calls share one declaration in flight.
//   - The request carries ReplyTo, a correlation id and an expiration equal to the time ctx
//     has left, so a request nobody took in time is dropped by RabbitMQ; writeQ requests are
//     persistent.
//   - No answer before ctx's deadline: broker.ErrTimeout. The call keeps waiting across a
//     reconnection once the broker confirmed the request: the consumer may still answer on the
//     re-declared reply queue.
func (b *Broker) Call(ctx context.Context, queue string, body []byte) ([]byte, error) {
	if queue != broker.WriteQ && queue != broker.ReadQ {
		return nil, fmt.Errorf("call %s: not a request queue (use %s or %s)", queue, broker.WriteQ, broker.ReadQ)
	}
	if b.ctx == nil {
		return nil, fmt.Errorf("call %s: broker not open", queue)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.CallTimeout)
		defer cancel()
	}
	b.replyWanted.Store(true)
	s, _ := b.current()
	if s == nil {
		return nil, fmt.Errorf("%s: %w (%w)", queue, broker.ErrNoConsumer, errDown)
	}
	if s.blocked.Load() {
		return nil, fmt.Errorf("%s: rabbitmq blocks publishing (resource alarm): %w", queue, broker.ErrNoConsumer)
	}
	replyQ, err := b.replies(s)
	if err != nil {
		return nil, fmt.Errorf("%s: no reply queue (%v): %w", queue, err, broker.ErrNoConsumer)
	}
	n, err := s.consumers(ctx, queue)
	switch {
	case ctx.Err() != nil:
		return nil, ctxErr(queue, ctx)
	case err != nil:
		return nil, fmt.Errorf("%s: count consumers (%v): %w", queue, err, broker.ErrNoConsumer)
	case n == 0:
		return nil, fmt.Errorf("%s: %w", queue, broker.ErrNoConsumer)
	}
	deadline, _ := ctx.Deadline()
	ttl := time.Until(deadline)
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("%s: %w", queue, broker.ErrTimeout)
	}

	id := b.idPrefix + strconv.FormatUint(b.seq.Add(1), 36)
	answer := make(chan []byte, 1)
	b.pendingMu.Lock()
	b.pending[id] = answer
	b.pendingMu.Unlock()
	defer func() {
		b.pendingMu.Lock()
		delete(b.pending, id)
		b.pendingMu.Unlock()
	}()

	mode := amqp.Transient
	if queue == broker.WriteQ {
		mode = amqp.Persistent
	}
	dc, err := s.pub.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{
		CorrelationId: id,
		ReplyTo:       replyQ,
		Expiration:    strconv.FormatInt(ttl.Milliseconds(), 10),
		DeliveryMode:  mode,
		Timestamp:     time.Now(),
		AppId:         b.Name,
		Body:          body,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxErr(queue, ctx)
		}
		return nil, fmt.Errorf("%s: publish (%v): %w", queue, err, broker.ErrNoConsumer)
	}
	var confirmed <-chan struct{}
	if dc != nil {
		confirmed = dc.Done()
	}
	for {
		select {
		case reply := <-answer:
			return reply, nil
		case <-confirmed:
			confirmed = nil
			if dc.Acked() {
				continue
			}
			// A nack: the broker refused the message, or the channel closed before the
			// confirm came (then the request may or may not be in the queue).
			if s.pub.IsClosed() {
				return nil, fmt.Errorf("%s: connection lost before the request was confirmed: %w", queue, broker.ErrTimeout)
			}
			return nil, fmt.Errorf("%s: rabbitmq refused the request: %w", queue, broker.ErrNoConsumer)
		case <-ctx.Done():
			return nil, ctxErr(queue, ctx)
		}
	}
}

func ctxErr(queue string, ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", queue, broker.ErrTimeout)
	}
	return fmt.Errorf("%s: %w", queue, ctx.Err())
}

// check is one consumer count in flight, shared by the calls that arrive meanwhile.
type check struct {
	done chan struct{}
	n    int
	err  error
}

// consumers counts the consumers of queue. Calls arriving while a count is in flight share
// it, so many concurrent calls cost one round trip.
func (s *session) consumers(ctx context.Context, queue string) (int, error) {
	s.mu.Lock()
	c := s.checks[queue]
	if c == nil {
		c = &check{done: make(chan struct{})}
		s.checks[queue] = c
		go func() {
			s.ctlMu.Lock()
			q, err := s.ctl.QueueDeclare(queue, true, false, false, false, RequestQueueArgs())
			s.ctlMu.Unlock()
			c.n, c.err = q.Consumers, err
			s.mu.Lock()
			delete(s.checks, queue)
			s.mu.Unlock()
			close(c.done)
		}()
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.n, c.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// replies makes sure s has a reply queue with its consumer, and names it. The queue is named
// ReplyQueue if no other connection holds that name, else ReplyQueue.<name>.<random>.
func (b *Broker) replies(s *session) (string, error) {
	s.mu.Lock()
	name := s.replyQ
	s.mu.Unlock()
	if name != "" {
		return name, nil
	}
	b.replyMu.Lock()
	defer b.replyMu.Unlock()
	s.mu.Lock()
	name = s.replyQ
	s.mu.Unlock()
	if name != "" {
		return name, nil
	}

	name = b.ReplyQueue
	ch, err := s.conn.Channel()
	if err != nil {
		return "", err
	}
	_, err = ch.QueueDeclare(name, false, false, true, false, nil)
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.ResourceLocked {
		// Another live connection holds the name: a second caller, or our own previous
		// connection that the server has not reaped yet. The next connection tries again.
		name = fmt.Sprintf("%s.%s.%s", b.ReplyQueue, safeName(b.Name), randomHex(4))
		if ch, err = s.conn.Channel(); err != nil {
			return "", err
		}
		b.Logger.Info("reply queue name taken by another connection; using a private one", "queue", name)
		_, err = ch.QueueDeclare(name, false, false, true, false, nil)
	}
	if err != nil {
		_ = ch.Close()
		return "", fmt.Errorf("declare %s: %w", name, err)
	}
	deliveries, err := ch.Consume(name, "", true, true, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return "", fmt.Errorf("consume %s: %w", name, err)
	}
	s.mu.Lock()
	s.replyQ = name
	s.mu.Unlock()
	b.wg.Add(1)
	go b.dispatch(s, ch, name, deliveries)
	return name, nil
}

// dispatch hands each reply to the call waiting for its correlation id; the rest is late.
func (b *Broker) dispatch(s *session, ch *amqp.Channel, name string, deliveries <-chan amqp.Delivery) {
	defer b.wg.Done()
	for d := range deliveries {
		if d.CorrelationId == "" {
			b.m.poison.WithLabelValues(broker.ResponseQ).Inc()
			b.Logger.Warn("dropped a reply without correlation id", "queue", name, "bytes", len(d.Body))
			continue
		}
		b.pendingMu.Lock()
		waiting := b.pending[d.CorrelationId]
		b.pendingMu.Unlock()
		if waiting == nil {
			b.m.late.Inc()
			b.Logger.Debug("dropped a late reply", "correlation_id", d.CorrelationId)
			continue
		}
		select {
		case waiting <- d.Body:
		default: // a second answer to a request handled twice: the first one won
		}
	}
	_ = ch.Close()
	s.mu.Lock()
	if s.replyQ == name {
		s.replyQ = "" // the next call declares it again (on this connection if it lives)
	}
	s.mu.Unlock()
	if s.alive() && b.ctx.Err() == nil {
		b.Logger.Warn("reply consumer stopped; re-declaring on the next call", "queue", name)
	}
}
