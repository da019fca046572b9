package synclog_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rideshare/rideshare/broker/synclog"
)

// A read of fewer than SmallRead entries needs no consumer: a client that may not create one
// (as while the cluster's meta leader is being replaced no client can) still reads them, in
// order and in batches of the size asked for; a longer read, through a consumer, is refused
// to it, which shows the client's limit holds.
func TestSmallReadNeedsNoConsumer(t *testing.T) {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "writer", Password: "w"},
			{Username: "reader", Password: "r", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Deny: []string{"$JS.API.CONSUMER.>"}},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	connect := func(user, pass string) *nats.Conn {
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, pass))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx := context.Background()
	w, err := synclog.Open(ctx, connect("writer", "w"), true)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2 * synclog.SmallRead
	var want [][]byte
	for i := range n {
		data := []byte(fmt.Sprintf("entry %d", i+1))
		if _, err := w.Append(ctx, uint64(i), data); err != nil {
			t.Fatal(err)
		}
		want = append(want, data)
	}
	r, err := synclog.Open(ctx, connect("reader", "r"), false)
	if err != nil {
		t.Fatal(err)
	}
	from, to := uint64(10), uint64(10+synclog.SmallRead-1)
	next := from
	err = r.Read(ctx, from, to, 5, func(msgs []synclog.Msg) error {
		if len(msgs) > 5 {
			return fmt.Errorf("batch of %d entries, asked for at most 5", len(msgs))
		}
		for _, m := range msgs {
			if m.Seq != next || !bytes.Equal(m.Data, want[m.Seq-1]) {
				return fmt.Errorf("got entry %d %q, want %d %q", m.Seq, m.Data, next, want[next-1])
			}
			next++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("small read without consumers: %v", err)
	}
	if next != to+1 {
		t.Fatalf("read up to %d, want %d", next-1, to)
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := r.Read(lctx, 1, n, 100, func([]synclog.Msg) error { return nil }); err == nil {
		t.Fatalf("a read of %d entries succeeded without creating a consumer", n)
	}
}
