package memq_test

import (
	"context"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/brokertest"
	"github.com/rideshare/rideshare/broker/memq"
)

// The in-memory broker passes the contract natsq and amqpq pass, garbage included.
func TestContract(t *testing.T) {
	net := memq.NewNetwork()
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		b := net.Broker()
		t.Cleanup(func() { b.Close() })
		return b
	}, brokertest.WithRawPublish(func(t *testing.T, queue string, body []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if !net.PublishRaw(ctx, queue, body) {
			t.Fatalf("raw publish on %s: no consumer took it", queue)
		}
	}))
}

// A closed connection's consumers are gone: callers get ErrNoConsumer, and the connection
// refuses further use.
func TestCloseStopsConsumers(t *testing.T) {
	net := memq.NewNetwork()
	server, caller := net.Broker(), net.Broker()
	defer caller.Close()
	if _, err := server.Consume(context.Background(), broker.ReadQ, 2, func(_ context.Context, b []byte) []byte { return b }); err != nil {
		t.Fatal(err)
	}
	if _, err := caller.Call(context.Background(), broker.ReadQ, []byte("x")); err != nil {
		t.Fatal(err)
	}
	server.Close()
	if _, err := caller.Call(context.Background(), broker.ReadQ, []byte("x")); err != broker.ErrNoConsumer {
		t.Fatalf("call after the consumer's broker closed: %v, want ErrNoConsumer", err)
	}
	if _, err := server.Consume(context.Background(), broker.ReadQ, 1, nil); err == nil {
		t.Fatal("Consume on a closed broker succeeded")
	}
}
