package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tailorhq/tailor/featurestore/definitions"
	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	"github.com/tailorhq/tailor/registry"
	"github.com/tailorhq/tailor/serving/assemble"
)

// checkDefs keys customer features (one view with a 1h ttl) and an
// int64-keyed product feature.
const checkDefs = `entities:
  - {name: customer, join_key: customer_id, type: string}
  - {name: product, join_key: product_id, type: int64}
feature_views:
  - name: cust
    entities: [customer]
    features:
      - {name: f0, type: float32}
      - {name: f1, type: float32}
      - {name: segment, type: string}
  - name: recent
    entities: [customer]
    ttl: 1h
    features:
      - {name: clicks, type: int64}
  - name: prod
    entities: [product]
    features:
      - {name: rank, type: int64}
`

// checkSpec fills next_product.onnx's twelve positions from features
// (with a default, missing indicators and a one-hot), the request time
// in the caller's time zone, the device and a request value.
const checkSpec = `name: np_check
task: next_product
inputs:
  - name: features
    elements:
      - {feature: "cust:f0", missing_indicator: true}
      - {feature: "cust:f1", default: 0.5}
      - {feature: "cust:segment", encoding: one_hot, vocabulary: [gold, silver, bronze]}
      - {feature: "recent:clicks", default: -1, missing_indicator: true}
      - {context: hour_of_day}
      - {context: day_of_week}
      - {context: device, encoding: index, vocabulary: [web, ios], default: -1}
      - {request: basket, default: 2}
outputs:
  - name: probabilities
    labels: [p1, p2, p3, p4, p5, p6, p7, p8]
`

// idsSpec feeds generic_int64_input.onnx from an int64-keyed feature and
// two request values.
const idsSpec = `name: ids
inputs:
  - name: indices
    type: int64
    elements: [{feature: "prod:rank"}, {request: a}, {request: b}]
outputs:
  - {name: score}
`

// The request of every check: Wednesday 23:30 UTC is Thursday 08:30 in
// Tokyo.
const checkAt = "2025-01-01T23:30:00Z"

var checkFlags = []string{"--context", "device=ios", "--context", "timezone=Asia/Tokyo", "--value", "basket=30", "--at", checkAt}

// checkOutput is `tailor models check --format json`.
type checkOutput struct {
	Model              string `json:"model"`
	DefinitionsVersion uint64 `json:"definitions_version"`
	Instances          []struct {
		Entity map[string]string `json:"entity"`
		Inputs []struct {
			Name      string `json:"name"`
			Type      string `json:"type"`
			Shape     []int  `json:"shape"`
			Positions []struct {
				Index  int             `json:"index"`
				Source string          `json:"source"`
				Part   string          `json:"part"`
				Raw    json.RawMessage `json:"raw"`
				Status string          `json:"status"`
				Value  float64         `json:"value"`
			} `json:"positions"`
		} `json:"inputs"`
		Outputs []struct {
			Name   string    `json:"name"`
			Labels []string  `json:"labels"`
			Values []float64 `json:"values"`
		} `json:"outputs"`
	} `json:"instances"`
}

