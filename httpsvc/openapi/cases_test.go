package openapi_test

// The statuses the end-to-end contract cases expect (cmd/rideshare/e2e: TestAPIUsersRidesContract,
// TestAPICountArithmetic, TestAPIHealth, TestAPIOrchestratorContract, TestAdminToken), checked
// against the documents. The users and rides cases are sent, in the contract's order, to the
// real users and rides services behind the real gateway on one SQLite file, so each row is
// checked three ways: the service still answers the case's status, the document declares it
// (Declares), and the answer — status, headers and body — is what the document's schema for it
// says (kin-openapi's response validator); a request that succeeds must also be one the
// document's request schema accepts. The orchestrator needs workers for most of its answers:
// those rows are checked against the document only, and the few it answers before the queues
// (the token, the body's decoding, 404s and 405s) are sent to it too.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/httpsvc/gateway"
	"github.com/rideshare/rideshare/httpsvc/openapi"
	"github.com/rideshare/rideshare/httpsvc/rides"
	"github.com/rideshare/rideshare/httpsvc/users"
	"github.com/rideshare/rideshare/orchestrator"
	"github.com/rideshare/rideshare/worker/store"
)

const (
	pw     = "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8" // sha1("password")
	form   = "application/x-www-form-urlencoded"
	future = "21-08-2030:00-00-00"
	token  = "s3cret-admin-token"
)

// Where a case is sent: through the gateway, or to a service's own address.
const (
	gw = iota
	usersDirect
	ridesDirect
	orch
)

// apiCase is one request of the contract cases and the status they expect of it.
type apiCase struct {
	to                        int
	method, path, body, ctype string
	header                    http.Header
	want                      int
}

func userBody(name, password string) string {
	return fmt.Sprintf(`{"username":%q,"password":%q}`, name, password)
}

