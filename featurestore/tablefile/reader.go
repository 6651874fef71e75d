package tablefile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// ReadOptions tunes readers.
type ReadOptions struct {
	// BatchRows is the number of rows per record batch (default 65536).
	BatchRows int
}

func (o ReadOptions) batch() int {
	if o.BatchRows <= 0 {
		return 65536
	}
	return o.BatchRows
}

// Reader streams a file as record batches.
type Reader interface {
	// Schema is the schema of every batch.
	Schema() *arrow.Schema
	// Next returns the next batch, or io.EOF after the last. The caller
	// releases each batch.
	Next() (arrow.RecordBatch, error)
	// Close releases the file.
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
		fh.Close()
		return nil, err
	}
	return &closing{Reader: r, c: fh}, nil
}

// NewReader reads format f from r. Parquet and Arrow files need r to be an
// io.ReaderAt and io.Seeker (an *os.File is).
func NewReader(r io.Reader, f Format, opt ReadOptions) (Reader, error) {
	return newReader("input", r, f, opt)
}

type closing struct {
	Reader
	c io.Closer
}

func (c *closing) Close() error {
	err := c.Reader.Close()
	if cerr := c.c.Close(); err == nil {
		err = cerr
	}
	return err
}

type readAtSeeker interface {
	io.Reader
	io.ReaderAt
	io.Seeker
}

func newReader(name string, r io.Reader, f Format, opt ReadOptions) (rd Reader, err error) {
	defer func() {
		if p := recover(); p != nil {
			rd, err = nil, fmt.Errorf("%s: corrupt %s file: %v", name, f, p)
		}
	}()
	switch f {
	case CSV:
		return newCSVReader(name, r, opt)
	case Arrow:
		br := bufio.NewReader(r)
		magic, _ := br.Peek(6)
		if bytes.Equal(magic, []byte("ARROW1")) {
			ras, ok := r.(readAtSeeker)
			if !ok {
				return nil, fmt.Errorf("%s: an Arrow IPC file needs a seekable input", name)
			}
			fr, err := ipc.NewFileReader(ras)
			if err != nil {
				return nil, fmt.Errorf("%s: not a readable Arrow IPC file: %w", name, err)
			}
			return &safe{name: name, r: &ipcFileReader{fr: fr}}, nil
		}
		sr, err := ipc.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%s: not a readable Arrow IPC file or stream: %w", name, err)
		}
		return &safe{name: name, r: &ipcStreamReader{sr: sr}}, nil
	case Parquet:
		ras, ok := r.(readAtSeeker)
		if !ok {
			return nil, fmt.Errorf("%s: a Parquet file needs a seekable input", name)
		}
		pf, err := file.NewParquetReader(ras)
		if err != nil {
			return nil, fmt.Errorf("%s: not a readable Parquet file: %w", name, err)
		}
		fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: int64(opt.batch())}, memory.DefaultAllocator)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		rr, err := fr.GetRecordReader(context.Background(), nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return &safe{name: name, r: &parquetReader{rr: rr, pf: pf}}, nil
	}
	return nil, fmt.Errorf("%s: unknown format %q", name, f)
}

// safe turns panics of the Arrow and Parquet decoders on corrupt input into
// errors naming the file.
type safe struct {
	name string
	r    Reader
}

func (s *safe) Schema() *arrow.Schema { return s.r.Schema() }
func (s *safe) Close() error          { return s.r.Close() }
func (s *safe) Next() (rec arrow.RecordBatch, err error) {
	defer func() {
		if p := recover(); p != nil {
			rec, err = nil, fmt.Errorf("%s: corrupt file: %v", s.name, p)
		}
	}()
	rec, err = s.r.Next()
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%s: %w", s.name, err)
	}
	return rec, err
}

type ipcFileReader struct {
	fr *ipc.FileReader
	i  int
}

