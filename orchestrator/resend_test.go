package orchestrator

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/broker"
)

// lossyBroker loses the first request sent through it (no answer ever comes) and answers the
// ones after; it can announce a reconnection, as natsq.Broker does.
type lossyBroker struct {
	broker.Broker
	calls       chan int // the number of each call, as it is sent
	n           int
	reconnected chan struct{}
}

func (b *lossyBroker) Call(ctx context.Context, queue string, body []byte) ([]byte, error) {
	b.n++
	b.calls <- b.n
	if b.n == 1 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return []byte(`{"kind":"ok","rows":[]}`), nil
}

func (b *lossyBroker) Reconnects() <-chan struct{} { return b.reconnected }

// A request in flight when a connection announces that it lost its server is sent again at
// once, not at the end of its attempt: it may have been lost with that server.
func TestCallSendsAgainWhenAConnectionLostItsServer(t *testing.T) {
	b := &lossyBroker{calls: make(chan int, 2), reconnected: make(chan struct{})}
	o := &Orchestrator{Broker: b, lostServers: b, Logger: slog.New(slog.DiscardHandler), m: newOrchMetrics(prometheus.NewRegistry())}
	done := make(chan error, 1)
	go func() {
		var reply struct{ Kind string }
		done <- o.call(context.Background(), broker.ReadQ, []byte(`{}`), time.Hour, &reply, func() bool { return false })
	}()
	if n := <-b.calls; n != 1 {
		t.Fatalf("call %d first", n)
	}
	close(b.reconnected)
	select {
	case <-b.calls:
	case <-time.After(30 * time.Second):
		t.Fatal("the request was not sent again after the reconnection (its attempt lasts an hour)")
	}
	if err := <-done; err != nil {
		t.Fatalf("call: %v", err)
	}
}
