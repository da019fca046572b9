package e2e

// The users and rides contract (SPEC §3–§5) on the real stack: every request goes through the
// gateway to the users and rides services, which use the orchestrator, whose workers are real
// child processes. The handlers' unit tests (httpsvc/users, httpsvc/rides) check the same
// contract on one SQLite file; these check that it survives the trip through the queues and the
// replicas. Only /api/v1/_count and /api/v1/db/clear are sent to the services directly: the
// gateway does not route them.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	apiPW      = "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8" // sha1("password")
	apiPWUpper = "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8"
	apiForm    = "application/x-www-form-urlencoded"

	apiErrTimestamp = `{"error":"timestamp must be a real date and time as DD-MM-YYYY:SS-MM-HH, e.g. 21-08-2030:00-30-14"}`
	apiErrRideID    = `{"error":"rideId must be a positive integer"}`
	apiErrNoUser    = `{"error":"user does not exist"}`
	apiErrTooBig    = `{"error":"request body larger than 65536 bytes"}`
	apiFuture       = "21-08-2030:00-00-00"
)

// apiAnswer is what the contract tests compare: the status, the exact body and the two
// headers the SPEC names.
type apiAnswer struct {
	Code     int
	Body     string
	Allow    string
	Location string
}

// apiRequest is one request; contentType "" means application/json when there is a body.
type apiRequest struct {
	method, url, body string
	contentType       string
	header            http.Header
	chunked           bool // send the body without a Content-Length
}

// apiSend sends a request and returns the answer and its headers. The client does not follow
// redirects, so a 3xx would show.
func apiSend(tb testing.TB, r apiRequest) (apiAnswer, http.Header) {
	tb.Helper()
	var rd io.Reader
	if r.body != "" {
		rd = strings.NewReader(r.body)
		if r.chunked {
			rd = io.MultiReader(rd) // hides the length: the body goes chunked
		}
	}
	req, err := http.NewRequest(r.method, r.url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if r.body != "" {
		ct := r.contentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", r.method, r.url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read answer: %v", r.method, r.url, err)
	}
	return apiAnswer{resp.StatusCode, string(b), resp.Header.Get("Allow"), resp.Header.Get("Location")}, resp.Header
}

