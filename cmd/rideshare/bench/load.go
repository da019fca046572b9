package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// endpoint is one kind of request of the load mix.
type endpoint struct {
	name   string
	weight int // share of the mix
	ok     func(status int) bool
	send   func(ctx context.Context, b *bencher, ls *loadState, rng *rand.Rand) (int, error)
}

func is(codes ...int) func(int) bool {
	return func(s int) bool {
		for _, c := range codes {
			if s == c {
				return true
			}
		}
		return false
	}
}

// endpoints is the mix, in report order. Weights: a read-heavy ride-sharing day.
var endpoints = []*endpoint{
	{name: "list-rides", weight: 50, ok: is(200, 204), send: sendListRides},
	{name: "ride-details", weight: 20, ok: is(200), send: sendRideDetails},
	{name: "create-ride", weight: 15, ok: is(201), send: sendCreateRide},
	{name: "join-ride", weight: 10, ok: is(200), send: sendJoin},
	{name: "create-user", weight: 5, ok: is(201), send: sendCreateUser},
}

func endpointNames() []string {
	out := make([]string, len(endpoints))
	for i, e := range endpoints {
		out[i] = e.name
	}
	return out
}

func endpointByName(name string) *endpoint {
	for _, e := range endpoints {
		if e.name == name {
			return e
		}
	}
	return nil
}

// loadState is the data a load run works on: the seeded users and rides, and the ride ids
// created since.
type loadState struct {
	base   string // URL the requests go to: the gateway, or the baseline server
	runID  string
	routes int
	users  []string
	seeded []int64 // seeded ride ids; seeded[i] was created by users[i%len(users)]

	mu    sync.RWMutex
	rides []int64 // every known ride id
	// joinable lists the rides joins go to, with the index of their creator in users: the
	// seeded rides first, then those created during the run, so a long run never runs out.
	joinable []joinableRide

	joins    atomic.Int64
	newUsers atomic.Int64
}

type joinableRide struct {
	id      int64
	creator int
}

func (ls *loadState) addRide(id int64, creator int) {
	ls.mu.Lock()
	ls.rides = append(ls.rides, id)
	ls.joinable = append(ls.joinable, joinableRide{id, creator})
	ls.mu.Unlock()
}

func (ls *loadState) joinableAt(i int64) (joinableRide, bool) {
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	if i >= int64(len(ls.joinable)) {
		return joinableRide{}, false
	}
	return ls.joinable[i], true
}

func (ls *loadState) randomRide(rng *rand.Rand) (int64, bool) {
	ls.mu.RLock()
	defer ls.mu.RUnlock()
	if len(ls.rides) == 0 {
		return 0, false
	}
	return ls.rides[rng.IntN(len(ls.rides))], true
}

// futureStamp is a random upcoming timestamp in the product's DD-MM-YYYY:SS-MM-HH format.
func futureStamp(rng *rand.Rand) string {
	t := time.Date(2031+rng.IntN(5), time.January, 1, 0, 0, 0, 0, time.UTC).
		Add(time.Duration(rng.IntN(364*24*3600)) * time.Second)
	return t.Format("02-01-2006:05-04-15")
}

// route returns a random route between areas 1..n.
func route(rng *rand.Rand, n int) (int, int) {
	s := 1 + rng.IntN(n)
	d := 1 + rng.IntN(n-1)
	if d >= s {
		d++
	}
	return s, d
}

// send makes one request and reads the whole answer; it returns the status and, if asked, the
// Location header.
func (b *bencher) send(ctx context.Context, method, url, body string, wantLocation bool) (int, string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	loc := ""
	if wantLocation {
		loc = resp.Header.Get("Location")
	}
	return resp.StatusCode, loc, err
}

func sendListRides(ctx context.Context, b *bencher, ls *loadState, rng *rand.Rand) (int, error) {
	s, d := route(rng, ls.routes)
	st, _, err := b.send(ctx, http.MethodGet, ls.base+"/api/v1/rides?source="+strconv.Itoa(s)+"&destination="+strconv.Itoa(d), "", false)
	return st, err
}

