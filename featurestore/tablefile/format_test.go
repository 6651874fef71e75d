package tablefile

import (
	"strings"
	"testing"
)

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{
		"csv": CSV, "CSV": CSV, "parquet": Parquet, "pq": Parquet,
		"arrow": Arrow, "ipc": Arrow, "feather": Arrow, " Arrow ": Arrow,
	} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "xlsx", "json"} {
		_, err := ParseFormat(in)
		if err == nil || !strings.Contains(err.Error(), "csv, parquet, arrow") {
			t.Errorf("ParseFormat(%q) error = %v, want one listing the valid formats", in, err)
		}
	}
}

func TestDetectFormat(t *testing.T) {
	cases := []struct {
		path, override string
		want           Format
	}{
		{"a.csv", "", CSV},
		{"dir.v2/A.CSV", "", CSV},
		{"a.parquet", "", Parquet},
		{"a.pq", "", Parquet},
		{"a.arrow", "", Arrow},
		{"a.ipc", "", Arrow},
		{"a.feather", "", Arrow},
		{"a.arrows", "", Arrow},
		{"a.txt", "csv", CSV},
		{"a.csv", "parquet", Parquet},
		{"-", "arrow", Arrow},
	}
	for _, tc := range cases {
		if got, err := DetectFormat(tc.path, tc.override); err != nil || got != tc.want {
			t.Errorf("DetectFormat(%q, %q) = %q, %v; want %q", tc.path, tc.override, got, err, tc.want)
		}
	}
	for _, path := range []string{"data.txt", "data", "data.csv.gz"} {
		_, err := DetectFormat(path, "")
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--format") {
			t.Errorf("DetectFormat(%q) error = %v, want one naming the file and --format", path, err)
		}
	}
	if _, err := DetectFormat("a.csv", "xlsx"); err == nil {
		t.Error("a bad override: no error")
	}
}
