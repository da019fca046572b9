// Package amqpq carries the broker's queues on RabbitMQ (AMQP 0-9-1).
//
// Topology, declared by every broker on every connection with the same arguments (so any of
// them may come up first, and a broker restart that lost something is repaired):
//
//	writeQ, readQ   durable classic queues (RequestQueueArgs). Requests are published on the
//	                default exchange with a correlation id, ReplyTo and a per-message
//	                expiration (the caller's remaining time); writeQ requests are persistent.
//	responseQ       the caller's reply queue: non-durable and exclusive to the caller's
//	                connection, named exactly "responseQ" for the first caller (the
//	                orchestrator); a second live caller gets "responseQ.<name>.<random>". It is
//	                declared again after every reconnect. Replies are transient.
//	syncQ           durable fanout exchange; each SubscribeSync binds its own exclusive,
//	                auto-delete queue "syncQ.<name>.<random>".
//	rideshare.dlx   durable fanout exchange bound to the durable queue "deadletters": where a
//	                consumer puts a poison message (a request without ReplyTo or correlation
//	                id) before acking it away.
//
// Requests that expire in writeQ/readQ are dropped by RabbitMQ, not dead-lettered: the queues
// carry no x-dead-letter-exchange argument, because with per-message expirations every
// request nobody took in time would otherwise pile up in deadletters. Poison messages are
// dead-lettered by the consumer instead (published to rideshare.dlx with confirms, then acked).
//
// One connection per Broker, re-dialled with backoff whenever it (or one of its shared
// channels) closes; consumers and syncQ subscriptions re-subscribe on the new connection by
// themselves. While there is no connection, Call fails at once with an error wrapping
// broker.ErrNoConsumer, which the orchestrator retries.
package amqpq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/metrics"
)

// Names of the dead-letter exchange and queue.
const (
	DeadLetterExchange = "rideshare.dlx"
	DeadLetterQueue    = "deadletters"
)

// Headers set on a dead-lettered message.
const (
	HeaderDeadQueue  = "x-rideshare-queue"
	HeaderDeadReason = "x-rideshare-reason"
)

// RequestQueueArgs are the arguments writeQ and readQ are declared with, everywhere: a queue
// declared twice with different arguments is refused (PRECONDITION_FAILED).
func RequestQueueArgs() amqp.Table { return amqp.Table{"x-queue-type": "classic"} }

// deadLetterQueueArgs bound the dead-letter queue so that a flood of garbage cannot fill the
// broker's disk: the oldest dead letters go first.
func deadLetterQueueArgs() amqp.Table {
	return amqp.Table{"x-queue-type": "classic", "x-max-length": int64(100_000)}
}

// errDown is wrapped with broker.ErrNoConsumer when there is no connection.
var errDown = errors.New("not connected to rabbitmq")

// Broker is a broker.Broker on one RabbitMQ connection that comes back by itself.
type Broker struct {
	URL    string
	Name   string // connection name, shown by rabbitmqctl list_connections
	Logger *slog.Logger
	// Registerer receives the broker's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Caller declares the reply queue as soon as the broker opens (the orchestrator), so it
	// is there before the first Call. Otherwise it is declared on the first Call.
	Caller bool
	// ReplyQueue is the name the reply queue is given if free (default broker.ResponseQ).
	ReplyQueue string
	// Reconnection backoff, doubled from ReconnectMin up to ReconnectMax, with jitter.
	ReconnectMin, ReconnectMax time.Duration
	// Heartbeat detects a dead connection (about two missed beats).
	Heartbeat time.Duration
	// OpenTimeout bounds how long Open keeps trying to connect.
	OpenTimeout time.Duration
	// CallTimeout bounds a Call whose context has no deadline.
	CallTimeout time.Duration
	// ConfirmTimeout bounds the wait for a publisher confirm in a consumer (reply,
	// dead letter) and in PublishSync without a deadline.
	ConfirmTimeout time.Duration

	ctx    context.Context // lives from Open to Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the connection keeper and the subscriptions' loops

	mu      sync.Mutex
	sess    *session      // nil while disconnected
	changed chan struct{} // closed and replaced whenever sess changes

	replyWanted atomic.Bool // a Call was made (or Caller): keep a reply queue
	replyMu     sync.Mutex  // one reply queue declaration at a time
	pendingMu   sync.Mutex
	pending     map[string]chan []byte // correlation id → waiting Call
	idPrefix    string
	seq         atomic.Uint64
	tagSeq      atomic.Uint64

	m brokerMetrics
}

var _ broker.Broker = (*Broker)(nil)

type brokerMetrics struct {
	poison     *prometheus.CounterVec
	reconnects prometheus.Counter
	late       prometheus.Counter
}

// New returns a broker for the RabbitMQ server at url with default settings.
func New(url, name string) *Broker {
	return &Broker{
		URL: url, Name: name, Logger: slog.Default(),
		ReplyQueue:   broker.ResponseQ,
		ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second,
		Heartbeat: 5 * time.Second, OpenTimeout: 30 * time.Second,
		CallTimeout: 30 * time.Second, ConfirmTimeout: 10 * time.Second,
	}
}

