package rides

import (
	"strings"
	"testing"
)

func TestEmbeddedAreas(t *testing.T) {
	if n := NumAreas(); n != 198 {
		t.Fatalf("NumAreas() = %d, want 198", n)
	}
	tests := []struct {
		id       int64
		wantName string
		wantOK   bool
	}{
		{1, "Kempegowda Ward", true},
		{198, "Hemmigepura", true},
		{0, "", false},
		{199, "", false},
		{-1, "", false},
	}
	for _, tt := range tests {
		name := "area known"
		if !tt.wantOK {
			name = "area unknown"
		}
		t.Run(name, func(t *testing.T) {
			got, ok := AreaName(tt.id)
			if got != tt.wantName || ok != tt.wantOK {
				t.Fatalf("AreaName(%d) = %q, %v; want %q, %v", tt.id, got, ok, tt.wantName, tt.wantOK)
			}
		})
	}
	t.Run("ids are 1 to 198 without a gap", func(t *testing.T) {
		for id := int64(1); id <= 198; id++ {
			if _, ok := AreaName(id); !ok {
				t.Fatalf("area %d missing", id)
			}
		}
	})
}

func TestParseAreasRefusesBadFiles(t *testing.T) {
	tests := []struct{ name, csv string }{
		{"empty", ""},
		{"header only", "Area No,Area Name\n"},
		{"id not a number", "Area No,Area Name\nx,Somewhere\n"},
		{"id zero", "Area No,Area Name\n0,Somewhere\n"},
		{"duplicate id", "Area No,Area Name\n1,A\n1,B\n"},
		{"missing name", "Area No,Area Name\n1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" refused", func(t *testing.T) {
			if _, err := parseAreas([]byte(tt.csv)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	t.Run("quoted names with commas accepted", func(t *testing.T) {
		m, err := parseAreas([]byte("Area No,Area Name\n1,\"A, B\"\n"))
		if err != nil || !strings.Contains(m[1], ",") {
			t.Fatalf("got %v, %v", m, err)
		}
	})
}
