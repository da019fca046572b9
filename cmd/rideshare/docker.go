package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/rideshare/rideshare/orchestrator"
)

// openDockerRuntime runs workers as containers of the rideshare image.
func openDockerRuntime(ctx context.Context, cfg upConfig, workerArgs func(id, dir string) []string, logger *slog.Logger) (orchestrator.Runtime, error) {
	return nil, errors.New("--runtime docker: not built yet")
}
