package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rideshare/rideshare"
	"github.com/rideshare/rideshare/orchestrator/client"
)

// fakeDB mimics the database API's answers on the users table: a master that applies writes
// in order into a log (one entry per write, after a promotion), and copies that lag behind it.
// It is what the checker is tested against, so it is deliberately simple; the real API is the
// runner's business.
type fakeDB struct {
	mu       sync.Mutex
	log      [][]byte                    // entries as the worker appends them (JSON of LogOp)
	states   []map[string]int64          // users (username → id) after each entry; [0] empty
	requests map[string]rideshare.Result // applied request ids
	nextID   int64
	// strongLag is how many entries behind the master strong reads are answered: 0 is right,
	// more is the planted bug of a slave that does not wait for min_seq.
	strongLag int
	// fail, if set, answers a request instead of the fake (a status and error), or returns 0.
	fail func(path string, body []byte) int
	seen []map[string]any // request bodies, as sent
}

func newFakeDB() *fakeDB {
	f := &fakeDB{requests: map[string]rideshare.Result{}, nextID: 1}
	f.appendEntry(logOp{Promote: "w1"}, map[string]int64{})
	return f
}

func (f *fakeDB) appendEntry(op logOp, users map[string]int64) uint64 {
	data, _ := json.Marshal(op)
	f.log = append(f.log, data)
	if len(f.states) == 0 {
		f.states = append(f.states, map[string]int64{}) // before the first entry
	}
	f.states = append(f.states, users)
	return uint64(len(f.log))
}