func rideBody(by, stamp string, source, destination any) string {
	b, err := json.Marshal(map[string]any{"created_by": by, "timestamp": stamp, "source": source, "destination": destination})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// usersRidesCases are TestAPIUsersRidesContract's, TestAPICountArithmetic's and TestAPIHealth's
// requests to the users and rides services, in an order in which each gets the answer its
// case expects.
func usersRidesCases() []apiCase {
	big := strings.Repeat("d", 70000)
	c := []apiCase{
		// empty database
		{to: gw, method: "GET", path: "/api/v1/users", want: 204},
		{to: gw, method: "GET", path: "/api/v1/rides/count", want: 200},
		{to: gw, method: "GET", path: "/api/v1/rides?source=1&destination=2", want: 204},
		{to: gw, method: "GET", path: "/api/v1/rides/1", want: 204},

		// U1
		{to: gw, method: "PUT", path: "/api/v1/users", body: userBody("alice", pw), want: 201},
		{to: gw, method: "PUT", path: "/api/v1/users", body: userBody("bob", strings.ToUpper(pw)), want: 201},
		{to: gw, method: "PUT", path: "/api/v1/users", body: "username=carol&password=" + pw, ctype: form, want: 201},
		{to: gw, method: "PUT", path: "/api/v1/users", body: userBody("Alice", pw), want: 201},
		{to: gw, method: "PUT", path: "/api/v1/users", body: userBody("alice", pw), want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: "username=carol&password=" + pw, ctype: form, want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: userBody("", pw), want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: userBody("dave", pw[:39]), want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: userBody("dave", pw[:39]+"g"), want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: `{"username":"dave"}`, want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: `{"username":"dave","password":"` + pw + `","admin":true}`, want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: "username=dave&username=eve&password=" + pw, ctype: form, want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: `{"username":7,"password":"` + pw + `"}`, want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: `{"username":"dave",`, want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: `[]`, want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", want: 400},
		{to: gw, method: "PUT", path: "/api/v1/users", body: userBody(big, pw), want: 413},
		{to: gw, method: "GET", path: "/api/v1/users", want: 200},

		// the gateway routes nothing else (only its own /healthz, /readyz, /metrics); dot
		// segments do not walk out of a route
		{to: gw, method: "POST", path: "/api/v1/users/../db/clear", want: 404},
		{to: gw, method: "DELETE", path: "/api/v1/users/%2e%2e/db/clear", want: 404},
		{to: gw, method: "POST", path: "/api/v1/users/..%2Fdb%2Fclear", want: 405},
		{to: gw, method: "DELETE", path: "/api/v1/users/..%2Fdb%2Fclear", want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/../../api/v1/db/clear", want: 404},
		{to: gw, method: "DELETE", path: "/api/v1/rides/%2E%2E%2Fdb%2Fclear", want: 400},
		{to: gw, method: "POST", path: "/api/v1/users/../_count", want: 404},

		// U4
		{to: gw, method: "GET", path: "/api/v1/users/alice", want: 200},
		{to: gw, method: "GET", path: "/api/v1/users/ALICE", want: 404},
		{to: gw, method: "GET", path: "/api/v1/users/alice/rides", want: 404},
		{to: gw, method: "GET", path: "/api/v1/users/a%2Fb", want: 404},

		// users 405s
		{to: gw, method: "POST", path: "/api/v1/users", want: 405},
		{to: gw, method: "DELETE", path: "/api/v1/users", want: 405},
		{to: gw, method: "PATCH", path: "/api/v1/users", want: 405},
		{to: gw, method: "PROPFIND", path: "/api/v1/users", want: 405},
		{to: gw, method: "PUT", path: "/api/v1/users/alice", want: 405},
		{to: gw, method: "POST", path: "/api/v1/users/alice", want: 405},
		{to: gw, method: "PATCH", path: "/api/v1/users/alice", want: 405},
		{to: usersDirect, method: "GET", path: "/api/v1/db/clear", want: 405},
		{to: usersDirect, method: "DELETE", path: "/api/v1/db/clear", want: 405},
		{to: usersDirect, method: "PUT", path: "/api/v1/db/clear", want: 405},
		{to: usersDirect, method: "POST", path: "/api/v1/_count", want: 405},
		{to: usersDirect, method: "PUT", path: "/api/v1/_count", want: 405},
		{to: usersDirect, method: "PATCH", path: "/api/v1/_count", want: 405},

		// R1
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("alice", future, 1, 2), want: 201},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("alice", future, "3", "4"), want: 201},
		{to: gw, method: "POST", path: "/api/v1/rides", body: "created_by=alice&timestamp=" + future + "&source=198&destination=1", ctype: form, want: 201},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("bob", "01-01-2000:00-00-00", 1, 2), want: 201},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("carol", "29-02-2028:59-59-23", 2, "1"), want: 201},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("nobody", future, 1, 2), want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("", future, 1, 2), want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("alice", "31-02-2030:00-00-00", 1, 2), want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("alice", "2030-08-21T00:00:00Z", 1, 2), want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: `{"created_by":"alice","timestamp":1,"source":1,"destination":2}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("alice", future, 0, 2), want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("alice", future, "199", 1), want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: `{"created_by":"alice","timestamp":"` + future + `","source":2.5,"destination":2}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("alice", future, nil, 2), want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody("alice", future, 7, "7"), want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: `{"created_by":"alice","timestamp":"` + future + `","source":1}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: `{"rideId":99,"created_by":"alice","timestamp":"` + future + `","source":1,"destination":2}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: `{"created_by":"alice",`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: "created_by=alice&timestamp=" + future + "&source=1&destination=0", ctype: form, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides", body: rideBody(big, future, 1, 2), want: 413},

		// R2
		{to: gw, method: "GET", path: "/api/v1/rides?source=1&destination=2", want: 200},
		{to: gw, method: "GET", path: "/api/v1/rides?destination=002&source=01&_=123", want: 200},
		{to: gw, method: "GET", path: "/api/v1/rides?source=198&destination=1", want: 200},
		{to: gw, method: "GET", path: "/api/v1/rides?source=150&destination=151", want: 204},
		{to: gw, method: "GET", path: "/api/v1/rides?destination=2", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides?source=&destination=2", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides?source=1.5&destination=2", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides?source=1%20OR%201%3D1&destination=2", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides?source=1&destination=199", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides?source=4&destination=4", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides?source=1&source=2&destination=3", want: 400},

		// R4 on alice's ride 1
		{to: gw, method: "POST", path: "/api/v1/rides/1", body: `{"username":"bob"}`, want: 200},
		{to: gw, method: "POST", path: "/api/v1/rides/1", body: "username=carol", ctype: form, want: 200},
		{to: gw, method: "POST", path: "/api/v1/rides/01", body: `{"username":"Alice"}`, want: 200},
		{to: gw, method: "POST", path: "/api/v1/rides/1", body: `{"username":"bob"}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/1", body: `{"username":"alice"}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/1", body: `{"username":"nobody"}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/999999", body: `{"username":"bob"}`, want: 204},
		{to: gw, method: "POST", path: "/api/v1/rides/999999", body: `{"username":"nobody"}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/x", body: `{"username":"bob"}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/-1", body: `{"username":"bob"}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/1", body: `{"username":""}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/1", body: `{"username":["bob"]}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/1", body: `{"username":"bob","seat":2}`, want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/1", want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/1", body: `{"username":"` + strings.Repeat("d", 1<<17) + `"}`, want: 413},

		// R3
		{to: gw, method: "GET", path: "/api/v1/rides/1", want: 200},
		{to: gw, method: "GET", path: "/api/v1/rides/0001", want: 200},
		{to: gw, method: "GET", path: "/api/v1/rides/4", want: 200},
		{to: gw, method: "GET", path: "/api/v1/rides/999999", want: 204},
		{to: gw, method: "GET", path: "/api/v1/rides/0", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides/abc", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides/+1", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides/99999999999999999999", want: 400},

		// R5
		{to: gw, method: "DELETE", path: "/api/v1/rides/2", want: 200},
		{to: gw, method: "DELETE", path: "/api/v1/rides/2", want: 400},
		{to: gw, method: "DELETE", path: "/api/v1/rides/999999", want: 400},
		{to: gw, method: "DELETE", path: "/api/v1/rides/one", want: 400},
		{to: gw, method: "GET", path: "/api/v1/rides/2", want: 204},
		{to: gw, method: "POST", path: "/api/v1/rides/2", body: `{"username":"Alice"}`, want: 204},
		{to: gw, method: "GET", path: "/api/v1/rides/count", want: 200},

		// rides 405s
		{to: gw, method: "PUT", path: "/api/v1/rides", want: 405},
		{to: gw, method: "DELETE", path: "/api/v1/rides", want: 405},
		{to: gw, method: "PATCH", path: "/api/v1/rides", want: 405},
		{to: gw, method: "PROPFIND", path: "/api/v1/rides", want: 405},
		{to: gw, method: "PUT", path: "/api/v1/rides/1", want: 405},
		{to: gw, method: "PATCH", path: "/api/v1/rides/1", want: 405},
		{to: gw, method: "POST", path: "/api/v1/rides/count", want: 405},
		{to: gw, method: "DELETE", path: "/api/v1/rides/count", want: 405},
		{to: gw, method: "PUT", path: "/api/v1/rides/count", want: 405},
		{to: ridesDirect, method: "GET", path: "/api/v1/db/clear", want: 405},
		{to: ridesDirect, method: "DELETE", path: "/api/v1/db/clear", want: 405},
		{to: ridesDirect, method: "POST", path: "/api/v1/_count", want: 405},
		{to: ridesDirect, method: "PUT", path: "/api/v1/_count", want: 405},

		// U2
		{to: gw, method: "DELETE", path: "/api/v1/users/bob", want: 200},
		{to: gw, method: "DELETE", path: "/api/v1/users/bob", want: 400},
		{to: gw, method: "DELETE", path: "/api/v1/users/ALICE", want: 400},
		{to: gw, method: "POST", path: "/api/v1/rides/1", body: `{"username":"bob"}`, want: 400},

		// R7, U5
		{to: ridesDirect, method: "POST", path: "/api/v1/db/clear", want: 200},
		{to: usersDirect, method: "POST", path: "/api/v1/db/clear", want: 200},
		{to: gw, method: "GET", path: "/api/v1/users/alice", want: 404},
	}
	// The gateway does not route the documents (SPEC §2: nothing else is routed).
	c = append(c, apiCase{to: gw, method: "GET", path: "/openapi.json", want: 404})
	// _count and the operational routes of both services (TestAPICountArithmetic, TestAPIHealth)
	for _, to := range []int{usersDirect, ridesDirect} {
		c = append(c,
			apiCase{to: to, method: "GET", path: "/api/v1/_count", want: 200},
			apiCase{to: to, method: "DELETE", path: "/api/v1/_count", want: 200},
			apiCase{to: to, method: "GET", path: "/healthz", want: 200},
			apiCase{to: to, method: "GET", path: "/readyz", want: 200},
			apiCase{to: to, method: "GET", path: "/metrics", want: 200},
			apiCase{to: to, method: "GET", path: "/openapi.json", want: 200},
			apiCase{to: to, method: "GET", path: "/no/such/path", want: 404},
			apiCase{to: to, method: "GET", path: "/api/v1/no/such/path", want: 404},
		)
	}
	return c
}

// orchestratorCases are TestAPIOrchestratorContract's and TestAdminToken's. Those marked
// live are answered before the queues, so they are sent to an orchestrator that has no
// workers (and an admin token); the others are checked against the document only.
func orchestratorCases() (live, docOnly []apiCase) {
	bearer := http.Header{"Authorization": {"Bearer " + token}}
	write := `{"table":"users","insert":{"username":"carol","password":"` + pw + `"}}`
	for _, path := range []string{"/api/v1/db/write", "/api/v1/db/read", "/api/v1/db/clear", "/api/v1/crash/master", "/api/v1/crash/slave"} {
		live = append(live,
			apiCase{to: orch, method: "POST", path: path, body: write, want: 401},
			apiCase{to: orch, method: "POST", path: path, header: http.Header{"Authorization": {"Bearer wrong"}}, want: 401},
			apiCase{to: orch, method: "POST", path: path, header: http.Header{"Authorization": {"Basic " + token}}, want: 401})
	}
	huge := `{"table":"users","insert":{"username":"` + strings.Repeat("x", orchestrator.MaxBody) + `","password":"` + pw + `"}}`
	live = append(live,
		apiCase{to: orch, method: "POST", path: "/api/v1/db/write", body: `{"table":"nope",`, want: 401},
		apiCase{to: orch, method: "POST", path: "/api/v1/db/write", header: bearer, body: `{"table":"users","insert":`, want: 400},
		apiCase{to: orch, method: "POST", path: "/api/v1/db/write", header: bearer, body: write + ` {}`, want: 400},
		apiCase{to: orch, method: "POST", path: "/api/v1/db/write", header: bearer, body: `{"sql":"DELETE FROM users"}`, want: 400},
		apiCase{to: orch, method: "POST", path: "/api/v1/db/write", header: bearer, body: `{"clear":"yes"}`, want: 400},
		apiCase{to: orch, method: "POST", path: "/api/v1/db/read", header: bearer, body: `{"table":"users","select":"*"}`, want: 400},
		apiCase{to: orch, method: "POST", path: "/api/v1/db/read", header: bearer, body: `{"table":"users","limit":1.5}`, want: 400},
		apiCase{to: orch, method: "POST", path: "/api/v1/db/read", header: bearer, want: 400},
		apiCase{to: orch, method: "POST", path: "/api/v1/db/write", header: bearer, body: huge, want: 413},
		apiCase{to: orch, method: "POST", path: "/api/v1/db/read", header: bearer, body: huge, want: 413},
		apiCase{to: orch, method: "GET", path: "/api/v1/db/write", want: 405},
		apiCase{to: orch, method: "GET", path: "/api/v1/db/read", want: 405},
		apiCase{to: orch, method: "GET", path: "/api/v1/db/clear", want: 405},
		apiCase{to: orch, method: "GET", path: "/api/v1/crash/master", want: 405},
		apiCase{to: orch, method: "GET", path: "/api/v1/crash/slave", want: 405},
		apiCase{to: orch, method: "DELETE", path: "/api/v1/crash/slave", want: 405},
		apiCase{to: orch, method: "POST", path: "/api/v1/worker/list", want: 405},
		apiCase{to: orch, method: "POST", path: "/api/v1/workers", want: 405},
		apiCase{to: orch, method: "POST", path: "/api/v1/cluster", want: 405},
		apiCase{to: orch, method: "POST", path: "/api/v1/db/exec", body: `{"sql":"DROP TABLE users"}`, want: 404},
		apiCase{to: orch, method: "GET", path: "/no/such/path", want: 404},
		apiCase{to: orch, method: "GET", path: "/healthz", want: 200},
		apiCase{to: orch, method: "GET", path: "/metrics", want: 200},
		apiCase{to: orch, method: "GET", path: "/openapi.json", want: 200},
		// The console (orchestrator/console's tests): "/" itself and nothing under it.
		apiCase{to: orch, method: "GET", path: "/", want: 200},
		apiCase{to: orch, method: "POST", path: "/", want: 405},
		apiCase{to: orch, method: "GET", path: "/index.html", want: 404},
	)
	docOnly = []apiCase{
		{to: orch, method: "POST", path: "/api/v1/db/write", want: 200},
		{to: orch, method: "POST", path: "/api/v1/db/write", want: 400}, // validation after decoding
		{to: orch, method: "POST", path: "/api/v1/db/write", want: 409},
		{to: orch, method: "POST", path: "/api/v1/db/read", want: 200},
		{to: orch, method: "POST", path: "/api/v1/db/read", want: 400},
		{to: orch, method: "POST", path: "/api/v1/db/clear", want: 200},
		{to: orch, method: "POST", path: "/api/v1/crash/master", want: 200},
		{to: orch, method: "POST", path: "/api/v1/crash/slave", want: 200},
		{to: orch, method: "GET", path: "/api/v1/worker/list", want: 200},
		{to: orch, method: "GET", path: "/api/v1/workers", want: 200},
		{to: orch, method: "GET", path: "/api/v1/cluster", want: 200},
		{to: orch, method: "GET", path: "/readyz", want: 200},
	}
	return live, docOnly
}

// docFor is the document of the service that answers path at to: through the gateway, that
// of the service it routes the path to, or nil for the gateway's own answers (its routes
// and its 404s), which no document covers.
func docFor(to int, path string) *openapi.Doc {
	path, _, _ = strings.Cut(path, "?")
	under := func(prefix string) bool { return path == prefix || strings.HasPrefix(path, prefix+"/") }
	switch {
	case to == usersDirect, to == gw && under("/api/v1/users"):
		return openapi.Users
	case to == ridesDirect, to == gw && under("/api/v1/rides"):
		return openapi.Rides
	case to == orch:
		return openapi.Orchestrator
	}
	return nil
}

// undeclared lists the cases whose status the document does not declare.
func undeclared(cases []apiCase, doc func(apiCase) *openapi.Doc) []string {
	var out []string
	for _, c := range cases {
		if d := doc(c); d != nil && !openapi.Declares(d, c.method, c.path, c.want) {
			out = append(out, fmt.Sprintf("%s: %s %s → %d", d.Name(), c.method, c.path, c.want))
		}
	}
	return out
}

// Every status a contract case expects is one its document declares.
func TestOpenAPIDeclaresTheCasesStatuses(t *testing.T) {
	live, docOnly := orchestratorCases()
	all := append(append(usersRidesCases(), live...), docOnly...)
	if missing := undeclared(all, func(c apiCase) *openapi.Doc { return docFor(c.to, c.path) }); len(missing) > 0 {
		t.Fatalf("statuses the contract cases expect that the documents do not declare:\n  %s", strings.Join(missing, "\n  "))
	}
}

// The check fails, naming the case, when a document loses a status a case expects.
func TestOpenAPIDeclaresCheckCatchesAMissingStatus(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(openapi.Users.JSON(), &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc["paths"].(map[string]any)["/api/v1/users"].(map[string]any)["put"].(map[string]any)["responses"].(map[string]any), "413")
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	changed := openapi.New("users.json without 413", raw)
	got := undeclared(usersRidesCases(), func(c apiCase) *openapi.Doc {
		if docFor(c.to, c.path) == openapi.Users {
			return changed
		}
		return nil
	})
	want := "users.json without 413: PUT /api/v1/users → 413"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("undeclared %q, want [%q]", got, want)
	}
}

