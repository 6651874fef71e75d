package tablefile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// cellFunc appends the text of row i of one column to b.
type cellFunc func(b []byte, i int) []byte

// csvWriter renders record batches as CSV (see NewWriter for the rules).
type csvWriter struct {
	w     *bufio.Writer
	ncols int
	cells []cellFunc // per column, bound to the arrays of the current batch
	cell  []byte     // reused buffer of one cell
}

func newCSVWriter(w io.Writer, schema *arrow.Schema) (*csvWriter, error) {
	if schema.NumFields() == 0 {
		return nil, errors.New("a CSV file needs at least one column")
	}
	for _, f := range schema.Fields() {
		if err := csvWritable(f.Type); err != nil {
			return nil, fmt.Errorf("column %q: %w", f.Name, err)
		}
	}
	c := &csvWriter{
		w:     bufio.NewWriterSize(w, 64<<10),
		ncols: schema.NumFields(),
		cells: make([]cellFunc, schema.NumFields()),
	}
	for i, f := range schema.Fields() {
		if i > 0 {
			_ = c.w.WriteByte(',')
		}
		c.cell = append(c.cell[:0], f.Name...)
		c.writeField(c.cell)
	}
	_ = c.w.WriteByte('\n') // bufio errors are sticky: the next write or Flush reports them
	return c, nil
}

// csvWritable tells whether the CSV writer can render values of type dt.
func csvWritable(dt arrow.DataType) error {
	switch dt.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64,
		arrow.FLOAT16, arrow.FLOAT32, arrow.FLOAT64, arrow.BOOL,
		arrow.STRING, arrow.LARGE_STRING, arrow.STRING_VIEW,
		arrow.TIMESTAMP, arrow.DATE32, arrow.DATE64, arrow.NULL:
		return nil
	case arrow.LIST, arrow.LARGE_LIST, arrow.FIXED_SIZE_LIST:
		if err := csvWritable(dt.(arrow.ListLikeType).Elem()); err != nil {
			return fmt.Errorf("%s: %w", dt, err)
		}
		return nil
	case arrow.DICTIONARY:
		return csvWritable(dt.(*arrow.DictionaryType).ValueType)
	}
	return fmt.Errorf("cannot write %s values as CSV", dt)
}

func (c *csvWriter) write(rec arrow.RecordBatch) error {
	cols := rec.Columns()
	for i, col := range cols {
		f, err := cellFormatter(col, false)
		if err != nil {
			return fmt.Errorf("column %q: %w", rec.ColumnName(i), err)
		}
		c.cells[i] = f
	}
	n := int(rec.NumRows())
	for r := 0; r < n; r++ {
		for i, col := range cols {
			if i > 0 {
				_ = c.w.WriteByte(',')
			}
			c.cell = c.cell[:0]
			if !col.IsNull(r) {
				c.cell = c.cells[i](c.cell, r)
			}
			c.writeField(c.cell)
		}
		if err := c.w.WriteByte('\n'); err != nil {
			return err
		}
	}
	clear(c.cells) // keep no arrays of the caller's batch
	return nil
}

func (c *csvWriter) close() error { return c.w.Flush() }

// writeField writes one field, quoted as encoding/csv quotes. An empty
// field alone on its line is written as "" so that the line is not blank
// (CSV readers skip blank lines).
func (c *csvWriter) writeField(b []byte) {
	if len(b) == 0 {
		if c.ncols == 1 {
			_, _ = c.w.WriteString(`""`)
		}
		return
	}
	if !needsQuotes(b) {
		_, _ = c.w.Write(b)
		return
	}
	_ = c.w.WriteByte('"')
	for {
		i := bytes.IndexByte(b, '"')
		if i < 0 {
			_, _ = c.w.Write(b)
			break
		}
		_, _ = c.w.Write(b[:i+1])
		_ = c.w.WriteByte('"')
		b = b[i+1:]
	}
	_ = c.w.WriteByte('"')
}

// needsQuotes is encoding/csv's rule: a field is quoted when it holds a
// comma, a quote or a line break, starts with a space, or is `\.`.
func needsQuotes(b []byte) bool {
	if len(b) == 2 && b[0] == '\\' && b[1] == '.' {
		return true
	}
	for _, ch := range b {
		if ch == ',' || ch == '"' || ch == '\n' || ch == '\r' {
			return true
		}
	}
	r, _ := utf8.DecodeRune(b)
	return unicode.IsSpace(r)
}

