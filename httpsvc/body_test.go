package httpsvc_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rideshare/rideshare/httpsvc"
)

func request(body, contentType string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/x", strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

// decodeErr decodes body expecting the fields name (string) and n (integer) and returns the
// status and reason of the failure, or 0 and the decoded values.
func decode(body, contentType string) (status int, reason string, name string, n int64) {
	b, err := httpsvc.DecodeBody(httptest.NewRecorder(), request(body, contentType), "name", "n")
	if err == nil {
		name, err = b.String("name")
	}
	if err == nil {
		n, err = b.Int("n")
	}
	if err != nil {
		status, reason = httpsvc.Status(err)
	}
	return status, reason, name, n
}

func TestDecodeBodyAccepts(t *testing.T) {
	tests := []struct {
		name, body, contentType string
		wantName                string
		wantN                   int64
	}{
		{"json object", `{"name":"alice","n":2}`, "application/json", "alice", 2},
		{"decimal string for an integer", `{"name":"alice","n":"2"}`, "application/json", "alice", 2},
		{"negative integer (range is the caller's)", `{"name":"a","n":-7}`, "application/json", "a", -7},
		{"no content type read as json", `{"name":"a","n":1}`, "", "a", 1},
		{"json with charset", `{"name":"a","n":1}`, "application/json; charset=utf-8", "a", 1},
		{"surrounding whitespace", " \n{\"name\":\"a\",\"n\":1}\n ", "application/json", "a", 1},
		{"form fields", "name=alice&n=2", "application/x-www-form-urlencoded", "alice", 2},
		{"form with escapes", "name=%27%3B+DROP+TABLE+users%3B--&n=3", "application/x-www-form-urlencoded; charset=utf-8", "'; DROP TABLE users;--", 3},
		{"unicode and html kept", `{"name":"<b>é</b>","n":1}`, "application/json", "<b>é</b>", 1},
		{"empty string is a string", `{"name":"","n":1}`, "application/json", "", 1},
		{"largest int64", `{"name":"a","n":9223372036854775807}`, "", "a", 9223372036854775807},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, reason, name, n := decode(tt.body, tt.contentType)
			if status != 0 {
				t.Fatalf("refused with %d %q", status, reason)
			}
			if name != tt.wantName || n != tt.wantN {
				t.Fatalf("got (%q, %d), want (%q, %d)", name, n, tt.wantName, tt.wantN)
			}
		})
	}
}

func TestDecodeBodyRefuses(t *testing.T) {
	form := "application/x-www-form-urlencoded"
	tests := []struct {
		name, body, contentType string
		wantStatus              int
		wantReason              string // a substring
	}{
		{"empty body", ``, "", 400, "empty body"},
		{"malformed json", `{"name":"a",`, "", 400, "malformed JSON"},
		{"malformed value names its field", `{"name":"a","n":tru}`, "", 400, `field "n"`},
		{"not an object", `["a",1]`, "", 400, "JSON object"},
		{"null body", `null`, "", 400, "JSON object"},
		{"trailing garbage", `{"name":"a","n":1} x`, "", 400, "after the JSON object"},
		{"second object", `{"name":"a","n":1}{}`, "", 400, "after the JSON object"},
		{"unknown field", `{"name":"a","n":1,"admin":true}`, "", 400, `unknown field "admin"`},
		{"missing field", `{"name":"a"}`, "", 400, `missing field "n"`},
		{"duplicate field", `{"name":"a","name":"b","n":1}`, "", 400, `field "name" given more than once`},
		{"string field given a number", `{"name":5,"n":1}`, "", 400, `field "name" must be a string`},
		{"string field given null", `{"name":null,"n":1}`, "", 400, `field "name" must be a string`},
		{"integer given a fraction", `{"name":"a","n":2.5}`, "", 400, `field "n" must be an integer`},
		{"integer given an exponent", `{"name":"a","n":2e0}`, "", 400, `field "n" must be an integer`},
		{"integer given a fraction string", `{"name":"a","n":"2.5"}`, "", 400, `field "n" must be an integer`},
		{"integer given letters", `{"name":"a","n":"abc"}`, "", 400, `field "n" must be an integer`},
		{"integer given an empty string", `{"name":"a","n":""}`, "", 400, `field "n" must be an integer`},
		{"integer given a plus sign", `{"name":"a","n":"+2"}`, "", 400, `field "n" must be an integer`},
		{"integer given spaces", `{"name":"a","n":" 2"}`, "", 400, `field "n" must be an integer`},
		{"integer given a boolean", `{"name":"a","n":true}`, "", 400, `field "n" must be an integer`},
		{"integer given an object", `{"name":"a","n":{}}`, "", 400, `field "n" must be an integer`},
		{"integer out of range", `{"name":"a","n":9223372036854775808}`, "", 400, `field "n" is out of range`},
		{"form unknown field", "name=a&n=1&x=2", form, 400, `unknown field "x"`},
		{"form missing field", "name=a", form, 400, `missing field "n"`},
		{"form repeated field", "name=a&name=b&n=1", form, 400, `field "name" given more than once`},
		{"form malformed escape", "name=%zz&n=1", form, 400, "malformed form body"},
		{"form integer given letters", "name=a&n=x", form, 400, `field "n" must be an integer`},
		{"json sent as form", `{"name":"a","n":1}`, form, 400, "unknown field"},
		{"body over 64 KiB", `{"name":"` + strings.Repeat("a", httpsvc.MaxBodyBytes) + `","n":1}`, "", 413, "larger than 65536 bytes"},
		{"form over 64 KiB", "name=" + strings.Repeat("a", httpsvc.MaxBodyBytes) + "&n=1", form, 413, "larger than 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, reason, _, _ := decode(tt.body, tt.contentType)
			if status != tt.wantStatus || !strings.Contains(reason, tt.wantReason) {
				t.Fatalf("got %d %q, want %d containing %q", status, reason, tt.wantStatus, tt.wantReason)
			}
		})
	}
}

func TestDecodeBodyLimitIsInclusive(t *testing.T) {
	pad := httpsvc.MaxBodyBytes - len(`{"name":"","n":1}`)
	body := `{"name":"` + strings.Repeat("a", pad) + `","n":1}`
	if len(body) != httpsvc.MaxBodyBytes {
		t.Fatalf("test body is %d bytes", len(body))
	}
	t.Run("exactly 64 KiB accepted", func(t *testing.T) {
		if status, reason, _, _ := decode(body, ""); status != 0 {
			t.Fatalf("refused with %d %q", status, reason)
		}
	})
	t.Run("one byte more refused without a content length", func(t *testing.T) {
		r := request(body+" ", "")
		r.ContentLength = -1 // as with chunked encoding: the limit must hold while reading
		_, err := httpsvc.DecodeBody(httptest.NewRecorder(), r, "name", "n")
		var tooBig *http.MaxBytesError
		if !errors.As(err, &tooBig) {
			t.Fatalf("got %v, want a *http.MaxBytesError", err)
		}
	})
}

func TestParseInt(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"2", 2, false},
		{"007", 7, false},
		{"-3", -3, false},
		{"", 0, true},
		{"-", 0, true},
		{"+2", 0, true},
		{"2.0", 0, true},
		{"1e3", 0, true},
		{"0x10", 0, true},
		{" 1", 0, true},
		{"1_000", 0, true},
		{"99999999999999999999", 0, true},
	}
	for _, tt := range tests {
		name := "accepts " + tt.in
		if tt.wantErr {
			name = "refuses " + tt.in
		}
		t.Run(name, func(t *testing.T) {
			got, err := httpsvc.ParseInt(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseInt(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