func sendRideDetails(ctx context.Context, b *bencher, ls *loadState, rng *rand.Rand) (int, error) {
	id, ok := ls.randomRide(rng)
	if !ok {
		return 0, errors.New("no ride to read")
	}
	st, _, err := b.send(ctx, http.MethodGet, ls.base+"/api/v1/rides/"+strconv.FormatInt(id, 10), "", false)
	return st, err
}

func createRideBody(by string, s, d int, stamp string) string {
	return `{"created_by":"` + by + `","timestamp":"` + stamp + `","source":` + strconv.Itoa(s) + `,"destination":` + strconv.Itoa(d) + `}`
}

// rideIDFrom reads the ride id from a Location header /api/v1/rides/{id}.
func rideIDFrom(loc string) (int64, bool) {
	i := strings.LastIndexByte(loc, '/')
	if i < 0 {
		return 0, false
	}
	id, err := strconv.ParseInt(loc[i+1:], 10, 64)
	return id, err == nil
}

func sendCreateRide(ctx context.Context, b *bencher, ls *loadState, rng *rand.Rand) (int, error) {
	// New rides go anywhere (198 areas, ~39,000 routes), so the seeded routes that list-rides
	// reads keep their size during a run.
	s, d := route(rng, 198)
	creator := rng.IntN(len(ls.users))
	body := createRideBody(ls.users[creator], s, d, futureStamp(rng))
	st, loc, err := b.send(ctx, http.MethodPost, ls.base+"/api/v1/rides", body, true)
	if st == http.StatusCreated {
		if id, ok := rideIDFrom(loc); ok {
			ls.addRide(id, creator)
		}
	}
	return st, err
}

// sendJoin joins a ride with a user who is neither its creator nor already in it. The joinable
// rides go in blocks of R (R seeded rides: the seeded ones, then as many created during the
// run); within a block the k-th join takes ride k mod R and the (k div R)-th of the other
// users. A block holds R×(U-1) joins, and rides are created far faster than joins use them up.
func sendJoin(ctx context.Context, b *bencher, ls *loadState, _ *rand.Rand) (int, error) {
	if len(ls.seeded) == 0 || len(ls.users) < 2 {
		return 0, errors.New("no seeded ride to join")
	}
	k := ls.joins.Add(1) - 1
	r, u := int64(len(ls.seeded)), int64(len(ls.users))
	block, rem := k/(r*(u-1)), k%(r*(u-1))
	ride, ok := ls.joinableAt(block*r + rem%r)
	if !ok {
		return 0, errors.New("every ride is full of the seeded users: no ride to join")
	}
	user := ls.users[(int64(ride.creator)+1+rem/r)%u]
	body := `{"username":"` + user + `"}`
	st, _, err := b.send(ctx, http.MethodPost, ls.base+"/api/v1/rides/"+strconv.FormatInt(ride.id, 10), body, false)
	return st, err
}

func sendCreateUser(ctx context.Context, b *bencher, ls *loadState, _ *rand.Rand) (int, error) {
	n := ls.newUsers.Add(1)
	body := `{"username":"b` + ls.runID + `n` + strconv.FormatInt(n, 10) + `","password":"` + benchPassword + `"}`
	st, _, err := b.send(ctx, http.MethodPut, ls.base+"/api/v1/users", body, false)
	return st, err
}

// seed creates the users and the rides a load run works on, through the gateway.
func (b *bencher) seed(ctx context.Context, ls *loadState, rides bool) error {
	ls.users = make([]string, b.cfg.seedUsers)
	for i := range ls.users {
		ls.users[i] = "b" + ls.runID + "u" + strconv.Itoa(i)
	}
	err := b.parallel(ctx, len(ls.users), "seeding users", func(ctx context.Context, i int) error {
		body := `{"username":"` + ls.users[i] + `","password":"` + benchPassword + `"}`
		st, _, err := b.send(ctx, http.MethodPut, ls.base+"/api/v1/users", body, false)
		if err == nil && st != http.StatusCreated {
			err = fmt.Errorf("create user: status %d", st)
		}
		return err
	})
	if err != nil || !rides {
		return err
	}
	pairs := routePairs(ls.routes)
	ls.seeded = make([]int64, b.cfg.seedRides)
	err = b.parallel(ctx, len(ls.seeded), "seeding rides", func(ctx context.Context, i int) error {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		p := pairs[i%len(pairs)]
		body := createRideBody(ls.users[i%len(ls.users)], p[0], p[1], futureStamp(rng))
		st, loc, err := b.send(ctx, http.MethodPost, ls.base+"/api/v1/rides", body, true)
		if err != nil {
			return err
		}
		id, ok := rideIDFrom(loc)
		if st != http.StatusCreated || !ok {
			return fmt.Errorf("create ride: status %d, Location %q", st, loc)
		}
		ls.seeded[i] = id
		return nil
	})
	ls.rides = append(ls.rides[:0], ls.seeded...)
	ls.joinable = ls.joinable[:0]
	for i, id := range ls.seeded {
		ls.joinable = append(ls.joinable, joinableRide{id, i % len(ls.users)})
	}
	return err
}

