package assemble_test

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
)

const defs = `entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: cust
    entities: [customer]
    features:
      - {name: orders, type: int64}
      - {name: spend, type: float64}
      - {name: segment, type: string}
      - {name: embedding, type: array<float32>}
      - {name: vip, type: bool}
`

const spec = `name: m
inputs:
  - name: features
    elements:
      - {feature: "cust:orders", default: -1, missing_indicator: true}
      - {feature: "cust:spend"}
      - {feature: "cust:segment", encoding: one_hot, vocabulary: [gold, silver, bronze], missing_indicator: true}
      - {feature: "cust:embedding", size: 3, default: 9}
      - {feature: "cust:vip"}
      - {context: hour_of_day}
      - {context: day_of_week}
      - {context: device, encoding: index, vocabulary: [web, ios], default: -1}
      - {request: basket, default: 5, missing_indicator: true}
  - name: ids
    type: int64
    elements:
      - {feature: "cust:segment", encoding: index, vocabulary: [gold, silver, bronze], default: 3}
      - {feature: "cust:orders"}
outputs:
  - {name: score}
`

func TestFill(t *testing.T) {
	repo, err := definitions.Parse(map[string][]byte{"d.yaml": []byte(defs)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := registry.ParseSpec("m.yaml", []byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	p, err := assemble.Compile(s, repo)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, r := range p.Refs {
		refs = append(refs, r.String())
	}
	if want := []string{"cust:orders", "cust:spend", "cust:segment", "cust:embedding", "cust:vip"}; !reflect.DeepEqual(refs, want) {
		t.Fatalf("refs %v, want each feature once: %v", refs, want)
	}
	// Wednesday 2025-01-01 is a Wednesday: day 2; 23:30 UTC is 00:30 the
	// next day (Thursday, 3) in Berlin.
	at := time.Date(2025, 1, 1, 23, 30, 0, 0, time.UTC)
	utc, err := assemble.DeriveContext(map[string]any{"device": "ios"}, at)
	if err != nil {
		t.Fatal(err)
	}
	berlin, err := assemble.DeriveContext(map[string]any{"device": "fridge", "timezone": "Europe/Berlin"}, at)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := assemble.DeriveContext(map[string]any{"timezone": "Mars/Olympus"}, at); err == nil {
		t.Fatal("an unknown time zone was accepted")
	}
	rows := []assemble.Row{
		{Features: []any{int64(7), 2.5, "silver", []float32{1, 2, 3, 4}, true}, Context: utc, Request: map[string]float64{"basket": 30}},
		{Features: []any{nil, nil, "platinum", []float32{1}, nil}, Context: berlin},
		{Features: []any{nil, nil, nil, nil, false}, Context: map[string]any{}},
	}
	got := p.Fill(rows)
	wantFeatures := []float32{
		7, 0, 2.5, 0, 1, 0, 0, 1, 2, 3, 1, 23, 2, 1, 30, 0,
		-1, 1, 0, 0, 0, 0, 0, 1, 9, 9, 0, 0, 3, -1, 5, 1,
		-1, 1, 0, 0, 0, 0, 1, 9, 9, 9, 0, 0, 0, -1, 5, 1,
	}
	wantIDs := []int64{1, 7, 3, 0, 3, 0}
	if len(got) != 2 {
		t.Fatalf("%d tensors", len(got))
	}
	if got[0].Name != "features" || !reflect.DeepEqual(got[0].Shape, []int64{3, 16}) || !reflect.DeepEqual(got[0].Float32, wantFeatures) {
		t.Errorf("features %v %v\n got  %v\n want %v", got[0].Name, got[0].Shape, got[0].Float32, wantFeatures)
	}
	if got[1].Name != "ids" || !reflect.DeepEqual(got[1].Shape, []int64{3, 2}) || !reflect.DeepEqual(got[1].Int64, wantIDs) {
		t.Errorf("ids %v %v %v, want %v", got[1].Name, got[1].Shape, got[1].Int64, wantIDs)
	}
}

// BenchmarkFill lays out a batch of 64 rows of the test spec: Fill is on
// every request's path.
func BenchmarkFill(b *testing.B) {
	repo, err := definitions.Parse(map[string][]byte{"d.yaml": []byte(defs)})
	if err != nil {
		b.Fatal(err)
	}
	s, err := registry.ParseSpec("m.yaml", []byte(spec))
	if err != nil {
		b.Fatal(err)
	}
	p, err := assemble.Compile(s, repo)
	if err != nil {
		b.Fatal(err)
	}
	ctx, err := assemble.DeriveContext(map[string]any{"device": "ios"}, time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC))
	if err != nil {
		b.Fatal(err)
	}
	rows := make([]assemble.Row, 64)
	for i := range rows {
		rows[i] = assemble.Row{Features: []any{int64(i), 2.5, "silver", []float32{1, 2, 3, 4}, true}, Context: ctx, Request: map[string]float64{"basket": 3}}
		if i%4 == 0 {
			rows[i].Features = []any{nil, nil, nil, nil, nil}
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Fill(rows)
	}
}

// TestNumberNaNIsMissing: NaN and infinities are missing values, as the
// trainers read them, so a model sees the default and the missing
// indicator in serving as in training.
func TestNumberNaNIsMissing(t *testing.T) {
	for _, v := range []any{math.NaN(), math.Inf(1), math.Inf(-1), float32(math.NaN()), float32(math.Inf(1)), "NaN", "inf", "-Inf"} {
		if f, ok := assemble.Number(v); ok {
			t.Errorf("Number(%v) = %v, true; want missing", v, f)
		}
	}
	for _, v := range []any{1.5, float32(2), int64(3), "4.5", true} {
		if _, ok := assemble.Number(v); !ok {
			t.Errorf("Number(%v) is missing; want a number", v)
		}
	}
}