// TestModelsCheck runs `tailor models check` against a real server: the
// printed vector is Plan.Fill's for the features pushed, position by
// position with sources and statuses (PRESENT, null, OUTSIDE_MAX_AGE,
// NOT_FOUND for an entity the server does not know), the outputs are
// what `tailor predict` answers for the registered model, and every bad
// input is refused with a message naming it.
func TestModelsCheck(t *testing.T) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": checkDefs}))
	dir := writeFiles(t, map[string]string{"model.yaml": checkSpec, "ids.yaml": idsSpec})
	spec := filepath.Join(dir, "model.yaml")
	base, _ := startServe(t, c, "--warm-start=false")
	pushCheckFeatures(t, base)
	model := testModel(t, "next_product.onnx")
	check := func(args ...string) string {
		return c.ok(append([]string{"models", "--server", base, "check", model, "--spec", spec}, args...)...)
	}

	// The vectors worked out by hand: hour 8 and day 3 (Thursday) in
	// Tokyo, device ios is index 1, basket 30.
	want := map[string][]float64{
		"c1": {0.25, 0, 1.5, 0, 1, 0, 7, 0, 8, 3, 1, 30},
		// f0 pushed null, segment outside the vocabulary, clicks too old.
		"c2": {0, 1, 2, 0, 0, 0, -1, 1, 8, 3, 1, 30},
		// Nothing known: every feature's default and indicator.
		"nobody": {0, 1, 0.5, 0, 0, 0, -1, 1, 8, 3, 1, 30},
	}
	// What serving's assembly gives for the same feature values.
	fill := fillFor(t, map[string][]any{
		"c1":     {float32(0.25), float32(1.5), "silver", int64(7)},
		"c2":     {nil, float32(2), "platinum", nil},
		"nobody": {nil, nil, nil, nil},
	})
	statuses := map[string][]string{
		"c1":     {"PRESENT", "PRESENT", "PRESENT", "PRESENT"},
		"c2":     {"PRESENT", "PRESENT", "PRESENT", "OUTSIDE_MAX_AGE"},
		"nobody": {"NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND"},
	}
	// The source, part and feature (index in the status lists, -1 for
	// context and request) of each position.
	layout := []struct {
		source, part string
		feature      int
	}{
		{"cust:f0", "value", 0}, {"cust:f0", "missing_indicator", 0}, {"cust:f1", "value", 1},
		{"cust:segment", "one_hot[gold]", 2}, {"cust:segment", "one_hot[silver]", 2}, {"cust:segment", "one_hot[bronze]", 2},
		{"recent:clicks", "value", 3}, {"recent:clicks", "missing_indicator", 3},
		{"context:hour_of_day", "value", -1}, {"context:day_of_week", "value", -1}, {"context:device", "index", -1}, {"request:basket", "value", -1},
	}

	entities := []string{"--entity", "customer_id=c1", "--entity", "customer_id=c2", "--entity", "customer_id=nobody"}
	var got checkOutput
	if err := json.Unmarshal([]byte(check(append(append([]string{"--format", "json"}, entities...), checkFlags...)...)), &got); err != nil {
		t.Fatal(err)
	}
	if got.Model != "np_check" || got.DefinitionsVersion != 1 || len(got.Instances) != 3 {
		t.Fatalf("check answered %+v", got)
	}
	for _, inst := range got.Instances {
		who := inst.Entity["customer_id"]
		in := inst.Inputs[0]
		if in.Name != "features" || in.Type != "float32" || !reflect.DeepEqual(in.Shape, []int{1, 12}) || len(in.Positions) != 12 {
			t.Fatalf("%s: input %s %s %v with %d positions", who, in.Name, in.Type, in.Shape, len(in.Positions))
		}
		for i, p := range in.Positions {
			l := layout[i]
			status := "PRESENT"
			if l.feature >= 0 {
				status = statuses[who][l.feature]
			}
			if p.Index != i || p.Source != l.source || p.Part != l.part || p.Status != status {
				t.Errorf("%s position %d: %d %s %s %s, want %s %s %s", who, i, p.Index, p.Source, p.Part, p.Status, l.source, l.part, status)
			}
			if float32(p.Value) != fill[who][i] || p.Value != want[who][i] {
				t.Errorf("%s position %d (%s %s) = %v; Plan.Fill gives %v, by hand %v", who, i, l.source, l.part, p.Value, fill[who][i], want[who][i])
			}
		}
	}
	mustContain(t, string(got.Instances[1].Inputs[0].Positions[1].Raw), "null")
	mustContain(t, string(got.Instances[1].Inputs[0].Positions[3].Raw), `"platinum"`)

	// The outputs are what the registered model answers through Predict
	// for the same instances, context, values and time.
	c.ok("models", "--server", base, "register", model, "--spec", spec)
	var pred struct {
		Predictions []struct {
			Outputs []struct {
				Name   string    `json:"name"`
				Labels []string  `json:"labels"`
				Values []float64 `json:"values"`
			} `json:"outputs"`
		} `json:"predictions"`
	}
	if err := json.Unmarshal([]byte(c.ok(append([]string{"predict", "--server", base, "--model", "np_check",
		"--context", "device=ios,timezone=Asia/Tokyo", "--value", "basket=30", "--at", checkAt}, entities...)...)), &pred); err != nil {
		t.Fatal(err)
	}
	for i, inst := range got.Instances {
		o, p := inst.Outputs[0], pred.Predictions[i].Outputs[0]
		if o.Name != "probabilities" || strings.Join(o.Labels, ",") != "p1,p2,p3,p4,p5,p6,p7,p8" || len(o.Values) != 8 {
			t.Fatalf("check output %+v", o)
		}
		if !reflect.DeepEqual(o.Labels, p.Labels) || !reflect.DeepEqual(o.Values, p.Values) {
			t.Errorf("%s: check outputs %v %v, predict %v %v", inst.Entity["customer_id"], o.Labels, o.Values, p.Labels, p.Values)
		}
	}

	// The same as text, for people.
	text := check(append([]string{"--entity", "customer_id=c1"}, checkFlags...)...)
	mustContain(t, text, "model np_check (next_product)", "definitions version 1", "request time "+checkAt,
		"entity customer_id=c1", "input features float32 [1, 12]", "POS", "SOURCE", "PART", "STATUS", "RAW", "VALUE",
		"vector: [0.25, 0, 1.5, 0, 1, 0, 7, 0, 8, 3, 1, 30]", "from the request time in Asia/Tokyo", "output probabilities", "p8")
	for _, line := range []string{`cust:segment  one_hot[silver]  PRESENT  "silver"  1`, `recent:clicks  missing_indicator  PRESENT  7  0`} {
		if !strings.Contains(strings.Join(strings.Fields(text), "  "), line) {
			t.Errorf("text output has no line %q:\n%s", line, text)
		}
	}
	t.Logf("tailor models check, text:\n%s", text)
	nobody := strings.Join(strings.Fields(check(append([]string{"--entity", "customer_id=nobody"}, checkFlags...)...)), " ")
	mustContain(t, nobody, "cust:f0 value NOT_FOUND - 0 default", "cust:f0 missing_indicator NOT_FOUND - 1",
		"recent:clicks value NOT_FOUND - -1 default", "vector: [0, 1, 0.5, 0, 0, 0, -1, 1, 8, 3, 1, 30]")

	// An int64 join key, and a model that matches PyTorch's output for
	// the indices 15, 47, 31.
	ids := c.ok("models", "--server", base, "check", testModel(t, "generic_int64_input.onnx"), "--spec", filepath.Join(dir, "ids.yaml"),
		"--entity", "product_id=15", "--value", "a=47,b=31", "--format", "json")
	var idsOut checkOutput
	if err := json.Unmarshal([]byte(ids), &idsOut); err != nil {
		t.Fatal(err)
	}
	var vec []float64
	for _, p := range idsOut.Instances[0].Inputs[0].Positions {
		vec = append(vec, p.Value)
	}
	if score := idsOut.Instances[0].Outputs[0].Values; !reflect.DeepEqual(vec, []float64{15, 47, 31}) || len(score) != 1 || float32(score[0]) != float32(0.5130698084831238) {
		t.Errorf("ids: vector %v, score %v; want [15 47 31] and PyTorch's 0.5130698", vec, score)
	}

	testModelsCheckErrors(t, c, base, dir)
}

