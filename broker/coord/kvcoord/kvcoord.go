// Package kvcoord is the embedded coordinator used by `rideshare up` without ZooKeeper: a
// session is a set of leases in a JetStream key-value bucket whose entries expire TTL after
// their last refresh. Members are keys "m.<id>", the master lock is the key "master" (taken
// with Create, so only one session can hold it), the designation lives in a second bucket with
// no expiry.
package kvcoord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare/rideshare/broker/coord"
)

const (
	keyMaster     = "master"
	keyDesignated = "designated"
	memberPrefix  = "m."
)

// KV is one session with the embedded coordinator.
type KV struct {
	Conn *nats.Conn
	// Bucket names the lease bucket; the designation bucket is Bucket + "_persist".
	Bucket string
	// TTL is the session timeout: a session that has not refreshed its leases for this long
	// is gone. Every session on one bucket must use the same TTL.
	TTL time.Duration
	// Poll is how often Watch looks for changes.
	Poll   time.Duration
	Logger *slog.Logger
	// Replicas is the buckets' replica count on a JetStream cluster (0: 1), for the session
	// that creates them.
	Replicas int
	// Bind opens buckets that must exist (a worker's session) instead of creating or
	// updating them: a stream update needs the cluster's agreement and can stall while one of
	// its servers is down, and workers must start then too.
	Bind bool

	leases, persist jetstream.KeyValue
	stream          jetstream.Stream // the lease bucket's stream

	mu        sync.Mutex
	members   map[string]coord.Member
	masterID  string
	masterRev uint64
	lastOK    time.Time // when the last successful refresh was sent
	lost      chan struct{}
	lostOnce  sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
}

var _ coord.Coordinator = (*KV)(nil)

// New returns a session on nc with the default bucket and a 3 s TTL.
func New(nc *nats.Conn) *KV {
	return &KV{Conn: nc, Bucket: "rideshare_coord", TTL: 3 * time.Second, Poll: 100 * time.Millisecond, Logger: slog.Default()}
}

// Open creates or binds the buckets and starts refreshing leases.
func (k *KV) Open(ctx context.Context) error {
	js, err := jetstream.New(k.Conn)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	k.leases, err = k.bucket(ctx, js, k.Bucket, k.TTL)
	if err != nil {
		return fmt.Errorf("lease bucket %s: %w", k.Bucket, err)
	}
	k.stream, err = js.Stream(ctx, "KV_"+k.Bucket)
	if err != nil {
		return fmt.Errorf("lease bucket stream: %w", err)
	}
	k.persist, err = k.bucket(ctx, js, k.Bucket+"_persist", 0)
	if err != nil {
		return fmt.Errorf("bucket %s_persist: %w", k.Bucket, err)
	}
	k.members = map[string]coord.Member{}
	k.lost = make(chan struct{})
	k.done = make(chan struct{})
	k.lastOK = time.Now()
	hctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	go k.heartbeat(hctx)
	return nil
}

// bucket binds to the bucket name (Bind) or creates it (updating one that exists), its keys
// expiring after ttl (0: never).
func (k *KV) bucket(ctx context.Context, js jetstream.JetStream, name string, ttl time.Duration) (jetstream.KeyValue, error) {
	if k.Bind {
		return js.KeyValue(ctx, name)
	}
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: name, TTL: ttl, History: 1, Storage: jetstream.FileStorage, Replicas: max(k.Replicas, 1),
	})
}

// RefreshEvery is the longest time between two refreshes of a session's leases, and RetryEvery
// how soon a failed refresh is tried again. A lease lives TTL after the server received its
// last refresh, and counts as held until TTL*3/4 after that refresh was sent; in a cluster
// the bucket has no leader for 4–9 s after its leader's server dies, and a session must
// outlive that. With a refresh every TTL/4 (3.75 s at the cluster's 15 s) the last good one
// could have been sent 3.75 s before the death, leaving 7.5 s: slaves lost their sessions,
// and stopped, when a node that led only the coordination bucket was killed. Refreshing at
// least every second, and retrying within a quarter of one, leaves more than 10 s.
const (
	RefreshEvery = time.Second
	RetryEvery   = 250 * time.Millisecond
)

// heartbeat refreshes this session's leases every TTL/4 or RefreshEvery, whichever is
// sooner, and a failed refresh again after RetryEvery. A lease counts as held only until
// TTL*3/4 after the last refresh that succeeded was sent: the server expires it TTL after it
// received that refresh, so the holder always gives up first.
func (k *KV) heartbeat(ctx context.Context) {
	defer close(k.done)
	every := min(k.TTL/4, RefreshEvery)
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		expired := time.Since(k.lastOK) > k.TTL*3/4
		k.mu.Unlock()
		if expired {
			k.loseSession("leases not refreshed within the session timeout")
			return
		}
		sent := time.Now()
		if err := k.refresh(ctx); err != nil {
			if errors.Is(err, coord.ErrSessionLost) {
				k.loseSession(err.Error())
				return
			}
			k.Logger.Warn("lease refresh failed", "component", "kvcoord", "err", err)
			t.Reset(min(every, RetryEvery))
			continue
		}
		k.mu.Lock()
		k.lastOK = sent
		k.mu.Unlock()
		t.Reset(max(0, every-time.Since(sent)))
	}
}

