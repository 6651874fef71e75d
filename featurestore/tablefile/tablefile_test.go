package tablefile

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

var tsType = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

// sample builds one batch holding every column type, with nulls, values
// above 2^53, special floats and awkward strings.
func sample(t testing.TB) arrow.RecordBatch {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "i32", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
		{Name: "i64", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
		{Name: "f64", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "b", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "ts", Type: tsType, Nullable: true},
		{Name: "lf", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
		{Name: "li", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64), Nullable: true},
		{Name: "ls", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Int32Builder).AppendValues([]int32{-7, math.MaxInt32, 0}, []bool{true, true, false})
	b.Field(1).(*array.Int64Builder).AppendValues([]int64{9007199254740993, math.MinInt64, 0}, []bool{true, true, false})
	b.Field(2).(*array.Float32Builder).AppendValues([]float32{0.1, math.MaxFloat32, 0}, []bool{true, true, false})
	b.Field(3).(*array.Float64Builder).AppendValues([]float64{0.1, 1e21, math.NaN()}, nil)
	b.Field(4).(*array.StringBuilder).AppendValues([]string{`a,"b"`, "line\nbreak é", ""}, []bool{true, true, false})
	b.Field(5).(*array.BooleanBuilder).AppendValues([]bool{true, false, false}, []bool{true, true, false})
	ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	b.Field(6).(*array.TimestampBuilder).AppendValues([]arrow.Timestamp{arrow.Timestamp(ts.UnixMicro()), arrow.Timestamp(ts.Add(1500 * time.Millisecond).UnixMicro()), 0}, []bool{true, true, false})
	lf := b.Field(7).(*array.ListBuilder)
	lf.Append(true)
	lf.ValueBuilder().(*array.Float32Builder).AppendValues([]float32{1.5, 0.1}, nil)
	lf.Append(true)
	lf.AppendNull()
	li := b.Field(8).(*array.ListBuilder)
	li.Append(true)
	li.ValueBuilder().(*array.Int64Builder).AppendValues([]int64{9007199254740993}, nil)
	li.Append(true)
	li.ValueBuilder().(*array.Int64Builder).AppendValues([]int64{-1, 2}, nil)
	li.AppendNull()
	ls := b.Field(9).(*array.ListBuilder)
	ls.Append(true)
	ls.ValueBuilder().(*array.StringBuilder).AppendValues([]string{`q"uote`, "x"}, nil)
	ls.Append(true)
	ls.AppendNull()
	return b.NewRecordBatch()
}

const sampleCSV = `i32,i64,f32,f64,s,b,ts,lf,li,ls
-7,9007199254740993,0.1,0.1,"a,""b""",true,2024-01-02T03:04:05Z,"[1.5,0.1]",[9007199254740993],"[""q\""uote"",""x""]"
2147483647,-9223372036854775808,3.4028235e+38,1e+21,"line
break é",false,2024-01-02T03:04:06.5Z,[],"[-1,2]",[]
,,,NaN,,,,,,
`

func TestCSVWriterExactText(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, CSV, rec.Schema(), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.String() != sampleCSV {
		t.Fatalf("CSV:\n%s\nwant:\n%s", buf.String(), sampleCSV)
	}
}

func TestTypedRoundTrip(t *testing.T) {
	for _, f := range []Format{Parquet, Arrow} {
		t.Run(string(f), func(t *testing.T) {
			rec := sample(t)
			defer rec.Release()
			path := filepath.Join(t.TempDir(), "x."+string(f))
			w, err := Create(path, f, rec.Schema(), WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for range 4 {
				if err := w.Write(rec); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			r, err := Open(path, f, ReadOptions{BatchRows: 5})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for i, f := range r.Schema().Fields() {
				want := rec.Schema().Field(i)
				if f.Name != want.Name || f.Type.String() != want.Type.String() && !sameList(f.Type, want.Type) {
					t.Fatalf("column %d is %s %s, want %s %s", i, f.Name, f.Type, want.Name, want.Type)
				}
			}
			var buf bytes.Buffer
			cw, _ := NewWriter(&buf, CSV, r.Schema(), WriteOptions{})
			rows := 0
			for {
				got, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				rows += int(got.NumRows())
				if err := cw.Write(got); err != nil {
					t.Fatal(err)
				}
				got.Release()
			}
			cw.Close()
			body := strings.SplitN(sampleCSV, "\n", 2)[1]
			want := strings.SplitN(sampleCSV, "\n", 2)[0] + "\n" + strings.Repeat(body, 4)
			if rows != 12 || buf.String() != want {
				t.Fatalf("read back %d rows:\n%s\nwant:\n%s", rows, buf.String(), want)
			}
		})
	}
}

func TestCSVReader(t *testing.T) {
	in := "\xEF\xBB\xBFa,b\n1,\"x\ny\"\n,3\n4,5\n6,7\n8,9\n"
	r, err := NewReader(strings.NewReader(in), CSV, ReadOptions{BatchRows: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Schema().Field(0).Name; got != "a" {
		t.Fatalf("BOM not stripped: first column %q", got)
	}
	var sizes []int64
	var cells []string
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, rec.NumRows())
		for i := 0; i < int(rec.NumRows()); i++ {
			for c := 0; c < 2; c++ {
				col := rec.Column(c).(*array.String)
				if col.IsNull(i) {
					cells = append(cells, "<null>")
				} else {
					cells = append(cells, col.Value(i))
				}
			}
		}
		rec.Release()
	}
	if got := strings.Join(cells, "|"); got != "1|x\ny|<null>|3|4|5|6|7|8|9" {
		t.Errorf("cells = %q", got)
	}
	if len(sizes) != 3 || sizes[0] != 2 || sizes[2] != 1 {
		t.Errorf("batch sizes = %v, want [2 2 1]", sizes)
	}
}

func TestCSVReaderErrors(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"empty":            {"", "empty file"},
		"duplicate header": {"a,b,a\n", `"a" twice`},
		"empty header":     {"a,,c\n", "no name"},
		"ragged row":       {"a,b\n1,2\n3\n", "line 3"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "in.csv")
			os.WriteFile(path, []byte(tc.in), 0o644)
			r, err := Open(path, CSV, ReadOptions{})
			if err == nil {
				for err == nil {
					var rec arrow.RecordBatch
					rec, err = r.Next()
					if rec != nil {
						rec.Release()
					}
				}
				r.Close()
			}
			if err == nil || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error = %v, want one naming %s and containing %q", err, path, tc.want)
			}
		})
	}
}

