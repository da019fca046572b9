package amqpq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/amqpq"
	"github.com/rideshare/rideshare/broker/brokertest"
)

const defaultURL = "amqp://guest:guest@127.0.0.1:5672/"

func baseURL() string {
	if u := os.Getenv("RIDESHARE_AMQP"); u != "" {
		return u
	}
	return defaultURL
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		level := slog.LevelInfo
		if os.Getenv("RIDESHARE_TEST_DEBUG") == "1" {
			level = slog.LevelDebug
		}
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// mustRabbit fails the test if RabbitMQ does not answer (skips it under
// RIDESHARE_SKIP_AMQP=1 or -short).
func mustRabbit(tb testing.TB) {
	tb.Helper()
	if os.Getenv("RIDESHARE_SKIP_AMQP") == "1" {
		tb.Skip("RIDESHARE_SKIP_AMQP=1")
	}
	if testing.Short() {
		tb.Skip("needs RabbitMQ (make services); -short")
	}
	conn, err := amqp.DialConfig(baseURL(), amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		tb.Fatalf("RabbitMQ not reachable at %s (%v): run `make services`, or set RIDESHARE_SKIP_AMQP=1 to skip", redact(baseURL()), err)
	}
	_ = conn.Close()
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		tb.Fatalf("rabbitmqctl not found (%v): run `make services`", err)
	}
}

func redact(u string) string {
	if i := strings.Index(u, "@"); i >= 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			return u[:j+3] + "…" + u[i:]
		}
	}
	return u
}

