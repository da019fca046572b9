// Package synclog is the durable sync log: a JetStream stream in the orchestrator's embedded
// NATS server holding every committed write in order. The stream sequence is the write's
// sequence. Appends are fenced: an append names the sequence it expects to follow, so a master
// that has been replaced (and whose successor has appended) can never add to the log.
package synclog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

const (
	// Stream is the JetStream stream's name.
	Stream = "SYNCLOG"
	// Subject is the one subject the stream stores.
	Subject = "synclog.entries"
)

// ErrFenced means the log has moved past the sequence the appender expected: another master
// has appended since. The appender is no longer master.
var ErrFenced = errors.New("sync log moved on: this worker is no longer master")

// Msg is one log entry as stored.
type Msg struct {
	Seq  uint64
	Data []byte
}

// Log is a handle on the sync log.
type Log struct {
	js       jetstream.JetStream
	stream   jetstream.Stream
	maxBytes int // of one batch Read delivers
}

// Open binds to the stream on nc's server; with create set (the orchestrator) it creates the
// stream if it does not exist yet.
func Open(ctx context.Context, nc *nats.Conn, create bool) (*Log, error) {
	if create {
		return Ensure(ctx, nc, 1)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	var s jetstream.Stream
	{
		s, err = js.Stream(ctx, Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", Stream, err)
	}
	return &Log{js: js, stream: s, maxBytes: batchBytes(nc)}, nil
}

// Ensure creates the log with the given number of replicas, or updates an existing one to
// it, and opens it. On a JetStream cluster of three servers, 3 replicas make every append a
// Raft commit on a majority of their disks before it is acknowledged: the log survives the
// loss of any one server.
func Ensure(ctx context.Context, nc *nats.Conn, replicas int) (*Log, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	cfg := streamConfig(0)
	cfg.Replicas = max(replicas, 1)
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open stream %s (%d replicas): %w", Stream, cfg.Replicas, err)
	}
	return &Log{js: js, stream: s, maxBytes: batchBytes(nc)}, nil
}

// Create makes a new, empty log whose first entry will have sequence after+1, for a
// deployment restored from a backup holding the log up to after: the restored database's
// applied sequence and the log's last one agree, so the first master's fenced append works
// and no entry is numbered twice. It fails if the log exists.
func Create(ctx context.Context, nc *nats.Conn, after uint64) (*Log, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s, err := js.CreateStream(ctx, streamConfig(after+1))
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", Stream, err)
	}
	return &Log{js: js, stream: s, maxBytes: batchBytes(nc)}, nil
}

func streamConfig(firstSeq uint64) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:      Stream,
		Subjects:  []string{Subject},
		Storage:   jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy,
		Discard:   jetstream.DiscardOld,
		Replicas:  1,
		FirstSeq:  firstSeq,
		// Append's repeats (each message id names its place and content) come within one
		// master's group timeout of the first attempt; the server keeps every id of the
		// window in memory, so it is short.
		Duplicates: 30 * time.Second,
	}
}

// Append stores data as the entry right after expectLast and returns its sequence. It returns
// ErrFenced if the log's last sequence is not expectLast.
func (l *Log) Append(ctx context.Context, expectLast uint64, data []byte) (uint64, error) {
	// One attempt is bounded, and an append whose outcome is unknown is sent again, with the
	// same message id, until ctx ends. In a cluster the stream's leader may die with an append
	// in flight: that attempt would otherwise wait out the whole of ctx (10 s for a master's
	// group) although the next leader is elected 4 to 9 s after the death. The id makes the
	// repeat of an append that was stored answer with the stored entry's sequence (JetStream
	// checks duplicates before the expected last sequence in a cluster). A repeat refused with
	// the wrong last sequence (a single server checks that first; in a cluster, a repeat that
	// meets the first attempt still being stored) is confirmed by reading the entry back: the
	// log holding this very entry at its place is the append's success.
	id := entryID(expectLast, data)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, AppendAttempt)
		ack, err := l.js.Publish(actx, Subject, data, jetstream.WithExpectLastSequence(expectLast),
			jetstream.WithMsgID(id), jetstream.WithRetryAttempts(0))
		cancel()
		if err == nil {
			return ack.Sequence, nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			if apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
				apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant {
				if l.holds(ctx, expectLast+1, data) {
					return expectLast + 1, nil
				}
				return 0, fmt.Errorf("%w (expected last %d)", ErrFenced, expectLast)
			}
			return 0, fmt.Errorf("append to sync log: %w", err)
		}
		// No leader (no responders), a timeout or a lost connection: try again shortly.
		t := time.NewTimer(appendRetryWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("append to sync log (%d attempts): %w", attempt, err)
		case <-t.C:
		}
	}
}

