package orchestrator

import (
	"sync"
	"time"
)

// Event kinds, as the console and `rideshare status` show them.
const (
	EventWorkerLost    = "worker_lost"    // a worker's process exited or its session ended
	EventWorkerStarted = "worker_started" // a worker was started: at start, as a replacement, by the scaler
	EventWorkerStopped = "worker_stopped" // a worker was stopped on purpose (scale-in)
	EventFailover      = "failover"       // a new master took writes; Duration since the old one was lost
	EventScale         = "scale"          // a scaling decision; Reads is the count that caused it
	EventCrash         = "crash"          // a worker was killed through the crash API
	EventSupervisor    = "supervisor"     // this node took or lost the supervisor role (several orchestrator nodes)
)

// Event is one thing an operator wants to see happened, newest last.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Worker  string    `json:"worker,omitempty"`
	PID     int       `json:"pid,omitempty"`
	Message string    `json:"message"`
	// Duration is a failover's length, in seconds.
	Duration float64 `json:"duration_s,omitempty"`
	// Reads is the db-read count a scaling decision was made from.
	Reads *float64 `json:"reads,omitempty"`
}

// EventsKept is how many events the orchestrator remembers: enough for the console's
// recent-events list, bounded so a flapping worker cannot grow memory.
const EventsKept = 200

// eventLog is a ring of the last EventsKept events.
type eventLog struct {
	mu   sync.Mutex
	buf  []Event
	next int // where the next event goes once buf is full
	seen uint64
}

func (l *eventLog) add(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen++
	if len(l.buf) < EventsKept {
		l.buf = append(l.buf, e)
		return
	}
	l.buf[l.next] = e
	l.next = (l.next + 1) % EventsKept
}

// list returns the events kept, oldest first, and how many were ever added.
func (l *eventLog) list() ([]Event, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Event, 0, len(l.buf))
	out = append(out, l.buf[l.next:]...)
	out = append(out, l.buf[:l.next]...)
	return out, l.seen
}

// RecordEvent adds e to the events the status view shows.
func (o *Orchestrator) RecordEvent(e Event) { o.events.add(e) }