// entries is the log as a runner would read it from the sync log.
func (f *fakeDB) entries(t *testing.T) []Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Entry
	for i, data := range f.log {
		e, err := DecodeEntry(uint64(i+1), data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func (f *fakeDB) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var raw map[string]any
	_ = json.Unmarshal(body, &raw)
	f.mu.Lock()
	f.seen = append(f.seen, raw)
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		if status := fail(r.URL.Path, body); status != 0 {
			answer(w, status, map[string]string{"error": "fake refusal"})
			return
		}
	}
	switch r.URL.Path {
	case "/api/v1/db/write":
		var op rideshare.Write
		if err := json.Unmarshal(body, &op); err != nil {
			answer(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		res, err := f.write(op)
		if err != nil {
			answer(w, rideshare.StatusOf(err), map[string]string{"error": err.Error()})
			return
		}
		answer(w, http.StatusOK, res)
	case "/api/v1/db/read":
		var q rideshare.Read
		_ = json.Unmarshal(body, &q)
		answer(w, http.StatusOK, f.read(q))
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeDB) write(op rideshare.Write) (rideshare.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if res, ok := f.requests[op.RequestID]; ok && op.RequestID != "" {
		return res, nil
	}
	users := maps.Clone(f.states[len(f.states)-1])
	parts := op.Batch
	if parts == nil {
		parts = []rideshare.Write{op}
	}
	resolved := op
	resolved.Batch = nil
	var res rideshare.Result
	for _, p := range parts {
		if p.Insert != nil {
			k := p.Insert["username"].(string)
			if _, dup := users[k]; dup {
				return rideshare.Result{}, fmt.Errorf("%w: UNIQUE constraint failed: users.username", rideshare.ErrConstraint)
			}
			users[k] = f.nextID
			ins := maps.Clone(p.Insert)
			ins["id"] = f.nextID
			p.Insert = ins
			res.ID, res.Affected = f.nextID, res.Affected+1
			f.nextID++
		} else {
			k := p.Delete.Where["username"].(string)
			if _, ok := users[k]; ok {
				res.Affected++
			}
			delete(users, k)
		}
		if op.Batch != nil {
			resolved.Batch = append(resolved.Batch, p)
		} else {
			resolved = p
		}
	}
	resolved.RequestID = op.RequestID
	res.Seq = f.appendEntry(logOp{Write: resolved}, users)
	f.requests[op.RequestID] = res
	return res, nil
}

func (f *fakeDB) read(q rideshare.Read) client.ReadResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Eventual reads come from a copy one entry behind; strong ones from strongLag behind.
	lag := f.strongLag
	if q.Consistency == rideshare.Eventual {
		lag = 1
	}
	seq := max(len(f.states)-1-lag, 0)
	res := client.ReadResult{Rows: []rideshare.Row{}, Seq: uint64(seq)}
	users := f.states[seq]
	if k, ok := q.Where["username"].(string); ok {
		if id, ok := users[k]; ok {
			res.Rows = append(res.Rows, rideshare.Row{"id": id, "username": k})
		}
		return res
	}
	for k, id := range users {
		res.Rows = append(res.Rows, rideshare.Row{"id": id, "username": k})
	}
	return res
}

func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func startFake(t *testing.T) (*fakeDB, *client.Client) {
	f := newFakeDB()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, client.New(srv.URL, "")
}

func TestClientRecordsOperations(t *testing.T) {
	f, db := startFake(t)
	rec := NewRecorder()
	c := NewClient(0, db, rec)
	ctx := context.Background()

	if op := c.Insert(ctx, "alice", "pw"); op.Class != Ok || op.ID != 1 || op.Seq != 2 || op.RequestID == "" {
		t.Errorf("insert: %s", op)
	}
	if op := c.Insert(ctx, "alice", "pw"); op.Class != Failed || !op.Conflict() {
		t.Errorf("duplicate insert: %s", op)
	}
	if op := c.StrongRead(ctx, "alice"); op.Class != Ok || op.Rows != 1 || op.ID != 1 {
		t.Errorf("strong read: %s", op)
	}
	if op := c.EventualRead(ctx, "bob"); op.Class != Ok || op.Rows != 0 {
		t.Errorf("eventual read: %s", op)
	}
	if op := c.Batch(ctx, []Part{{Insert, "bob", "pw"}, {Delete, "alice", ""}}); op.Class != Ok || op.Affected != 2 {
		t.Errorf("batch: %s", op)
	}
	if op := c.Delete(ctx, "bob"); op.Class != Ok || op.Affected != 1 {
		t.Errorf("delete: %s", op)
	}
	h := rec.History()
	if len(h) != 6 {
		t.Fatalf("%d ops recorded, want 6", len(h))
	}
	ids := map[string]bool{}
	for i, op := range h {
		if op.Client != 0 || op.Return < op.Invoke || (i > 0 && op.Invoke < h[i-1].Return) {
			t.Errorf("op %d times or client: %s", i, op)
		}
		if op.IsWrite() {
			if ids[op.RequestID] {
				t.Errorf("request id %s used twice", op.RequestID)
			}
			ids[op.RequestID] = true
		}
	}
	// What went on the wire: each write with its request id, reads with their consistency.
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, body := range f.seen {
		switch h[i].Kind {
		case StrongRead, EventualRead:
			want := map[Kind]string{StrongRead: rideshare.Strong, EventualRead: rideshare.Eventual}[h[i].Kind]
			if body["consistency"] != want || body["table"] != "users" {
				t.Errorf("read %d sent %v", i, body)
			}
		default:
			if body["request_id"] != h[i].RequestID {
				t.Errorf("write %d sent %v, want request id %s", i, body, h[i].RequestID)
			}
		}
	}
}

func TestClientClassifiesFailures(t *testing.T) {
	f, db := startFake(t)
	rec := NewRecorder()
	c := NewClient(3, db, rec)
	for _, tc := range []struct {
		status int
		class  Class
		kind   string
	}{
		{http.StatusServiceUnavailable, Indeterminate, rideshare.KindUnavailable},
		{http.StatusGatewayTimeout, Indeterminate, rideshare.KindUnavailable},
		{http.StatusInternalServerError, Indeterminate, rideshare.KindInternal},
		{http.StatusBadRequest, Failed, rideshare.KindInvalid},
		{http.StatusConflict, Failed, rideshare.KindConstraint},
	} {
		f.mu.Lock()
		f.fail = func(string, []byte) int { return tc.status }
		f.mu.Unlock()
		if op := c.Insert(context.Background(), "alice", "pw"); op.Class != tc.class || op.ErrKind != tc.kind {
			t.Errorf("status %d: %s, want %s (%s)", tc.status, op, tc.class, tc.kind)
		}
	}
	// A client that gives up: the op is indeterminate, and so is one never finished.
	block := make(chan struct{})
	defer close(block)
	f.mu.Lock()
	f.fail = func(string, []byte) int { <-block; return 0 }
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if op := c.Delete(ctx, "alice"); op.Class != Indeterminate {
		t.Errorf("timed out: %s", op)
	}
	rec.Begin(Op{Client: 4, Kind: Insert, Key: "zed"})
	last := rec.History()
	if op := last[len(last)-1]; op.Class != Indeterminate || op.Key != "zed" || op.Return < op.Invoke {
		t.Errorf("an op never ended: %s", op)
	}
}

// runClients runs n clients of random operations on a few keys against db.
func runClients(t *testing.T, db *client.Client, rec *Recorder, n, opsEach int, seed uint64) {
	keys := []string{"k0", "k1", "k2"}
	var wg sync.WaitGroup
	for id := range n {
		wg.Go(func() {
			c := NewClient(id, db, rec)
			rnd := rand.New(rand.NewPCG(seed, uint64(id)))
			ctx := context.Background()
			for range opsEach {
				k := keys[rnd.IntN(len(keys))]
				switch rnd.IntN(6) {
				case 0, 1:
					c.Insert(ctx, k, "pw")
				case 2:
					c.Delete(ctx, k)
				case 3:
					c.StrongRead(ctx, k)
				case 4:
					c.EventualRead(ctx, k)
				default:
					c.Batch(ctx, []Part{{Insert, k, "pw"}, {Insert, keys[(rnd.IntN(2)+1+indexOf(keys, k))%3], "pw"}})
				}
			}
		})
	}
	wg.Wait()
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

// Concurrent clients against a correct fake: every check holds.
func TestClientsAgainstACorrectFake(t *testing.T) {
	f, db := startFake(t)
	rec := NewRecorder()
	runClients(t, db, rec, 4, 60, 1)
	h := rec.History()
	rows, err := Users(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	log := f.entries(t)
	expected, err := ReplayUsers(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Result{
		CheckLinearizable(h, t.TempDir(), 10*time.Second),
		CheckAcknowledged(h, FinalState(rows), log),
		CheckEventualReads(h, log),
		CheckOneMaster(log, h),
		CheckReplicas(expected, map[string][]rideshare.Row{"w1": rows}),
	} {
		if !r.Holds {
			t.Errorf("%s", r)
		} else {
			t.Logf("%s", r)
		}
	}
}

// The planted bug of issue 13: a slave answers strong reads without waiting for min_seq.
func TestPlantedStaleStrongReadsAreCaught(t *testing.T) {
	f, db := startFake(t)
	f.strongLag = 1
	rec := NewRecorder()
	c := NewClient(0, db, rec)
	c.Insert(context.Background(), "alice", "pw")
	c.StrongRead(context.Background(), "alice") // from a copy one entry behind: absent
	r := CheckLinearizable(rec.History(), t.TempDir(), 10*time.Second)
	if r.Holds || !strings.Contains(r.Evidence, "visualisation: ") {
		t.Fatalf("a stale strong read went unnoticed: %s", r)
	}
	// And among concurrent clients.
	f, db = startFake(t)
	f.strongLag = 2
	rec = NewRecorder()
	runClients(t, db, rec, 4, 60, 2)
	if r := CheckLinearizable(rec.History(), t.TempDir(), 10*time.Second); r.Holds {
		t.Errorf("stale strong reads among concurrent clients went unnoticed: %s", r)
	}
}
