package offline

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/tablefile"
)

// ClickHouse's DateTime is seconds since the epoch in a UInt32.
var (
	minDateTime = time.Unix(0, 0).UTC()
	maxDateTime = time.Unix(math.MaxUint32, 0).UTC()
)

// CheckInstant refuses an instant ClickHouse cannot store (DateTime holds
// 1970-01-01 00:00:00 to 2106-02-07 06:28:15 UTC), which it would wrap
// around or clamp instead of refusing.
func CheckInstant(t time.Time) error {
	if t.Before(minDateTime) || t.After(maxDateTime) {
		return fmt.Errorf("%s is outside the instants ClickHouse stores (%s to %s)", t.UTC().Format(time.RFC3339), minDateTime.Format(time.RFC3339), maxDateTime.Format(time.RFC3339))
	}
	return nil
}

// ToFloat32 narrows f to float32, refusing a finite number beyond
// float32's range, which would otherwise become an infinity.
func ToFloat32(f float64) (float32, error) {
	g := float32(f)
	if math.IsInf(float64(g), 0) && !math.IsInf(f, 0) {
		return 0, fmt.Errorf("%g is out of range for float32 (largest %g)", f, math.MaxFloat32)
	}
	return g, nil
}

// valueError is a cell that cannot become the target type.
type valueError struct {
	Row   int // index within the array
	Value string
	Msg   string
}

func (e *valueError) Error() string { return fmt.Sprintf("value %q: %s", e.Value, e.Msg) }

func cellText(arr arrow.Array, i int) string {
	if s, ok := arr.(*array.String); ok {
		return s.Value(i)
	}
	return arr.ValueStr(i)
}

func badCell(arr arrow.Array, i int, format string, args ...any) *valueError {
	return &valueError{Row: i, Value: cellText(arr, i), Msg: fmt.Sprintf(format, args...)}
}

func int64At(arr arrow.Array, i int) (int64, error) {
	switch a := arr.(type) {
	case *array.Int64:
		return a.Value(i), nil
	case *array.Int32:
		return int64(a.Value(i)), nil
	case *array.Int16:
		return int64(a.Value(i)), nil
	case *array.Int8:
		return int64(a.Value(i)), nil
	case *array.Uint8:
		return int64(a.Value(i)), nil
	case *array.Uint16:
		return int64(a.Value(i)), nil
	case *array.Uint32:
		return int64(a.Value(i)), nil
	case *array.Uint64:
		if v := a.Value(i); v <= math.MaxInt64 {
			return int64(v), nil
		}
		return 0, badCell(arr, i, "out of range for int64")
	case *array.Float64:
		return floatToInt(arr, i, a.Value(i))
	case *array.Float32:
		return floatToInt(arr, i, float64(a.Value(i)))
	case *array.String:
		v, err := strconv.ParseInt(a.Value(i), 10, 64)
		if err != nil {
			return 0, badCell(arr, i, "not an integer")
		}
		return v, nil
	case *array.LargeString:
		v, err := strconv.ParseInt(a.Value(i), 10, 64)
		if err != nil {
			return 0, badCell(arr, i, "not an integer")
		}
		return v, nil
	}
	return 0, badCell(arr, i, "a %s column cannot hold integers", arr.DataType())
}

func floatToInt(arr arrow.Array, i int, f float64) (int64, error) {
	if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, badCell(arr, i, "not an integer")
	}
	return int64(f), nil
}

func float64At(arr arrow.Array, i int, bits int) (float64, error) {
	switch a := arr.(type) {
	case *array.Float64:
		return a.Value(i), nil
	case *array.Float32:
		return float64(a.Value(i)), nil
	case *array.String:
		return parseFloat(arr, i, a.Value(i), bits)
	case *array.LargeString:
		return parseFloat(arr, i, a.Value(i), bits)
	}
	v, err := int64At(arr, i)
	if err != nil {
		return 0, badCell(arr, i, "a %s column cannot hold numbers", arr.DataType())
	}
	return float64(v), nil
}

// parseFloat reads text as a number of the given bits, naming a number
// too large for them as such.
func parseFloat(arr arrow.Array, i int, text string, bits int) (float64, error) {
	v, err := strconv.ParseFloat(text, bits)
	if errors.Is(err, strconv.ErrRange) && !math.IsInf(v, 0) {
		return v, nil // underflow to zero or a denormal: the nearest value
	}
	if errors.Is(err, strconv.ErrRange) {
		return 0, badCell(arr, i, "out of range for float%d", bits)
	}
	if err != nil {
		return 0, badCell(arr, i, "not a number")
	}
	return v, nil
}

