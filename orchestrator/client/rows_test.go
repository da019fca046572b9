package client

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// slowDecode is what the client did before decodeReadResult, and still does when it declines.
func slowDecode(data []byte) (ReadResult, error) {
	var res ReadResult
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&res); err != nil {
		return res, err
	}
	normalize(&res)
	return res, nil
}

// Whenever the fast parser accepts an answer, it must decode it exactly as encoding/json does;
// it may decline anything (the client then uses encoding/json).
func FuzzDecodeReadResult(f *testing.F) {
	for _, s := range []string{
		`{"rows":[{"ride_id":1,"created_by":"alice","timestamp":"01-01-2030:00-00-00"}],"seq":9}`,
		`{"rows":[],"seq":0}` + "\n",
		` { "rows" : [ { "a" : -12 , "b" : "x" } , {"a":0} ] , "seq" : 18446744073709551615 } `,
		`{"rows":[{"count":3}],"seq":4}`,
		`{"rows":[{"s":"q\"uo\\te \/ \b\f\n\r\t \u00e9 \ud83d\ude97 \ud800 \udc00x \ud800\u0041 <>&"}],"seq":1}`,
		"{\"rows\":[{\"s\":\"h\xc3\xa9llo \xff bad\"}],\"seq\":2}",
		`{"rows":[{"a":1.5}],"seq":1}`,
		`{"rows":[{"a":1e3}],"seq":1}`,
		`{"rows":[{"a":01}],"seq":1}`,
		`{"rows":[{"a":null}],"seq":1}`,
		`{"rows":[{"a":1,"a":2}],"seq":1}`,
		`{"seq":1,"rows":[{"a":"b"}]}`,
		`{"rows":null,"seq":1}`,
		`{"rows":[{"a":9223372036854775808}],"seq":1}`,
		`{"rows":[{"a":"x"}],"seq":-1}`,
		`{"rows":[{"a":"x"}]}`,
		`{"rows":[{"a":"x"}],"seq":1} trailing`,
		`{"rows":[{"a":"unterminated}],"seq":1}`,
		`{"rows":[{"a":"\u12"}],"seq":1}`,
		`{"rows":[{"a":"x",}],"seq":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast ReadResult
		if err := decodeReadResult(data, &fast); err != nil {
			return // declined: encoding/json decides
		}
		slow, err := slowDecode(data)
		if err != nil {
			t.Fatalf("fast parser accepted %q, encoding/json refuses it: %v", data, err)
		}
		if len(fast.Rows) == 0 && len(slow.Rows) == 0 {
			fast.Rows, slow.Rows = nil, nil
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q:\n fast %#v\n json %#v", data, fast, slow)
		}
	})
}

// The usual answers take the fast path (or the parser would be dead weight).
func TestDecodeReadResultTakesTheUsualAnswers(t *testing.T) {
	for _, s := range []string{
		`{"rows":[{"ride_id":1,"created_by":"alice","timestamp":"01-01-2030:00-00-00"}],"seq":9}` + "\n",
		`{"rows":[],"seq":0}`,
		`{"rows":[{"username":"caf\u00e9 \"x\""}],"seq":3}`,
	} {
		var res ReadResult
		if err := decodeReadResult([]byte(s), &res); err != nil {
			t.Errorf("declined %s: %v", s, err)
		}
	}
}
