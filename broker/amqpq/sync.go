package amqpq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/rideshare/rideshare/broker"
)

// PublishSync publishes body on the syncQ fanout exchange and waits for the broker's confirm
// (bounded by ctx, or ConfirmTimeout if ctx has none). Messages are transient: the sync log
// is the durable copy.
func (b *Broker) PublishSync(ctx context.Context, body []byte) error {
	if b.ctx == nil {
		return fmt.Errorf("publish on %s: broker not open", broker.SyncQ)
	}
	s, _ := b.current()
	if s == nil {
		return fmt.Errorf("publish on %s: %w", broker.SyncQ, errDown)
	}
	if s.blocked.Load() {
		return fmt.Errorf("publish on %s: rabbitmq blocks publishing (resource alarm)", broker.SyncQ)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.ConfirmTimeout)
		defer cancel()
	}
	dc, err := s.pub.PublishWithDeferredConfirmWithContext(ctx, broker.SyncQ, "", false, false, amqp.Publishing{
		DeliveryMode: amqp.Transient,
		Timestamp:    time.Now(),
		AppId:        b.Name,
		Body:         body,
	})
	if err != nil {
		return fmt.Errorf("publish on %s: %w", broker.SyncQ, err)
	}
	ok, err := waitConfirm(ctx, s, dc)
	if err != nil {
		return fmt.Errorf("publish on %s: confirm: %w", broker.SyncQ, err)
	}
	if !ok {
		return fmt.Errorf("publish on %s: refused by rabbitmq", broker.SyncQ)
	}
	return nil
}

// SubscribeSync binds an exclusive, auto-delete queue "syncQ.<name>.<random>" to the syncQ
// exchange and calls fn with every message, in order, on one goroutine. After a reconnection
// it binds a new queue: what was published meanwhile is missed (the sync log fills the gap).
// If the broker is connected, SubscribeSync returns once the queue is bound.
func (b *Broker) SubscribeSync(ctx context.Context, fn func(body []byte)) (broker.Subscription, error) {
	if b.ctx == nil {
		return nil, fmt.Errorf("subscribe %s: broker not open", broker.SyncQ)
	}
	s := &syncSub{b: b, fn: fn, stop: make(chan struct{}), exited: make(chan struct{}), first: make(chan error, 1)}
	b.wg.Add(1)
	go s.run(ctx)
	select {
	case err := <-s.first:
		if err != nil {
			b.Logger.Warn("not subscribed to syncQ yet; retrying in the background", "err", err)
		}
	case <-ctx.Done():
		_ = s.Stop()
		return nil, fmt.Errorf("subscribe %s: %w", broker.SyncQ, ctx.Err())
	}
	return s, nil
}

type syncSub struct {
	b        *Broker
	fn       func([]byte)
	stop     chan struct{}
	stopOnce sync.Once
	exited   chan struct{}
	first    chan error
}

// Stop unbinds; fn is not called once Stop has returned.
func (s *syncSub) Stop() error {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.exited
	return nil
}

func (s *syncSub) report(err error) {
	select {
	case s.first <- err:
	default:
	}
}

func (s *syncSub) run(ctx context.Context) {
	defer s.b.wg.Done()
	defer close(s.exited)
	s.b.resubscribe(ctx, s.stop, s.report, s.b.Logger, "syncQ subscription stopped; subscribing again",
		func(sess *session) error { return s.subscribeOn(ctx, sess) })
}

func (s *syncSub) subscribeOn(ctx context.Context, sess *session) error {
	ch, err := sess.conn.Channel()
	if err != nil {
		s.report(err)
		return err
	}
	defer func() { _ = ch.Close() }() // the queue is auto-deleted with its consumer
	name := fmt.Sprintf("%s.%s.%s", broker.SyncQ, safeName(s.b.Name), randomHex(4))
	if _, err := ch.QueueDeclare(name, false, true, true, false, nil); err != nil {
		s.report(err)
		return fmt.Errorf("declare %s: %w", name, err)
	}
	if err := ch.QueueBind(name, "", broker.SyncQ, false, nil); err != nil {
		s.report(err)
		return fmt.Errorf("bind %s: %w", name, err)
	}
	deliveries, err := ch.Consume(name, name, true, true, false, false, nil)
	if err != nil {
		s.report(err)
		return fmt.Errorf("consume %s: %w", name, err)
	}
	s.report(nil)
	for {
		select {
		case <-s.stop:
			return nil
		case <-ctx.Done():
			return nil
		case <-s.b.ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("syncQ channel closed")
			}
			s.fn(d.Body)
		}
	}
}
