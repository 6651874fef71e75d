package tablefile

import (
	"bytes"
	"errors"
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
	"github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// csvOf writes recs with the CSV writer and returns the text.
func csvOf(t testing.TB, schema *arrow.Schema, recs ...arrow.RecordBatch) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, CSV, schema, WriteOptions{})
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
	return buf.String()
}

// oneColumn builds a one-column batch of type dt with fill.
func oneColumn(name string, dt arrow.DataType, fill func(b array.Builder)) arrow.RecordBatch {
	schema := arrow.NewSchema([]arrow.Field{{Name: name, Type: dt, Nullable: true}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	fill(b.Field(0))
	return b.NewRecordBatch()
}

func TestCSVWriterSample(t *testing.T) {
	rec := sample(t)
	defer rec.Release()
	if got := csvOf(t, rec.Schema(), rec); got != sampleCSV {
		t.Fatalf("CSV:\n%s\nwant:\n%s", got, sampleCSV)
	}
}

// TestCSVWriterText pins the text of each type, one column at a time
// (which also covers the quoting of empty fields in one-column files).
func TestCSVWriterText(t *testing.T) {
	ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name string
		dt   arrow.DataType
		fill func(b array.Builder)
		want string
	}{
		{"int8", arrow.PrimitiveTypes.Int8, func(b array.Builder) {
			b.(*array.Int8Builder).AppendValues([]int8{-128, 127}, nil)
			b.AppendNull()
		}, "-128\n127\n\"\"\n"},
		{"int16", arrow.PrimitiveTypes.Int16, func(b array.Builder) {
			b.(*array.Int16Builder).AppendValues([]int16{-32768, 0}, nil)
		}, "-32768\n0\n"},
		{"uint8", arrow.PrimitiveTypes.Uint8, func(b array.Builder) {
			b.(*array.Uint8Builder).AppendValues([]uint8{0, 255}, nil)
		}, "0\n255\n"},
		{"uint16", arrow.PrimitiveTypes.Uint16, func(b array.Builder) {
			b.(*array.Uint16Builder).AppendValues([]uint16{65535}, nil)
		}, "65535\n"},
		{"uint32", arrow.PrimitiveTypes.Uint32, func(b array.Builder) {
			b.(*array.Uint32Builder).AppendValues([]uint32{math.MaxUint32}, nil)
		}, "4294967295\n"},
		{"uint64", arrow.PrimitiveTypes.Uint64, func(b array.Builder) {
			b.(*array.Uint64Builder).AppendValues([]uint64{math.MaxUint64, 1<<53 + 1}, nil)
		}, "18446744073709551615\n9007199254740993\n"},
		{"int64", arrow.PrimitiveTypes.Int64, func(b array.Builder) {
			b.(*array.Int64Builder).AppendValues([]int64{1<<53 + 1, -(1<<53 + 1)}, nil)
		}, "9007199254740993\n-9007199254740993\n"},
		{"float64", arrow.PrimitiveTypes.Float64, func(b array.Builder) {
			b.(*array.Float64Builder).AppendValues([]float64{
				0.1, 1e21, 1e20, 123456789, 1e-7, 0, math.Copysign(0, -1), 0.30000000000000004,
				math.MaxFloat64, math.SmallestNonzeroFloat64, math.NaN(), math.Inf(1), math.Inf(-1), 2,
			}, nil)
		}, "0.1\n1e+21\n1e+20\n1.23456789e+08\n1e-07\n0\n-0\n0.30000000000000004\n" +
			"1.7976931348623157e+308\n5e-324\nNaN\n+Inf\n-Inf\n2\n"},
		{"float32", arrow.PrimitiveTypes.Float32, func(b array.Builder) {
			b.(*array.Float32Builder).AppendValues([]float32{
				0.1, math.MaxFloat32, 16777217, 1e-45, float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1.5,
			}, nil)
		}, "0.1\n3.4028235e+38\n1.6777216e+07\n1e-45\nNaN\n+Inf\n-Inf\n1.5\n"},
		{"float16", arrow.FixedWidthTypes.Float16, func(b array.Builder) {
			b.(*array.Float16Builder).Append(float16.New(0.5))
		}, "0.5\n"},
		{"bool", arrow.FixedWidthTypes.Boolean, func(b array.Builder) {
			b.(*array.BooleanBuilder).AppendValues([]bool{true, false}, nil)
		}, "true\nfalse\n"},
		{"string", arrow.BinaryTypes.String, func(b array.Builder) {
			b.(*array.StringBuilder).AppendValues([]string{
				"plain", "a,b", `say "hi"`, "two\nlines", "cr\rlf", " lead", "\tlead", "trail ", `\.`, "", "日本語 ✓",
			}, nil)
		}, "plain\n\"a,b\"\n\"say \"\"hi\"\"\"\n\"two\nlines\"\n\"cr\rlf\"\n\" lead\"\n\"\tlead\"\ntrail \n\"\\.\"\n\"\"\n日本語 ✓\n"},
		{"large_string", arrow.BinaryTypes.LargeString, func(b array.Builder) {
			b.(*array.LargeStringBuilder).AppendValues([]string{"x,y"}, nil)
		}, "\"x,y\"\n"},
		{"timestamp s with zone", &arrow.TimestampType{Unit: arrow.Second, TimeZone: "America/New_York"}, func(b array.Builder) {
			b.(*array.TimestampBuilder).Append(arrow.Timestamp(ts.Unix()))
		}, "2024-01-02T03:04:05Z\n"},
		{"timestamp ms", &arrow.TimestampType{Unit: arrow.Millisecond}, func(b array.Builder) {
			b.(*array.TimestampBuilder).Append(arrow.Timestamp(ts.UnixMilli() + 120))
		}, "2024-01-02T03:04:05.12Z\n"},
		{"timestamp ns", &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "+02:00"}, func(b array.Builder) {
			b.(*array.TimestampBuilder).Append(arrow.Timestamp(ts.UnixNano() + 1))
		}, "2024-01-02T03:04:05.000000001Z\n"},
		{"date32", arrow.FixedWidthTypes.Date32, func(b array.Builder) {
			b.(*array.Date32Builder).AppendValues([]arrow.Date32{arrow.Date32FromTime(ts), 0, -1}, nil)
		}, "2024-01-02\n1970-01-01\n1969-12-31\n"},
		{"date64", arrow.FixedWidthTypes.Date64, func(b array.Builder) {
			b.(*array.Date64Builder).Append(arrow.Date64FromTime(ts))
		}, "2024-01-02\n"},
		{"null type", arrow.Null, func(b array.Builder) {
			b.AppendNull()
		}, "\"\"\n"},
		{"list<float64>", arrow.ListOf(arrow.PrimitiveTypes.Float64), func(b array.Builder) {
			lb := b.(*array.ListBuilder)
			vb := lb.ValueBuilder().(*array.Float64Builder)
			lb.Append(true)
			vb.AppendValues([]float64{1.5, 2, 1e21, 0.1}, nil)
			lb.Append(true)
			vb.Append(7)
			lb.Append(true)
			lb.AppendNull()
		}, "\"[1.5,2,1e+21,0.1]\"\n[7]\n[]\n\"\"\n"},
		{"list<timestamp>", arrow.ListOf(tsUTC), func(b array.Builder) {
			lb := b.(*array.ListBuilder)
			lb.Append(true)
			lb.ValueBuilder().(*array.TimestampBuilder).Append(arrow.Timestamp(ts.UnixMicro()))
			lb.ValueBuilder().AppendNull()
		}, "\"[\"\"2024-01-02T03:04:05Z\"\",null]\"\n"},
		{"list<string> escapes", arrow.ListOf(arrow.BinaryTypes.String), func(b array.Builder) {
			lb := b.(*array.ListBuilder)
			lb.Append(true)
			lb.ValueBuilder().(*array.StringBuilder).AppendValues([]string{"back\\slash", "nl\n", "\x01", "bad\xff"}, nil)
		}, "\"[\"\"back\\\\slash\"\",\"\"nl\\n\"\",\"\"\\u0001\"\",\"\"bad\\ufffd\"\"]\"\n"},
		{"large_list<bool>", arrow.LargeListOf(arrow.FixedWidthTypes.Boolean), func(b array.Builder) {
			lb := b.(*array.LargeListBuilder)
			lb.Append(true)
			lb.ValueBuilder().(*array.BooleanBuilder).AppendValues([]bool{true, false}, nil)
		}, "\"[true,false]\"\n"},
		{"fixed_size_list<float32>", arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Float32), func(b array.Builder) {
			lb := b.(*array.FixedSizeListBuilder)
			lb.Append(true)
			lb.ValueBuilder().(*array.Float32Builder).AppendValues([]float32{0.1, 3.4028235e38}, nil)
		}, "\"[0.1,3.4028235e+38]\"\n"},
		{"list<list<int32>>", arrow.ListOf(arrow.ListOf(arrow.PrimitiveTypes.Int32)), func(b array.Builder) {
			lb := b.(*array.ListBuilder)
			inner := lb.ValueBuilder().(*array.ListBuilder)
			lb.Append(true)
			inner.Append(true)
			inner.ValueBuilder().(*array.Int32Builder).AppendValues([]int32{1, 2}, nil)
			inner.Append(true)
		}, "\"[[1,2],[]]\"\n"},
		{"dictionary<string>", &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}, func(b array.Builder) {
			db := b.(*array.BinaryDictionaryBuilder)
			for _, s := range []string{"red", "a,b", "red"} {
				if err := db.AppendString(s); err != nil {
					panic(err)
				}
			}
			db.AppendNull()
		}, "red\n\"a,b\"\nred\n\"\"\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := oneColumn("c", tc.dt, tc.fill)
			defer rec.Release()
			if got := csvOf(t, rec.Schema(), rec); got != "c\n"+tc.want {
				t.Errorf("CSV:\n%q\nwant:\n%q", got, "c\n"+tc.want)
			}
		})
	}
}

