package tablefile

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
)

var tsUTC = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

// sampleSchema has every column type the feature store moves through files.
var sampleSchema = arrow.NewSchema([]arrow.Field{
	{Name: "i32", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	{Name: "i64", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	{Name: "f64", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "b", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "ts", Type: tsUTC, Nullable: true},
	{Name: "lf", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
	{Name: "li", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64), Nullable: true},
	{Name: "ls", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
}, nil)

// sample builds one batch of sampleSchema holding values above 2^53,
// special floats, awkward strings, empty lists and nulls in every column.
func sample(t testing.TB) arrow.RecordBatch {
	t.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, sampleSchema)
	defer b.Release()
	valid := []bool{true, true, true, false}
	b.Field(0).(*array.Int32Builder).AppendValues([]int32{-7, math.MaxInt32, math.MinInt32, 0}, valid)
	b.Field(1).(*array.Int64Builder).AppendValues([]int64{1<<53 + 1, math.MinInt64, math.MaxInt64, 0}, valid)
	b.Field(2).(*array.Float32Builder).AppendValues([]float32{0.1, math.MaxFloat32, float32(math.Inf(-1)), 0}, valid)
	b.Field(3).(*array.Float64Builder).AppendValues([]float64{0.1, 1e21, math.NaN(), 0}, []bool{true, true, true, false})
	b.Field(4).(*array.StringBuilder).AppendValues([]string{`a,"b"`, "line\nbreak é 日本", " lead", ""}, valid)
	b.Field(5).(*array.BooleanBuilder).AppendValues([]bool{true, false, true, false}, valid)
	ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	b.Field(6).(*array.TimestampBuilder).AppendValues([]arrow.Timestamp{
		arrow.Timestamp(ts.UnixMicro()),
		arrow.Timestamp(ts.Add(1500 * time.Millisecond).UnixMicro()),
		arrow.Timestamp(time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC).UnixMicro()),
		0,
	}, valid)
	lf := b.Field(7).(*array.ListBuilder)
	lfv := lf.ValueBuilder().(*array.Float32Builder)
	lf.Append(true)
	lfv.AppendValues([]float32{1.5, 2, 0.1}, nil)
	lf.Append(true)
	lf.Append(true)
	lfv.AppendValues([]float32{float32(math.NaN()), float32(math.Inf(1)), 3.4028235e38}, nil)
	lf.AppendNull()
	li := b.Field(8).(*array.ListBuilder)
	liv := li.ValueBuilder().(*array.Int64Builder)
	li.Append(true)
	liv.AppendValues([]int64{1<<53 + 1}, nil)
	li.Append(true)
	liv.AppendValues([]int64{-1, 2}, nil)
	li.Append(true)
	liv.AppendNull()
	li.AppendNull()
	ls := b.Field(9).(*array.ListBuilder)
	lsv := ls.ValueBuilder().(*array.StringBuilder)
	ls.Append(true)
	lsv.AppendValues([]string{`q"uote`, "x"}, nil)
	ls.Append(true)
	ls.Append(true)
	lsv.AppendValues([]string{"a,b", "tab\there", "ü"}, nil)
	ls.AppendNull()
	return b.NewRecordBatch()
}

// sampleCSV is what the CSV writer makes of sample, written by hand.
const sampleCSV = `i32,i64,f32,f64,s,b,ts,lf,li,ls
-7,9007199254740993,0.1,0.1,"a,""b""",true,2024-01-02T03:04:05Z,"[1.5,2,0.1]",[9007199254740993],"[""q\""uote"",""x""]"
2147483647,-9223372036854775808,3.4028235e+38,1e+21,"line
break é 日本",false,2024-01-02T03:04:06.5Z,[],"[-1,2]",[]
-2147483648,9223372036854775807,-Inf,NaN," lead",true,1969-12-31T23:59:59.999999Z,"[NaN,+Inf,3.4028235e+38]",[null],"[""a,b"",""tab\there"",""ü""]"
,,,,,,,,,
`

// writeFile writes recs to a new file of format f and returns its path.
func writeFile(t testing.TB, f Format, schema *arrow.Schema, opt WriteOptions, recs ...arrow.RecordBatch) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data."+string(f))
	w, err := Create(path, f, schema, opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// drain reads r to the end, closes it, and returns the batch sizes and the
// rows rendered as CSV (header included).
func drain(t testing.TB, r Reader) (sizes []int64, text string) {
	t.Helper()
	defer func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	var buf bytes.Buffer
	cw, err := NewWriter(&buf, CSV, r.Schema(), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !rec.Schema().Equal(r.Schema()) {
			t.Fatalf("batch schema %s differs from the reader's %s", rec.Schema(), r.Schema())
		}
		sizes = append(sizes, rec.NumRows())
		if err := cw.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("Next after the end = %v, want io.EOF", err)
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	return sizes, buf.String()
}

// checked returns read options with an allocator that fails the test when
// the reader leaks memory.
func checked(t *testing.T, batchRows int) ReadOptions {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { mem.AssertSize(t, 0) })
	return ReadOptions{BatchRows: batchRows, Allocator: mem}
}

// sameType compares types ignoring the names of list elements (Parquet
// calls the element "element" where Arrow says "item").
func sameType(a, b arrow.DataType) bool {
	la, ok1 := a.(arrow.ListLikeType)
	lb, ok2 := b.(arrow.ListLikeType)
	if ok1 && ok2 {
		return a.ID() == b.ID() && sameType(la.Elem(), lb.Elem())
	}
	return arrow.TypeEqual(a, b)
}

func TestRoundTrip(t *testing.T) {
	header, body, _ := strings.Cut(sampleCSV, "\n")
	for _, f := range []Format{CSV, Parquet, Arrow} {
		t.Run(string(f), func(t *testing.T) {
			rec := sample(t)
			defer rec.Release()
			path := writeFile(t, f, rec.Schema(), WriteOptions{}, rec, rec, rec)
			r, err := Open(path, f, checked(t, 5))
			if err != nil {
				t.Fatal(err)
			}
			if r.Schema().NumFields() != sampleSchema.NumFields() {
				t.Fatalf("schema %s", r.Schema())
			}
			for i, got := range r.Schema().Fields() {
				want := sampleSchema.Field(i)
				if f == CSV {
					want.Type = arrow.BinaryTypes.String // CSV infers no types
				}
				if got.Name != want.Name || !sameType(got.Type, want.Type) {
					t.Errorf("column %d is %s %s, want %s %s", i, got.Name, got.Type, want.Name, want.Type)
				}
			}
			sizes, text := drain(t, r)
			if want := header + "\n" + strings.Repeat(body, 3); text != want {
				t.Errorf("read back:\n%s\nwant:\n%s", text, want)
			}
			// Arrow batches are sliced, never merged.
			wantSizes := "[5 5 2]"
			if f == Arrow {
				wantSizes = "[4 4 4]"
			}
			if fmt.Sprint(sizes) != wantSizes {
				t.Errorf("batch sizes %v, want %s", sizes, wantSizes)
			}
		})
	}
}

// TestTimestampZonesRoundTrip: a time zone on a timestamp column survives
// Parquet and Arrow.
func TestTimestampZonesRoundTrip(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "ns_ny", Type: &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "America/New_York"}, Nullable: true},
		{Name: "ms", Type: &arrow.TimestampType{Unit: arrow.Millisecond}, Nullable: true},
		{Name: "d", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	ts := time.Date(2024, 6, 1, 12, 0, 0, 123456789, time.UTC)
	b.Field(0).(*array.TimestampBuilder).Append(arrow.Timestamp(ts.UnixNano()))
	b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(ts.UnixMilli()))
	b.Field(2).(*array.Date32Builder).Append(arrow.Date32FromTime(ts))
	rec := b.NewRecordBatch()
	defer rec.Release()
	for _, f := range []Format{Parquet, Arrow} {
		t.Run(string(f), func(t *testing.T) {
			r, err := Open(writeFile(t, f, schema, WriteOptions{}, rec), f, checked(t, 0))
			if err != nil {
				t.Fatal(err)
			}
			for i, got := range r.Schema().Fields() {
				if !arrow.TypeEqual(got.Type, schema.Field(i).Type) {
					t.Errorf("column %s is %s, want %s", got.Name, got.Type, schema.Field(i).Type)
				}
			}
			_, text := drain(t, r)
			if want := "ns_ny,ms,d\n2024-06-01T12:00:00.123456789Z,2024-06-01T12:00:00.123Z,2024-06-01\n"; text != want {
				t.Errorf("read back %q, want %q", text, want)
			}
		})
	}
}

