package trainingexport

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"

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
			if _, err := WriteFile(out, f, tablefile.WriteOptions{}, &source{schema: schema, n: 3, err: boom}, nil); !errors.Is(err, boom) {
				t.Fatalf("error = %v, want %v", err, boom)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("left behind after a failure: %v", entries)
			}

			var seen []int64
			rows, err := WriteFile(out, f, tablefile.WriteOptions{}, &source{schema: schema, n: 3, err: io.EOF}, func(n int64) { seen = append(seen, n) })
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

// TestOutputOptions: the compression of a file output is checked against
// its format before anything runs, and named as the file will get it.
func TestOutputOptions(t *testing.T) {
	for _, tc := range []struct {
		out, format, compression string
		wantFormat               tablefile.Format
		want                     tablefile.Compression
		err                      string
	}{
		{out: "a.parquet", wantFormat: tablefile.Parquet, want: tablefile.Zstd},
		{out: "a.parquet", compression: "snappy", wantFormat: tablefile.Parquet, want: tablefile.Snappy},
		{out: "a.pq", compression: "none", wantFormat: tablefile.Parquet, want: tablefile.Uncompressed},
		{out: "a.out", format: "parquet", compression: "ZSTD", wantFormat: tablefile.Parquet, want: tablefile.Zstd},
		{out: "a.csv", wantFormat: tablefile.CSV},
		{out: "a.arrow", wantFormat: tablefile.Arrow},
		{out: "a.parquet", compression: "gzip", err: "valid: zstd, snappy, none"},
		{out: "a.csv", compression: "zstd", err: "not to csv output"},
		{out: "a.arrow", compression: "none", err: "not to arrow output"},
		{out: "a.parquet", format: "csv", compression: "snappy", err: "not to csv output"},
		{out: "a.txt", err: "cannot tell the format"},
	} {
		f, opt, err := OutputOptions(tc.out, tc.format, tc.compression)
		name := tc.out + "/" + tc.format + "/" + tc.compression
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want one containing %q", name, err, tc.err)
			}
			continue
		}
		if err != nil || f != tc.wantFormat || opt.Compression != tc.want {
			t.Errorf("%s: %q, %+v, %v; want %q, compression %q", name, f, opt, err, tc.wantFormat, tc.want)
		}
	}
}

// TestWriteFileCompression: WriteFile writes Parquet column chunks with
// the codec asked for, and the file reads back.
func TestWriteFileCompression(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	for c, want := range map[tablefile.Compression]compress.Compression{
		tablefile.Zstd: compress.Codecs.Zstd, tablefile.Snappy: compress.Codecs.Snappy, tablefile.Uncompressed: compress.Codecs.Uncompressed,
	} {
		t.Run(string(c), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.parquet")
			if _, err := WriteFile(out, tablefile.Parquet, tablefile.WriteOptions{Compression: c}, &source{schema: schema, n: 5, err: io.EOF}, nil); err != nil {
				t.Fatal(err)
			}
			pf, err := file.OpenParquetFile(out, false)
			if err != nil {
				t.Fatal(err)
			}
			defer pf.Close()
			if pf.NumRows() != 5 {
				t.Errorf("%d rows, want 5", pf.NumRows())
			}
			cc, err := pf.MetaData().RowGroup(0).ColumnChunk(0)
			if err != nil {
				t.Fatal(err)
			}
			if cc.Compression() != want {
				t.Errorf("column chunk codec %v, want %v", cc.Compression(), want)
			}
		})
	}
}
