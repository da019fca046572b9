package chaos

import (
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/rideshare/rideshare"
)

// A violated run's evidence reads back as it was recorded, so that it can be studied after the
// stack is gone.
func TestEvidenceRoundTrips(t *testing.T) {
	h := []Op{
		{Client: 1, Kind: Insert, Key: "chaos_1", Password: password, RequestID: "r1", Invoke: time.Millisecond,
			Return: 3 * time.Millisecond, Class: Ok, Seq: 7, ID: 4},
		{Client: 2, Kind: Insert, Key: "chaos_1", Password: password, RequestID: "r2", Invoke: 4 * time.Millisecond,
			Return: 5 * time.Millisecond, Class: Failed, ErrKind: rideshare.KindConstraint, Err: "exists"},
		{Client: 3, Kind: Batch, Parts: []Part{{Kind: Delete, Key: "chaos_1"}}, Invoke: 6 * time.Millisecond, Class: Indeterminate},
	}
	log := []Entry{{Seq: 1, Promote: "w1"}, {Seq: 7, Writes: []rideshare.Write{{Table: "users", Insert: map[string]any{"username": "chaos_1"}, RequestID: "r1"}}}}
	path, err := WriteEvidence(t.TempDir(), h, log)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("%s: %v %v", path, fi, err)
	}
	got, err := ReadEvidence(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.History, h) {
		t.Errorf("history read back as\n%+v\nwant\n%+v", got.History, h)
	}
	if len(got.Log) != 2 || got.Log[0].Promote != "w1" || got.Log[1].Writes[0].RequestID != "r1" ||
		got.Log[1].Writes[0].Insert["username"] != "chaos_1" {
		t.Errorf("log read back as %+v", got.Log)
	}
}
