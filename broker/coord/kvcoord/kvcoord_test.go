package kvcoord

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/coord/coordtest"
	"github.com/rideshare/rideshare/broker/natsq"
)

var bucketN atomic.Int64

func TestContract(t *testing.T) {
	srv := &natsq.Server{StoreDir: t.TempDir(), Port: -1}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	bucket := ""
	conns := map[coord.Coordinator]*nats.Conn{}
	newCoord := func(t *testing.T) coord.Coordinator {
		// Each Run subtest asks for sessions on one namespace: a bucket per subtest.
		name := fmt.Sprintf("b_%s", sanitize(t.Name()))
		if name != bucket {
			bucket = name
			bucketN.Add(1)
		}
		nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(0))
		if err != nil {
			t.Fatal(err)
		}
		k := New(nc)
		k.Bucket = fmt.Sprintf("coord_%d", bucketN.Load())
		k.TTL = time.Second
		k.Poll = 20 * time.Millisecond
		if err := k.Open(t.Context()); err != nil {
			t.Fatal(err)
		}
		conns[k] = nc
		t.Cleanup(func() { k.Close(); nc.Close() })
		return k
	}
	kill := func(t *testing.T, c coord.Coordinator) {
		// A crashed process: its connection drops, nothing is deleted, the leases expire.
		conns[c].Close()
	}
	coordtest.Run(t, newCoord, kill)
}

func sanitize(s string) string {
	out := []rune{}
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			out = append(out, r)
		}
	}
	return string(out)
}

// A worker's session binds to the buckets the orchestrator made and never creates them: on a
// missing bucket it fails rather than make one with the wrong settings.
func TestBindNeedsTheBuckets(t *testing.T) {
	nc := connectServer(t)
	open := func(bind bool) (*KV, error) {
		k := New(nc)
		k.Bucket, k.TTL, k.Bind = "bind_test", time.Second, bind
		return k, k.Open(t.Context())
	}
	if k, err := open(true); err == nil {
		k.Close()
		t.Fatal("a bound session opened buckets no one created")
	}
	creator, err := open(false)
	if err != nil {
		t.Fatal(err)
	}
	defer creator.Close()
	worker, err := open(true)
	if err != nil {
		t.Fatalf("bind after the orchestrator created the buckets: %v", err)
	}
	worker.Close()
}

// connectServer runs an embedded NATS server until the test ends and returns a connection to it.
func connectServer(t *testing.T) *nats.Conn {
	t.Helper()
	srv := &natsq.Server{StoreDir: t.TempDir(), Port: -1}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