func (k *KV) refresh(ctx context.Context) error {
	// Bounded well below the session: a refresh stuck on a server that stopped answering
	// must leave time to try again through another.
	ctx, cancel := context.WithTimeout(ctx, min(k.TTL/2, 2*time.Second))
	defer cancel()
	k.mu.Lock()
	members := make([]coord.Member, 0, len(k.members))
	for _, m := range k.members {
		members = append(members, m)
	}
	masterID, rev := k.masterID, k.masterRev
	k.mu.Unlock()
	for _, m := range members {
		data, _ := json.Marshal(m)
		if _, err := k.leases.Put(ctx, memberPrefix+m.ID, data); err != nil {
			return fmt.Errorf("refresh member %s: %w", m.ID, err)
		}
	}
	if masterID != "" {
		newRev, err := k.leases.Update(ctx, keyMaster, []byte(masterID), rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// The lock moved past the revision this session knows. Either it was taken over,
			// or an earlier refresh whose answer was lost (timed out) was stored after all:
			// then the lock still names this holder, at a later revision, and is refreshed at
			// that one. (Seen in a cluster: after one timed-out refresh every next one was
			// refused, and the holder lost a lock that was still its own. A replicated bucket
			// reports the conflict with another code than a single server's; both map to
			// ErrKeyRevisionMismatch.)
			e, gerr := k.leases.Get(ctx, keyMaster)
			switch {
			case errors.Is(gerr, jetstream.ErrKeyNotFound), errors.Is(gerr, jetstream.ErrKeyDeleted):
				return fmt.Errorf("%w: master lock gone", coord.ErrSessionLost)
			case gerr != nil:
				return fmt.Errorf("refresh master lock: %w", gerr)
			case string(e.Value()) != masterID:
				return fmt.Errorf("%w: master lock taken over", coord.ErrSessionLost)
			}
			// Refreshed anew, not taken as refreshed: that entry was stored before this
			// refresh was sent, and the lease runs from when it was stored.
			newRev, err = k.leases.Update(ctx, keyMaster, []byte(masterID), e.Revision())
		}
		if err != nil {
			return fmt.Errorf("refresh master lock: %w", err)
		}
		k.mu.Lock()
		k.masterRev = newRev
		k.mu.Unlock()
	}
	return nil
}

func (k *KV) loseSession(why string) {
	k.lostOnce.Do(func() {
		if why != "closed" {
			k.Logger.Warn("coordination session lost", "component", "kvcoord", "reason", why)
		}
		close(k.lost)
	})
}

func (k *KV) alive() error {
	select {
	case <-k.lost:
		return coord.ErrSessionLost
	default:
		return nil
	}
}

