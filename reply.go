package rideshare

import "encoding/json"

// WriteReply answers a request on writeQ (the request body is a Write).
type WriteReply struct {
	Result *Result `json:"result,omitempty"`
	Error  string  `json:"error,omitempty"`
	Kind   string  `json:"kind,omitempty"`
}

// ReadReply answers a request on readQ (the request body is a Read). Rows is the JSON array of
// row objects that the orchestrator passes on to its client as it is.
type ReadReply struct {
	Rows  json.RawMessage `json:"rows,omitempty"`
	Seq   uint64          `json:"seq"`
	Error string          `json:"error,omitempty"`
	Kind  string          `json:"kind,omitempty"`
}