func stringAt(arr arrow.Array, i int) (string, error) {
	switch a := arr.(type) {
	case *array.String:
		return a.Value(i), nil
	case *array.LargeString:
		return a.Value(i), nil
	case *array.Binary:
		return string(a.Value(i)), nil
	case *array.Int64, *array.Int32, *array.Int16, *array.Int8, *array.Uint64, *array.Uint32, *array.Uint16, *array.Uint8:
		return arr.ValueStr(i), nil
	}
	return "", badCell(arr, i, "a %s column cannot hold strings", arr.DataType())
}

func boolAt(arr arrow.Array, i int) (bool, error) {
	switch a := arr.(type) {
	case *array.Boolean:
		return a.Value(i), nil
	case *array.String:
		v, err := strconv.ParseBool(a.Value(i))
		if err != nil {
			return false, badCell(arr, i, "not a boolean (true/false/1/0)")
		}
		return v, nil
	}
	v, err := int64At(arr, i)
	if err != nil || (v != 0 && v != 1) {
		return false, badCell(arr, i, "not a boolean (true/false/1/0)")
	}
	return v == 1, nil
}

func timeAt(arr arrow.Array, i int) (time.Time, error) {
	var t time.Time
	switch a := arr.(type) {
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		t = a.Value(i).ToTime(unit)
	case *array.Date32:
		t = a.Value(i).ToTime()
	case *array.Date64:
		t = a.Value(i).ToTime()
	case *array.String, *array.LargeString:
		s, _ := stringAt(arr, i)
		var err error
		if t, err = tablefile.ParseTimestamp(s); err != nil {
			return time.Time{}, badCell(arr, i, "not a timestamp (RFC3339, YYYY-MM-DD HH:MM:SS in UTC, or epoch seconds)")
		}
	default:
		v, err := int64At(arr, i)
		if err != nil {
			return time.Time{}, badCell(arr, i, "a %s column cannot hold timestamps", arr.DataType())
		}
		t = time.Unix(v, 0)
	}
	t = t.UTC()
	if t.Before(minDateTime) || t.After(maxDateTime) {
		return time.Time{}, badCell(arr, i, "timestamp outside the range ClickHouse DateTime stores (1970-01-01 to 2106-02-07)")
	}
	return t.Truncate(time.Second), nil
}

