package cli

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/chaos"
	"github.com/rideshare/rideshare/cmd/rideshare/internal/flagenv"
	"github.com/rideshare/rideshare/cmd/rideshare/system"
)

// errViolated is chaos's failure when the run was made but a check did not hold.
var errViolated = errors.New("a guarantee was violated (see the report)")

func cmdChaos(ctx context.Context, args []string) error {
	var cfg system.Config
	fs, finish := upFlags(&cfg)
	flagenv.Describe(fs, "chaos", "Starts its own stack (the same flags as `up`: --amqp, --zk, --runtime docker apply), runs concurrent\n"+
		"clients against the database API for --duration while injecting faults on a schedule drawn from --seed, lets\n"+
		"the stack settle, and checks the history: the strong history is linearizable (porcupine; a violation writes\n"+
		"its visualisation to --out), every acknowledged write is present once, eventual reads show only states the\n"+
		"log had, one master at a time, every replica equals the log. Prints the report; exits 1 on any violation.")
	// Not up's defaults: a run must not take a running system's ports or data.
	for name, v := range map[string]string{"gateway": "127.0.0.1:0", "users": "127.0.0.1:0", "rides": "127.0.0.1:0", "orchestrator": "127.0.0.1:0", "data": "", "slaves": "2", "log-level": "warn"} {
		f := fs.Lookup(name)
		f.DefValue = v
		if err := f.Value.Set(v); err != nil {
			return err
		}
	}
	var rc chaos.RunConfig
	fs.DurationVar(&rc.Duration, "duration", time.Minute, "how long the clients run (faults are injected meanwhile)")
	fs.Uint64Var(&rc.Seed, "seed", 0, "the schedule's seed; 0: a new one (printed, so the run can be replayed)")
	fs.IntVar(&rc.Clients, "clients", 8, "concurrent clients, one operation at a time each")
	fs.IntVar(&rc.Keys, "keys", 6, "usernames the clients contend on")
	fs.BoolVar(&rc.Rides, "ride-load", true, "also create rides and join them through the gateway (checked: each acknowledged one present once)")
	fs.DurationVar(&rc.OpTimeout, "op-timeout", 5*time.Second, "bound on one operation; one that runs out is indeterminate")
	fs.DurationVar(&rc.FaultEvery, "fault-every", 5*time.Second, "mean time between two faults (they may overlap)")
	faults := fs.String("faults", "", "comma-separated faults to inject, each at least once; empty: all this configuration has\n("+strings.Join([]string{chaos.KillMaster, chaos.KillSlave, chaos.PauseMaster, chaos.PartitionWorker, chaos.RestartRabbitMQ, chaos.RestartZooKeeper}, ", ")+")")
	restartZK := fs.String("restart-zookeeper", "", "shell command that restarts ZooKeeper (enables the restart-zookeeper fault), e.g. 'scripts/services.sh restart-zk'")
	restartMQ := fs.String("restart-rabbitmq", "rabbitmqctl -q stop_app && rabbitmqctl -q start_app", "shell command that restarts RabbitMQ (the restart-rabbitmq fault, with --amqp)")
	fs.StringVar(&rc.Out, "out", ".", "directory for the visualisation of a violation")
	if err := parse(fs, args); err != nil {
		return err
	}
	finish()
	logger, err := newLogger(cfg.LogLevel)
	if err != nil {
		return err
	}
	if cfg.Data == "" {
		dir, err := os.MkdirTemp("", "rideshare-chaos-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.Data = dir
	}
	if rc.Seed == 0 {
		rc.Seed = rand.Uint64()
	}
	if *faults != "" {
		rc.Faults = strings.Split(*faults, ",")
	}
	if *restartZK != "" {
		rc.RestartZooKeeper = [][]string{{"bash", "-c", *restartZK}}
	}
	rc.RestartRabbitMQ = [][]string{{"bash", "-c", *restartMQ}}
	rc.System, rc.Logger, rc.Progress = cfg, logger, os.Stderr
	fmt.Fprintf(os.Stderr, "chaos: seed %d (--seed %d replays the schedule), %v\n", rc.Seed, rc.Seed, rc.Duration)
	rep, err := chaos.Run(ctx, rc)
	if rep != nil {
		rep.Print(os.Stdout)
	}
	if err != nil {
		return err
	}
	if !rep.Holds() {
		return errViolated
	}
	return nil
}
