package chaos

import (
	"os"
	"strings"
	"testing"
	"time"
)

// ms is a time in the hand-built histories.
func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// Builders of hand-made ops: [from, to] in milliseconds.
func insertOp(client int, key string, from, to int, class Class, id int64) Op {
	op := Op{Client: client, Kind: Insert, Key: key, Password: "pw", Invoke: ms(from), Return: ms(to), Class: class,
		RequestID: reqID(client, from)}
	switch class {
	case Ok:
		op.ID, op.Affected = id, 1
	case Failed:
		op.ErrKind = "constraint"
	}
	return op
}

func deleteOp(client int, key string, from, to int, class Class, affected int64) Op {
	return Op{Client: client, Kind: Delete, Key: key, Invoke: ms(from), Return: ms(to), Class: class,
		Affected: affected, RequestID: reqID(client, from)}
}

// readOp is an acknowledged read that saw the row with id (0: absent).
func readOp(client int, kind Kind, key string, from, to int, id int64) Op {
	op := Op{Client: client, Kind: kind, Key: key, Invoke: ms(from), Return: ms(to), Class: Ok}
	if id != 0 {
		op.ID, op.Rows = id, 1
	}
	return op
}

func batchOp(client int, from, to int, class Class, parts ...Part) Op {
	return Op{Client: client, Kind: Batch, Parts: parts, Invoke: ms(from), Return: ms(to), Class: class,
		RequestID: reqID(client, from)}
}

// reqID is the request id of client's write invoked at from, e.g. "ra40ms".
func reqID(client, from int) string { return "r" + string(rune('a'+client)) + ms(from).String() }

func checkLin(t *testing.T, h []Op) Result {
	t.Helper()
	return CheckLinearizable(h, t.TempDir(), 10*time.Second)
}

func TestLinearizableHolds(t *testing.T) {
	for name, h := range map[string][]Op{
		"insert read delete read": {
			insertOp(0, "alice", 0, 10, Ok, 1),
			readOp(1, StrongRead, "alice", 20, 30, 1),
			deleteOp(0, "alice", 40, 50, Ok, 1),
			readOp(1, StrongRead, "alice", 60, 70, 0),
		},
		"a duplicate insert is refused": {
			insertOp(0, "alice", 0, 10, Ok, 1),
			insertOp(1, "alice", 20, 30, Failed, 0),
		},
		"a read concurrent with an insert may see either state": {
			insertOp(0, "alice", 0, 100, Ok, 1),
			readOp(1, StrongRead, "alice", 10, 20, 0),
			readOp(2, StrongRead, "alice", 30, 40, 1),
		},
		"concurrent inserts: one wins": {
			insertOp(0, "alice", 0, 50, Ok, 7),
			insertOp(1, "alice", 10, 60, Failed, 0),
			readOp(2, StrongRead, "alice", 70, 80, 7),
		},
		// An indeterminate insert may take effect late: long after the client gave up.
		"an indeterminate insert takes effect later": {
			insertOp(0, "alice", 0, 10, Indeterminate, 0),
			readOp(1, StrongRead, "alice", 20, 30, 0),
			readOp(1, StrongRead, "alice", 40, 50, 9),
			readOp(2, StrongRead, "alice", 60, 70, 9),
		},
		"an indeterminate insert that never happened": {
			insertOp(0, "alice", 0, 10, Indeterminate, 0),
			readOp(1, StrongRead, "alice", 20, 30, 0),
			readOp(1, StrongRead, "alice", 200, 300, 0),
		},
		"an indeterminate delete": {
			insertOp(0, "alice", 0, 10, Ok, 1),
			deleteOp(0, "alice", 20, 30, Indeterminate, 0),
			readOp(1, StrongRead, "alice", 40, 50, 1),
			readOp(1, StrongRead, "alice", 60, 70, 0),
		},
		"eventual reads are not held to linearizability": {
			insertOp(0, "alice", 0, 10, Ok, 1),
			readOp(1, EventualRead, "alice", 20, 30, 0),
		},
		"a read that failed observed nothing": {
			insertOp(0, "alice", 0, 10, Ok, 1),
			{Client: 1, Kind: StrongRead, Key: "alice", Invoke: ms(20), Return: ms(30), Class: Indeterminate},
		},
		"a batch of two keys": {
			batchOp(0, 0, 10, Ok, Part{Insert, "alice", "pw"}, Part{Insert, "bob", "pw"}),
			readOp(1, StrongRead, "alice", 20, 30, 3),
			readOp(1, StrongRead, "bob", 40, 50, 4),
		},
		"a batch inserting and deleting one key leaves it absent": {
			batchOp(0, 0, 10, Ok, Part{Insert, "alice", "pw"}, Part{Delete, "alice", ""}),
			readOp(1, StrongRead, "alice", 20, 30, 0),
		},
		"a refused batch did nothing": {
			batchOp(0, 0, 10, Failed, Part{Insert, "alice", "pw"}, Part{Insert, "bob", "pw"}),
			readOp(1, StrongRead, "alice", 20, 30, 0),
		},
		"empty": nil,
	} {
		t.Run(name, func(t *testing.T) {
			if r := checkLin(t, h); !r.Holds {
				t.Errorf("violated on a good history: %s", r)
			}
		})
	}
}

