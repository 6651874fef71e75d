package tablefile

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// defaultBatchRows is the batch size when ReadOptions.BatchRows is 0.
const defaultBatchRows = 65536

// ReadOptions tunes readers.
type ReadOptions struct {
	// BatchRows is the largest number of rows in one batch (default 65536).
	BatchRows int
	// Allocator allocates the batches (default memory.DefaultAllocator).
	Allocator memory.Allocator
}

func (o ReadOptions) batchRows() int {
	if o.BatchRows <= 0 {
		return defaultBatchRows
	}
	return o.BatchRows
}

func (o ReadOptions) allocator() memory.Allocator {
	if o.Allocator == nil {
		return memory.DefaultAllocator
	}
	return o.Allocator
}

// Reader streams a file as record batches of at most ReadOptions.BatchRows
// rows. Columns keep the types the file has, except that dictionary-encoded
// strings are decoded to plain String columns (other dictionaries are kept);
// CSV columns are all nullable String columns. A Reader is not safe for
// concurrent use.
type Reader interface {
	// Schema is the schema of every batch.
	Schema() *arrow.Schema
	// Next returns the next batch, or io.EOF after the last one. The caller
	// releases each batch. After an error, Next returns the same error.
	Next() (arrow.RecordBatch, error)
	// Close releases the reader, and the file when Open opened it. Batches
	// already returned stay valid until released.
	Close() error
}

// Open opens path as a file of format f.
func Open(path string, f Format, opt ReadOptions) (Reader, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := newReader(path, fh, f, opt)
	if err != nil {
		_ = fh.Close()
		return nil, err
	}
	r.closer = fh
	return r, nil
}

// NewReader reads format f from r, which it does not close. CSV and both
// Arrow IPC formats (stream and file) can be read from any io.Reader, such
// as a pipe; Parquet needs r to be an io.ReaderAt and io.Seeker too (as
// *os.File and *bytes.Reader are), else NewReader returns an error. An
// Arrow or Parquet input that is an io.ReaderAt and io.Seeker is read whole
// from offset 0, whatever its current position. Errors name r.Name() when r
// has that method (as *os.File has), else "input".
func NewReader(r io.Reader, f Format, opt ReadOptions) (Reader, error) {
	name := "input"
	if n, ok := r.(interface{ Name() string }); ok && n.Name() != "" {
		name = n.Name()
	}
	rd, err := newReader(name, r, f, opt)
	if err != nil {
		return nil, err
	}
	return rd, nil
}

// source is one format's stream of batches, before re-slicing and
// dictionary decoding.
type source interface {
	schema() *arrow.Schema
	// next returns a batch the caller owns, or io.EOF.
	next() (arrow.RecordBatch, error)
	close() error
}

// readAtSeeker is what random-access formats need; the io.Reader part is
// implied by NewReader's parameter.
type readAtSeeker interface {
	io.Reader
	io.ReaderAt
	io.Seeker
}

// noClose hides a Close method from libraries that would otherwise close a
// reader they do not own.
type noClose struct{ readAtSeeker }

func newReader(name string, in io.Reader, f Format, opt ReadOptions) (rd *reader, err error) {
	defer func() {
		if p := recover(); p != nil {
			rd, err = nil, fmt.Errorf("%s: corrupt or unreadable %s file: %v", name, f, p)
		}
	}()
	mem := opt.allocator()
	var src source
	switch f {
	case CSV:
		src, err = newCSVSource(in, opt.batchRows(), mem)
	case Arrow:
		src, err = newArrowSource(in, mem)
	case Parquet:
		src, err = newParquetSource(in, opt.batchRows(), mem)
	default:
		err = fmt.Errorf("unknown format %q (valid: csv, parquet, arrow)", f)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r := &reader{name: name, src: src, mem: mem, max: int64(opt.batchRows())}
	r.schema, r.decode = plainSchema(src.schema())
	return r, nil
}

// reader wraps a source: it slices batches larger than the limit, decodes
// dictionary-encoded strings, names the file in errors and turns panics of
// the decoders on corrupt input into errors.
type reader struct {
	name   string
	src    source
	mem    memory.Allocator
	max    int64
	schema *arrow.Schema
	decode []bool // columns holding dictionary-encoded strings; nil if none

	cur    arrow.RecordBatch // batch being handed out in slices
	off    int64             // rows of cur already handed out
	err    error             // sticky: io.EOF, a read error, or closed
	closed bool
	closer io.Closer // the file Open opened
}

func (r *reader) Schema() *arrow.Schema { return r.schema }

func (r *reader) Next() (rec arrow.RecordBatch, err error) {
	if r.err != nil {
		return nil, r.err
	}
	defer func() {
		if p := recover(); p != nil {
			rec, err = nil, fmt.Errorf("%s: corrupt or unreadable file: %v", r.name, p)
		}
		if err != nil {
			r.err = err
		}
	}()
	for {
		if r.cur != nil {
			if rec := r.slice(); rec != nil {
				return rec, nil
			}
		}
		b, err := r.src.next()
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.name, err)
		}
		if b.NumRows() == 0 {
			b.Release()
			continue
		}
		if b, err = r.plain(b); err != nil {
			return nil, fmt.Errorf("%s: %w", r.name, err)
		}
		r.cur, r.off = b, 0
	}
}