// liveStack is the users and rides services on one SQLite file behind the gateway, the rides
// service checking users through it, and an orchestrator with an admin token that has no
// workers.
type liveStack struct {
	base map[int]string
}

func mustLiveStack(tb testing.TB) *liveStack {
	tb.Helper()
	st := store.New(filepath.Join(tb.TempDir(), "db.sqlite"))
	if err := st.Open(context.Background()); err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { st.Close() })
	db := &store.Local{Store: st}
	log := slog.New(slog.DiscardHandler)

	usersSrv := httptest.NewServer((&users.Service{DB: db, Logger: log, Registry: prometheus.NewRegistry()}).Handler())
	tb.Cleanup(usersSrv.Close)
	ridesSrv := httptest.NewUnstartedServer(nil) // the gateway needs its address first
	gwSrv := httptest.NewServer((&gateway.Gateway{
		UsersURL: usersSrv.URL, RidesURL: "http://" + ridesSrv.Listener.Addr().String(),
		Logger: log, Registry: prometheus.NewRegistry(),
	}).Handler())
	tb.Cleanup(gwSrv.Close)
	ridesSrv.Config.Handler = (&rides.Service{
		DB: db, UsersURL: gwSrv.URL, Logger: log, Registry: prometheus.NewRegistry(),
		Now: func() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) },
	}).Handler()
	ridesSrv.Start()
	tb.Cleanup(ridesSrv.Close)
	orchSrv := httptest.NewServer((&orchestrator.Orchestrator{Logger: log, Registry: prometheus.NewRegistry(), AdminToken: token}).Handler())
	tb.Cleanup(orchSrv.Close)

	return &liveStack{base: map[int]string{gw: gwSrv.URL, usersDirect: usersSrv.URL, ridesDirect: ridesSrv.URL, orch: orchSrv.URL}}
}

