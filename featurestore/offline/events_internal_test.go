package offline

import (
	"strings"
	"testing"
	"time"
)

func TestColumnValue(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		typ  string
		in   any
		want any
		err  string
	}{
		{"String", "x", "x", ""},
		{"LowCardinality(String)", "x", "x", ""},
		{"Nullable(String)", nil, nil, ""},
		{"String", nil, nil, "null, but the column is String"},
		{"String", int64(1), nil, "does not fit String"},
		{"Int8", int64(127), int8(127), ""},
		{"Int8", int64(128), nil, "does not fit Int8"},
		{"UInt8", true, uint8(1), ""},
		{"UInt32", int64(-1), nil, "does not fit UInt32"},
		{"UInt64", int64(1 << 62), uint64(1 << 62), ""},
		{"Int64", float64(3), int64(3), ""},
		{"Int64", 3.5, nil, "does not fit"},
		{"Float32", 1.5, float32(1.5), ""},
		{"Float64", int64(2), float64(2), ""},
		{"DateTime", at, at, ""},
		{"Nullable(DateTime)", "soon", nil, "does not fit Nullable(DateTime)"},
	} {
		got, err := columnValue(tc.typ, tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s <- %v: %v, want an error with %q", tc.typ, tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s <- %v = %v (%T), %v; want %v (%T)", tc.typ, tc.in, got, got, err, tc.want, tc.want)
		}
	}
}