// ctl runs rabbitmqctl and returns its output.
func ctl(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := ctlErr(args...)
	if err != nil {
		tb.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func ctlErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...)
	// As scripts/services.sh: Erlang's port mapper, if this starts it, listens on loopback.
	cmd.Env = append(os.Environ(), "ERL_EPMD_ADDRESS=127.0.0.1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// vhost is a fresh RabbitMQ virtual host: fixed queue names, nobody else's messages.
type vhost struct {
	name string
	url  string
}

func mustVhost(tb testing.TB) *vhost {
	tb.Helper()
	mustRabbit(tb)
	uri, err := amqp.ParseURI(baseURL())
	if err != nil {
		tb.Fatalf("RIDESHARE_AMQP: %v", err)
	}
	name := "rideshare-test-" + randomHex(4)
	ctl(tb, "add_vhost", name)
	tb.Cleanup(func() {
		if out, err := ctlErr("delete_vhost", name); err != nil {
			tb.Logf("delete vhost %s: %v\n%s", name, err, out)
		}
	})
	ctl(tb, "set_permissions", "-p", name, uri.Username, ".*", ".*", ".*")
	uri.Vhost = name
	return &vhost{name: name, url: uri.String()}
}

func mustBroker(tb testing.TB, v *vhost, name string, opts ...func(*amqpq.Broker)) *amqpq.Broker {
	tb.Helper()
	b := amqpq.New(v.url, name)
	b.Logger = testLogger()
	b.OpenTimeout = 10 * time.Second
	for _, o := range opts {
		o(b)
	}
	if err := b.Open(context.Background()); err != nil {
		tb.Fatalf("open %s: %v", name, err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

// rawPublish puts body on queue the way a stray client would: no ReplyTo, no correlation id.
func rawPublish(tb testing.TB, v *vhost, queue string, msg amqp.Publishing) {
	tb.Helper()
	conn, err := amqp.Dial(v.url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		tb.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		tb.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", queue, false, false, msg)
	if err != nil {
		tb.Fatal(err)
	}
	if !dc.Wait() {
		tb.Fatal("raw publish not confirmed")
	}
}

// Open gives up after OpenTimeout when nothing answers (no RabbitMQ needed).
func TestOpenFailsWhenUnreachable(t *testing.T) {
	b := amqpq.New("amqp://guest:guest@127.0.0.1:1/", "nobody")
	b.Logger = testLogger()
	b.OpenTimeout = 300 * time.Millisecond
	start := time.Now()
	if err := b.Open(context.Background()); err == nil {
		_ = b.Close()
		t.Fatal("Open succeeded with nothing listening")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Open took %v to give up", d)
	}
	_ = b.Close()
}

// The broker contract on a real RabbitMQ, in a vhost of its own.
func TestContract(t *testing.T) {
	v := mustVhost(t)
	n := 0
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		n++
		return mustBroker(t, v, fmt.Sprintf("contract-%d", n))
	}, brokertest.WithRawPublish(func(t *testing.T, queue string, body []byte) {
		rawPublish(t, v, queue, amqp.Publishing{Body: body})
	}))
}

func listNames(tb testing.TB, what, vhost string) map[string]string {
	tb.Helper()
	out := ctl(tb, what, "-p", vhost, "name", "durable")
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] != "name" {
			got[f[0]] = f[1]
		}
	}
	return got
}

// After the orchestrator and a worker connect, rabbitmqctl shows the product's queues and
// the syncQ exchange; the workers declare no reply queue of their own.
func TestTopologyIsVisibleToRabbitmqctl(t *testing.T) {
	v := mustVhost(t)
	mustBroker(t, v, "orchestrator", func(b *amqpq.Broker) { b.Caller = true })
	w := mustBroker(t, v, "worker-1")
	sub, err := w.SubscribeSync(context.Background(), func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()

	queues := listNames(t, "list_queues", v.name)
	for q, durable := range map[string]string{
		broker.WriteQ: "true", broker.ReadQ: "true", broker.ResponseQ: "false", amqpq.DeadLetterQueue: "true",
	} {
		if got, ok := queues[q]; !ok || got != durable {
			t.Errorf("queue %s: listed %v, durable %q; want durable %s (queues: %v)", q, ok, got, durable, queues)
		}
	}
	replyQueues, syncQueues := 0, 0
	for q := range queues {
		if strings.HasPrefix(q, broker.ResponseQ) {
			replyQueues++
		}
		if strings.HasPrefix(q, broker.SyncQ+".worker-1.") {
			syncQueues++
		}
	}
	if replyQueues != 1 || syncQueues != 1 {
		t.Errorf("want one reply queue and one syncQ queue for the worker; queues: %v", queues)
	}
	exchanges := listNames(t, "list_exchanges", v.name)
	for _, x := range []string{broker.SyncQ, amqpq.DeadLetterExchange} {
		if exchanges[x] != "true" {
			t.Errorf("exchange %s missing or not durable: %v", x, exchanges)
		}
	}
}

func poisonCount(tb testing.TB, reg *prometheus.Registry, queue string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rideshare_broker_poison_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "queue" && l.GetValue() == queue {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A request without ReplyTo or correlation id goes to deadletters, is counted, and does not
// reach the handler; the consumer goes on.
func TestPoisonIsDeadLettered(t *testing.T) {
	v := mustVhost(t)
	reg := prometheus.NewRegistry()
	srv := mustBroker(t, v, "worker", func(b *amqpq.Broker) { b.Registerer = reg })
	var handled atomic.Int32
	h := func(_ context.Context, body []byte) []byte { handled.Add(1); return body }
	for _, q := range []string{broker.WriteQ, broker.ReadQ} {
		sub, err := srv.Consume(context.Background(), q, 1, h)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Stop()
	}
	rawPublish(t, v, broker.ReadQ, amqp.Publishing{Body: []byte("no reply to")})
	rawPublish(t, v, broker.WriteQ, amqp.Publishing{Body: []byte("no correlation id"), ReplyTo: broker.ResponseQ})

	conn, err := amqp.Dial(v.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		q, err := ch.QueueDeclarePassive(amqpq.DeadLetterQueue, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deadletters holds %d messages, want 2", q.Messages)
		}
		time.Sleep(20 * time.Millisecond)
	}
	reasons := map[string]string{}
	for range 2 {
		d, ok, err := ch.Get(amqpq.DeadLetterQueue, true)
		if err != nil || !ok {
			t.Fatalf("get a dead letter: %v %v", ok, err)
		}
		reasons[fmt.Sprint(d.Headers[amqpq.HeaderDeadQueue])] = fmt.Sprint(d.Headers[amqpq.HeaderDeadReason])
	}
	if reasons[broker.ReadQ] == "" || reasons[broker.WriteQ] != "no correlation id" {
		t.Errorf("dead letters' queues and reasons: %v", reasons)
	}
	for _, q := range []string{broker.WriteQ, broker.ReadQ} {
		if n := poisonCount(t, reg, q); n != 1 {
			t.Errorf("rideshare_broker_poison_messages_total{queue=%q} = %v, want 1", q, n)
		}
	}
	if n := handled.Load(); n != 0 {
		t.Fatalf("the handler was given %d poison messages", n)
	}
	caller := mustBroker(t, v, "orchestrator")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := caller.Call(ctx, broker.WriteQ, []byte("fine")); err != nil || string(got) != "fine" {
		t.Fatalf("call after poison: %q, %v", got, err)
	}
}

// load runs calls from several goroutines and checks every answer that comes.
type load struct {
	ok, failed   atomic.Int64
	lastOK       atomic.Int64 // unix nanoseconds of the latest successful call
	maxGap       atomic.Int64 // the longest time without a successful call, in nanoseconds
	mu           sync.Mutex
	wrongAnswers []string
	badErrors    []error
	stop         chan struct{}
	wg           sync.WaitGroup
}

func startLoad(caller broker.Broker, workers int, tag string) *load {
	l := &load{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				queue := broker.ReadQ
				if i%3 == 0 {
					queue = broker.WriteQ
				}
				body := fmt.Sprintf("%s-%d-%d", tag, w, i)
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				got, err := caller.Call(ctx, queue, []byte(body))
				cancel()
				switch {
				case err == nil && string(got) == queue+":"+body:
					l.ok.Add(1)
					now := time.Now().UnixNano()
					if prev := l.lastOK.Swap(now); prev != 0 {
						for gap := now - prev; ; {
							m := l.maxGap.Load()
							if gap <= m || l.maxGap.CompareAndSwap(m, gap) {
								break
							}
						}
					}
				case err == nil:
					l.mu.Lock()
					l.wrongAnswers = append(l.wrongAnswers, fmt.Sprintf("%s got %q", body, got))
					l.mu.Unlock()
				default:
					l.failed.Add(1)
					if !errors.Is(err, broker.ErrNoConsumer) && !errors.Is(err, broker.ErrTimeout) {
						l.mu.Lock()
						l.badErrors = append(l.badErrors, err)
						l.mu.Unlock()
					}
					time.Sleep(20 * time.Millisecond) // as the orchestrator backs off
				}
			}
		}()
	}
	return l
}

// waitOKAfter waits for a call to succeed after t0 and returns when it did.
func (l *load) waitOKAfter(tb testing.TB, t0 time.Time, within time.Duration) time.Time {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		if last := time.Unix(0, l.lastOK.Load()); last.After(t0) {
			return last
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no call succeeded within %v of %s", within, t0.Format(time.TimeOnly))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *load) finish(tb testing.TB) {
	tb.Helper()
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.wrongAnswers {
		tb.Errorf("wrong answer: %s", w)
	}
	for _, err := range l.badErrors {
		tb.Errorf("call failed with an error the orchestrator would not retry: %v", err)
	}
}

type recovering struct {
	caller, server *amqpq.Broker
	syncSeen       *atomic.Int64
	load           *load
}

// startRecovering sets up a worker (writeQ, readQ, syncQ) and an orchestrator under load.
func startRecovering(t *testing.T, v *vhost) *recovering {
	server := mustBroker(t, v, "worker")
	for _, q := range []string{broker.WriteQ, broker.ReadQ} {
		sub, err := server.Consume(context.Background(), q, 4, func(_ context.Context, body []byte) []byte {
			return append([]byte(q+":"), body...)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Stop() })
	}
	var seen atomic.Int64
	sub, err := server.SubscribeSync(context.Background(), func(b []byte) {
		if strings.HasPrefix(string(b), "after-") {
			seen.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Stop() })
	caller := mustBroker(t, v, "orchestrator", func(b *amqpq.Broker) { b.Caller = true })
	r := &recovering{caller: caller, server: server, syncSeen: &seen}
	r.load = startLoad(caller, 8, t.Name())
	r.load.waitOKAfter(t, time.Now(), 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	return r
}

// syncAgain checks that syncQ works again: the subscriber re-bound and the publisher's
// confirms come back.
func (r *recovering) syncAgain(t *testing.T) {
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; r.syncSeen.Load() == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("syncQ did not recover: no message published after the outage arrived")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = r.caller.PublishSync(ctx, []byte(fmt.Sprintf("after-%d", i)))
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
}

// RabbitMQ stopped and started again (rabbitmqctl stop_app / start_app) in the middle of a
// load: consumers, the reply queue and the syncQ subscription come back by themselves, calls
// meanwhile fail with retryable errors, and every answer a call got was its own.
func TestRecoversAfterRabbitMQRestart(t *testing.T) {
	v := mustVhost(t)
	if os.Getenv("RIDESHARE_AMQP") != "" {
		t.Skip("restarts only the local RabbitMQ of scripts/services.sh")
	}
	r := startRecovering(t, v)
	okBefore := r.load.ok.Load()

	stopped := false
	t.Cleanup(func() {
		if stopped { // never leave the node stopped
			_, _ = ctlErr("start_app")
		}
	})
	stopAt := time.Now()
	stopped = true
	ctl(t, "stop_app")
	stoppedAt := time.Now()
	// During the outage a call fails at once, with an error the orchestrator retries.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := r.caller.Call(ctx, broker.WriteQ, []byte("during the outage"))
	cancel()
	if d := time.Since(stoppedAt); !errors.Is(err, broker.ErrNoConsumer) || d > 500*time.Millisecond {
		t.Errorf("call during the outage: %v after %v; want ErrNoConsumer at once", err, d)
	}
	time.Sleep(300 * time.Millisecond)
	ctl(t, "start_app")
	stopped = false
	startedAt := time.Now()

	firstOK := r.load.waitOKAfter(t, startedAt, 30*time.Second)
	r.syncAgain(t)
	syncAt := time.Now()
	okAt := r.load.ok.Load()
	time.Sleep(500 * time.Millisecond)
	if r.load.ok.Load() <= okAt {
		t.Errorf("calls stopped succeeding again after the recovery")
	}
	r.load.finish(t)
	t.Logf("stop_app took %v, start_app %v; first successful call %v after start_app returned, syncQ back after %v; "+
		"longest time without a successful call %v; calls ok %d (before stop %d), failed %d",
		stoppedAt.Sub(stopAt).Round(time.Millisecond), startedAt.Sub(stoppedAt).Round(time.Millisecond),
		firstOK.Sub(startedAt).Round(time.Millisecond), syncAt.Sub(startedAt).Round(time.Millisecond),
		time.Duration(r.load.maxGap.Load()).Round(time.Millisecond), r.load.ok.Load(), okBefore, r.load.failed.Load())
	// The topology is back too.
	queues := listNames(t, "list_queues", v.name)
	for _, q := range []string{broker.WriteQ, broker.ReadQ, broker.ResponseQ} {
		if _, ok := queues[q]; !ok {
			t.Errorf("queue %s missing after the restart: %v", q, queues)
		}
	}
}

// Every connection of the vhost closed by the server (rabbitmqctl close_all_connections): the
// brokers reconnect and resubscribe by themselves.
func TestRecoversAfterConnectionsClosed(t *testing.T) {
	v := mustVhost(t)
	r := startRecovering(t, v)
	ctl(t, "close_all_connections", "-p", v.name, "rideshare test: dropped connections")
	closedAt := time.Now() // rabbitmqctl has returned: the connections are gone
	firstOK := r.load.waitOKAfter(t, closedAt, 15*time.Second)
	r.syncAgain(t)
	r.load.finish(t)
	t.Logf("first successful call %v after rabbitmqctl returned; longest time without a successful call %v; calls ok %d, failed %d",
		firstOK.Sub(closedAt).Round(time.Millisecond), time.Duration(r.load.maxGap.Load()).Round(time.Millisecond),
		r.load.ok.Load(), r.load.failed.Load())
}
