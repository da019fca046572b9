package worker

import (
	"testing"
	"time"
)

func TestParseFailpoints(t *testing.T) {
	for in, want := range map[string]Failpoints{
		"":                              {},
		"stale-reads":                   {StaleReads: true, ApplyDelay: 200 * time.Millisecond},
		"apply-delay=1s":                {ApplyDelay: time.Second},
		"apply-delay=50ms, stale-reads": {StaleReads: true, ApplyDelay: 50 * time.Millisecond},
	} {
		got, err := ParseFailpoints(in)
		if err != nil || got != want {
			t.Errorf("ParseFailpoints(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"stale", "apply-delay=soon", "apply-delay=-1s"} {
		if _, err := ParseFailpoints(bad); err == nil {
			t.Errorf("ParseFailpoints(%q): no error", bad)
		}
	}
}
