package nba

import (
	"testing"
	"time"
)

func TestAtHour(t *testing.T) {
	base := time.Date(2026, 3, 10, 14, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		from time.Time
		h    float64
		want time.Time
	}{
		{base, 19, time.Date(2026, 3, 10, 19, 0, 0, 0, time.UTC)},
		{base, 8, time.Date(2026, 3, 11, 8, 0, 0, 0, time.UTC)},
		{base, 14.5, base},
		{base, 14.25, time.Date(2026, 3, 11, 14, 15, 0, 0, time.UTC)},
		{base.In(time.FixedZone("x", 3600)), 0, time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)},
	} {
		if got := atHour(tc.from, tc.h); !got.Equal(tc.want) {
			t.Errorf("atHour(%s, %g) = %s, want %s", tc.from, tc.h, got, tc.want)
		}
	}
	for _, v := range []any{nil, "19", 24.0, -1.0, true} {
		if _, ok := hourOf(v); ok {
			t.Errorf("hourOf(%v) accepted", v)
		}
	}
	if h, ok := hourOf(int64(7)); !ok || h != 7 {
		t.Errorf("hourOf(7) = %v, %v", h, ok)
	}
}