var apiClient = &http.Client{
	Timeout:       60 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// apiDo sends a request with an optional body of the given content type.
func apiDo(tb testing.TB, method, url, body, contentType string) apiAnswer {
	tb.Helper()
	a, _ := apiSend(tb, apiRequest{method: method, url: url, body: body, contentType: contentType})
	return a
}

func apiCheck(tb testing.TB, got, want apiAnswer) {
	tb.Helper()
	if got != want {
		tb.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

// apiQuote encodes s as a JSON string the way the services do (no HTML escaping).
func apiQuote(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func apiStrings(names ...string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = apiQuote(n)
	}
	return "[" + strings.Join(q, ",") + "]"
}

func apiUserBody(name, password string) string {
	return `{"username":` + apiQuote(name) + `,"password":` + apiQuote(password) + `}`
}

// apiRideBody is an R1 body; source and destination may be numbers, strings or nil.
func apiRideBody(by, stamp string, source, destination any) string {
	b, err := json.Marshal(map[string]any{"created_by": by, "timestamp": stamp, "source": source, "destination": destination})
	if err != nil {
		panic(err)
	}
	return string(b)
}

func apiUserPath(name string) string { return "/api/v1/users/" + url.PathEscape(name) }

// apiStamp formats t as a ride timestamp, DD-MM-YYYY:SS-MM-HH in UTC.
func apiStamp(t time.Time) string { return t.UTC().Format("02-01-2006:05-04-15") }

func apiMustUser(tb testing.TB, gw, name string) {
	tb.Helper()
	apiCheck(tb, apiDo(tb, "PUT", gw+"/api/v1/users", apiUserBody(name, apiPW), ""), apiAnswer{Code: 201, Body: `{}`})
}

// apiMustRide creates a ride through the gateway and returns its id, read from Location.
func apiMustRide(tb testing.TB, gw, by, stamp string, source, destination any) int64 {
	tb.Helper()
	got := apiDo(tb, "POST", gw+"/api/v1/rides", apiRideBody(by, stamp, source, destination), "")
	if got.Code != 201 || got.Body != `{}` {
		tb.Fatalf("create ride by %q: %+v", by, got)
	}
	id, err := strconv.ParseInt(strings.TrimPrefix(got.Location, "/api/v1/rides/"), 10, 64)
	if err != nil || !strings.HasPrefix(got.Location, "/api/v1/rides/") || id < 1 {
		tb.Fatalf("create ride by %q: Location %q", by, got.Location)
	}
	return id
}

func apiRidePath(id int64) string { return "/api/v1/rides/" + strconv.FormatInt(id, 10) }

// apiRideJSON is R3's exact answer.
func apiRideJSON(id int64, by string, riders []string, stamp string, source, destination int) string {
	return fmt.Sprintf(`{"rideId":%d,"created_by":%s,"users":%s,"timestamp":%s,"source":%d,"destination":%d}`,
		id, apiQuote(by), apiStrings(riders...), apiQuote(stamp), source, destination)
}

func apiRideCount(tb testing.TB, gw string, want int) {
	tb.Helper()
	apiCheck(tb, apiDo(tb, "GET", gw+"/api/v1/rides/count", "", ""), apiAnswer{Code: 200, Body: fmt.Sprintf("[%d]", want)})
}

func apiUsersAre(tb testing.TB, gw string, names ...string) {
	tb.Helper()
	want := apiAnswer{Code: 204}
	if len(names) > 0 {
		want = apiAnswer{Code: 200, Body: apiStrings(names...)}
	}
	apiCheck(tb, apiDo(tb, "GET", gw+"/api/v1/users", "", ""), want)
}

func api405(method, allow string) apiAnswer {
	return apiAnswer{Code: 405, Body: `{"error":"method ` + method + ` not allowed here; allowed: ` + allow + `"}`, Allow: allow}
}

// apiDBRead reads through the orchestrator and returns the rows and the sequence.
func apiDBRead(tb testing.TB, st *stack, query string, header http.Header) ([]map[string]any, uint64) {
	tb.Helper()
	got, _ := apiSend(tb, apiRequest{method: "POST", url: st.OrchestratorURL + "/api/v1/db/read", body: query, header: header})
	if got.Code != 200 {
		tb.Fatalf("db/read %s: %+v", query, got)
	}
	var res struct {
		Rows []map[string]any `json:"rows"`
		Seq  *uint64          `json:"seq"`
	}
	dec := json.NewDecoder(strings.NewReader(got.Body))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil || res.Rows == nil || res.Seq == nil {
		tb.Fatalf("db/read %s: answer %s is not {rows, seq} (%v)", query, got.Body, err)
	}
	return res.Rows, *res.Seq
}

func TestAPIUsersRidesContract(t *testing.T) {
	st := apiMustStack(t)
	gw := st.GatewayURL
	now := time.Now()

	t.Run("empty database", func(t *testing.T) {
		apiUsersAre(t, gw)
		apiRideCount(t, gw, 0)
		apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides?source=1&destination=2", "", ""), apiAnswer{Code: 204})
		apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides/1", "", ""), apiAnswer{Code: 204})
	})

	// U1, in order: "taken" needs "created".
	t.Run("U1 create user", func(t *testing.T) {
		tests := []struct {
			name, body, contentType string
			want                    apiAnswer
		}{
			{"created", apiUserBody("alice", apiPW), "application/json", apiAnswer{Code: 201, Body: `{}`}},
			{"created with upper-case hex", apiUserBody("bob", apiPWUpper), "", apiAnswer{Code: 201, Body: `{}`}},
			{"created from form fields", "username=carol&password=" + apiPW, apiForm, apiAnswer{Code: 201, Body: `{}`}},
			{"names are case-sensitive", apiUserBody("Alice", apiPW), "", apiAnswer{Code: 201, Body: `{}`}},
			{"taken", apiUserBody("alice", apiPW), "", apiAnswer{Code: 400, Body: `{"error":"username already taken"}`}},
			{"taken with another password", apiUserBody("alice", apiPWUpper), "", apiAnswer{Code: 400, Body: `{"error":"username already taken"}`}},
			{"taken via form", "username=carol&password=" + apiPW, apiForm, apiAnswer{Code: 400, Body: `{"error":"username already taken"}`}},
			{"empty username", apiUserBody("", apiPW), "", apiAnswer{Code: 400, Body: `{"error":"username must not be empty"}`}},
			{"password of 39 digits", apiUserBody("dave", apiPW[:39]), "", apiAnswer{Code: 400, Body: `{"error":"password must be exactly 40 hexadecimal digits (a SHA-1 hash)"}`}},
			{"password of 41 digits", apiUserBody("dave", apiPW+"0"), "", apiAnswer{Code: 400, Body: `{"error":"password must be exactly 40 hexadecimal digits (a SHA-1 hash)"}`}},
			{"password not hex", apiUserBody("dave", apiPW[:39]+"g"), "", apiAnswer{Code: 400, Body: `{"error":"password must be exactly 40 hexadecimal digits (a SHA-1 hash)"}`}},
			{"password empty", apiUserBody("dave", ""), "", apiAnswer{Code: 400, Body: `{"error":"password must be exactly 40 hexadecimal digits (a SHA-1 hash)"}`}},
			{"missing password", `{"username":"dave"}`, "", apiAnswer{Code: 400, Body: `{"error":"missing field \"password\""}`}},
			{"missing username", `{"password":"` + apiPW + `"}`, "", apiAnswer{Code: 400, Body: `{"error":"missing field \"username\""}`}},
			{"unknown field", `{"username":"dave","password":"` + apiPW + `","admin":true}`, "", apiAnswer{Code: 400, Body: `{"error":"unknown field \"admin\" (expected \"username\", \"password\")"}`}},
			{"unknown form field", "username=dave&password=" + apiPW + "&admin=1", apiForm, apiAnswer{Code: 400, Body: `{"error":"unknown field \"admin\" (expected \"username\", \"password\")"}`}},
			{"repeated form field", "username=dave&username=eve&password=" + apiPW, apiForm, apiAnswer{Code: 400, Body: `{"error":"field \"username\" given more than once"}`}},
			{"repeated JSON field", `{"username":"dave","username":"eve","password":"` + apiPW + `"}`, "", apiAnswer{Code: 400, Body: `{"error":"field \"username\" given more than once"}`}},
			{"username not a string", `{"username":7,"password":"` + apiPW + `"}`, "", apiAnswer{Code: 400, Body: `{"error":"field \"username\" must be a string, not a number"}`}},
			{"password null", `{"username":"dave","password":null}`, "", apiAnswer{Code: 400, Body: `{"error":"field \"password\" must be a string, not null"}`}},
			{"malformed JSON", `{"username":"dave",`, "", apiAnswer{Code: 400, Body: `{"error":"malformed JSON: unexpected end of the body"}`}},
			{"trailing garbage", apiUserBody("dave", apiPW) + `garbage`, "", apiAnswer{Code: 400, Body: `{"error":"unexpected data after the JSON object"}`}},
			{"empty body", ``, "", apiAnswer{Code: 400, Body: `{"error":"empty body: expected a JSON object"}`}},
			{"array body", `[]`, "", apiAnswer{Code: 400, Body: `{"error":"the body must be a JSON object"}`}},
			{"oversized body", apiUserBody(strings.Repeat("d", 70000), apiPW), "", apiAnswer{Code: 413, Body: apiErrTooBig}},
			{"form with a charset", "username=dave&password=" + apiPW[:39], apiForm + "; charset=UTF-8", apiAnswer{Code: 400, Body: `{"error":"password must be exactly 40 hexadecimal digits (a SHA-1 hash)"}`}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				apiCheck(t, apiDo(t, "PUT", gw+"/api/v1/users", tt.body, tt.contentType), tt.want)
			})
		}
		// SPEC §4: the password is never returned by any API, not even inside the reason of a
		// refusal. A JSON body sent with the form Content-Type is one field whose name is the
		// whole body.
		t.Run("a refusal never echoes the password", func(t *testing.T) {
			const secret = "0123456789abcdef0123456789abcdef01234567"
			for _, tt := range []struct{ body, contentType string }{
				{apiUserBody("alice", secret), ""},                  // taken
				{apiUserBody("dave", secret+"0"), ""},               // too long
				{apiUserBody("dave", secret[:39]+"z"), ""},          // not hex
				{apiUserBody("dave", secret) + "x", ""},             // trailing data
				{`{"username":"dave","password":"` + secret, ""},    // malformed
				{"username=dave&password=" + secret + "0", apiForm}, // too long, as a form
				{apiUserBody("dave", secret), apiForm},              // JSON sent as a form
			} {
				got := apiDo(t, "PUT", gw+"/api/v1/users", tt.body, tt.contentType)
				if got.Code != 400 {
					t.Errorf("%s (%s): %+v", tt.body, tt.contentType, got)
				}
				if strings.Contains(strings.ToLower(got.Body), secret[:39]) {
					t.Errorf("PUT /api/v1/users %s (Content-Type %q) answered %d with the password in it: %s", tt.body, tt.contentType, got.Code, got.Body)
				}
			}
		})
		t.Run("oversized chunked body", func(t *testing.T) {
			got, _ := apiSend(t, apiRequest{method: "PUT", url: gw + "/api/v1/users", body: apiUserBody(strings.Repeat("e", 70000), apiPW), chunked: true})
			apiCheck(t, got, apiAnswer{Code: 413, Body: apiErrTooBig})
		})
		t.Run("only the valid ones stored, in creation order", func(t *testing.T) {
			apiUsersAre(t, gw, "alice", "bob", "carol", "Alice")
		})
	})

	t.Run("gateway routes nothing else", func(t *testing.T) {
		for _, tt := range []struct{ method, path string }{
			{"GET", "/"}, {"GET", "/api/v1/_count"}, {"DELETE", "/api/v1/_count"}, {"POST", "/api/v1/db/clear"},
			{"GET", "/api/v1/usersx"}, {"GET", "/api/v1/ridesharing"}, {"GET", "/api/v2/users"},
			{"POST", "/api/v1/db/write"}, {"POST", "/api/v1/db/read"}, {"GET", "/api/v1/worker/list"},
			{"POST", "/api/v1/crash/master"}, {"GET", "/users"}, {"GET", "/api/v1"},
		} {
			t.Run(tt.method+" "+tt.path+" is 404", func(t *testing.T) {
				apiCheck(t, apiDo(t, tt.method, gw+tt.path, "", ""), apiAnswer{Code: 404, Body: `{"error":"no such path: ` + tt.path + `"}`})
			})
		}
		t.Run("dot segments do not walk out of a route", func(t *testing.T) {
			for _, path := range []string{
				"/api/v1/users/../db/clear", "/api/v1/users/%2e%2e/db/clear", "/api/v1/users/..%2Fdb%2Fclear",
				"/api/v1/rides/../../api/v1/db/clear", "/api/v1/rides/%2E%2E%2Fdb%2Fclear", "/api/v1/users/../_count",
			} {
				for _, method := range []string{"POST", "DELETE"} {
					if got := apiDo(t, method, gw+path, "", ""); got.Code < 400 || got.Code >= 500 {
						t.Errorf("%s %s: %+v", method, path, got)
					}
				}
			}
		})
		t.Run("nothing cleared", func(t *testing.T) { apiUsersAre(t, gw, "alice", "bob", "carol", "Alice") })
	})

	t.Run("U4 get user", func(t *testing.T) {
		tests := []struct {
			name, path string
			want       apiAnswer
		}{
			{"found", "/api/v1/users/alice", apiAnswer{Code: 200, Body: `{"username":"alice"}`}},
			{"found, other case", "/api/v1/users/Alice", apiAnswer{Code: 200, Body: `{"username":"Alice"}`}},
			{"case-sensitive", "/api/v1/users/ALICE", apiAnswer{Code: 404, Body: `{"error":"no such user"}`}},
			{"missing", "/api/v1/users/nobody", apiAnswer{Code: 404, Body: `{"error":"no such user"}`}},
			{"extra segment is no route", "/api/v1/users/alice/rides", apiAnswer{Code: 404, Body: `{"error":"no such path: /api/v1/users/alice/rides"}`}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) { apiCheck(t, apiDo(t, "GET", gw+tt.path, "", ""), tt.want) })
		}
	})

	t.Run("users 405s carry Allow", func(t *testing.T) {
		for _, tt := range []struct{ base, method, path, allow string }{
			{gw, "POST", "/api/v1/users", "GET, PUT"},
			{gw, "DELETE", "/api/v1/users", "GET, PUT"},
			{gw, "PATCH", "/api/v1/users", "GET, PUT"},
			{gw, "PROPFIND", "/api/v1/users", "GET, PUT"},
			{gw, "PUT", "/api/v1/users/alice", "DELETE, GET"},
			{gw, "POST", "/api/v1/users/alice", "DELETE, GET"},
			{gw, "PATCH", "/api/v1/users/alice", "DELETE, GET"},
			{st.UsersURL, "GET", "/api/v1/db/clear", "POST"},
			{st.UsersURL, "DELETE", "/api/v1/db/clear", "POST"},
			{st.UsersURL, "PUT", "/api/v1/db/clear", "POST"},
			{st.UsersURL, "POST", "/api/v1/_count", "DELETE, GET"},
			{st.UsersURL, "PUT", "/api/v1/_count", "DELETE, GET"},
		} {
			t.Run(tt.method+" "+tt.path, func(t *testing.T) {
				apiCheck(t, apiDo(t, tt.method, tt.base+tt.path, "", ""), api405(tt.method, tt.allow))
			})
		}
		t.Run("nothing changed", func(t *testing.T) { apiUsersAre(t, gw, "alice", "bob", "carol", "Alice") })
	})

	// R1, in order: the Location ids count up from 1 on a fresh database.
	leap := "29-02-2028:59-59-23"
	t.Run("R1 create ride", func(t *testing.T) {
		created := func(id int) apiAnswer {
			return apiAnswer{Code: 201, Body: `{}`, Location: fmt.Sprintf("/api/v1/rides/%d", id)}
		}
		tests := []struct {
			name, body, contentType string
			want                    apiAnswer
		}{
			{"created", apiRideBody("alice", apiFuture, 1, 2), "application/json", created(1)},
			{"created from decimal strings", apiRideBody("alice", apiFuture, "3", "4"), "", created(2)},
			{"created from form fields", "created_by=alice&timestamp=" + apiFuture + "&source=198&destination=1", apiForm, created(3)},
			{"created in the past", apiRideBody("bob", "01-01-2000:00-00-00", 1, 2), "", created(4)},
			{"created on a leap day, number and string mixed", apiRideBody("carol", leap, 2, "1"), "", created(5)},
			{"user does not exist", apiRideBody("nobody", apiFuture, 1, 2), "", apiAnswer{Code: 400, Body: apiErrNoUser}},
			{"user name is case-sensitive", apiRideBody("ALICE", apiFuture, 1, 2), "", apiAnswer{Code: 400, Body: apiErrNoUser}},
			{"empty creator", apiRideBody("", apiFuture, 1, 2), "", apiAnswer{Code: 400, Body: `{"error":"created_by must not be empty"}`}},
			{"creator not a string", `{"created_by":1,"timestamp":"` + apiFuture + `","source":1,"destination":2}`, "", apiAnswer{Code: 400, Body: `{"error":"field \"created_by\" must be a string, not a number"}`}},
			{"31 February", apiRideBody("alice", "31-02-2030:00-00-00", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"29 February of a common year", apiRideBody("alice", "29-02-2027:00-00-00", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"29 February 2100", apiRideBody("alice", "29-02-2100:00-00-00", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"31 April", apiRideBody("alice", "31-04-2030:00-00-00", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"day 00", apiRideBody("alice", "00-08-2030:00-00-00", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"month 13", apiRideBody("alice", "21-13-2030:00-00-00", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"second 60", apiRideBody("alice", "21-08-2030:60-00-00", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"minute 60", apiRideBody("alice", "21-08-2030:00-60-00", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"hour 24", apiRideBody("alice", "21-08-2030:00-00-24", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"short day", apiRideBody("alice", "1-08-2030:00-00-00", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"hours first", apiRideBody("alice", "21-08-2030:14-30-00", 1, 2), "", apiAnswer{Code: 201, Body: `{}`, Location: "/api/v1/rides/6"}},
			{"ISO timestamp", apiRideBody("alice", "2030-08-21T00:00:00Z", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"empty timestamp", apiRideBody("alice", "", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"trailing space in timestamp", apiRideBody("alice", apiFuture+" ", 1, 2), "", apiAnswer{Code: 400, Body: apiErrTimestamp}},
			{"timestamp not a string", `{"created_by":"alice","timestamp":1,"source":1,"destination":2}`, "", apiAnswer{Code: 400, Body: `{"error":"field \"timestamp\" must be a string, not a number"}`}},
			{"area 0", apiRideBody("alice", apiFuture, 0, 2), "", apiAnswer{Code: 400, Body: `{"error":"source must be an area id from 1 to 198"}`}},
			{"area 199", apiRideBody("alice", apiFuture, 1, 199), "", apiAnswer{Code: 400, Body: `{"error":"destination must be an area id from 1 to 198"}`}},
			{"area \"199\"", apiRideBody("alice", apiFuture, "199", 1), "", apiAnswer{Code: 400, Body: `{"error":"source must be an area id from 1 to 198"}`}},
			{"negative area", apiRideBody("alice", apiFuture, -1, 2), "", apiAnswer{Code: 400, Body: `{"error":"source must be an area id from 1 to 198"}`}},
			{"fractional area", `{"created_by":"alice","timestamp":"` + apiFuture + `","source":2.5,"destination":2}`, "", apiAnswer{Code: 400, Body: `{"error":"field \"source\" must be an integer (2 or \"2\")"}`}},
			{"exponent area", `{"created_by":"alice","timestamp":"` + apiFuture + `","source":1e1,"destination":2}`, "", apiAnswer{Code: 400, Body: `{"error":"field \"source\" must be an integer (2 or \"2\")"}`}},
			{"area letters", apiRideBody("alice", apiFuture, "abc", 2), "", apiAnswer{Code: 400, Body: `{"error":"field \"source\" must be an integer (2 or \"2\")"}`}},
			{"area \" 2\"", apiRideBody("alice", apiFuture, 1, " 2"), "", apiAnswer{Code: 400, Body: `{"error":"field \"destination\" must be an integer (2 or \"2\")"}`}},
			{"area empty string", apiRideBody("alice", apiFuture, 1, ""), "", apiAnswer{Code: 400, Body: `{"error":"field \"destination\" must be an integer (2 or \"2\")"}`}},
			{"area null", apiRideBody("alice", apiFuture, nil, 2), "", apiAnswer{Code: 400, Body: `{"error":"field \"source\" must be an integer (2 or \"2\"), not null"}`}},
			{"area boolean", apiRideBody("alice", apiFuture, 1, true), "", apiAnswer{Code: 400, Body: `{"error":"field \"destination\" must be an integer (2 or \"2\"), not a boolean"}`}},
			{"source equals destination", apiRideBody("alice", apiFuture, 7, "7"), "", apiAnswer{Code: 400, Body: `{"error":"source and destination must differ"}`}},
			{"missing field", `{"created_by":"alice","timestamp":"` + apiFuture + `","source":1}`, "", apiAnswer{Code: 400, Body: `{"error":"missing field \"destination\""}`}},
			{"unknown field", `{"created_by":"alice","timestamp":"` + apiFuture + `","source":1,"destination":2,"seats":4}`, "", apiAnswer{Code: 400, Body: `{"error":"unknown field \"seats\" (expected \"created_by\", \"timestamp\", \"source\", \"destination\")"}`}},
			{"rideId set by the client", `{"rideId":99,"created_by":"alice","timestamp":"` + apiFuture + `","source":1,"destination":2}`, "", apiAnswer{Code: 400, Body: `{"error":"unknown field \"rideId\" (expected \"created_by\", \"timestamp\", \"source\", \"destination\")"}`}},
			{"malformed JSON", `{"created_by":"alice",`, "", apiAnswer{Code: 400, Body: `{"error":"malformed JSON: unexpected end of the body"}`}},
			{"trailing garbage", apiRideBody("alice", apiFuture, 1, 2) + ` {}`, "", apiAnswer{Code: 400, Body: `{"error":"unexpected data after the JSON object"}`}},
			{"empty body", ``, "", apiAnswer{Code: 400, Body: `{"error":"empty body: expected a JSON object"}`}},
			{"form missing field", "created_by=alice&timestamp=" + apiFuture + "&source=1", apiForm, apiAnswer{Code: 400, Body: `{"error":"missing field \"destination\""}`}},
			{"form bad area", "created_by=alice&timestamp=" + apiFuture + "&source=1&destination=0", apiForm, apiAnswer{Code: 400, Body: `{"error":"destination must be an area id from 1 to 198"}`}},
			{"oversized body", apiRideBody(strings.Repeat("a", 70000), apiFuture, 1, 2), "", apiAnswer{Code: 413, Body: apiErrTooBig}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				apiCheck(t, apiDo(t, "POST", gw+"/api/v1/rides", tt.body, tt.contentType), tt.want)
			})
		}
		t.Run("stored as given", func(t *testing.T) {
			apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides/2", "", ""), apiAnswer{Code: 200, Body: apiRideJSON(2, "alice", nil, apiFuture, 3, 4)})
			apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides/3", "", ""), apiAnswer{Code: 200, Body: apiRideJSON(3, "alice", nil, apiFuture, 198, 1)})
			apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides/5", "", ""), apiAnswer{Code: 200, Body: apiRideJSON(5, "carol", nil, leap, 2, 1)})
			apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides/6", "", ""), apiAnswer{Code: 200, Body: apiRideJSON(6, "alice", nil, "21-08-2030:14-30-00", 1, 2)})
		})
		apiRideCount(t, gw, 6)
	})

	// R2 with the real clock: rides an hour or days away from now, on areas no other
	// subtest uses.
	t.Run("R2 upcoming rides", func(t *testing.T) {
		pastHour, pastDays := apiStamp(now.Add(-time.Hour)), apiStamp(now.Add(-49*time.Hour))
		day, twoDays := apiStamp(now.Add(24*time.Hour)), apiStamp(now.Add(48*time.Hour))
		inAnHour := apiStamp(now.Add(time.Hour))
		past := apiMustRide(t, gw, "bob", pastHour, 50, 60)
		later := apiMustRide(t, gw, "alice", twoDays, 50, 60)
		soon := apiMustRide(t, gw, "bob", day, 50, 60)
		tie := apiMustRide(t, gw, "alice", twoDays, "50", "60")
		soonest := apiMustRide(t, gw, "carol", inAnHour, 50, 60)
		back := apiMustRide(t, gw, "alice", day, 60, 50)
		other := apiMustRide(t, gw, "alice", day, 50, 61)
		onlyPast := apiMustRide(t, gw, "bob", pastDays, 70, 71)
		if past != 7 || onlyPast != 14 {
			t.Fatalf("rides got ids %d…%d, want 7…14", past, onlyPast)
		}
		entry := func(id int64, user, stamp string) string {
			return fmt.Sprintf(`{"rideId":%d,"username":%s,"timestamp":%s}`, id, apiQuote(user), apiQuote(stamp))
		}
		upcoming := "[" + strings.Join([]string{entry(soonest, "carol", inAnHour), entry(soon, "bob", day),
			entry(later, "alice", twoDays), entry(tie, "alice", twoDays)}, ",") + "]"
		tests := []struct {
			name, query string
			want        apiAnswer
		}{
			{"upcoming only, earliest first, ties by id", "?source=50&destination=60", apiAnswer{Code: 200, Body: upcoming}},
			{"parameters in any order", "?destination=60&source=50", apiAnswer{Code: 200, Body: upcoming}},
			{"leading zeros", "?source=050&destination=0060", apiAnswer{Code: 200, Body: upcoming}},
			{"unknown parameters ignored", "?source=50&destination=60&_=123", apiAnswer{Code: 200, Body: upcoming}},
			{"other direction", "?source=60&destination=50", apiAnswer{Code: 200, Body: "[" + entry(back, "alice", day) + "]"}},
			{"other destination", "?source=50&destination=61", apiAnswer{Code: 200, Body: "[" + entry(other, "alice", day) + "]"}},
			{"none is 204", "?source=150&destination=151", apiAnswer{Code: 204}},
			{"only past rides is 204", "?source=70&destination=71", apiAnswer{Code: 204}},
			{"areas 1 and 198 are valid", "?source=198&destination=1", apiAnswer{Code: 200, Body: "[" + entry(3, "alice", apiFuture) + "]"}},
			{"missing source", "?destination=2", apiAnswer{Code: 400, Body: `{"error":"missing query parameter \"source\""}`}},
			{"missing destination", "?source=1", apiAnswer{Code: 400, Body: `{"error":"missing query parameter \"destination\""}`}},
			{"no query", "", apiAnswer{Code: 400, Body: `{"error":"missing query parameter \"source\""}`}},
			{"empty source", "?source=&destination=2", apiAnswer{Code: 400, Body: `{"error":"query parameter \"source\" must be an integer (2 or \"2\")"}`}},
			{"letters", "?source=1&destination=abc", apiAnswer{Code: 400, Body: `{"error":"query parameter \"destination\" must be an integer (2 or \"2\")"}`}},
			{"fraction", "?source=1.5&destination=2", apiAnswer{Code: 400, Body: `{"error":"query parameter \"source\" must be an integer (2 or \"2\")"}`}},
			{"injection-looking value", "?source=1%20OR%201%3D1&destination=2", apiAnswer{Code: 400, Body: `{"error":"query parameter \"source\" must be an integer (2 or \"2\")"}`}},
			{"area 0", "?source=0&destination=2", apiAnswer{Code: 400, Body: `{"error":"source must be an area id from 1 to 198"}`}},
			{"area 199", "?source=1&destination=199", apiAnswer{Code: 400, Body: `{"error":"destination must be an area id from 1 to 198"}`}},
			{"same area", "?source=4&destination=4", apiAnswer{Code: 400, Body: `{"error":"source and destination must differ"}`}},
			{"repeated", "?source=1&source=2&destination=3", apiAnswer{Code: 400, Body: `{"error":"query parameter \"source\" given more than once"}`}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides"+tt.query, "", ""), tt.want)
			})
		}
		apiRideCount(t, gw, 14)
	})

	// R4 on ride 1 (alice's).
	t.Run("R4 join ride", func(t *testing.T) {
		tests := []struct {
			name, id, body, contentType string
			want                        apiAnswer
		}{
			{"joined", "1", `{"username":"bob"}`, "", apiAnswer{Code: 200, Body: `{}`}},
			{"joined from a form", "1", "username=carol", apiForm, apiAnswer{Code: 200, Body: `{}`}},
			{"joined with a leading zero id", "01", `{"username":"Alice"}`, "", apiAnswer{Code: 200, Body: `{}`}},
			{"already in the ride", "1", `{"username":"bob"}`, "", apiAnswer{Code: 400, Body: `{"error":"user already joined this ride"}`}},
			{"creator cannot join", "1", `{"username":"alice"}`, "", apiAnswer{Code: 400, Body: `{"error":"user created this ride and cannot join it"}`}},
			{"user does not exist", "1", `{"username":"nobody"}`, "", apiAnswer{Code: 400, Body: apiErrNoUser}},
			{"no such ride is 204", "999999", `{"username":"bob"}`, "", apiAnswer{Code: 204}},
			{"no such ride nor user is 400", "999999", `{"username":"nobody"}`, "", apiAnswer{Code: 400, Body: apiErrNoUser}},
			{"bad rideId", "x", `{"username":"bob"}`, "", apiAnswer{Code: 400, Body: apiErrRideID}},
			{"zero rideId", "0", `{"username":"bob"}`, "", apiAnswer{Code: 400, Body: apiErrRideID}},
			{"negative rideId", "-1", `{"username":"bob"}`, "", apiAnswer{Code: 400, Body: apiErrRideID}},
			{"empty username", "1", `{"username":""}`, "", apiAnswer{Code: 400, Body: `{"error":"username must not be empty"}`}},
			{"username not a string", "1", `{"username":["bob"]}`, "", apiAnswer{Code: 400, Body: `{"error":"field \"username\" must be a string, not an array"}`}},
			{"missing username", "1", `{}`, "", apiAnswer{Code: 400, Body: `{"error":"missing field \"username\""}`}},
			{"unknown field", "1", `{"username":"bob","seat":2}`, "", apiAnswer{Code: 400, Body: `{"error":"unknown field \"seat\" (expected \"username\")"}`}},
			{"empty body", "1", ``, "", apiAnswer{Code: 400, Body: `{"error":"empty body: expected a JSON object"}`}},
			{"trailing garbage", "1", `{"username":"bob"}]`, "", apiAnswer{Code: 400, Body: `{"error":"unexpected data after the JSON object"}`}},
			{"oversized body", "1", `{"username":"` + strings.Repeat("d", 1<<17) + `"}`, "", apiAnswer{Code: 413, Body: apiErrTooBig}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				apiCheck(t, apiDo(t, "POST", gw+"/api/v1/rides/"+tt.id, tt.body, tt.contentType), tt.want)
			})
		}
	})

	t.Run("R3 get ride", func(t *testing.T) {
		ride1 := apiRideJSON(1, "alice", []string{"Alice", "bob", "carol"}, apiFuture, 1, 2)
		tests := []struct {
			name, id string
			want     apiAnswer
		}{
			{"with riders by name", "1", apiAnswer{Code: 200, Body: ride1}},
			{"leading zero", "0001", apiAnswer{Code: 200, Body: ride1}},
			{"without riders, in the past", "4", apiAnswer{Code: 200, Body: apiRideJSON(4, "bob", nil, "01-01-2000:00-00-00", 1, 2)}},
			{"no such ride is 204", "999999", apiAnswer{Code: 204}},
			{"zero", "0", apiAnswer{Code: 400, Body: apiErrRideID}},
			{"negative", "-1", apiAnswer{Code: 400, Body: apiErrRideID}},
			{"letters", "abc", apiAnswer{Code: 400, Body: apiErrRideID}},
			{"fraction", "1.5", apiAnswer{Code: 400, Body: apiErrRideID}},
			{"plus sign", "+1", apiAnswer{Code: 400, Body: apiErrRideID}},
			{"too large", "99999999999999999999", apiAnswer{Code: 400, Body: apiErrRideID}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides/"+tt.id, "", ""), tt.want)
			})
		}
	})

	t.Run("R5 delete ride, ids never reused", func(t *testing.T) {
		a := apiMustRide(t, gw, "bob", apiFuture, 1, 2)
		b := apiMustRide(t, gw, "bob", apiFuture, 1, 2)
		if a != 15 || b != 16 {
			t.Fatalf("ids %d %d, want 15 16", a, b)
		}
		apiCheck(t, apiDo(t, "POST", gw+apiRidePath(a), `{"username":"Alice"}`, ""), apiAnswer{Code: 200, Body: `{}`})
		tests := []struct {
			name, id string
			want     apiAnswer
		}{
			{"deleted", "15", apiAnswer{Code: 200, Body: `{}`}},
			{"second delete is 400", "15", apiAnswer{Code: 400, Body: `{"error":"no such ride"}`}},
			{"never existed is 400", "999999", apiAnswer{Code: 400, Body: `{"error":"no such ride"}`}},
			{"bad rideId", "one", apiAnswer{Code: 400, Body: apiErrRideID}},
			{"zero rideId", "0", apiAnswer{Code: 400, Body: apiErrRideID}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				apiCheck(t, apiDo(t, "DELETE", gw+"/api/v1/rides/"+tt.id, "", ""), tt.want)
			})
		}
		t.Run("gone with its joins", func(t *testing.T) {
			apiCheck(t, apiDo(t, "GET", gw+apiRidePath(a), "", ""), apiAnswer{Code: 204})
			apiCheck(t, apiDo(t, "POST", gw+apiRidePath(a), `{"username":"Alice"}`, ""), apiAnswer{Code: 204})
			rows, _ := apiDBRead(t, st, `{"table":"ride_users","where":{"ride_id":15}}`, nil)
			if len(rows) != 0 {
				t.Fatalf("joins of a deleted ride left: %v", rows)
			}
			apiRideCount(t, gw, 15)
		})
		t.Run("the highest id deleted is not reused", func(t *testing.T) {
			apiCheck(t, apiDo(t, "DELETE", gw+apiRidePath(b), "", ""), apiAnswer{Code: 200, Body: `{}`})
			if c := apiMustRide(t, gw, "bob", apiFuture, 1, 2); c != 17 {
				t.Fatalf("new ride got id %d, want 17", c)
			}
			apiRideCount(t, gw, 15)
		})
	})

	t.Run("rides 405s carry Allow", func(t *testing.T) {
		for _, tt := range []struct{ base, method, path, allow string }{
			{gw, "PUT", "/api/v1/rides", "GET, POST"},
			{gw, "DELETE", "/api/v1/rides", "GET, POST"},
			{gw, "PATCH", "/api/v1/rides", "GET, POST"},
			{gw, "PROPFIND", "/api/v1/rides", "GET, POST"},
			{gw, "PUT", "/api/v1/rides/1", "DELETE, GET, POST"},
			{gw, "PATCH", "/api/v1/rides/1", "DELETE, GET, POST"},
			{gw, "POST", "/api/v1/rides/count", "GET"},
			{gw, "DELETE", "/api/v1/rides/count", "GET"},
			{gw, "PUT", "/api/v1/rides/count", "GET"},
			{st.RidesURL, "GET", "/api/v1/db/clear", "POST"},
			{st.RidesURL, "DELETE", "/api/v1/db/clear", "POST"},
			{st.RidesURL, "POST", "/api/v1/_count", "DELETE, GET"},
			{st.RidesURL, "PUT", "/api/v1/_count", "DELETE, GET"},
		} {
			t.Run(tt.method+" "+tt.path, func(t *testing.T) {
				apiCheck(t, apiDo(t, tt.method, tt.base+tt.path, "", ""), api405(tt.method, tt.allow))
			})
		}
		t.Run("nothing changed", func(t *testing.T) {
			apiRideCount(t, gw, 15)
			apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides/1", "", ""), apiAnswer{Code: 200, Body: apiRideJSON(1, "alice", []string{"Alice", "bob", "carol"}, apiFuture, 1, 2)})
		})
	})

	t.Run("U2 user deletion cascades in one write", func(t *testing.T) {
		for _, u := range []string{"dave", "erin", "frank"} {
			apiMustUser(t, gw, u)
		}
		byDave := apiMustRide(t, gw, "dave", apiFuture, 1, 2) // 18
		byErin := apiMustRide(t, gw, "erin", apiFuture, 1, 2) // 19, joined by dave and frank
		for _, j := range []struct {
			ride int64
			user string
		}{{byErin, "dave"}, {byErin, "frank"}, {byDave, "frank"}, {1, "dave"}} {
			apiCheck(t, apiDo(t, "POST", gw+apiRidePath(j.ride), `{"username":"`+j.user+`"}`, ""), apiAnswer{Code: 200, Body: `{}`})
		}
		apiRideCount(t, gw, 17)
		_, before := apiDBRead(t, st, `{"table":"users","count":true}`, nil)
		apiCheck(t, apiDo(t, "DELETE", gw+"/api/v1/users/dave", "", ""), apiAnswer{Code: 200, Body: `{}`})
		_, after := apiDBRead(t, st, `{"table":"users","count":true}`, nil)
		t.Run("one write in the log", func(t *testing.T) {
			if after != before+1 {
				t.Fatalf("the sync log moved from %d to %d for one user deletion, want one entry", before, after)
			}
		})
		t.Run("their ride is gone", func(t *testing.T) {
			apiCheck(t, apiDo(t, "GET", gw+apiRidePath(byDave), "", ""), apiAnswer{Code: 204})
			apiRideCount(t, gw, 16)
		})
		t.Run("their joins are gone", func(t *testing.T) {
			apiCheck(t, apiDo(t, "GET", gw+apiRidePath(byErin), "", ""), apiAnswer{Code: 200, Body: apiRideJSON(byErin, "erin", []string{"frank"}, apiFuture, 1, 2)})
			apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides/1", "", ""), apiAnswer{Code: 200, Body: apiRideJSON(1, "alice", []string{"Alice", "bob", "carol"}, apiFuture, 1, 2)})
			for _, q := range []string{
				`{"table":"ride_users","where":{"username":"dave"}}`,
				`{"table":"ride_users","where":{"ride_id":` + strconv.FormatInt(byDave, 10) + `}}`,
				`{"table":"rides","where":{"created_by":"dave"}}`,
				`{"table":"users","where":{"username":"dave"}}`,
			} {
				if rows, _ := apiDBRead(t, st, q, nil); len(rows) != 0 {
					t.Errorf("%s: rows left %v", q, rows)
				}
			}
		})
		t.Run("deleted user can neither create nor join", func(t *testing.T) {
			apiCheck(t, apiDo(t, "POST", gw+"/api/v1/rides", apiRideBody("dave", apiFuture, 1, 2), ""), apiAnswer{Code: 400, Body: apiErrNoUser})
			apiCheck(t, apiDo(t, "POST", gw+apiRidePath(byErin), `{"username":"dave"}`, ""), apiAnswer{Code: 400, Body: apiErrNoUser})
			apiCheck(t, apiDo(t, "GET", gw+"/api/v1/users/dave", "", ""), apiAnswer{Code: 404, Body: `{"error":"no such user"}`})
		})
		t.Run("second delete is 400", func(t *testing.T) {
			apiCheck(t, apiDo(t, "DELETE", gw+"/api/v1/users/dave", "", ""), apiAnswer{Code: 400, Body: `{"error":"no such user"}`})
			apiCheck(t, apiDo(t, "DELETE", gw+"/api/v1/users/nobody", "", ""), apiAnswer{Code: 400, Body: `{"error":"no such user"}`})
			apiCheck(t, apiDo(t, "DELETE", gw+"/api/v1/users/ALICE", "", ""), apiAnswer{Code: 400, Body: `{"error":"no such user"}`})
		})
		t.Run("name can be taken again, old rides stay gone", func(t *testing.T) {
			apiMustUser(t, gw, "dave")
			apiCheck(t, apiDo(t, "GET", gw+apiRidePath(byDave), "", ""), apiAnswer{Code: 204})
			apiUsersAre(t, gw, "alice", "bob", "carol", "Alice", "erin", "frank", "dave")
		})
	})

	t.Run("injection-looking and awkward names are plain data", func(t *testing.T) {
		names := []string{
			"'; DROP TABLE users;--",
			`Robert"); DELETE FROM rides;--`,
			"a/b %?#",
			"Zoë 🚗",
			"%",
			"<script>&amp;",
			"x' OR '1'='1",
			"..", ".", " ", "%2F", "x/%41", "a+b", "a;b,c=d&e", "nul\x00byte", "123", "1e5", "true", "null",
		}
		for _, n := range names {
			apiMustUser(t, gw, n)
		}
		evil := names[0]
		id := apiMustRide(t, gw, evil, apiFuture, 1, 2) // 20
		for _, n := range names[1:] {
			apiCheck(t, apiDo(t, "POST", gw+apiRidePath(id), `{"username":`+apiQuote(n)+`}`, ""), apiAnswer{Code: 200, Body: `{}`})
		}
		t.Run("each found by its own name", func(t *testing.T) {
			for _, n := range names {
				apiCheck(t, apiDo(t, "GET", gw+apiUserPath(n), "", ""), apiAnswer{Code: 200, Body: `{"username":` + apiQuote(n) + `}`})
			}
			apiCheck(t, apiDo(t, "GET", gw+apiUserPath("x' OR '1'='2"), "", ""), apiAnswer{Code: 404, Body: `{"error":"no such user"}`})
		})
		t.Run("the ride kept the names", func(t *testing.T) {
			riders := slices.Clone(names[1:])
			slices.Sort(riders) // by name, in byte order
			apiCheck(t, apiDo(t, "GET", gw+apiRidePath(id), "", ""), apiAnswer{Code: 200, Body: apiRideJSON(id, evil, riders, apiFuture, 1, 2)})
		})
		t.Run("every user intact", func(t *testing.T) {
			apiUsersAre(t, gw, append([]string{"alice", "bob", "carol", "Alice", "erin", "frank", "dave"}, names...)...)
			apiRideCount(t, gw, 17)
		})
		t.Run("deleted by their names only", func(t *testing.T) {
			for _, n := range names {
				apiCheck(t, apiDo(t, "DELETE", gw+apiUserPath(n), "", ""), apiAnswer{Code: 200, Body: `{}`})
			}
			apiUsersAre(t, gw, "alice", "bob", "carol", "Alice", "erin", "frank", "dave")
			apiCheck(t, apiDo(t, "GET", gw+apiRidePath(id), "", ""), apiAnswer{Code: 204})
			apiRideCount(t, gw, 16)
		})
	})

	t.Run("the password is never returned", func(t *testing.T) {
		var bodies []string
		for _, p := range []string{"/api/v1/users", "/api/v1/users/alice", "/api/v1/users/bob"} {
			bodies = append(bodies, apiDo(t, "GET", gw+p, "", "").Body)
		}
		rows, _ := apiDBRead(t, st, `{"table":"users"}`, nil)
		for _, r := range rows {
			if len(r) != 2 || r["id"] == nil || r["username"] == nil {
				t.Errorf("db/read of users answered columns %v, want id and username only", r)
			}
		}
		b, _ := json.Marshal(rows)
		bodies = append(bodies, string(b))
		all := strings.ToLower(strings.Join(bodies, "\n"))
		if strings.Contains(all, apiPW) || strings.Contains(all, "password") {
			t.Fatalf("a password is in the answers: %s", all)
		}
	})

	t.Run("R7 rides db/clear", func(t *testing.T) {
		apiCheck(t, apiDo(t, "POST", st.RidesURL+"/api/v1/db/clear", "", ""), apiAnswer{Code: 200, Body: `{}`})
		apiRideCount(t, gw, 0)
		apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides/1", "", ""), apiAnswer{Code: 204})
		apiCheck(t, apiDo(t, "GET", gw+"/api/v1/rides?source=50&destination=60", "", ""), apiAnswer{Code: 204})
		if rows, _ := apiDBRead(t, st, `{"table":"ride_users"}`, nil); len(rows) != 0 {
			t.Fatalf("joins left after a rides clear: %v", rows)
		}
		t.Run("users stay", func(t *testing.T) { apiUsersAre(t, gw, "alice", "bob", "carol", "Alice", "erin", "frank", "dave") })
		t.Run("ids not reused after a clear", func(t *testing.T) {
			if id := apiMustRide(t, gw, "alice", apiFuture, 1, 2); id != 21 {
				t.Fatalf("new ride got id %d, want 21", id)
			}
		})
		t.Run("clearing nothing is fine", func(t *testing.T) {
			apiCheck(t, apiDo(t, "POST", st.RidesURL+"/api/v1/db/clear", "", ""), apiAnswer{Code: 200, Body: `{}`})
			apiCheck(t, apiDo(t, "POST", st.RidesURL+"/api/v1/db/clear", "", ""), apiAnswer{Code: 200, Body: `{}`})
			apiRideCount(t, gw, 0)
		})
	})

	t.Run("U5 users db/clear", func(t *testing.T) {
		id := apiMustRide(t, gw, "alice", apiFuture, 1, 2)
		apiCheck(t, apiDo(t, "POST", gw+apiRidePath(id), `{"username":"bob"}`, ""), apiAnswer{Code: 200, Body: `{}`})
		apiCheck(t, apiDo(t, "POST", st.UsersURL+"/api/v1/db/clear", "", ""), apiAnswer{Code: 200, Body: `{}`})
		apiUsersAre(t, gw)
		apiRideCount(t, gw, 0)
		apiCheck(t, apiDo(t, "GET", gw+"/api/v1/users/alice", "", ""), apiAnswer{Code: 404, Body: `{"error":"no such user"}`})
		if rows, _ := apiDBRead(t, st, `{"table":"ride_users"}`, nil); len(rows) != 0 {
			t.Fatalf("joins left after a users clear: %v", rows)
		}
		apiCheck(t, apiDo(t, "POST", st.UsersURL+"/api/v1/db/clear", "", ""), apiAnswer{Code: 200, Body: `{}`})
		t.Run("ids not reused after a users clear", func(t *testing.T) {
			apiMustUser(t, gw, "alice")
			if id := apiMustRide(t, gw, "alice", apiFuture, 1, 2); id != 23 {
				t.Fatalf("new ride got id %d, want 23", id)
			}
		})
		t.Run("ids not reused after the database's own clear", func(t *testing.T) {
			got, _ := apiSend(t, apiRequest{method: "POST", url: st.OrchestratorURL + "/api/v1/db/clear"})
			if got.Code != 200 || strings.TrimSpace(got.Body) != `{}` {
				t.Fatalf("orchestrator db/clear: %+v", got)
			}
			apiUsersAre(t, gw)
			apiMustUser(t, gw, "alice")
			if id := apiMustRide(t, gw, "alice", apiFuture, 1, 2); id != 24 {
				t.Fatalf("new ride got id %d, want 24", id)
			}
		})
	})

	t.Run("concurrent requests keep the contract", func(t *testing.T) {
		const n = 16
		parallel := func(f func(i int) apiAnswer) []apiAnswer {
			out := make([]apiAnswer, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { out[i] = f(i) })
			}
			wg.Wait()
			return out
		}
		tally := func(as []apiAnswer) map[apiAnswer]int {
			m := map[apiAnswer]int{}
			for _, a := range as {
				m[a]++
			}
			return m
		}
		t.Run("one of many creations of a name wins", func(t *testing.T) {
			got := tally(parallel(func(int) apiAnswer { return apiDo(t, "PUT", gw+"/api/v1/users", apiUserBody("racer", apiPW), "") }))
			want := map[apiAnswer]int{{Code: 201, Body: `{}`}: 1, {Code: 400, Body: `{"error":"username already taken"}`}: n - 1}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("answers %v, want %v", got, want)
			}
		})
		var ids []int64
		t.Run("rides created at once get distinct ids", func(t *testing.T) {
			seen := map[string]bool{}
			for _, a := range parallel(func(int) apiAnswer {
				return apiDo(t, "POST", gw+"/api/v1/rides", apiRideBody("alice", apiFuture, 90, 91), "")
			}) {
				if a.Code != 201 || seen[a.Location] {
					t.Fatalf("answer %+v (seen before: %v)", a, seen[a.Location])
				}
				seen[a.Location] = true
				id, _ := strconv.ParseInt(strings.TrimPrefix(a.Location, "/api/v1/rides/"), 10, 64)
				ids = append(ids, id)
			}
			slices.Sort(ids)
			if ids[0] != 25 || ids[n-1] != 25+n-1 {
				t.Fatalf("ids %v, want 25…%d", ids, 25+n-1)
			}
			apiRideCount(t, gw, 1+n)
		})
		t.Run("one of many joins of a user wins", func(t *testing.T) {
			got := tally(parallel(func(int) apiAnswer { return apiDo(t, "POST", gw+apiRidePath(25), `{"username":"racer"}`, "") }))
			want := map[apiAnswer]int{{Code: 200, Body: `{}`}: 1, {Code: 400, Body: `{"error":"user already joined this ride"}`}: n - 1}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("answers %v, want %v", got, want)
			}
			apiCheck(t, apiDo(t, "GET", gw+apiRidePath(25), "", ""), apiAnswer{Code: 200, Body: apiRideJSON(25, "alice", []string{"racer"}, apiFuture, 90, 91)})
		})
		t.Run("each ride deleted once", func(t *testing.T) {
			got := tally(parallel(func(i int) apiAnswer { return apiDo(t, "DELETE", gw+apiRidePath(ids[i/2]), "", "") }))
			want := map[apiAnswer]int{{Code: 200, Body: `{}`}: n / 2, {Code: 400, Body: `{"error":"no such ride"}`}: n / 2}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("answers %v, want %v", got, want)
			}
			apiRideCount(t, gw, 1+n/2)
		})
	})
}

// apiCount reads a service's /api/v1/_count.
func apiCount(tb testing.TB, base string) int {
	tb.Helper()
	got := apiDo(tb, "GET", base+"/api/v1/_count", "", "")
	var n []int
	if got.Code != 200 || json.Unmarshal([]byte(got.Body), &n) != nil || len(n) != 1 {
		tb.Fatalf("GET %s/api/v1/_count: %+v", base, got)
	}
	return n[0]
}

func apiResetCounts(tb testing.TB, st *stack) {
	tb.Helper()
	for _, base := range []string{st.UsersURL, st.RidesURL} {
		apiCheck(tb, apiDo(tb, "DELETE", base+"/api/v1/_count", "", ""), apiAnswer{Code: 200, Body: `{}`})
		if n := apiCount(tb, base); n != 0 {
			tb.Fatalf("%s _count = %d after a reset", base, n)
		}
	}
}

// apiMetric returns the value of the sample whose line starts with series (name and labels,
// labels sorted as the text format writes them), or 0 if there is none.
func apiMetric(tb testing.TB, base, series string) float64 {
	tb.Helper()
	got := apiDo(tb, "GET", base+"/metrics", "", "")
	if got.Code != 200 {
		tb.Fatalf("GET %s/metrics: %d", base, got.Code)
	}
	for _, line := range strings.Split(got.Body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				tb.Fatalf("%s: %q", series, line)
			}
			return f
		}
	}
	return 0
}

// apiMustStack is mustStack for these end-to-end tests (skipped with -short), whose clients
// drop their idle connections before the stack closes. A burst of concurrent requests leaves
// connections that an http.Transport in this process (the test's, the gateway's proxy, the
// services' database clients) dialed but never used; http.Server.Shutdown waits 5 s for such
// a connection, and the stack's Close then fails with "context deadline exceeded" — as
// `rideshare up` does on SIGTERM after a burst of traffic.
func apiMustStack(tb testing.TB, opts ...stackOpt) *stack {
	tb.Helper()
	if testing.Short() {
		tb.Skip("end to end: starts a stack")
	}
	st := mustStack(tb, opts...)
	tb.Cleanup(func() { http.DefaultTransport.(*http.Transport).CloseIdleConnections() })
	return st
}

func TestAPICountArithmetic(t *testing.T) {
	st := apiMustStack(t)
	gw := st.GatewayURL
	apiMustUser(t, gw, "seed")
	apiMustRide(t, gw, "seed", apiFuture, 1, 2)
	apiResetCounts(t, st)

	const checksOK = `rideshare_http_requests_total{code="200",method="GET",route="/api/v1/users/*",service="gateway"}`
	const checks404 = `rideshare_http_requests_total{code="404",method="GET",route="/api/v1/users/*",service="gateway"}`
	okBefore, missingBefore := apiMetric(t, gw, checksOK), apiMetric(t, gw, checks404)

	const n, m, j = 4, 3, 2
	for i := range n {
		apiMustUser(t, gw, fmt.Sprintf("user%d", i))
	}
	var ride int64
	for i := range m {
		ride = apiMustRide(t, gw, "user0", apiFuture, i+1, 100)
	}
	for i := 1; i <= j; i++ {
		apiCheck(t, apiDo(t, "POST", gw+apiRidePath(ride), fmt.Sprintf(`{"username":"user%d"}`, i), ""), apiAnswer{Code: 200, Body: `{}`})
	}
	usersOther := []apiAnswer{ // successful reads, counted too
		apiDo(t, "GET", gw+"/api/v1/users", "", ""),
	}
	usersRejected := []apiAnswer{
		apiDo(t, "POST", gw+"/api/v1/users", "", ""),                                         // 405
		apiDo(t, "PROPFIND", gw+"/api/v1/users", "", ""),                                     // 405
		apiDo(t, "PUT", gw+"/api/v1/users", `{"username":"x"}`, ""),                          // 400
		apiDo(t, "PUT", gw+"/api/v1/users", apiUserBody("user1", apiPW), ""),                 // 400 taken
		apiDo(t, "PUT", gw+"/api/v1/users", apiUserBody(strings.Repeat("u", 70000), ""), ""), // 413
		apiDo(t, "GET", gw+"/api/v1/users/nobody", "", ""),                                   // 404
		apiDo(t, "DELETE", gw+"/api/v1/users/nobody", "", ""),                                // 400
		apiDo(t, "GET", gw+"/api/v1/users/user0/rides", "", ""),                              // 404, unrouted in users
		apiDo(t, "GET", st.UsersURL+"/api/v1/no/such/path", "", ""),                          // 404, unrouted
	}
	ridesRejected := []apiAnswer{
		apiDo(t, "POST", gw+"/api/v1/rides", `{"created_by":"user0"`, ""),                                  // 400 malformed
		apiDo(t, "POST", gw+"/api/v1/rides", apiRideBody("user0", "31-02-2030:00-00-00", 1, 2), ""),        // 400 date
		apiDo(t, "POST", gw+"/api/v1/rides", apiRideBody("user0", apiFuture, 5, 5), ""),                    // 400 same area
		apiDo(t, "POST", gw+"/api/v1/rides", apiRideBody("user0", apiFuture, 0, 5), ""),                    // 400 area
		apiDo(t, "POST", gw+"/api/v1/rides", apiRideBody(strings.Repeat("u", 70000), apiFuture, 1, 2), ""), // 413
		apiDo(t, "PUT", gw+"/api/v1/rides", "", ""),                                                        // 405
		apiDo(t, "POST", gw+"/api/v1/rides/count", "", ""),                                                 // 405
		apiDo(t, "GET", gw+"/api/v1/rides/0", "", ""),                                                      // 400
		apiDo(t, "GET", gw+"/api/v1/rides?source=1", "", ""),                                               // 400
		apiDo(t, "DELETE", gw+"/api/v1/rides/999999", "", ""),                                              // 400
		apiDo(t, "POST", gw+apiRidePath(ride), `{"username":""}`, ""),                                      // 400, no users call
		apiDo(t, "GET", st.RidesURL+"/api/v1/nothing", "", ""),                                             // 404, unrouted
	}
	// Rejected after one users call each: the user check answered 404.
	ridesRejectedByCheck := []apiAnswer{
		apiDo(t, "POST", gw+"/api/v1/rides", apiRideBody("nobody", apiFuture, 1, 2), ""),
		apiDo(t, "POST", gw+apiRidePath(ride), `{"username":"nobody"}`, ""),
	}
	ridesOther := []apiAnswer{ // successful or 204, counted too
		apiDo(t, "GET", gw+"/api/v1/rides/count", "", ""),
		apiDo(t, "GET", gw+"/api/v1/rides/999999", "", ""),
		apiDo(t, "GET", gw+"/api/v1/rides?source=1&destination=100", "", ""),
	}
	for _, a := range append(append(usersRejected, ridesRejected...), ridesRejectedByCheck...) {
		if a.Code < 400 || a.Code >= 500 {
			t.Fatalf("a request meant to be rejected got %+v", a)
		}
	}
	for _, a := range append(usersOther, ridesOther...) {
		if a.Code != 200 && a.Code != 204 {
			t.Fatalf("a request meant to succeed got %+v", a)
		}
	}
	// Never counted: _count itself (any method), db/clear (any method), operational
	// endpoints, and what the gateway does not route.
	for _, base := range []string{st.UsersURL, st.RidesURL} {
		for _, r := range []struct{ method, path string }{
			{"GET", "/api/v1/_count"}, {"PATCH", "/api/v1/_count"}, {"GET", "/api/v1/db/clear"},
			{"PUT", "/api/v1/db/clear"}, {"GET", "/healthz"}, {"GET", "/readyz"}, {"GET", "/metrics"},
		} {
			apiDo(t, r.method, base+r.path, "", "")
		}
	}
	for _, p := range []string{"/api/v1/_count", "/api/v1/db/clear", "/healthz", "/readyz", "/metrics"} {
		apiDo(t, "GET", gw+p, "", "")
	}

	wantUsers := n + m + j + len(usersOther) + len(usersRejected) + len(ridesRejectedByCheck)
	wantRides := m + j + len(ridesRejected) + len(ridesRejectedByCheck) + len(ridesOther)
	t.Run("users count creations, user checks and rejections", func(t *testing.T) {
		if got := apiCount(t, st.UsersURL); got != wantUsers {
			t.Fatalf("users _count = %d, want %d = %d creations + %d ride creations + %d joins + %d reads + %d rejected + %d failed user checks",
				got, wantUsers, n, m, j, len(usersOther), len(usersRejected), len(ridesRejectedByCheck))
		}
	})
	t.Run("rides count creations, joins and rejections", func(t *testing.T) {
		if got := apiCount(t, st.RidesURL); got != wantRides {
			t.Fatalf("rides _count = %d, want %d", got, wantRides)
		}
	})
	t.Run("user checks went through the gateway", func(t *testing.T) {
		if got := apiMetric(t, gw, checksOK) - okBefore; got != m+j {
			t.Errorf("gateway routed %v successful user lookups, want %d (one per ride creation or join)", got, m+j)
		}
		// GET /api/v1/users/nobody and /api/v1/users/user0/rides, plus the two failed checks.
		if got := apiMetric(t, gw, checks404) - missingBefore; got != float64(2+len(ridesRejectedByCheck)) {
			t.Errorf("gateway routed %v user lookups answered 404, want %d", got, 2+len(ridesRejectedByCheck))
		}
	})
	t.Run("db/clear is not counted", func(t *testing.T) {
		apiCheck(t, apiDo(t, "POST", st.RidesURL+"/api/v1/db/clear", "", ""), apiAnswer{Code: 200, Body: `{}`})
		apiCheck(t, apiDo(t, "POST", st.UsersURL+"/api/v1/db/clear", "", ""), apiAnswer{Code: 200, Body: `{}`})
		if u, r := apiCount(t, st.UsersURL), apiCount(t, st.RidesURL); u != wantUsers || r != wantRides {
			t.Fatalf("after db/clear: users %d rides %d, want %d %d", u, r, wantUsers, wantRides)
		}
	})
	t.Run("a ride creation adds exactly one to users", func(t *testing.T) {
		apiMustUser(t, gw, "solo")
		apiResetCounts(t, st)
		apiMustRide(t, gw, "solo", apiFuture, 1, 2)
		if u, r := apiCount(t, st.UsersURL), apiCount(t, st.RidesURL); u != 1 || r != 1 {
			t.Fatalf("users _count = %d, rides _count = %d, want 1 and 1", u, r)
		}
	})
	t.Run("a malformed ride makes no users call", func(t *testing.T) {
		apiResetCounts(t, st)
		bodies := []string{`{`, `{"created_by":"solo"}`, apiRideBody("solo", "31-02-2030:00-00-00", 1, 2),
			apiRideBody("solo", apiFuture, 1, 1), apiRideBody("solo", apiFuture, 1, 199), apiRideBody("", apiFuture, 1, 2),
			`{"created_by":"solo","timestamp":"` + apiFuture + `","source":1,"destination":2,"x":1}`}
		for _, body := range bodies {
			if got := apiDo(t, "POST", gw+"/api/v1/rides", body, ""); got.Code != 400 {
				t.Fatalf("%s: %+v", body, got)
			}
		}
		if u, r := apiCount(t, st.UsersURL), apiCount(t, st.RidesURL); u != 0 || r != len(bodies) {
			t.Fatalf("users _count = %d, rides _count = %d, want 0 and %d", u, r, len(bodies))
		}
	})
	t.Run("concurrent requests are each counted once", func(t *testing.T) {
		apiResetCounts(t, st)
		const k = 64
		var wg sync.WaitGroup
		for i := range k {
			wg.Go(func() {
				apiDo(t, "GET", gw+"/api/v1/users/solo", "", "")
				apiDo(t, "GET", gw+fmt.Sprintf("/api/v1/rides/%d", 1000+i), "", "")
			})
		}
		wg.Wait()
		if u, r := apiCount(t, st.UsersURL), apiCount(t, st.RidesURL); u != k || r != k {
			t.Fatalf("users _count = %d, rides _count = %d, want %d each", u, r, k)
		}
	})
	t.Run("_count answers 405 with Allow, uncounted", func(t *testing.T) {
		apiResetCounts(t, st)
		for _, base := range []string{st.UsersURL, st.RidesURL} {
			apiCheck(t, apiDo(t, "POST", base+"/api/v1/_count", "", ""), api405("POST", "DELETE, GET"))
			if got := apiCount(t, base); got != 0 {
				t.Fatalf("%s _count = %d", base, got)
			}
		}
	})
}

// TestAPIHealth checks the operational endpoints of all four services.
func TestAPIHealth(t *testing.T) {
	st := apiMustStack(t)
	apiMustUser(t, st.GatewayURL, "alice")
	apiMustRide(t, st.GatewayURL, "alice", apiFuture, 1, 2)
	services := []struct{ name, url, ready string }{
		{"gateway", st.GatewayURL, `{"status":"ok"}`},
		{"users", st.UsersURL, `{"status":"ok"}`},
		{"rides", st.RidesURL, `{"status":"ok"}`},
		{"orchestrator", st.OrchestratorURL, `{"status":"ready"}`},
	}
	for _, s := range services {
		t.Run(s.name, func(t *testing.T) {
			t.Run("healthz", func(t *testing.T) {
				got := apiDo(t, "GET", s.url+"/healthz", "", "")
				if got.Code != 200 || strings.TrimSpace(got.Body) != `{"status":"ok"}` {
					t.Fatalf("got %+v", got)
				}
			})
			t.Run("readyz", func(t *testing.T) {
				got := apiDo(t, "GET", s.url+"/readyz", "", "")
				if got.Code != 200 || strings.TrimSpace(got.Body) != s.ready {
					t.Fatalf("got %+v", got)
				}
			})
			t.Run("metrics", func(t *testing.T) {
				got, h := apiSend(t, apiRequest{method: "GET", url: s.url + "/metrics"})
				if got.Code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
					t.Fatalf("status %d, Content-Type %q", got.Code, h.Get("Content-Type"))
				}
				for _, want := range []string{"# TYPE rideshare_", `rideshare_http_requests_total{`, `service="` + s.name + `"`} {
					if !strings.Contains(got.Body, want) {
						t.Errorf("/metrics of %s lacks %s", s.name, want)
					}
				}
			})
			t.Run("unknown path is a JSON 404", func(t *testing.T) {
				got, h := apiSend(t, apiRequest{method: "GET", url: s.url + "/no/such/path"})
				var e map[string]string
				if got.Code != 404 || json.Unmarshal([]byte(got.Body), &e) != nil || e["error"] == "" || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
					t.Fatalf("got %+v, Content-Type %q", got, h.Get("Content-Type"))
				}
			})
		})
	}
	t.Run("service metrics by route", func(t *testing.T) {
		for _, want := range []struct{ base, series string }{
			{st.UsersURL, `rideshare_http_requests_total{code="201",method="PUT",route="/api/v1/users",service="users"}`},
			{st.RidesURL, `rideshare_http_requests_total{code="201",method="POST",route="/api/v1/rides",service="rides"}`},
			{st.GatewayURL, `rideshare_http_requests_total{code="201",method="POST",route="/api/v1/rides",service="gateway"}`},
		} {
			if got := apiMetric(t, want.base, want.series); got != 1 {
				t.Errorf("%s = %v, want 1", want.series, got)
			}
		}
	})
}