// AppendAttempt bounds one attempt of Append: far above an append's usual milliseconds, and
// short against a leader election. It is short also because the master's connection may lose
// its server with an append or its answer in flight (a node killed; its server is not the
// log's leader): a master appends one group at a time, so a repeat costs one message, and the
// writes of the group wait for it. At 1 s, killing the node whose server the workers used made
// writes wait more than 1 s.
const AppendAttempt = 250 * time.Millisecond

// appendRetryWait is the pause between two attempts of Append.
const appendRetryWait = 100 * time.Millisecond

// entryID names an append for JetStream's duplicate check: its place and its content, so
// that only a repeat of the same append is taken for one.
func entryID(expectLast uint64, data []byte) string {
	sum := sha256.Sum256(data)
	return fmt.Sprintf("%d-%x", expectLast+1, sum[:12])
}

// holds reports whether entry seq of the log is data.
func (l *Log) holds(ctx context.Context, seq uint64, data []byte) bool {
	m, err := l.stream.GetMsg(ctx, seq)
	return err == nil && bytes.Equal(m.Data, data)
}

// Last is the sequence of the newest entry (0 when empty).
func (l *Log) Last(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("sync log info: %w", err)
	}
	return info.State.LastSeq, nil
}

// LeaderLease is how recently the log's leader must have heard from a majority of the
// stream's servers for Confirmed to take its answer. NATS's Raft hard-codes what makes this
// safe: followers elect another leader only after 4 s at least without hearing from this one
// (its minimum election timeout). A leader that heard from a majority less than 2 s ago cannot
// have been replaced yet, unless a follower voted for another candidate in between (that
// takes a partition one way but not the other, and a log idle for 4 s: docs/DESIGN.md). An
// idle leader sends a heartbeat every second, or every two just after an append, which
// followers answer: the lease runs out only for a leader that stopped hearing from them.
const LeaderLease = 2 * time.Second

// ErrUnconfirmed means the server that answered for the log could not show that it leads it:
// its answer may be older than what a majority has acknowledged.
var ErrUnconfirmed = errors.New("sync log: the answer does not come from a leader in touch with a majority")

// Head is the log's last sequence and the server that leads it.
type Head struct {
	Seq    uint64
	Leader string // "" outside a cluster
}

// Confirmed is the log's last sequence as its leader knows it while it leads: every entry
// acknowledged before the call is at or below it (ConfirmedHead).
func (l *Log) Confirmed(ctx context.Context) (uint64, error) {
	h, err := l.ConfirmedHead(ctx)
	return h.Seq, err
}

// ConfirmedHead is the log's head as its leader knows it while it leads. Last alone is not:
// JetStream answers a stream info request from the answering server's own copy, and a leader
// cut off from the others answers as leader until it steps down, 10 to 20 s after the cut,
// while the others may have elected a leader and acknowledged entries after 4 to 9 s. So the
// answer counts only if it comes from the leader itself (no follower or leaderless member
// answered) and a majority of the stream's servers, the leader counted, answered it within
// LeaderLease. Until one does, it asks again every 100 ms; when ctx ends it returns
// ErrUnconfirmed. A stream outside a cluster has one copy and is always current.
func (l *Log) ConfirmedHead(ctx context.Context) (Head, error) {
	for {
		info, err := l.stream.Info(ctx)
		if err != nil {
			return Head{}, fmt.Errorf("sync log info: %w", err)
		}
		err = leads(info.Cluster, LeaderLease)
		if err == nil {
			h := Head{Seq: info.State.LastSeq}
			if info.Cluster != nil {
				h.Leader = info.Cluster.Leader
			}
			return h, nil
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return Head{}, err
		case <-t.C:
		}
	}
}