// TestCSVOneColumnNulls: the "" written for a null alone on its line reads
// back as null, where a blank line would have been skipped.
func TestCSVOneColumnNulls(t *testing.T) {
	rec := oneColumn("c", arrow.BinaryTypes.String, func(b array.Builder) {
		b.(*array.StringBuilder).AppendValues([]string{"x", "", "y"}, []bool{true, true, false})
	})
	defer rec.Release()
	text := csvOf(t, rec.Schema(), rec)
	r, err := NewReader(strings.NewReader(text), CSV, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	if col := got.Column(0); col.Len() != 3 || col.NullN() != 2 {
		t.Errorf("read back %d rows with %d nulls from %q, want 3 with 2", col.Len(), col.NullN(), text)
	}
}

func TestCSVReader(t *testing.T) {
	cases := []struct {
		name, in string
		want     [][]string // "<null>" for null
	}{
		{"plain", "a,b\n1,2\n3,4\n", [][]string{{"1", "2"}, {"3", "4"}}},
		{"no final newline", "a,b\n1,2", [][]string{{"1", "2"}}},
		{"BOM", "\xEF\xBB\xBFa,b\n1,2\n", [][]string{{"1", "2"}}},
		{"CRLF", "a,b\r\n1,2\r\n", [][]string{{"1", "2"}}},
		{"empty is null", "a,b\n,x\n\"\",\n", [][]string{{"<null>", "x"}, {"<null>", "<null>"}}},
		{"quoted fields", "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n", [][]string{{"x,y", `say "hi"`}}},
		{"multi-line field", "a,b\n\"line1\nline2\r\nline3\",z\n", [][]string{{"line1\nline2\nline3", "z"}}},
		{"unicode and spaces kept", "a,b\n日本, x \n", [][]string{{"日本", " x "}}},
		{"header only", "a,b\n", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(strings.NewReader(tc.in), CSV, checked(t, 0))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := r.Schema().String(); got != arrow.NewSchema([]arrow.Field{
				{Name: "a", Type: arrow.BinaryTypes.String, Nullable: true},
				{Name: "b", Type: arrow.BinaryTypes.String, Nullable: true},
			}, nil).String() {
				t.Fatalf("schema %s", got)
			}
			var rows [][]string
			for {
				rec, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < int(rec.NumRows()); i++ {
					var row []string
					for _, col := range rec.Columns() {
						if col.IsNull(i) {
							row = append(row, "<null>")
						} else {
							row = append(row, col.(*array.String).Value(i))
						}
					}
					rows = append(rows, row)
				}
				rec.Release()
			}
			if !equalRows(rows, tc.want) {
				t.Errorf("rows %q, want %q", rows, tc.want)
			}
		})
	}
}

