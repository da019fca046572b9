// Package brokertest is the contract every broker.Broker implementation passes: the same
// subtests run against the embedded NATS transport and against a real RabbitMQ.
package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker"
)

// Option adjusts Run.
type Option func(*config)

type config struct {
	publishRaw func(t *testing.T, queue string, body []byte)
}

// WithRawPublish gives the suite a way to put a message straight onto writeQ or readQ,
// bypassing Call: a message with no reply address (and, for RabbitMQ, no correlation id),
// the shape of garbage a stray client could send. Without it the garbage subtest is skipped.
func WithRawPublish(fn func(t *testing.T, queue string, body []byte)) Option {
	return func(c *config) { c.publishRaw = fn }
}

// Run runs the contract. newBroker returns a new, opened broker on its own connection; every
// broker it returns within one Run shares one namespace (a RabbitMQ vhost, a NATS server)
// that no one else uses, and newBroker closes it in t.Cleanup. The subtests run one after
// another and leave no consumer behind.
func Run(t *testing.T, newBroker func(t *testing.T) broker.Broker, opts ...Option) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	t.Run("ConcurrentCallsGetTheirOwnAnswers", func(t *testing.T) { testConcurrentCalls(t, newBroker) })
	t.Run("ReadQIsSharedRoundRobin", func(t *testing.T) { testRoundRobin(t, newBroker) })
	t.Run("NoConsumerIsErrNoConsumer", func(t *testing.T) { testNoConsumer(t, newBroker) })
	t.Run("SilentHandlerIsErrTimeoutAndLateAnswerIsDropped", func(t *testing.T) { testTimeout(t, newBroker) })
	t.Run("StopLetsInFlightRequestsFinish", func(t *testing.T) { testStop(t, newBroker) })
	t.Run("ConcurrencyLimitIsRespected", func(t *testing.T) { testConcurrency(t, newBroker) })
	t.Run("SyncReachesEverySubscriberInOrder", func(t *testing.T) { testSync(t, newBroker) })
	t.Run("GarbageDoesNotWedgeConsumers", func(t *testing.T) {
		if c.publishRaw == nil {
			t.Skip("no WithRawPublish option")
		}
		testGarbage(t, newBroker, c.publishRaw)
	})
}

// mustConsume starts a consumer that is stopped when the test ends.
func mustConsume(tb testing.TB, b broker.Broker, queue string, concurrency int, h broker.Handler) broker.Subscription {
	tb.Helper()
	sub, err := b.Consume(context.Background(), queue, concurrency, h)
	if err != nil {
		tb.Fatalf("consume %s: %v", queue, err)
	}
	tb.Cleanup(func() { _ = sub.Stop() })
	return sub
}

func mustCall(tb testing.TB, b broker.Broker, queue string, body []byte, timeout time.Duration) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	reply, err := b.Call(ctx, queue, body)
	if err != nil {
		tb.Fatalf("call %s %q: %v", queue, body, err)
	}
	return reply
}

// eventually polls cond every 20 ms until it holds or d has passed.
func eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func echo(prefix string) broker.Handler {
	return func(_ context.Context, body []byte) []byte { return append([]byte(prefix), body...) }
}

