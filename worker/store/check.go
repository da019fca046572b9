package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rideshare/rideshare"
)

// ErrNotACopy means a file offered as a backup is not a whole database of this schema.
var ErrNotACopy = errors.New("not a RideShare database copy")

// sqliteHeader starts every SQLite 3 database file.
var sqliteHeader = []byte("SQLite format 3\x00")

// CheckCopy checks that the file at path is a whole, intact database of this schema, as a
// backup or snapshot must be before a deployment starts from it, and returns the sequence it
// holds. A file of another kind, a truncated or damaged copy, or a database without this
// schema's tables and columns is refused with ErrNotACopy and the reason.
func CheckCopy(ctx context.Context, path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	head := make([]byte, len(sqliteHeader))
	_, err = io.ReadFull(f, head)
	f.Close()
	if err != nil || !bytes.Equal(head, sqliteHeader) {
		return 0, fmt.Errorf("%w: %s is not a SQLite database", ErrNotACopy, path)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	// quick_check reads every page: a truncated file or a damaged page fails here.
	var verdict string
	if err := db.QueryRowContext(ctx, "PRAGMA quick_check(1)").Scan(&verdict); err != nil {
		return 0, fmt.Errorf("%w: %s is damaged: %v", ErrNotACopy, path, err)
	}
	if verdict != "ok" {
		return 0, fmt.Errorf("%w: %s is damaged: %s", ErrNotACopy, path, verdict)
	}
	for _, t := range rideshare.Schema {
		cols := map[string]bool{}
		rows, err := db.QueryContext(ctx, "SELECT name FROM pragma_table_info(?)", t.Name)
		if err != nil {
			return 0, fmt.Errorf("%w: %s: %v", ErrNotACopy, path, err)
		}
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				rows.Close()
				return 0, err
			}
			cols[name] = true
		}
		rows.Close()
		for _, c := range t.Columns {
			if !cols[c.Name] {
				return 0, fmt.Errorf("%w: %s has no column %s.%s", ErrNotACopy, path, t.Name, c.Name)
			}
		}
	}
	var seq uint64
	if err := db.QueryRowContext(ctx, appliedSeqQuery).Scan(&seq); err != nil {
		return 0, fmt.Errorf("%w: %s holds no applied sequence: %v", ErrNotACopy, path, err)
	}
	return seq, nil
}