// slice hands out the next at most max rows of cur, or returns nil when cur
// is used up.
func (r *reader) slice() arrow.RecordBatch {
	n := r.cur.NumRows()
	if r.off == 0 && n <= r.max {
		rec := r.cur
		r.cur = nil
		return rec
	}
	if r.off >= n {
		r.cur.Release()
		r.cur = nil
		return nil
	}
	end := min(r.off+r.max, n)
	rec := r.cur.NewSlice(r.off, end)
	r.off = end
	return rec
}

func (r *reader) Close() (err error) {
	if r.closed {
		return nil
	}
	r.closed = true
	r.err = fmt.Errorf("%s: reader is closed", r.name)
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s: closing: %v", r.name, p)
		}
		if r.closer != nil {
			if cerr := r.closer.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("%s: %w", r.name, cerr)
			}
		}
	}()
	if r.cur != nil {
		r.cur.Release()
		r.cur = nil
	}
	if err := r.src.close(); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	return nil
}

// plainSchema is sc with dictionary-encoded string columns turned into
// String columns, and which columns those are (nil if none).
func plainSchema(sc *arrow.Schema) (*arrow.Schema, []bool) {
	var decode []bool
	fields := sc.Fields()
	for i, f := range fields {
		dt, ok := f.Type.(*arrow.DictionaryType)
		if !ok {
			continue
		}
		switch dt.ValueType.ID() {
		case arrow.STRING, arrow.LARGE_STRING:
			if decode == nil {
				decode = make([]bool, len(fields))
			}
			decode[i] = true
			fields[i].Type = arrow.BinaryTypes.String
		}
	}
	if decode == nil {
		return sc, nil
	}
	md := sc.Metadata()
	return arrow.NewSchema(fields, &md), decode
}

// plain decodes the dictionary-encoded string columns of b, taking over b.
func (r *reader) plain(b arrow.RecordBatch) (arrow.RecordBatch, error) {
	if r.decode == nil {
		return b, nil
	}
	defer b.Release()
	cols := make([]arrow.Array, b.NumCols())
	var decoded []arrow.Array
	defer func() {
		for _, c := range decoded {
			c.Release()
		}
	}()
	for i, col := range b.Columns() {
		if !r.decode[i] {
			cols[i] = col
			continue
		}
		d, err := decodeStrings(r.mem, col)
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", r.schema.Field(i).Name, err)
		}
		decoded = append(decoded, d)
		cols[i] = d
	}
	return array.NewRecordBatch(r.schema, cols, b.NumRows()), nil
}

// decodeStrings turns a dictionary array of strings into a String array.
func decodeStrings(mem memory.Allocator, col arrow.Array) (arrow.Array, error) {
	d, ok := col.(*array.Dictionary)
	if !ok {
		return nil, fmt.Errorf("%s column where the schema says dictionary", col.DataType())
	}
	dict, ok := d.Dictionary().(interface {
		arrow.Array
		Value(int) string
	})
	if !ok {
		return nil, fmt.Errorf("dictionary of %s where the schema says strings", d.Dictionary().DataType())
	}
	b := array.NewStringBuilder(mem)
	defer b.Release()
	b.Reserve(d.Len())
	n := dict.Len()
	for i := 0; i < d.Len(); i++ {
		if d.IsNull(i) {
			b.AppendNull()
			continue
		}
		j := d.GetValueIndex(i)
		switch {
		case j < 0 || j >= n:
			return nil, fmt.Errorf("dictionary index %d out of range (dictionary has %d values)", j, n)
		case dict.IsNull(j):
			b.AppendNull()
		default:
			b.Append(dict.Value(j))
		}
	}
	return b.NewArray(), nil
}
