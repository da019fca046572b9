package worker

import (
	"fmt"
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
}

// ParseFailpoints reads a comma-separated list: "stale-reads" (StaleReads, with a 200 ms
// ApplyDelay unless one is given) and "apply-delay=DURATION".
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
		case "apply-delay":
			d, err := time.ParseDuration(value)
			if err != nil || d < 0 {
				return Failpoints{}, fmt.Errorf("failpoint apply-delay=%q: want a duration", value)
			}
			f.ApplyDelay = d
		default:
			return Failpoints{}, fmt.Errorf("unknown failpoint %q (known: stale-reads, apply-delay=DURATION)", name)
		}
	}
	return f, nil
}
