// Package bench is `rideshare bench`: load, failover, catch-up and soak measurements against a
// running system, each printed as a report (docs/BENCHMARKS.md says how each figure there was
// made with it).
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/internal/flagenv"
)

// benchConfig is everything `rideshare bench` can be told.
type benchConfig struct {
	gateway, orchestrator string
	orchestrators         []string // --orchestrator split at commas
	usersURL, ridesURL    string
	adminToken            string
	mode                  string
	only                  string
	concurrency           int
	duration, warmup      time.Duration
	maxRequests           int64
	format                string
	label                 string
	seedUsers, seedRides  int
	routes                int
	baseline              bool
	runs                  int
	entries               int
	batch                 int
	timeout               time.Duration
	quiet                 bool
	cpuProfile            string
	sampleEvery           time.Duration
}

func (c *benchConfig) flags() *flag.FlagSet {
	fs := newFlags("bench", "Measures a RUNNING system (start it with `rideshare up`) and prints a report on stdout;\n"+
		"a progress line goes to stderr once a second. Every mode stops by itself.\n\n"+
		"  --mode load       a realistic mix through the gateway (create users, create rides, list rides,\n"+
		"                    ride details, joins); --only ENDPOINT measures one endpoint; --baseline also\n"+
		"                    loads the in-process SQLite baseline with the same client loop\n"+
		"  --mode failover   kills the master (crash/master) under a db/write load, --runs times: time from\n"+
		"                    the kill to the first acknowledged write, and acknowledged writes lost\n"+
		"  --mode catchup    writes --entries rows (db/write batches of --batch inserts), kills a slave and\n"+
		"                    times its replacement's catch-up until it is ready\n"+
		"  --mode soak       the load mix for --duration (e.g. 30m) against a system with its defaults, sampling\n"+
		"                    every --sample-every the worker count, each process's resident memory and the\n"+
		"                    sync log's size; fails if the pool outgrew the scaler's cap, a request failed,\n"+
		"                    or a process's memory kept growing\n"+
		"  --mode baseline   only the baseline: a minimal HTTP server answering the list-rides query\n"+
		"                    straight from one SQLite file, loaded like list-rides")
	fs.StringVar(&c.gateway, "gateway", "http://127.0.0.1:8080", "gateway (load balancer) URL")
	fs.StringVar(&c.orchestrator, "orchestrator", "http://127.0.0.1:8083", "orchestrator (database API) URL; with several nodes, their URLs comma-separated: the bench's own calls (counts, crashes) go to the first that answers, so a node killed mid-run does not stop them")
	fs.StringVar(&c.usersURL, "users", "", "users service URL; if set, its _count before and after a load run is reported")
	fs.StringVar(&c.ridesURL, "rides", "", "rides service URL; if set, its _count before and after a load run is reported")
	fs.StringVar(&c.adminToken, "admin-token", "", "sent as 'Authorization: Bearer <token>' to the orchestrator")
	fs.StringVar(&c.mode, "mode", "load", "load, soak, failover, catchup or baseline")
	fs.DurationVar(&c.sampleEvery, "sample-every", 10*time.Second, "soak mode: how often the system is sampled")
	fs.StringVar(&c.only, "only", "", "load one endpoint: "+strings.Join(endpointNames(), ", "))
	fs.IntVar(&c.concurrency, "concurrency", 32, "concurrent clients")
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "how long a load run measures")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "load before measuring starts (not reported)")
	fs.Int64Var(&c.maxRequests, "max-requests", 5_000_000, "stop a load run after this many requests")
	fs.StringVar(&c.format, "format", "table", "report format: table or json")
	fs.StringVar(&c.label, "label", "", "free text copied into the report (e.g. the coordinator)")
	fs.IntVar(&c.seedUsers, "seed-users", 100, "users created before a load run")
	fs.IntVar(&c.seedRides, "seed-rides", 1000, "upcoming rides created before a load run, spread over the --routes routes")
	fs.IntVar(&c.routes, "routes", 10, "areas 1..N whose routes (N×(N-1)) the seeded rides and list-rides use")
	fs.BoolVar(&c.baseline, "baseline", false, "load mode: also run the baseline with the same list-rides loop and report the ratio")
	fs.IntVar(&c.runs, "runs", 10, "failover mode: how many times the master is killed")
	fs.IntVar(&c.entries, "entries", 100000, "catchup mode: rows to write before a slave is killed")
	fs.IntVar(&c.batch, "batch", 100, "catchup mode: inserts per db/write (one sync-log entry each)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "bound on the whole command")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress line")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write this command's own CPU profile (the load generator, and the baseline server) to this file")
	return fs
}

// reportOf turns a mode's result into the report to print: a nil *T must become a nil
// interface, or printing it would call a method on a nil report.
func reportOf[T any](r *T, err error) (any, error) {
	if r == nil {
		return nil, err
	}
	return r, err
}

