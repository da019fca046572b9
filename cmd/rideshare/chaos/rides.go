package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rides through the gateway: a user creates rides, another joins each, the way the product is
// used. The users and rides services keep no state, so what is checked is the database's
// promise seen from the top: every ride acknowledged (201) exists exactly once at the end, with
// its join if that was acknowledged; a refused one does not exist; one whose answer was lost
// exists at most once. Each ride has a timestamp of its own, which is how it is found again.

// rideOp is one ride creation and the join that followed it.
type rideOp struct {
	ts     string
	class  Class
	id     int64
	joined Class // of the join; only tried for an acknowledged ride
	tried  bool  // a join was sent
}

// rideLoad runs ride creations and joins through the gateway and remembers each outcome.
type rideLoad struct {
	gateway        string
	creator, rider string
	http           *http.Client
	timeout        time.Duration

	mu  sync.Mutex
	ops []rideOp
}

const rideSource, rideDestination = 1, 2

func newRideLoad(gateway, run string, timeout time.Duration) *rideLoad {
	return &rideLoad{gateway: strings.TrimRight(gateway, "/"), creator: "chaoscreator" + run, rider: "chaosrider" + run,
		http: &http.Client{}, timeout: timeout}
}

// setUp creates the two users, retrying until each exists: they are the load's
// precondition, not part of the history.
func (l *rideLoad) setUp(ctx context.Context) error {
	for _, u := range []string{l.creator, l.rider} {
		for {
			status, _, err := l.do(ctx, http.MethodPut, "/api/v1/users", map[string]string{"username": u, "password": password})
			if err == nil && (status == http.StatusCreated || status == http.StatusBadRequest) {
				// 400: it exists already (an earlier try that looked lost).
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("create user %s through the gateway: %d %v", u, status, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// run creates rides one after another until ctx ends.
func (l *rideLoad) run(ctx context.Context) {
	// Years ahead, one second apart: upcoming for the whole run, and each its own.
	base := time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(time.Now().UnixNano()%1e6) * time.Hour)
	for i := 0; ctx.Err() == nil; i++ {
		t := base.Add(time.Duration(i) * time.Second)
		op := rideOp{ts: fmt.Sprintf("%02d-%02d-%04d:%02d-%02d-%02d", t.Day(), t.Month(), t.Year(), t.Second(), t.Minute(), t.Hour())}
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.timeout)
		status, hdr, err := l.do(octx, http.MethodPost, "/api/v1/rides", map[string]any{
			"created_by": l.creator, "timestamp": op.ts, "source": rideSource, "destination": rideDestination})
		op.class = outcome(status, err, http.StatusCreated)
		if op.class == Ok {
			op.id, _ = strconv.ParseInt(path.Base(hdr.Get("Location")), 10, 64)
			status, _, err = l.do(octx, http.MethodPost, fmt.Sprintf("/api/v1/rides/%d", op.id), map[string]string{"username": l.rider})
			op.tried, op.joined = true, outcome(status, err, http.StatusOK)
		}
		cancel()
		l.mu.Lock()
		l.ops = append(l.ops, op)
		l.mu.Unlock()
	}
}

// outcome classifies an answer: the expected status is Ok, a 400 a definite refusal,
// anything else (a 5xx, no answer) indeterminate.
func outcome(status int, err error, ok int) Class {
	switch {
	case err != nil:
		return Indeterminate
	case status == ok:
		return Ok
	case status == http.StatusBadRequest:
		return Failed
	}
	return Indeterminate
}

func (l *rideLoad) do(ctx context.Context, method, p string, body any) (int, http.Header, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, l.gateway+p, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header, nil
}

func (l *rideLoad) get(ctx context.Context, p string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.gateway+p, nil)
	if err != nil {
		return 0, err
	}
	resp, err := l.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
}

// check reads the rides back through the gateway once the stack has settled.
func (l *rideLoad) check(ctx context.Context) Result {
	res := Result{Name: "rides and joins through the gateway are present once", Holds: true}
	var listed []struct {
		RideID    int64  `json:"rideId"`
		Username  string `json:"username"`
		Timestamp string `json:"timestamp"`
	}
	status, err := l.get(ctx, fmt.Sprintf("/api/v1/rides?source=%d&destination=%d", rideSource, rideDestination), &listed)
	if err != nil || (status != http.StatusOK && status != http.StatusNoContent) {
		res.Holds, res.Evidence = false, fmt.Sprintf("list rides: %d %v", status, err)
		return res
	}
	byTS := map[string][]int64{}
	for _, r := range listed {
		if r.Username == l.creator {
			byTS[r.Timestamp] = append(byTS[r.Timestamp], r.RideID)
		}
	}
	l.mu.Lock()
	ops := append([]rideOp(nil), l.ops...)
	l.mu.Unlock()
	var bad []string
	acked, joins := 0, 0
	for _, op := range ops {
		got := byTS[op.ts]
		switch {
		case op.class == Ok && (len(got) != 1 || got[0] != op.id):
			bad = append(bad, fmt.Sprintf("acknowledged ride %d (%s) found as %v", op.id, op.ts, got))
		case op.class == Failed && len(got) > 0:
			bad = append(bad, fmt.Sprintf("refused ride %s exists: %v", op.ts, got))
		case op.class == Indeterminate && len(got) > 1:
			bad = append(bad, fmt.Sprintf("ride %s (answer lost) exists %d times: %v", op.ts, len(got), got))
		}
		if op.class != Ok || !op.tried || op.joined == Indeterminate {
			continue
		}
		acked++
		var ride struct {
			Users []string `json:"users"`
		}
		if status, err := l.get(ctx, fmt.Sprintf("/api/v1/rides/%d", op.id), &ride); err != nil || status != http.StatusOK {
			bad = append(bad, fmt.Sprintf("acknowledged ride %d: details %d %v", op.id, status, err))
			continue
		}
		in := len(ride.Users) == 1 && ride.Users[0] == l.rider
		switch {
		case op.joined == Ok && !in:
			bad = append(bad, fmt.Sprintf("acknowledged join of ride %d missing: users %v", op.id, ride.Users))
		case op.joined == Failed && len(ride.Users) > 0:
			bad = append(bad, fmt.Sprintf("refused join of ride %d present: users %v", op.id, ride.Users))
		}
		if op.joined == Ok {
			joins++
		}
	}
	if len(bad) > 0 {
		res.Holds, res.Evidence = false, summarize(bad)
		return res
	}
	res.Evidence = fmt.Sprintf("%d rides sent, %d acknowledged with their join decided, %d joins acknowledged", len(ops), acked, joins)
	return res
}
