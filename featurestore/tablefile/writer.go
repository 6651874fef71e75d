package tablefile

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// WriteOptions tunes writers.
type WriteOptions struct {
	// Compression of Parquet files: "zstd" (default), "snappy" or "none".
	Compression string
}

// Writer writes record batches of one schema to a file.
type Writer interface {
	// Write appends the rows of rec, whose schema must be the writer's.
	Write(rec arrow.RecordBatch) error
	// Close flushes everything; it closes the file when Create opened it.
	Close() error
}

// Create creates path and returns a writer of format f into it.
func Create(path string, f Format, schema *arrow.Schema, opt WriteOptions) (Writer, error) {
	fh, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w, err := NewWriter(fh, f, schema, opt)
	if err != nil {
		fh.Close()
		return nil, err
	}
	return &closingWriter{Writer: w, c: fh}, nil
}

type closingWriter struct {
	Writer
	c io.Closer
}

func (c *closingWriter) Close() error {
	err := c.Writer.Close()
	if cerr := c.c.Close(); err == nil {
		err = cerr
	}
	return err
}

// NewWriter returns a writer of format f into w; Close does not close w.
func NewWriter(w io.Writer, f Format, schema *arrow.Schema, opt WriteOptions) (Writer, error) {
	switch f {
	case CSV:
		return newCSVWriter(w, schema)
	case Parquet:
		codec := compress.Codecs.Zstd
		switch opt.Compression {
		case "", "zstd":
		case "snappy":
			codec = compress.Codecs.Snappy
		case "none":
			codec = compress.Codecs.Uncompressed
		default:
			return nil, fmt.Errorf("unknown Parquet compression %q (valid: zstd, snappy, none)", opt.Compression)
		}
		props := parquet.NewWriterProperties(parquet.WithCompression(codec), parquet.WithMaxRowGroupLength(1<<17))
		pw, err := pqarrow.NewFileWriter(schema, nopCloser{w}, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
		if err != nil {
			return nil, fmt.Errorf("parquet writer: %w", err)
		}
		return &parquetWriter{pw: pw, schema: schema}, nil
	case Arrow:
		fw, err := ipc.NewFileWriter(w, ipc.WithSchema(schema))
		if err != nil {
			return nil, fmt.Errorf("arrow writer: %w", err)
		}
		return &arrowWriter{fw: fw, schema: schema}, nil
	}
	return nil, fmt.Errorf("unknown format %q", f)
}

// nopCloser keeps pqarrow from closing a writer it does not own.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func checkSchema(want *arrow.Schema, rec arrow.RecordBatch) error {
	if !want.Equal(rec.Schema()) {
		return fmt.Errorf("record schema %s differs from the writer's %s", rec.Schema(), want)
	}
	return nil
}

type parquetWriter struct {
	pw     *pqarrow.FileWriter
	schema *arrow.Schema
}

func (p *parquetWriter) Write(rec arrow.RecordBatch) error {
	if err := checkSchema(p.schema, rec); err != nil {
		return err
	}
	return p.pw.Write(rec)
}

func (p *parquetWriter) Close() error { return p.pw.Close() }

type arrowWriter struct {
	fw     *ipc.FileWriter
	schema *arrow.Schema
}

func (a *arrowWriter) Write(rec arrow.RecordBatch) error {
	if err := checkSchema(a.schema, rec); err != nil {
		return err
	}
	return a.fw.Write(rec)
}

func (a *arrowWriter) Close() error { return a.fw.Close() }

// csvWriter renders record batches as CSV: null as an empty field,
// integers exactly, floats in shortest round-trip form, timestamps as
// RFC3339 in UTC, lists as JSON arrays.
type csvWriter struct {
	w      *bufio.Writer
	schema *arrow.Schema
	cell   []byte
}

func newCSVWriter(w io.Writer, schema *arrow.Schema) (*csvWriter, error) {
	cw := &csvWriter{w: bufio.NewWriterSize(w, 1<<16), schema: schema}
	for i, f := range schema.Fields() {
		if i > 0 {
			cw.w.WriteByte(',')
		}
		cw.writeField([]byte(f.Name))
	}
	cw.w.WriteByte('\n')
	return cw, nil
}

