// Package memq is an in-memory broker.Broker for unit tests of the worker and the
// orchestrator: the four queues of one deployment in one process, with the semantics of the
// real transports (round robin among a queue's consumers, a concurrency limit per consumer,
// no consumer → ErrNoConsumer at once, silence → ErrTimeout, Stop answers what it took,
// syncQ in order to every subscriber). It passes the same contract suite (brokertest) as
// natsq and amqpq.
package memq

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rideshare/rideshare/broker"
)

// ErrClosed is returned by a closed broker connection.
var ErrClosed = errors.New("memq: broker closed")

// SyncBuffer is how many syncQ messages wait for a slow subscriber before new ones are
// dropped: syncQ is best effort, and a subscriber fills gaps from the sync log.
const SyncBuffer = 1 << 14

// Network is one namespace (one NATS server, one RabbitMQ vhost) that brokers share.
type Network struct {
	mu        sync.Mutex
	consumers map[string][]*consumer // by queue
	next      map[string]int         // round robin position by queue
	syncSubs  map[*syncSub]struct{}
}

// NewNetwork returns an empty namespace.
func NewNetwork() *Network {
	return &Network{consumers: map[string][]*consumer{}, next: map[string]int{}, syncSubs: map[*syncSub]struct{}{}}
}

// Broker returns a new connection to the namespace.
func (n *Network) Broker() *Broker { return &Broker{net: n, subs: map[broker.Subscription]struct{}{}} }

// PublishRaw puts body on queue without a reply address, as a stray client might. A consumer
// takes it and drops it unhandled, as the real transports drop what nobody can be answered
// for. It reports whether a consumer took it.
func (n *Network) PublishRaw(ctx context.Context, queue string, body []byte) bool {
	r := &request{ctx: ctx, body: body} // no reply channel
	return n.deliver(ctx, queue, r) == nil
}

type request struct {
	ctx   context.Context
	body  []byte
	reply chan []byte // nil: no reply address
}

// pick returns the queue's next consumer in turn, or nil.
func (n *Network) pick(queue string) *consumer {
	n.mu.Lock()
	defer n.mu.Unlock()
	cs := n.consumers[queue]
	if len(cs) == 0 {
		return nil
	}
	i := n.next[queue] % len(cs)
	n.next[queue] = i + 1
	return cs[i]
}

// deliver hands r to a consumer of queue with a free handler, trying another if the one in
// turn stops meanwhile.
func (n *Network) deliver(ctx context.Context, queue string, r *request) error {
	for {
		c := n.pick(queue)
		if c == nil {
			return broker.ErrNoConsumer
		}
		select {
		case c.in <- r:
			return nil
		case <-c.stopping:
			// Stopped before taking it: like an unacknowledged message, it goes to another.
		case <-ctx.Done():
			return fmt.Errorf("%w: waited for a free consumer on %s: %v", broker.ErrTimeout, queue, ctx.Err())
		}
	}
}

func (n *Network) remove(queue string, c *consumer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	cs := n.consumers[queue]
	for i, x := range cs {
		if x == c {
			n.consumers[queue] = append(cs[:i:i], cs[i+1:]...)
			return
		}
	}
}

// Broker is one connection to a Network.
type Broker struct {
	net    *Network
	mu     sync.Mutex
	closed bool
	subs   map[broker.Subscription]struct{}
}

var _ broker.Broker = (*Broker)(nil)

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// track remembers sub so that Close stops it, or refuses it if the broker is closed.
func (b *Broker) track(sub broker.Subscription) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.subs[sub] = struct{}{}
	return nil
}

func (b *Broker) untrack(sub broker.Subscription) {
	b.mu.Lock()
	delete(b.subs, sub)
	b.mu.Unlock()
}

// Call sends body to one consumer of queue and waits for its answer.
func (b *Broker) Call(ctx context.Context, queue string, body []byte) ([]byte, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	r := &request{ctx: ctx, body: append([]byte(nil), body...), reply: make(chan []byte, 1)}
	if err := b.net.deliver(ctx, queue, r); err != nil {
		return nil, err
	}
	select {
	case out := <-r.reply:
		return out, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", broker.ErrTimeout, ctx.Err())
	}
}

type consumer struct {
	b        *Broker
	queue    string
	in       chan *request // unbuffered: a request is taken only by a free handler
	stopping chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Consume starts concurrency handlers taking requests from queue until Stop, Close or ctx ends.
func (b *Broker) Consume(ctx context.Context, queue string, concurrency int, h broker.Handler) (broker.Subscription, error) {
	if concurrency < 1 {
		return nil, fmt.Errorf("memq: concurrency %d, want at least 1", concurrency)
	}
	c := &consumer{b: b, queue: queue, in: make(chan *request), stopping: make(chan struct{})}
	if err := b.track(c); err != nil {
		return nil, err
	}
	for range concurrency {
		c.wg.Go(func() {
			for {
				select {
				case <-c.stopping:
					return
				case r := <-c.in:
					if r.reply == nil {
						continue // no one to answer: never handled
					}
					r.reply <- h(ctx, r.body) // buffered: a caller that gave up is not waited for
				}
			}
		})
	}
	b.net.mu.Lock()
	b.net.consumers[queue] = append(b.net.consumers[queue], c)
	b.net.mu.Unlock()
	context.AfterFunc(ctx, func() { c.Stop() })
	return c, nil
}

// Stop takes no new request, lets the handlers answer what they took, then returns.
func (c *consumer) Stop() error {
	c.stopOnce.Do(func() {
		c.b.net.remove(c.queue, c)
		close(c.stopping)
		c.b.untrack(c)
	})
	c.wg.Wait()
	return nil
}

type syncSub struct {
	b        *Broker
	ch       chan []byte
	stopping chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// PublishSync sends body to every current syncQ subscriber, in the order of calls.
func (b *Broker) PublishSync(ctx context.Context, body []byte) error {
	if b.isClosed() {
		return ErrClosed
	}
	msg := append([]byte(nil), body...)
	n := b.net
	n.mu.Lock() // held while sending, so that every subscriber sees one order
	defer n.mu.Unlock()
	for s := range n.syncSubs {
		select {
		case s.ch <- msg:
		default: // a subscriber this far behind reads the log instead
		}
	}
	return nil
}

// SubscribeSync delivers every syncQ message published from now on to fn, in order.
func (b *Broker) SubscribeSync(ctx context.Context, fn func(body []byte)) (broker.Subscription, error) {
	s := &syncSub{b: b, ch: make(chan []byte, SyncBuffer), stopping: make(chan struct{}), done: make(chan struct{})}
	if err := b.track(s); err != nil {
		return nil, err
	}
	b.net.mu.Lock()
	b.net.syncSubs[s] = struct{}{}
	b.net.mu.Unlock()
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stopping:
				return
			case msg := <-s.ch:
				fn(msg)
			}
		}
	}()
	context.AfterFunc(ctx, func() { s.Stop() })
	return s, nil
}

// Stop ends the subscription once a message being handled is done.
func (s *syncSub) Stop() error {
	s.stopOnce.Do(func() {
		s.b.net.mu.Lock()
		delete(s.b.net.syncSubs, s)
		s.b.net.mu.Unlock()
		close(s.stopping)
		s.b.untrack(s)
	})
	<-s.done
	return nil
}

// Close stops every consumer and subscription of this connection; later calls fail.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]broker.Subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.Stop()
	}
	return nil
}