// TestBatchBoundaries: BatchRows=3 over 10 rows gives batches of 3, 3, 3
// and 1 rows in every format, whatever batches the file was written in.
func TestBatchBoundaries(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true}}, nil)
	ints := func(from, to int64) arrow.RecordBatch {
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		defer b.Release()
		for v := from; v < to; v++ {
			b.Field(0).(*array.Int64Builder).Append(v)
		}
		return b.NewRecordBatch()
	}
	whole, first, second := ints(0, 10), ints(0, 4), ints(4, 10)
	defer whole.Release()
	defer first.Release()
	defer second.Release()
	want := "n\n0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n"
	for _, f := range []Format{CSV, Parquet, Arrow} {
		for name, recs := range map[string][]arrow.RecordBatch{"one batch": {whole}, "two batches": {first, second}} {
			t.Run(string(f)+"/"+name, func(t *testing.T) {
				r, err := Open(writeFile(t, f, schema, WriteOptions{}, recs...), f, checked(t, 3))
				if err != nil {
					t.Fatal(err)
				}
				sizes, text := drain(t, r)
				if text != want {
					t.Errorf("read %q, want %q", text, want)
				}
				// A batch never spans two of an Arrow file's batches.
				wantSizes := "[3 3 3 1]"
				if f == Arrow && len(recs) == 2 {
					wantSizes = "[3 1 3 3]"
				}
				if fmt.Sprint(sizes) != wantSizes {
					t.Errorf("batch sizes %v, want %s", sizes, wantSizes)
				}
			})
		}
	}
}