// Open connects, declares the topology and starts the loop that keeps the connection up. It
// keeps trying for OpenTimeout (or until ctx ends) if RabbitMQ does not answer.
func (b *Broker) Open(ctx context.Context) error {
	if b.Logger == nil {
		b.Logger = slog.Default()
	}
	b.Logger = b.Logger.With("component", "amqpq", "conn", b.Name)
	if b.ReplyQueue == "" {
		b.ReplyQueue = broker.ResponseQ
	}
	if b.ReconnectMin <= 0 {
		b.ReconnectMin = 100 * time.Millisecond
	}
	if b.ReconnectMax < b.ReconnectMin {
		b.ReconnectMax = max(time.Second, b.ReconnectMin)
	}
	if b.CallTimeout <= 0 {
		b.CallTimeout = 30 * time.Second
	}
	if b.ConfirmTimeout <= 0 {
		b.ConfirmTimeout = 10 * time.Second
	}
	b.m = brokerMetrics{
		poison: metrics.Register(b.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "broker_poison_messages_total",
			Help:      "Malformed messages taken off a queue and dropped or dead-lettered, by queue.",
		}, []string{"queue"})),
		reconnects: metrics.Register(b.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "broker_amqp_reconnects_total",
			Help:      "Connections to RabbitMQ re-established after one was lost.",
		})),
		late: metrics.Register(b.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace,
			Name:      "broker_amqp_late_replies_total",
			Help:      "Replies that arrived on the reply queue after their call had given up.",
		})),
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	b.idPrefix = hex.EncodeToString(rnd[:]) + "-"
	b.pending = make(map[string]chan []byte)
	b.changed = make(chan struct{})
	b.replyWanted.Store(b.Caller)
	b.ctx, b.cancel = context.WithCancel(context.Background())

	octx := ctx
	if b.OpenTimeout > 0 {
		var cancel context.CancelFunc
		octx, cancel = context.WithTimeout(ctx, b.OpenTimeout)
		defer cancel()
	}
	var s *session
	for delay := b.ReconnectMin; ; delay = b.nextDelay(delay) {
		var err error
		if s, err = b.connect(); err == nil {
			break
		}
		b.Logger.Warn("rabbitmq not reachable yet", "url", redact(b.URL), "err", err)
		if !sleep(octx, jitter(delay)) {
			b.cancel()
			return fmt.Errorf("connect to rabbitmq %s: %w", redact(b.URL), err)
		}
	}
	b.setSession(s)
	b.wg.Add(1)
	go b.keep(s)
	b.Logger.Info("connected to rabbitmq", "url", redact(b.URL))
	return nil
}

// Close stops the subscriptions' loops and closes the connection. Messages taken and not yet
// acked go back to their queue.
func (b *Broker) Close() error {
	if b.cancel == nil {
		return nil
	}
	b.cancel()
	b.wg.Wait()
	return nil
}

// session is one connection and the channels shared by everything on it.
type session struct {
	conn *amqp.Connection
	pub  *amqp.Channel // confirm mode: requests, replies, syncQ, dead letters
	ctl  *amqp.Channel // declarations (consumer counts)
	done chan struct{} // closed once the connection is gone

	ctlMu   sync.Mutex  // the library does not match concurrent RPCs on one channel
	blocked atomic.Bool // RabbitMQ blocks publishing (resource alarm)

	mu     sync.Mutex
	checks map[string]*check // consumer-count declarations in flight, by queue
	replyQ string            // the reply queue consumed on this connection; "" if none yet

	connClosed, pubClosed, ctlClosed chan *amqp.Error
}

func (s *session) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return !s.conn.IsClosed()
	}
}

// watchBlocked follows RabbitMQ's connection.blocked notices (a memory or disk alarm):
// while blocked, publishing would hang, so calls fail at once instead.
func (s *session) watchBlocked(notices <-chan amqp.Blocking, logger *slog.Logger) {
	for bl := range notices {
		s.blocked.Store(bl.Active)
		if bl.Active {
			logger.Warn("rabbitmq blocks publishing", "reason", bl.Reason)
		} else {
			logger.Info("rabbitmq unblocked publishing")
		}
	}
}

