package worker

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/rideshare/rideshare/worker/store"
)

// Error kinds in a worker's answer; the orchestrator maps them to HTTP statuses.
const (
	KindInvalid    = "invalid"    // 400
	KindConstraint = "constraint" // 409
	KindRetry      = "retry"      // not applied; another worker may take it (stepped down, behind)
	KindInternal   = "internal"   // 500
	// KindUnavailable: the outcome is unknown (the log append did not answer); not retried.
	KindUnavailable = "unavailable" // 503
)

// WriteReply answers a request on writeQ (the request body is a store.Write).
type WriteReply struct {
	Result *store.Result `json:"result,omitempty"`
	Error  string        `json:"error,omitempty"`
	Kind   string        `json:"kind,omitempty"`
}

// ReadReply answers a request on readQ (the request body is a store.Read). Rows is the JSON
// array of row objects that the orchestrator passes on to its client as it is.
type ReadReply struct {
	Rows  json.RawMessage `json:"rows,omitempty"`
	Seq   uint64          `json:"seq"`
	Error string          `json:"error,omitempty"`
	Kind  string          `json:"kind,omitempty"`
}

func kindOf(err error) string {
	switch {
	case errors.Is(err, store.ErrInvalid):
		return KindInvalid
	case errors.Is(err, store.ErrConstraint):
		return KindConstraint
	}
	return KindInternal
}

// decode reads one JSON value into v, keeping numbers exact (json.Number) for the store's
// type checks. strict refuses unknown fields: requests on the queues are checked, log
// entries are read as the master wrote them.
func decode(data []byte, v any, strict bool) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if strict {
		dec.DisallowUnknownFields()
	}
	return dec.Decode(v)
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": err.Error(), "kind": KindInternal})
	}
	return b
}
