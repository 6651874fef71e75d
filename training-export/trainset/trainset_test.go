package trainset_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/tablefile"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
	trainingexport "github.com/tailorhq/tailor/training-export"
	"github.com/tailorhq/tailor/training-export/train"
	"github.com/tailorhq/tailor/training-export/trainset"
)

const defs = `entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: c
    entities: [customer]
    features:
      - {name: orders, type: int64}
      - {name: spend, type: float64}
      - {name: vip, type: bool}
      - {name: last, type: string}
      - {name: seen, type: timestamp}
`

// writeSet writes a training set file with nulls in every feature and its
// manifest; the label is the last product, or days for timing.
func writeSet(t *testing.T, n int, timing bool) (string, *trainingexport.Manifest, [][]any) {
	return writeSetAs(t, n, timing, tablefile.Parquet)
}

func writeSetAs(t *testing.T, n int, timing bool, format tablefile.Format) (string, *trainingexport.Manifest, [][]any) {
	t.Helper()
	ts := &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "customer_id", Type: arrow.BinaryTypes.String}, {Name: "event_timestamp", Type: ts},
		{Name: "label", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "orders", Type: arrow.PrimitiveTypes.Int64, Nullable: true}, {Name: "spend", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "vip", Type: arrow.FixedWidthTypes.Boolean, Nullable: true}, {Name: "last", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "seen", Type: ts, Nullable: true},
	}, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var rows [][]any
	for i := range n {
		prod := fmt.Sprintf("p%d", rng.IntN(6))
		orders, spend := int64(rng.IntN(10)), rng.Float64()*100
		row := []any{orders, spend, rng.IntN(2) == 0, prod}
		if rng.IntN(7) == 0 {
			row[rng.IntN(4)] = nil
		}
		rows = append(rows, row)
		b.Field(0).(*array.StringBuilder).Append(fmt.Sprintf("c%d", i))
		b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(base.Add(time.Duration(rng.IntN(90*24)) * time.Hour).UnixMicro()))
		// The label follows the features, so there is something to learn.
		label := prod
		if timing {
			label = fmt.Sprint(float64(orders) * 3)
		}
		b.Field(2).(*array.StringBuilder).Append(label)
		for j, v := range row {
			switch x := v.(type) {
			case nil:
				b.Field(3 + j).AppendNull()
			case int64:
				b.Field(3 + j).(*array.Int64Builder).Append(x)
			case float64:
				b.Field(3 + j).(*array.Float64Builder).Append(x)
			case bool:
				b.Field(3 + j).(*array.BooleanBuilder).Append(x)
			case string:
				b.Field(3 + j).(*array.StringBuilder).Append(x)
			}
		}
		b.Field(7).AppendNull()
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	path := filepath.Join(t.TempDir(), "train."+string(format))
	w, err := tablefile.Create(path, format, schema, tablefile.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m := &trainingexport.Manifest{SnapshotID: "snap-test", Service: "svc"}
	for _, f := range []struct{ name, typ string }{{"orders", "int64"}, {"spend", "float64"}, {"vip", "bool"}, {"last", "string"}, {"seen", "timestamp"}} {
		m.Features = append(m.Features, trainingexport.ManifestColumn{Ref: "c:" + f.name, Type: f.typ, Column: f.name})
	}
	return path, m, rows
}

