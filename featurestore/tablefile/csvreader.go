package tablefile

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// csvSource reads RFC 4180 CSV with a header row; every column is a
// nullable String column, an empty field being null.
type csvSource struct {
	cr    *csv.Reader
	sc    *arrow.Schema
	batch int
	b     *array.RecordBuilder
	cols  []*array.StringBuilder
	done  bool
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

func newCSVSource(r io.Reader, batch int, mem memory.Allocator) (*csvSource, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	if bom, _ := br.Peek(len(utf8BOM)); bytes.Equal(bom, utf8BOM) {
		_, _ = br.Discard(len(utf8BOM))
	}
	cr := csv.NewReader(br) // keeps br, which is already buffered
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("empty file: a CSV file needs a header row")
	}
	if err != nil {
		return nil, fmt.Errorf("header: %w", csvError(err))
	}
	seen := make(map[string]int, len(header))
	fields := make([]arrow.Field, len(header))
	for i, h := range header {
		if h == "" {
			return nil, fmt.Errorf("header: column %d has no name", i+1)
		}
		if j, dup := seen[h]; dup {
			return nil, fmt.Errorf("header: column %q appears twice (columns %d and %d)", h, j+1, i+1)
		}
		seen[h] = i
		fields[i] = arrow.Field{Name: h, Type: arrow.BinaryTypes.String, Nullable: true}
	}
	sc := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(mem, sc)
	cols := make([]*array.StringBuilder, len(fields))
	for i := range fields {
		cols[i] = b.Field(i).(*array.StringBuilder)
	}
	return &csvSource{cr: cr, sc: sc, batch: batch, b: b, cols: cols}, nil
}

// csvError words a csv.ParseError as "line N: ..." (the header is line 1).
func csvError(err error) error {
	var pe *csv.ParseError
	if !errors.As(err, &pe) {
		return err
	}
	if pe.StartLine != pe.Line {
		return fmt.Errorf("record starting on line %d, line %d, column %d: %w", pe.StartLine, pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("line %d, column %d: %w", pe.Line, pe.Column, pe.Err)
}

func (s *csvSource) schema() *arrow.Schema { return s.sc }

func (s *csvSource) close() error {
	s.b.Release()
	return nil
}

func (s *csvSource) next() (arrow.RecordBatch, error) {
	if s.done {
		return nil, io.EOF
	}
	n := 0
	for n < s.batch {
		rec, err := s.cr.Read()
		if errors.Is(err, io.EOF) {
			s.done = true
			break
		}
		if err != nil {
			if pe := (*csv.ParseError)(nil); errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount) {
				return nil, fmt.Errorf("line %d: %d field(s) where the header has %d", pe.StartLine, len(rec), len(s.cols))
			}
			return nil, csvError(err)
		}
		for i, v := range rec {
			if v == "" {
				s.cols[i].AppendNull()
			} else {
				s.cols[i].Append(v)
			}
		}
		n++
	}
	if n == 0 {
		return nil, io.EOF
	}
	return s.b.NewRecordBatch(), nil
}
