package openapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/httpsvc"
	"github.com/rideshare/rideshare/httpsvc/openapi"
	"github.com/rideshare/rideshare/httpsvc/rides"
	"github.com/rideshare/rideshare/httpsvc/users"
	"github.com/rideshare/rideshare/orchestrator"
)

// service is one documented API and the handler that serves it. The handlers are built
// without a database: routing needs none, and no request is sent to them here.
type service struct {
	doc     *openapi.Doc
	handler func() http.Handler
}

var services = []service{
	{openapi.Users, func() http.Handler {
		return (&users.Service{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}).Handler()
	}},
	{openapi.Rides, func() http.Handler {
		return (&rides.Service{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}).Handler()
	}},
	{openapi.Orchestrator, func() http.Handler {
		return (&orchestrator.Orchestrator{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}).Handler()
	}},
}

// routerOperations walks a chi router: each route pattern with the methods it serves. A
// route registered with httpsvc.Methods is registered for every method (so that the others
// get a 405 with Allow), and serves those of its Allow(); any other handler serves the
// methods chi routes to it.
func routerOperations(tb testing.TB, h http.Handler) map[string][]string {
	tb.Helper()
	routes, ok := h.(chi.Routes)
	if !ok {
		tb.Fatalf("the handler is a %T, not a chi router", h)
	}
	sets := map[string]map[string]bool{}
	err := chi.Walk(routes, func(method, route string, handler http.Handler, _ ...func(http.Handler) http.Handler) error {
		if sets[route] == nil {
			sets[route] = map[string]bool{}
		}
		if m, ok := handler.(httpsvc.Methods); ok {
			for _, method := range m.Allow() {
				sets[route][method] = true
			}
		} else {
			sets[route][method] = true
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	ops := map[string][]string{}
	for route, set := range sets {
		for m := range set {
			ops[route] = append(ops[route], m)
		}
		slices.Sort(ops[route])
	}
	return ops
}

// diffOperations lists, sorted, what the router serves that the document does not say and
// what the document says that the router does not serve.
func diffOperations(router, doc map[string][]string) []string {
	var diffs []string
	for route, methods := range router {
		for _, m := range methods {
			if !slices.Contains(doc[route], m) {
				diffs = append(diffs, fmt.Sprintf("served but not documented: %s %s", m, route))
			}
		}
	}
	for path, methods := range doc {
		for _, m := range methods {
			if !slices.Contains(router[path], m) {
				diffs = append(diffs, fmt.Sprintf("documented but not served: %s %s", m, path))
			}
		}
	}
	slices.Sort(diffs)
	return diffs
}

// Every route each router serves is in its document with exactly its methods, and the
// document has nothing else.
func TestOpenAPIDocumentsMatchRouters(t *testing.T) {
	for _, s := range services {
		t.Run(s.doc.Name(), func(t *testing.T) {
			documented, err := s.doc.Operations()
			if err != nil {
				t.Fatal(err)
			}
			served := routerOperations(t, s.handler())
			if diffs := diffOperations(served, documented); len(diffs) > 0 {
				t.Fatalf("%s and its router disagree:\n  %s", s.doc.Name(), strings.Join(diffs, "\n  "))
			}
		})
	}
}

// The comparison fails, naming the route, when a document loses a route or gains one that
// no router serves.
func TestOpenAPIRouterCheckCatchesDrift(t *testing.T) {
	served := routerOperations(t, services[1].handler())
	mutate := func(t *testing.T, change func(paths map[string]any)) map[string][]string {
		t.Helper()
		var doc map[string]any
		if err := json.Unmarshal(openapi.Rides.JSON(), &doc); err != nil {
			t.Fatal(err)
		}
		change(doc["paths"].(map[string]any))
		raw, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		ops, err := openapi.New("changed rides.json", raw).Operations()
		if err != nil {
			t.Fatal(err)
		}
		return ops
	}
	for _, c := range []struct {
		name   string
		change func(paths map[string]any)
		want   []string
	}{
		{"a route removed", func(p map[string]any) { delete(p, "/api/v1/rides/count") },
			[]string{"served but not documented: GET /api/v1/rides/count"}},
		{"a method removed", func(p map[string]any) { delete(p["/api/v1/rides/{rideId}"].(map[string]any), "delete") },
			[]string{"served but not documented: DELETE /api/v1/rides/{rideId}"}},
		{"a fake route added", func(p map[string]any) { p["/api/v1/rides/{rideId}/riders"] = p["/api/v1/rides/count"] },
			[]string{"documented but not served: GET /api/v1/rides/{rideId}/riders"}},
		{"a fake method added", func(p map[string]any) {
			p["/api/v1/rides/count"].(map[string]any)["delete"] = p["/api/v1/rides/count"].(map[string]any)["get"]
		}, []string{"documented but not served: DELETE /api/v1/rides/count"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := diffOperations(served, mutate(t, c.change)); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("differences %q, want %q", got, c.want)
			}
		})
	}
}

// loadAndValidate reads a document with kin-openapi and validates it against the OpenAPI 3
// specification: structure, unknown fields, references, and every example against its
// schema.
func loadAndValidate(raw []byte) (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableExamplesValidation(), openapi3.EnableSchemaDefaultsValidation()); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return doc, nil
}

// projectRules are the conventions of these documents beyond OpenAPI's own (which makes
// operation ids unique): each operation has an id and a summary and at least one success; every 4xx and 5xx answer is the JSON
// error object, as SPEC §3 and httpsvc.WriteError make it; a 204 has no body.
func projectRules(doc *openapi3.T) []string {
	var problems []string
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			if op.OperationID == "" || op.Summary == "" {
				problems = append(problems, where+": no operationId or summary")
			}
			success := false
			for code, ref := range op.Responses.Map() {
				resp := ref.Value
				switch {
				case code[0] == '2':
					success = true
					if code == "204" && len(resp.Content) > 0 {
						problems = append(problems, where+": a 204 with a body")
					}
				case code[0] == '4' || code[0] == '5':
					mt := resp.Content.Get("application/json")
					if len(resp.Content) != 1 || mt == nil || mt.Schema == nil || mt.Schema.Ref != "#/components/schemas/Error" {
						problems = append(problems, where+": "+code+" is not the JSON error object")
					}
				}
			}
			if !success {
				problems = append(problems, where+": no 2xx answer")
			}
		}
	}
	slices.Sort(problems)
	return problems
}

