package httpsvc

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// MaxBodyBytes is the largest request body accepted; a larger one is answered 413.
const MaxBodyBytes = 64 << 10

// Body is a decoded request body: each field's raw JSON value. A form body's values are
// JSON strings, so {"source": "2"} and source=2 decode alike.
type Body map[string]json.RawMessage

// DecodeBody reads r's body, at most MaxBodyBytes, as a JSON object or, when the Content-Type
// is application/x-www-form-urlencoded, as form fields. The body must hold exactly the named
// fields: an unknown, missing or repeated field is a 400 naming it; so is malformed JSON, a
// body that is not one JSON object, or anything after the object. A body over the limit is
// an *http.MaxBytesError, which Status maps to 413.
func DecodeBody(w http.ResponseWriter, r *http.Request, fields ...string) (Body, error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, &http.MaxBytesError{Limit: MaxBodyBytes}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		return nil, BadRequest("cannot read the request body: %v", err)
	}
	var b Body
	if isForm(r.Header.Get("Content-Type")) {
		b, err = parseForm(data)
	} else {
		b, err = parseObject(data)
	}
	if err != nil {
		return nil, err
	}
	if err := b.check(fields); err != nil {
		return nil, err
	}
	return b, nil
}

func isForm(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/x-www-form-urlencoded"
}

func parseForm(data []byte) (Body, error) {
	vals, err := url.ParseQuery(string(data))
	if err != nil {
		return nil, BadRequest("malformed form body: %v", err)
	}
	b := make(Body, len(vals))
	for name, vs := range vals {
		if len(vs) > 1 {
			return nil, BadRequest("field %q given more than once", name)
		}
		raw, _ := json.Marshal(vs[0]) // a string always encodes
		b[name] = raw
	}
	return b, nil
}

// parseObject reads exactly one JSON object, keeping each field's raw value.
func parseObject(data []byte) (Body, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, BadRequest("empty body: expected a JSON object")
	}
	if err != nil {
		return nil, BadRequest("malformed JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, BadRequest("the body must be a JSON object")
	}
	b := Body{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, BadRequest("malformed JSON: %v", unwrapEOF(err))
		}
		name := tok.(string) // inside an object, the decoder only yields string keys
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, BadRequest("malformed JSON in field %q: %v", name, unwrapEOF(err))
		}
		if _, dup := b[name]; dup {
			return nil, BadRequest("field %q given more than once", name)
		}
		b[name] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, BadRequest("malformed JSON: %v", unwrapEOF(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, BadRequest("unexpected data after the JSON object")
	}
	return b, nil
}

func unwrapEOF(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("unexpected end of the body")
	}
	return err
}

// check refuses unknown fields (sorted, so the answer is deterministic) and then missing
// ones, in the order given.
func (b Body) check(fields []string) error {
	var unknown []string
	for name := range b {
		if !slices.Contains(fields, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		name := unknown[0]
		if len(name) > 32 || strings.ContainsAny(name, "{}\"") {
			// Never echo a long or JSON-looking name: it may be the whole body, password
			// included (JSON sent as a form).
			return BadRequest("unknown field (expected %s; is the Content-Type right?)", quoteList(fields))
		}
		return BadRequest("unknown field %q (expected %s)", name, quoteList(fields))
	}
	for _, name := range fields {
		if _, ok := b[name]; !ok {
			return BadRequest("missing field %q", name)
		}
	}
	return nil
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// String returns the named field, which must be a JSON string.
func (b Body) String(name string) (string, error) {
	raw, ok := b[name]
	if !ok {
		return "", BadRequest("missing field %q", name)
	}
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", BadRequest("field %q must be a string, not %s", name, kind(raw))
	}
	return s, nil
}

// Int returns the named field, a JSON integer or a decimal string: 2 and "2" are both 2;
// 2.5, 2e0, "abc", "" and true are refused. Range checks are the caller's.
func (b Body) Int(name string) (int64, error) {
	raw, ok := b[name]
	if !ok {
		return 0, BadRequest("missing field %q", name)
	}
	s := string(raw)
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, BadRequest("field %q must be an integer", name)
		}
	} else if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, BadRequest("field %q must be an integer (2 or \"2\"), not %s", name, kind(raw))
	}
	n, err := ParseInt(s)
	if err != nil {
		return 0, BadRequest("field %q %v", name, err)
	}
	return n, nil
}

// errNotInteger and errRange are ParseInt's failures, phrased to follow a field's name.
var (
	errNotInteger = errors.New(`must be an integer (2 or "2")`)
	errRange      = errors.New("is out of range")
)

// ParseInt parses a decimal integer: an optional minus sign and digits, nothing else (no plus
// sign, spaces, fraction or exponent).
func ParseInt(s string) (int64, error) {
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, errNotInteger
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errRange
	}
	return n, nil
}

// kind names a raw JSON value's type for an error message, without echoing the value.
func kind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
