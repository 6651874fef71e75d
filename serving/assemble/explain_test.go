package assemble_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
)

const explainDefs = `entities:
  - {name: customer, join_key: customer_id, type: string}
feature_views:
  - name: cust
    entities: [customer]
    features:
      - {name: orders, type: int64}
      - {name: level, type: int32}
      - {name: ratio, type: float32}
      - {name: spend, type: float64}
      - {name: vip, type: bool}
      - {name: seen, type: timestamp}
      - {name: segment, type: string}
      - {name: embedding, type: array<float32>}
      - {name: ids, type: array<int64>}
`

// explainRow is one row of a case: features by name, their statuses by
// name (absent: none reported), context before derivation, request values.
type explainRow struct {
	features map[string]any
	status   map[string]assemble.Status
	context  map[string]any
	request  map[string]float64
}

// pos is an expected position; its index is its place in the list.
type pos struct {
	source, part string
	raw          any
	status       assemble.Status
	value        float64
	note         string
}

// at is a Wednesday, 23:30 UTC: Thursday 00:30 in Berlin.
var at = time.Date(2025, 1, 1, 23, 30, 0, 0, time.UTC)

// TestExplain checks, for every kind of element, that each explained
// position names its source, part, raw value, status and number, and
// that the numbers are exactly Fill's tensor for the same rows.
func TestExplain(t *testing.T) {
	seen := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f32 := func(f float64) float64 { return float64(float32(f)) }
	for _, tc := range []struct {
		name     string
		typ      string // the input's element type; float32 when empty
		elements string
		rows     []explainRow
		want     [][]pos
	}{
		{
			name:     "numbers of each type",
			elements: `[{feature: "cust:orders"}, {feature: "cust:level"}, {feature: "cust:ratio"}, {feature: "cust:spend"}]`,
			rows: []explainRow{{
				features: map[string]any{"cust:orders": int64(7), "cust:level": int32(-3), "cust:ratio": float32(0.25), "cust:spend": 0.1},
				status:   map[string]assemble.Status{"cust:orders": assemble.StatusPresent, "cust:level": assemble.StatusPresent, "cust:ratio": assemble.StatusPresent, "cust:spend": assemble.StatusPresent},
			}},
			want: [][]pos{{
				{"cust:orders", "value", int64(7), assemble.StatusPresent, 7, ""},
				{"cust:level", "value", int32(-3), assemble.StatusPresent, -3, ""},
				{"cust:ratio", "value", float32(0.25), assemble.StatusPresent, 0.25, ""},
				// A float32 tensor holds 0.1 rounded to float32.
				{"cust:spend", "value", 0.1, assemble.StatusPresent, f32(0.1), ""},
			}},
		},
		{
			name:     "missing numbers: default and indicator, per status",
			elements: `[{feature: "cust:orders", default: -1, missing_indicator: true}, {feature: "cust:spend", default: 2.5, missing_indicator: true}]`,
			rows: []explainRow{
				{features: map[string]any{}, status: map[string]assemble.Status{"cust:orders": assemble.StatusNotFound, "cust:spend": assemble.StatusOutsideMaxAge}},
				// Present but null; and no statuses at all (a caller
				// without an online store).
				{features: map[string]any{"cust:orders": int64(4)}, status: map[string]assemble.Status{"cust:orders": assemble.StatusPresent, "cust:spend": assemble.StatusPresent}},
				{features: map[string]any{"cust:orders": int64(4)}},
			},
			want: [][]pos{
				{
					{"cust:orders", "value", nil, assemble.StatusNotFound, -1, "default"},
					{"cust:orders", "missing_indicator", nil, assemble.StatusNotFound, 1, ""},
					{"cust:spend", "value", nil, assemble.StatusOutsideMaxAge, 2.5, "default"},
					{"cust:spend", "missing_indicator", nil, assemble.StatusOutsideMaxAge, 1, ""},
				},
				{
					{"cust:orders", "value", int64(4), assemble.StatusPresent, 4, ""},
					{"cust:orders", "missing_indicator", int64(4), assemble.StatusPresent, 0, ""},
					{"cust:spend", "value", nil, assemble.StatusPresent, 2.5, "default"},
					{"cust:spend", "missing_indicator", nil, assemble.StatusPresent, 1, ""},
				},
				{
					{"cust:orders", "value", int64(4), assemble.StatusPresent, 4, ""},
					{"cust:orders", "missing_indicator", int64(4), assemble.StatusPresent, 0, ""},
					{"cust:spend", "value", nil, assemble.StatusMissing, 2.5, "default"},
					{"cust:spend", "missing_indicator", nil, assemble.StatusMissing, 1, ""},
				},
			},
		},
		{
			name:     "bool and timestamp in a float64 tensor",
			typ:      "float64",
			elements: `[{feature: "cust:vip"}, {feature: "cust:seen", missing_indicator: true}]`,
			rows: []explainRow{
				{features: map[string]any{"cust:vip": true, "cust:seen": seen}},
				{features: map[string]any{"cust:vip": false}},
			},
			want: [][]pos{
				{
					{"cust:vip", "value", true, assemble.StatusPresent, 1, ""},
					{"cust:seen", "value", seen, assemble.StatusPresent, float64(seen.Unix()), ""},
					{"cust:seen", "missing_indicator", seen, assemble.StatusPresent, 0, ""},
				},
				{
					{"cust:vip", "value", false, assemble.StatusPresent, 0, ""},
					{"cust:seen", "value", nil, assemble.StatusMissing, 0, "default"},
					{"cust:seen", "missing_indicator", nil, assemble.StatusMissing, 1, ""},
				},
			},
		},
		{
			name:     "one_hot: known, unknown, missing",
			elements: `[{feature: "cust:segment", encoding: one_hot, vocabulary: [gold, silver, bronze], missing_indicator: true}]`,
			rows: []explainRow{
				{features: map[string]any{"cust:segment": "silver"}},
				{features: map[string]any{"cust:segment": "platinum"}},
				{features: map[string]any{}, status: map[string]assemble.Status{"cust:segment": assemble.StatusNotFound}},
			},
			want: [][]pos{
				{
					{"cust:segment", "one_hot[gold]", "silver", assemble.StatusPresent, 0, ""},
					{"cust:segment", "one_hot[silver]", "silver", assemble.StatusPresent, 1, ""},
					{"cust:segment", "one_hot[bronze]", "silver", assemble.StatusPresent, 0, ""},
					{"cust:segment", "missing_indicator", "silver", assemble.StatusPresent, 0, ""},
				},
				{
					{"cust:segment", "one_hot[gold]", "platinum", assemble.StatusPresent, 0, `"platinum" is not in the vocabulary`},
					{"cust:segment", "one_hot[silver]", "platinum", assemble.StatusPresent, 0, `"platinum" is not in the vocabulary`},
					{"cust:segment", "one_hot[bronze]", "platinum", assemble.StatusPresent, 0, `"platinum" is not in the vocabulary`},
					// Present, though outside the vocabulary.
					{"cust:segment", "missing_indicator", "platinum", assemble.StatusPresent, 0, ""},
				},
				{
					{"cust:segment", "one_hot[gold]", nil, assemble.StatusNotFound, 0, ""},
					{"cust:segment", "one_hot[silver]", nil, assemble.StatusNotFound, 0, ""},
					{"cust:segment", "one_hot[bronze]", nil, assemble.StatusNotFound, 0, ""},
					{"cust:segment", "missing_indicator", nil, assemble.StatusNotFound, 1, ""},
				},
			},
		},
		{
			name:     "index in an int64 tensor",
			typ:      "int64",
			elements: `[{feature: "cust:segment", encoding: index, vocabulary: [gold, silver, bronze], default: 3}]`,
			rows: []explainRow{
				{features: map[string]any{"cust:segment": "bronze"}},
				{features: map[string]any{"cust:segment": "platinum"}},
				{features: map[string]any{}},
			},
			want: [][]pos{
				{{"cust:segment", "index", "bronze", assemble.StatusPresent, 2, ""}},
				{{"cust:segment", "index", "platinum", assemble.StatusPresent, 3, `"platinum" is not in the vocabulary: default`}},
				{{"cust:segment", "index", nil, assemble.StatusMissing, 3, "default"}},
			},
		},
		{
			name:     "arrays padded, cut and missing",
			elements: `[{feature: "cust:embedding", size: 3, default: 9, missing_indicator: true}]`,
			rows: []explainRow{
				{features: map[string]any{"cust:embedding": []float32{1, 2}}},
				{features: map[string]any{"cust:embedding": []float32{1, 2, 3, 4, 5}}},
				{features: map[string]any{}, status: map[string]assemble.Status{"cust:embedding": assemble.StatusNotFound}},
			},
			want: [][]pos{
				{
					{"cust:embedding", "array[0]", float32(1), assemble.StatusPresent, 1, ""},
					{"cust:embedding", "array[1]", float32(2), assemble.StatusPresent, 2, ""},
					{"cust:embedding", "array[2]", nil, assemble.StatusPresent, 9, "padding: default"},
					{"cust:embedding", "missing_indicator", []float32{1, 2}, assemble.StatusPresent, 0, ""},
				},
				{
					{"cust:embedding", "array[0]", float32(1), assemble.StatusPresent, 1, ""},
					{"cust:embedding", "array[1]", float32(2), assemble.StatusPresent, 2, ""},
					{"cust:embedding", "array[2]", float32(3), assemble.StatusPresent, 3, "the array has 5 values; the rest are cut"},
					{"cust:embedding", "missing_indicator", []float32{1, 2, 3, 4, 5}, assemble.StatusPresent, 0, ""},
				},
				{
					{"cust:embedding", "array[0]", nil, assemble.StatusNotFound, 9, "default"},
					{"cust:embedding", "array[1]", nil, assemble.StatusNotFound, 9, "default"},
					{"cust:embedding", "array[2]", nil, assemble.StatusNotFound, 9, "default"},
					{"cust:embedding", "missing_indicator", nil, assemble.StatusNotFound, 1, ""},
				},
			},
		},
		{
			name:     "int64 array in an int32 tensor",
			typ:      "int32",
			elements: `[{feature: "cust:ids", size: 2}]`,
			rows:     []explainRow{{features: map[string]any{"cust:ids": []int64{5}}}},
			want: [][]pos{{
				{"cust:ids", "array[0]", int64(5), assemble.StatusPresent, 5, ""},
				{"cust:ids", "array[1]", nil, assemble.StatusPresent, 0, "padding: default"},
			}},
		},
		{
			name:     "context: derived fields in a time zone, text, numbers",
			elements: `[{context: hour_of_day}, {context: day_of_week}, {context: device, encoding: index, vocabulary: [web, ios], default: -1, missing_indicator: true}, {context: age, default: 30}]`,
			rows: []explainRow{
				{context: map[string]any{"timezone": "Europe/Berlin", "device": "ios", "age": "42"}},
				{context: map[string]any{"device": "fridge", "age": "old"}},
				{},
			},
			want: [][]pos{
				{
					{"context:hour_of_day", "value", int64(0), assemble.StatusPresent, 0, "from the request time in Europe/Berlin"},
					{"context:day_of_week", "value", int64(3), assemble.StatusPresent, 3, "from the request time in Europe/Berlin"},
					{"context:device", "index", "ios", assemble.StatusPresent, 1, ""},
					{"context:device", "missing_indicator", "ios", assemble.StatusPresent, 0, ""},
					{"context:age", "value", "42", assemble.StatusPresent, 42, ""},
				},
				{
					{"context:hour_of_day", "value", int64(23), assemble.StatusPresent, 23, "from the request time in UTC"},
					{"context:day_of_week", "value", int64(2), assemble.StatusPresent, 2, "from the request time in UTC"},
					{"context:device", "index", "fridge", assemble.StatusPresent, -1, `"fridge" is not in the vocabulary: default`},
					{"context:device", "missing_indicator", "fridge", assemble.StatusPresent, 0, ""},
					{"context:age", "value", "old", assemble.StatusPresent, 30, "not a number: default"},
				},
				{
					{"context:hour_of_day", "value", int64(23), assemble.StatusPresent, 23, "from the request time in UTC"},
					{"context:day_of_week", "value", int64(2), assemble.StatusPresent, 2, "from the request time in UTC"},
					{"context:device", "index", nil, assemble.StatusMissing, -1, "default"},
					{"context:device", "missing_indicator", nil, assemble.StatusMissing, 1, ""},
					{"context:age", "value", nil, assemble.StatusMissing, 30, "default"},
				},
			},
		},
		{
			name:     "request values present and absent",
			elements: `[{request: basket, default: 5, missing_indicator: true}, {request: items}]`,
			rows: []explainRow{
				{request: map[string]float64{"basket": 30, "items": 2}},
				{},
			},
			want: [][]pos{
				{
					{"request:basket", "value", 30.0, assemble.StatusPresent, 30, ""},
					{"request:basket", "missing_indicator", 30.0, assemble.StatusPresent, 0, ""},
					{"request:items", "value", 2.0, assemble.StatusPresent, 2, ""},
				},
				{
					{"request:basket", "value", nil, assemble.StatusMissing, 5, "default"},
					{"request:basket", "missing_indicator", nil, assemble.StatusMissing, 1, ""},
					{"request:items", "value", nil, assemble.StatusMissing, 0, "default"},
				},
			},
		},
		{
			// A request value is encoded by its vocabulary like any other
			// (numbers as their decimal text).
			name:     "request values with an encoding",
			elements: `[{request: rating, encoding: one_hot, vocabulary: ["1", "2", "3"], missing_indicator: true}, {request: tier, encoding: index, vocabulary: ["0", "10"], default: -1}]`,
			rows: []explainRow{
				{request: map[string]float64{"rating": 2, "tier": 10}},
				{request: map[string]float64{"rating": 2.5}},
			},
			want: [][]pos{
				{
					{"request:rating", "one_hot[1]", 2.0, assemble.StatusPresent, 0, ""},
					{"request:rating", "one_hot[2]", 2.0, assemble.StatusPresent, 1, ""},
					{"request:rating", "one_hot[3]", 2.0, assemble.StatusPresent, 0, ""},
					{"request:rating", "missing_indicator", 2.0, assemble.StatusPresent, 0, ""},
					{"request:tier", "index", 10.0, assemble.StatusPresent, 1, ""},
				},
				{
					{"request:rating", "one_hot[1]", 2.5, assemble.StatusPresent, 0, `"2.5" is not in the vocabulary`},
					{"request:rating", "one_hot[2]", 2.5, assemble.StatusPresent, 0, `"2.5" is not in the vocabulary`},
					{"request:rating", "one_hot[3]", 2.5, assemble.StatusPresent, 0, `"2.5" is not in the vocabulary`},
					{"request:rating", "missing_indicator", 2.5, assemble.StatusPresent, 0, ""},
					{"request:tier", "index", nil, assemble.StatusMissing, -1, "default"},
				},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ := ""
			if tc.typ != "" {
				typ = "\n    type: " + tc.typ
			}
			p, refs := compileOne(t, fmt.Sprintf("name: m\ninputs:\n  - name: x%s\n    elements: %s\noutputs: [{name: y}]\n", typ, tc.elements))
			rows, status := make([]assemble.Row, len(tc.rows)), make([][]assemble.Status, len(tc.rows))
			for i, r := range tc.rows {
				ctx, err := assemble.DeriveContext(r.context, at)
				if err != nil {
					t.Fatal(err)
				}
				rows[i] = assemble.Row{Features: make([]any, len(refs)), Context: ctx, Request: r.request}
				if r.status != nil {
					status[i] = make([]assemble.Status, len(refs))
				}
				for j, ref := range refs {
					rows[i].Features[j] = r.features[ref]
					if r.status != nil {
						status[i][j] = r.status[ref]
					}
				}
			}
			filled := p.Fill(rows)
			tensors, explained := p.Explain(rows, status)
			if !reflect.DeepEqual(tensors, filled) {
				t.Fatalf("Explain's tensors differ from Fill's:\n%+v\n%+v", tensors, filled)
			}
			for r, want := range tc.want {
				in := explained[r][0]
				if in.Name != "x" || len(in.Positions) != int(filled[0].Shape[1]) {
					t.Fatalf("row %d: input %q has %d positions, the tensor is %v", r, in.Name, len(in.Positions), filled[0].Shape)
				}
				for i, got := range in.Positions {
					if fill := tensorValue(filled[0], r, i); got.Index != i || got.Value != fill {
						t.Errorf("row %d position %d: index %d, value %v; Fill holds %v", r, i, got.Index, got.Value, fill)
					}
					w := want[i]
					if got.Source != w.source || got.Part.String() != w.part || !reflect.DeepEqual(got.Raw, w.raw) ||
						got.Status != w.status || got.Value != w.value || got.Note != w.note {
						t.Errorf("row %d position %d:\n got  %s %s raw %#v %s %v %q\n want %s %s raw %#v %s %v %q", r, i,
							got.Source, got.Part, got.Raw, got.Status, got.Value, got.Note, w.source, w.part, w.raw, w.status, w.value, w.note)
					}
				}
			}
		})
	}
}

