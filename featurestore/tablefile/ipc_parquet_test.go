package tablefile

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// pipe hides every method of r but Read, as a pipe or stdin would.
type pipe struct{ r io.Reader }

func (p pipe) Read(b []byte) (int, error) { return p.r.Read(b) }

// arrowBytes encodes recs in the Arrow IPC stream or file format.
func arrowBytes(t *testing.T, stream bool, schema *arrow.Schema, recs ...arrow.RecordBatch) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w interface {
		Write(arrow.RecordBatch) error
		Close() error
	}
	if stream {
		w = ipc.NewWriter(&buf, ipc.WithSchema(schema))
	} else {
		fw, err := ipc.NewFileWriter(&buf, ipc.WithSchema(schema))
		if err != nil {
			t.Fatal(err)
		}
		w = fw
	}
	for _, rec := range recs {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestArrowStreamAndFile: both IPC formats are told apart by content and
// read from a file, from a seekable reader and from a pipe.
func TestArrowStreamAndFile(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	want := strings.SplitN(sampleCSV, "\n", 2)[0] + "\n" + strings.Repeat(strings.SplitN(sampleCSV, "\n", 2)[1], 2)
	for _, stream := range []bool{true, false} {
		data := arrowBytes(t, stream, rec.Schema(), rec, rec)
		if got := bytes.HasPrefix(data, []byte("ARROW1")); got == stream {
			t.Fatalf("stream=%v: magic present = %v", stream, got)
		}
		path := filepath.Join(t.TempDir(), "data.arrow")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		inputs := map[string]func() (Reader, error){
			"Open":             func() (Reader, error) { return Open(path, Arrow, checked(t, 3)) },
			"NewReader(bytes)": func() (Reader, error) { return NewReader(bytes.NewReader(data), Arrow, checked(t, 3)) },
			"NewReader(pipe)":  func() (Reader, error) { return NewReader(pipe{bytes.NewReader(data)}, Arrow, checked(t, 3)) },
			"NewReader(file)":  func() (Reader, error) { return NewReader(fh, Arrow, checked(t, 3)) },
		}
		for name, open := range inputs {
			t.Run(fmt.Sprintf("stream=%v/%s", stream, name), func(t *testing.T) {
				r, err := open()
				if err != nil {
					t.Fatal(err)
				}
				sizes, text := drain(t, r)
				if text != want {
					t.Errorf("read:\n%s\nwant:\n%s", text, want)
				}
				if fmt.Sprint(sizes) != "[3 1 3 1]" {
					t.Errorf("batch sizes %v, want [3 1 3 1]", sizes)
				}
			})
		}
	}
}

func TestParquetNeedsRandomAccess(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	data, err := os.ReadFile(writeFile(t, Parquet, rec.Schema(), WriteOptions{}, rec))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewReader(pipe{bytes.NewReader(data)}, Parquet, ReadOptions{}); err == nil || !strings.Contains(err.Error(), "random access") {
		t.Errorf("Parquet from a pipe: %v, want an error saying it needs random access", err)
	}
	r, err := NewReader(bytes.NewReader(data), Parquet, checked(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	if sizes, _ := drain(t, r); fmt.Sprint(sizes) != "[4]" {
		t.Errorf("batch sizes %v", sizes)
	}
}

// dictBatch has a dictionary-encoded string column, as pandas categoricals
// arrive, beside a plain one.
func dictBatch(t *testing.T) arrow.RecordBatch {
	t.Helper()
	dt := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int16, ValueType: arrow.BinaryTypes.String}
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "channel", Type: dt, Nullable: true},
		{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	db := b.Field(0).(*array.BinaryDictionaryBuilder)
	for i, s := range []string{"email", "sms", "", "email"} {
		if s == "" {
			db.AppendNull()
		} else if err := db.AppendString(s); err != nil {
			t.Fatal(err)
		}
		b.Field(1).(*array.Int64Builder).Append(int64(i))
	}
	return b.NewRecordBatch()
}

// TestDictionaryStringsDecoded: dictionary-encoded strings come out as
// plain String columns from Arrow (file and stream) and Parquet.
func TestDictionaryStringsDecoded(t *testing.T) {
	rec := dictBatch(t)
	defer rec.Release()
	const header, rows = "channel,n\n", "email,0\nsms,1\n,2\nemail,3\n"
	check := func(t *testing.T, r Reader) {
		t.Helper()
		if got := r.Schema().Field(0).Type; !arrow.TypeEqual(got, arrow.BinaryTypes.String) {
			t.Errorf("channel is %s, want utf8", got)
		}
		if _, text := drain(t, r); text != header+rows+rows {
			t.Errorf("read %q, want %q", text, header+rows+rows)
		}
	}
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprintf("arrow stream=%v", stream), func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(arrowBytes(t, stream, rec.Schema(), rec, rec)), Arrow, checked(t, 3))
			if err != nil {
				t.Fatal(err)
			}
			check(t, r)
		})
	}
	t.Run("parquet", func(t *testing.T) {
		r, err := Open(writeFile(t, Parquet, rec.Schema(), WriteOptions{}, rec, rec), Parquet, checked(t, 3))
		if err != nil {
			t.Fatal(err)
		}
		check(t, r)
	})
}