// TestEncodingMatchesServing: the matrix a model is trained on equals
// what serving assembles from the same feature values with the model.yaml
// the trainer writes, nulls included.
func TestEncodingMatchesServing(t *testing.T) {
	path, m, rows := writeSet(t, 500, false)
	set, err := trainset.Read(path, m, "label", "event_timestamp", 8)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(set.Skipped, ",") != "c:seen" {
		t.Errorf("skipped %v, want the timestamp feature", set.Skipped)
	}
	res, err := trainset.Fit(context.Background(), set, trainset.FitOptions{Task: trainset.NextProduct, Name: "np", Valid: 0.1, Test: 0.2, Train: train.Options{Epochs: 40, Seed: 1, LearningRate: 0.05}})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := definitions.Parse(map[string][]byte{"d.yaml": []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := registry.ParseSpec("np.yaml", res.SpecYAML)
	if err != nil {
		t.Fatalf("the trainer's model.yaml does not parse: %v\n%s", err, res.SpecYAML)
	}
	if spec.Lineage["snapshot"] != "snap-test" || spec.Task != registry.TaskNextProduct || len(spec.Outputs[0].Labels) != 6 {
		t.Fatalf("spec %+v", spec)
	}
	plan, err := assemble.Compile(spec, repo)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int, len(rows))
	for i := range all {
		all[i] = i
	}
	want := set.Matrix(all)
	batch := make([]assemble.Row, len(rows))
	for i, r := range rows {
		batch[i] = assemble.Row{Features: r}
	}
	got := plan.Fill(batch)[0]
	if len(got.Float32) != len(want) || got.Shape[1] != int64(set.Width()) {
		t.Fatalf("serving assembles %v values of width %d, training %d of width %d", len(got.Float32), got.Shape[1], len(want), set.Width())
	}
	for i := range want {
		if got.Float32[i] != want[i] {
			t.Fatalf("value %d (row %d): serving %v, training %v", i, i/set.Width(), got.Float32[i], want[i])
		}
	}
	// The rule is learnable: the model beats popularity on the latest rows.
	if res.Metrics["accuracy"] < 2*res.Metrics["popularity_accuracy"] || res.Metrics["hit_at_5"] <= res.Metrics["popularity_hit_at_5"] {
		t.Errorf("metrics %v", res.Metrics)
	}
	if len(res.ONNX) == 0 || res.TestRows != 100 {
		t.Errorf("onnx %d bytes, %d test rows", len(res.ONNX), res.TestRows)
	}
}

func TestTimingBuckets(t *testing.T) {
	path, m, _ := writeSet(t, 400, true)
	set, err := trainset.Read(path, m, "label", "event_timestamp", 8)
	if err != nil {
		t.Fatal(err)
	}
	day := 24 * time.Hour
	res, err := trainset.Fit(context.Background(), set, trainset.FitOptions{Task: trainset.Timing, Name: "t", Buckets: []time.Duration{day, 3 * day, 7 * day, 14 * day, 30 * day},
		Valid: 0.1, Test: 0.2, Train: train.Options{Epochs: 20, Seed: 1, LearningRate: 0.01}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Classes, ",") != "1d,3d,7d,14d,30d" {
		t.Fatalf("classes %v", res.Classes)
	}
	mae, pop := res.Metrics["mae_days"], res.Metrics["popularity_mae_days"]
	if math.IsNaN(mae) || mae >= pop {
		t.Errorf("timing MAE %.2f days, popularity %.2f", mae, pop)
	}
	if _, err := trainset.Fit(context.Background(), set, trainset.FitOptions{Task: trainset.Timing, Valid: 0.1, Test: 0.2}); err == nil || !strings.Contains(err.Error(), "buckets") {
		t.Errorf("timing without buckets: %v", err)
	}
}

func TestReadNamesMissingColumns(t *testing.T) {
	path, m, _ := writeSet(t, 10, false)
	for _, tc := range []struct{ label, ts, want string }{
		{"nope", "event_timestamp", `no column "nope"`},
		{"label", "customer_id", `row 0: no timestamp (timestamp "c0" not understood`},
	} {
		if _, err := trainset.Read(path, m, tc.label, tc.ts, 4); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("label %s ts %s: %v, want %s", tc.label, tc.ts, err, tc.want)
		}
	}
	m.Features = append(m.Features, trainingexport.ManifestColumn{Ref: "c:gone", Type: "int64", Column: "gone"})
	if _, err := trainset.Read(path, m, "label", "event_timestamp", 4); err == nil || !strings.Contains(err.Error(), "c:gone") {
		t.Errorf("a manifest feature missing from the file: %v", err)
	}
}

// TestReadCSV: a training set exported as CSV (read back as text) gives
// the same matrix, labels and times as the same set in Parquet.
func TestReadCSV(t *testing.T) {
	pq, m, _ := writeSetAs(t, 300, false, tablefile.Parquet)
	csv, _, _ := writeSetAs(t, 300, false, tablefile.CSV)
	a, err := trainset.Read(pq, m, "label", "event_timestamp", 8)
	if err != nil {
		t.Fatal(err)
	}
	b, err := trainset.Read(csv, m, "label", "event_timestamp", 8)
	if err != nil {
		t.Fatal(err)
	}
	rows := make([]int, a.Rows())
	for i := range rows {
		rows[i] = i
	}
	if a.Width() != b.Width() || fmt.Sprint(a.Matrix(rows)) != fmt.Sprint(b.Matrix(rows)) || fmt.Sprint(a.Labels) != fmt.Sprint(b.Labels) || fmt.Sprint(a.Times) != fmt.Sprint(b.Times) {
		t.Fatal("the CSV set differs from the Parquet set")
	}
}
