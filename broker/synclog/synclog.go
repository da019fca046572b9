// Package synclog is the durable sync log: a JetStream stream in the orchestrator's embedded
// NATS server holding every committed write in order. The stream sequence is the write's
// sequence. Appends are fenced: an append names the sequence it expects to follow, so a master
// that has been replaced (and whose successor has appended) can never add to the log.
package synclog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	js     jetstream.JetStream
	stream jetstream.Stream
}

// Open binds to the stream on nc's server; with create set (the orchestrator) it creates the
// stream if it does not exist yet.
func Open(ctx context.Context, nc *nats.Conn, create bool) (*Log, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	var s jetstream.Stream
	if create {
		s, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:      Stream,
			Subjects:  []string{Subject},
			Storage:   jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy,
			Discard:   jetstream.DiscardOld,
			Replicas:  1,
		})
	} else {
		s, err = js.Stream(ctx, Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", Stream, err)
	}
	return &Log{js: js, stream: s}, nil
}

// Append stores data as the entry right after expectLast and returns its sequence. It returns
// ErrFenced if the log's last sequence is not expectLast.
func (l *Log) Append(ctx context.Context, expectLast uint64, data []byte) (uint64, error) {
	ack, err := l.js.Publish(ctx, Subject, data, jetstream.WithExpectLastSequence(expectLast))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w (expected last %d)", ErrFenced, expectLast)
		}
		return 0, fmt.Errorf("append to sync log: %w", err)
	}
	return ack.Sequence, nil
}

// Last is the sequence of the newest entry (0 when empty).
func (l *Log) Last(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("sync log info: %w", err)
	}
	return info.State.LastSeq, nil
}

// Get returns the entry at seq.
func (l *Log) Get(ctx context.Context, seq uint64) (Msg, error) {
	m, err := l.stream.GetMsg(ctx, seq)
	if err != nil {
		return Msg{}, fmt.Errorf("sync log entry %d: %w", seq, err)
	}
	return Msg{Seq: m.Sequence, Data: m.Data}, nil
}

// Read delivers the entries from seq from through to, in order, in batches of at most batch
// entries.
func (l *Log) Read(ctx context.Context, from, to uint64, batch int, fn func([]Msg) error) error {
	if from == 0 {
		from = 1
	}
	if from > to {
		return nil
	}
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{Subject},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return fmt.Errorf("read sync log from %d: %w", from, err)
	}
	next := from
	for next <= to {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := batch
		if left := to - next + 1; uint64(want) > left {
			want = int(left)
		}
		mb, err := cons.Fetch(want, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("read sync log at %d: %w", next, err)
		}
		msgs := make([]Msg, 0, want)
		for m := range mb.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("read sync log at %d: %w", next, err)
			}
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
		if err := fn(msgs); err != nil {
			return err
		}
		next = msgs[len(msgs)-1].Seq + 1
	}
	return nil
}
