package rides

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"fmt"
	"strconv"
)

// areaCSV is the project's copy of AreaNameEnum.csv: a header, then "id,name" rows, ids 1–198.
//
//go:embed AreaNameEnum.csv
var areaCSV []byte

// areas maps an area id to its name.
var areas = mustParseAreas(areaCSV)

func mustParseAreas(data []byte) map[int64]string {
	m, err := parseAreas(data)
	if err != nil {
		panic(fmt.Sprintf("embedded AreaNameEnum.csv: %v", err))
	}
	return m
}

func parseAreas(data []byte) (map[int64]string, error) {
	recs, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) < 2 {
		return nil, fmt.Errorf("no areas")
	}
	m := make(map[int64]string, len(recs)-1)
	for i, rec := range recs[1:] {
		if len(rec) != 2 {
			return nil, fmt.Errorf("row %d: want 2 fields, got %d", i+2, len(rec))
		}
		id, err := strconv.ParseInt(rec[0], 10, 64)
		if err != nil || id < 1 {
			return nil, fmt.Errorf("row %d: bad area id %q", i+2, rec[0])
		}
		if _, dup := m[id]; dup {
			return nil, fmt.Errorf("row %d: area %d listed twice", i+2, id)
		}
		m[id] = rec[1]
	}
	return m, nil
}

// NumAreas is the number of areas; their ids are 1 to NumAreas.
func NumAreas() int { return len(areas) }

// AreaName returns the name of area id, and whether there is such an area.
func AreaName(id int64) (string, bool) {
	name, ok := areas[id]
	return name, ok
}