// Each document is valid JSON and a valid OpenAPI 3 document that keeps the project's rules.
func TestOpenAPIDocumentsAreValid(t *testing.T) {
	for _, d := range []*openapi.Doc{openapi.Users, openapi.Rides, openapi.Orchestrator} {
		t.Run(d.Name(), func(t *testing.T) {
			if !json.Valid(d.JSON()) {
				t.Fatal("not valid JSON")
			}
			doc, err := loadAndValidate(d.JSON())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(doc.OpenAPI, "3.") {
				t.Fatalf("openapi %q, want 3.x", doc.OpenAPI)
			}
			if problems := projectRules(doc); len(problems) > 0 {
				t.Fatalf("%s:\n  %s", d.Name(), strings.Join(problems, "\n  "))
			}
		})
	}
}

// The validator and the project's rules refuse a broken document, each for its reason: they
// are not a rubber stamp.
func TestOpenAPIValidationCatchesMistakes(t *testing.T) {
	paths := func(d map[string]any) map[string]any { return d["paths"].(map[string]any) }
	op := func(d map[string]any, path, method string) map[string]any {
		return paths(d)[path].(map[string]any)[method].(map[string]any)
	}
	schemas := func(d map[string]any) map[string]any {
		return d["components"].(map[string]any)["schemas"].(map[string]any)
	}
	for _, c := range []struct {
		name   string
		change func(doc map[string]any)
		want   string // in the validator's error or the rules' problems
	}{
		{"no openapi version", func(d map[string]any) { delete(d, "openapi") }, "openapi must be a non-empty string"},
		{"a misspelt field", func(d map[string]any) { op(d, "/api/v1/users", "put")["sumary"] = "U1" }, "sumary"},
		{"no responses", func(d map[string]any) { delete(op(d, "/api/v1/users", "put"), "responses") }, "responses"},
		{"a dangling reference", func(d map[string]any) {
			schemas(d)["NewUser"].(map[string]any)["properties"].(map[string]any)["username"] = map[string]any{"$ref": "#/components/schemas/Nobody"}
		}, "Nobody"},
		{"an example that breaks its schema", func(d map[string]any) { schemas(d)["Count"].(map[string]any)["example"] = []any{-1} }, "invalid example"},
		{"a path parameter not declared", func(d map[string]any) {
			delete(paths(d)["/api/v1/users/{username}"].(map[string]any), "parameters")
		}, "missing: [username]"},
		{"an error that is not the error object", func(d map[string]any) {
			op(d, "/api/v1/users", "put")["responses"].(map[string]any)["400"] = map[string]any{
				"description": "bad", "content": map[string]any{"text/plain": map[string]any{"schema": map[string]any{"type": "string"}}}}
		}, "PUT /api/v1/users: 400 is not the JSON error object"},
		{"no success", func(d map[string]any) {
			op(d, "/healthz", "get")["responses"] = map[string]any{"500": map[string]any{"$ref": "#/components/responses/InternalError"}}
		}, "GET /healthz: no 2xx answer"},
		{"a 204 with a body", func(d map[string]any) {
			op(d, "/api/v1/users", "get")["responses"].(map[string]any)["204"] = op(d, "/api/v1/users", "get")["responses"].(map[string]any)["200"]
		}, "GET /api/v1/users: a 204 with a body"},
		{"an operationId twice", func(d map[string]any) { op(d, "/healthz", "get")["operationId"] = "readyz" }, "same operation id"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var doc map[string]any
			if err := json.Unmarshal(openapi.Users.JSON(), &doc); err != nil {
				t.Fatal(err)
			}
			c.change(doc)
			raw, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			if loaded, err := loadAndValidate(raw); err != nil {
				got = err.Error()
			} else {
				got = strings.Join(projectRules(loaded), "; ")
			}
			if got == "" {
				t.Fatal("the broken document passed")
			}
			if !strings.Contains(got, c.want) {
				t.Fatalf("refused for %q, want a reason with %q", got, c.want)
			}
		})
	}
}

// Each service serves its own document at GET /openapi.json, byte for byte; another method is
// a 405 with Allow, like every other route.
func TestOpenAPIServedAtOpenAPIJSON(t *testing.T) {
	for _, s := range services {
		t.Run(s.doc.Name(), func(t *testing.T) {
			h := s.handler()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" || rec.Body.String() != string(s.doc.JSON()) {
				t.Fatalf("GET /openapi.json: %d, Content-Type %q, %d bytes", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
			}
			rec = httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/openapi.json", nil))
			if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET" {
				t.Fatalf("POST /openapi.json: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
			}
		})
	}
}
