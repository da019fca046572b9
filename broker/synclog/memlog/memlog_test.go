package memlog_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rideshare/rideshare/broker/synclog/logtest"
	"github.com/rideshare/rideshare/broker/synclog/memlog"
)

func TestContract(t *testing.T) {
	logtest.Run(t, func(*testing.T) logtest.Log { return memlog.New() })
}

// An unavailable log fails every call and keeps what it had.
func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	l := memlog.New()
	if _, err := l.Append(ctx, 0, []byte("a")); err != nil {
		t.Fatal(err)
	}
	l.SetUnavailable(true)
	if _, err := l.Append(ctx, 1, []byte("b")); !errors.Is(err, memlog.ErrUnavailable) {
		t.Fatalf("append while down: %v", err)
	}
	if _, err := l.Last(ctx); !errors.Is(err, memlog.ErrUnavailable) {
		t.Fatalf("last while down: %v", err)
	}
	l.SetUnavailable(false)
	if last, err := l.Last(ctx); err != nil || last != 1 {
		t.Fatalf("after coming back: %d, %v", last, err)
	}
}
