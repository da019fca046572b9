package orchestrator

import (
	"fmt"
	"testing"
)

// The event ring keeps the newest EventsKept events, oldest first, and counts them all.
func TestEventLogKeepsNewest(t *testing.T) {
	var l eventLog
	for i := range EventsKept + 7 {
		l.add(Event{Kind: EventScale, Message: fmt.Sprint(i)})
	}
	got, seen := l.list()
	if seen != EventsKept+7 || len(got) != EventsKept {
		t.Fatalf("seen %d, kept %d; want %d, %d", seen, len(got), EventsKept+7, EventsKept)
	}
	for i, e := range got {
		if want := fmt.Sprint(i + 7); e.Message != want {
			t.Fatalf("event %d is %q, want %q", i, e.Message, want)
		}
		if e.Time.IsZero() {
			t.Fatal("event without a time")
		}
	}
}
