package worker

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Failpoints are bugs planted on purpose, in the manner of etcd's gofail: a check that cannot
// fail is no check, so `rideshare chaos` runs once with a planted bug and must report the
// violation it causes. The orchestrator never sets them; a worker takes them from the
// environment variable RIDESHARE_FAILPOINTS (ParseFailpoints), which only the chaos tests set.
type Failpoints struct {
	// StaleReads makes strong reads ignore min_seq: a slave answers from whatever it has
	// applied, so a read can miss a write acknowledged before it was sent.
	StaleReads bool
	// ApplyDelay holds each entry from syncQ this long before applying it: a lagging replica,
	// the case min_seq exists for.
	ApplyDelay time.Duration
	// ApplyJitter holds each entry from syncQ a random time up to this long: slaves lagging
	// by different amounts.
	ApplyJitter time.Duration
	// AckDelay holds the master's answer to each write this long after the write is in the
	// log: a slow network on the way back, during which slaves already show the write.
	AckDelay time.Duration
}

// applyDelay is how long to hold the next entry from syncQ.
func (f Failpoints) applyDelay() time.Duration {
	d := f.ApplyDelay
	if f.ApplyJitter > 0 {
		d += rand.N(f.ApplyJitter)
	}
	return d
}

// ParseFailpoints reads a comma-separated list: "stale-reads" (StaleReads, with a 200 ms
// ApplyDelay unless one is given), "apply-delay=DURATION", "apply-jitter=DURATION" and
// "ack-delay=DURATION".
func ParseFailpoints(s string) (Failpoints, error) {
	var f Failpoints
	for _, item := range strings.Split(s, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(item), "=")
		switch name {
		case "":
		case "stale-reads":
			f.StaleReads = true
			if f.ApplyDelay == 0 {
				f.ApplyDelay = 200 * time.Millisecond
			}
		case "apply-delay", "apply-jitter", "ack-delay":
			d, err := time.ParseDuration(value)
			if err != nil || d < 0 {
				return Failpoints{}, fmt.Errorf("failpoint %s=%q: want a duration", name, value)
			}
			*map[string]*time.Duration{"apply-delay": &f.ApplyDelay, "apply-jitter": &f.ApplyJitter, "ack-delay": &f.AckDelay}[name] = d
		default:
			return Failpoints{}, fmt.Errorf("unknown failpoint %q (known: stale-reads, apply-delay=D, apply-jitter=D, ack-delay=D)", name)
		}
	}
	return f, nil
}
