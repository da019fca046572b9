package cli

import (
	"fmt"
	"strconv"

	"github.com/rideshare/rideshare/cmd/rideshare/internal/flagenv"
	"github.com/rideshare/rideshare/orchestrator"
)

var (
	newFlags  = flagenv.New
	parse     = flagenv.Parse
	newLogger = flagenv.Logger
)

// maxSlavesFlag is --max-slaves: a number, or "auto" (orchestrator.AutoMax).
type maxSlavesFlag int

func (m *maxSlavesFlag) String() string {
	if m == nil || int(*m) == orchestrator.AutoMax {
		return "auto"
	}
	return strconv.Itoa(int(*m))
}

func (m *maxSlavesFlag) Set(v string) error {
	if v == "auto" {
		*m = orchestrator.AutoMax
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("want auto or a number of slaves (0: no limit), not %q", v)
	}
	*m = maxSlavesFlag(n)
	return nil
}