// testModelsCheckErrors checks that each bad input is refused with a
// message naming it.
func testModelsCheckErrors(t *testing.T, c *cli, base, dir string) {
	model := testModel(t, "next_product.onnx")
	badSpec := func(name, from, to string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, strings.Replace(checkSpec, from, to, 1))
		return p
	}
	unknownRef := badSpec("unknown.yaml", `"cust:f1"`, `"cust:f9"`)
	narrow := badSpec("narrow.yaml", `      - {request: basket, default: 2}`+"\n", "")
	typed := badSpec("typed.yaml", "  - name: features\n", "  - name: features\n    type: float64\n")
	spec := filepath.Join(dir, "model.yaml")
	for _, tc := range []struct {
		name  string
		args  []string
		wants []string
	}{
		{"unknown feature", []string{"--spec", unknownRef, "--entity", "customer_id=c1"}, []string{"unknown.yaml:", `"cust:f9"`, `has no feature "f9"`, "registration would refuse"}},
		{"narrower than the graph", []string{"--spec", narrow, "--entity", "customer_id=c1"}, []string{"narrow.yaml:", `input "features"`, "float32 [?, 12]", "fills 11 positions"}},
		{"wrong element type", []string{"--spec", typed, "--entity", "customer_id=c1"}, []string{`input "features"`, "float32 [?, 12]", "element type float64"}},
		{"missing join key", []string{"--spec", spec, "--entity", "custid=c1"}, []string{"--entity", "custid=c1", "no join key customer_id", "feature view cust"}},
		{"extra join key", []string{"--spec", spec, "--entity", "customer_id=c1,product_id=3"}, []string{"product_id is not a join key", "keyed by customer_id"}},
		{"no entity", []string{"--spec", spec}, []string{"keyed by customer_id", "name an entity"}},
		{"malformed entity", []string{"--spec", spec, "--entity", "c1"}, []string{"--entity", `"c1"`, "key=value"}},
		{"unknown context", []string{"--spec", spec, "--entity", "customer_id=c1", "--context", "devise=ios"}, []string{"--context", `context field "devise"`, "np_check", "expected: device, timezone"}},
		{"derived context", []string{"--spec", spec, "--entity", "customer_id=c1", "--context", "hour_of_day=3"}, []string{`"hour_of_day"`, "derived from the request time"}},
		{"unknown time zone", []string{"--spec", spec, "--entity", "customer_id=c1", "--context", "timezone=Mars/Base"}, []string{"Mars/Base"}},
		{"unknown value", []string{"--spec", spec, "--entity", "customer_id=c1", "--value", "baskett=1"}, []string{"--value", `request value "baskett"`, "expected: basket"}},
		{"bad value", []string{"--spec", spec, "--entity", "customer_id=c1", "--value", "basket=many"}, []string{"--value", "key=number"}},
		{"bad time", []string{"--spec", spec, "--entity", "customer_id=c1", "--at", "yesterday"}, []string{"--at", `"yesterday"`}},
		{"bad format", []string{"--spec", spec, "--entity", "customer_id=c1", "--format", "xml"}, []string{"--format", "xml"}},
		{"no metadata", []string{"--spec", filepath.Join(dir, "nope.yaml"), "--entity", "customer_id=c1"}, []string{"metadata", "nope.yaml"}},
		{"not a model", []string{"--spec", spec, "--entity", "customer_id=c1"}, []string{"ONNX Runtime cannot load the model"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := model
			if tc.name == "not a model" {
				m = testModel(t, "not_onnx.onnx")
			}
			msg := c.fails(append([]string{"models", "--server", base, "check", m}, tc.args...)...)
			t.Log(msg)
			mustContain(t, msg, tc.wants...)
		})
	}
	// A wrong join key type needs an int64 key.
	mustContain(t, c.fails("models", "--server", base, "check", testModel(t, "generic_int64_input.onnx"), "--spec", filepath.Join(dir, "ids.yaml"),
		"--entity", "product_id=abc"), "product_id", "int64", `"abc" is not an integer`)
	// A server that is not there is named.
	mustContain(t, c.fails("models", "--server", "http://127.0.0.1:1", "check", model, "--spec", spec, "--entity", "customer_id=c1"), "http://127.0.0.1:1")
}

