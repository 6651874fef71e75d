package onlinetier

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"
	"unsafe"
)

// Row is the latest row of one entity key in one view: its timestamps and
// its values, encoded compactly in one immutable buffer (see NewRow).
type Row struct {
	// EventTS and CreatedTS order rows: the greatest (EventTS, CreatedTS)
	// is the latest.
	EventTS, CreatedTS int64

	// data is the encoding of the values, or "" when there are none:
	//
	//	n, 4 bytes, little endian
	//	n kinds, one byte each
	//	n slots, 8 bytes each, little endian
	//	the bytes of strings and arrays
	//
	// A scalar's slot holds the value: int32, int64, bool (0/1) and
	// timestamps (Unix µs) as an int64, float32 and float64 as their bits.
	// A string's or array's slot holds where its bytes start (low 32
	// bits) and its length in bytes or elements (high 32 bits); a []string
	// is its strings, each a uvarint length and the bytes. data fills
	// its allocation, padding included, so len(data) is what it costs.
	data string
}

// Kind is the type of a value in a Row.
type Kind uint8

// The kinds of values.
const (
	Null Kind = iota
	Int32
	Int64
	Float32
	Float64
	Bool
	Timestamp
	String
	Float32s
	Int64s
	Strings
)

var kindNames = [...]string{"null", "int32", "int64", "float32", "float64", "bool", "timestamp", "string", "[]float32", "[]int64", "[]string"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// NewRow encodes values (each nil for null, or an int32, int64, float32,
// float64, bool, time.Time, string, []float32, []int64 or []string) into a
// Row. Times keep microseconds and come back in UTC. A nil array and an
// empty one both come back as an empty, non-nil slice; null is nil.
//
// The encoding is built in a fresh byte slice which the Row then holds as
// a string without a copy; nothing writes the slice afterwards, so the Row,
// and every string read from it, is immutable. values is not retained.
func NewRow(eventTS, createdTS int64, values []any) (*Row, error) {
	r := &Row{EventTS: eventTS, CreatedTS: createdTS}
	n := len(values)
	if n == 0 {
		return r, nil
	}
	slots := kinds + n
	size := slots + 8*n
	for j, v := range values {
		switch x := v.(type) {
		case nil, int32, int64, float32, float64, bool, time.Time:
		case string:
			size += len(x)
		case []float32:
			size += 4 * len(x)
		case []int64:
			size += 8 * len(x)
		case []string:
			for _, s := range x {
				size += uvarintLen(uint64(len(s))) + len(s)
			}
		default:
			return nil, fmt.Errorf("value %d: a %T cannot be cached", j, v)
		}
	}
	if int64(size) > math.MaxUint32 {
		return nil, fmt.Errorf("a row of %d bytes is too large to cache", size)
	}
	// Grow rounds the capacity up to the allocation's real size.
	buf := slices.Grow([]byte(nil), size)
	buf = buf[:cap(buf)]
	binary.LittleEndian.PutUint32(buf, uint32(n))
	end := slots + 8*n // where the next string or array goes
	for j, v := range values {
		k, slot := Null, uint64(0)
		switch x := v.(type) {
		case int32:
			k, slot = Int32, uint64(int64(x))
		case int64:
			k, slot = Int64, uint64(x)
		case float32:
			k, slot = Float32, uint64(math.Float32bits(x))
		case float64:
			k, slot = Float64, math.Float64bits(x)
		case bool:
			k = Bool
			if x {
				slot = 1
			}
		case time.Time:
			k, slot = Timestamp, uint64(x.UnixMicro())
		case string:
			k, slot = String, span(end, len(x))
			end += copy(buf[end:], x)
		case []float32:
			k, slot = Float32s, span(end, len(x))
			for _, f := range x {
				binary.LittleEndian.PutUint32(buf[end:], math.Float32bits(f))
				end += 4
			}
		case []int64:
			k, slot = Int64s, span(end, len(x))
			for _, i := range x {
				binary.LittleEndian.PutUint64(buf[end:], uint64(i))
				end += 8
			}
		case []string:
			k, slot = Strings, span(end, len(x))
			for _, s := range x {
				end += putUvarint(buf[end:], uint64(len(s)))
				end += copy(buf[end:], s)
			}
		}
		buf[kinds+j] = byte(k)
		binary.LittleEndian.PutUint64(buf[slots+8*j:], slot)
	}
	r.data = unsafe.String(unsafe.SliceData(buf), len(buf))
	return r, nil
}

// kinds is where a row's kinds start, after its count of values.
const kinds = 4

func span(at, n int) uint64 { return uint64(at) | uint64(n)<<32 }

// Len is the number of values.
func (r *Row) Len() int {
	if r.data == "" {
		return 0
	}
	return int(le32(r.data, 0))
}

// at returns the kind and slot of value j; it panics if j is out of range.
func (r *Row) at(j int) (Kind, uint64) {
	n := r.Len()
	k := Kind(r.data[kinds : kinds+n][j]) // j out of range panics here
	return k, le64(r.data, kinds+n+8*j)
}

// Kind returns the kind of value j.
func (r *Row) Kind(j int) Kind {
	k, _ := r.at(j)
	return k
}

// Int returns value j if it is an int32, int64, bool (0 or 1) or timestamp
// (Unix microseconds), else 0.
func (r *Row) Int(j int) int64 {
	switch k, slot := r.at(j); k {
	case Int32, Int64, Bool, Timestamp:
		return int64(slot)
	}
	return 0
}

// Bool reports whether value j is a true bool (or a non-zero Int).
func (r *Row) Bool(j int) bool { return r.Int(j) != 0 }

// Time returns value j, a timestamp (or any Int taken as Unix
// microseconds), in UTC.
func (r *Row) Time(j int) time.Time { return time.UnixMicro(r.Int(j)).UTC() }

// Float returns value j if it is a float32 or float64, else 0.
func (r *Row) Float(j int) float64 {
	switch k, slot := r.at(j); k {
	case Float32:
		return float64(math.Float32frombits(uint32(slot)))
	case Float64:
		return math.Float64frombits(slot)
	}
	return 0
}

// Float32 returns value j if it is a float32, bit for bit, or a float64
// narrowed, else 0.
func (r *Row) Float32(j int) float32 {
	switch k, slot := r.at(j); k {
	case Float32:
		return math.Float32frombits(uint32(slot))
	case Float64:
		return float32(math.Float64frombits(slot))
	}
	return 0
}

// Str returns value j if it is a string, else "". The string shares the
// row's immutable buffer and keeps it alive.
func (r *Row) Str(j int) string {
	if k, slot := r.at(j); k == String {
		at, n := unspan(slot)
		return r.data[at : at+n]
	}
	return ""
}

// Float32s returns a copy of value j if it is a []float32, else nil.
func (r *Row) Float32s(j int) []float32 {
	k, slot := r.at(j)
	if k != Float32s {
		return nil
	}
	at, n := unspan(slot)
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(uint32(le32(r.data, at+4*i)))
	}
	return out
}

