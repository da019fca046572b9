package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/broker"
	"github.com/rideshare/rideshare/broker/memq"
)

// What a client was shown, a later strong read must show too: the sequence of an acknowledged
// write, of a refused one (a refusal shows that the user exists), and of an answered read.
func TestStrongReadsWaitForWhatWasShown(t *testing.T) {
	net := memq.NewNetwork()
	s := mustSupervised(t, 1, supOpts{broker: net.Broker()})
	workers := net.Broker()
	t.Cleanup(func() { workers.Close() })
	ctx := context.Background()

	var writeReply rideshare.WriteReply
	if _, err := workers.Consume(ctx, broker.WriteQ, 1, func(_ context.Context, _ []byte) []byte {
		b, _ := json.Marshal(writeReply)
		return b
	}); err != nil {
		t.Fatal(err)
	}
	var readSeq uint64
	minSeqs := make(chan uint64, 1)
	if _, err := workers.Consume(ctx, broker.ReadQ, 1, func(_ context.Context, body []byte) []byte {
		var q rideshare.Read
		if err := json.Unmarshal(body, &q); err != nil {
			t.Error(err)
		}
		minSeqs <- q.MinSeq
		b, _ := json.Marshal(rideshare.ReadReply{Rows: json.RawMessage(`[]`), Seq: readSeq})
		return b
	}); err != nil {
		t.Fatal(err)
	}
	strongRead := func() uint64 {
		t.Helper()
		if _, _, err := s.o.Read(ctx, rideshare.Read{Table: "users", Columns: []string{"username"}}); err != nil {
			t.Fatal(err)
		}
		return <-minSeqs
	}
	write := func() error {
		_, err := s.o.Write(ctx, rideshare.Write{Table: "users", Insert: map[string]any{"username": "a", "password": "3d725c5ee53025f5f8abd6d2ab1c9d3d0bd0ad4e"}})
		return err
	}

	writeReply = rideshare.WriteReply{Result: &rideshare.Result{Seq: 5}}
	if err := write(); err != nil {
		t.Fatal(err)
	}
	if got := strongRead(); got != 5 {
		t.Fatalf("after a write acknowledged at 5, a strong read waits for %d", got)
	}
	writeReply = rideshare.WriteReply{Error: "exists", Kind: rideshare.KindConstraint, Seq: 9}
	if err := write(); !errors.Is(err, rideshare.ErrConstraint) {
		t.Fatalf("refused write: %v, want ErrConstraint", err)
	}
	readSeq = 12
	if got := strongRead(); got != 9 {
		t.Fatalf("after a refusal at 9, a strong read waits for %d", got)
	}
	if got := strongRead(); got != 12 {
		t.Fatalf("after a read that showed 12, a strong read waits for %d", got)
	}
	eventual := rideshare.Read{Table: "users", Columns: []string{"username"}, Consistency: rideshare.Eventual}
	if _, _, err := s.o.Read(ctx, eventual); err != nil {
		t.Fatal(err)
	}
	if got := <-minSeqs; got != 0 {
		t.Fatalf("an eventual read waits for %d, want 0", got)
	}
}
