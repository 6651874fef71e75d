package trainingexport

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/tailorhq/tailor/featurestore/tablefile"
)

// source yields n one-row batches, then fails with err (io.EOF: success).
type source struct {
	schema *arrow.Schema
	n      int
	err    error
}

func (s *source) Schema() *arrow.Schema { return s.schema }
func (s *source) Next() (arrow.RecordBatch, error) {
	if s.n == 0 {
		return nil, s.err
	}
	s.n--
	b := array.NewRecordBuilder(memory.DefaultAllocator, s.schema)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).Append(int64(s.n))
	return b.NewRecordBatch(), nil
}

func TestWriteAtomically(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	for _, f := range []tablefile.Format{tablefile.CSV, tablefile.Parquet, tablefile.Arrow} {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out."+string(f))

			// A source failing midway leaves neither the file nor a temporary.
			boom := errors.New("connection lost")
			if _, err := WriteFile(out, f, &source{schema: schema, n: 3, err: boom}, nil); !errors.Is(err, boom) {
				t.Fatalf("error = %v, want %v", err, boom)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("left behind after a failure: %v", entries)
			}

			var seen []int64
			rows, err := WriteFile(out, f, &source{schema: schema, n: 3, err: io.EOF}, func(n int64) { seen = append(seen, n) })
			if err != nil || rows != 3 {
				t.Fatalf("rows = %d, err = %v", rows, err)
			}
			if len(seen) != 3 || seen[2] != 3 {
				t.Errorf("progress = %v, want cumulative rows per batch", seen)
			}
			r, err := tablefile.Open(out, f, tablefile.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var total int64
			for {
				rec, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				total += rec.NumRows()
				rec.Release()
			}
			if total != 3 {
				t.Fatalf("read back %d rows, want 3", total)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("directory holds %v, want only the output", entries)
			}
		})
	}
}