// conformance validates requests and answers against the documents with kin-openapi.
type conformance struct {
	routers map[*openapi.Doc]routers.Router
}

func newConformance(tb testing.TB) *conformance {
	tb.Helper()
	c := &conformance{routers: map[*openapi.Doc]routers.Router{}}
	// The console's page: the validator checks it as the string the document says it is.
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
	for _, d := range []*openapi.Doc{openapi.Users, openapi.Rides, openapi.Orchestrator} {
		doc, err := loadAndValidate(d.JSON())
		if err != nil {
			tb.Fatalf("%s: %v", d.Name(), err)
		}
		r, err := gorillamux.NewRouter(doc)
		if err != nil {
			tb.Fatalf("%s: router: %v", d.Name(), err)
		}
		c.routers[d] = r
	}
	return c
}

// check validates one exchange: an answer the document has an operation for must match that
// operation's response for its status (headers and body); one it has none for (a 404 or
// 405) must be the error object. A request answered 2xx must satisfy the document's request
// schema: the documents must not refuse what the services accept.
func (c *conformance) check(doc *openapi.Doc, req *http.Request, reqBody []byte, status int, header http.Header, body []byte) error {
	// The router matches on the path as sent; the request is a copy, whose URL has no host
	// for it to compare with the document's (absent) servers.
	rr := req.Clone(context.Background())
	rr.URL.Scheme, rr.URL.Host, rr.Host = "", "", ""
	rr.Body = io.NopCloser(bytes.NewReader(reqBody))
	route, params, err := c.routers[doc].FindRoute(rr)
	if err != nil {
		var e map[string]string
		if json.Unmarshal(body, &e) != nil || len(e) != 1 || e["error"] == "" {
			return fmt.Errorf("an answer outside the document's operations is not the error object: %s", body)
		}
		return nil
	}
	in := &openapi3filter.RequestValidationInput{
		Request: rr, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true},
	}
	if status/100 == 2 {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			return fmt.Errorf("answered %d, but the document refuses the request: %w", status, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: status, Header: header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return fmt.Errorf("the answer is not the documented one: %w", err)
	}
	// The validator does not look at a body the document says nothing of.
	if resp := route.Operation.Responses.Status(status); resp != nil && len(resp.Value.Content) == 0 && len(body) > 0 {
		return fmt.Errorf("answered %d with a body, which the document does not have: %s", status, body)
	}
	return nil
}