// TestExplainSeveralInputs explains a two-input spec row by row: each
// row's positions are read from its own slice of the batch tensors.
func TestExplainSeveralInputs(t *testing.T) {
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
	ctx, err := assemble.DeriveContext(map[string]any{"device": "ios"}, at)
	if err != nil {
		t.Fatal(err)
	}
	rows := []assemble.Row{
		{Features: []any{int64(7), 2.5, "silver", []float32{1, 2, 3, 4}, true}, Context: ctx, Request: map[string]float64{"basket": 30}},
		{Features: []any{nil, nil, "platinum", []float32{1}, nil}, Context: ctx},
	}
	filled := p.Fill(rows)
	_, explained := p.Explain(rows, nil)
	for r := range rows {
		for k, in := range explained[r] {
			if in.Name != filled[k].Name || len(in.Positions) != int(filled[k].Shape[1]) {
				t.Fatalf("row %d input %d: %s with %d positions, Fill gives %s %v", r, k, in.Name, len(in.Positions), filled[k].Name, filled[k].Shape)
			}
			for i, p := range in.Positions {
				if want := tensorValue(filled[k], r, i); p.Value != want {
					t.Errorf("row %d %s[%d] (%s %s) = %v, Fill holds %v", r, in.Name, i, p.Source, p.Part, p.Value, want)
				}
			}
		}
	}
}

// compileOne compiles a spec against explainDefs and returns the plan
// with its feature references as text.
func compileOne(t *testing.T, specYAML string) (*assemble.Plan, []string) {
	t.Helper()
	repo, err := definitions.Parse(map[string][]byte{"d.yaml": []byte(explainDefs)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := registry.ParseSpec("m.yaml", []byte(specYAML))
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
	return p, refs
}

// tensorValue is position i of row r of t as a float64.
func tensorValue(t assemble.Tensor, r, i int) float64 {
	j := r*int(t.Shape[1]) + i
	switch {
	case t.Float32 != nil:
		return float64(t.Float32[j])
	case t.Float64 != nil:
		return t.Float64[j]
	case t.Int64 != nil:
		return float64(t.Int64[j])
	}
	return float64(t.Int32[j])
}
