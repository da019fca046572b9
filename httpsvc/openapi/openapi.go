// Package openapi holds the OpenAPI 3 documents of the users, rides and orchestrator APIs
// (SPEC §13: each service serves its own at GET /openapi.json) and answers, from a document,
// whether it declares a status for a request.
//
// The documents are written by hand from SPEC.md and the handlers, not generated: what a
// client may rely on is the contract, and a generator would only repeat what the code happens
// to do. Tests keep them honest instead: every route each router serves is documented with
// exactly its methods and nothing else is; each document is a valid OpenAPI 3 document; and
// every status the contract tests expect is one the document declares (Declares).
//
// Each service serves its own document on its own address. The gateway routes none of them:
// GET /openapi.json through it is a 404, since it routes only /api/v1/users* and
// /api/v1/rides* (SPEC §2), and the users and rides documents say which of their paths it
// routes. The package imports nothing of the project, so every service can serve its document.
package openapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

var (
	//go:embed users.json
	usersJSON []byte
	//go:embed rides.json
	ridesJSON []byte
	//go:embed orchestrator.json
	orchestratorJSON []byte
)

// The three documents.
var (
	Users        = &Doc{name: "users.json", raw: usersJSON}
	Rides        = &Doc{name: "rides.json", raw: ridesJSON}
	Orchestrator = &Doc{name: "orchestrator.json", raw: orchestratorJSON}
)

// Doc is one OpenAPI document: the bytes served and, read on first use, its paths and the
// statuses each operation declares. It is read lazily so that a process that never asks
// (a worker, a service answering requests) pays nothing for it.
type Doc struct {
	name string
	raw  []byte

	once sync.Once
	idx  *index
	err  error
}

// New returns the document raw, named name: a test that checks a changed copy of one uses it.
func New(name string, raw []byte) *Doc { return &Doc{name: name, raw: raw} }

// Name is the document's file name, for messages.
func (d *Doc) Name() string { return d.name }

// JSON returns a copy of the document's bytes.
func (d *Doc) JSON() []byte { return slices.Clone(d.raw) }

// Handler serves the document as application/json. Register it for GET only (httpsvc.Methods),
// like every other route, so that another method gets its 405 with Allow.
func Handler(d *Doc) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(d.raw)))
		w.Write(d.raw)
	}
}

// Operations lists the document's paths, each with its methods in upper case, sorted: what
// a router must serve, to compare with it.
func (d *Doc) Operations() (map[string][]string, error) {
	idx, err := d.index()
	if err != nil {
		return nil, err
	}
	ops := make(map[string][]string, len(idx.paths))
	for _, p := range idx.paths {
		var methods []string
		for m := range p.ops {
			methods = append(methods, m)
		}
		slices.Sort(methods)
		ops[p.template] = methods
	}
	return ops, nil
}

// Declares reports whether the document says that a request with this method and path may
// be answered with this status. path is the request's path as sent, escaped (a "/" inside a
// segment is %2F, as URL.EscapedPath gives it), with or without a query string.
//
// The path is matched against the document's path templates segment by segment, a
// {parameter} standing for one non-empty segment and a literal segment winning over a
// parameter, as the services' router does (/api/v1/rides/count before /api/v1/rides/{rideId}).
// Then:
//   - a path that matches no template declares 404 and nothing else;
//   - a method the matched path does not list declares 405 and nothing else;
//   - otherwise the operation's responses are the declared statuses: an exact code, a range
//     such as "4XX", or "default" (which declares every status).
//
// The first two rules are the ones every document's description states, and which OpenAPI
// cannot say per operation. A document that cannot be read declares nothing.
func Declares(d *Doc, method, path string, status int) bool {
	idx, err := d.index()
	if err != nil {
		return false
	}
	path, _, _ = strings.Cut(path, "?")
	p := idx.match(path)
	if p == nil {
		return status == http.StatusNotFound
	}
	codes, ok := p.ops[strings.ToUpper(method)]
	if !ok {
		return status == http.StatusMethodNotAllowed
	}
	code := strconv.Itoa(status)
	return codes[code] || codes[code[:1]+"XX"] || codes["default"]
}

// index is what Declares and Operations need of a document.
type index struct {
	paths []*pathItem
}

type pathItem struct {
	template string
	segs     []string // a "{...}" element is a parameter
	ops      map[string]map[string]bool
}

// methods are the operations a path item may hold, by their OpenAPI field names.
var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func (d *Doc) index() (*index, error) {
	d.once.Do(func() { d.idx, d.err = parse(d.raw) })
	if d.err != nil {
		return nil, fmt.Errorf("%s: %w", d.name, d.err)
	}
	return d.idx, nil
}

func parse(raw []byte) (*index, error) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	if len(doc.Paths) == 0 {
		return nil, fmt.Errorf("no paths")
	}
	idx := &index{}
	for template, item := range doc.Paths {
		if !strings.HasPrefix(template, "/") {
			return nil, fmt.Errorf("path %q does not start with /", template)
		}
		p := &pathItem{template: template, segs: strings.Split(template[1:], "/"), ops: map[string]map[string]bool{}}
		for _, m := range methods {
			opRaw, ok := item[m]
			if !ok {
				continue
			}
			var op struct {
				Responses map[string]json.RawMessage `json:"responses"`
			}
			if err := json.Unmarshal(opRaw, &op); err != nil {
				return nil, fmt.Errorf("%s %s: %w", m, template, err)
			}
			if len(op.Responses) == 0 {
				return nil, fmt.Errorf("%s %s: no responses", m, template)
			}
			codes := map[string]bool{}
			for code := range op.Responses {
				if code != "default" {
					code = strings.ToUpper(code) // a range may be written 4xx
				}
				codes[code] = true
			}
			p.ops[strings.ToUpper(m)] = codes
		}
		idx.paths = append(idx.paths, p)
	}
	// A fixed order, so that a tie (which a valid document cannot have) is not decided by
	// the map's.
	slices.SortFunc(idx.paths, func(a, b *pathItem) int { return strings.Compare(a.template, b.template) })
	return idx, nil
}

func isParam(seg string) bool {
	return len(seg) > 2 && seg[0] == '{' && seg[len(seg)-1] == '}'
}

// match returns the path item whose template matches path, literal segments preferred.
func (idx *index) match(path string) *pathItem {
	if !strings.HasPrefix(path, "/") {
		return nil
	}
	segs := strings.Split(path[1:], "/")
	var best *pathItem
	for _, p := range idx.paths {
		if !p.matches(segs) {
			continue
		}
		if best == nil || moreLiteral(p, best) {
			best = p
		}
	}
	return best
}

func (p *pathItem) matches(segs []string) bool {
	if len(segs) != len(p.segs) {
		return false
	}
	for i, s := range p.segs {
		if isParam(s) {
			if segs[i] == "" {
				return false
			}
		} else if s != segs[i] {
			return false
		}
	}
	return true
}

// moreLiteral reports whether a has a literal segment where b has a parameter, at the first
// segment where they differ in kind: the router tries a static segment before a parameter.
func moreLiteral(a, b *pathItem) bool {
	for i := range a.segs {
		if pa, pb := isParam(a.segs[i]), isParam(b.segs[i]); pa != pb {
			return pb
		}
	}
	return false
}