// The contract cases against the real services: the status each case expects, declared by
// the document, with the documented headers and body.
func TestOpenAPIConformsToTheServices(t *testing.T) {
	st := mustLiveStack(t)
	conf := newConformance(t)
	live, _ := orchestratorCases()
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i, c := range append(usersRidesCases(), live...) {
		var rd io.Reader
		if c.body != "" {
			rd = strings.NewReader(c.body)
		}
		req, err := http.NewRequest(c.method, st.base[c.to]+c.path, rd)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range c.header {
			req.Header[k] = v
		}
		if c.body != "" {
			ct := c.ctype
			if ct == "" {
				ct = "application/json"
			}
			req.Header.Set("Content-Type", ct)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("case %d: %s %s: %v", i, c.method, c.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("case %d: %s %s: read the answer: %v", i, c.method, c.path, err)
		}
		name := fmt.Sprintf("case %d: %s %.80s", i, c.method, c.path)
		if resp.StatusCode != c.want {
			t.Errorf("%s: answered %d, the case expects %d: %.200s", name, resp.StatusCode, c.want, body)
			continue
		}
		doc := docFor(c.to, c.path)
		if doc == nil {
			continue
		}
		if !openapi.Declares(doc, c.method, req.URL.EscapedPath(), resp.StatusCode) {
			t.Errorf("%s: %s does not declare %d", name, doc.Name(), resp.StatusCode)
			continue
		}
		if err := conf.check(doc, req, []byte(c.body), resp.StatusCode, resp.Header, body); err != nil {
			t.Errorf("%s: %s: %v", name, doc.Name(), err)
		}
	}
}
