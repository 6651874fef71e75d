package tablefile

import (
	"strings"
	"testing"
	"time"
)

func TestParseTimestamp(t *testing.T) {
	base := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time
	}{
		{"2024-01-02 03:04:05", base},
		{"2024-01-02T03:04:05", base},
		{"2024-01-02T03:04:05Z", base},
		{"2024-01-02t03:04:05z", base},
		{"2024-01-02T05:04:05+02:00", base},
		{"2024-01-01T22:04:05-05:00", base},
		{"2024-01-02T08:34:05+05:30", base},
		{"2024-01-02 05:04:05+02", base},
		{"2024-01-02 05:04:05+0200", base},
		{"2024-01-02 03:04:05Z", base},
		{"2024-01-02 03:04:05.25", base.Add(250 * time.Millisecond)},
		{"2024-01-02T03:04:05.123456789Z", base.Add(123456789)},
		{"2024-01-02T03:04:05.1234567891Z", base.Add(123456789)},
		{"2024-01-02T05:04:05.5+02:00", base.Add(500 * time.Millisecond)},
		{"2024-01-02", time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)},
		{"2024-02-29 00:00:00", time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
		{"2000-02-29", time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC)},
		{"1704164645", base},
		{"1700000000", time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC)},
		{"0", time.Unix(0, 0).UTC()},
		{"-86400", time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)},
		{"253402300799", time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)},
	}
	for _, tc := range cases {
		got, err := ParseTimestamp(tc.in)
		if err != nil || !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("ParseTimestamp(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseTimestampErrors(t *testing.T) {
	for _, in := range []string{
		"", " ", "yesterday", "-", "1.5", "1e9", "+5", "0x10",
		"1700000000000", // milliseconds, not seconds
		"2024/01/02", "2024-1-2", "24-01-02", "2024-01-02 ", " 2024-01-02",
		"2024-13-01", "2024-00-10", "2024-01-32", "2023-02-29", "1900-02-29",
		"2024-01-02 24:00:00", "2024-01-02 23:60:00", "2024-01-02 23:59:60",
		"2024-01-02 03:04", "2024-01-02T03:04:05.", "2024-01-02T03:04:05.x",
		"2024-01-02T03:04:05+2:00", "2024-01-02T03:04:05+02:0", "2024-01-02T03:04:05+24:00",
		"2024-01-02T03:04:05 UTC", "2024-01-02T03:04:05ZZ", "2024-01-02X03:04:05",
	} {
		_, err := ParseTimestamp(in)
		if err == nil {
			t.Errorf("ParseTimestamp(%q): no error", in)
			continue
		}
		for _, want := range []string{`"` + in + `"`, "RFC 3339", "YYYY-MM-DD HH:MM:SS", "epoch seconds"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("ParseTimestamp(%q) error %q does not contain %q", in, err, want)
			}
		}
	}
}

// TestParseTimestampAllocs: the common forms parse without allocating.
func TestParseTimestampAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	for _, in := range []string{"2024-01-02 03:04:05", "1700000000", "2024-01-02T03:04:05.123Z", "2024-01-02T05:04:05+02:00", "2024-01-02"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = ParseTimestamp(in) }); n != 0 {
			t.Errorf("ParseTimestamp(%q) allocates %v times", in, n)
		}
	}
}

func BenchmarkParseTimestamp(b *testing.B) {
	for _, in := range []string{"2024-01-02 03:04:05", "1700000000", "2024-01-02T03:04:05.123456Z", "2024-01-02T05:04:05+02:00", "2024-01-02"} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseTimestamp(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The floor: the standard library's parser on the same common form.
	b.Run("floor time.Parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := time.Parse(time.DateTime, "2024-01-02 03:04:05"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
