package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/rideshare/rideshare"
	"reflect"
	"strings"
	"testing"
)

// The slave writes its answer by hand; a client decodes it with encoding/json. The two must
// agree byte for byte on every string, or a username could come back different from how it
// was stored.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "alice", `quo"te`, `back\slash`, "tab\tnew\nline\r", "\x00\x01\x1f\x7f",
		"<script>&</script>", "\u2028\u2029", "\b\f", "héllo wörld ✓ 🚗", "\xff\xfe invalid", "a\xc3", "\ufffd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendJSONString(%q) = %s, encoding/json gives %s", s, got, want)
		}
	})
}

func TestAppendJSONValue(t *testing.T) {
	for _, v := range []any{int64(0), int64(-42), int64(9223372036854775807), "x", nil, []byte("blob"), 1.5} {
		want, _ := json.Marshal(v)
		got, err := appendJSONValue(nil, v)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("appendJSONValue(%#v) = %s, %v; want %s", v, got, err, want)
		}
	}
}

// QueryJSON is what slaves answer with, Query what the tests and the local store use: the
// same rows, whatever the read asks for.
func TestQueryJSONEqualsQuery(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	log := &memLog{}
	for _, w := range []rideshare.Write{user("alice"), user(`bob "the" <builder>`), user("ünïcödé\u2028"), ride("alice", 1, 2), ride("alice", 1, 2), ride(`bob "the" <builder>`, 3, 4)} {
		if _, err := s.Execute(ctx, w, log.appender(s)); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []rideshare.Read{
		{Table: "users"},
		{Table: "users", Columns: []string{"username", "id"}},
		{Table: "rides", Where: rideshare.Where{"source": 1, "destination": 2, "ts": map[string]any{"gt": 0}}, Columns: []string{"ride_id", "created_by", "timestamp"}},
		{Table: "rides", Order: []rideshare.Order{{Column: "ride_id", Desc: true}}, Limit: 2},
		{Table: "rides", Count: true},
		{Table: "rides", Where: rideshare.Where{"source": 99}},
	} {
		t.Run(fmt.Sprintf("%+v", r), func(t *testing.T) {
			rows, err := s.Query(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := s.QueryJSON(ctx, r, []byte("prefix:"))
			if err != nil {
				t.Fatal(err)
			}
			raw, ok := bytes.CutPrefix(raw, []byte("prefix:"))
			if !ok {
				t.Fatalf("QueryJSON did not append to dst: %s", raw)
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			var got []rideshare.Row
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("QueryJSON gave invalid JSON %s: %v", raw, err)
			}
			for _, row := range got {
				for k, v := range row {
					if n, ok := v.(json.Number); ok {
						row[k], _ = n.Int64()
					}
				}
			}
			if len(rows) == 0 {
				rows, got = nil, nil
				if string(raw) != "[]" {
					t.Fatalf("no rows: QueryJSON = %s, want []", raw)
				}
			}
			if !reflect.DeepEqual(got, rows) {
				t.Fatalf("QueryJSON rows %v, Query rows %v", got, rows)
			}
			// Columns come in the order asked for (the schema's by default).
			if len(r.Columns) > 0 && len(rows) > 0 && !strings.HasPrefix(string(raw), `[{"`+r.Columns[0]+`":`) {
				t.Fatalf("columns out of order: %s", raw)
			}
		})
	}
}

// A client trying every shape of query must not grow the statement cache without bound, and
// reads and writes must go on working once it is full.
func TestStatementCacheIsBounded(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	log := &memLog{}
	if _, err := s.Execute(ctx, user("alice"), log.appender(s)); err != nil {
		t.Fatal(err)
	}
	for i := range maxCachedStmts + 50 {
		// Each limit is a different SQL text.
		rows, err := s.Query(ctx, rideshare.Read{Table: "users", Columns: []string{"username"}, Limit: i + 1})
		if err != nil || len(rows) != 1 {
			t.Fatalf("query %d: %v, %v", i, rows, err)
		}
	}
	if n := len(s.rStmts.m); n != maxCachedStmts {
		t.Fatalf("%d cached read statements, want the bound %d", n, maxCachedStmts)
	}
	for i := range 20 {
		if _, err := s.Execute(ctx, user(fmt.Sprintf("u%d", i)), log.appender(s)); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := s.Query(ctx, rideshare.Read{Table: "users", Count: true})
	if err != nil || rows[0]["count"] != int64(21) {
		t.Fatalf("count after a full cache: %v, %v", rows, err)
	}
}
