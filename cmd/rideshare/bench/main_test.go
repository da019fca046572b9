package bench

import (
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/cmd/rideshare/systemtest"
)

// TestMain lets the test binary stand in for the rideshare binary's workers (systemtest).
func TestMain(m *testing.M) { systemtest.Main(m) }

type stack = system.System

func mustStack(tb testing.TB, opts ...systemtest.Option) *stack {
	tb.Helper()
	return systemtest.Start(tb, opts...)
}

func withScaleInterval(d time.Duration) systemtest.Option { return systemtest.ScaleInterval(d) }