// leads checks that ci, the stream's cluster as the answering server sees it, shows that
// server leading and in touch with a majority within lease.
func leads(ci *jetstream.ClusterInfo, lease time.Duration) error {
	if ci == nil {
		return nil
	}
	if ci.Leader == "" {
		return fmt.Errorf("%w: the stream has no leader", ErrUnconfirmed)
	}
	heard := 1 // the leader itself
	for _, r := range ci.Replicas {
		if r == nil {
			continue
		}
		// The leader lists the others; anyone else lists the leader among them.
		if r.Name == ci.Leader {
			return fmt.Errorf("%w: answered by a follower of %s", ErrUnconfirmed, ci.Leader)
		}
		// Active 0 is a peer this leader has never heard from.
		if r.Active > 0 && r.Active < lease {
			heard++
		}
	}
	if servers := len(ci.Replicas) + 1; heard < servers/2+1 {
		return fmt.Errorf("%w: leader %s heard from %d of %d servers within %v", ErrUnconfirmed, ci.Leader, heard, servers, lease)
	}
	return nil
}

// State is the log's head and size.
type State struct {
	Last      uint64 // sequence of the newest entry
	Bytes     uint64 // stored, on the server's disk
	Consumers int    // readers the server keeps for the stream
	// Leader names the NATS server that leads the log's stream ("" if JetStream does not
	// say, as a server outside a cluster may not).
	Leader string
}

// State returns the log's head and size in one look.
func (l *Log) State(ctx context.Context) (State, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return State{}, fmt.Errorf("sync log info: %w", err)
	}
	st := State{Last: info.State.LastSeq, Bytes: info.State.Bytes, Consumers: info.State.Consumers}
	if info.Cluster != nil {
		st.Leader = info.Cluster.Leader
	}
	return st, nil
}

// Get returns the entry at seq.
func (l *Log) Get(ctx context.Context, seq uint64) (Msg, error) {
	m, err := l.stream.GetMsg(ctx, seq)
	if err != nil {
		return Msg{}, fmt.Errorf("sync log entry %d: %w", seq, err)
	}
	return Msg{Seq: m.Sequence, Data: m.Data}, nil
}

// MaxBatchBytes is about the most bytes of entries one batch of Read holds. Entries differ a
// thousandfold in size (one insert, or a group of batches of inserts), so a count alone does
// not bound the memory of a catch-up: 2,000 entries of grouped batches once held a million
// rows in a slave's memory at once. Read asks for as many entries as fit at the average size
// of the entries before.
const MaxBatchBytes = 2 << 20

// batchBytes is the hard limit the server applies to one fetch: at least one message of the
// largest size it accepts (plus room for headers), or an entry could never be read.
func batchBytes(nc *nats.Conn) int {
	return max(MaxBatchBytes, int(nc.MaxPayload())+64<<10)
}

// ConsumerIdle is how long the server keeps the consumer of a reader that stopped without
// deleting it.
const ConsumerIdle = 30 * time.Second

// deleteConsumer removes a finished read's consumer from the server.
func (l *Log) deleteConsumer(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	// Best effort: the inactivity threshold removes it anyway.
	_ = l.stream.DeleteConsumer(ctx, name)
}

// SmallRead is the most entries Read fetches one by one from the stream's leader instead of
// through a consumer. A consumer is created by the cluster's meta leader and placed on one of
// the stream's servers: while either is dead or being replaced (4–9 s in a JetStream cluster)
// its creation hangs until the request times out. A slave under load reads a few entries
// every second (those syncQ has not brought yet), on the same loop that applies syncQ: one
// such read, stuck for 5 s after a node that held neither the log nor a worker was killed,
// stalled every strong read and so every write through the user check. Reads of a few
// entries now need only the log's leader, as appends do.
const SmallRead = 64

