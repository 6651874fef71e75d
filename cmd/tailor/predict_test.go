package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	featurestorev1 "github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/featurestore/v1/featurestorev1connect"
	servingv1 "github.com/tailorhq/tailor/proto/gen/tailor/serving/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/serving/v1/servingv1connect"
)

// expected is a test model's inputs and the outputs PyTorch computed for
// them (serving/testdata/models/*.expected.json).
type expected struct {
	Inputs  []expectedTensor `json:"inputs"`
	Outputs []expectedTensor `json:"outputs"`
}

type expectedTensor struct {
	Name  string    `json:"name"`
	Shape []int     `json:"shape"`
	Data  []float64 `json:"data"`
}

func readExpected(t *testing.T, model string) expected {
	t.Helper()
	b, err := os.ReadFile(testModel(t, model+".expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// predictSpec feeds next_product.onnx from ten pushed features and two
// request values, so a test can give it exactly PyTorch's inputs.
const predictSpec = `name: next_product
task: next_product
inputs:
  - name: features
    elements:
      - {feature: "cust:f0"}
      - {feature: "cust:f1"}
      - {feature: "cust:f2"}
      - {feature: "cust:f3"}
      - {feature: "cust:f4"}
      - {feature: "cust:f5"}
      - {feature: "cust:f6"}
      - {feature: "cust:f7"}
      - {feature: "cust:f8"}
      - {feature: "cust:f9"}
      - {request: r10}
      - {request: r11}
outputs:
  - name: probabilities
    labels: [p1, p2, p3, p4, p5, p6, p7, p8]
`

// TestPredictMatchesPyTorch registers a PyTorch-exported model, pushes
// the features of PyTorch's test inputs for a few customers, and checks
// Predict answers what PyTorch computed, with its labels, for customers in
// one batch; then moves the alias under load and checks no request fails.
// It runs with and without dynamic batching across requests.
func TestPredictMatchesPyTorch(t *testing.T) {
	t.Run("unbatched", func(t *testing.T) { testPredict(t) })
	t.Run("batched", func(t *testing.T) { testPredict(t, "--max-batch", "16", "--max-queue-delay", "2ms") })
}

func testPredict(t *testing.T, serveFlags ...string) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": modelDefs}))
	dir := writeFiles(t, map[string]string{"model.yaml": predictSpec})
	base, _ := startServe(t, c, append([]string{"--warm-start=false", "--model-refresh", "200ms"}, serveFlags...)...)
	models := func(args ...string) string {
		return c.ok(append([]string{"models", "--server", base}, args...)...)
	}
	models("register", testModel(t, "next_product.onnx"), "--spec", filepath.Join(dir, "model.yaml"))
	models("alias", "next_product", "champion", "1")

	exp := readExpected(t, "next_product")
	in, out := exp.Inputs[0], exp.Outputs[0]
	rows, width := in.Shape[0], in.Shape[1]
	ctx := context.Background()
	fclient := featurestorev1connect.NewFeatureServiceClient(h2cClient(), base)
	push := &featurestorev1.PushRequest{FeatureView: "cust"}
	var instances []*servingv1.Instance
	for r := range rows {
		vals := map[string]*featurestorev1.Value{"customer_id": {Kind: &featurestorev1.Value_StringValue{StringValue: fmt.Sprintf("c%d", r)}}}
		for f := range 10 {
			vals[fmt.Sprintf("f%d", f)] = &featurestorev1.Value{Kind: &featurestorev1.Value_Float32Value{Float32Value: float32(in.Data[r*width+f])}}
		}
		push.Rows = append(push.Rows, &featurestorev1.PushRow{Values: vals, EventTimestamp: timestamppb.New(time.Now().Add(-time.Minute))})
		instances = append(instances, &servingv1.Instance{
			Entities: map[string]*featurestorev1.Value{"customer_id": vals["customer_id"]},
			Values:   map[string]float64{"r10": in.Data[r*width+10], "r11": in.Data[r*width+11]},
		})
	}
	if _, err := fclient.Push(ctx, connect.NewRequest(push)); err != nil {
		t.Fatal(err)
	}
	pclient := servingv1connect.NewPredictionServiceClient(h2cClient(), base)
	for _, ref := range []string{"next_product@champion", "next_product:1", "next_product"} {
		resp, err := pclient.Predict(ctx, connect.NewRequest(&servingv1.PredictRequest{Model: ref, Instances: instances}))
		if err != nil {
			t.Fatalf("predict %s: %v", ref, err)
		}
		if m := resp.Msg.GetModel(); m.GetName() != "next_product" || m.GetVersion() != 1 {
			t.Fatalf("answered by %v", m)
		}
		for r, p := range resp.Msg.GetPredictions() {
			o := p.GetOutputs()[0]
			if o.GetName() != "probabilities" || strings.Join(o.GetLabels(), ",") != "p1,p2,p3,p4,p5,p6,p7,p8" {
				t.Fatalf("output %s labels %v", o.GetName(), o.GetLabels())
			}
			for k, v := range o.GetValues() {
				want := out.Data[r*8+k]
				if math.Abs(v-want) > 1e-5*math.Max(1, math.Abs(want)) {
					t.Errorf("%s customer c%d probability %d = %v, PyTorch computed %v", ref, r, k, v, want)
				}
			}
		}
	}

	// The same through the CLI.
	mustContain(t, compact(c.ok("predict", "--server", base, "--model", "next_product@champion", "--entity", "customer_id=c0",
		"--value", fmt.Sprintf("r10=%v,r11=%v", in.Data[10], in.Data[11]))),
		`"name":"next_product"`, `"alias":"champion"`, `"name":"probabilities"`, `"p8"`, fmt.Sprint(float32(out.Data[0]))[:6])
	mustContain(t, c.fails("predict", "--server", base, "--model", "next_product", "--entity", "customer_id=c0", "--value", "r10=abc"), "key=number")

	// Bad requests.
	for _, tc := range []struct {
		req  *servingv1.PredictRequest
		code connect.Code
		want string
	}{
		{&servingv1.PredictRequest{Model: "nope", Instances: instances}, connect.CodeNotFound, `"nope"`},
		{&servingv1.PredictRequest{Model: "next_product@gold", Instances: instances}, connect.CodeNotFound, `alias "gold"`},
		{&servingv1.PredictRequest{Model: "next_product:x", Instances: instances}, connect.CodeInvalidArgument, "positive number"},
		{&servingv1.PredictRequest{Model: "next_product", Instances: []*servingv1.Instance{{}}}, connect.CodeInvalidArgument, `"customer_id"`},
		{&servingv1.PredictRequest{Model: "next_product"}, connect.CodeInvalidArgument, "no instances"},
		{&servingv1.PredictRequest{Model: "next_product", Instances: []*servingv1.Instance{{Entities: instances[0].Entities, Context: map[string]*featurestorev1.Value{"timezone": {Kind: &featurestorev1.Value_StringValue{StringValue: "Mars/Base"}}}}}}, connect.CodeInvalidArgument, "Mars/Base"},
	} {
		_, err := pclient.Predict(ctx, connect.NewRequest(tc.req))
		if connect.CodeOf(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("predict %s: %v, want %s naming %s", tc.req.GetModel(), err, tc.code, tc.want)
		}
	}

	// A second version (other bytes, same inputs) takes the alias while
	// requests keep coming: none fails, and the new version answers
	// within 2 s.
	spec2 := filepath.Join(dir, "model2.yaml")
	writeFile(t, spec2, strings.Replace(predictSpec, "task: next_product", "task: next_product\ndescription: v2", 1))
	models("register", testModel(t, "next_product.onnx"), "--spec", spec2)
	var failed, served atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := pclient.Predict(ctx, connect.NewRequest(&servingv1.PredictRequest{Model: "next_product@champion", Instances: instances})); err != nil {
					failed.Add(1)
					t.Logf("request during the swap: %v", err)
				} else {
					served.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	models("alias", "next_product", "champion", "2")
	moved := time.Now()
	for {
		resp, err := pclient.Predict(ctx, connect.NewRequest(&servingv1.PredictRequest{Model: "next_product@champion", Instances: instances[:1]}))
		if err == nil && resp.Msg.GetModel().GetVersion() == 2 {
			t.Logf("version 2 served %s after the alias moved", time.Since(moved))
			break
		}
		if time.Since(moved) > 2*time.Second {
			t.Fatalf("the alias moved 2s ago and version 2 does not answer (%v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() > 0 || served.Load() == 0 {
		t.Fatalf("%d requests failed across the swap (%d served)", failed.Load(), served.Load())
	}
	// Every prediction is logged: one row per instance, the same inputs
	// giving the same digest whichever version answered.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := strings.TrimSpace(c.sql(fmt.Sprintf(`SELECT uniqExact(entity), uniqExact(entity, inputs_digest), uniqExact(model_versions), count() > 100
			FROM %s.prediction_log WHERE method = 'Predict'`, c.db)))
		if got == "5\t5\t2\ttrue" || got == "5\t5\t2\t1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prediction log: %q, want 5 customers, 5 distinct inputs, 2 versions, over 100 rows", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// compact drops the white space of protojson output, which varies on
// purpose from run to run.
func compact(s string) string { return strings.Join(strings.Fields(s), "") }

// TestPredictZipMapClassifier serves an sklearn-style classifier whose
// probabilities are a ZipMap (one label -> probability map per row) next
// to its label output, and checks both against numpy's values.
func TestPredictZipMapClassifier(t *testing.T) {
	c := newCLI(t)
	c.ok("apply", writeFiles(t, map[string]string{"defs.yaml": modelDefs}))
	dir := writeFiles(t, map[string]string{"model.yaml": `name: classifier
inputs:
  - name: input
    elements: [{request: x0}, {request: x1}, {request: x2}, {request: x3}]
outputs:
  - name: output_probability
    labels: [a, b, c]
  - name: output_label
`})
	base, _ := startServe(t, c, "--warm-start=false")
	c.ok("models", "--server", base, "register", testModel(t, "zipmap_classifier.onnx"), "--spec", filepath.Join(dir, "model.yaml"))
	b, err := os.ReadFile(testModel(t, "zipmap_classifier.expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var exp struct {
		Inputs  []expectedTensor `json:"inputs"`
		Outputs []struct {
			Name string               `json:"name"`
			Data []string             `json:"data"`
			Maps []map[string]float64 `json:"maps"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatal(err)
	}
	var instances []*servingv1.Instance
	for r := range exp.Inputs[0].Shape[0] {
		v := map[string]float64{}
		for i := range 4 {
			v[fmt.Sprintf("x%d", i)] = exp.Inputs[0].Data[r*4+i]
		}
		instances = append(instances, &servingv1.Instance{Values: v})
	}
	resp, err := servingv1connect.NewPredictionServiceClient(h2cClient(), base).Predict(context.Background(),
		connect.NewRequest(&servingv1.PredictRequest{Model: "classifier", Instances: instances}))
	if err != nil {
		t.Fatal(err)
	}
	for r, p := range resp.Msg.GetPredictions() {
		for _, o := range p.GetOutputs() {
			switch o.GetName() {
			case "output_label":
				if got := strings.Join(o.GetStrings(), ","); got != exp.Outputs[0].Data[r] {
					t.Errorf("row %d label %s, numpy %s", r, got, exp.Outputs[0].Data[r])
				}
			case "output_probability":
				if strings.Join(o.GetLabels(), ",") != "a,b,c" {
					t.Fatalf("labels %v", o.GetLabels())
				}
				for i, l := range o.GetLabels() {
					if want := exp.Outputs[1].Maps[r][l]; math.Abs(o.GetValues()[i]-want) > 1e-6 {
						t.Errorf("row %d p(%s) = %v, numpy %v", r, l, o.GetValues()[i], want)
					}
				}
			default:
				t.Errorf("unexpected output %s", o.GetName())
			}
		}
	}
}
