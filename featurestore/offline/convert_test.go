package offline_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

// TestNoSilentNarrowing: a number too large for a float32 feature is an
// error naming it, whether it comes as a float64 or as text, never an
// infinity; an infinity given as such stays one; instants ClickHouse
// cannot store are refused.
func TestNoSilentNarrowing(t *testing.T) {
	fb := array.NewFloat64Builder(memory.DefaultAllocator)
	fb.AppendValues([]float64{1e300, math.MaxFloat32, math.Inf(1)}, nil)
	floats := fb.NewArray()
	defer floats.Release()
	sb := array.NewStringBuilder(memory.DefaultAllocator)
	sb.AppendValues([]string{"1e300", "3.5"}, nil)
	texts := sb.NewArray()
	defer texts.Release()
	for _, tc := range []struct {
		name string
		arr  any
		i    int
		err  string
	}{
		{"float64 1e300", floats, 0, "out of range for float32"},
		{"largest float32", floats, 1, ""},
		{"infinity", floats, 2, ""},
		{"text 1e300", texts, 0, "out of range for float32"},
		{"text 3.5", texts, 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v any
			var err error
			switch a := tc.arr.(type) {
			case *array.Float64:
				v, err = offline.CellValue(a, tc.i, definitions.Float32)
			case *array.String:
				v, err = offline.CellValue(a, tc.i, definitions.Float32)
			}
			if tc.err == "" {
				if err != nil {
					t.Fatalf("%v", err)
				}
				if f := v.(float32); math.IsInf(float64(f), 0) != (tc.name == "infinity") {
					t.Fatalf("got %v", f)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(strings.ReplaceAll(err.Error(), "+", ""), "1e300") {
				t.Fatalf("got %v, %v; want an error naming 1e300 and %q", v, err, tc.err)
			}
		})
	}
	for _, at := range []time.Time{time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(-1, 0), time.Date(2106, 2, 7, 6, 28, 16, 0, time.UTC)} {
		if err := offline.CheckInstant(at); err == nil {
			t.Errorf("CheckInstant(%s) accepted an instant DateTime cannot hold", at)
		}
	}
	for _, at := range []time.Time{time.Unix(0, 0), time.Date(2106, 2, 7, 6, 28, 15, 0, time.UTC)} {
		if err := offline.CheckInstant(at); err != nil {
			t.Errorf("CheckInstant(%s): %v", at, err)
		}
	}
}