// readByGets is Read for fewer than SmallRead entries: one request for each, eight at a time,
// delivered in batches bounded as Read's are.
func (l *Log) readByGets(ctx context.Context, from, to uint64, batch int, fn func([]Msg) error) error {
	const window = 8
	var pending []Msg
	size := 0
	for start := from; start <= to; start += window {
		msgs := make([]Msg, min(window, to-start+1))
		g, gctx := errgroup.WithContext(ctx)
		for i := range msgs {
			g.Go(func() error {
				seq := start + uint64(i)
				m, err := l.stream.GetMsg(gctx, seq)
				if err != nil {
					return fmt.Errorf("read sync log at %d: %w", seq, err)
				}
				msgs[i] = Msg{Seq: m.Sequence, Data: m.Data}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		for _, m := range msgs {
			pending = append(pending, m)
			size += len(m.Data)
			if len(pending) >= max(batch, 1) || size >= l.maxBytes {
				if err := fn(pending); err != nil {
					return err
				}
				pending, size = nil, 0
			}
		}
	}
	if len(pending) > 0 {
		return fn(pending)
	}
	return nil
}

// Read delivers the entries from seq from through to, in order, in batches of at most batch
// entries and about MaxBatchBytes.
func (l *Log) Read(ctx context.Context, from, to uint64, batch int, fn func([]Msg) error) error {
	if from == 0 {
		from = 1
	}
	if from > to {
		return nil
	}
	if to-from < SmallRead {
		return l.readByGets(ctx, from, to, batch, fn)
	}
	// One plain pull consumer for the whole read, not an ordered one: an ordered consumer
	// replaces its server-side consumer on every Fetch and deletes the old one in the
	// background, so a read of many batches created as many consumers and could return with
	// one still on the server (TestReadLeavesNoConsumer, seen in CI). Nothing is acknowledged
	// (AckNone) and the consumer lives in memory on one replica: it is a cursor, not state.
	cons, err := l.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		// filter_subject, not filter_subjects: a server older than 2.10 (Debian's 2.9.10)
		// ignores the list and makes an unfiltered consumer, which nats.go then refuses.
		FilterSubject: Subject,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
		AckPolicy:     jetstream.AckNonePolicy,
		MemoryStorage: true,
		Replicas:      1,
		// A reader that dies leaves its consumer behind: the server drops it after this long.
		InactiveThreshold: ConsumerIdle,
	})
	if err != nil {
		return fmt.Errorf("read sync log from %d: %w", from, err)
	}
	// Every slave reads the log at least once a second: left to the inactivity threshold
	// their consumers would pile up into the thousands until the server refuses new ones
	// ("maximum consumers limit reached", seen in a 30-minute soak). Deleted before Read
	// returns, not in the background.
	defer l.deleteConsumer(ctx, cons.CachedInfo().Name)
	// Deliveries are numbered by the consumer: a gap means one was dropped on the way (a slow
	// client's buffer overflowing), and with nothing acknowledged the server would not send it
	// again, so the read fails and the caller reads again from where it stopped.
	var delivered uint64
	next := from
	// How many entries to ask for next: as many as fit in MaxBatchBytes at the size of the
	// entries read so far, so that neither thousands of large group entries nor a round trip
	// per small entry are read at once. It starts small and adapts after each batch.
	want := min(batch, 16)
	for next <= to {
		if err := ctx.Err(); err != nil {
			return err
		}
		if left := to - next + 1; uint64(want) > left {
			want = int(left)
		}
		mb, err := cons.Fetch(want, jetstream.FetchMaxWait(2*time.Second), jetstream.FetchMaxBytes(l.maxBytes))
		if err != nil {
			return fmt.Errorf("read sync log at %d: %w", next, err)
		}
		msgs := make([]Msg, 0, want)
		for m := range mb.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("read sync log at %d: %w", next, err)
			}
			if md.Sequence.Consumer != delivered+1 {
				return fmt.Errorf("read sync log at %d: delivery %d lost", next, delivered+1)
			}
			delivered = md.Sequence.Consumer
			if md.Sequence.Stream > to {
				break
			}
			msgs = append(msgs, Msg{Seq: md.Sequence.Stream, Data: m.Data()})
		}
		if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("read sync log at %d: %w", next, err)
		}
		if len(msgs) == 0 {
			return fmt.Errorf("read sync log: entries %d to %d missing", next, to)
		}
		size := 0
		for _, m := range msgs {
			size += len(m.Data)
		}
		if err := fn(msgs); err != nil {
			return err
		}
		next = msgs[len(msgs)-1].Seq + 1
		want = max(1, min(batch, MaxBatchBytes/max(1, size/len(msgs))))
	}
	return nil
}
