package procrt

import (
	"context"
	"runtime"
	"testing"
)

func TestParseMeminfo(t *testing.T) {
	total, avail, err := parseMeminfo([]byte("MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20480000 kB\n"))
	if err != nil || total != 24576000<<10 || avail != 20480000<<10 {
		t.Fatalf("parseMeminfo = %d, %d, %v", total, avail, err)
	}
	if _, _, err := parseMeminfo([]byte("MemTotal: 1 kB\n")); err == nil {
		t.Fatal("a meminfo without MemAvailable was taken")
	}
}

// This machine, measured for real: the CPUs Go sees, memory within what /proc says.
func TestHostMeasuresThisMachine(t *testing.T) {
	h, err := (&Runtime{}).Host(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h.CPUs != runtime.NumCPU() || h.MemTotal == 0 || h.MemAvailable == 0 || h.MemAvailable > h.MemTotal {
		t.Fatalf("Host = %+v", h)
	}
	if n, why := h.DefaultMaxSlaves(); n < 1 || why == "" {
		t.Fatalf("DefaultMaxSlaves = %d (%s)", n, why)
	}
}
