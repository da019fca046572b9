package rides

import (
	"errors"
	"time"
)

// TimestampLayout is the API's timestamp format, DD-MM-YYYY:SS-MM-HH, as a Go layout.
const TimestampLayout = "02-01-2006:05-04-15"

// ErrTimestamp is the failure of ParseTimestamp.
var ErrTimestamp = errors.New("timestamp must be a real date and time as DD-MM-YYYY:SS-MM-HH, e.g. 21-08-2030:00-30-14")

// ParseTimestamp parses a DD-MM-YYYY:SS-MM-HH timestamp in loc, strictly: two-digit fields and
// a four-digit year, a day that exists in its month, hours 00–23, minutes and seconds 00–59,
// a year from 0001, and a wall-clock time that exists in loc (not skipped by a DST change).
func ParseTimestamp(s string, loc *time.Location) (time.Time, error) {
	if loc == nil {
		loc = time.UTC
	}
	t, err := time.ParseInLocation(TimestampLayout, s, loc)
	// Formatting back must give the input: this refuses what the parser would normalize
	// (a time in a DST gap) or accept loosely.
	if err != nil || t.Year() < 1 || t.Format(TimestampLayout) != s {
		return time.Time{}, ErrTimestamp
	}
	return t, nil
}
