package e2e

// The orchestrator's database API (SPEC §6, O1–O7) and the admin token (issue 3, item 7) on
// the real stack: operations are data, every bad one is a 4xx with a reason and never a 5xx,
// and the data is the same after all of them.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"

	"github.com/rideshare/rideshare/orchestrator"
)

func withAdminToken(tok string) stackOpt { return func(c *system.Config) { c.AdminToken = tok } }

// apiOrch posts body to an orchestrator path and returns the answer, body trimmed of the
// encoder's newline.
func apiOrch(tb testing.TB, st *stack, path, body string, header http.Header) (apiAnswer, http.Header) {
	tb.Helper()
	a, h := apiSend(tb, apiRequest{method: "POST", url: st.OrchestratorURL + path, body: body, header: header})
	a.Body = strings.TrimSuffix(a.Body, "\n")
	return a, h
}

// apiWriteResult is O1's answer, every field required.
type apiWriteResult struct {
	Seq, ID, Affected int64
}

func apiMustWrite(tb testing.TB, st *stack, body string, header http.Header) apiWriteResult {
	tb.Helper()
	got, _ := apiOrch(tb, st, "/api/v1/db/write", body, header)
	if got.Code != 200 {
		tb.Fatalf("db/write %s: %+v", body, got)
	}
	var m map[string]json.Number
	dec := json.NewDecoder(strings.NewReader(got.Body))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || len(m) != 3 {
		tb.Fatalf("db/write %s: answer %s is not {seq, id, affected} (%v)", body, got.Body, err)
	}
	var r apiWriteResult
	for name, p := range map[string]*int64{"seq": &r.Seq, "id": &r.ID, "affected": &r.Affected} {
		v, ok := m[name]
		if !ok {
			tb.Fatalf("db/write %s: answer %s lacks %q", body, got.Body, name)
		}
		n, err := v.Int64()
		if err != nil {
			tb.Fatalf("db/write %s: %s is %s", body, name, v)
		}
		*p = n
	}
	return r
}

// apiMustReject checks a 4xx with a JSON reason that contains reason (case-insensitive).
func apiMustReject(tb testing.TB, got apiAnswer, h http.Header, code int, reason string) {
	tb.Helper()
	var e map[string]string
	if got.Code != code || json.Unmarshal([]byte(got.Body), &e) != nil || len(e) != 1 || e["error"] == "" {
		tb.Fatalf("got %+v, want %d with {\"error\": reason}", got, code)
	}
	if !strings.Contains(strings.ToLower(e["error"]), strings.ToLower(reason)) {
		tb.Fatalf("reason %q does not say %q", e["error"], reason)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		tb.Fatalf("Content-Type %q", ct)
	}
}

// apiSnapshot reads every readable column of every table, in a fixed order.
func apiSnapshot(tb testing.TB, st *stack, header http.Header) string {
	tb.Helper()
	var parts []string
	for _, q := range []string{
		`{"table":"users","order":[{"column":"id"}]}`,
		`{"table":"rides","order":[{"column":"ride_id"}]}`,
		`{"table":"ride_users","order":[{"column":"ride_id"},{"column":"username"}]}`,
	} {
		rows, _ := apiDBRead(tb, st, q, header)
		b, err := json.Marshal(rows)
		if err != nil {
			tb.Fatal(err)
		}
		parts = append(parts, string(b))
	}
	return strings.Join(parts, "\n")
}

func apiUserInsert(name string) string {
	return `{"table":"users","insert":{"username":` + apiQuote(name) + `,"password":"` + apiPW + `"}}`
}

func apiRideInsert(by string, ts int64, source, destination int) string {
	return fmt.Sprintf(`{"table":"rides","insert":{"created_by":%s,"timestamp":"01-01-2031:00-00-00","ts":%d,"source":%d,"destination":%d}}`,
		apiQuote(by), ts, source, destination)
}

func apiRowCount(tb testing.TB, st *stack, query string) int {
	tb.Helper()
	rows, _ := apiDBRead(tb, st, query, nil)
	return len(rows)
}

