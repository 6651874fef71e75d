package tablefile

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
)

// WriteOptions tunes writers.
type WriteOptions struct {
	// Compression of Parquet column chunks: Zstd (the default when
	// empty), Snappy or Uncompressed. CSV and Arrow IPC files are written
	// uncompressed: their writers refuse any Compression (see
	// CheckCompression).
	Compression Compression
}

// Writer writes record batches of one schema to a file. A Writer is not
// safe for concurrent use.
type Writer interface {
	// Write appends the rows of rec, whose schema must equal the writer's.
	// It does not keep rec: the caller may release it afterwards.
	Write(rec arrow.RecordBatch) error
	// Close flushes everything and ends the file; it closes the file when
	// Create opened it. A file is complete only once Close returned nil.
	Close() error
}

// Create creates (or truncates) path and returns a writer of format f into
// it. If the writer cannot be made, the file is removed again.
func Create(path string, f Format, schema *arrow.Schema, opt WriteOptions) (Writer, error) {
	fh, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w, err := newWriter(fh, f, schema, opt)
	if err != nil {
		_ = fh.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &fileWriter{w: w, fh: fh, path: path}, nil
}

// NewWriter returns a writer of format f into w. Close does not close w.
//
// CSV is written with a header row of the field names, "\n" line ends and
// encoding/csv quoting. A null is an empty field; integers are exact;
// floats are in shortest round-trip form (strconv 'g', -1) with NaN, +Inf
// and -Inf spelled so; booleans are true and false; timestamps of any unit
// are RFC 3339 with nanoseconds in UTC; dates are YYYY-MM-DD; strings are as
// they are; lists are JSON arrays whose elements are formatted alike
// (strings, timestamps and dates JSON-quoted, null elements null). A row of
// a one-column file whose value is null or empty is written as "" so that it
// does not read as a blank line. Column types other than these are an error
// here, not at the first Write.
//
// Parquet stores the Arrow schema, so time zones and list types read back
// as they were, compresses column chunks with opt.Compression (zstd by
// default), and buffers rows into row groups of up to 131072 rows.
// Arrow is the IPC file format (what pyarrow.feather and
// pyarrow.ipc.open_file read).
func NewWriter(w io.Writer, f Format, schema *arrow.Schema, opt WriteOptions) (Writer, error) {
	wr, err := newWriter(w, f, schema, opt)
	if err != nil {
		return nil, err // not a Writer holding a nil *checkedWriter
	}
	return wr, nil
}

// formatWriter is one format's writer, fed only records of its schema.
type formatWriter interface {
	write(rec arrow.RecordBatch) error
	close() error
}

func newWriter(w io.Writer, f Format, schema *arrow.Schema, opt WriteOptions) (wr *checkedWriter, err error) {
	if schema == nil {
		return nil, errors.New("writer needs a schema")
	}
	defer func() {
		if p := recover(); p != nil {
			wr, err = nil, fmt.Errorf("%s writer: %v", f, p)
		}
	}()
	if f == CSV || f == Arrow {
		if _, err := CheckCompression(f, opt.Compression); err != nil {
			return nil, err
		}
	}
	var fw formatWriter
	switch f {
	case CSV:
		fw, err = newCSVWriter(w, schema)
	case Parquet:
		fw, err = newParquetWriter(w, schema, opt)
	case Arrow:
		fw, err = newArrowWriter(w, schema)
	default:
		err = fmt.Errorf("unknown format %q (valid: csv, parquet, arrow)", f)
	}
	if err != nil {
		return nil, err
	}
	return &checkedWriter{schema: schema, w: fw, format: f}, nil
}

// checkedWriter checks schemas, refuses use after Close and turns panics of
// the encoders into errors.
type checkedWriter struct {
	schema *arrow.Schema
	w      formatWriter
	format Format
	closed bool
}

func (c *checkedWriter) Write(rec arrow.RecordBatch) (err error) {
	switch {
	case c.closed:
		return errors.New("write after Close")
	case rec == nil:
		return errors.New("write of a nil record")
	case !c.schema.Equal(rec.Schema()):
		return fmt.Errorf("record schema differs from the writer's:\nrecord: %s\nwriter: %s", rec.Schema(), c.schema)
	case rec.NumRows() == 0:
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s writer: %v", c.format, p)
		}
	}()
	return c.w.write(rec)
}

func (c *checkedWriter) Close() (err error) {
	if c.closed {
		return nil
	}
	c.closed = true
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s writer: %v", c.format, p)
		}
	}()
	return c.w.close()
}

// fileWriter is a writer into a file Create made: it names the file in
// errors and closes it.
type fileWriter struct {
	w    Writer
	fh   *os.File
	path string
}

func (f *fileWriter) Write(rec arrow.RecordBatch) error {
	if err := f.w.Write(rec); err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	return nil
}

func (f *fileWriter) Close() error {
	if f.fh == nil {
		return nil
	}
	err := f.w.Close()
	if err != nil {
		err = fmt.Errorf("%s: %w", f.path, err)
	}
	if cerr := f.fh.Close(); err == nil {
		err = cerr // an *os.PathError, naming the file
	}
	f.fh = nil
	return err
}

// writeOnly hides a Close method from libraries that would otherwise close
// a writer they do not own.
type writeOnly struct{ io.Writer }
