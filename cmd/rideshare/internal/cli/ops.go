package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/rideshare/rideshare/cmd/rideshare/backup"
	"github.com/rideshare/rideshare/cmd/rideshare/status"
	"github.com/rideshare/rideshare/orchestrator/client"
)

// The operator's commands: status, backup, restore.

func cmdStatus(ctx context.Context, args []string) error {
	var c status.Config
	fs := newFlags("status", "Prints the database's state as a table, the way `patronictl list` prints a cluster: the orchestrator\nnode(s), the sync log head, every worker (id, PID, role, applied sequence, lag, ready), the recent events\n(workers lost and started, failovers with their duration, scaling decisions with their read count) and\nthe db requests served. Any orchestrator node can be asked.")
	c.Flags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	return status.Run(ctx, c, os.Stdout)
}

func cmdBackup(ctx context.Context, args []string) error {
	fs := newFlags("backup", "Saves a consistent copy of the database (a SQLite file) taken by a slave at a known sequence, holding every\nwrite acknowledged before the command started. `rideshare restore` starts a new deployment from it.")
	orch := fs.String("orchestrator", "http://127.0.0.1:8083", "orchestrator to ask")
	out := fs.String("out", "rideshare-backup.sqlite", "file to write (replaced only once the new copy is whole)")
	token := fs.String("admin-token", "", "the orchestrator's admin token, if it has one")
	if err := parse(fs, args); err != nil {
		return err
	}
	seq, err := backup.Save(ctx, client.New(*orch, *token), *out)
	if err != nil {
		return err
	}
	fmt.Printf("backup of %s at sequence %d written to %s\n", *orch, seq, *out)
	return nil
}

func cmdRestore(ctx context.Context, args []string) error {
	fs := newFlags("restore", "Usage: rideshare restore FILE --data DIR\n\nMakes DIR (new or empty) the data directory of a new deployment holding the backup FILE: start it with\n`rideshare up --data DIR` or `rideshare orchestrator --data DIR`. A file that is not a whole RideShare\ndatabase (another kind of file, a truncated or damaged copy) is refused, and nothing is written.")
	data := fs.String("data", "", "data directory of the new deployment (must be new or empty)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	// FILE comes first, as the usage line shows; the flag package stops at the first argument.
	var file string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		file, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if file == "" {
		return errors.New("which backup? usage: rideshare restore FILE --data DIR")
	}
	if *data == "" {
		return errors.New("--data DIR is required: the new deployment's data directory")
	}
	logger, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	seq, err := backup.Restore(ctx, file, *data, logger)
	if err != nil {
		return err
	}
	fmt.Printf("restored %s (sequence %d) into %s; start it with: rideshare up --data %s\n", file, seq, *data, *data)
	return nil
}
