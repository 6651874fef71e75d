package tablefile

import (
	"fmt"
	"time"
)

// Epoch seconds ParseTimestamp accepts: years 0001 to 9999, so that
// milliseconds since the epoch are an error rather than a date in the
// far future.
const (
	minEpochSeconds = -62135596800 // 0001-01-01T00:00:00Z
	maxEpochSeconds = 253402300799 // 9999-12-31T23:59:59Z
)

// ParseTimestamp parses the timestamp forms tailor accepts in files, and
// returns the time in UTC:
//
//   - RFC 3339 with any offset and optional fractional seconds:
//     2024-01-02T03:04:05Z, 2024-01-02T05:04:05.123+02:00 (the offset may
//     also be written +02 or +0200, and a space may stand for the T);
//   - YYYY-MM-DD HH:MM:SS or YYYY-MM-DDTHH:MM:SS, optionally with fractional
//     seconds, without a zone: UTC;
//   - YYYY-MM-DD: midnight UTC;
//   - integer epoch seconds, optionally negative: 1700000000.
//
// It allocates only for an error, which quotes the value and lists the
// accepted forms.
func ParseTimestamp(s string) (time.Time, error) {
	if len(s) >= 10 && s[4] == '-' {
		t, why := parseDateTime(s)
		if why == "" {
			return t, nil
		}
		return time.Time{}, timestampError(s, why)
	}
	if t, ok := parseEpoch(s); ok {
		return t, nil
	}
	return time.Time{}, timestampError(s, "")
}

func timestampError(s, why string) error {
	if why != "" {
		why = " (" + why + ")"
	}
	return fmt.Errorf("timestamp %q not understood%s: want RFC 3339 (2024-01-02T15:04:05Z, any offset), "+
		"YYYY-MM-DD HH:MM:SS[.fraction] or YYYY-MM-DDTHH:MM:SS[.fraction] (UTC), YYYY-MM-DD (midnight UTC) "+
		"or integer epoch seconds", s, why)
}

// parseDateTime parses the date forms; why is "" on success, else the
// reason for failure.
func parseDateTime(s string) (t time.Time, why string) {
	const bad = "malformed"
	y, ok1 := digits(s[0:4])
	mo, ok2 := digits(s[5:7])
	d, ok3 := digits(s[8:10])
	if !ok1 || !ok2 || !ok3 || s[7] != '-' {
		return t, bad
	}
	if mo < 1 || mo > 12 {
		return t, "month out of range"
	}
	if d < 1 || d > daysIn(mo, y) {
		return t, "day out of range"
	}
	if len(s) == 10 {
		return time.Date(y, time.Month(mo), d, 0, 0, 0, 0, time.UTC), ""
	}
	if len(s) < 19 || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' || s[16] != ':' {
		return t, bad
	}
	h, ok1 := digits(s[11:13])
	mi, ok2 := digits(s[14:16])
	sec, ok3 := digits(s[17:19])
	if !ok1 || !ok2 || !ok3 {
		return t, bad
	}
	if h > 23 || mi > 59 || sec > 59 {
		return t, "time of day out of range"
	}
	i, ns := 19, 0
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			if i-start < 9 {
				ns = ns*10 + int(s[i]-'0')
			}
		}
		n := i - start
		if n == 0 {
			return t, bad
		}
		for ; n < 9; n++ {
			ns *= 10
		}
	}
	offset := 0 // seconds east of UTC
	switch zone := s[i:]; {
	case zone == "" || zone == "Z" || zone == "z":
	case zone[0] == '+' || zone[0] == '-':
		var oh, om int
		var ok bool
		switch {
		case len(zone) == 3: // +02
			oh, ok = digits(zone[1:3])
		case len(zone) == 5: // +0200
			oh, ok = digits(zone[1:3])
			om, ok2 = digits(zone[3:5])
			ok = ok && ok2
		case len(zone) == 6 && zone[3] == ':': // +02:00
			oh, ok = digits(zone[1:3])
			om, ok2 = digits(zone[4:6])
			ok = ok && ok2
		}
		if !ok {
			return t, bad
		}
		if oh > 23 || om > 59 {
			return t, "offset out of range"
		}
		offset = oh*3600 + om*60
		if zone[0] == '-' {
			offset = -offset
		}
	default:
		return t, bad
	}
	t = time.Date(y, time.Month(mo), d, h, mi, sec, ns, time.UTC)
	if offset != 0 {
		t = t.Add(-time.Duration(offset) * time.Second)
	}
	return t, ""
}

// parseEpoch parses integer epoch seconds within years 0001 to 9999.
func parseEpoch(s string) (time.Time, bool) {
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	if s == "" || len(s) > 12 {
		return time.Time{}, false
	}
	v, ok := digits(s)
	if !ok {
		return time.Time{}, false
	}
	if neg {
		v = -v
	}
	if v < minEpochSeconds || v > maxEpochSeconds {
		return time.Time{}, false
	}
	return time.Unix(int64(v), 0).UTC(), true
}

// digits parses a short run of ASCII digits (callers bound the length).
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(s) > 0
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