func TestAPIOrchestratorContract(t *testing.T) {
	st := apiMustStack(t, withSlaves(2))
	o := st.OrchestratorURL

	var alice, bob, ride apiWriteResult
	t.Run("O1 write answers seq, id, affected", func(t *testing.T) {
		alice = apiMustWrite(t, st, apiUserInsert("alice"), nil)
		bob = apiMustWrite(t, st, apiUserInsert("bob"), nil)
		if alice.Seq < 1 || alice.ID < 1 || alice.Affected != 1 {
			t.Fatalf("first insert answered %+v", alice)
		}
		if bob.Seq != alice.Seq+1 || bob.ID != alice.ID+1 || bob.Affected != 1 {
			t.Fatalf("second insert answered %+v after %+v", bob, alice)
		}
		ride = apiMustWrite(t, st, apiRideInsert("alice", 1924992000, 1, 2), nil)
		if ride.ID != 1 || ride.Affected != 1 || ride.Seq != bob.Seq+1 {
			t.Fatalf("ride insert answered %+v", ride)
		}
		join := apiMustWrite(t, st, `{"table":"ride_users","insert":{"ride_id":1,"username":"bob"}}`, nil)
		if join.Affected != 1 || join.ID != 0 || join.Seq != ride.Seq+1 {
			t.Fatalf("join insert answered %+v", join)
		}
		if r := apiMustWrite(t, st, `{"table":"users","delete":{"where":{"username":"nobody"}}}`, nil); r.Affected != 0 {
			t.Fatalf("deleting nobody answered %+v", r)
		}
	})

	t.Run("O2 read answers rows and seq", func(t *testing.T) {
		rows, seq := apiDBRead(t, st, `{"table":"users","order":[{"column":"id"}]}`, nil)
		want := fmt.Sprintf(`[{"id":%d,"username":"alice"},{"id":%d,"username":"bob"}]`, alice.ID, bob.ID)
		if b, _ := json.Marshal(rows); string(b) != want {
			t.Fatalf("rows %s, want %s", b, want)
		}
		if seq < uint64(ride.Seq+2) {
			t.Fatalf("read at seq %d, before the acknowledged writes (%d)", seq, ride.Seq+2)
		}
		rows, _ = apiDBRead(t, st, `{"table":"rides","columns":["ride_id","created_by","ts"],"where":{"source":1,"ts":{"gt":1924991999,"le":1924992000}}}`, nil)
		if b, _ := json.Marshal(rows); string(b) != `[{"created_by":"alice","ride_id":1,"ts":1924992000}]` {
			t.Fatalf("rides %s", b)
		}
		rows, _ = apiDBRead(t, st, `{"table":"users","columns":["username"],"order":[{"column":"username","desc":true}],"limit":1}`, nil)
		if b, _ := json.Marshal(rows); string(b) != `[{"username":"bob"}]` {
			t.Fatalf("ordered, limited read: %s", b)
		}
		rows, _ = apiDBRead(t, st, `{"table":"users","count":true,"where":{"username":{"ne":"alice"}}}`, nil)
		if b, _ := json.Marshal(rows); string(b) != `[{"count":1}]` {
			t.Fatalf("count: %s", b)
		}
		rows, _ = apiDBRead(t, st, `{"table":"users","where":{"username":"nobody"}}`, nil)
		if rows == nil || len(rows) != 0 {
			t.Fatalf("no match answered %v, want []", rows)
		}
	})

	t.Run("409 on constraints", func(t *testing.T) {
		for _, tt := range []struct{ name, body string }{
			{"duplicate username", apiUserInsert("alice")},
			{"ride of a missing user", apiRideInsert("ghost", 1, 1, 2)},
			{"join of a missing ride", `{"table":"ride_users","insert":{"ride_id":999,"username":"bob"}}`},
			{"join of a missing user", `{"table":"ride_users","insert":{"ride_id":1,"username":"ghost"}}`},
			{"duplicate join", `{"table":"ride_users","insert":{"ride_id":1,"username":"bob"}}`},
		} {
			t.Run(tt.name, func(t *testing.T) {
				got, h := apiOrch(t, st, "/api/v1/db/write", tt.body, nil)
				apiMustReject(t, got, h, 409, "")
			})
		}
	})

	t.Run("injection-looking strings are plain data", func(t *testing.T) {
		names := []string{
			"'; DROP TABLE users;--",
			`" OR ""="`,
			"Robert'); DELETE FROM rides WHERE ('1'='1",
			"%", "_", "*", `\`, "users", "NULL",
			strings.Repeat("long", 5000),
		}
		for _, n := range names {
			apiMustWrite(t, st, apiUserInsert(n), nil)
		}
		for _, n := range names {
			rows, _ := apiDBRead(t, st, `{"table":"users","columns":["username"],"where":{"username":`+apiQuote(n)+`}}`, nil)
			if len(rows) != 1 || rows[0]["username"] != n {
				t.Errorf("lookup of %.40q answered %v", n, rows)
			}
		}
		for _, q := range []string{"' OR '1'='1", "alice' --", "alice\"", "%"} {
			rows, _ := apiDBRead(t, st, `{"table":"users","where":{"username":{"lt":`+apiQuote(q)+`,"ge":`+apiQuote(q)+`}}}`, nil)
			if len(rows) != 0 {
				t.Errorf("impossible range around %q matched %v", q, rows)
			}
		}
		if n := apiRowCount(t, st, `{"table":"users"}`); n != 2+len(names) {
			t.Fatalf("%d users, want %d", n, 2+len(names))
		}
		for _, n := range names {
			if r := apiMustWrite(t, st, `{"table":"users","delete":{"where":{"username":`+apiQuote(n)+`}}}`, nil); r.Affected != 1 {
				t.Errorf("delete of %.40q affected %d rows", n, r.Affected)
			}
		}
		if n := apiRowCount(t, st, `{"table":"users"}`); n != 2 {
			t.Fatalf("%d users left, want 2", n)
		}
	})

	t.Run("strings round-trip byte for byte", func(t *testing.T) {
		for _, n := range []string{"nul\x00byte", "tab\there", "line\nbreak", "Zoë 🚗", "\u2028"} {
			apiMustWrite(t, st, apiUserInsert(n), nil)
			rows, _ := apiDBRead(t, st, `{"table":"users","columns":["username"],"where":{"username":`+apiQuote(n)+`}}`, nil)
			if len(rows) != 1 || rows[0]["username"] != n {
				t.Errorf("stored %q, read back %v", n, rows)
			}
			apiMustWrite(t, st, `{"table":"users","delete":{"where":{"username":`+apiQuote(n)+`}}}`, nil)
		}
	})

	before := apiSnapshot(t, st, nil)
	validWrite := apiUserInsert("carol")
	validRead := `{"table":"users","columns":["username"],"where":{"username":"alice"},"order":[{"column":"id"}],"limit":5}`
	t.Run("400 with a reason", func(t *testing.T) {
		const w, r = "/api/v1/db/write", "/api/v1/db/read"
		tests := []struct {
			name, path, body, reason string
		}{
			{"write: malformed JSON", w, `{"table":"users","insert":`, "malformed JSON"},
			{"write: empty body", w, ``, "malformed JSON"},
			{"write: trailing data", w, validWrite + ` {}`, "after the object"},
			{"write: trailing garbage", w, validWrite + `x`, "after the object"},
			{"write: array body", w, `[` + validWrite + `]`, "malformed JSON"},
			{"write: string body", w, `"users"`, "malformed JSON"},
			{"write: null body", w, `null`, "exactly one of"},
			{"write: unknown field", w, `{"table":"users","insert":{"username":"x","password":"` + apiPW + `"},"returning":"*"}`, "unknown field"},
			{"write: SQL as a field", w, `{"sql":"DELETE FROM users"}`, "unknown field"},
			{"write: unknown table", w, `{"table":"accounts","insert":{"x":"y"}}`, "unknown table"},
			{"write: table injection", w, `{"table":"users; DROP TABLE users","insert":{"username":"x","password":"` + apiPW + `"}}`, "unknown table"},
			{"write: internal table", w, `{"table":"meta","insert":{"k":"applied_seq","v":0}}`, "unknown table"},
			{"write: no table", w, `{"insert":{"username":"x"}}`, "table"},
			{"write: unknown column", w, `{"table":"users","insert":{"username":"x","password":"` + apiPW + `","email":"x@y"}}`, "unknown column"},
			{"write: column injection", w, `{"table":"users","insert":{"username\") VALUES ('x');--":"x","password":"` + apiPW + `"}}`, "unknown column"},
			{"write: text column given a number", w, `{"table":"users","insert":{"username":7,"password":"` + apiPW + `"}}`, "needs a string"},
			{"write: text column given null", w, `{"table":"users","insert":{"username":null,"password":"` + apiPW + `"}}`, "needs a string"},
			{"write: text column given an object", w, `{"table":"users","insert":{"username":{"a":1},"password":"` + apiPW + `"}}`, "needs a string"},
			{"write: integer column given a string", w, `{"table":"rides","insert":{"created_by":"alice","timestamp":"t","ts":1,"source":"abc","destination":2}}`, "needs an integer"},
			{"write: integer column given a fraction", w, `{"table":"rides","insert":{"created_by":"alice","timestamp":"t","ts":1,"source":1.5,"destination":2}}`, "needs an integer"},
			{"write: integer column out of range", w, `{"table":"rides","insert":{"created_by":"alice","timestamp":"t","ts":99999999999999999999,"source":1,"destination":2}}`, "needs an integer"},
			{"write: integer column given a boolean", w, `{"table":"rides","insert":{"created_by":"alice","timestamp":"t","ts":true,"source":1,"destination":2}}`, "needs an integer"},
			{"write: auto user id set by client", w, `{"table":"users","insert":{"id":99,"username":"x","password":"` + apiPW + `"}}`, "assigned by the database"},
			{"write: auto ride_id set by client", w, `{"table":"rides","insert":{"ride_id":99,"created_by":"alice","timestamp":"t","ts":1,"source":1,"destination":2}}`, "assigned by the database"},
			{"write: missing column", w, `{"table":"users","insert":{"username":"x"}}`, "missing column"},
			{"write: empty insert", w, `{"table":"users","insert":{}}`, "names no column"},
			{"write: no action", w, `{"table":"users"}`, "exactly one of"},
			{"write: two actions", w, `{"table":"users","insert":{"username":"x","password":"` + apiPW + `"},"delete":{"where":{}}}`, "exactly one of"},
			{"write: clear with a table", w, `{"table":"users","clear":true}`, "takes no table"},
			{"write: clear not a boolean", w, `{"clear":"yes"}`, "malformed JSON"},
			{"write: table not a string", w, `{"table":5,"insert":{"username":"x"}}`, "malformed JSON"},
			{"write: insert not an object", w, `{"table":"users","insert":["x"]}`, "malformed JSON"},
			{"write: delete by an unknown column", w, `{"table":"users","delete":{"where":{"name":"alice"}}}`, "unknown column"},
			{"write: delete with a bad operator", w, `{"table":"users","delete":{"where":{"id":{"like":"%"}}}}`, "unknown comparison"},
			{"write: delete with an empty comparison", w, `{"table":"users","delete":{"where":{"id":{}}}}`, "empty comparison"},
			{"write: delete with an unknown field", w, `{"table":"users","delete":{"where":{},"limit":1}}`, "unknown field"},
			{"write: nested batch", w, `{"batch":[{"batch":[` + validWrite + `]}]}`, "cannot contain a batch"},
			{"write: clear in a batch", w, `{"batch":[` + validWrite + `,{"clear":true}]}`, "cannot contain a clear"},
			{"write: empty batch", w, `{"batch":[]}`, "1 to 1000"},
			{"write: batch with a table", w, `{"table":"users","batch":[` + validWrite + `]}`, "takes no table"},
			{"write: bad op inside a batch", w, `{"batch":[` + validWrite + `,{"table":"users","insert":{"username":"y","password":"` + apiPW + `","role":"admin"}}]}`, "batch[1]"},
			{"write: promote from a client", w, `{"promote":"worker-1"}`, "promote"},
			{"write: request_id too long", w, `{"table":"users","insert":{"username":"x","password":"` + apiPW + `"},"request_id":"` + strings.Repeat("r", 129) + `"}`, "request_id"},
			{"write: request_id inside a batch", w, `{"batch":[{"table":"users","insert":{"username":"x","password":"` + apiPW + `"},"request_id":"r"}]}`, "request_id"},
			{"write: deep nesting", w, strings.Repeat("[", 20000) + strings.Repeat("]", 20000), "malformed JSON"},

			{"read: malformed JSON", r, `{"table":"users",`, "malformed JSON"},
			{"read: empty body", r, ``, "malformed JSON"},
			{"read: trailing data", r, validRead + validRead, "after the object"},
			{"read: unknown field", r, `{"table":"users","select":"*"}`, "unknown field"},
			{"read: a write sent as a read", r, validWrite, "unknown field"},
			{"read: no table", r, `{}`, "table is required"},
			{"read: unknown table", r, `{"table":"sqlite_master"}`, "unknown table"},
			{"read: unknown column", r, `{"table":"users","columns":["email"]}`, "unknown column"},
			{"read: column injection", r, `{"table":"users","columns":["username FROM users; --"]}`, "unknown column"},
			{"read: star column", r, `{"table":"users","columns":["*"]}`, "unknown column"},
			{"read: unknown where column", r, `{"table":"users","where":{"name":"alice"}}`, "unknown column"},
			{"read: secret column", r, `{"table":"users","columns":["username","password"]}`, "cannot be read"},
			{"read: secret column in where", r, `{"table":"users","where":{"password":"` + apiPW + `"}}`, "cannot be queried"},
			{"read: secret column compared", r, `{"table":"users","where":{"password":{"gt":""}}}`, "cannot be queried"},
			{"read: order by the secret column", r, `{"table":"users","order":[{"column":"password"}]}`, "cannot order"},
			{"read: order by an unknown column", r, `{"table":"users","order":[{"column":"id; DROP TABLE users"}]}`, "cannot order"},
			{"read: order without a column", r, `{"table":"users","order":[{}]}`, "cannot order"},
			{"read: bad where operator", r, `{"table":"users","where":{"id":{"like":1}}}`, "unknown comparison"},
			{"read: operator injection", r, `{"table":"users","where":{"id":{"= 1 OR 1 = 1 --":1}}}`, "unknown comparison"},
			{"read: where given the wrong type", r, `{"table":"users","where":{"id":"1 OR 1=1"}}`, "needs an integer"},
			{"read: where given an array", r, `{"table":"users","where":{"username":["alice","bob"]}}`, "needs a string"},
			{"read: where given null", r, `{"table":"users","where":{"username":null}}`, "needs a string"},
			{"read: negative limit", r, `{"table":"users","limit":-1}`, "limit"},
			{"read: huge limit", r, `{"table":"users","limit":100001}`, "limit"},
			{"read: fractional limit", r, `{"table":"users","limit":1.5}`, "malformed JSON"},
			{"read: limit as a string", r, `{"table":"users","limit":"5"}`, "malformed JSON"},
			{"read: bad consistency", r, `{"table":"users","consistency":"sometimes"}`, "consistency"},
			{"read: consistency not a string", r, `{"table":"users","consistency":1}`, "malformed JSON"},
			{"read: count with columns", r, `{"table":"users","count":true,"columns":["username"]}`, "count takes no columns"},
			{"read: columns not a list", r, `{"table":"users","columns":"username"}`, "malformed JSON"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, h := apiOrch(t, st, tt.path, tt.body, nil)
				apiMustReject(t, got, h, 400, tt.reason)
			})
		}
	})

	t.Run("413 over 1 MiB", func(t *testing.T) {
		for _, path := range []string{"/api/v1/db/write", "/api/v1/db/read"} {
			t.Run(path, func(t *testing.T) {
				huge := `{"table":"users","insert":{"username":"` + strings.Repeat("x", orchestrator.MaxBody) + `","password":"` + apiPW + `"}}`
				got, h := apiOrch(t, st, path, huge, nil)
				apiMustReject(t, got, h, 413, "")
				// One byte over the limit, the rest of it whitespace.
				padded := validRead + strings.Repeat(" ", orchestrator.MaxBody+1-len(validRead))
				got, h = apiOrch(t, st, path, padded, nil)
				apiMustReject(t, got, h, 413, "")
				chunked, h := apiSend(t, apiRequest{method: "POST", url: o + path, body: huge, chunked: true})
				apiMustReject(t, chunked, h, 413, "")
			})
		}
		t.Run("exactly 1 MiB is accepted", func(t *testing.T) {
			padded := validRead + strings.Repeat(" ", orchestrator.MaxBody-len(validRead))
			if got, _ := apiOrch(t, st, "/api/v1/db/read", padded, nil); got.Code != 200 {
				t.Fatalf("got %+v", got)
			}
		})
	})

	t.Run("never a 5xx", func(t *testing.T) {
		// Every strict prefix of a valid request is invalid.
		for _, tt := range []struct{ path, body string }{
			{"/api/v1/db/write", `{"batch":[` + apiUserInsert("p1") + `,{"table":"users","delete":{"where":{"id":{"gt":100}}}}]}`},
			{"/api/v1/db/read", validRead},
		} {
			for i := range len(tt.body) {
				got, _ := apiOrch(t, st, tt.path, tt.body[:i], nil)
				if got.Code != 400 {
					t.Fatalf("%s with %q: %+v", tt.path, tt.body[:i], got)
				}
			}
		}
		// Random mutations of a read: any answer but a 5xx (reads change nothing).
		rng := rand.New(rand.NewPCG(1, 2))
		alphabet := []byte(`{}[]":,0123456789-.eE tfnulrasx\` + "\x00\xff")
		for range 300 {
			b := []byte(validRead)
			for range 1 + rng.IntN(4) {
				b[rng.IntN(len(b))] = alphabet[rng.IntN(len(alphabet))]
			}
			got, _ := apiOrch(t, st, "/api/v1/db/read", string(b), nil)
			if got.Code >= 500 {
				t.Fatalf("db/read with %q: %+v", b, got)
			}
		}
		for range 50 {
			b := make([]byte, rng.IntN(200))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			for _, path := range []string{"/api/v1/db/write", "/api/v1/db/read"} {
				if got, _ := apiOrch(t, st, path, string(b), nil); got.Code >= 500 || got.Code == 200 {
					t.Fatalf("%s with random bytes %q: %+v", path, b, got)
				}
			}
		}
	})

	t.Run("wrong methods and paths", func(t *testing.T) {
		ws := workers(t, st)
		for _, tt := range []struct{ method, path string }{
			{"GET", "/api/v1/db/write"}, {"GET", "/api/v1/db/read"}, {"GET", "/api/v1/db/clear"},
			{"GET", "/api/v1/crash/master"}, {"DELETE", "/api/v1/crash/slave"}, {"POST", "/api/v1/worker/list"},
		} {
			t.Run(tt.method+" "+tt.path+" is 405", func(t *testing.T) {
				got, h := apiSend(t, apiRequest{method: tt.method, url: o + tt.path})
				apiMustReject(t, got, h, 405, "")
			})
		}
		// RFC 9110 §15.5.6: a 405 MUST carry Allow; SPEC §3 asks it of the other services too.
		t.Run("405 carries Allow", func(t *testing.T) {
			for _, tt := range []struct{ method, path, allow string }{
				{"GET", "/api/v1/db/write", "POST"}, {"GET", "/api/v1/crash/slave", "POST"}, {"POST", "/api/v1/workers", "GET"},
			} {
				if got, _ := apiSend(t, apiRequest{method: tt.method, url: o + tt.path}); got.Code != 405 || !strings.Contains(got.Allow, tt.allow) {
					t.Errorf("%s %s: status %d, Allow %q, want 405 with Allow: %s", tt.method, tt.path, got.Code, got.Allow, tt.allow)
				}
			}
		})
		t.Run("unknown path is 404", func(t *testing.T) {
			got, h := apiSend(t, apiRequest{method: "POST", url: o + "/api/v1/db/exec", body: `{"sql":"DROP TABLE users"}`})
			apiMustReject(t, got, h, 404, "")
		})
		t.Run("no worker was touched", func(t *testing.T) {
			if got := workers(t, st); !reflect.DeepEqual(apiPIDs(got), apiPIDs(ws)) {
				t.Fatalf("workers %v, were %v", got, ws)
			}
		})
	})

	t.Run("the data is intact after all the bad requests", func(t *testing.T) {
		if after := apiSnapshot(t, st, nil); after != before {
			t.Fatalf("data changed:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("a batch is atomic", func(t *testing.T) {
		for _, tt := range []struct {
			name, body string
			code       int
			absent     string
		}{
			{"duplicate in the second write", `{"batch":[` + apiUserInsert("carol") + `,` + apiUserInsert("alice") + `]}`, 409, "carol"},
			{"missing parent in the second write", `{"batch":[` + apiUserInsert("frank") + `,` + apiRideInsert("ghost", 1, 1, 2) + `]}`, 409, "frank"},
			{"invalid second write", `{"batch":[` + apiUserInsert("erin") + `,{"table":"users","insert":{"username":"y"}}]}`, 400, "erin"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				got, h := apiOrch(t, st, "/api/v1/db/write", tt.body, nil)
				apiMustReject(t, got, h, tt.code, "")
				if n := apiRowCount(t, st, `{"table":"users","where":{"username":"`+tt.absent+`"}}`); n != 0 {
					t.Fatalf("the first write of the failed batch was applied")
				}
			})
		}
		if after := apiSnapshot(t, st, nil); after != before {
			t.Fatalf("data changed by failed batches:\nbefore %s\nafter  %s", before, after)
		}
		t.Run("a good batch applies every write", func(t *testing.T) {
			r := apiMustWrite(t, st, `{"batch":[`+apiUserInsert("dave")+`,`+apiRideInsert("dave", 1924992001, 3, 4)+`]}`, nil)
			if r.Affected != 2 || r.ID != ride.ID+1 {
				t.Fatalf("batch answered %+v", r)
			}
			if n := apiRowCount(t, st, `{"table":"rides","where":{"created_by":"dave"}}`); n != 1 {
				t.Fatalf("%d rides by dave", n)
			}
		})
	})

	t.Run("a request_id is applied once", func(t *testing.T) {
		body := `{"table":"users","insert":{"username":"idem","password":"` + apiPW + `"},"request_id":"api-test-1"}`
		first, _ := apiOrch(t, st, "/api/v1/db/write", body, nil)
		again, _ := apiOrch(t, st, "/api/v1/db/write", body, nil)
		if first.Code != 200 || again != first {
			t.Fatalf("first %+v, again %+v", first, again)
		}
		if n := apiRowCount(t, st, `{"table":"users","where":{"username":"idem"}}`); n != 1 {
			t.Fatalf("%d rows", n)
		}
	})

	t.Run("every read sees the writes acknowledged before it", func(t *testing.T) {
		for i := range 30 {
			name := fmt.Sprintf("raw%d", i)
			w := apiMustWrite(t, st, apiUserInsert(name), nil)
			rows, seq := apiDBRead(t, st, `{"table":"users","where":{"username":"`+name+`"}}`, nil)
			if len(rows) != 1 || seq < uint64(w.Seq) {
				t.Fatalf("write %d acknowledged at seq %d; the read after it answered %v at seq %d", i, w.Seq, rows, seq)
			}
		}
	})

	t.Run("eventual consistency", func(t *testing.T) {
		apiMustWrite(t, st, apiUserInsert("later"), nil)
		eventually(t, 10*time.Second, "an eventual read to see the write", func() bool {
			rows, _ := apiDBRead(t, st, `{"table":"users","where":{"username":"later"},"consistency":"eventual"}`, nil)
			return len(rows) == 1
		})
		rows, _ := apiDBRead(t, st, `{"table":"users","where":{"username":"later"},"consistency":"strong"}`, nil)
		if len(rows) != 1 {
			t.Fatalf("strong read: %v", rows)
		}
	})

	t.Run("a client's min_seq does not hold a read", func(t *testing.T) {
		start := time.Now()
		for _, c := range []string{"strong", "eventual"} {
			apiDBRead(t, st, `{"table":"users","count":true,"consistency":"`+c+`","min_seq":1000000000}`, nil)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("reads with a far min_seq took %v", d)
		}
	})

	t.Run("O6 worker/list and O7 workers", func(t *testing.T) {
		ws := settled(t, st, 3)
		got, _ := apiSend(t, apiRequest{method: "GET", url: o + "/api/v1/workers"})
		var raw []map[string]json.RawMessage
		if got.Code != 200 || json.Unmarshal([]byte(got.Body), &raw) != nil || len(raw) != 3 {
			t.Fatalf("workers: %+v", got)
		}
		for _, w := range raw {
			var keys []string
			for k := range w {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if !reflect.DeepEqual(keys, []string{"applied_seq", "id", "pid", "ready", "role"}) {
				t.Errorf("worker fields %v", keys)
			}
		}
		masters := 0
		for _, w := range ws {
			if w.ID == "" || w.PID <= 0 || !w.Ready || (w.Role != "master" && w.Role != "slave") {
				t.Errorf("worker %+v", w)
			}
			if w.Role == "master" {
				masters++
			}
			if err := syscall.Kill(w.PID, 0); err != nil {
				t.Errorf("worker %s: pid %d is not a live process: %v", w.ID, w.PID, err)
			}
			if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", w.PID)); err == nil && !bytes.Contains(cmd, []byte("worker")) {
				t.Errorf("pid %d runs %q, not a worker", w.PID, cmd)
			}
		}
		if masters != 1 {
			t.Errorf("%d masters", masters)
		}
		list := apiDo(t, "GET", o+"/api/v1/worker/list", "", "")
		var pids []int
		if list.Code != 200 || json.Unmarshal([]byte(list.Body), &pids) != nil {
			t.Fatalf("worker/list: %+v", list)
		}
		if !slices.IsSorted(pids) {
			t.Errorf("worker/list %v is not ascending", pids)
		}
		want := apiPIDs(ws)
		if !reflect.DeepEqual(pids, want) {
			t.Errorf("worker/list %v, workers %v", pids, want)
		}
	})

	t.Run("O5 crash/slave kills the highest-PID slave, O4 crash/master the master", func(t *testing.T) {
		data := apiSnapshot(t, st, nil)
		ws := settled(t, st, 3)
		var master int
		var slaves []int
		for _, w := range ws {
			if w.Role == "master" {
				master = w.PID
			} else {
				slaves = append(slaves, w.PID)
			}
		}
		got, _ := apiOrch(t, st, "/api/v1/crash/slave", "", nil)
		apiCheck(t, got, apiAnswer{Code: 200, Body: fmt.Sprintf("[%d]", slices.Max(slaves))})
		gone(t, st, slices.Max(slaves))
		settled(t, st, 3)
		got, _ = apiOrch(t, st, "/api/v1/crash/master", "", nil)
		apiCheck(t, got, apiAnswer{Code: 200, Body: fmt.Sprintf("[%d]", master)})
		gone(t, st, master)
		w := apiMustWrite(t, st, apiUserInsert("after-failover"), nil) // waits for the new master
		if w.Affected != 1 {
			t.Fatalf("write after failover: %+v", w)
		}
		apiMustWrite(t, st, `{"table":"users","delete":{"where":{"username":"after-failover"}}}`, nil)
		settled(t, st, 3)
		if after := apiSnapshot(t, st, nil); after != data {
			t.Fatalf("data changed across the crashes:\nbefore %s\nafter  %s", data, after)
		}
	})

	t.Run("O3 clear empties every table, ids go on", func(t *testing.T) {
		got, _ := apiOrch(t, st, "/api/v1/db/clear", "", nil)
		apiCheck(t, got, apiAnswer{Code: 200, Body: `{}`})
		if s := apiSnapshot(t, st, nil); s != "[]\n[]\n[]" {
			t.Fatalf("after clear: %s", s)
		}
		apiMustWrite(t, st, apiUserInsert("alice"), nil)
		if r := apiMustWrite(t, st, apiRideInsert("alice", 1, 1, 2), nil); r.ID != ride.ID+2 {
			t.Fatalf("ride after clear got id %d, want %d", r.ID, ride.ID+2)
		}
	})
}

func apiPIDs(ws []orchestrator.WorkerInfo) []int {
	pids := make([]int, 0, len(ws))
	for _, w := range ws {
		pids = append(pids, w.PID)
	}
	slices.Sort(pids)
	return pids
}

func TestAdminToken(t *testing.T) {
	const tok = "s3cret-admin-token"
	st := apiMustStack(t, withAdminToken(tok))
	gw, o := st.GatewayURL, st.OrchestratorURL
	bearer := http.Header{"Authorization": {"Bearer " + tok}}

	t.Run("users and rides work through the gateway", func(t *testing.T) {
		apiMustUser(t, gw, "alice")
		apiMustUser(t, gw, "bob")
		id := apiMustRide(t, gw, "alice", apiFuture, 1, 2)
		apiCheck(t, apiDo(t, "POST", gw+apiRidePath(id), `{"username":"bob"}`, ""), apiAnswer{Code: 200, Body: `{}`})
		apiCheck(t, apiDo(t, "GET", gw+apiRidePath(id), "", ""), apiAnswer{Code: 200, Body: apiRideJSON(id, "alice", []string{"bob"}, apiFuture, 1, 2)})
		apiUsersAre(t, gw, "alice", "bob")
		apiRideCount(t, gw, 1)
		for _, base := range []string{gw, st.UsersURL, st.RidesURL} {
			if got := apiDo(t, "GET", base+"/readyz", "", ""); got.Code != 200 {
				t.Errorf("%s/readyz: %+v", base, got)
			}
		}
	})

	before := apiSnapshot(t, st, bearer)
	ws := workers(t, st)
	t.Run("401 without the right token", func(t *testing.T) {
		bad := map[string]http.Header{
			"no header":         nil,
			"wrong token":       {"Authorization": {"Bearer wrong"}},
			"token prefix":      {"Authorization": {"Bearer " + tok[:len(tok)-1]}},
			"token and more":    {"Authorization": {"Bearer " + tok + "x"}},
			"empty bearer":      {"Authorization": {"Bearer "}},
			"no scheme":         {"Authorization": {tok}},
			"basic scheme":      {"Authorization": {"Basic " + tok}},
			"token in a cookie": {"Cookie": {"token=" + tok}},
		}
		for _, path := range []string{"/api/v1/db/write", "/api/v1/db/read", "/api/v1/db/clear", "/api/v1/crash/master", "/api/v1/crash/slave"} {
			body := ""
			switch path {
			case "/api/v1/db/write":
				body = apiUserInsert("mallory")
			case "/api/v1/db/read":
				body = `{"table":"users"}`
			}
			for name, h := range bad {
				t.Run(path+" "+name, func(t *testing.T) {
					got, hdr := apiOrch(t, st, path, body, h)
					apiMustReject(t, got, hdr, 401, "token")
					if hdr.Get("WWW-Authenticate") == "" {
						t.Errorf("401 without WWW-Authenticate")
					}
				})
			}
		}
		t.Run("nothing changed", func(t *testing.T) {
			if got := apiSnapshot(t, st, bearer); got != before {
				t.Fatalf("data changed:\nbefore %s\nafter  %s", before, got)
			}
			if got := workers(t, st); !reflect.DeepEqual(apiPIDs(got), apiPIDs(ws)) {
				t.Fatalf("workers %v, were %v", got, ws)
			}
		})
	})

	t.Run("backups need the token", func(t *testing.T) {
		got, hdr := apiSend(t, apiRequest{method: "GET", url: o + "/api/v1/db/backup"})
		apiMustReject(t, got, hdr, 401, "token")
		got, hdr = apiSend(t, apiRequest{method: "GET", url: o + "/api/v1/db/backup", header: bearer})
		if got.Code != 200 || !strings.HasPrefix(got.Body, "SQLite format 3\x00") || hdr.Get("X-Rideshare-Seq") == "" {
			t.Fatalf("backup with the token: %d, %d bytes, seq %q", got.Code, len(got.Body), hdr.Get("X-Rideshare-Seq"))
		}
	})

	t.Run("the worker views stay open", func(t *testing.T) {
		for _, p := range []string{"/api/v1/worker/list", "/api/v1/workers", "/api/v1/status", "/healthz", "/readyz", "/metrics"} {
			if got := apiDo(t, "GET", o+p, "", ""); got.Code != 200 {
				t.Errorf("GET %s: %+v", p, got)
			}
		}
	})

	t.Run("the token opens the database API", func(t *testing.T) {
		w := apiMustWrite(t, st, apiUserInsert("carol"), bearer)
		rows, seq := apiDBRead(t, st, `{"table":"users","columns":["username"],"order":[{"column":"id"}]}`, bearer)
		if b, _ := json.Marshal(rows); string(b) != `[{"username":"alice"},{"username":"bob"},{"username":"carol"}]` || seq < uint64(w.Seq) {
			t.Fatalf("read %s at %d", b, seq)
		}
		// With the token, bad input is still refused with its reason; without it, the token
		// is checked first and nothing about the body is said.
		got, h := apiOrch(t, st, "/api/v1/db/write", `{"table":"nope","insert":{"a":1}}`, bearer)
		apiMustReject(t, got, h, 400, "unknown table")
		got, h = apiOrch(t, st, "/api/v1/db/write", `{"table":"nope",`, nil)
		apiMustReject(t, got, h, 401, "token")
		got, h = apiOrch(t, st, "/api/v1/db/read", strings.Repeat(" ", orchestrator.MaxBody+10), nil)
		apiMustReject(t, got, h, 401, "token")
	})

	t.Run("services' db/clear sends the token", func(t *testing.T) {
		apiCheck(t, apiDo(t, "POST", st.RidesURL+"/api/v1/db/clear", "", ""), apiAnswer{Code: 200, Body: `{}`})
		apiRideCount(t, gw, 0)
		apiCheck(t, apiDo(t, "POST", st.UsersURL+"/api/v1/db/clear", "", ""), apiAnswer{Code: 200, Body: `{}`})
		apiUsersAre(t, gw)
	})

	t.Run("db/clear with the token", func(t *testing.T) {
		apiMustUser(t, gw, "dave")
		got, _ := apiOrch(t, st, "/api/v1/db/clear", "", bearer)
		apiCheck(t, got, apiAnswer{Code: 200, Body: `{}`})
		apiUsersAre(t, gw)
	})

	t.Run("crash with the token", func(t *testing.T) {
		ws := settled(t, st, 2)
		var master, slave int
		for _, w := range ws {
			if w.Role == "master" {
				master = w.PID
			} else {
				slave = w.PID
			}
		}
		got, _ := apiOrch(t, st, "/api/v1/crash/slave", "", bearer)
		apiCheck(t, got, apiAnswer{Code: 200, Body: "[" + strconv.Itoa(slave) + "]"})
		gone(t, st, slave)
		settled(t, st, 2)
		got, _ = apiOrch(t, st, "/api/v1/crash/master", "", bearer)
		apiCheck(t, got, apiAnswer{Code: 200, Body: "[" + strconv.Itoa(master) + "]"})
		t.Run("the APIs still work after the failover", func(t *testing.T) {
			apiMustUser(t, gw, "erin")
			id := apiMustRide(t, gw, "erin", apiFuture, 1, 2)
			apiCheck(t, apiDo(t, "GET", gw+apiRidePath(id), "", ""), apiAnswer{Code: 200, Body: apiRideJSON(id, "erin", nil, apiFuture, 1, 2)})
			for _, w := range settled(t, st, 2) {
				if w.PID == master || w.PID == slave {
					t.Errorf("crashed worker %d still listed", w.PID)
				}
			}
		})
	})
}
