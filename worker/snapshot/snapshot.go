// Package snapshot keeps the newest copy of the database beside the sync log, in a JetStream
// object store of the same embedded NATS server. A new worker starts from it and replays only
// the log entries after it, so joining costs the size of the data rather than the length of
// its history. A snapshot is a SQLite file taken by a slave (package store's Snapshot); it
// holds the sequence of the last log entry it contains, so it can never be out of step with the
// log: it equals the log's prefix up to that sequence.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// Bucket is the object store's name.
	Bucket = "SNAPSHOTS"
	// object is the one object in it: the newest snapshot replaces the one before.
	object = "db.sqlite"
	// seqKey is the metadata key of the sequence the snapshot holds.
	seqKey = "seq"
)

// Store is a handle on the snapshot bucket.
type Store struct {
	obs jetstream.ObjectStore
}

// ErrNone means no snapshot has been taken yet.
var ErrNone = errors.New("no snapshot")

// Open binds to the bucket on nc's server; with create set (the orchestrator) it creates the
// bucket if it does not exist yet.
func Open(ctx context.Context, nc *nats.Conn, create bool) (*Store, error) {
	replicas := 0 // bind only
	if create {
		replicas = 1
	}
	return OpenReplicas(ctx, nc, replicas)
}

// OpenReplicas creates (or updates) the store with the given replicas, or, with 0, binds to
// the existing one.
func OpenReplicas(ctx context.Context, nc *nats.Conn, replicas int) (*Store, error) {
	create := replicas > 0
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	var obs jetstream.ObjectStore
	if create {
		obs, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      Bucket,
			Description: "newest database snapshot; new workers start from it",
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		})
	} else {
		obs, err = js.ObjectStore(ctx, Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", Bucket, err)
	}
	return &Store{obs: obs}, nil
}

// Latest is the sequence the newest snapshot holds, or ErrNone.
func (s *Store) Latest(ctx context.Context) (uint64, error) {
	info, err := s.obs.GetInfo(ctx, object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, ErrNone
	}
	if err != nil {
		return 0, fmt.Errorf("snapshot info: %w", err)
	}
	return parseSeq(info.Metadata)
}

func parseSeq(meta map[string]string) (uint64, error) {
	seq, err := strconv.ParseUint(meta[seqKey], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("snapshot has no valid %q: %w", seqKey, err)
	}
	return seq, nil
}

// Put stores the SQLite file at path, which holds the log up to seq, as the newest snapshot
// unless a newer one is already there (two slaves may race; the newer copy wins).
func (s *Store) Put(ctx context.Context, path string, seq uint64) error {
	if have, err := s.Latest(ctx); err == nil && have >= seq {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = s.obs.Put(ctx, jetstream.ObjectMeta{
		Name:     object,
		Metadata: map[string]string{seqKey: strconv.FormatUint(seq, 10)},
	}, f)
	if err != nil {
		return fmt.Errorf("store snapshot at %d: %w", seq, err)
	}
	return nil
}

// Newest opens the newest snapshot for reading, or returns ErrNone: the sequence it holds,
// its size, and its bytes, checked against the object store's SHA-256 digest as they are read
// (the last Read fails if they do not match). The caller closes it.
func (s *Store) Newest(ctx context.Context) (_ io.ReadCloser, seq uint64, size int64, err error) {
	res, err := s.obs.Get(ctx, object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, 0, 0, ErrNone
	}
	if err != nil {
		return nil, 0, 0, fmt.Errorf("open snapshot: %w", err)
	}
	info, err := res.Info()
	if err == nil {
		seq, err = parseSeq(info.Metadata)
	}
	if err != nil {
		res.Close()
		return nil, 0, 0, err
	}
	return res, seq, int64(info.Size), nil
}

// Fetch writes the newest snapshot to path and returns the sequence it holds, or ErrNone. The
// object store checks the content against its SHA-256 digest; on any error path is removed.
func (s *Store) Fetch(ctx context.Context, path string) (seq uint64, err error) {
	res, err := s.obs.Get(ctx, object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, ErrNone
	}
	if err != nil {
		return 0, fmt.Errorf("fetch snapshot: %w", err)
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return 0, fmt.Errorf("fetch snapshot: %w", err)
	}
	if seq, err = parseSeq(info.Metadata); err != nil {
		return 0, err
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if _, err := io.Copy(f, res); err != nil {
		return 0, fmt.Errorf("fetch snapshot at %d: %w", seq, err)
	}
	return seq, nil
}
