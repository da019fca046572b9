package natsq_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/brokertest"
	"github.com/rideshare/rideshare/broker/natsq"
)

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func mustServer(tb testing.TB) *natsq.Server {
	tb.Helper()
	srv := &natsq.Server{StoreDir: tb.TempDir(), Port: -1}
	if err := srv.Open(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Close() })
	return srv
}

// The broker contract on an embedded NATS server of its own.
func TestContract(t *testing.T) {
	srv := mustServer(t)
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		b := natsq.New(srv.ClientURL(), "contract")
		b.Logger = testLogger()
		if err := b.Open(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}, brokertest.WithRawPublish(func(t *testing.T, queue string, body []byte) {
		t.Helper()
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if err := nc.Publish(queue, body); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}))
}
