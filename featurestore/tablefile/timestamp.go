package tablefile

import (
	"fmt"
	"strconv"
	"time"
)

// ParseTimestamp parses the timestamp forms tailor accepts in files:
// RFC3339 (any offset, returned in UTC), "YYYY-MM-DD HH:MM:SS[.frac]" and
// "YYYY-MM-DDTHH:MM:SS[.frac]" in UTC, "YYYY-MM-DD" (midnight UTC) and
// integer epoch seconds.
func ParseTimestamp(s string) (time.Time, error) {
	// Fast path: "YYYY-MM-DD HH:MM:SS", the most common form, without
	// allocating.
	if len(s) == 19 && s[4] == '-' && s[7] == '-' && (s[10] == ' ' || s[10] == 'T') && s[13] == ':' && s[16] == ':' {
		y, ok1 := digits(s[0:4])
		mo, ok2 := digits(s[5:7])
		d, ok3 := digits(s[8:10])
		h, ok4 := digits(s[11:13])
		mi, ok5 := digits(s[14:16])
		se, ok6 := digits(s[17:19])
		if ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && mo >= 1 && mo <= 12 && d >= 1 && d <= daysIn(mo, y) && h < 24 && mi < 60 && se < 60 {
			return time.Date(y, time.Month(mo), d, h, mi, se, 0, time.UTC), nil
		}
		return time.Time{}, tsError(s)
	}
	if n := len(s); n > 0 && n <= 12 && (isDigits(s) || (s[0] == '-' && isDigits(s[1:]))) {
		v, err := strconv.ParseInt(s, 10, 64)
		if err == nil {
			return time.Unix(v, 0).UTC(), nil
		}
	}
	for _, layout := range layouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, tsError(s)
}

var layouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02",
}

func tsError(s string) error {
	return fmt.Errorf("timestamp %q: want RFC3339 (2024-01-02T15:04:05Z), 'YYYY-MM-DD HH:MM:SS' (UTC), 'YYYY-MM-DD' or epoch seconds", s)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
