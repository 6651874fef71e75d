package tablefile

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Row groups the Parquet writer makes: up to maxRowGroupRows rows, cut
// earlier once the row group buffered in memory holds maxRowGroupBytes of
// compressed pages (checked between writes).
const (
	maxRowGroupRows  = 1 << 17
	maxRowGroupBytes = 64 << 20
)

// parquetSource reads all row groups of a Parquet file in batches of
// BatchRows rows (a batch can span row groups).
type parquetSource struct {
	pf   *file.Reader
	rr   pqarrow.RecordReader
	done bool
}

func newParquetSource(in io.Reader, batch int, mem memory.Allocator) (source, error) {
	ras, ok := in.(readAtSeeker)
	if !ok {
		return nil, errors.New("reading Parquet needs random access (an io.ReaderAt and io.Seeker such as a file), not a stream")
	}
	pf, err := file.NewParquetReader(noClose{ras})
	if err != nil {
		return nil, fmt.Errorf("not a readable Parquet file: %w", err)
	}
	if v := pf.MetaData().KeyValueMetadata().FindValue("ARROW:schema"); v != nil {
		if err := checkStoredSchema(*v); err != nil {
			_ = pf.Close()
			return nil, err
		}
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: int64(batch)}, mem)
	if err != nil {
		_ = pf.Close()
		return nil, fmt.Errorf("parquet schema: %w", err)
	}
	rr, err := fr.GetRecordReader(context.Background(), nil, nil)
	if err != nil {
		_ = pf.Close()
		return nil, fmt.Errorf("parquet columns: %w", err)
	}
	return &parquetSource{pf: pf, rr: rr}, nil
}

func (s *parquetSource) schema() *arrow.Schema { return s.rr.Schema() }

func (s *parquetSource) close() error {
	s.rr.Release()
	return s.pf.Close()
}

func (s *parquetSource) next() (arrow.RecordBatch, error) {
	if s.done {
		return nil, io.EOF
	}
	rec, err := s.rr.Read()
	if rec == nil {
		s.done = true
		if err == nil || errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, err
	}
	rec.Retain() // the record reader releases its own reference on the next Read
	return rec, nil
}

// parquetWriter writes row groups of reasonable size whatever the size of
// the batches it is given, buffering one row group in memory.
type parquetWriter struct {
	fw  *pqarrow.FileWriter
	cut bool // start a new row group at the next write
}

func parquetCodec(c Compression) (compress.Compression, error) {
	c, err := ParseCompression(string(c))
	if err != nil {
		return 0, err
	}
	switch c {
	case Snappy:
		return compress.Codecs.Snappy, nil
	case Uncompressed:
		return compress.Codecs.Uncompressed, nil
	}
	return compress.Codecs.Zstd, nil
}

func newParquetWriter(w io.Writer, schema *arrow.Schema, opt WriteOptions) (*parquetWriter, error) {
	codec, err := parquetCodec(opt.Compression)
	if err != nil {
		return nil, err
	}
	props := parquet.NewWriterProperties(
		parquet.WithCompression(codec),
		parquet.WithMaxRowGroupLength(maxRowGroupRows),
		parquet.WithCreatedBy("tailor"),
	)
	fw, err := pqarrow.NewFileWriter(schema, writeOnly{w}, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return nil, fmt.Errorf("parquet writer: %w", err)
	}
	return &parquetWriter{fw: fw}, nil
}

func (p *parquetWriter) write(rec arrow.RecordBatch) error {
	if p.cut {
		if err := p.fw.NewBufferedRowGroupChecked(); err != nil {
			return err
		}
		p.cut = false
	}
	if err := p.fw.WriteBuffered(rec); err != nil {
		return err
	}
	p.cut = p.fw.RowGroupTotalCompressedBytes() >= maxRowGroupBytes
	return nil
}

func (p *parquetWriter) close() error { return p.fw.Close() }