func (r *ipcFileReader) Schema() *arrow.Schema { return r.fr.Schema() }
func (r *ipcFileReader) Close() error          { return r.fr.Close() }
func (r *ipcFileReader) Next() (arrow.RecordBatch, error) {
	if r.i >= r.fr.NumRecords() {
		return nil, io.EOF
	}
	rec, err := r.fr.RecordBatch(r.i)
	if err != nil {
		return nil, err
	}
	r.i++
	rec.Retain()
	return rec, nil
}

type ipcStreamReader struct{ sr *ipc.Reader }

func (r *ipcStreamReader) Schema() *arrow.Schema { return r.sr.Schema() }
func (r *ipcStreamReader) Close() error          { r.sr.Release(); return nil }
func (r *ipcStreamReader) Next() (arrow.RecordBatch, error) {
	if !r.sr.Next() {
		if err := r.sr.Err(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	rec := r.sr.RecordBatch()
	rec.Retain()
	return rec, nil
}

type parquetReader struct {
	rr pqarrow.RecordReader
	pf *file.Reader
}

func (r *parquetReader) Schema() *arrow.Schema { return r.rr.Schema() }
func (r *parquetReader) Close() error          { r.rr.Release(); return r.pf.Close() }
func (r *parquetReader) Next() (arrow.RecordBatch, error) {
	rec, err := r.rr.Read()
	if rec == nil {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, err
	}
	rec.Retain()
	return rec, nil
}

// csvReader reads CSV with a header row; every column is a nullable string
// column, an empty field being null.
type csvReader struct {
	name   string
	cr     *csv.Reader
	schema *arrow.Schema
	batch  int
	b      *array.RecordBuilder
	strs   []*array.StringBuilder
	done   bool
}

func newCSVReader(name string, r io.Reader, opt ReadOptions) (*csvReader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	if bom, _ := br.Peek(3); bytes.Equal(bom, []byte{0xEF, 0xBB, 0xBF}) {
		_, _ = br.Discard(3)
	}
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: empty file: a CSV file needs a header row", name)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	seen := map[string]int{}
	fields := make([]arrow.Field, len(header))
	for i, h := range header {
		if h == "" {
			return nil, fmt.Errorf("%s: header column %d has no name", name, i+1)
		}
		if j, dup := seen[h]; dup {
			return nil, fmt.Errorf("%s: header names column %q twice (columns %d and %d)", name, h, j+1, i+1)
		}
		seen[h] = i
		fields[i] = arrow.Field{Name: h, Type: arrow.BinaryTypes.String, Nullable: true}
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	strs := make([]*array.StringBuilder, len(fields))
	for i := range fields {
		strs[i] = b.Field(i).(*array.StringBuilder)
	}
	return &csvReader{name: name, cr: cr, schema: schema, batch: opt.batch(), b: b, strs: strs}, nil
}

func (r *csvReader) Schema() *arrow.Schema { return r.schema }
func (r *csvReader) Close() error          { r.b.Release(); return nil }

func (r *csvReader) Next() (arrow.RecordBatch, error) {
	if r.done {
		return nil, io.EOF
	}
	n := 0
	for n < r.batch {
		rec, err := r.cr.Read()
		if errors.Is(err, io.EOF) {
			r.done = true
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				if errors.Is(pe.Err, csv.ErrFieldCount) {
					return nil, fmt.Errorf("%s: line %d: %d fields, but the header has %d", r.name, pe.StartLine, len(rec), len(r.strs))
				}
				return nil, fmt.Errorf("%s: line %d: %w", r.name, pe.StartLine, pe.Err)
			}
			return nil, fmt.Errorf("%s: %w", r.name, err)
		}
		for i, v := range rec {
			if v == "" {
				r.strs[i].AppendNull()
			} else {
				r.strs[i].Append(v)
			}
		}
		n++
	}
	if n == 0 {
		return nil, io.EOF
	}
	return r.b.NewRecordBatch(), nil
}