// listAt returns the list cell i of arr as its element array and bounds, or
// parses a JSON array when the column holds strings.
func listAt[T any](arr arrow.Array, i int, elem func(arrow.Array, int) (T, error)) ([]T, error) {
	var values arrow.Array
	var start, end int64
	switch a := arr.(type) {
	case *array.List:
		start, end = a.ValueOffsets(i)
		values = a.ListValues()
	case *array.LargeList:
		start, end = a.ValueOffsets(i)
		values = a.ListValues()
	case *array.FixedSizeList:
		start, end = a.ValueOffsets(i)
		values = a.ListValues()
	case *array.String:
		var out []T
		if err := json.Unmarshal([]byte(a.Value(i)), &out); err != nil {
			return nil, badCell(arr, i, "not a JSON array of the element type")
		}
		return out, nil
	default:
		return nil, badCell(arr, i, "a %s column cannot hold arrays", arr.DataType())
	}
	out := make([]T, 0, end-start)
	for j := start; j < end; j++ {
		if values.IsNull(int(j)) {
			return nil, badCell(arr, i, "array element %d is null", j-start)
		}
		v, err := elem(values, int(j))
		if err != nil {
			return nil, badCell(arr, i, "array element %d: %v", j-start, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func float32Elem(a arrow.Array, i int) (float32, error) { return float32Conv(a, i) }

func float64Elem(a arrow.Array, i int) (float64, error) { return float64At(a, i, 64) }

// column buffers one target column of a batch in the Go types
// clickhouse-go appends without reflection.
type column interface {
	// add appends cell i of arr; it returns a *valueError for a bad cell.
	add(arr arrow.Array, i int) error
	// addNull appends a missing value.
	addNull() error
	// take returns the buffered values for Batch.Column(n).Append and
	// starts a new batch.
	take() any
}

// nullable buffers a Nullable(T) column; take points into the batch's
// values, so a batch costs a few allocations, not one per cell.
type nullable[T any] struct {
	conv  func(arrow.Array, int) (T, error)
	vals  []T
	valid []bool
}

func (c *nullable[T]) add(arr arrow.Array, i int) error {
	v, err := c.conv(arr, i)
	if err != nil {
		return err
	}
	c.vals = append(c.vals, v)
	c.valid = append(c.valid, true)
	return nil
}

func (c *nullable[T]) addNull() error {
	var zero T
	c.vals = append(c.vals, zero)
	c.valid = append(c.valid, false)
	return nil
}

func (c *nullable[T]) take() any {
	ptrs := make([]*T, len(c.vals))
	for i := range c.vals {
		if c.valid[i] {
			ptrs[i] = &c.vals[i]
		}
	}
	// The pointers keep this batch's values alive; start a fresh slice.
	c.vals = make([]T, 0, cap(c.vals))
	c.valid = c.valid[:0]
	return ptrs
}

// required buffers a column that cannot be null: join keys and timestamps.
type required[T any] struct {
	conv func(arrow.Array, int) (T, error)
	vals []T
}

func (c *required[T]) add(arr arrow.Array, i int) error {
	v, err := c.conv(arr, i)
	if err != nil {
		return err
	}
	c.vals = append(c.vals, v)
	return nil
}

func (c *required[T]) addNull() error { return errNullRequired }

func (c *required[T]) take() any {
	v := c.vals
	c.vals = make([]T, 0, cap(v))
	return v
}

var errNullRequired = fmt.Errorf("value is empty or null, but this column is required")

// arrays buffers an Array(T) column; a null array is stored empty, since
// ClickHouse arrays cannot be Nullable.
type arrays[T any] struct {
	elem func(arrow.Array, int) (T, error)
	vals [][]T
}

func (c *arrays[T]) add(arr arrow.Array, i int) error {
	v, err := listAt(arr, i, c.elem)
	if err != nil {
		return err
	}
	c.vals = append(c.vals, v)
	return nil
}

func (c *arrays[T]) addNull() error {
	c.vals = append(c.vals, nil)
	return nil
}

func (c *arrays[T]) take() any {
	v := c.vals
	c.vals = make([][]T, 0, cap(v))
	return v
}

// constant fills a column the file does not have with one value per row.
type constant[T any] struct {
	value T
	n     int
}

func (c *constant[T]) add(arrow.Array, int) error { c.n++; return nil }
func (c *constant[T]) addNull() error             { c.n++; return nil }
func (c *constant[T]) take() any {
	v := make([]T, c.n)
	for i := range v {
		v[i] = c.value
	}
	c.n = 0
	return v
}

func int32Conv(arr arrow.Array, i int) (int32, error) {
	v, err := int64At(arr, i)
	if err != nil {
		return 0, err
	}
	if v < math.MinInt32 || v > math.MaxInt32 {
		return 0, badCell(arr, i, "out of range for int32")
	}
	return int32(v), nil
}

func float32Conv(arr arrow.Array, i int) (float32, error) {
	f, err := float64At(arr, i, 32)
	if err != nil {
		return 0, err
	}
	g, err := ToFloat32(f)
	if err != nil {
		return 0, badCell(arr, i, "out of range for float32")
	}
	return g, nil
}

func boolConv(arr arrow.Array, i int) (uint8, error) {
	b, err := boolAt(arr, i)
	if b {
		return 1, err
	}
	return 0, err
}

// newColumn returns the buffer for a value of type t; key reports a join
// key or timestamp, which may not be null.
func newColumn(t definitions.ValueType, key bool) column {
	if key {
		switch t {
		case definitions.Int64:
			return &required[int64]{conv: int64At}
		case definitions.Timestamp:
			return &required[time.Time]{conv: timeAt}
		default:
			return &required[string]{conv: stringAt}
		}
	}
	switch t {
	case definitions.Int32:
		return &nullable[int32]{conv: int32Conv}
	case definitions.Int64:
		return &nullable[int64]{conv: int64At}
	case definitions.Float32:
		return &nullable[float32]{conv: float32Conv}
	case definitions.Float64:
		return &nullable[float64]{conv: float64Elem}
	case definitions.Bool:
		return &nullable[uint8]{conv: boolConv}
	case definitions.Timestamp:
		return &nullable[time.Time]{conv: timeAt}
	case definitions.ArrayFloat32:
		return &arrays[float32]{elem: float32Elem}
	case definitions.ArrayInt64:
		return &arrays[int64]{elem: int64At}
	case definitions.ArrayString:
		return &arrays[string]{elem: stringAt}
	default:
		return &nullable[string]{conv: stringAt}
	}
}

// CellValue converts cell i of arr to the Go form of type t: int32, int64,
// float32, float64, string, bool, time.Time, []float32, []int64 or
// []string; nil for null. Text cells are parsed as ingestion parses them;
// a bad cell is an error quoting it.
func CellValue(arr arrow.Array, i int, t definitions.ValueType) (any, error) {
	if arr.IsNull(i) {
		return nil, nil
	}
	var v any
	var err error
	switch t {
	case definitions.Int32:
		v, err = int32Conv(arr, i)
	case definitions.Int64:
		v, err = int64At(arr, i)
	case definitions.Float32:
		v, err = float32Conv(arr, i)
	case definitions.Float64:
		v, err = float64Elem(arr, i)
	case definitions.Bool:
		v, err = boolAt(arr, i)
	case definitions.Timestamp:
		v, err = timeAt(arr, i)
	case definitions.ArrayFloat32:
		v, err = listAt(arr, i, float32Elem)
	case definitions.ArrayInt64:
		v, err = listAt(arr, i, int64At)
	case definitions.ArrayString:
		v, err = listAt(arr, i, stringAt)
	default:
		v, err = stringAt(arr, i)
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}
