package openapi_test

import (
	"testing"

	"github.com/rideshare/rideshare/httpsvc/openapi"
)

func TestOpenAPIDeclares(t *testing.T) {
	for _, c := range []struct {
		doc          *openapi.Doc
		method, path string
		status       int
		want         bool
	}{
		{openapi.Users, "PUT", "/api/v1/users", 201, true},
		{openapi.Users, "put", "/api/v1/users", 201, true}, // methods in any case
		{openapi.Users, "PUT", "/api/v1/users", 200, false},
		{openapi.Users, "PUT", "/api/v1/users", 404, false},
		{openapi.Users, "GET", "/api/v1/users/alice", 404, true},
		{openapi.Users, "GET", "/api/v1/users/a%2Fb", 200, true},   // one escaped segment
		{openapi.Users, "GET", "/api/v1/users/a/b", 404, true},     // two segments: no route
		{openapi.Users, "GET", "/api/v1/users/a/b", 200, false},    // … and nothing else
		{openapi.Users, "GET", "/api/v1/users/", 404, true},        // a parameter is never empty
		{openapi.Users, "POST", "/api/v1/users", 405, true},        // a method the path does not list
		{openapi.Users, "POST", "/api/v1/users", 400, false},       // … is a 405 and nothing else
		{openapi.Users, "GET", "/api/v1/users", 405, false},        // a listed method is never a 405
		{openapi.Users, "GET", "/api/v1/rides", 404, true},         // another service's path
		{openapi.Rides, "GET", "/api/v1/rides/count", 200, true},   // the literal segment wins
		{openapi.Rides, "GET", "/api/v1/rides/count", 204, false},  // … so not R3's 204
		{openapi.Rides, "POST", "/api/v1/rides/count", 405, true},  // … for every method
		{openapi.Rides, "POST", "/api/v1/rides/count", 200, false}, // … not a join of ride "count"
		{openapi.Rides, "POST", "/api/v1/rides/17", 204, true},
		{openapi.Rides, "GET", "/api/v1/rides?source=1&destination=2", 204, true}, // the query is ignored
		{openapi.Rides, "GET", "/api/v1/rides?source=1&destination=2", 404, false},
		{openapi.Orchestrator, "POST", "/api/v1/db/write", 409, true},
		{openapi.Orchestrator, "POST", "/api/v1/db/write", 401, true},
		{openapi.Orchestrator, "GET", "/api/v1/workers", 401, false}, // the views are open
		{openapi.Orchestrator, "POST", "/api/v1/crash/slave", 503, false},
		{openapi.Orchestrator, "POST", "/api/v1/db/exec", 404, true},
	} {
		if got := openapi.Declares(c.doc, c.method, c.path, c.status); got != c.want {
			t.Errorf("Declares(%s, %s %s, %d) = %v, want %v", c.doc.Name(), c.method, c.path, c.status, got, c.want)
		}
	}
}

// Ranges and default: OpenAPI lets a document declare "4XX" or "default", and Declares reads
// them as such. A document that cannot be read declares nothing.
func TestOpenAPIDeclaresRangesDefaultAndBrokenDocuments(t *testing.T) {
	doc := openapi.New("test.json", []byte(`{"openapi":"3.0.3","paths":{
		"/a/{x}":{"get":{"responses":{"200":{"description":"ok"},"4XX":{"description":"no"}}}},
		"/b":{"post":{"responses":{"default":{"description":"any"}}}}}}`))
	for _, c := range []struct {
		method, path string
		status       int
		want         bool
	}{
		{"GET", "/a/1", 200, true}, {"GET", "/a/1", 418, true}, {"GET", "/a/1", 500, false},
		{"POST", "/b", 201, true}, {"POST", "/b", 503, true}, {"GET", "/b", 405, true}, {"GET", "/b", 200, false},
	} {
		if got := openapi.Declares(doc, c.method, c.path, c.status); got != c.want {
			t.Errorf("Declares(%s %s, %d) = %v, want %v", c.method, c.path, c.status, got, c.want)
		}
	}
	for _, raw := range []string{`{`, `{"paths":{}}`, `{"paths":{"a":{}}}`, `{"paths":{"/a":{"get":{"responses":{}}}}}`} {
		broken := openapi.New("broken.json", []byte(raw))
		if _, err := broken.Operations(); err == nil {
			t.Errorf("%s: read without an error", raw)
		}
		if openapi.Declares(broken, "GET", "/a", 404) {
			t.Errorf("%s: declares a status", raw)
		}
	}
}
