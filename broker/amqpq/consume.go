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

var errChannelClosed = errors.New("consumer channel closed")

// Consume takes requests from queue (writeQ or readQ) on its own channel with prefetch =
// concurrency and manual acks, and answers them with h:
//
//   - a request is acked only after h returned and its reply was confirmed by the broker;
//     if the reply cannot be sent it goes back to the queue (nack, requeue);
//   - a request without ReplyTo or correlation id is poison: it is published to
//     rideshare.dlx (→ deadletters), counted and logged, then acked away — never requeued;
//   - after a reconnection the consumer subscribes again by itself; requests that were taken
//     and not acked are redelivered by RabbitMQ and handled again (writes are deduplicated
//     by their request id).
//
// If the broker is connected, Consume returns once RabbitMQ routes requests to it.
func (b *Broker) Consume(ctx context.Context, queue string, concurrency int, h broker.Handler) (broker.Subscription, error) {
	if queue != broker.WriteQ && queue != broker.ReadQ {
		return nil, fmt.Errorf("consume %s: not a request queue (use %s or %s)", queue, broker.WriteQ, broker.ReadQ)
	}
	if b.ctx == nil {
		return nil, fmt.Errorf("consume %s: broker not open", queue)
	}
	concurrency = max(concurrency, 1)
	hctx, cancel := context.WithCancel(ctx)
	s := &subscription{
		b: b, queue: queue, h: h, hctx: hctx, cancel: cancel,
		concurrency: concurrency,
		tag:         fmt.Sprintf("%s.%s.%d", safeName(b.Name), queue, b.tagSeq.Add(1)),
		slots:       make(chan struct{}, concurrency),
		stop:        make(chan struct{}),
		exited:      make(chan struct{}),
		first:       make(chan error, 1),
	}
	b.wg.Add(1)
	go s.run(ctx)
	select {
	case err := <-s.first:
		if err != nil {
			b.Logger.Warn("not consuming yet; retrying in the background", "queue", queue, "err", err)
		}
	case <-ctx.Done():
		_ = s.Stop()
		return nil, fmt.Errorf("consume %s: %w", queue, ctx.Err())
	}
	return s, nil
}

type subscription struct {
	b           *Broker
	queue       string
	concurrency int
	h           broker.Handler
	hctx        context.Context // the handlers' context, cancelled once Stop returns
	cancel      context.CancelFunc
	tag         string
	slots       chan struct{} // one per handler running
	first       chan error    // the first attempt's outcome, for Consume

	stop     chan struct{}
	stopOnce sync.Once
	exited   chan struct{}
	// handlers counts the handlers running. Only run's goroutine adds and waits.
	handlers sync.WaitGroup
}

// Stop stops taking requests, lets the handlers running finish (their answers sent and their
// requests acked), and returns. Requests prefetched but not started go back to the queue.
func (s *subscription) Stop() error {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.exited
	s.cancel()
	return nil
}

func (s *subscription) report(err error) {
	select {
	case s.first <- err:
	default:
	}
}

func (s *subscription) run(ctx context.Context) {
	defer s.b.wg.Done()
	defer close(s.exited)
	log := s.b.Logger.With("queue", s.queue)
	if s.b.resubscribe(ctx, s.stop, s.report, log, "consumer stopped; subscribing again",
		func(sess *session) error { return s.consumeOn(ctx, sess) }) {
		s.handlers.Wait()
	}
}

// consumeOn consumes on one channel of sess until Stop (nil) or the channel closes (error).
func (s *subscription) consumeOn(ctx context.Context, sess *session) error {
	ch, err := sess.conn.Channel()
	if err != nil {
		s.report(err)
		return err
	}
	defer func() { _ = ch.Close() }() // requeues what was taken and not acked
	if err := ch.Qos(s.concurrency, 0, false); err != nil {
		s.report(err)
		return fmt.Errorf("qos: %w", err)
	}
	deliveries, err := ch.Consume(s.queue, s.tag, false, false, false, false, nil)
	if err != nil {
		s.report(err)
		return fmt.Errorf("consume: %w", err)
	}
	s.report(nil)
	finish := func() error {
		// No more deliveries; those already sent to us stay unacked and are requeued when
		// the channel closes, after the handlers running have answered and acked.
		_ = ch.Cancel(s.tag, false)
		s.handlers.Wait()
		return nil
	}
	for {
		select {
		case <-s.stop:
			return finish()
		case <-ctx.Done():
			return finish()
		case <-s.b.ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				return errChannelClosed
			}
			if reason := malformed(d); reason != "" {
				s.b.deadLetter(sess, s.queue, d, reason)
				continue
			}
			select {
			case s.slots <- struct{}{}:
			case <-s.stop:
				return finish()
			case <-ctx.Done():
				return finish()
			case <-s.b.ctx.Done():
				return nil
			}
			s.handlers.Add(1)
			go s.handle(d)
		}
	}
}

