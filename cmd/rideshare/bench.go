package main

import (
	"context"
	"errors"
)

// cmdBench measures a running system.
func cmdBench(ctx context.Context, args []string) error {
	return errors.New("bench: not built yet")
}