// HeldUntil is until when this session surely holds its leases: TTL*3/4 after the last
// refresh that succeeded was sent (the server expires them TTL after it received it); zero
// once the session is lost. The orchestrator's supervisor role counts on it.
func (k *KV) HeldUntil() time.Time {
	if k.alive() != nil {
		return time.Time{}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lastOK.Add(k.TTL * 3 / 4)
}

// ErrNotJoined is returned by Update for a member this session did not join.
var ErrNotJoined = errors.New("member not joined by this session")

// Join registers m with a lease.
func (k *KV) Join(ctx context.Context, m coord.Member) error { return k.put(ctx, m) }

// Update replaces the data of a member this session joined and refreshes its lease.
func (k *KV) Update(ctx context.Context, m coord.Member) error {
	k.mu.Lock()
	_, joined := k.members[m.ID]
	k.mu.Unlock()
	if !joined {
		if err := k.alive(); err != nil {
			return err
		}
		return fmt.Errorf("update %s: %w", m.ID, ErrNotJoined)
	}
	return k.put(ctx, m)
}

func (k *KV) put(ctx context.Context, m coord.Member) error {
	if err := k.alive(); err != nil {
		return err
	}
	if m.ID == "" || strings.ContainsAny(m.ID, ".*> ") {
		return fmt.Errorf("invalid member id %q", m.ID)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := k.leases.Put(ctx, memberPrefix+m.ID, data); err != nil {
		return fmt.Errorf("register member %s: %w", m.ID, err)
	}
	k.mu.Lock()
	k.members[m.ID] = m
	k.mu.Unlock()
	return nil
}

// Members lists the members whose leases live.
func (k *KV) Members(ctx context.Context) ([]coord.Member, error) {
	if err := k.alive(); err != nil {
		return nil, err
	}
	// One stream-info request lists every member subject at once. (ListKeys runs a
	// watcher whose "initial values done" marker can come early while keys are being
	// refreshed, which would make a live member look gone.)
	prefix := "$KV." + k.Bucket + "."
	info, err := k.stream.Info(ctx, jetstream.WithSubjectFilter(prefix+memberPrefix+">"))
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	var keys []string
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, prefix))
	}
	var out []coord.Member
	for _, key := range keys {
		e, err := k.leases.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read member %s: %w", key, err)
		}
		var m coord.Member
		if err := json.Unmarshal(e.Value(), &m); err != nil {
			return nil, fmt.Errorf("member %s: %w", key, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Watch polls for changes of members, master and designation.
func (k *KV) Watch(ctx context.Context) (<-chan struct{}, error) {
	if err := k.alive(); err != nil {
		return nil, err
	}
	ch := make(chan struct{}, 1)
	go func() {
		defer close(ch)
		t := time.NewTicker(k.Poll)
		defer t.Stop()
		last := ""
		for {
			sig := k.signature(ctx)
			if sig != last {
				last = sig
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-k.lost:
				return
			case <-t.C:
			}
		}
	}()
	return ch, nil
}

func (k *KV) signature(ctx context.Context) string {
	ms, err := k.Members(ctx)
	if err != nil {
		return "error"
	}
	parts := make([]string, 0, len(ms)+2)
	for _, m := range ms {
		b, _ := json.Marshal(m)
		parts = append(parts, string(b))
	}
	sort.Strings(parts)
	master, _ := k.Master(ctx)
	designated, _ := k.Designated(ctx)
	return strings.Join(parts, "|") + "#" + master + "#" + designated
}

// Designate records id as the next master.
func (k *KV) Designate(ctx context.Context, id string) error {
	if err := k.alive(); err != nil {
		return err
	}
	if _, err := k.persist.Put(ctx, keyDesignated, []byte(id)); err != nil {
		return fmt.Errorf("designate %s: %w", id, err)
	}
	return nil
}

// Designated returns the designated worker.
func (k *KV) Designated(ctx context.Context) (string, error) {
	if err := k.alive(); err != nil {
		return "", err
	}
	return get(ctx, k.persist, keyDesignated)
}

// AcquireMaster creates the master lock for id.
func (k *KV) AcquireMaster(ctx context.Context, id string) error {
	if err := k.alive(); err != nil {
		return err
	}
	k.mu.Lock()
	held := k.masterID
	k.mu.Unlock()
	if held == id {
		return nil
	}
	rev, err := k.leases.Create(ctx, keyMaster, []byte(id))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return coord.ErrHeld
	}
	if err != nil {
		return fmt.Errorf("take master lock: %w", err)
	}
	k.mu.Lock()
	k.masterID, k.masterRev = id, rev
	k.mu.Unlock()
	return nil
}

// Master returns the lock holder.
func (k *KV) Master(ctx context.Context) (string, error) {
	if err := k.alive(); err != nil {
		return "", err
	}
	return get(ctx, k.leases, keyMaster)
}

// Revoke deletes the master lock if it names id, at the revision read, so a lock taken by
// someone else meanwhile is left alone.
func (k *KV) Revoke(ctx context.Context, id string) error {
	if err := k.alive(); err != nil {
		return err
	}
	e, err := k.leases.Get(ctx, keyMaster)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read master lock: %w", err)
	}
	if string(e.Value()) != id {
		return nil
	}
	err = k.leases.Delete(ctx, keyMaster, jetstream.LastRevision(e.Revision()))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil
	}
	return err
}

func get(ctx context.Context, kv jetstream.KeyValue, key string) (string, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	return string(e.Value()), nil
}

// Lost is closed when the session's leases may have expired.
func (k *KV) Lost() <-chan struct{} { return k.lost }

// Close stops refreshing and deletes this session's leases.
func (k *KV) Close() error {
	if k.cancel == nil {
		return nil
	}
	k.cancel()
	<-k.done
	if k.alive() != nil {
		return nil // lost (or closed before): the leases are gone or expiring on their own
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	k.mu.Lock()
	defer k.mu.Unlock()
	var errs []error
	for id := range k.members {
		errs = append(errs, k.leases.Delete(ctx, memberPrefix+id))
	}
	if k.masterID != "" {
		errs = append(errs, k.leases.Delete(ctx, keyMaster, jetstream.LastRevision(k.masterRev)))
	}
	k.members, k.masterID = map[string]coord.Member{}, ""
	k.loseSession("closed")
	return errors.Join(errs...)
}

// Kill stops refreshing without deleting anything, as a crashed process would: the leases
// expire after TTL. For tests.
func (k *KV) Kill() {
	k.cancel()
	<-k.done
}