// cellFormatter returns the formatter of the non-null values of col; inJSON
// formats them as elements of a JSON array (strings and times quoted, null
// dictionary values null).
func cellFormatter(col arrow.Array, inJSON bool) (cellFunc, error) {
	switch a := col.(type) {
	case *array.Int8:
		return func(b []byte, i int) []byte { return strconv.AppendInt(b, int64(a.Value(i)), 10) }, nil
	case *array.Int16:
		return func(b []byte, i int) []byte { return strconv.AppendInt(b, int64(a.Value(i)), 10) }, nil
	case *array.Int32:
		return func(b []byte, i int) []byte { return strconv.AppendInt(b, int64(a.Value(i)), 10) }, nil
	case *array.Int64:
		return func(b []byte, i int) []byte { return strconv.AppendInt(b, a.Value(i), 10) }, nil
	case *array.Uint8:
		return func(b []byte, i int) []byte { return strconv.AppendUint(b, uint64(a.Value(i)), 10) }, nil
	case *array.Uint16:
		return func(b []byte, i int) []byte { return strconv.AppendUint(b, uint64(a.Value(i)), 10) }, nil
	case *array.Uint32:
		return func(b []byte, i int) []byte { return strconv.AppendUint(b, uint64(a.Value(i)), 10) }, nil
	case *array.Uint64:
		return func(b []byte, i int) []byte { return strconv.AppendUint(b, a.Value(i), 10) }, nil
	case *array.Float16:
		return func(b []byte, i int) []byte { return appendFloat(b, float64(a.Value(i).Float32()), 32) }, nil
	case *array.Float32:
		return func(b []byte, i int) []byte { return appendFloat(b, float64(a.Value(i)), 32) }, nil
	case *array.Float64:
		return func(b []byte, i int) []byte { return appendFloat(b, a.Value(i), 64) }, nil
	case *array.Boolean:
		return func(b []byte, i int) []byte { return strconv.AppendBool(b, a.Value(i)) }, nil
	case *array.String:
		return stringFormatter(a.Value, inJSON), nil
	case *array.LargeString:
		return stringFormatter(a.Value, inJSON), nil
	case *array.StringView:
		return stringFormatter(a.Value, inJSON), nil
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		return timeFormatter(func(i int) time.Time { return a.Value(i).ToTime(unit) }, time.RFC3339Nano, inJSON), nil
	case *array.Date32:
		return timeFormatter(func(i int) time.Time { return a.Value(i).ToTime() }, time.DateOnly, inJSON), nil
	case *array.Date64:
		return timeFormatter(func(i int) time.Time { return a.Value(i).ToTime() }, time.DateOnly, inJSON), nil
	case *array.Null:
		return func(b []byte, _ int) []byte { return b }, nil
	case *array.Dictionary:
		dict := a.Dictionary()
		value, err := cellFormatter(dict, inJSON)
		if err != nil {
			return nil, err
		}
		return func(b []byte, i int) []byte {
			j := a.GetValueIndex(i)
			if dict.IsNull(j) {
				if inJSON {
					return append(b, "null"...)
				}
				return b
			}
			return value(b, j)
		}, nil
	case *array.Map:
		// A Map is list-like, but its JSON would be an object: not supported.
	case array.ListLike:
		values := a.ListValues()
		elem, err := cellFormatter(values, true)
		if err != nil {
			return nil, err
		}
		return func(b []byte, i int) []byte {
			start, end := a.ValueOffsets(i)
			b = append(b, '[')
			for j := int(start); j < int(end); j++ {
				if j > int(start) {
					b = append(b, ',')
				}
				if values.IsNull(j) {
					b = append(b, "null"...)
					continue
				}
				b = elem(b, j)
			}
			return append(b, ']')
		}, nil
	}
	return nil, fmt.Errorf("cannot write %s values as CSV", col.DataType())
}

func stringFormatter(value func(int) string, inJSON bool) cellFunc {
	if inJSON {
		return func(b []byte, i int) []byte { return appendJSONString(b, value(i)) }
	}
	return func(b []byte, i int) []byte { return append(b, value(i)...) }
}

func timeFormatter(value func(int) time.Time, layout string, inJSON bool) cellFunc {
	if inJSON {
		return func(b []byte, i int) []byte {
			b = append(b, '"')
			b = value(i).UTC().AppendFormat(b, layout)
			return append(b, '"')
		}
	}
	return func(b []byte, i int) []byte { return value(i).UTC().AppendFormat(b, layout) }
}

// appendFloat appends f in shortest round-trip form, and NaN, +Inf and
// -Inf spelled so.
func appendFloat(b []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, 1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes
// U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