// routePairs lists every route between areas 1..n.
func routePairs(n int) [][2]int {
	var out [][2]int
	for s := 1; s <= n; s++ {
		for d := 1; d <= n; d++ {
			if s != d {
				out = append(out, [2]int{s, d})
			}
		}
	}
	return out
}

// parallel runs fn(0..n-1) on --concurrency goroutines, stopping at the first error.
func (b *bencher) parallel(ctx context.Context, n int, what string, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range min(b.cfg.concurrency, max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(fmt.Errorf("%s: %w", what, err))
					return
				}
				done.Add(1)
			}
		}()
	}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				b.prog.line("%s: %d/%d", what, done.Load(), n)
			}
		}
	}()
	wg.Wait()
	close(stop)
	b.prog.done()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// LoadReport is the result of a load run.
type LoadReport struct {
	Mode        string          `json:"mode"`
	Label       string          `json:"label,omitempty"`
	Target      string          `json:"target"`
	Only        string          `json:"only,omitempty"`
	Concurrency int             `json:"concurrency"`
	Seconds     float64         `json:"measured_seconds"`
	SeedUsers   int             `json:"seed_users"`
	SeedRides   int             `json:"seed_rides"`
	Routes      int             `json:"routes"`
	Endpoints   []EndpointStats `json:"endpoints"`
	Total       EndpointStats   `json:"total"`
	Counts      map[string]any  `json:"service_counts,omitempty"`
	Baseline    *LoadReport     `json:"baseline,omitempty"`
	// RatioToBaseline is list-rides requests/s of the system over the baseline's.
	RatioToBaseline float64 `json:"list_rides_ratio_to_baseline,omitempty"`
	// LoadAvg is the machine's 1-minute load average before and after the measured run.
	LoadAvg string  `json:"loadavg_before_after,omitempty"`
	CPU     *CPUUse `json:"cpu,omitempty"`
	// RidesAcked and RidesStored check that every acknowledged ride is in the database: the
	// rides created with 201 in the measured window, and how many more rides a strongly
	// consistent count through the orchestrator finds after the run than before it (warm-up
	// included, so stored >= acknowledged when nothing is lost).
	RidesAcked  *int64 `json:"rides_acknowledged,omitempty"`
	RidesStored *int64 `json:"rides_stored,omitempty"`
}