// pushCheckFeatures pushes c1 (everything known), c2 (f0 null, a segment
// outside the vocabulary, clicks older than recent's 1h ttl) and product
// 15.
func pushCheckFeatures(t *testing.T, base string) {
	t.Helper()
	ctx := context.Background()
	client := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	str := func(s string) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_StringValue{StringValue: s}}
	}
	f32 := func(f float32) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: f}}
	}
	i64 := func(n int64) *featurestorev1.Value {
		return &featurestorev1.Value{Kind: &featurestorev1.Value_Int64Value{Int64Value: n}}
	}
	ago := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(time.Now().Add(-d)) }
	for _, p := range []*featurestorev1.PushRequest{
		{FeatureView: "cust", Rows: []*featurestorev1.PushRow{
			{Values: map[string]*featurestorev1.Value{"customer_id": str("c1"), "f0": f32(0.25), "f1": f32(1.5), "segment": str("silver")}, EventTimestamp: ago(time.Minute)},
			{Values: map[string]*featurestorev1.Value{"customer_id": str("c2"), "f1": f32(2), "segment": str("platinum")}, EventTimestamp: ago(time.Minute)},
		}},
		{FeatureView: "recent", Rows: []*featurestorev1.PushRow{
			{Values: map[string]*featurestorev1.Value{"customer_id": str("c1"), "clicks": i64(7)}, EventTimestamp: ago(time.Minute)},
			{Values: map[string]*featurestorev1.Value{"customer_id": str("c2"), "clicks": i64(9)}, EventTimestamp: ago(2 * time.Hour)},
		}},
		{FeatureView: "prod", Rows: []*featurestorev1.PushRow{
			{Values: map[string]*featurestorev1.Value{"product_id": i64(15), "rank": i64(15)}, EventTimestamp: ago(time.Minute)},
		}},
	} {
		if _, err := client.Push(ctx, connect.NewRequest(p)); err != nil {
			t.Fatalf("push %s: %v", p.GetFeatureView(), err)
		}
	}
}

// fillFor is Plan.Fill's tensor for checkSpec, one row per customer, from
// the feature values serving would read (cust:f0, cust:f1, cust:segment,
// recent:clicks) and the check's context and values.
func fillFor(t *testing.T, features map[string][]any) map[string][]float32 {
	t.Helper()
	repo, err := definitions.Parse(map[string][]byte{"defs.yaml": []byte(checkDefs)})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := registry.ParseSpec("model.yaml", []byte(checkSpec))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := assemble.Compile(spec, repo)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, r := range plan.Refs {
		refs = append(refs, r.String())
	}
	if strings.Join(refs, ",") != "cust:f0,cust:f1,cust:segment,recent:clicks" {
		t.Fatalf("plan reads %v", refs)
	}
	at, err := time.Parse(time.RFC3339, checkAt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := assemble.DeriveContext(map[string]any{"device": "ios", "timezone": "Asia/Tokyo"}, at)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for who, f := range features {
		ts := plan.Fill([]assemble.Row{{Features: f, Context: ctx, Request: map[string]float64{"basket": 30}}})
		out[who] = ts[0].Float32
		if len(out[who]) != 12 {
			t.Fatalf("Fill gives %d values: %v", len(out[who]), out[who])
		}
	}
	return out
}
