package rideshare

import "encoding/json"

// WriteReply answers a request on writeQ (the request body is a Write).
type WriteReply struct {
	Result *Result `json:"result,omitempty"`
	Error  string  `json:"error,omitempty"`
	Kind   string  `json:"kind,omitempty"`
	// Seq is, for a refusal (a duplicate username), the log sequence of the state that
	// refused it: a refusal shows that state as a read does, so later strong reads must wait
	// for it too.
	Seq uint64 `json:"seq,omitempty"`
}

// ReadReply answers a request on readQ (the request body is a Read). Rows is the JSON array of
// row objects that the orchestrator passes on to its client as it is.
type ReadReply struct {
	Rows  json.RawMessage `json:"rows,omitempty"`
	Seq   uint64          `json:"seq"`
	Error string          `json:"error,omitempty"`
	Kind  string          `json:"kind,omitempty"`
}