// Main is `rideshare bench ARGS`: it measures a running system and prints the report.
func Main(ctx context.Context, args []string) error {
	var cfg benchConfig
	fs := cfg.flags()
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.concurrency < 1 {
		return errors.New("--concurrency must be at least 1")
	}
	if cfg.format != "table" && cfg.format != "json" {
		return fmt.Errorf("--format %q: use table or json", cfg.format)
	}
	if cfg.only != "" && endpointByName(cfg.only) == nil {
		return fmt.Errorf("--only %q: use one of %s", cfg.only, strings.Join(endpointNames(), ", "))
	}
	if cfg.routes < 2 || cfg.routes > 198 {
		return errors.New("--routes must be between 2 and 198")
	}
	if cfg.sampleEvery <= 0 {
		return errors.New("--sample-every must be positive")
	}
	if cfg.batch < 1 || cfg.batch > 1000 {
		return errors.New("--batch must be between 1 and 1000")
	}
	cfg.gateway = strings.TrimRight(cfg.gateway, "/")
	for _, u := range strings.Split(cfg.orchestrator, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			cfg.orchestrators = append(cfg.orchestrators, u)
		}
	}
	if len(cfg.orchestrators) == 0 {
		return errors.New("--orchestrator must name at least one URL")
	}
	cfg.orchestrator = cfg.orchestrators[0]
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	b := newBencher(cfg)
	var (
		report any
		err    error
	)
	switch cfg.mode {
	case "load":
		report, err = reportOf(b.runLoad(ctx))
	case "soak":
		report, err = reportOf(b.runSoak(ctx))
	case "baseline":
		report, err = reportOf(b.runBaselineOnly(ctx))
	case "failover":
		report, err = reportOf(b.runFailover(ctx))
	case "catchup":
		report, err = reportOf(b.runCatchup(ctx))
	default:
		return fmt.Errorf("--mode %q: use load, soak, failover, catchup or baseline", cfg.mode)
	}
	if report != nil {
		if perr := printReport(os.Stdout, cfg.format, report); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// bencher holds what every mode shares: the configuration and one HTTP client.
type bencher struct {
	cfg    benchConfig
	client *http.Client
	runID  string
	prog   *progress
}

func newBencher(cfg benchConfig) *bencher {
	tr := &http.Transport{
		Proxy:               nil, // loopback or the given URLs only
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * cfg.concurrency,
		MaxIdleConnsPerHost: 2 * cfg.concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &bencher{
		cfg:    cfg,
		client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		runID:  fmt.Sprintf("%x", time.Now().UnixNano()%(1<<40)),
		prog:   &progress{quiet: cfg.quiet},
	}
}

// do sends one request; body, if not nil, is JSON-encoded (or sent as is if it is []byte). It
// returns the status, the response body and the response headers.
func (b *bencher) do(ctx context.Context, method, url string, body any, token bool) (int, []byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		data, ok := body.([]byte)
		if !ok {
			var err error
			if data, err = json.Marshal(body); err != nil {
				return 0, nil, nil, err
			}
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token && b.cfg.adminToken != "" {
		req.Header.Set("Authorization", "Bearer "+b.cfg.adminToken)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, nil, resp.Header, err
	}
	return resp.StatusCode, out, resp.Header, nil
}

// orch calls the orchestrator's API and decodes a 200 answer into out. With several nodes
// it takes the first that answers other than 503.
func (b *bencher) orch(ctx context.Context, method, path string, body, out any) error {
	var (
		status int
		data   []byte
		err    error
	)
	nodes := b.cfg.orchestrators
	if len(nodes) == 0 {
		nodes = []string{b.cfg.orchestrator}
	}
	for _, node := range nodes {
		status, data, _, err = b.do(ctx, method, node+path, body, true)
		if err == nil && status != http.StatusServiceUnavailable {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("%s %s: status %d: %s", method, path, status, bytes.TrimSpace(data))
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode %q: %w", method, path, data, err)
	}
	return nil
}

// password is a valid SHA-1 hex string, the same for every bench user.
const benchPassword = "3d725c5ee53025f5f8abd6d2ab1c9d3d0bd0ad4e"

// printReport writes a report as JSON or as the report's own table.
func printReport(w io.Writer, format string, report any) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	t, ok := report.(interface{ table(io.Writer) })
	if !ok {
		return fmt.Errorf("no table form for %T", report)
	}
	t.table(w)
	return nil
}

// progress prints one line on stderr: rewritten in place on a terminal, one line per update
// otherwise.
type progress struct {
	quiet bool
	tty   *bool
	width int
}

func (p *progress) line(format string, args ...any) {
	if p.quiet {
		return
	}
	if p.tty == nil {
		fi, err := os.Stderr.Stat()
		t := err == nil && fi.Mode()&os.ModeCharDevice != 0
		p.tty = &t
	}
	s := fmt.Sprintf(format, args...)
	if *p.tty {
		pad := ""
		if n := p.width - len(s); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		p.width = len(s)
		fmt.Fprintf(os.Stderr, "\r%s%s", s, pad)
		return
	}
	fmt.Fprintln(os.Stderr, s)
}

// done ends the in-place line.
func (p *progress) done() {
	if !p.quiet && p.tty != nil && *p.tty && p.width > 0 {
		fmt.Fprintln(os.Stderr)
		p.width = 0
	}
}

var (
	newFlags = flagenv.New
	parse    = flagenv.Parse
)