func testConcurrentCalls(t *testing.T, newBroker func(*testing.T) broker.Broker) {
	server := newBroker(t)
	mustConsume(t, server, broker.WriteQ, 4, echo("w:"))
	mustConsume(t, server, broker.ReadQ, 8, echo("r:"))
	callers := []broker.Broker{newBroker(t), newBroker(t)}

	const perCaller = 100
	var wg sync.WaitGroup
	errs := make(chan error, 2*perCaller)
	for ci, caller := range callers {
		for i := range perCaller {
			wg.Add(1)
			go func() {
				defer wg.Done()
				queue, prefix := broker.ReadQ, "r:"
				if i%4 == 0 {
					queue, prefix = broker.WriteQ, "w:"
				}
				body := fmt.Sprintf("caller%d-call%d", ci, i)
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				reply, err := caller.Call(ctx, queue, []byte(body))
				switch {
				case err != nil:
					errs <- fmt.Errorf("%s: %w", body, err)
				case string(reply) != prefix+body:
					errs <- fmt.Errorf("%s: got the answer %q", body, reply)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testRoundRobin(t *testing.T, newBroker func(*testing.T) broker.Broker) {
	for _, id := range []string{"a", "b"} {
		mustConsume(t, newBroker(t), broker.ReadQ, 1, func(context.Context, []byte) []byte { return []byte(id) })
	}
	caller := newBroker(t)
	got := map[string]int{}
	const calls = 40
	for i := range calls {
		got[string(mustCall(t, caller, broker.ReadQ, []byte(strconv.Itoa(i)), 5*time.Second))]++
	}
	if got["a"] < 5 || got["b"] < 5 || got["a"]+got["b"] != calls {
		t.Fatalf("answers by consumer: %v; want both consumers to take a share of %d", got, calls)
	}
}

func testNoConsumer(t *testing.T, newBroker func(*testing.T) broker.Broker) {
	caller := newBroker(t)
	for _, queue := range []string{broker.WriteQ, broker.ReadQ} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		_, err := caller.Call(ctx, queue, []byte("anyone?"))
		cancel()
		if !errors.Is(err, broker.ErrNoConsumer) {
			t.Fatalf("call %s with no consumer: err = %v, want ErrNoConsumer", queue, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("call %s with no consumer took %v; want a quick answer", queue, d)
		}
	}
}

func testTimeout(t *testing.T, newBroker func(*testing.T) broker.Broker) {
	server := newBroker(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	mustConsume(t, server, broker.ReadQ, 1, func(_ context.Context, body []byte) []byte {
		if string(body) == "slow" {
			<-release
		}
		return append([]byte("answer to "), body...)
	})
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the Stop above
	caller := newBroker(t)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := caller.Call(ctx, broker.ReadQ, []byte("slow"))
	if !errors.Is(err, broker.ErrTimeout) {
		t.Fatalf("call to a silent handler: err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a call with a 300ms deadline took %v", d)
	}
	// The answer to "slow" now comes late: the next call must get its own answer.
	releaseOnce.Do(func() { close(release) })
	for i := range 5 {
		body := "fast" + strconv.Itoa(i)
		if got := string(mustCall(t, caller, broker.ReadQ, []byte(body), 5*time.Second)); got != "answer to "+body {
			t.Fatalf("call %q got %q", body, got)
		}
	}
}

func testStop(t *testing.T, newBroker func(*testing.T) broker.Broker) {
	server := newBroker(t)
	const n = 4
	started := make(chan struct{}, n)
	var finished atomic.Int32
	sub := mustConsume(t, server, broker.ReadQ, n, func(_ context.Context, body []byte) []byte {
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		finished.Add(1)
		return body
	})
	caller := newBroker(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := "in-flight-" + strconv.Itoa(i)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			reply, err := caller.Call(ctx, broker.ReadQ, []byte(body))
			if err == nil && string(reply) != body {
				err = fmt.Errorf("got %q", reply)
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %w", body, err)
			}
		}()
	}
	for range n {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the handlers did not all start")
		}
	}
	if err := sub.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if f := finished.Load(); f != n {
		t.Fatalf("Stop returned with %d of %d handlers finished", f, n)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("in-flight call failed across Stop: %v", err)
	}
	// Stopped means stopped: nobody consumes readQ any more.
	eventually(t, 5*time.Second, "calls after Stop do not fail with ErrNoConsumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := caller.Call(ctx, broker.ReadQ, []byte("after stop"))
		return errors.Is(err, broker.ErrNoConsumer)
	})
	select {
	case <-started:
		t.Fatal("a handler ran after Stop")
	default:
	}
}

func testConcurrency(t *testing.T, newBroker func(*testing.T) broker.Broker) {
	server := newBroker(t)
	const limit = 3
	var inFlight, most atomic.Int32
	mustConsume(t, server, broker.ReadQ, limit, func(_ context.Context, body []byte) []byte {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(40 * time.Millisecond)
		return body
	})
	caller := newBroker(t)
	var wg sync.WaitGroup
	const calls = 30
	var failed atomic.Int32
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if _, err := caller.Call(ctx, broker.ReadQ, []byte(strconv.Itoa(i))); err != nil {
				t.Errorf("call %d: %v", i, err)
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if m := most.Load(); m > limit || m < 2 {
		t.Fatalf("at most %d handlers ran at once; want between 2 and the limit %d", m, limit)
	}
}

type collector struct {
	mu   sync.Mutex
	msgs []string
}

func (c *collector) add(b []byte) {
	c.mu.Lock()
	c.msgs = append(c.msgs, string(b))
	c.mu.Unlock()
}

func (c *collector) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.msgs...)
}

func testSync(t *testing.T, newBroker func(*testing.T) broker.Broker) {
	const subscribers, messages = 3, 200
	cols := make([]*collector, subscribers)
	for i := range cols {
		cols[i] = &collector{}
		sub, err := newBroker(t).SubscribeSync(context.Background(), cols[i].add)
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		t.Cleanup(func() { _ = sub.Stop() })
	}
	pub := newBroker(t)
	for i := range messages {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := pub.PublishSync(ctx, []byte(strconv.Itoa(i)))
		cancel()
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for i, c := range cols {
		eventually(t, 10*time.Second, fmt.Sprintf("subscriber %d did not get all %d messages", i, messages), func() bool {
			return len(c.get()) >= messages
		})
		got := c.get()
		if len(got) != messages {
			t.Fatalf("subscriber %d got %d messages, want %d", i, len(got), messages)
		}
		for j, m := range got {
			if m != strconv.Itoa(j) {
				t.Fatalf("subscriber %d: message %d is %q: out of order or lost", i, j, m)
			}
		}
	}
}

func testGarbage(t *testing.T, newBroker func(*testing.T) broker.Broker, publishRaw func(*testing.T, string, []byte)) {
	server := newBroker(t)
	garbage := []byte("\x00\xffnot a request{")
	var sawGarbage atomic.Int32
	h := func(_ context.Context, body []byte) []byte {
		if bytes.Equal(body, garbage) {
			sawGarbage.Add(1)
		}
		return append([]byte("ok "), body...)
	}
	// Concurrency 1: garbage that stayed unacked, or wedged the one handler, would block
	// the request behind it.
	mustConsume(t, server, broker.WriteQ, 1, h)
	mustConsume(t, server, broker.ReadQ, 1, h)
	col := &collector{}
	syncSub, err := newBroker(t).SubscribeSync(context.Background(), col.add)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() { _ = syncSub.Stop() })
	caller := newBroker(t)

	for _, queue := range []string{broker.WriteQ, broker.ReadQ} {
		for range 5 {
			publishRaw(t, queue, garbage)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := caller.PublishSync(ctx, garbage); err != nil {
		t.Fatalf("publish garbage on syncQ: %v", err)
	}
	if err := caller.PublishSync(ctx, []byte("after garbage")); err != nil {
		t.Fatalf("publish on syncQ: %v", err)
	}

	for _, queue := range []string{broker.WriteQ, broker.ReadQ} {
		for i := range 3 {
			body := fmt.Sprintf("after garbage %d", i)
			if got := string(mustCall(t, caller, queue, []byte(body), 5*time.Second)); got != "ok "+body {
				t.Fatalf("call on %s after garbage got %q", queue, got)
			}
		}
	}
	eventually(t, 5*time.Second, "syncQ subscriber stuck after garbage", func() bool {
		got := col.get()
		return len(got) > 0 && got[len(got)-1] == "after garbage"
	})
	time.Sleep(100 * time.Millisecond)
	if n := sawGarbage.Load(); n != 0 {
		t.Fatalf("the handlers were given %d messages that had no reply address", n)
	}
}
