package synclog_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/rideshare/rideshare/broker/natsq"
	"github.com/rideshare/rideshare/broker/synclog"
)

func openLog(t *testing.T) *synclog.Log {
	t.Helper()
	return openLogOn(t, serve(t, t.TempDir(), -1).ClientURL())
}

// serve runs an embedded server on dir and port (-1: any) until the test ends.
func serve(t *testing.T, dir string, port int) *natsq.Server {
	t.Helper()
	srv := &natsq.Server{StoreDir: dir, Port: port}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// Read delivers every entry once, in order, and keeps a batch near MaxBatchBytes whatever the
// entries' sizes: many small ones come many to a batch, large ones a few at a time.
func TestReadBatchesByCountAndBytes(t *testing.T) {
	ctx := context.Background()
	l := openLog(t)
	var want [][]byte
	appendN := func(n, size int) {
		for range n {
			data := []byte(fmt.Sprintf("%08d", len(want)+1))
			data = append(data, bytes.Repeat([]byte("x"), size-len(data))...)
			seq, err := l.Append(ctx, uint64(len(want)), data)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, data)
			if seq != uint64(len(want)) {
				t.Fatalf("appended at %d, want %d", seq, len(want))
			}
		}
	}
	const big = 400 << 10
	appendN(3000, 100) // small: bounded by the count
	appendN(40, big)   // large: bounded by the bytes
	appendN(500, 100)

	next := uint64(1)
	batches, largest := 0, 0
	err := l.Read(ctx, 1, uint64(len(want)), 2000, func(msgs []synclog.Msg) error {
		batches++
		if len(msgs) > 2000 {
			t.Errorf("batch of %d entries, asked for at most 2000", len(msgs))
		}
		size := 0
		for _, m := range msgs {
			if m.Seq != next || !bytes.Equal(m.Data, want[m.Seq-1]) {
				return fmt.Errorf("got entry %d, want %d with its data", m.Seq, next)
			}
			next++
			size += len(m.Data)
		}
		largest = max(largest, size)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != uint64(len(want))+1 {
		t.Fatalf("read up to %d of %d", next-1, len(want))
	}
	// One batch may overshoot by the entries read before the size was known (16 to start, or
	// one small-entry-sized guess meeting large entries).
	if limit := synclog.MaxBatchBytes + 16*big; largest > limit {
		t.Fatalf("a batch held %d bytes, more than %d", largest, limit)
	}
	if batches > 60 {
		t.Fatalf("%d batches for %d entries: small entries should come many at once", batches, len(want))
	}
}

// A finished read leaves no consumer on the server: slaves read the log every second, and
// consumers left behind reached the server's limit in a soak.
func TestReadLeavesNoConsumer(t *testing.T) {
	ctx := context.Background()
	l := openLog(t)
	// Long enough for each read to go through a consumer (shorter ones need none).
	const n = 20 + synclog.SmallRead
	for i := range n {
		if _, err := l.Append(ctx, uint64(i), []byte(fmt.Sprintf("entry %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for from := uint64(1); from <= 20; from++ {
		if err := l.Read(ctx, from, n, 5, func([]synclog.Msg) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	st, err := l.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Consumers != 0 {
		t.Fatalf("%d consumers left on the stream after 20 reads", st.Consumers)
	}
}