func (r *LoadReport) table(w io.Writer) {
	what := "mix"
	if r.Only != "" {
		what = r.Only
	}
	fmt.Fprintf(w, "%s: %s against %s, %d clients, %.1f s measured (seeded %d users, %d rides over %d routes)",
		r.Mode, what, r.Target, r.Concurrency, r.Seconds, r.SeedUsers, r.SeedRides, r.Routes*(r.Routes-1))
	if r.Label != "" {
		fmt.Fprintf(w, " [%s]", r.Label)
	}
	if r.LoadAvg != "" {
		fmt.Fprintf(w, " (load average %s)", r.LoadAvg)
	}
	fmt.Fprintln(w)
	if r.CPU != nil {
		fmt.Fprintln(w, r.CPU.String())
	}
	t := &tableWriter{}
	t.row("endpoint", "requests", "ok", "ok/s", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors by status")
	for _, e := range append(r.Endpoints, r.Total) {
		t.row(e.Endpoint, e.Requests, e.OK, e.PerSecond, e.MeanMs, e.P50Ms, e.P95Ms, e.P99Ms, e.MaxMs, formatCodes(e.ErrorCodes))
	}
	t.flush(w)
	if len(r.Counts) > 0 {
		fmt.Fprintf(w, "service _count: %v\n", r.Counts)
	}
	if r.RidesAcked != nil {
		verdict := "every acknowledged ride is stored"
		if *r.RidesStored < *r.RidesAcked {
			verdict = fmt.Sprintf("LOST %d acknowledged rides", *r.RidesAcked-*r.RidesStored)
		}
		fmt.Fprintf(w, "rides acknowledged in the measured window %d; rides added to the database during the run, warm-up included, %d (strong count through the orchestrator): %s\n",
			*r.RidesAcked, *r.RidesStored, verdict)
	}
	if r.Baseline != nil {
		fmt.Fprintln(w)
		r.Baseline.table(w)
		fmt.Fprintf(w, "\nlist-rides: system / baseline = %.3f\n", r.RatioToBaseline)
	}
}

// runLoad seeds, then drives the mix (or one endpoint) through the gateway.
func (b *bencher) runLoad(ctx context.Context) (*LoadReport, error) {
	var eps []*endpoint
	if b.cfg.only != "" {
		eps = []*endpoint{endpointByName(b.cfg.only)}
	} else {
		eps = endpoints
	}
	needRides := false
	for _, e := range eps {
		needRides = needRides || e.name != "create-ride" && e.name != "create-user"
	}
	ls := &loadState{base: b.cfg.gateway, runID: b.runID, routes: b.cfg.routes}
	if err := b.seed(ctx, ls, needRides); err != nil {
		return nil, err
	}
	before := b.serviceCounts(ctx)
	ridesBefore, countErr := b.countTable(ctx, "rides")
	rep, err := b.drive(ctx, ls, eps, "load")
	if err != nil {
		return nil, err
	}
	for _, e := range rep.Endpoints {
		if e.Endpoint != "create-ride" || countErr != nil {
			continue
		}
		// Only when the orchestrator answers (it may be out of reach of a remote bench).
		if after, err := b.countTable(ctx, "rides"); err == nil {
			acked, stored := int64(e.OK), after-ridesBefore
			rep.RidesAcked, rep.RidesStored = &acked, &stored
		}
	}
	if before != nil {
		after := b.serviceCounts(ctx)
		rep.Counts = map[string]any{"before": before, "after": after}
	}
	if b.cfg.baseline {
		base, err := b.runBaseline(ctx)
		if err != nil {
			return rep, err
		}
		rep.Baseline = base
		for _, e := range rep.Endpoints {
			if e.Endpoint == "list-rides" && base.Total.PerSecond > 0 {
				rep.RatioToBaseline = float64(int(e.PerSecond/base.Total.PerSecond*1000)) / 1000
			}
		}
	}
	return rep, nil
}

// serviceCounts reads the users' and rides' _count, if their URLs were given.
func (b *bencher) serviceCounts(ctx context.Context) map[string]string {
	if b.cfg.usersURL == "" && b.cfg.ridesURL == "" {
		return nil
	}
	out := map[string]string{}
	for name, u := range map[string]string{"users": b.cfg.usersURL, "rides": b.cfg.ridesURL} {
		if u == "" {
			continue
		}
		_, body, _, err := b.do(ctx, http.MethodGet, strings.TrimRight(u, "/")+"/api/v1/_count", nil, false)
		if err != nil {
			out[name] = err.Error()
			continue
		}
		out[name] = strings.TrimSpace(string(body))
	}
	return out
}

// drive runs --concurrency clients, each picking endpoints by weight, for --warmup (not
// recorded) plus --duration, or until --max-requests.
func (b *bencher) drive(ctx context.Context, ls *loadState, eps []*endpoint, mode string) (*LoadReport, error) {
	total := 0
	for _, e := range eps {
		total += e.weight
	}
	pick := func(rng *rand.Rand) int {
		n := rng.IntN(total)
		for i, e := range eps {
			if n < e.weight {
				return i
			}
			n -= e.weight
		}
		return len(eps) - 1
	}
	start := time.Now()
	loadBefore := loadAvg()
	mStart := start.Add(b.cfg.warmup)
	mEnd := mStart.Add(b.cfg.duration)
	ctx, cancel := context.WithDeadline(ctx, mEnd.Add(30*time.Second)) // hard bound on stragglers
	defer cancel()
	pids := b.stackPIDs(ctx, ls)
	var cpuStart cpuSample
	var issued atomic.Int64
	var live counters
	recs := make([][]*recorder, b.cfg.concurrency)
	var wg sync.WaitGroup
	for c := range b.cfg.concurrency {
		recs[c] = make([]*recorder, len(eps))
		for i := range eps {
			recs[c][i] = newRecorder()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), uint64(start.UnixNano())))
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(mEnd) || issued.Add(1) > b.cfg.maxRequests {
					return
				}
				i := pick(rng)
				st, err := eps[i].send(ctx, b, ls, rng)
				d := time.Since(t0)
				ok := err == nil && eps[i].ok(st)
				live.add(ok)
				if !t0.Before(mStart) {
					if err != nil {
						st = 0
					}
					recs[c][i].add(st, ok, d)
				}
			}
		}()
	}
	stop := make(chan struct{})
	cpuTaken := make(chan struct{})
	go func() {
		time.Sleep(time.Until(mStart))
		cpuStart = takeCPUSample(pids)
		close(cpuTaken)
	}()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				n, errs := live.get()
				phase := "warmup"
				if !now.Before(mStart) {
					phase = fmt.Sprintf("%3.0fs/%v", now.Sub(mStart).Seconds(), b.cfg.duration)
				}
				b.prog.line("%s %s %s: %6d req/s, %d requests, %d errors", mode, ls.base, phase, n-last, n, errs)
				last = n
			}
		}
	}()
	wg.Wait()
	cpuEnd := takeCPUSample(pids)
	close(stop)
	b.prog.done()
	<-cpuTaken
	end := time.Now()
	if end.After(mEnd) {
		end = mEnd
	}
	elapsed := end.Sub(mStart)
	if elapsed <= 0 {
		return nil, errors.New("nothing was measured: the run ended during the warmup (see --max-requests)")
	}
	rep := &LoadReport{Mode: mode, Label: b.cfg.label, Target: ls.base, Only: b.cfg.only, Concurrency: b.cfg.concurrency,
		Seconds: float64(int(elapsed.Seconds()*10)) / 10, SeedUsers: len(ls.users), SeedRides: len(ls.seeded), Routes: ls.routes,
		LoadAvg: loadBefore + " → " + loadAvg(), CPU: cpuUse(cpuStart, cpuEnd)}
	if len(eps) == 1 {
		rep.Only = eps[0].name
	}
	all := newRecorder()
	for i, e := range eps {
		m := newRecorder()
		for c := range recs {
			m.merge(recs[c][i])
		}
		all.merge(m)
		rep.Endpoints = append(rep.Endpoints, m.stats(e.name, elapsed, e.ok))
	}
	okAny := func(s int) bool {
		for _, e := range eps {
			if e.ok(s) {
				return true
			}
		}
		return false
	}
	rep.Total = all.stats("total", elapsed, okAny)
	// The total's errors are the sum of the endpoints' (a 204 is fine for one, not another).
	rep.Total.Errors, rep.Total.ErrorCodes = 0, nil
	for _, e := range rep.Endpoints {
		rep.Total.Errors += e.Errors
		for k, v := range e.ErrorCodes {
			if rep.Total.ErrorCodes == nil {
				rep.Total.ErrorCodes = map[string]int{}
			}
			rep.Total.ErrorCodes[k] += v
		}
	}
	return rep, nil
}

// stackPIDs lists the processes whose CPU time counts as the system's: this command, and,
// when the system runs on this machine, its workers (from the orchestrator) and their parent
// (`rideshare up`, which holds the gateway, users, rides and the orchestrator). Services run
// as separate processes elsewhere are counted as "others".
func (b *bencher) stackPIDs(ctx context.Context, ls *loadState) []int {
	pids := []int{os.Getpid()}
	if ls.base != b.cfg.gateway {
		return pids // the baseline runs in this process
	}
	ws, err := b.workers(ctx)
	if err != nil {
		return pids
	}
	seen := map[int]bool{os.Getpid(): true}
	for _, w := range ws {
		for _, p := range []int{w.PID, parentPID(w.PID)} {
			if p > 1 && !seen[p] {
				seen[p] = true
				pids = append(pids, p)
			}
		}
	}
	return pids
}