func malformed(d amqp.Delivery) string {
	switch {
	case d.ReplyTo == "" && d.CorrelationId == "":
		return "no ReplyTo and no correlation id"
	case d.ReplyTo == "":
		return "no ReplyTo"
	case d.CorrelationId == "":
		return "no correlation id"
	}
	return ""
}

func (s *subscription) handle(d amqp.Delivery) {
	defer func() {
		<-s.slots
		s.handlers.Done()
	}()
	reply := s.h(s.hctx, d.Body)
	if err := s.b.reply(d, reply); err != nil {
		s.b.Logger.Warn("answer not sent; request goes back to the queue", "queue", s.queue, "err", err)
		_ = d.Nack(false, true)
		return
	}
	if err := d.Ack(false); err != nil {
		// The channel is gone: RabbitMQ redelivers the request, and it is handled again.
		s.b.Logger.Debug("ack lost", "queue", s.queue, "err", err)
	}
}

// reply publishes an answer on the current connection and waits for its confirm.
func (b *Broker) reply(d amqp.Delivery, body []byte) error {
	sess, _ := b.current()
	if sess == nil {
		return errDown
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.ConfirmTimeout)
	defer cancel()
	dc, err := sess.pub.PublishWithDeferredConfirmWithContext(ctx, "", d.ReplyTo, false, false, amqp.Publishing{
		CorrelationId: d.CorrelationId,
		DeliveryMode:  amqp.Transient,
		Timestamp:     time.Now(),
		AppId:         b.Name,
		Body:          body,
	})
	if err != nil {
		return fmt.Errorf("publish reply: %w", err)
	}
	ok, err := waitConfirm(ctx, sess, dc)
	if err != nil {
		return fmt.Errorf("reply not confirmed: %w", err)
	}
	if !ok {
		return errors.New("reply refused by rabbitmq")
	}
	return nil
}

// deadLetter moves a poison message to the dead-letter exchange and acks it; if that fails
// the message is rejected without requeue (dropped). Either way it never comes back.
func (b *Broker) deadLetter(sess *session, queue string, d amqp.Delivery, reason string) {
	b.m.poison.WithLabelValues(queue).Inc()
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[HeaderDeadQueue] = queue
	headers[HeaderDeadReason] = reason
	ctx, cancel := context.WithTimeout(b.ctx, b.ConfirmTimeout)
	defer cancel()
	dc, err := sess.pub.PublishWithDeferredConfirmWithContext(ctx, DeadLetterExchange, queue, false, false, amqp.Publishing{
		Headers:       headers,
		ContentType:   d.ContentType,
		CorrelationId: d.CorrelationId,
		ReplyTo:       d.ReplyTo,
		MessageId:     d.MessageId,
		Timestamp:     d.Timestamp,
		AppId:         d.AppId,
		DeliveryMode:  amqp.Persistent,
		Body:          d.Body,
	})
	ok := false
	if err == nil {
		ok, err = waitConfirm(ctx, sess, dc)
	}
	if ok {
		b.Logger.Warn("poison message dead-lettered", "queue", queue, "reason", reason,
			"bytes", len(d.Body), "dead_letter_queue", DeadLetterQueue)
		_ = d.Ack(false)
		return
	}
	b.Logger.Warn("poison message dropped (dead-lettering failed)", "queue", queue, "reason", reason,
		"bytes", len(d.Body), "err", err)
	_ = d.Reject(false)
}