func equalRows(a, b [][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.Join(a[i], "\x00") != strings.Join(b[i], "\x00") || len(a[i]) != len(b[i]) {
			return false
		}
	}
	return true
}

func TestCSVReaderErrors(t *testing.T) {
	cases := []struct {
		name, in string
		want     []string // substrings of the error besides the path
	}{
		{"empty file", "", []string{"empty file"}},
		{"only a BOM", "\xEF\xBB\xBF", []string{"empty file"}},
		{"duplicate header", "a,b,a\n1,2,3\n", []string{`"a"`, "twice"}},
		{"empty header name", "a,,c\n", []string{"column 2", "no name"}},
		{"short row", "a,b\n1,2\n3\n", []string{"line 3", "1 field(s)", "has 2"}},
		{"long row after a multi-line field", "a,b\n\"x\ny\",2\n3,4,5\n", []string{"line 4", "3 field(s)"}},
		{"bare quote", "a,b\n1,x\"y\n", []string{"line 2", "bare"}},
		{"unterminated quote", "a,b\n1,\"open\n", []string{"line 2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "in.csv")
			if err := os.WriteFile(path, []byte(tc.in), 0o644); err != nil {
				t.Fatal(err)
			}
			err := readErr(path, CSV)
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range append(tc.want, path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

// TestCSVReaderErrorIsSticky: after a bad row, Next keeps failing.
func TestCSVReaderErrorIsSticky(t *testing.T) {
	r, err := NewReader(strings.NewReader("a,b\n1,2\n3\n4,5\n"), CSV, checked(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rec, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	rec.Release()
	_, err1 := r.Next()
	_, err2 := r.Next()
	if err1 == nil || errors.Is(err1, io.EOF) || err2 != err1 {
		t.Errorf("errors %v then %v, want the same error twice", err1, err2)
	}
}

// wideBatch builds n rows of typical feature columns.
func wideBatch(n int) arrow.RecordBatch {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "customer_id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "event_ts", Type: tsUTC, Nullable: true},
		{Name: "spend", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "score", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
		{Name: "channel", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "active", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "embedding", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	rng := rand.New(rand.NewPCG(3, 4))
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	channels := []string{"email", "push", "sms, \"priority\"", "web"}
	emb := b.Field(6).(*array.ListBuilder)
	for i := range n {
		b.Field(0).(*array.Int64Builder).Append(int64(1_000_000 + i))
		b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(base + rng.Int64N(365*24*3600*1_000_000)))
		if i%10 == 0 {
			b.Field(2).AppendNull()
		} else {
			b.Field(2).(*array.Float64Builder).Append(math.Round(rng.Float64()*100000) / 100)
		}
		b.Field(3).(*array.Float32Builder).Append(rng.Float32())
		b.Field(4).(*array.StringBuilder).Append(channels[i%len(channels)])
		b.Field(5).(*array.BooleanBuilder).Append(i%3 == 0)
		emb.Append(true)
		for range 4 {
			emb.ValueBuilder().(*array.Float32Builder).Append(rng.Float32())
		}
	}
	return b.NewRecordBatch()
}

func BenchmarkCSVWriter(b *testing.B) {
	rec := wideBatch(65536)
	defer rec.Release()
	var size countingWriter
	w, err := NewWriter(&size, CSV, rec.Schema(), WriteOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		w, _ := NewWriter(io.Discard, CSV, rec.Schema(), WriteOptions{})
		if err := w.Write(rec); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCSVReader(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString("id,ts,value,label\n")
	for i := range 65536 {
		buf.WriteString("12345,2024-01-02 03:04:05,0.25,\"label, ")
		buf.WriteByte(byte('a' + i%26))
		buf.WriteString("\"\n")
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(buf.Bytes()), CSV, ReadOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			rec, err := r.Next()
			if err != nil {
				break
			}
			rec.Release()
		}
		r.Close()
	}
}

type countingWriter int

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}
