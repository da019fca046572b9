// Package status is `rideshare status`: the orchestrator's status view (GET /api/v1/status)
// as a table in a terminal, the way `patronictl list` prints a cluster, or as JSON.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rideshare/rideshare/orchestrator"
)

// Config is what the command can be told.
type Config struct {
	Orchestrator string        // base URL
	Watch        bool          // print again every Interval until ctx ends
	Interval     time.Duration // between two looks with Watch
	Format       string        // "table" or "json"
	Events       int           // recent events shown in a table
}

// Flags registers the command's flags on fs.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Orchestrator, "orchestrator", "http://127.0.0.1:8083", "orchestrator node to ask (any node of a cluster)")
	fs.BoolVar(&c.Watch, "watch", false, "print again every --interval, with the db reads and writes per second, until interrupted")
	fs.DurationVar(&c.Interval, "interval", 2*time.Second, "time between two looks with --watch")
	fs.StringVar(&c.Format, "format", "table", "table or json (one JSON object a look)")
	fs.IntVar(&c.Events, "events", 8, "recent events to show in the table")
}

// Run prints the status once, or with Watch until ctx ends.
func Run(ctx context.Context, c Config, out io.Writer) error {
	if c.Format != "table" && c.Format != "json" {
		return fmt.Errorf("--format %q: want table or json", c.Format)
	}
	if c.Watch && c.Interval <= 0 {
		return fmt.Errorf("--interval %v: want a positive duration", c.Interval)
	}
	base := strings.TrimRight(c.Orchestrator, "/")
	hc := &http.Client{Timeout: 10 * time.Second}
	var prev *orchestrator.Status
	for {
		st, err := Fetch(ctx, hc, base)
		if err != nil {
			if !c.Watch || ctx.Err() != nil {
				return err
			}
			fmt.Fprintf(out, "%s  %v\n", time.Now().Format(time.TimeOnly), err) // keep watching
		} else {
			if c.Format == "json" {
				if err := json.NewEncoder(out).Encode(st); err != nil {
					return err
				}
			} else {
				if c.Watch {
					fmt.Fprint(out, "\x1b[H\x1b[2J") // clear the screen, as watch(1) does
				}
				Render(out, base, st, prev, c.Events)
			}
			prev = &st
		}
		if !c.Watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.Interval):
		}
	}
}

// Fetch reads one status view from the orchestrator at base.
func Fetch(ctx context.Context, hc *http.Client, base string) (orchestrator.Status, error) {
	var st orchestrator.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("orchestrator %s unreachable: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return st, fmt.Errorf("orchestrator %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return st, fmt.Errorf("orchestrator %s answered %d: %s", base, resp.StatusCode, e.Error)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, errors.New("orchestrator " + base + " sent an unreadable status: " + err.Error())
	}
	return st, nil
}

// Render prints st as tables: nodes, workers, recent events. With prev (the look before) it
// adds the db reads and writes per second in between.
func Render(out io.Writer, base string, st orchestrator.Status, prev *orchestrator.Status, events int) {
	fmt.Fprintf(out, "RideShare database at %s, %s\n", base, st.Time.Local().Format(time.DateTime))
	line := fmt.Sprintf("sync log head %d · db reads %d · db writes %d", st.LogHead, st.Reads, st.Writes)
	if prev != nil {
		if dt := st.Time.Sub(prev.Time).Seconds(); dt > 0 {
			line += fmt.Sprintf(" · %.1f reads/s · %.1f writes/s", float64(st.Reads-min(st.Reads, prev.Reads))/dt, float64(st.Writes-min(st.Writes, prev.Writes))/dt)
		}
	}
	fmt.Fprintln(out, line)
	fmt.Fprintln(out)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPID\tURL\tUP\tSUPERVISOR")
	for _, n := range st.Nodes {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", n.Name, n.PID, dash(n.URL), yes(n.Up), yes(n.Supervisor))
	}
	tw.Flush()
	fmt.Fprintln(out)

	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tPID\tROLE\tAPPLIED\tLAG\tREADY")
	for _, w := range st.Workers {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%s\n", w.ID, w.PID, w.Role, w.Applied, w.Lag, yes(w.Ready))
	}
	if len(st.Workers) == 0 {
		fmt.Fprintln(tw, "(none)\t\t\t\t\t")
	}
	tw.Flush()

	if events > 0 && len(st.Events) > 0 {
		fmt.Fprintln(out)
		fmt.Fprintln(out, "RECENT EVENTS")
		from := max(0, len(st.Events)-events)
		for _, e := range st.Events[from:] {
			fmt.Fprintf(out, "  %s  %-14s %s\n", e.Time.Local().Format(time.TimeOnly), e.Kind, e.Message)
		}
	}
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