// TestParquetRowGroups: a file of many small row groups (as other writers
// make) is read in batches of BatchRows that span row groups.
func TestParquetRowGroups(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	var want strings.Builder
	want.WriteString("n,s\n")
	for i := range 25 {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		b.Field(1).(*array.StringBuilder).Append(fmt.Sprint("v", i))
		fmt.Fprintf(&want, "%d,v%d\n", i, i)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()

	path := filepath.Join(t.TempDir(), "groups.parquet")
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := pqarrow.NewFileWriter(schema, fh, parquet.NewWriterProperties(parquet.WithMaxRowGroupLength(4)), pqarrow.DefaultWriterProps())
	if err != nil {
		t.Fatal(err)
	}
	if err := pw.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := pw.Close(); err != nil { // closes fh too
		t.Fatal(err)
	}
	if n := rowGroups(t, path); len(n) != 7 {
		t.Fatalf("test file has row groups %v, want 7", n)
	}

	r, err := Open(path, Parquet, checked(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	sizes, text := drain(t, r)
	if text != want.String() {
		t.Errorf("read:\n%s\nwant:\n%s", text, want.String())
	}
	if fmt.Sprint(sizes) != "[3 3 3 3 3 3 3 3 1]" {
		t.Errorf("batch sizes %v", sizes)
	}
}

// rowGroups returns the row counts of the row groups of a Parquet file.
func rowGroups(t *testing.T, path string) []int64 {
	t.Helper()
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	var n []int64
	for i := range pf.NumRowGroups() {
		n = append(n, pf.MetaData().RowGroup(i).NumRows())
	}
	return n
}

// TestParquetWriterRowGroupSize: small batches are gathered into row groups
// of up to 131072 rows rather than one tiny row group each.
func TestParquetWriterRowGroupSize(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true}}, nil)
	path := filepath.Join(t.TempDir(), "big.parquet")
	w, err := Create(path, Parquet, schema, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	const batches, rows = 200, 1000
	for i := range batches {
		for j := range rows {
			b.Field(0).(*array.Int64Builder).Append(int64(i*rows + j))
		}
		rec := b.NewRecordBatch()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rowGroups(t, path)); got != "[131072 68928]" {
		t.Errorf("row groups %s, want [131072 68928]", got)
	}
	r, err := Open(path, Parquet, checked(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	next := int64(0)
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		col := rec.Column(0).(*array.Int64)
		for i := range col.Len() {
			if col.Value(i) != next {
				t.Fatalf("row %d holds %d", next, col.Value(i))
			}
			next++
		}
		rec.Release()
	}
	if next != batches*rows {
		t.Errorf("read %d rows, want %d", next, batches*rows)
	}
}

// TestParquetFromOtherWriters: a file written without the Arrow schema
// (as Spark or DuckDB write) still reads with its types.
func TestParquetFromOtherWriters(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	var buf bytes.Buffer
	pw, err := pqarrow.NewFileWriter(rec.Schema(), &buf, parquet.NewWriterProperties(), pqarrow.DefaultWriterProps())
	if err != nil {
		t.Fatal(err)
	}
	if err := pw.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(bytes.NewReader(buf.Bytes()), Parquet, checked(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	ts := r.Schema().Field(6).Type.(*arrow.TimestampType)
	if ts.Unit != arrow.Microsecond || ts.TimeZone != "UTC" {
		t.Errorf("timestamp column read as %s", ts)
	}
	if _, text := drain(t, r); text != sampleCSV {
		t.Errorf("read:\n%s\nwant:\n%s", text, sampleCSV)
	}
}