// Int64s returns a copy of value j if it is an []int64, else nil.
func (r *Row) Int64s(j int) []int64 {
	k, slot := r.at(j)
	if k != Int64s {
		return nil
	}
	at, n := unspan(slot)
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(le64(r.data, at+8*i))
	}
	return out
}

// Strings returns value j if it is a []string, else nil. The slice is
// fresh; its strings share the row's immutable buffer.
func (r *Row) Strings(j int) []string {
	k, slot := r.at(j)
	if k != Strings {
		return nil
	}
	at, n := unspan(slot)
	out := make([]string, n)
	for i := range out {
		l, w := uvarint(r.data[at:])
		at += w
		out[i] = r.data[at : at+l]
		at += l
	}
	return out
}

// Value returns value j as NewRow took it: nil for null, else an int32,
// int64, float32, float64, bool, time.Time (UTC), string, []float32,
// []int64 or []string.
func (r *Row) Value(j int) any {
	switch r.Kind(j) {
	case Int32:
		return int32(r.Int(j))
	case Int64:
		return r.Int(j)
	case Float32:
		return r.Float32(j)
	case Float64:
		return r.Float(j)
	case Bool:
		return r.Bool(j)
	case Timestamp:
		return r.Time(j)
	case String:
		return r.Str(j)
	case Float32s:
		return r.Float32s(j)
	case Int64s:
		return r.Int64s(j)
	case Strings:
		return r.Strings(j)
	}
	return nil
}

func unspan(slot uint64) (at, n int) { return int(uint32(slot)), int(slot >> 32) }

func le64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

func le32(s string, i int) uint32 {
	s = s[i : i+4]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

func putUvarint(b []byte, x uint64) int {
	i := 0
	for ; x >= 0x80; x >>= 7 {
		b[i] = byte(x) | 0x80
		i++
	}
	b[i] = byte(x)
	return i + 1
}

func uvarint(s string) (x, n int) {
	var shift uint
	for i := 0; ; i++ {
		b := s[i]
		x |= int(b&0x7f) << shift
		if b < 0x80 {
			return x, i + 1
		}
		shift += 7
	}
}

// newer reports whether r replaces old under the point-in-time rule.
func (r *Row) newer(old *Row) bool {
	return r.EventTS > old.EventTS || (r.EventTS == old.EventTS && r.CreatedTS >= old.CreatedTS)
}