// connect dials and prepares a session.
func (b *Broker) connect() (*session, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(b.Name)
	conn, err := amqp.DialConfig(b.URL, amqp.Config{
		Heartbeat:  b.Heartbeat,
		Locale:     "en_US",
		Properties: props,
		Dial:       amqp.DefaultDial(5 * time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	s := &session{conn: conn, done: make(chan struct{}), checks: make(map[string]*check)}
	s.connClosed = conn.NotifyClose(make(chan *amqp.Error, 1))
	go s.watchBlocked(conn.NotifyBlocked(make(chan amqp.Blocking, 1)), b.Logger) // ends with the connection
	fail := func(step string, err error) (*session, error) {
		_ = conn.Close()
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	if s.ctl, err = conn.Channel(); err != nil {
		return fail("open channel", err)
	}
	s.ctlClosed = s.ctl.NotifyClose(make(chan *amqp.Error, 1))
	if err := declareTopology(s.ctl); err != nil {
		return fail("declare topology", err)
	}
	if s.pub, err = conn.Channel(); err != nil {
		return fail("open channel", err)
	}
	s.pubClosed = s.pub.NotifyClose(make(chan *amqp.Error, 1))
	if err := s.pub.Confirm(false); err != nil {
		return fail("confirm mode", err)
	}
	if b.replyWanted.Load() {
		if _, err := b.replies(s); err != nil {
			return fail("reply queue", err)
		}
	}
	return s, nil
}

func declareTopology(ch *amqp.Channel) error {
	if err := ch.ExchangeDeclare(DeadLetterExchange, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("exchange %s: %w", DeadLetterExchange, err)
	}
	if _, err := ch.QueueDeclare(DeadLetterQueue, true, false, false, false, deadLetterQueueArgs()); err != nil {
		return fmt.Errorf("queue %s: %w", DeadLetterQueue, err)
	}
	if err := ch.QueueBind(DeadLetterQueue, "", DeadLetterExchange, false, nil); err != nil {
		return fmt.Errorf("bind %s: %w", DeadLetterQueue, err)
	}
	if err := ch.ExchangeDeclare(broker.SyncQ, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("exchange %s: %w", broker.SyncQ, err)
	}
	for _, q := range []string{broker.WriteQ, broker.ReadQ} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, RequestQueueArgs()); err != nil {
			return fmt.Errorf("queue %s: %w", q, err)
		}
	}
	return nil
}

// keep watches the session and replaces it when it dies, until Close.
func (b *Broker) keep(s *session) {
	defer b.wg.Done()
	for {
		var reason any
		select {
		case <-b.ctx.Done():
			b.setSession(nil)
			close(s.done)
			_ = s.conn.Close()
			return
		case err := <-s.connClosed:
			reason = err
		case err := <-s.pubClosed:
			reason = fmt.Sprintf("publishing channel closed: %v", err)
		case err := <-s.ctlClosed:
			reason = fmt.Sprintf("control channel closed: %v", err)
		}
		b.setSession(nil)
		close(s.done)
		_ = s.conn.Close()
		b.Logger.Warn("rabbitmq connection lost; reconnecting", "reason", reason)
		lost := time.Now()
		for delay := b.ReconnectMin; ; delay = b.nextDelay(delay) {
			if !sleep(b.ctx, jitter(delay)) {
				return
			}
			next, err := b.connect()
			if err == nil {
				s = next
				break
			}
			b.Logger.Debug("reconnect failed", "err", err)
		}
		b.m.reconnects.Inc()
		b.setSession(s)
		b.Logger.Info("rabbitmq connection back", "after", time.Since(lost).Round(time.Millisecond).String())
	}
}

// resubscribe is the one loop behind every subscription: it runs on over each live session in
// turn, waiting for the next session while there is none and pausing before a retry on the
// same one, until on returns nil (it ended by itself: false), or stop or ctx ends (true: the
// caller stopped it, and waits for what it started), or the broker closes (false).
func (b *Broker) resubscribe(ctx context.Context, stop <-chan struct{}, report func(error), log *slog.Logger, retryMsg string, on func(*session) error) bool {
	for {
		sess, changed := b.current()
		var pause <-chan time.Time // nil: no session, or it went; wait for the next one
		if sess == nil {
			report(errDown)
		} else {
			err := on(sess)
			if err == nil {
				return false
			}
			if sess.alive() {
				log.Warn(retryMsg, "err", err)
				pause = time.After(jitter(b.ReconnectMin))
			}
		}
		select {
		case <-changed:
		case <-pause:
		case <-stop:
			return true
		case <-ctx.Done():
			return true
		case <-b.ctx.Done():
			return false
		}
	}
}

func (b *Broker) setSession(s *session) {
	b.mu.Lock()
	b.sess = s
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// current is the live session (nil if none) and a channel closed when that changes.
func (b *Broker) current() (*session, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sess, b.changed
}

func (b *Broker) nextDelay(d time.Duration) time.Duration { return min(2*d, b.ReconnectMax) }

// jitter spreads reconnections of many clients: d ± 20%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((mrand.Float64()*0.4-0.2)*float64(d))
}

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// redact hides the password in a URL for logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}

// safeName makes a connection name usable inside a queue name.
func safeName(name string) string {
	if name == "" {
		return "anon"
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, name)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// waitConfirm waits for a publisher confirm: true if the broker took the message.
func waitConfirm(ctx context.Context, s *session, dc *amqp.DeferredConfirmation) (bool, error) {
	if dc == nil { // not in confirm mode: cannot happen, but do not hang on it
		return true, nil
	}
	select {
	case <-dc.Done():
	case <-ctx.Done():
		return false, ctx.Err()
	case <-s.done:
		select {
		case <-dc.Done():
		default:
			return false, errDown
		}
	}
	if dc.Acked() {
		return true, nil
	}
	if s.pub.IsClosed() {
		return false, errDown // nacked by the library because the channel went away
	}
	return false, nil
}