func (c *csvWriter) Write(rec arrow.RecordBatch) error {
	if err := checkSchema(c.schema, rec); err != nil {
		return err
	}
	cols := rec.Columns()
	for r := 0; r < int(rec.NumRows()); r++ {
		for i, col := range cols {
			if i > 0 {
				c.w.WriteByte(',')
			}
			if col.IsNull(r) {
				continue
			}
			var err error
			c.cell, err = appendCell(c.cell[:0], col, r)
			if err != nil {
				return fmt.Errorf("column %q: %w", c.schema.Field(i).Name, err)
			}
			c.writeField(c.cell)
		}
		if err := c.w.WriteByte('\n'); err != nil {
			return err
		}
	}
	return nil
}

func (c *csvWriter) Close() error { return c.w.Flush() }

// writeField writes one CSV field, quoted when it holds a delimiter, a
// quote, a line break or leading space.
func (c *csvWriter) writeField(b []byte) {
	quote := len(b) > 0 && (b[0] == ' ' || b[0] == '\t')
	for _, ch := range b {
		if ch == ',' || ch == '"' || ch == '\n' || ch == '\r' {
			quote = true
			break
		}
	}
	if !quote {
		c.w.Write(b)
		return
	}
	c.w.WriteByte('"')
	for _, ch := range b {
		if ch == '"' {
			c.w.WriteByte('"')
		}
		c.w.WriteByte(ch)
	}
	c.w.WriteByte('"')
}

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

func appendCell(b []byte, col arrow.Array, i int) ([]byte, error) {
	switch a := col.(type) {
	case *array.Int64:
		return strconv.AppendInt(b, a.Value(i), 10), nil
	case *array.Int32:
		return strconv.AppendInt(b, int64(a.Value(i)), 10), nil
	case *array.Int16:
		return strconv.AppendInt(b, int64(a.Value(i)), 10), nil
	case *array.Int8:
		return strconv.AppendInt(b, int64(a.Value(i)), 10), nil
	case *array.Uint64:
		return strconv.AppendUint(b, a.Value(i), 10), nil
	case *array.Uint32:
		return strconv.AppendUint(b, uint64(a.Value(i)), 10), nil
	case *array.Uint16:
		return strconv.AppendUint(b, uint64(a.Value(i)), 10), nil
	case *array.Uint8:
		return strconv.AppendUint(b, uint64(a.Value(i)), 10), nil
	case *array.Float64:
		return appendFloat(b, a.Value(i), 64), nil
	case *array.Float32:
		return appendFloat(b, float64(a.Value(i)), 32), nil
	case *array.Boolean:
		return strconv.AppendBool(b, a.Value(i)), nil
	case *array.String:
		return append(b, a.Value(i)...), nil
	case *array.LargeString:
		return append(b, a.Value(i)...), nil
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		return a.Value(i).ToTime(unit).UTC().AppendFormat(b, time.RFC3339Nano), nil
	case *array.Date32:
		return a.Value(i).ToTime().AppendFormat(b, "2006-01-02"), nil
	case array.ListLike:
		start, end := a.ValueOffsets(i)
		values := a.ListValues()
		b = append(b, '[')
		for j := start; j < end; j++ {
			if j > start {
				b = append(b, ',')
			}
			if values.IsNull(int(j)) {
				b = append(b, "null"...)
				continue
			}
			var err error
			if b, err = appendJSON(b, values, int(j)); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	return nil, fmt.Errorf("cannot write %s values as CSV", col.DataType())
}

// appendJSON renders one list element as JSON.
func appendJSON(b []byte, col arrow.Array, i int) ([]byte, error) {
	switch a := col.(type) {
	case *array.String:
		return appendJSONString(b, a.Value(i)), nil
	case *array.LargeString:
		return appendJSONString(b, a.Value(i)), nil
	case *array.Timestamp:
		b = append(b, '"')
		unit := a.DataType().(*arrow.TimestampType).Unit
		b = a.Value(i).ToTime(unit).UTC().AppendFormat(b, time.RFC3339Nano)
		return append(b, '"'), nil
	case *array.Float64:
		if f := a.Value(i); math.IsNaN(f) || math.IsInf(f, 0) {
			return append(b, "null"...), nil
		}
	case *array.Float32:
		if f := float64(a.Value(i)); math.IsNaN(f) || math.IsInf(f, 0) {
			return append(b, "null"...), nil
		}
	}
	return appendCell(b, col, i)
}

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
