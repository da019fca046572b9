package rideshare_test

import (
	"errors"
	"testing"

	"github.com/rideshare/rideshare"
)

func TestValidateRefusesBadOperations(t *testing.T) {
	writes := map[string]rideshare.Write{
		"no action":            {Table: "users"},
		"two actions":          {Table: "users", Insert: map[string]any{"username": "a", "password": "b"}, Delete: &rideshare.Delete{}},
		"unknown table":        {Table: "sqlite_master", Insert: map[string]any{"x": 1}},
		"unknown column":       {Table: "users", Insert: map[string]any{"username": "a", "password": "b", "admin": 1}},
		"missing column":       {Table: "users", Insert: map[string]any{"username": "a"}},
		"auto column":          {Table: "rides", Insert: map[string]any{"ride_id": 5, "created_by": "a", "timestamp": "x", "ts": 1, "source": 1, "destination": 2}},
		"wrong type":           {Table: "users", Insert: map[string]any{"username": 1, "password": "b"}},
		"null":                 {Table: "users", Insert: map[string]any{"username": nil, "password": "b"}},
		"fraction for integer": {Table: "ride_users", Insert: map[string]any{"ride_id": 1.5, "username": "a"}},
		"injection column":     {Table: "users", Delete: &rideshare.Delete{Where: rideshare.Where{"username = '' OR 1=1 --": "x"}}},
		"bad comparison":       {Table: "rides", Delete: &rideshare.Delete{Where: rideshare.Where{"ts": map[string]any{"like": 1}}}},
		"clear with table":     {Table: "users", Clear: true},
		"nested batch":         {Batch: []rideshare.Write{{Batch: []rideshare.Write{{Table: "users", Insert: map[string]any{"username": "a", "password": "b"}}}}}},
		"empty batch":          {Batch: []rideshare.Write{}},
	}
	for name, w := range writes {
		t.Run("write "+name, func(t *testing.T) {
			if err := rideshare.ValidateWrite(w); !errors.Is(err, rideshare.ErrInvalid) {
				t.Fatalf("want rideshare.ErrInvalid, got %v", err)
			}
		})
	}
	reads := map[string]rideshare.Read{
		"no table":         {},
		"unknown table":    {Table: "meta"},
		"unknown column":   {Table: "users", Columns: []string{"username", "1; DROP TABLE users"}},
		"secret column":    {Table: "users", Columns: []string{"password"}},
		"where on secret":  {Table: "users", Where: rideshare.Where{"password": "x"}},
		"order by unknown": {Table: "users", Order: []rideshare.Order{{Column: "nope"}}},
		"negative limit":   {Table: "users", Limit: -1},
		"bad consistency":  {Table: "users", Consistency: "linearizable"},
		"count with cols":  {Table: "users", Count: true, Columns: []string{"username"}},
		"backup by client": {Table: "users", Backup: true},
	}
	for name, r := range reads {
		t.Run("read "+name, func(t *testing.T) {
			if err := rideshare.ValidateRead(r); !errors.Is(err, rideshare.ErrInvalid) {
				t.Fatalf("want rideshare.ErrInvalid, got %v", err)
			}
		})
	}
}
