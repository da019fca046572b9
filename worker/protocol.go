package worker

import (
	"bytes"
	"encoding/json"

	"github.com/rideshare/rideshare"
)

// decode reads one JSON value into v, keeping numbers exact (json.Number) for the contract's
// type checks. strict refuses unknown fields: requests on the queues are checked, log entries
// are read as the master wrote them.
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
		b, _ = json.Marshal(map[string]string{"error": err.Error(), "kind": rideshare.KindInternal})
	}
	return b
}
