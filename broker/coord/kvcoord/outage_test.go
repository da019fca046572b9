package kvcoord

import (
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare/rideshare/broker/coord"
)

// A session outlives an outage of its bucket that ends before TTL*3/4 has passed since the
// last refresh before it, however that refresh fell in the refresh cycle: refreshes come at
// least every RefreshEvery and a failed one is tried again within RetryEvery. (Refreshed
// every TTL/4 and retried only on the next tick, the last good refresh could lie up to TTL/4
// before the outage, and a session lost its leases, and a slave stopped, while a cluster
// elected the bucket's next leader.) The outage is the bucket refusing every write at once,
// as a JetStream stream without a leader does.
func TestSessionOutlivesAnOutageOfItsBucket(t *testing.T) {
	nc := connectServer(t)
	ctx := t.Context()
	const ttl = 12 * time.Second
	k := New(nc)
	k.Bucket, k.TTL = "outage_test", ttl
	k.Logger = slog.New(slog.DiscardHandler) // a warning for each refused refresh
	if err := k.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	if err := k.Join(ctx, coord.Member{ID: "w1"}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	refuse := func(on bool) {
		t.Helper()
		s, err := js.Stream(ctx, "KV_"+k.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		cfg.MaxMsgSize = -1
		if on {
			cfg.MaxMsgSize = 1 // every refresh is refused at once
		}
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	// r: when a refresh that succeeded was sent (HeldUntil is r + TTL*3/4).
	first := k.HeldUntil()
	deadline := time.Now().Add(10 * time.Second)
	for k.HeldUntil().Equal(first) {
		if time.Now().After(deadline) {
			t.Fatal("no refresh within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := k.HeldUntil().Add(-ttl * 3 / 4)
	// The outage's timing, not waits for events: it starts 1.5 s after refresh r and ends
	// 0.8 s before r's lease would have run out. A refresh within the 1.5 s leaves the
	// session 0.5 s or more to refresh after the outage; with none (the TTL/4 = 3 s cycle),
	// the lease runs out during it.
	time.Sleep(time.Until(r.Add(1500 * time.Millisecond)))
	refuse(true)
	time.Sleep(time.Until(r.Add(ttl*3/4 - 800*time.Millisecond)))
	refuse(false)
	time.Sleep(time.Until(r.Add(ttl*3/4 + time.Second)))
	select {
	case <-k.Lost():
		t.Fatal("session lost in an outage it could have outlived")
	default:
	}
	if until := k.HeldUntil(); !until.After(time.Now()) {
		t.Fatalf("leases held until %v, before now", until)
	}
	if ms, err := k.Members(ctx); err != nil || len(ms) != 1 {
		t.Fatalf("members after the outage: %v, %v", ms, err)
	}
}

// A refresh of the master lock whose answer was lost, but which was stored, leaves the lock at
// a revision the session does not know: the next refresh finds the lock still its own and
// refreshes it at that revision, and the session lives on. A lock that now names another
// holder ends the session.
func TestRefreshAfterAnAnswerLost(t *testing.T) {
	nc := connectServer(t)
	ctx := t.Context()
	k := New(nc)
	k.Bucket, k.TTL = "lost_answer_test", 2*time.Second
	k.Logger = slog.New(slog.DiscardHandler)
	if err := k.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	if err := k.AcquireMaster(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	leases, err := js.KeyValue(ctx, k.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	// What a lost answer leaves: the same holder, stored at a revision the session never saw.
	if _, err := leases.Put(ctx, keyMaster, []byte("w1")); err != nil {
		t.Fatal(err)
	}
	// Four refreshes come and go within a TTL; the lock must stay held past it.
	deadline := time.Now().Add(k.TTL)
	for time.Now().Before(deadline) {
		select {
		case <-k.Lost():
			t.Fatal("session lost over a lock still its own")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if until := k.HeldUntil(); !until.After(time.Now()) {
		t.Fatalf("held until %v, before now: the lock was not refreshed", until)
	}
	if holder, err := k.Master(ctx); err != nil || holder != "w1" {
		t.Fatalf("master %q, %v; want w1", holder, err)
	}
	// Another holder in the lock: the session ends at its next refresh.
	if _, err := leases.Put(ctx, keyMaster, []byte("w2")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-k.Lost():
	case <-time.After(k.TTL):
		t.Fatal("session not lost after its lock was taken over")
	}
}