func TestLinearizableViolated(t *testing.T) {
	for name, h := range map[string][]Op{
		"a stale read after an acknowledged insert": {
			insertOp(0, "alice", 0, 10, Ok, 1),
			readOp(1, StrongRead, "alice", 20, 30, 0),
		},
		"a read of a deleted user": {
			insertOp(0, "alice", 0, 10, Ok, 1),
			deleteOp(0, "alice", 20, 30, Ok, 1),
			readOp(1, StrongRead, "alice", 40, 50, 1),
		},
		"a read of an older incarnation": {
			insertOp(0, "alice", 0, 10, Ok, 1),
			deleteOp(0, "alice", 20, 30, Ok, 1),
			insertOp(0, "alice", 40, 50, Ok, 2),
			readOp(1, StrongRead, "alice", 60, 70, 1),
		},
		"reads going back in time": {
			insertOp(0, "alice", 0, 100, Ok, 1), // concurrent with both reads
			readOp(1, StrongRead, "alice", 10, 20, 1),
			readOp(2, StrongRead, "alice", 30, 40, 0),
		},
		"a duplicate refused for a user nobody inserted": {
			insertOp(1, "alice", 20, 30, Failed, 0),
		},
		"a delete that deleted a user nobody inserted": {
			deleteOp(0, "alice", 0, 10, Ok, 1),
		},
		"two acknowledged inserts of one user": {
			insertOp(0, "alice", 0, 10, Ok, 1),
			insertOp(1, "alice", 20, 30, Ok, 2),
		},
		// Even an indeterminate insert cannot explain a user that disappears with no delete.
		"an indeterminate insert seen, then unseen": {
			insertOp(0, "alice", 0, 10, Indeterminate, 0),
			readOp(1, StrongRead, "alice", 20, 30, 9),
			readOp(1, StrongRead, "alice", 40, 50, 0),
		},
		"half a batch": {
			batchOp(0, 0, 10, Ok, Part{Insert, "alice", "pw"}, Part{Insert, "bob", "pw"}),
			readOp(1, StrongRead, "alice", 20, 30, 3),
			readOp(1, StrongRead, "bob", 40, 50, 0),
		},
	} {
		t.Run(name, func(t *testing.T) {
			if r := checkLin(t, h); r.Holds {
				t.Errorf("holds on a bad history: %s", r)
			}
		})
	}
}

// A violation names the failing key only and writes its visualisation.
func TestLinearizableVisualizesTheFailingKey(t *testing.T) {
	dir := t.TempDir()
	h := []Op{
		insertOp(0, "good", 0, 10, Ok, 1),
		readOp(1, StrongRead, "good", 20, 30, 1),
		insertOp(0, "bad/key", 40, 50, Ok, 2),
		readOp(1, StrongRead, "bad/key", 60, 70, 0),
	}
	r := CheckLinearizable(h, dir, 10*time.Second)
	if r.Holds || strings.Contains(r.Evidence, `"good"`) || !strings.Contains(r.Evidence, `"bad/key"`) {
		t.Fatalf("want a violation on bad/key alone: %s", r)
	}
	i := strings.Index(r.Evidence, "visualisation: ")
	if i < 0 {
		t.Fatalf("no visualisation named: %s", r.Evidence)
	}
	path := strings.TrimSpace(r.Evidence[i+len("visualisation: "):])
	if !strings.HasPrefix(path, dir) {
		t.Errorf("visualisation %s is not in %s", path, dir)
	}
	page, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), "<html") || !strings.Contains(string(page), "bad/key") {
		t.Errorf("%s is not porcupine's page of the key (%d bytes)", path, len(page))
	}
}

// Many concurrent clients on few keys stay quick to check: the register's states are few.
func TestLinearizableLargeHistory(t *testing.T) {
	var h []Op
	ids := map[string]int64{}
	next := int64(1)
	for i := range 3000 {
		key := []string{"a", "b", "c"}[i%3]
		c := i % 8
		from := i * 10
		// Sequential per key, overlapping across keys; every fourth op a read.
		switch present := ids[key] != 0; {
		case i%4 == 3:
			h = append(h, readOp(c, StrongRead, key, from, from+25, ids[key]))
		case present:
			h = append(h, deleteOp(c, key, from, from+25, Ok, 1))
			ids[key] = 0
		default:
			h = append(h, insertOp(c, key, from, from+25, Ok, next))
			ids[key] = next
			next++
		}
	}
	start := time.Now()
	if r := checkLin(t, h); !r.Holds {
		t.Fatalf("violated: %s", r)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("checking 3,000 ops took %v", d)
	}
}