func TestEmptyFiles(t *testing.T) {
	for _, f := range []Format{CSV, Parquet, Arrow} {
		t.Run(string(f), func(t *testing.T) {
			r, err := Open(writeFile(t, f, sampleSchema, WriteOptions{}), f, checked(t, 0))
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Schema().NumFields(); got != sampleSchema.NumFields() {
				t.Errorf("%d columns, want %d", got, sampleSchema.NumFields())
			}
			sizes, _ := drain(t, r)
			if len(sizes) != 0 {
				t.Errorf("batches %v from an empty file", sizes)
			}
		})
	}
}

func TestWriterErrors(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	other := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	for _, f := range []Format{CSV, Parquet, Arrow} {
		t.Run(string(f)+"/schema mismatch", func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x")
			w, err := Create(path, f, other, WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(rec); err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("Write of another schema: %v, want an error naming %s", err, path)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := w.Write(rec); err == nil {
				t.Error("Write after Close: no error")
			}
			if err := w.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
	t.Run("unknown compression", func(t *testing.T) {
		if _, err := NewWriter(io.Discard, Parquet, other, WriteOptions{Compression: "lzma"}); err == nil || !strings.Contains(err.Error(), "lzma") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("unknown format", func(t *testing.T) {
		if _, err := NewWriter(io.Discard, "xlsx", other, WriteOptions{}); err == nil {
			t.Error("no error")
		}
	})
	t.Run("csv unsupported type removes the file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "x.csv")
		st := arrow.NewSchema([]arrow.Field{{Name: "st", Type: arrow.StructOf(arrow.Field{Name: "a", Type: arrow.PrimitiveTypes.Int8})}}, nil)
		if _, err := Create(path, CSV, st, WriteOptions{}); err == nil || !strings.Contains(err.Error(), `"st"`) {
			t.Errorf("err = %v, want one naming the column", err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("file left behind: %v", err)
		}
	})
}

// TestParquetCompressions writes a file with each compression, reads it
// back, and checks in the Parquet metadata that every column chunk of
// every row group uses the codec asked for.
func TestParquetCompressions(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	_, body, _ := strings.Cut(sampleCSV, "\n")
	for _, tc := range []struct {
		compression Compression
		want        compress.Compression
	}{
		{"", compress.Codecs.Zstd},
		{Zstd, compress.Codecs.Zstd},
		{Snappy, compress.Codecs.Snappy},
		{Uncompressed, compress.Codecs.Uncompressed},
		{"SNAPPY", compress.Codecs.Snappy},
	} {
		t.Run(string(tc.compression), func(t *testing.T) {
			path := writeFile(t, Parquet, rec.Schema(), WriteOptions{Compression: tc.compression}, rec, rec)
			r, err := Open(path, Parquet, ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, text := drain(t, r); !strings.HasSuffix(text, body+body) {
				t.Errorf("read back %q", text)
			}
			if got := parquetCodecs(t, path); len(got) != 1 || !got[tc.want] {
				t.Errorf("column chunks use %v, want only %v", got, tc.want)
			}
		})
	}
}

// parquetCodecs reads the codec of every column chunk of a Parquet file
// from its metadata.
func parquetCodecs(t *testing.T, path string) map[compress.Compression]bool {
	t.Helper()
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	codecs := map[compress.Compression]bool{}
	md := pf.MetaData()
	if md.NumRowGroups() == 0 {
		t.Fatalf("%s has no row groups", path)
	}
	for g := range md.NumRowGroups() {
		rg := md.RowGroup(g)
		for c := range rg.NumColumns() {
			cc, err := rg.ColumnChunk(c)
			if err != nil {
				t.Fatal(err)
			}
			codecs[cc.Compression()] = true
		}
	}
	return codecs
}

func TestParseCompression(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Compression
	}{
		{"", Zstd}, {"zstd", Zstd}, {" ZSTD ", Zstd}, {"snappy", Snappy}, {"none", Uncompressed}, {"None", Uncompressed},
	} {
		if got, err := ParseCompression(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseCompression(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"gzip", "lz4", "uncompressed", "zst"} {
		_, err := ParseCompression(in)
		var ce *CompressionError
		if !errors.As(err, &ce) || ce.Value != in || ce.Output != "" || !strings.Contains(err.Error(), "zstd, snappy, none") {
			t.Errorf("ParseCompression(%q) error = %v, want a CompressionError listing the valid values", in, err)
		}
	}
}

// TestCompressionOnlyForParquet: CSV and Arrow IPC are written
// uncompressed, and asking for a compression there is an error, from
// CheckCompression and from the writers alike.
func TestCompressionOnlyForParquet(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	for _, tc := range []struct {
		format      Format
		compression Compression
		want        Compression
		ok          bool
	}{
		{Parquet, "", Zstd, true},
		{Parquet, Snappy, Snappy, true},
		{Parquet, Uncompressed, Uncompressed, true},
		{Parquet, "brotli", "", false},
		{CSV, "", "", true},
		{Arrow, "", "", true},
		{CSV, Zstd, "", false},
		{CSV, Uncompressed, "", false},
		{Arrow, Snappy, "", false},
		{Arrow, "brotli", "", false},
	} {
		name := fmt.Sprintf("%s/%s", tc.format, tc.compression)
		got, err := CheckCompression(tc.format, tc.compression)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("%s: CheckCompression = %q, %v; want %q, ok %v", name, got, err, tc.want, tc.ok)
		}
		var ce *CompressionError
		if err != nil && (!errors.As(err, &ce) || ce.Value != string(tc.compression)) {
			t.Errorf("%s: error %v is not a CompressionError naming %q", name, err, tc.compression)
		}
		if tc.format != Parquet && err != nil && (ce.Output != string(tc.format) || !strings.Contains(err.Error(), "Parquet files only")) {
			t.Errorf("%s: error %v, want one saying compression is for Parquet only", name, err)
		}
		w, werr := NewWriter(io.Discard, tc.format, schema, WriteOptions{Compression: tc.compression})
		if (werr == nil) != tc.ok {
			t.Errorf("%s: NewWriter error = %v, want ok %v", name, werr, tc.ok)
		}
		if werr != nil && w != nil {
			t.Errorf("%s: NewWriter returned a Writer (%#v) with its error", name, w)
			w = nil
		}
		if w != nil {
			if err := w.Close(); err != nil {
				t.Errorf("%s: Close: %v", name, err)
			}
		}
	}
}

func TestReaderLifecycle(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	r, err := Open(writeFile(t, Arrow, rec.Schema(), WriteOptions{}, rec), Arrow, checked(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got.NumRows() != 2 || got.Column(1).(*array.Int64).Value(0) != 1<<53+1 {
		t.Errorf("batch taken before Close is not intact")
	}
	got.Release()
	if _, err := r.Next(); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("Next after Close = %v, want an error", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.csv"), CSV, ReadOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a missing file: %v", err)
	}
}

// readErr reads path to the end and returns the first error that is not
// io.EOF (nil if there is none).
func readErr(path string, f Format) (err error) {
	r, err := Open(path, f, ReadOptions{BatchRows: 2})
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		rec.Release()
	}
}

// TestCorruptFiles: a truncated Parquet or Arrow file is an error naming the
// file (never a panic, never a silent short read); a file with bytes
// overwritten may read or fail, but must neither panic nor crash the
// process (the Arrow IPC reader would allocate whatever a corrupt schema
// claims: ipcverify.go stops that).
func TestCorruptFiles(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	for _, kind := range []string{"parquet", "arrow file", "arrow stream"} {
		t.Run(kind, func(t *testing.T) {
			var data []byte
			f := Arrow
			switch kind {
			case "parquet":
				f = Parquet
				fallthrough
			case "arrow file":
				var err error
				if data, err = os.ReadFile(writeFile(t, f, rec.Schema(), WriteOptions{}, rec, rec)); err != nil {
					t.Fatal(err)
				}
			case "arrow stream":
				data = arrowBytes(t, true, rec.Schema(), rec, rec)
			}
			bad := filepath.Join(t.TempDir(), "bad")
			step := max(1, len(data)/97)
			for cut := 0; cut < len(data); cut += step {
				if err := os.WriteFile(bad, data[:cut], 0o644); err != nil {
					t.Fatal(err)
				}
				err := readErr(bad, f)
				if kind == "arrow stream" && err == nil {
					continue // a stream cut between messages is a shorter stream
				}
				if err == nil || !strings.Contains(err.Error(), bad) {
					t.Fatalf("truncated to %d of %d bytes: error %v, want one naming %s", cut, len(data), err, bad)
				}
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for range 500 {
				mangled := bytes.Clone(data)
				for range 1 + rng.IntN(4) {
					mangled[rng.IntN(len(mangled))] = byte(rng.Uint32())
				}
				if err := os.WriteFile(bad, mangled, 0o644); err != nil {
					t.Fatal(err)
				}
				_ = readErr(bad, f) // must return, error or not
			}
		})
	}
}

// TestCorruptSchemaCounts: schemas whose counts claim billions of fields are
// errors, not out-of-memory crashes, in Arrow files, streams and the Arrow
// schema stored in Parquet files.
func TestCorruptSchemaCounts(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	stream := arrowBytes(t, true, rec.Schema(), rec)
	file := arrowBytes(t, false, rec.Schema(), rec)
	// The schema message: continuation, length, then the flatbuffer.
	meta := stream[8 : 8+binary.LittleEndian.Uint32(stream[4:8])]
	// Find the vector of the schema's 10 fields: a uint32 10 followed by
	// 10 offsets to tables.
	vec := bytes.Index(meta, []byte{10, 0, 0, 0})
	if vec < 0 {
		t.Fatal("no vector of 10 fields in the schema message")
	}
	for name, data := range map[string][]byte{"stream": stream, "file": file} {
		t.Run(name, func(t *testing.T) {
			bad := bytes.Clone(data)
			at := bytes.Index(bad, meta) + vec
			binary.LittleEndian.PutUint32(bad[at:], 0x7fffffff)
			if name == "file" {
				// The footer holds the schema again: corrupt that copy, the
				// one the file reader uses.
				footerLen := int(binary.LittleEndian.Uint32(bad[len(bad)-10:]))
				footer := bad[len(bad)-10-footerLen : len(bad)-10]
				i := bytes.Index(footer, []byte{10, 0, 0, 0})
				if i < 0 {
					t.Fatal("no vector of 10 fields in the footer")
				}
				binary.LittleEndian.PutUint32(footer[i:], 0x7fffffff)
			}
			path := filepath.Join(t.TempDir(), "bad.arrow")
			if err := os.WriteFile(path, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := readErr(path, Arrow); err == nil || !strings.Contains(err.Error(), "corrupt") {
				t.Errorf("error %v, want one about corruption", err)
			}
			if _, err := NewReader(pipe{bytes.NewReader(bad)}, Arrow, ReadOptions{}); err == nil {
				t.Error("from a pipe: no error")
			}
		})
	}
	t.Run("parquet stored schema", func(t *testing.T) {
		good := base64.StdEncoding.EncodeToString(stream[:8+len(meta)])
		if err := checkStoredSchema(good); err != nil {
			t.Fatalf("a good schema: %v", err)
		}
		bad := bytes.Clone(stream[:8+len(meta)])
		binary.LittleEndian.PutUint32(bad[8+vec:], 0x7fffffff)
		if err := checkStoredSchema(base64.StdEncoding.EncodeToString(bad)); err == nil {
			t.Error("a corrupt schema: no error")
		}
	})
}

func TestUnknownFormat(t *testing.T) {
	if _, err := NewReader(strings.NewReader("a\n1\n"), "xlsx", ReadOptions{}); err == nil {
		t.Error("NewReader of an unknown format: no error")
	}
}