func TestArrowStreamFormatIsRead(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	var buf bytes.Buffer
	// The IPC stream format (what pyarrow.ipc.new_stream writes).
	sw := newStreamWriter(&buf, rec.Schema())
	if err := sw.Write(rec); err != nil {
		t.Fatal(err)
	}
	sw.Close()
	r, err := NewReader(bytes.NewReader(buf.Bytes()), Arrow, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Next()
	if err != nil || got.NumRows() != 3 {
		t.Fatalf("stream read: %v", err)
	}
	got.Release()
}

func TestCorruptFilesGiveErrors(t *testing.T) {
	for _, f := range []Format{Parquet, Arrow} {
		t.Run(string(f), func(t *testing.T) {
			rec := sample(t)
			defer rec.Release()
			path := filepath.Join(t.TempDir(), "x."+string(f))
			w, _ := Create(path, f, rec.Schema(), WriteOptions{})
			w.Write(rec)
			w.Close()
			data, _ := os.ReadFile(path)
			for _, cut := range []int{len(data) / 3, len(data) - 10} {
				bad := filepath.Join(t.TempDir(), "bad."+string(f))
				os.WriteFile(bad, data[:cut], 0o644)
				r, err := Open(bad, f, ReadOptions{})
				if err == nil {
					for err == nil {
						var got arrow.RecordBatch
						got, err = r.Next()
						if got != nil {
							got.Release()
						}
					}
					r.Close()
				}
				if err == nil || errors.Is(err, io.EOF) {
					t.Fatalf("truncated at %d of %d bytes: no error", cut, len(data))
				}
			}
		})
	}
}

func TestDetectFormat(t *testing.T) {
	for path, want := range map[string]Format{"a.csv": CSV, "a.PARQUET": Parquet, "a.pq": Parquet, "a.arrow": Arrow, "a.feather": Arrow} {
		if got, err := DetectFormat(path, ""); err != nil || got != want {
			t.Errorf("DetectFormat(%q) = %v, %v", path, got, err)
		}
	}
	if got, _ := DetectFormat("a.txt", "csv"); got != CSV {
		t.Error("override ignored")
	}
	if _, err := DetectFormat("a.txt", ""); err == nil || !strings.Contains(err.Error(), "a.txt") {
		t.Errorf("unknown extension: %v", err)
	}
	if _, err := ParseFormat("xlsx"); err == nil || !strings.Contains(err.Error(), "xlsx") {
		t.Errorf("ParseFormat: %v", err)
	}
}

func TestParseTimestamp(t *testing.T) {
	want := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	ok := map[string]time.Time{
		"2024-01-02 03:04:05":       want,
		"2024-01-02T03:04:05":       want,
		"2024-01-02T03:04:05Z":      want,
		"2024-01-02T05:04:05+02:00": want,
		"2024-01-02 03:04:05.25":    want.Add(250 * time.Millisecond),
		"2024-01-02":                time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
		"1704164645":                want,
		"0":                         time.Unix(0, 0).UTC(),
		"-86400":                    time.Unix(-86400, 0).UTC(),
		"2024-02-29 00:00:00":       time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC),
	}
	for in, w := range ok {
		got, err := ParseTimestamp(in)
		if err != nil || !got.Equal(w) || got.Location() != time.UTC {
			t.Errorf("ParseTimestamp(%q) = %v, %v; want %v", in, got, err, w)
		}
	}
	for _, in := range []string{"", "yesterday", "2024-13-01 00:00:00", "2023-02-29 00:00:00", "2024-01-02 24:00:00", "1.5", "2024/01/02"} {
		if _, err := ParseTimestamp(in); err == nil || !strings.Contains(err.Error(), `"`+in+`"`) {
			t.Errorf("ParseTimestamp(%q) error = %v, want one quoting the value", in, err)
		}
	}
}

func BenchmarkParseTimestamp(b *testing.B) {
	for _, in := range []string{"2024-01-02 03:04:05", "1704164645", "2024-01-02T03:04:05Z"} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseTimestamp(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCSVWriter(b *testing.B) {
	rec := sample(b)
	defer rec.Release()
	w, _ := NewWriter(io.Discard, CSV, rec.Schema(), WriteOptions{})
	b.ReportAllocs()
	for b.Loop() {
		if err := w.Write(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// sameList compares list types by element type; Parquet names the element
// "element" where Arrow says "item".
func sameList(a, b arrow.DataType) bool {
	la, ok1 := a.(*arrow.ListType)
	lb, ok2 := b.(*arrow.ListType)
	return ok1 && ok2 && arrow.TypeEqual(la.Elem(), lb.Elem())
}
