package rides_test

import (
	"errors"
	"testing"
	"time"

	"github.com/rideshare/rideshare/httpsvc/rides"
)

func TestParseTimestamp(t *testing.T) {
	ist := time.FixedZone("IST", 5*3600+1800)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no time zone database: %v", err)
	}
	tests := []struct {
		name string
		in   string
		loc  *time.Location
		want time.Time // zero: refused
	}{
		{"day month year seconds minutes hours", "21-08-2030:05-04-13", time.UTC, time.Date(2030, 8, 21, 13, 4, 5, 0, time.UTC)},
		{"midnight", "01-01-2030:00-00-00", time.UTC, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"last second of a day", "31-12-2029:59-59-23", time.UTC, time.Date(2029, 12, 31, 23, 59, 59, 0, time.UTC)},
		{"leap day", "29-02-2028:00-00-00", time.UTC, time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC)},
		{"past", "01-01-1999:00-00-00", time.UTC, time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"nil location is UTC", "21-08-2030:00-00-00", nil, time.Date(2030, 8, 21, 0, 0, 0, 0, time.UTC)},
		{"read in the configured zone", "21-08-2030:00-30-05", ist, time.Date(2030, 8, 21, 0, 0, 0, 0, time.UTC)},
		{"31 February", "31-02-2030:00-00-00", time.UTC, time.Time{}},
		{"29 February of a common year", "29-02-2030:00-00-00", time.UTC, time.Time{}},
		{"31 April", "31-04-2030:00-00-00", time.UTC, time.Time{}},
		{"day zero", "00-08-2030:00-00-00", time.UTC, time.Time{}},
		{"month 13", "21-13-2030:00-00-00", time.UTC, time.Time{}},
		{"hour 24", "21-08-2030:00-00-24", time.UTC, time.Time{}},
		{"minute 60", "21-08-2030:00-60-00", time.UTC, time.Time{}},
		{"second 60", "21-08-2030:60-00-00", time.UTC, time.Time{}},
		{"one-digit day", "1-08-2030:00-00-00", time.UTC, time.Time{}},
		{"one-digit month", "21-8-2030:00-00-00", time.UTC, time.Time{}},
		{"two-digit year", "21-08-30:00-00-00", time.UTC, time.Time{}},
		{"five-digit year", "21-08-20301:00-00-00", time.UTC, time.Time{}},
		{"year zero", "21-08-0000:00-00-00", time.UTC, time.Time{}},
		{"one-digit hour", "21-08-2030:00-00-1", time.UTC, time.Time{}},
		{"hours minutes seconds order is not ISO", "2030-08-21T00:00:00Z", time.UTC, time.Time{}},
		{"slashes", "21/08/2030:00-00-00", time.UTC, time.Time{}},
		{"trailing space", "21-08-2030:00-00-00 ", time.UTC, time.Time{}},
		{"leading space", " 21-08-2030:00-00-00", time.UTC, time.Time{}},
		{"signed field", "+1-08-2030:00-00-00", time.UTC, time.Time{}},
		{"empty", "", time.UTC, time.Time{}},
		{"wall time skipped by DST", "29-03-2026:00-30-02", berlin, time.Time{}},
	}
	for _, tt := range tests {
		outcome := "accepted"
		if tt.want.IsZero() {
			outcome = "refused"
		}
		t.Run(tt.name+" "+outcome, func(t *testing.T) {
			got, err := rides.ParseTimestamp(tt.in, tt.loc)
			if tt.want.IsZero() {
				if !errors.Is(err, rides.ErrTimestamp) {
					t.Fatalf("ParseTimestamp(%q) = %v, %v; want ErrTimestamp", tt.in, got, err)
				}
				return
			}
			if err != nil || !got.Equal(tt.want) {
				t.Fatalf("ParseTimestamp(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if back := got.Format(rides.TimestampLayout); back != tt.in {
				t.Fatalf("formats back as %q", back)
			}
		})
	}
}
